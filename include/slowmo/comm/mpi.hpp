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
//
// The shared global model (SharedModelCommunicator, core/shared_model.hpp) lives on rank 0:
// host_model keeps rank 0's ModelServer and starts a server thread beside rank 0's training,
// which serves the other ranks' pulls and pushes over point-to-point messages with their own
// tags on a duplicate of the communicator (MPI_Comm_dup), so they never mix with the user's
// collectives and messages. Rank 0's own requests skip the messages (no copy through MPI, no
// wait for the server thread to be scheduled): every request, remote or local, is served
// under one mutex, so they are applied one at a time in the order they arrive. Why this shape:
//  - not MPI-3 one-sided windows: an arriving push is a computation on the server (an outer
//    rule with momentum, delayed Nesterov, Adam), which MPI_Accumulate cannot express beyond
//    sums and a few element-wise ops; versions and staleness would become a lock protocol;
//  - not a dedicated extra server rank: the SPMD program would then differ by rank (one rank
//    would not train) and by backend; as a thread on rank 0, every rank runs the same function.
// The thread calls MPI while rank 0 trains, so it needs MPI_THREAD_MULTIPLE: run() asks for
// it, and host_model throws comm_error where MPI provides less. It waits for requests in a
// blocking MPI_Mprobe, which polls like any waiting MPI call (OpenMPI's progress loop): while
// a model is hosted, rank 0 keeps about one more core busy. In exchange a request is answered
// in ~10-30 us even while rank 0 sits in a collective; a sleeping poll (MPI_Improbe, then a
// short sleep) took ~20 ms there (OpenMPI 4.1, two ranks on one machine).
// Shutdown: depart() tells the server this rank has left (remote ranks wait for its answer);
// run() calls it when fn returns. The thread ends after the last other rank's leave, and rank
// 0's depart() joins it. A rank that throws still aborts the whole job (run()), as without a
// model: tolerating a dying worker (listed in departed(), the others go on) is the simulator's
// and threads' feature.
#pragma once

#include <boost/mpi/collectives.hpp>
#include <boost/mpi/communicator.hpp>
#include <boost/mpi/environment.hpp>
#include <boost/mpi/exception.hpp>
#include <boost/mpi/nonblocking.hpp>
#include <boost/mpi/operations.hpp>
#include <mpi.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/shared_model.hpp"

/// The shared model's wire protocol (ranks other than 0), on the duplicated communicator. A
/// request is three int64 (op, element code, count) sent to rank 0 on request_tag; a push's
/// values follow on push_tag. Every request gets one reply of three int64 (status, a, b) on
/// reply_tag:
///  - ok: pull (version, 0) and then the values on data_tag; push (version, staleness);
///    departed and leave (how many ranks have left, 0) and then their ranks on data_tag;
///  - wrong_type, wrong_size: (the hosted element code, the hosted size);
///  - no_pull: a push before this rank's first pull;
///  - failed: the ModelServer threw: (the length of its message, 0), then the message.
namespace slowmo::detail::mpi_model {
inline constexpr int request_tag = 0x5201, push_tag = 0x5202, reply_tag = 0x5203, data_tag = 0x5204;
enum class Op : std::int64_t { pull = 1, push, departed, leave };
enum class Status : std::int64_t { ok = 0, wrong_type, wrong_size, no_pull, failed };
using Message = std::array<std::int64_t, 3>;

inline MPI_Datatype type_of(std::int64_t elem) { return elem == element_code<float>() ? MPI_FLOAT : MPI_DOUBLE; }

inline void check(int rc, const char* call) {
  if (rc != MPI_SUCCESS)
    throw comm_error(concat("slowmo::mpi: the shared model's ", call, " failed (MPI error ", rc, ")"));
}

inline const char* thread_level_name(std::int64_t level) {
  if (level >= MPI_THREAD_MULTIPLE) return "MPI_THREAD_MULTIPLE";
  if (level >= MPI_THREAD_SERIALIZED) return "MPI_THREAD_SERIALIZED";
  if (level >= MPI_THREAD_FUNNELED) return "MPI_THREAD_FUNNELED";
  return "MPI_THREAD_SINGLE";
}

/// Rank 0's side: the ModelServer and its bookkeeping under one mutex, so that requests are
/// served one at a time in the order they take it (the server thread's for the other ranks,
/// rank 0's own directly). Versions count the updates applied; per rank it keeps the version
/// of its last pull and its pushes since, so a push's staleness is the updates by *others*
/// between that rank's last pull and this push. A refused request (wrong type or size, no
/// pull yet, a ModelServer that throws) changes no version and no bookkeeping.
class Host {
 public:
  Host(std::int64_t elem, std::size_t size, int ranks, std::int64_t version)
      : elem_(elem),
        size_(size),
        version_(version),
        last_pull_(std::size_t(ranks), -1),
        own_since_pull_(std::size_t(ranks), 0) {}
  virtual ~Host() = default;
  std::int64_t elem() const { return elem_; }
  std::size_t size() const { return size_; }

  /// Rank r's pull of `count` values of element type `elem` into `out` (written when ok).
  Message pull(int r, std::int64_t elem, std::int64_t count, void* out, std::string& error) {
    if (elem != elem_ || count != std::int64_t(size_)) return misfit(elem);
    std::lock_guard lock(mutex_);
    if (!call([&] { read(out); }, error)) return {std::int64_t(Status::failed), std::int64_t(error.size()), 0};
    last_pull_[std::size_t(r)] = version_;
    own_since_pull_[std::size_t(r)] = 0;
    return {std::int64_t(Status::ok), version_, 0};
  }
  /// Rank r's push of `count` values of element type `elem` from `d`.
  Message push(int r, std::int64_t elem, std::int64_t count, const void* d, std::string& error) {
    if (elem != elem_ || count != std::int64_t(size_)) return misfit(elem);
    std::lock_guard lock(mutex_);
    if (last_pull_[std::size_t(r)] < 0) return {std::int64_t(Status::no_pull), 0, 0};
    const std::int64_t staleness = version_ - last_pull_[std::size_t(r)] - own_since_pull_[std::size_t(r)];
    if (!call([&] { apply({r, staleness}, d); }, error))
      return {std::int64_t(Status::failed), std::int64_t(error.size()), 0};
    ++version_;
    ++own_since_pull_[std::size_t(r)];
    return {std::int64_t(Status::ok), version_, staleness};
  }
  /// Rank r leaves; returns the ranks gone so far, in the order they left.
  std::vector<int> leave(int r) {
    std::lock_guard lock(mutex_);
    if (std::find(departed_.begin(), departed_.end(), r) == departed_.end()) departed_.push_back(r);
    return departed_;
  }
  std::vector<int> departed() {
    std::lock_guard lock(mutex_);
    return departed_;
  }

 private:
  virtual void read(void* out) = 0;
  virtual void apply(const Arrival& arrival, const void* d) = 0;

  Message misfit(std::int64_t elem) const {
    return {std::int64_t(elem != elem_ ? Status::wrong_type : Status::wrong_size), elem_, std::int64_t(size_)};
  }
  template <class F>
  static bool call(F&& f, std::string& error) {
    try {
      f();
      return true;
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "unknown exception";
    }
    return false;
  }

  std::int64_t elem_;
  std::size_t size_;
  std::mutex mutex_;
  std::int64_t version_;
  std::vector<std::int64_t> last_pull_, own_since_pull_;
  std::vector<int> departed_;
};

template <class T>
class HostOf final : public Host {
 public:
  HostOf(std::unique_ptr<ModelServer<T>> server, int ranks)
      : Host(element_code<T>(), server->size(), ranks, server->initial_version()), server_(std::move(server)) {}

 private:
  void read(void* out) override { server_->read(std::span<T>(static_cast<T*>(out), size())); }
  void apply(const Arrival& arrival, const void* d) override {
    server_->apply(arrival, std::span<const T>(static_cast<const T*>(d), size()));
  }
  std::unique_ptr<ModelServer<T>> server_;
};

/// Rank 0's server thread: serves the other ranks' requests in arrival order until each of
/// them has left.
inline void serve(MPI_Comm comm, Host& host) {
  int m = 0;
  check(MPI_Comm_size(comm, &m), "MPI_Comm_size");
  const std::size_t bytes = host.size() * std::size_t(host.elem());
  std::vector<double> values((bytes + sizeof(double) - 1) / sizeof(double));  // the model's size, in float or double
  std::vector<double> drain;  // a push's values that do not fit
  std::vector<char> left(std::size_t(m), 0);
  auto send = [&](const void* data, int count, MPI_Datatype type, int to, int tag) {
    check(MPI_Send(data, count, type, to, tag, comm), "MPI_Send");
  };
  for (int remaining = m - 1; remaining > 0;) {
    MPI_Message handle;
    MPI_Status status;
    check(MPI_Mprobe(MPI_ANY_SOURCE, request_tag, comm, &handle, &status), "MPI_Mprobe");
    Message req{};
    check(MPI_Mrecv(req.data(), 3, MPI_INT64_T, &handle, MPI_STATUS_IGNORE), "MPI_Mrecv");
    const int r = status.MPI_SOURCE;
    const std::int64_t elem = req[1], count = req[2];
    std::string error;
    Message rep{};
    switch (static_cast<Op>(req[0])) {
      case Op::push: {
        void* into = values.data();  // the values always follow: take them, fitting or not
        if (elem != host.elem() || count != std::int64_t(host.size())) {
          drain.resize(std::size_t(count) * std::size_t(elem) / sizeof(double) + 1);
          into = drain.data();
        }
        MPI_Message payload;
        check(MPI_Mprobe(r, push_tag, comm, &payload, MPI_STATUS_IGNORE), "MPI_Mprobe");
        check(MPI_Mrecv(into, int(count), type_of(elem), &payload, MPI_STATUS_IGNORE), "MPI_Mrecv");
        rep = host.push(r, elem, count, into, error);
        send(rep.data(), 3, MPI_INT64_T, r, reply_tag);
        break;
      }
      case Op::pull:
        rep = host.pull(r, elem, count, values.data(), error);
        send(rep.data(), 3, MPI_INT64_T, r, reply_tag);
        if (rep[0] == std::int64_t(Status::ok)) send(values.data(), int(count), type_of(elem), r, data_tag);
        break;
      case Op::leave:
      case Op::departed: {
        const bool leaving = static_cast<Op>(req[0]) == Op::leave;
        if (leaving && !left[std::size_t(r)]) left[std::size_t(r)] = 1, --remaining;
        const std::vector<int> gone = leaving ? host.leave(r) : host.departed();
        rep = {std::int64_t(Status::ok), std::int64_t(gone.size()), 0};
        send(rep.data(), 3, MPI_INT64_T, r, reply_tag);
        if (!gone.empty()) send(gone.data(), int(gone.size()), MPI_INT, r, data_tag);
        break;
      }
    }
    if (rep[0] == std::int64_t(Status::failed)) send(error.data(), int(error.size()), MPI_CHAR, r, data_tag);
  }
}

/// One communicator's shared model, on every rank: the duplicated communicator, and on rank 0
/// the host and the server thread.
struct Shared {
  boost::mpi::communicator comm;  // MPI_Comm_dup of the user's communicator
  bool left = false;              // this rank has departed
  std::vector<int> departed;      // ranks other than 0, after leaving: the ranks gone by then
  std::shared_ptr<Host> host;     // rank 0
  std::thread server;             // rank 0, when there are other ranks

  explicit Shared(boost::mpi::communicator c) : comm(std::move(c)) {}
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;

  void start(std::shared_ptr<Host> h) {
    host = std::move(h);
    if (comm.size() == 1) return;
    // The thread holds the host and a handle on the duplicate, so that even a detached thread
    // (below) never reads freed memory.
    server = std::thread([c = comm, h = host] {
      try {
        serve(MPI_Comm(c), *h);
      } catch (const std::exception& e) {  // the server is gone: end the job rather than hang it
        std::fprintf(stderr, "slowmo: the shared model's server on rank 0 failed: %s\n", e.what());
        std::fflush(stderr);
        MPI_Abort(MPI_Comm(c), 1);
      }
    });
  }

  ~Shared() {
    if (!server.joinable()) return;
    // The server still waits for ranks to leave: a rank is failing (run() aborts the job
    // next) or depart() was not called. Joining would hang; detach it.
    if (std::uncaught_exceptions() == 0)
      std::fprintf(stderr,
                   "slowmo::mpi: rank 0: the shared model's server was still running when its communicator was "
                   "destroyed; call depart() on every rank first (slowmo::mpi::run does)\n");
    server.detach();
  }

  /// A rank other than 0: sends one request (and a push's values) to the server; returns its
  /// reply, and in `error` the message of a failed one.
  Message ask(Op op, std::int64_t elem, int count, std::string& error, const void* values = nullptr) {
    const Message req{static_cast<std::int64_t>(op), elem, count};
    check(MPI_Send(req.data(), 3, MPI_INT64_T, 0, request_tag, MPI_Comm(comm)), "MPI_Send");
    if (op == Op::push) check(MPI_Send(values, count, type_of(elem), 0, push_tag, MPI_Comm(comm)), "MPI_Send");
    Message rep{};
    check(MPI_Recv(rep.data(), 3, MPI_INT64_T, 0, reply_tag, MPI_Comm(comm), MPI_STATUS_IGNORE), "MPI_Recv");
    if (rep[0] == std::int64_t(Status::failed)) {
      error.assign(std::size_t(rep[1]), '\0');
      check(MPI_Recv(error.data(), int(rep[1]), MPI_CHAR, 0, data_tag, MPI_Comm(comm), MPI_STATUS_IGNORE), "MPI_Recv");
    }
    return rep;
  }

  /// A rank other than 0: the ranks a departed or leave request returns.
  std::vector<int> ask_ranks(Op op) {
    std::string error;
    const Message rep = ask(op, 0, 0, error);
    std::vector<int> list(static_cast<std::size_t>(rep[1]));
    if (!list.empty())
      check(MPI_Recv(list.data(), int(list.size()), MPI_INT, 0, data_tag, MPI_Comm(comm), MPI_STATUS_IGNORE),
            "MPI_Recv");
    return list;
  }
};
}  // namespace slowmo::detail::mpi_model

namespace slowmo::mpi {

/// The MPI side of a Request: an MPI_Iallreduce (sum) under way; the mean divides on wait.
template <class T>
struct PendingAllReduce {
  MPI_Request request = MPI_REQUEST_NULL;
  T* data = nullptr;
  int count = 0;
  int size = 1;
  bool mean = false;
  void wait() {
    detail::mpi_model::check(MPI_Wait(&request, MPI_STATUS_IGNORE), "MPI_Wait");
    if (mean)
      for (int i = 0; i < count; ++i) data[i] /= static_cast<T>(size);
  }
  bool ready() {
    int flag = 0;
    detail::mpi_model::check(MPI_Test(&request, &flag, MPI_STATUS_IGNORE), "MPI_Test");
    return flag != 0;
  }
};

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
  // NeighborCommunicator (core/communicator.hpp): MPI_Isend to every dest, MPI_Recv from the
  // sources in their order (added into in), then MPI_Waitall. The weight travels in a small
  // header with this rank's neighbor_sum count, which validated mode checks.
  double neighbor_sum(std::span<const float> out, double weight, std::span<const int> dests, std::span<float> in,
                      std::span<const int> sources) {
    return neighbor_sum_impl(out, weight, dests, in, sources);
  }
  double neighbor_sum(std::span<const double> out, double weight, std::span<const int> dests, std::span<double> in,
                      std::span<const int> sources) {
    return neighbor_sum_impl(out, weight, dests, in, sources);
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

  /// NonBlockingCommunicator (core/communicator.hpp): MPI_Iallreduce (MPI_SUM, in place) on
  /// the native communicator (Boost.MPI has no non-blocking collectives); the mean divides by
  /// size() in wait(). In validated mode the ranks first agree on the call (one small
  /// blocking all-reduce), so a mismatch throws here on every rank.
  Request<PendingAllReduce<float>> start_all_reduce(std::span<float> buf, ReduceOp op) {
    return start_all_reduce_impl(buf, op);
  }
  Request<PendingAllReduce<double>> start_all_reduce(std::span<double> buf, ReduceOp op) {
    return start_all_reduce_impl(buf, op);
  }

  /// SplitCommunicator (core/communicator.hpp): collective; MPI_Comm_split over this
  /// communicator, after the ranks agree on the call and check the colors together (a
  /// negative color, MPI_UNDEFINED included, fails every rank, naming the ranks). The result
  /// has this one's options, its own clock start, and no shared model (host_model, pull and
  /// push stay on the communicator the program started with, as on the in-process backends).
  Comm split(int color, int key) {
    agree(Kind::split, 0, 0, -1);
    std::vector<int> colors(static_cast<std::size_t>(size()));
    detail::mpi_model::check(MPI_Allgather(&color, 1, MPI_INT, colors.data(), 1, MPI_INT, MPI_Comm(comm_)),
                             "MPI_Allgather");
    const std::string bad = detail::split_color_error(
        "slowmo::mpi", "rank", size(), [&](int q) { return colors[std::size_t(q)]; }, [](int q) { return q; });
    if (!bad.empty()) throw comm_error(bad);
    Comm out(comm_.split(color, key), options_);
    out.from_split_ = true;
    return out;
  }

  /// Wall-clock seconds since this communicator was made.
  double now() const { return MPI_Wtime() - start_; }

  const boost::mpi::communicator& native() const { return comm_; }
  /// For what Boost.MPI lacks (non-blocking collectives, ...).
  operator MPI_Comm() const { return MPI_Comm(comm_); }

  std::uint64_t bytes_sent() const { return bytes_sent_; }
  std::uint64_t messages_sent() const { return messages_sent_; }
  /// Payload bytes this rank has received from the shared model's server (its pulls).
  std::uint64_t bytes_received() const { return bytes_received_; }

  // SharedModelCommunicator (core/shared_model.hpp): rank 0 keeps the server and runs it on a
  // thread beside its training (see the top of this file). Copies of a Comm share its model.
  /// Collective: every rank passes a server built the same way (same element type and size, or
  /// every rank throws comm_error); rank 0 keeps its own. A model hosted before is replaced:
  /// every rank first leaves it (as depart()) and its server thread stops.
  void host_model(std::unique_ptr<ModelServer<float>> server) { host_model_impl(std::move(server)); }
  void host_model(std::unique_ptr<ModelServer<double>> server) { host_model_impl(std::move(server)); }
  /// x = the model's parameters; returns their version. Blocks for the server's answer only.
  Pulled pull(std::span<float> x) { return pull_impl(x); }
  Pulled pull(std::span<double> x) { return pull_impl(x); }
  /// The server applies d (ModelServer::apply); returns the version produced and the
  /// staleness. An accepted push counts in bytes_sent() and messages_sent(), a pull in
  /// bytes_received(); a refused one in none.
  Pushed push(std::span<const float> d) { return push_impl(d); }
  Pushed push(std::span<const double> d) { return push_impl(d); }
  /// The ranks that have left the shared model so far, in the order they left; asks the
  /// server. Empty before host_model; after this rank's depart(), the ranks gone by then (on
  /// rank 0, whose depart() waits for everyone: all of them).
  std::vector<int> departed() const {
    if (!model_) return {};
    if (model_->host) return model_->host->departed();
    if (model_->left) return model_->departed;
    return model_->ask_ranks(detail::mpi_model::Op::departed);
  }
  /// Leaves the shared model: this rank makes no more pulls or pushes and the server lists it
  /// in departed(). On rank 0 it then waits until every rank has left and stops the server.
  /// run() calls it when fn returns; a program that makes its Comm itself calls it on every
  /// rank before MPI is finalised. Nothing happens without a model or when this rank has left.
  void depart() {
    if (!model_ || model_->left) return;
    if (model_->host) {
      model_->host->leave(rank());
      if (model_->server.joinable()) model_->server.join();
    } else {
      model_->departed = model_->ask_ranks(detail::mpi_model::Op::leave);
    }
    model_->left = true;
  }

 private:
  enum class Kind : std::int64_t {
    all_reduce_sum = 1,
    all_reduce_mean,
    broadcast,
    barrier,
    all_gather,
    all_gather_v,
    split
  };
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
      case Kind::split: return "split";
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
  Request<PendingAllReduce<T>> start_all_reduce_impl(std::span<T> buf, ReduceOp op) {
    const int n = count_of(buf, "start_all_reduce");
    agree(op == ReduceOp::sum ? Kind::all_reduce_sum : Kind::all_reduce_mean, detail::element_code<T>(), n, -1);
    PendingAllReduce<T> p{MPI_REQUEST_NULL, buf.data(), n, size(), op == ReduceOp::mean};
    if (n > 0)
      detail::mpi_model::check(
          MPI_Iallreduce(MPI_IN_PLACE, buf.data(), n, mpi_type<T>(), MPI_SUM, MPI_Comm(comm_), &p.request),
          "MPI_Iallreduce");
    bytes_sent_ += static_cast<std::uint64_t>(2.0 * (size() - 1) / size() * double(buf.size_bytes()));
    return Request<PendingAllReduce<T>>(p);
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

  void require_not_split(const char* op) const {
    if (from_split_)
      throw usage_error(slowmo::detail::concat("slowmo::mpi: rank ", rank(), ": ", op,
                                               " on a communicator from split(): the shared model is hosted by "
                                               "all the ranks; call it on the communicator the program started with"));
  }

  // neighbor_sum: its own tags, so that its messages never match an exchange's.
  static constexpr int neighbor_data_tag = 0x5109;
  static constexpr int neighbor_header_tag = 0x510A;

  template <class T>
  std::vector<T>& neighbor_scratch() {
    if constexpr (std::is_same_v<T, float>) return neighbor_f32_;
    else return neighbor_f64_;
  }

  template <class T>
  double neighbor_sum_impl(std::span<const T> out, double weight, std::span<const int> dests, std::span<T> in,
                           std::span<const int> sources) {
    for (const auto& [peers, what] : {std::pair{dests, "dests"}, std::pair{sources, "sources"}})
      if (std::string e = detail::neighbor_peer_error("slowmo::mpi", "rank", rank(), size(), peers, what,
                                                      neighbor_mark_, neighbor_epoch_);
          !e.empty())
        throw comm_error(e);
    const int n_out = count_of(out, "neighbor_sum");
    const int n_in = count_of(in, "neighbor_sum");
    const MPI_Comm c = MPI_Comm(comm_);
    const double call = double(++neighbor_calls_);
    neighbor_header_ = {weight, call};  // read by every send until MPI_Waitall
    neighbor_requests_.resize(2 * dests.size());
    for (std::size_t j = 0; j < dests.size(); ++j) {
      BOOST_MPI_CHECK_RESULT(MPI_Isend, (out.data(), n_out, mpi_type<T>(), dests[j], neighbor_data_tag, c,
                                         &neighbor_requests_[2 * j]));
      BOOST_MPI_CHECK_RESULT(MPI_Isend, (neighbor_header_.data(), 2, MPI_DOUBLE, dests[j], neighbor_header_tag, c,
                                         &neighbor_requests_[2 * j + 1]));
    }
    if (sources.empty()) std::fill(in.begin(), in.end(), T(0));
    std::vector<T>& scratch = neighbor_scratch<T>();
    if (sources.size() > 1 && scratch.size() < in.size()) scratch.resize(in.size());  // grows once
    std::string error;  // the first problem; every source is still received, so nothing is left behind
    double total = 0;
    for (std::size_t j = 0; j < sources.size(); ++j) {
      const int source = sources[j];
      T* into = j == 0 ? in.data() : scratch.data();
      bool fits = true;
      if (options_.validate) {
        MPI_Status st;
        BOOST_MPI_CHECK_RESULT(MPI_Probe, (source, neighbor_data_tag, c, &st));
        int got = 0;
        BOOST_MPI_CHECK_RESULT(MPI_Get_count, (&st, mpi_type<T>(), &got));
        if (got != n_in) {
          fits = false;
          if (error.empty())
            error = detail::concat("slowmo::mpi: neighbor_sum: rank ", rank(), " expected ", n_in, " ",
                                   detail::element_name(detail::element_code<T>()), " values from rank ", source,
                                   ", which sent ", got);
          std::vector<T> drain(static_cast<std::size_t>(std::max(got, 0)));
          BOOST_MPI_CHECK_RESULT(MPI_Recv, (drain.data(), got, mpi_type<T>(), source, neighbor_data_tag, c,
                                            MPI_STATUS_IGNORE));
        }
      }
      if (fits)
        BOOST_MPI_CHECK_RESULT(MPI_Recv, (into, n_in, mpi_type<T>(), source, neighbor_data_tag, c, MPI_STATUS_IGNORE));
      std::array<double, 2> header{};
      BOOST_MPI_CHECK_RESULT(MPI_Recv, (header.data(), 2, MPI_DOUBLE, source, neighbor_header_tag, c,
                                        MPI_STATUS_IGNORE));
      if (options_.validate && header[1] != call && error.empty())
        error = detail::concat(
            "slowmo::mpi: neighbor_sum: rank ", rank(), " lists rank ", source, " among its sources in its call ",
            std::int64_t(call), ", but the message it got from rank ", source, " was sent in that rank's call ",
            std::int64_t(header[1]),
            "; rank j must list i in its dests exactly when i lists j in its sources, in the same round");
      if (fits && j > 0)
        for (std::size_t i = 0; i < in.size(); ++i) in[i] += scratch[i];
      total += header[0];
    }
    BOOST_MPI_CHECK_RESULT(MPI_Waitall, (int(neighbor_requests_.size()), neighbor_requests_.data(),
                                         MPI_STATUSES_IGNORE));
    bytes_sent_ += dests.size() * out.size_bytes();
    messages_sent_ += dests.size();
    if (!error.empty()) throw comm_error(error);
    return total;
  }

  std::int64_t neighbor_calls_ = 0;
  std::array<double, 2> neighbor_header_{};
  std::vector<MPI_Request> neighbor_requests_;
  std::vector<float> neighbor_f32_;  // what the second and later sources send, before it is added
  std::vector<double> neighbor_f64_;
  std::vector<std::uint32_t> neighbor_mark_;  // the peers seen (detail::neighbor_peer_error)
  std::uint32_t neighbor_epoch_ = 0;

  template <class T>
  void host_model_impl(std::unique_ptr<ModelServer<T>> server) {
    require_not_split("host_model");
    // Every rank's (element type, size or -1 for none, thread level), by one
    // small MPI_Allgather: every rank judges alike, so all throw (naming the culprits) or none.
    // The judgement comes first: a refused host_model leaves a hosted model as it was.
    int provided = MPI_THREAD_SINGLE;
    detail::mpi_model::check(MPI_Query_thread(&provided), "MPI_Query_thread");
    const int m = size();
    const std::array<std::int64_t, 3> mine{slowmo::detail::element_code<T>(),
                                           server ? std::int64_t(server->size()) : -1, provided};
    sizes_.resize(3 * std::size_t(m));  // reused: all-gathers keep their sizes there too
    BOOST_MPI_CHECK_RESULT(MPI_Allgather,
                           (mine.data(), 3, MPI_INT64_T, sizes_.data(), 3, MPI_INT64_T, MPI_Comm(comm_)));
    auto at = [&](int q, int k) { return sizes_[3 * std::size_t(q) + std::size_t(k)]; };
    auto ranks = [&](auto pick, auto describe) {  // "rank 1<describe(1)>, rank 3..." (8 at most)
      std::string out;
      for (int q = 0, listed = 0; q < m; ++q) {
        if (!pick(q)) continue;
        if (listed++ == 8) return out + ", ...";
        out += slowmo::detail::concat(listed > 1 ? ", " : "", "rank ", q, describe(q));
      }
      return out;
    };
    auto none = [](int) { return std::string(); };
    auto model_of = [&](int q) {
      return slowmo::detail::concat(": ", at(q, 1), " ", slowmo::detail::element_name(at(q, 0)));
    };
    const std::string who = slowmo::detail::concat("slowmo::mpi: rank ", rank(), ": host_model: ");
    auto null = [&](int q) { return at(q, 1) < 0; };
    auto differs = [&](int q) { return q == 0 || at(q, 0) != at(0, 0) || at(q, 1) != at(0, 1); };
    auto single = [&](int q) { return at(q, 2) < MPI_THREAD_MULTIPLE; };
    bool any_null = false, any_differs = false, any_single = false;
    for (int q = 0; q < m; ++q) any_null |= null(q), any_differs |= q > 0 && differs(q), any_single |= single(q);
    if (any_null)
      throw comm_error(who + ranks(null, none) +
                       " passed no server (a null pointer); every rank passes a server built the same way (rank "
                       "0's is kept)");
    if (any_differs)
      throw comm_error(who + "the ranks' servers differ (" + ranks(differs, model_of) +
                       "); every rank passes a server of the same element type and size (rank 0's is kept)");
    if (any_single)
      throw comm_error(who + "the shared model's server thread needs MPI_THREAD_MULTIPLE, but MPI provides less (" +
                       ranks(single, [&](int q) {
                         return slowmo::detail::concat(": ", detail::mpi_model::thread_level_name(at(q, 2)));
                       }) +
                       "); slowmo::mpi::run asks for it; where MPI is initialised otherwise, ask for "
                       "MPI_THREAD_MULTIPLE (e.g. boost::mpi::environment(argc, argv, "
                       "boost::mpi::threading::multiple))");
    if (at(0, 1) > INT_MAX)
      throw comm_error(slowmo::detail::concat(who, "a model of ", at(0, 1), " values exceeds MPI's int count (",
                                              INT_MAX, ")"));
    depart();  // from a model hosted before: rank 0 waits there for every rank, then stops its server
    auto shared = std::make_shared<detail::mpi_model::Shared>(
        boost::mpi::communicator(MPI_Comm(comm_), boost::mpi::comm_duplicate));
    if (rank() == 0) shared->start(std::make_shared<detail::mpi_model::HostOf<T>>(std::move(server), size()));
    model_ = std::move(shared);  // the others drop their server here
  }

  /// The hosted model, or usage_error when there is none or this rank has left it.
  detail::mpi_model::Shared& model(const char* op) const {
    if (!model_)
      throw usage_error(slowmo::detail::concat("slowmo::mpi: rank ", rank(), ": ", op,
                                               " before host_model: host the shared model first (collectively: "
                                               "every rank calls host_model)"));
    if (model_->left)
      throw usage_error(slowmo::detail::concat("slowmo::mpi: rank ", rank(), ": ", op,
                                               " after this rank departed from the shared model"));
    return *model_;
  }

  /// Throws, on this rank, the error the server answered to `op` of `count` T values.
  template <class T>
  [[noreturn]] void refused(const char* op, std::size_t count, const detail::mpi_model::Message& rep,
                            const std::string& error) const {
    using detail::mpi_model::Status;
    using slowmo::detail::concat;
    switch (static_cast<Status>(rep[0])) {
      case Status::wrong_type:
      case Status::wrong_size:
        throw comm_error(concat("slowmo::mpi: rank ", rank(), ": ", op, " of ", count, " ",
                                slowmo::detail::element_name(slowmo::detail::element_code<T>()),
                                " values, but the shared model holds ", rep[2], " ",
                                slowmo::detail::element_name(rep[1]), " values; the model is unchanged"));
      case Status::no_pull:
        throw usage_error(concat("slowmo::mpi: rank ", rank(),
                                 ": push before this rank's first pull: pull the model first (a push's staleness "
                                 "counts from the pusher's last pull); the model is unchanged"));
      case Status::failed:
        throw comm_error(concat("slowmo::mpi: rank ", rank(), ": ", op, ": the model server (on rank 0) failed: ",
                                error, "; no update was counted"));
      case Status::ok: break;
    }
    throw comm_error(concat("slowmo::mpi: rank ", rank(), ": ", op, ": unknown reply ", rep[0], " from the server"));
  }

  // Rank 0 is served directly, the others through the server thread (detail::mpi_model).
  template <class T>
  Pulled pull_impl(std::span<T> x) {
    namespace mm = detail::mpi_model;
    require_not_split("pull");
    mm::Shared& shared = model("pull");
    const int n = count_of(x, "pull");
    const std::int64_t elem = slowmo::detail::element_code<T>();
    std::string error;
    const mm::Message rep = shared.host ? shared.host->pull(0, elem, n, x.data(), error)
                                        : shared.ask(mm::Op::pull, elem, n, error);
    if (rep[0] != std::int64_t(mm::Status::ok)) refused<T>("pull", x.size(), rep, error);
    if (!shared.host)
      mm::check(MPI_Recv(x.data(), n, mpi_type<T>(), 0, mm::data_tag, MPI_Comm(shared.comm), MPI_STATUS_IGNORE),
                "MPI_Recv");
    bytes_received_ += x.size_bytes();
    return {rep[1]};
  }

  template <class T>
  Pushed push_impl(std::span<const T> d) {
    namespace mm = detail::mpi_model;
    require_not_split("push");
    mm::Shared& shared = model("push");
    const int n = count_of(d, "push");
    const std::int64_t elem = slowmo::detail::element_code<T>();
    std::string error;
    const mm::Message rep = shared.host ? shared.host->push(0, elem, n, d.data(), error)
                                        : shared.ask(mm::Op::push, elem, n, error, d.data());
    if (rep[0] != std::int64_t(mm::Status::ok)) refused<T>("push", d.size(), rep, error);
    bytes_sent_ += d.size_bytes();
    messages_sent_ += 1;
    return {rep[1], rep[2]};
  }

  boost::mpi::communicator comm_;
  Options options_;
  double start_;
  bool from_split_ = false;
  std::uint64_t bytes_sent_ = 0, messages_sent_ = 0, bytes_received_ = 0;
  std::vector<std::int64_t> sizes_;        // all-gathers: every rank's (count, capacity, counts size)
  std::vector<int> recv_counts_, displacements_;  // all_gather_v: MPI's int arrays
  std::shared_ptr<detail::mpi_model::Shared> model_;  // the shared model, once hosted
};

static_assert(check_shared_model_communicator<Comm>());
static_assert(check_neighbor_communicator<Comm>());

/// Runs fn(comm) on this rank, with MPI initialised for MPI_THREAD_MULTIPLE (the shared
/// model's server thread needs it). When fn returns, the rank departs from the shared model if
/// one is hosted (rank 0 waits there for every rank, then stops the server). If fn throws,
/// prints "slowmo: worker R failed: ..." to stderr and aborts the whole job (MPI_Abort), so no
/// other rank waits forever. Returns fn's exit code (0 when fn returns void).
template <class F>
int run(int argc, char** argv, F&& fn, Options options = {}) {
  boost::mpi::environment env(argc, argv, boost::mpi::threading::multiple);
  boost::mpi::communicator world;
  try {
    Comm comm(world, options);
    if constexpr (std::is_void_v<decltype(fn(comm))>) {
      fn(comm);
      comm.depart();
      return 0;
    } else {
      const int code = fn(comm);
      comm.depart();
      return code;
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
