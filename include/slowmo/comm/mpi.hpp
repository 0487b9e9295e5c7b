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
  /// Wall-clock seconds since this communicator was made.
  double now() const { return MPI_Wtime() - start_; }

  const boost::mpi::communicator& native() const { return comm_; }
  /// For what Boost.MPI lacks (non-blocking collectives, ...).
  operator MPI_Comm() const { return MPI_Comm(comm_); }

  std::uint64_t bytes_sent() const { return bytes_sent_; }
  std::uint64_t messages_sent() const { return messages_sent_; }

 private:
  enum class Kind : std::int64_t { all_reduce_sum = 1, all_reduce_mean, broadcast, barrier };
  static constexpr int data_tag = 0x5107;
  static constexpr int weight_tag = 0x5108;

  static const char* kind_name(std::int64_t k) {
    switch (static_cast<Kind>(k)) {
      case Kind::all_reduce_sum: return "all_reduce(sum)";
      case Kind::all_reduce_mean: return "all_reduce(mean)";
      case Kind::broadcast: return "broadcast";
      case Kind::barrier: return "barrier";
    }
    return "?";
  }

  template <class T>
  static int count_of(std::span<T> buf, const char* op) {
    if (buf.size() > static_cast<std::size_t>(INT_MAX))
      throw comm_error(detail::concat("slowmo::mpi: ", op, " of ", buf.size(), " elements exceeds MPI's int count (",
                                      INT_MAX, "); split the buffer"));
    return static_cast<int>(buf.size());
  }

  /// Validated mode: all ranks agree on (kind, element size, count, root), or all throw.
  void agree(Kind kind, std::int64_t elem_bytes, std::int64_t count, std::int64_t root) {
    if (!options_.validate) return;
    std::array<std::int64_t, 8> v{static_cast<std::int64_t>(kind), -static_cast<std::int64_t>(kind),
                                  elem_bytes, -elem_bytes, count, -count, root, -root};
    boost::mpi::all_reduce(comm_, boost::mpi::inplace(v.data()), int(v.size()),
                           boost::mpi::maximum<std::int64_t>());
    if (v[0] == -v[1] && v[2] == -v[3] && v[4] == -v[5] && v[6] == -v[7]) return;
    auto type = [](std::int64_t b) { return b == 4 ? "float" : b == 8 ? "double" : "none"; };
    throw comm_error(detail::concat(
        "slowmo::mpi: mismatched collective on rank ", rank(), ": this rank called ", kind_name(std::int64_t(kind)),
        " of ", count, " ", type(elem_bytes), (kind == Kind::broadcast ? detail::concat(" from root ", root) : ""),
        "; across ranks the operation ranges over [", kind_name(-v[1]), ", ", kind_name(v[0]), "], the count over [",
        -v[5], ", ", v[4], "], the root over [", -v[7], ", ", v[6],
        "]; every rank must call the same collectives in the same order with the same sizes"));
  }

  template <class T>
  void all_reduce_impl(std::span<T> buf, ReduceOp op) {
    const int n = count_of(buf, "all_reduce");
    agree(op == ReduceOp::sum ? Kind::all_reduce_sum : Kind::all_reduce_mean, sizeof(T), n, -1);
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
    agree(Kind::broadcast, sizeof(T), n, root);
    if (n == 0) return;
    boost::mpi::broadcast(comm_, buf.data(), n, root);
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
