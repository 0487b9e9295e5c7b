// slowmo/comm/mpi.hpp — the MPI backend (Boost.MPI over OpenMPI): one worker per rank, the
// engine for going past one machine. Needs the slowmo::mpi CMake component.
//
// Collectives go through Boost.MPI's (pointer, count) overloads with std::plus<T>, which
// reach MPI_Allreduce with MPI_SUM and MPI_IN_PLACE (containers by value would be
// serialized; custom functors would create a user MPI_Op). The mean is that sum divided by
// the number of ranks. Point-to-point uses MPI_Isend + MPI_Recv, so no send/receive
// pattern can deadlock.
//
// Validated mode (on by default): before each collective the ranks agree on (operation,
// type, size, root) with one small MPI_Allreduce, so a mismatch throws comm_error on every
// rank instead of hanging or truncating; received messages are probed for their size.
// Switch it off with Options{.validate = false} once a program is known to be correct.
//
// All-gathers go to MPI_Allgather / MPI_Allgatherv on the native communicator (Boost.MPI's
// gathers take containers). Before the data moves, the ranks exchange (count, capacity,
// counts size) triples with one small MPI_Allgather, so every rank judges the sizes alike
// and a misfit throws comm_error on all of them: all_gather_v always (it needs the counts
// anyway), all_gather in validated mode.
#pragma once

#include <boost/mpi/collectives.hpp>
#include <boost/mpi/communicator.hpp>
#include <boost/mpi/environment.hpp>
#include <boost/mpi/exception.hpp>
#include <boost/mpi/nonblocking.hpp>
#include <boost/mpi/operations.hpp>
#include <mpi.h>

#include <array>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/error.hpp"

namespace slowmo::mpi {

struct Options {
  /// Check that every rank calls the same collective with the same type, size and root,
  /// and that received messages have the expected size. Costs one small all-reduce per
  /// collective.
  bool validate = true;
};

class Comm {
 public:
  explicit Comm(boost::mpi::communicator comm = {}, Options options = {})
      : comm_(std::move(comm)), options_(options), start_(MPI_Wtime()) {}

  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }

  void all_reduce(std::span<float> buf, ReduceOp op) { all_reduce_impl(buf, op); }
  void all_reduce(std::span<double> buf, ReduceOp op) { all_reduce_impl(buf, op); }
  void broadcast(std::span<float> buf, int root) { broadcast_impl(buf, root); }
  void broadcast(std::span<double> buf, int root) { broadcast_impl(buf, root); }
  void barrier() {
    agree(Kind::barrier, 0, 0, 0);
    comm_.barrier();
  }
  double exchange(std::span<const float> out, double weight, int dest, std::span<float> in, int source) {
    return exchange_impl(out, weight, dest, in, source);
  }
  double exchange(std::span<const double> out, double weight, int dest, std::span<double> in, int source) {
    return exchange_impl(out, weight, dest, in, source);
  }

  // GatherCommunicator (core/communicator.hpp).
  void all_gather(std::span<const float> send, std::span<float> recv) { all_gather_impl(send, recv); }
  void all_gather(std::span<const double> send, std::span<double> recv) { all_gather_impl(send, recv); }
  void all_gather(std::span<const std::int32_t> send, std::span<std::int32_t> recv) { all_gather_impl(send, recv); }
  void all_gather(std::span<const std::uint8_t> send, std::span<std::uint8_t> recv) { all_gather_impl(send, recv); }
  std::size_t all_gather_v(std::span<const float> send, std::span<float> recv, std::span<std::size_t> counts) {
    return all_gather_v_impl(send, recv, counts);
  }
  std::size_t all_gather_v(std::span<const double> send, std::span<double> recv, std::span<std::size_t> counts) {
    return all_gather_v_impl(send, recv, counts);
  }
  std::size_t all_gather_v(std::span<const std::int32_t> send, std::span<std::int32_t> recv,
                           std::span<std::size_t> counts) {
    return all_gather_v_impl(send, recv, counts);
  }
  std::size_t all_gather_v(std::span<const std::uint8_t> send, std::span<std::uint8_t> recv,
                           std::span<std::size_t> counts) {
    return all_gather_v_impl(send, recv, counts);
  }

  /// Wall-clock seconds since this communicator was made.
  double now() const { return MPI_Wtime() - start_; }

  const boost::mpi::communicator& native() const { return comm_; }
  /// For what Boost.MPI lacks (non-blocking collectives, ...).
  operator MPI_Comm() const { return MPI_Comm(comm_); }

  std::uint64_t bytes_sent() const { return bytes_sent_; }
  std::uint64_t messages_sent() const { return messages_sent_; }

 private:
  enum class Kind : std::int64_t { all_reduce_sum = 1, all_reduce_mean, broadcast, barrier, all_gather, all_gather_v };
  static constexpr int data_tag = 0x5107;
  static constexpr int weight_tag = 0x5108;

  static const char* kind_name(std::int64_t k) {
    switch (static_cast<Kind>(k)) {
      case Kind::all_reduce_sum: return "all_reduce(sum)";
      case Kind::all_reduce_mean: return "all_reduce(mean)";
      case Kind::broadcast: return "broadcast";
      case Kind::barrier: return "barrier";
      case Kind::all_gather: return "all_gather";
      case Kind::all_gather_v: return "all_gather_v";
    }
    return "?";
  }
  static bool is_gather(Kind k) { return k == Kind::all_gather || k == Kind::all_gather_v; }

  template <class T>
  static MPI_Datatype mpi_type() {
    if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
    else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
    else if constexpr (std::is_same_v<T, std::int32_t>) return MPI_INT32_T;
    else return MPI_UINT8_T;
  }

  template <class T>
  static int count_of(std::span<T> buf, const char* op) {
    if (buf.size() > static_cast<std::size_t>(INT_MAX))
      throw comm_error(detail::concat("slowmo::mpi: ", op, " of ", buf.size(), " elements exceeds MPI's int count (",
                                      INT_MAX, "); split the buffer"));
    return static_cast<int>(buf.size());
  }

  /// Validated mode: all ranks agree on (kind, element type, count, root), or all throw.
  /// `elem` is detail::element_code<T>() (float and double: their sizes); 0 for none. The
  /// gathers agree on kind and type only: their sizes are judged from everyone's after.
  void agree(Kind kind, std::int64_t elem, std::int64_t count, std::int64_t root) {
    if (!options_.validate) return;
    std::array<std::int64_t, 8> v{static_cast<std::int64_t>(kind), -static_cast<std::int64_t>(kind),
                                  elem, -elem, count, -count, root, -root};
    boost::mpi::all_reduce(comm_, boost::mpi::inplace(v.data()), int(v.size()),
                           boost::mpi::maximum<std::int64_t>());
    if (v[0] == -v[1] && v[2] == -v[3] && v[4] == -v[5] && v[6] == -v[7]) return;
    throw comm_error(detail::concat(
        "slowmo::mpi: mismatched collective on rank ", rank(), ": this rank called ", kind_name(std::int64_t(kind)),
        " of ", is_gather(kind) ? "" : detail::concat(count, " "), detail::element_name(elem),
        is_gather(kind) ? " values" : "", (kind == Kind::broadcast ? detail::concat(" from root ", root) : ""),
        "; across ranks the operation ranges over [", kind_name(-v[1]), ", ", kind_name(v[0]), "], the count over [",
        -v[5], ", ", v[4], "], the root over [", -v[7], ", ", v[6],
        "]; every rank must call the same collectives in the same order with the same sizes"));
  }

  template <class T>
  void all_reduce_impl(std::span<T> buf, ReduceOp op) {
    const int n = count_of(buf, "all_reduce");
    agree(op == ReduceOp::sum ? Kind::all_reduce_sum : Kind::all_reduce_mean, detail::element_code<T>(), n, -1);
    if (n == 0) return;
    boost::mpi::all_reduce(comm_, boost::mpi::inplace(buf.data()), n, std::plus<T>());
    if (op == ReduceOp::mean) {
      const T m = static_cast<T>(size());
      for (T& x : buf) x /= m;
    }
    bytes_sent_ += static_cast<std::uint64_t>(2.0 * (size() - 1) / size() * double(buf.size_bytes()));
  }

  template <class T>
  void broadcast_impl(std::span<T> buf, int root) {
    if (root < 0 || root >= size())
      throw comm_error(detail::concat("slowmo::mpi: rank ", rank(), ": broadcast root ", root,
                                      " is out of range [0, ", size(), ")"));
    const int n = count_of(buf, "broadcast");
    agree(Kind::broadcast, detail::element_code<T>(), n, root);
    if (n == 0) return;
    boost::mpi::broadcast(comm_, buf.data(), n, root);
  }

  /// Every rank's (send count, recv capacity, counts size), in sizes_, by one small
  /// MPI_Allgather; throws the same comm_error on every rank when they do not fit (or do
  /// not fit MPI's int counts and displacements). Returns the total count.
  template <class T>
  std::size_t exchange_sizes(bool variable, std::size_t send, std::size_t recv, std::size_t counts) {
    const int m = size();
    const std::array<std::int64_t, 3> mine{std::int64_t(send), std::int64_t(recv), std::int64_t(counts)};
    sizes_.resize(3 * std::size_t(m));  // grows once
    BOOST_MPI_CHECK_RESULT(MPI_Allgather,
                           (mine.data(), 3, MPI_INT64_T, sizes_.data(), 3, MPI_INT64_T, MPI_Comm(comm_)));
    auto at = [&](int q) {
      const std::int64_t* v = &sizes_[3 * std::size_t(q)];
      return detail::GatherSizes{std::size_t(v[0]), std::size_t(v[1]), std::size_t(v[2])};
    };
    const char* type = detail::element_name(detail::element_code<T>());
    std::string e = detail::gather_size_error("slowmo::mpi", "rank", variable, m, type, at);
    std::size_t total = 0;
    for (int q = 0; q < m; ++q) total += at(q).send;
    if (e.empty() && total > std::size_t(INT_MAX))
      e = detail::concat("slowmo::mpi: ", variable ? "all_gather_v" : "all_gather", " of ", total, " ", type,
                         " values in all exceeds MPI's int counts and displacements (", INT_MAX,
                         "); split the buffers");
    if (!e.empty()) throw comm_error(e);
    return total;
  }

  /// Ring accounting, as the simulator's: every block but the successor's.
  void account_all_gather(std::size_t total, std::size_t successor, std::size_t elem_bytes) {
    if (size() > 1) bytes_sent_ += (total - successor) * elem_bytes;
  }

  template <class T>
  void all_gather_impl(std::span<const T> send, std::span<T> recv) {
    agree(Kind::all_gather, detail::element_code<T>(), 0, -1);
    const int m = size(), r = rank();
    if (options_.validate) {
      exchange_sizes<T>(false, send.size(), recv.size(), std::size_t(m));
    } else if (recv.size() != std::size_t(m) * send.size()) {  // unvalidated: only this rank knows
      throw comm_error(detail::concat("slowmo::mpi: rank ", r, ": all_gather of ", send.size(),
                                      " values from each of ", m, " ranks: recv must hold size() * send.size() = ",
                                      std::size_t(m) * send.size(), " values, but it holds ", recv.size()));
    }
    const int n = count_of(send, "all_gather");  // the same n on every rank: all throw alike
    if (n == 0) return;
    // In place (MPI_IN_PLACE) when send is this rank's own block of recv.
    const bool in_place = send.data() == recv.data() + std::size_t(r) * send.size();
    BOOST_MPI_CHECK_RESULT(MPI_Allgather, (in_place ? MPI_IN_PLACE : send.data(), n, mpi_type<T>(), recv.data(), n,
                                           mpi_type<T>(), MPI_Comm(comm_)));
    account_all_gather(std::size_t(m) * send.size(), send.size(), sizeof(T));
  }

  template <class T>
  std::size_t all_gather_v_impl(std::span<const T> send, std::span<T> recv, std::span<std::size_t> counts) {
    agree(Kind::all_gather_v, detail::element_code<T>(), 0, -1);
    const int m = size(), r = rank();
    const std::size_t total = exchange_sizes<T>(true, send.size(), recv.size(), counts.size());
    recv_counts_.resize(std::size_t(m));  // grow once
    displacements_.resize(std::size_t(m));
    int at = 0;
    for (int q = 0; q < m; ++q) {
      const auto c = std::size_t(sizes_[3 * std::size_t(q)]);
      counts[std::size_t(q)] = c;
      recv_counts_[std::size_t(q)] = int(c);
      displacements_[std::size_t(q)] = at;
      at += int(c);
    }
    if (total == 0) return 0;
    const bool in_place = send.data() == recv.data() + displacements_[std::size_t(r)];
    BOOST_MPI_CHECK_RESULT(MPI_Allgatherv,
                           (in_place ? MPI_IN_PLACE : send.data(), int(send.size()), mpi_type<T>(), recv.data(),
                            recv_counts_.data(), displacements_.data(), mpi_type<T>(), MPI_Comm(comm_)));
    account_all_gather(total, counts[std::size_t((r + 1) % m)], sizeof(T));
    return total;
  }

  void check_peer(int peer, const char* what) const {
    if (peer < 0 || peer >= size())
      throw comm_error(detail::concat("slowmo::mpi: rank ", rank(), ": exchange ", what, " = ", peer,
                                      " is out of range [0, ", size(), ")"));
    if (peer == rank())
      throw comm_error(detail::concat("slowmo::mpi: rank ", rank(), ": exchange ", what, " = ", peer,
                                      " is the rank itself; a worker cannot exchange with itself"));
  }

  template <class T>
  double exchange_impl(std::span<const T> out, double weight, int dest, std::span<T> in, int source) {
    check_peer(dest, "dest");
    check_peer(source, "source");
    const int n_out = count_of(out, "exchange");
    const int n_in = count_of(in, "exchange");
    std::array<boost::mpi::request, 2> sends{comm_.isend(dest, data_tag, out.data(), n_out),
                                             comm_.isend(dest, weight_tag, weight)};
    std::string error;
    if (options_.validate) {
      const boost::mpi::status st = comm_.probe(source, data_tag);
      const auto got = st.count<T>();
      if (!got || *got != n_in) {
        error = detail::concat("slowmo::mpi: exchange: rank ", rank(), " expected ", n_in, " values from rank ",
                               source, ", which sent ", got ? *got : -1);
        std::vector<T> drain(static_cast<std::size_t>(got ? *got : 0));
        comm_.recv(source, data_tag, drain.data(), int(drain.size()));
      }
    }
    if (error.empty()) comm_.recv(source, data_tag, in.data(), n_in);
    double received = 0;
    comm_.recv(source, weight_tag, received);
    boost::mpi::wait_all(sends.begin(), sends.end());
    bytes_sent_ += out.size_bytes();
    messages_sent_ += 1;
    if (!error.empty()) throw comm_error(error);
    return received;
  }

  boost::mpi::communicator comm_;
  Options options_;
  double start_;
  std::uint64_t bytes_sent_ = 0, messages_sent_ = 0;
  std::vector<std::int64_t> sizes_;        // all-gathers: every rank's (count, capacity, counts size)
  std::vector<int> recv_counts_, displacements_;  // all_gather_v: MPI's int arrays
};

/// Runs fn(comm) on this rank. If fn throws, prints "slowmo: worker R failed: ..." to
/// stderr and aborts the whole job (MPI_Abort), so no other rank waits forever. Returns
/// fn's exit code (0 when fn returns void).
template <class F>
int run(int argc, char** argv, F&& fn, Options options = {}) {
  boost::mpi::environment env(argc, argv);
  boost::mpi::communicator world;
  try {
    Comm comm(world, options);
    if constexpr (std::is_void_v<decltype(fn(comm))>) {
      fn(comm);
      return 0;
    } else {
      return fn(comm);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "slowmo: worker %d failed: %s\n", world.rank(), e.what());
  } catch (...) {
    std::fprintf(stderr, "slowmo: worker %d failed: unknown exception\n", world.rank());
  }
  std::fflush(stderr);
  env.abort(1);
  return 1;
}

}  // namespace slowmo::mpi
