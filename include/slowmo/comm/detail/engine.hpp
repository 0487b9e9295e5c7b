// slowmo/comm/detail/engine.hpp — the rendezvous engine behind the in-process backends.
//
// m workers run as std::threads. Every communication operation goes through one Engine,
// under one mutex: collectives meet in a slot that the last arrival completes, reducing
// the workers' own buffers in a fixed rank order (so results never depend on thread
// timing); point-to-point messages go through per (source, destination) FIFO channels.
//
// Two scheduling modes share all of it:
//  - threads (Mode::parallel): workers run concurrently and a worker waits on its own
//    condition variable only while its operation is incomplete;
//  - simulator (Mode::virtual_time): exactly one worker runs at a time; whenever the
//    running worker enters an operation it hands the turn to the runnable worker with the
//    smallest (virtual clock, rank). The interleaving is therefore a function of the
//    program alone, and events can be ordered by virtual time (the shape asynchronous
//    algorithms need), not only by lock-step rounds.
//
// Failure handling: by default a worker whose function throws aborts the run (everyone
// else's next or current operation throws detail::Aborted, so nobody waits forever); with
// WorkerFailure::leave it only departs, and an operation that needs it (a collective, a
// receive from it) fails with comm_error naming it instead of waiting. Mismatched
// collectives fail on every participant; when no worker can make progress the engine
// reports a deadlock to every waiting worker, naming what each one waits for.
//
// The shared global model (core/shared_model.hpp): host_model is a collective that keeps
// rank 0's ModelServer in the engine for the rest of the run. On threads a pull or push is
// served at once under the mutex, in arrival order. On the simulator each is an event at
// the virtual time its request reaches the server; events are served one at a time in
// (time, rank, sequence) order, and one is served only once no worker can still create an
// earlier one (settle_events), so the result is a function of the program alone.
//
// All-gathers may legitimately bring different sizes (all_gather_v), so their sizes are
// judged when the last worker arrives, from everyone's: a misfit then fails every worker
// together, and all of them may catch it and go on in step.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/shared_model.hpp"

namespace slowmo::detail {

/// Thrown into the other workers when one worker's function failed; never reaches users
/// through run(), which reports the original failure.
struct Aborted : std::exception {
  const char* what() const noexcept override { return "slowmo: run aborted because another worker failed"; }
};

enum class DType : std::uint8_t { f32, f64, i32, u8 };

template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::f32;
  else if constexpr (std::is_same_v<T, double>) return DType::f64;
  else if constexpr (std::is_same_v<T, std::int32_t>) return DType::i32;
  else {
    static_assert(std::is_same_v<T, std::uint8_t>, "slowmo: the engine moves float, double, int32 and uint8");
    return DType::u8;
  }
}
inline const char* name_of(DType t) {
  switch (t) {
    case DType::f32: return "float";
    case DType::f64: return "double";
    case DType::i32: return "int32";
    case DType::u8: return "uint8";
  }
  return "?";
}
inline std::size_t size_of(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::u8: return 1;
  }
  return 0;
}

/// One kind of network link: every message costs latency + bytes / bandwidth.
struct Link {
  double latency = 0;                                          // seconds per message
  double bandwidth = std::numeric_limits<double>::infinity();  // bytes per second

  double transfer(double bytes) const { return bytes / bandwidth; }
  double message(std::size_t bytes) const { return latency + transfer(double(bytes)); }
};

/// Communication cost model of the simulator (the engine charges it in virtual-time mode).
/// Workers sit on nodes of node_size consecutive ranks (0: one flat network); a message
/// between two workers takes the link between them (`link` inside a node, `between`
/// across nodes). A collective runs over its members as the algorithm named below, in
/// steps taken by every member at once, so each step is as slow as the slowest link the
/// collective uses: `between` as soon as its members span two nodes, `link` otherwise.
struct CostModel {
  Link link{};      // inside a node (every link when node_size is 0)
  Link between{};   // between nodes
  int node_size = 0;

  int node(int worker) const { return node_size > 0 ? worker / node_size : 0; }
  const Link& link_between(int a, int b) const { return node(a) == node(b) ? link : between; }
  /// The lowest latency of any link: no message arrives sooner after it leaves.
  double min_latency() const { return node_size > 0 ? std::min(link.latency, between.latency) : link.latency; }

  /// Ring all-reduce: 2(m-1) steps, each sending bytes/m.
  static double all_reduce(const Link& l, std::size_t bytes, int m) {
    if (m <= 1) return 0;
    return 2.0 * (m - 1) * l.latency + l.transfer(2.0 * (m - 1) / m * double(bytes));
  }
  /// Ring all-gather of blocks adding up to `total_bytes`: m-1 steps in which every worker
  /// passes one block to its successor, so (m-1)/m of the total crosses each link. Exact for
  /// equal blocks; with unequal ones a real ring waits for the largest block of each step,
  /// so this is the load-balanced bound.
  static double all_gather(const Link& l, std::size_t total_bytes, int m) {
    if (m <= 1) return 0;
    return (m - 1) * l.latency + l.transfer(double(m - 1) / m * double(total_bytes));
  }
  /// Binomial-tree broadcast: ceil(log2 m) rounds of one full message.
  static double broadcast(const Link& l, std::size_t bytes, int m) { return rounds(m) * l.message(bytes); }
  /// Dissemination barrier: ceil(log2 m) rounds of an empty message.
  static double barrier(const Link& l, int m) { return rounds(m) * l.latency; }
  static int rounds(int m) {
    int r = 0;
    while ((1 << r) < m) ++r;
    return r;
  }
};

enum class Mode { parallel, virtual_time };

/// What a worker whose function throws does to the run.
enum class WorkerFailure : std::uint8_t {
  /// The run ends: the other workers are released (their next or current operation throws)
  /// and run() throws worker_error naming the failed worker.
  abort_run,
  /// The worker departs, its error recorded; the others go on (the shared model keeps
  /// working; a collective, or a receive from it, fails with comm_error naming it) and run()
  /// returns normally, reporting the failures.
  leave
};

struct EngineOptions {
  int workers = 1;
  Mode mode = Mode::parallel;
  CostModel cost{};
  std::vector<double> time_factor{};  // per worker, multiplies compute(); empty = all 1
  double jitter = 0;                  // compute() multiplied by U(1 - jitter, 1 + jitter)
  std::uint64_t seed = 0;
  std::vector<double> message_delay{};  // per worker: extra seconds before what it sends arrives
  std::vector<std::int64_t> fail_at{};  // per worker: throw at this communication call (1-based); 0: never
  double server_seconds = 0;            // virtual seconds the model server spends on each push
  WorkerFailure on_failure = WorkerFailure::abort_run;
};

/// Thrown by a worker's communicator where the simulator was told to inject a fault.
class injected_fault : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Per-worker accounting available after a run.
struct WorkerStats {
  double time = 0;               ///< final clock: virtual seconds (simulator) or wall seconds (threads)
  std::uint64_t bytes_sent = 0;  ///< payload bytes this worker put on the (modelled) network
  std::uint64_t messages_sent = 0;
  std::uint64_t bytes_received = 0;  ///< payload bytes of the shared model it pulled
};

/// The shared model's server after a run (all zero when no model was hosted).
struct ServerStats {
  std::int64_t updates = 0;          ///< pushes applied in this run (over every model hosted)
  std::uint64_t pulls = 0;           ///< pulls served
  std::uint64_t bytes_sent = 0;      ///< payload bytes of the pulls it served
  std::uint64_t bytes_received = 0;  ///< payload bytes of the pushes it applied
};

/// A worker that failed where failures do not abort the run (WorkerFailure::leave).
struct Failure {
  int rank = -1;
  std::string message;          ///< the exception's what() ("unknown exception" for a non-std one)
  std::exception_ptr error{};   ///< the exception itself, to rethrow
};

/// Where a communicator's call comes from: the worker (its index in the run, which keys its
/// clock, statistics and faults), the group of workers the communicator spans (0: all of
/// them) and the worker's rank in that group.
struct Seat {
  int worker = 0;
  int group = 0;
  int rank = 0;
};

/// What split() gives a worker: its new group, its rank there and the group's size.
struct SplitResult {
  int group = 0;
  int rank = 0;
  int size = 0;
};

class Engine {
 public:
  explicit Engine(EngineOptions o) : opt_(std::move(o)), m_(opt_.workers), workers_(static_cast<std::size_t>(m_)) {
    channels_.resize(static_cast<std::size_t>(m_) * static_cast<std::size_t>(m_));
    auto world = std::make_unique<Group>();
    world->members.resize(static_cast<std::size_t>(m_));
    for (int r = 0; r < m_; ++r) world->members[static_cast<std::size_t>(r)] = r;
    world->init(opt_.cost);
    groups_.push_back(std::move(world));
    for (int r = 0; r < m_; ++r) {
      Worker& w = workers_[static_cast<std::size_t>(r)];
      w.factor = opt_.time_factor.empty() ? 1.0 : opt_.time_factor[static_cast<std::size_t>(r)];
      w.delay = opt_.message_delay.empty() ? 0.0 : opt_.message_delay[static_cast<std::size_t>(r)];
      w.fail_at = opt_.fail_at.empty() ? 0 : opt_.fail_at[static_cast<std::size_t>(r)];
    }
    alive_ = m_;
    departed_.reserve(static_cast<std::size_t>(m_));
    events_.reserve(static_cast<std::size_t>(m_));  // at most one pending event per worker
    start_ = std::chrono::steady_clock::now();
    if (opt_.mode == Mode::virtual_time) running_ = 0;
  }

  int size() const { return m_; }

  // ---- worker life cycle -------------------------------------------------------------

  /// Called by worker r's thread before its function runs.
  void enter(int r) {
    std::unique_lock lk(mu_);
    if (opt_.mode == Mode::virtual_time) wait_for_turn(lk, r);
  }

  /// Called by worker r's thread after its function returned or threw.
  void leave(int r, std::exception_ptr error) {
    std::unique_lock lk(mu_);
    Worker& w = worker(r);
    w.status = Status::done;
    if (opt_.mode == Mode::parallel) w.clock = wall_seconds();
    --alive_;
    departed_.push_back(r);
    if (error && !is_aborted(error)) {
      w.failure = error;
      w.failure_message = message_of(error);
      if (opt_.on_failure == WorkerFailure::abort_run) abort_all();
    }
    if (opt_.on_failure == WorkerFailure::leave && !aborted_) release_waiting_on(r);
    if (opt_.mode == Mode::virtual_time)
      hand_over(lk, r);
    else
      check_progress();
  }

  std::exception_ptr failure(int r) const { return workers_[static_cast<std::size_t>(r)].failure; }
  /// Whether a failure ends the run (abort_run) or only its worker (leave).
  WorkerFailure on_failure() const { return opt_.on_failure; }
  /// The failed workers, by rank (after the run).
  std::vector<Failure> failures() const {
    std::vector<Failure> out;
    for (int q = 0; q < m_; ++q) {
      const Worker& w = workers_[static_cast<std::size_t>(q)];
      if (w.failure) out.push_back({q, w.failure_message, w.failure});
    }
    return out;
  }
  WorkerStats stats(int r) {
    std::lock_guard lk(mu_);
    const Worker& w = workers_[static_cast<std::size_t>(r)];
    return {w.clock, w.bytes_sent, w.messages_sent, w.bytes_received};
  }
  ServerStats server_stats() {
    std::lock_guard lk(mu_);
    return model_.stats;
  }
  /// The members of the seat's group that have left the run so far (returned or failed),
  /// by their rank in the group, in the order they left. On threads: in wall-clock order. On
  /// the simulator: those that left at a virtual time up to the worker's clock, by (time,
  /// worker); the call first lets every worker that is behind in virtual time run, so none
  /// can still leave before its clock.
  std::vector<int> departed(const Seat& at) {
    std::unique_lock lk(mu_);
    const int r = at.worker;
    std::vector<int> out;
    if (opt_.mode == Mode::parallel) {
      out = departed_;
    } else {
      hand_over(lk, r);  // r stays runnable: it resumes once it is the earliest again
      wait_for_turn(lk, r);
      const double now = worker(r).clock;
      for (int q : departed_)
        if (worker(q).clock <= now) out.push_back(q);
      std::stable_sort(out.begin(), out.end(), [&](int a, int b) {
        const double ta = worker(a).clock, tb = worker(b).clock;
        return ta < tb || (ta == tb && a < b);
      });
    }
    if (at.group == 0) return out;
    const Group& g = group(at.group);
    std::vector<int> ranks;
    for (int q : out)
      if (const int k = g.rank_of(q); k >= 0) ranks.push_back(k);
    return ranks;
  }

  // ---- clocks ------------------------------------------------------------------------

  double now(int r) {
    if (opt_.mode == Mode::parallel) return wall_seconds();
    std::lock_guard lk(mu_);
    return worker(r).clock;
  }
  void advance(int r, double seconds) {
    require_option(finite(seconds) && seconds >= 0, "sim::Comm", "advance(seconds)", seconds,
                   "must be finite and >= 0");
    if (opt_.mode == Mode::parallel) return;
    std::lock_guard lk(mu_);
    worker(r).clock += seconds;
  }
  /// Moves worker r's clock forward to t (a resumed run continues at the time it stopped).
  void advance_to(int r, double t) {
    if (opt_.mode == Mode::parallel) return;
    std::lock_guard lk(mu_);
    Worker& w = worker(r);
    require_option(finite(t) && t >= w.clock, "sim::Comm", "advance_to(t)", t,
                   concat("must be finite and >= worker ", r, "'s clock, ", w.clock));
    w.clock = t;
  }
  /// The jitter is a hash of (seed, rank, the clock when the computation starts): a function
  /// of the simulated state alone, so a run resumed at the same clocks draws the same jitter.
  void compute(int r, double nominal) {
    require_option(finite(nominal) && nominal >= 0, "sim::Comm", "compute(seconds)", nominal,
                   "must be finite and >= 0");
    if (opt_.mode == Mode::parallel) return;
    std::lock_guard lk(mu_);
    Worker& w = worker(r);
    double factor = w.factor;
    if (opt_.jitter > 0) factor *= 1 + opt_.jitter * (2 * unit_hash(r, w.clock) - 1);
    w.clock += nominal * factor;
  }

  // ---- collectives -------------------------------------------------------------------

  // A collective meets the other members of the seat's group; roots and results are by
  // rank in the group.
  template <class T>
  void all_reduce(const Seat& at, std::span<T> buf, ReduceOp op) {
    collective(at, op == ReduceOp::sum ? Kind::all_reduce_sum : Kind::all_reduce_mean, dtype_of<T>(), buf.data(),
               buf.size(), -1);
  }
  template <class T>
  void broadcast(const Seat& at, std::span<T> buf, int root) {
    collective(at, Kind::broadcast, dtype_of<T>(), buf.data(), buf.size(), root);
  }
  void barrier(const Seat& at) { collective(at, Kind::barrier, DType::f64, nullptr, 0, -1); }

  /// Every member's send, in rank order, into every member's recv (of size() * send.size()).
  template <class T>
  void all_gather(const Seat& at, std::span<const T> send, std::span<T> recv) {
    const GatherPart part{send.data(), send.size(), recv.data(), recv.size(), nullptr, 0};
    collective(at, Kind::all_gather, dtype_of<T>(), nullptr, send.size(), -1, &part);
  }
  /// The same with a size per member, written to counts; returns the total.
  template <class T>
  std::size_t all_gather_v(const Seat& at, std::span<const T> send, std::span<T> recv, std::span<std::size_t> counts) {
    const GatherPart part{send.data(), send.size(), recv.data(), recv.size(), counts.data(), counts.size()};
    return collective(at, Kind::all_gather_v, dtype_of<T>(), nullptr, send.size(), -1, &part);
  }

  /// Non-blocking all-reduce: joins the collective and returns at once; buf must not be read
  /// or written until wait(at) returned (it then holds the result). On the simulator the
  /// collective completes at the latest arrival plus its cost while this worker's clock goes
  /// on, and wait() moves the clock to the completion if it is still ahead: the overlap of
  /// communication with computation. One pending per worker: another start, or a blocking
  /// collective on the same group before wait(), throws usage_error.
  template <class T>
  void start_all_reduce(const Seat& at, std::span<T> buf, ReduceOp op) {
    collective(at, op == ReduceOp::sum ? Kind::all_reduce_sum : Kind::all_reduce_mean, dtype_of<T>(), buf.data(),
               buf.size(), -1, nullptr, /*blocking=*/false);
  }
  /// Waits for the worker's non-blocking collective (nothing when none is pending); throws
  /// comm_error when it failed (a mismatch, a departure), as the blocking one would have.
  void wait(const Seat& at) {
    const int r = at.worker;
    std::unique_lock lk(mu_);
    Worker& w = worker(r);
    if (!w.nb.active) return;
    if (!w.nb.done) {
      w.op = Op{Kind::wait, DType::f32, 0, -1, ++op_seq_, w.nb.group};
      w.status = Status::blocked;
      ++blocked_;
      try {
        suspend(lk, r);
      } catch (...) {
        w.nb = {};
        throw;
      }
    }
    if (opt_.mode == Mode::virtual_time) w.clock = std::max(w.clock, w.nb.done_at);
    const std::string error = std::move(w.nb.error);
    w.nb = {};
    if (!error.empty()) throw comm_error(error);
  }
  /// Whether the worker's non-blocking collective has completed (wait() would not block).
  /// On the simulator: whether it completed by this worker's virtual clock, once every
  /// worker behind that clock has run (so the answer is a function of the program alone).
  bool test(const Seat& at) {
    const int r = at.worker;
    std::unique_lock lk(mu_);
    Worker& w = worker(r);
    if (!w.nb.active) return true;
    if (opt_.mode == Mode::parallel) return w.nb.done;
    hand_over(lk, r);  // r stays runnable: it resumes once it is the earliest again
    wait_for_turn(lk, r);
    throw_if_aborted();
    return w.nb.done && w.nb.done_at <= w.clock;
  }

  /// Collective over the seat's group (MPI_Comm_split semantics): the members with the same
  /// color form a new group, ranked by (key, rank in the old group). Colors must be >= 0;
  /// a negative one fails every member, naming the workers that passed one.
  SplitResult split(const Seat& at, int color, int key) {
    SplitArgs args{color, key, {}};
    collective(at, Kind::split, DType::f64, &args, 0, -1);
    return args.result;
  }

  // ---- the shared model --------------------------------------------------------------

  /// Collective: every worker passes a server; rank 0's is kept for the rest of the run
  /// (the others stay with their callers, who destroy them). Null servers, different element
  /// types or sizes, and a second host_model fail on every worker, naming them.
  template <class T>
  void host_model(const Seat& at, std::unique_ptr<ModelServer<T>>& server) {
    require_world(at, "host_model");
    collective(at, Kind::host_model, dtype_of<T>(), server ? static_cast<void*>(&server) : nullptr,
               server ? server->size() : 0, -1);
  }

  template <class T>
  Pulled pull(const Seat& at, std::span<T> x) {
    require_world(at, "pull");
    const int r = at.worker;
    std::unique_lock lk(mu_);
    throw_if_aborted();
    count_call(r, "pull");
    check_model_call(r, false, dtype_of<T>(), x.size());
    Worker& w = worker(r);
    w.pull_buf = x.data();
    if (opt_.mode == Mode::parallel) {
      serve_pull(r);
    } else {  // the request reaches the server latency after it leaves (a small message)
      post_event(r, Kind::pull, (w.clock + w.delay) + server_link(r).latency);
      suspend(lk, r);
    }
    rethrow_server_failure(w);
    return w.pulled;
  }

  template <class T>
  Pushed push(const Seat& at, std::span<const T> d) {
    require_world(at, "push");
    const int r = at.worker;
    std::unique_lock lk(mu_);
    throw_if_aborted();
    count_call(r, "push");
    check_model_call(r, true, dtype_of<T>(), d.size());
    Worker& w = worker(r);
    w.push_buf = d.data();  // read in place when the push is applied: the worker waits until then
    if (opt_.mode == Mode::parallel) {
      apply_push(r);
    } else {  // the push reaches the server latency + bytes / bandwidth after it leaves
      const Link& l = server_link(r);
      post_event(r, Kind::push, ((w.clock + w.delay) + l.latency) + l.transfer(double(model_bytes())));
      suspend(lk, r);
    }
    rethrow_server_failure(w);
    return w.pushed;
  }

  // ---- point to point ----------------------------------------------------------------

  /// dest and source are ranks in the seat's group; a message is received only by an
  /// exchange on the group it was sent on (as MPI keeps communicators apart).
  template <class T>
  double exchange(const Seat& at, std::span<const T> out, double weight, int dest, std::span<T> in, int source) {
    const int r = at.worker;
    std::unique_lock lk(mu_);
    throw_if_aborted();
    count_call(r, "exchange");
    const Group& g = group(at.group);
    check_peer(at, g.size(), dest, "dest");
    check_peer(at, g.size(), source, "source");
    const int to = g.members[static_cast<std::size_t>(dest)], from = g.members[static_cast<std::size_t>(source)];
    Worker& w = worker(r);
    post(r, to, at.group, dtype_of<T>(), out.data(), out.size(), weight);
    w.op = Op{Kind::receive, dtype_of<T>(), in.size(), from, ++op_seq_, at.group};
    w.recv_buf = in.data();
    w.recv_weight = 0;
    w.status = Status::blocked;
    ++blocked_;
    // The message from `source` may be there already; and `dest` may be waiting for ours.
    try_deliver(from, r);
    try_deliver(r, to);
    if (w.status == Status::blocked && departs_for_good(from) && !has_message(from, r, at.group))
      fail_waiting(r, concat("slowmo: worker ", r, ": exchange waits for a message from ", departure_of(from),
                             ", which has left the run"), worker(from).clock);
    suspend(lk, r);
    return w.recv_weight;
  }

  /// One round of gossip on any directed graph (NeighborCommunicator, core/communicator.hpp):
  /// posts (out, weight) to every dest through the per-pair channels, each message charged
  /// by the cost model from this worker's clock as exchange's is, then receives from the
  /// sources one at a time in their order (in = the first, then in += each next; the weights
  /// summed from 0 alike). The clock becomes the latest arrival. dests and sources are ranks
  /// in the seat's group. Every message carries its sender's neighbor_sum count on that
  /// group, so one sent in another call (a pattern that is not consistent) fails its
  /// receiver, naming both calls.
  template <class T>
  double neighbor_sum(const Seat& at, std::span<const T> out, double weight, std::span<const int> dests,
                      std::span<T> in, std::span<const int> sources) {
    const int r = at.worker;
    std::unique_lock lk(mu_);
    throw_if_aborted();
    count_call(r, "neighbor_sum");
    const Group& g = group(at.group);
    for (const auto& [peers, what] : {std::pair{dests, "dests"}, std::pair{sources, "sources"}})
      if (std::string e = neighbor_peer_error("slowmo", "worker", at.rank, g.size(), peers, what, mark_, mark_epoch_);
          !e.empty())
        throw comm_error(e);
    Worker& w = worker(r);
    if (w.neighbor_calls.size() <= std::size_t(at.group)) w.neighbor_calls.resize(std::size_t(at.group) + 1, 0);
    const std::int64_t call = ++w.neighbor_calls[std::size_t(at.group)];
    auto member = [&](int k) { return g.members[static_cast<std::size_t>(k)]; };
    for (int d : dests) post(r, member(d), at.group, dtype_of<T>(), out.data(), out.size(), weight, call);
    for (int d : dests) try_deliver(r, member(d));  // a dest may be waiting for ours already
    if (sources.empty()) std::fill(in.begin(), in.end(), T(0));
    double total = 0;
    std::string error;  // the first failed receive; the other sources are still received, so
                        // that no message of this call is left behind for the next one
    for (std::size_t j = 0; j < sources.size(); ++j) {
      const int source = member(sources[j]);
      w.op = Op{Kind::receive, dtype_of<T>(), in.size(), source, ++op_seq_, at.group, call, j > 0};
      w.recv_buf = in.data();
      w.recv_weight = 0;
      w.status = Status::blocked;
      ++blocked_;
      try_deliver(source, r);
      if (w.status == Status::blocked && departs_for_good(source) && !has_message(source, r, at.group))
        fail_waiting(r, concat("slowmo: worker ", r, ": neighbor_sum waits for a message from ", departure_of(source),
                               ", which has left the run"), worker(source).clock);
      try {
        suspend(lk, r);
      } catch (const comm_error& e) {
        if (error.empty()) error = e.what();
        continue;
      }
      total += w.recv_weight;
    }
    if (!error.empty()) throw comm_error(error);
    return total;
  }

 private:
  enum class Status : std::uint8_t { runnable, blocked, done };
  enum class Kind : std::uint8_t {
    none,
    all_reduce_sum,
    all_reduce_mean,
    broadcast,
    barrier,
    all_gather,
    all_gather_v,
    host_model,
    split,
    receive,
    wait,  // waiting for its non-blocking collective to complete
    pull,  // waiting for a pull event (simulator)
    push   // waiting for a push event (simulator)
  };

  static const char* kind_name(Kind k) {
    switch (k) {
      case Kind::all_reduce_sum: return "all_reduce(sum)";
      case Kind::all_reduce_mean: return "all_reduce(mean)";
      case Kind::broadcast: return "broadcast";
      case Kind::barrier: return "barrier";
      case Kind::all_gather: return "all_gather";
      case Kind::all_gather_v: return "all_gather_v";
      case Kind::host_model: return "host_model";
      case Kind::split: return "split";
      case Kind::receive: return "exchange";
      case Kind::wait: return "wait";
      case Kind::pull: return "pull";
      case Kind::push: return "push";
      case Kind::none: break;
    }
    return "nothing";
  }

  /// A uniform draw in [0, 1) from (seed, rank, clock): SplitMix64's finaliser over the three.
  double unit_hash(int r, double clock) const {
    std::uint64_t z = opt_.seed * 0x9E3779B97F4A7C15ull + std::uint64_t(r) * 0xD1B54A32D192ED03ull;
    std::uint64_t bits = 0;
    std::memcpy(&bits, &clock, sizeof bits);
    z ^= bits + 0x9E3779B97F4A7C15ull + (z << 6) + (z >> 2);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return double(z >> 11) * 0x1.0p-53;
  }

  static bool is_gather(Kind k) { return k == Kind::all_gather || k == Kind::all_gather_v; }
  /// Operations that meet in the collective slot.
  static bool is_collective(Kind k) {
    return k != Kind::none && k != Kind::receive && k != Kind::wait && k != Kind::pull && k != Kind::push;
  }

  struct Op {
    Kind kind = Kind::none;
    DType type = DType::f32;
    std::size_t count = 0;  // of a gather: what this worker sends
    int peer = -1;  // root of a broadcast (rank in the group), source of a receive (worker)
    std::uint64_t seq = 0;
    int group = 0;  // where a collective meets, or which group's messages a receive takes
    std::int64_t call = 0;  // a receive of neighbor_sum: the receiver's neighbor_sum count; 0 for exchange
    bool add = false;       // that receive adds into the buffer (every source after the first)
  };

  struct Worker {
    Status status = Status::runnable;
    double clock = 0;
    double factor = 1;
    double delay = 0;
    std::int64_t fail_at = 0, calls = 0;
    std::vector<std::int64_t> neighbor_calls;  // neighbor_sum calls so far, per group: the tag of its messages
    std::condition_variable cv;
    Op op;
    void* recv_buf = nullptr;
    double recv_weight = 0;
    std::string error;  // why the current operation failed, if it did
    std::size_t gathered = 0;  // the total of its last all-gather
    std::exception_ptr failure;
    std::string failure_message;
    std::uint64_t bytes_sent = 0, messages_sent = 0, bytes_received = 0;
    // The shared model: this worker's pending pull or push, and what it returns.
    void* pull_buf = nullptr;
    const void* push_buf = nullptr;
    bool has_pulled = false;
    std::int64_t pull_version = 0;     // the version its last pull read
    std::int64_t own_since_pull = 0;   // its pushes applied since then
    Pulled pulled{};
    Pushed pushed{};
    std::exception_ptr server_failure;  // what the ModelServer threw while serving it
    // Its non-blocking collective (one at a time): started, until wait() returns.
    struct Pending {
      bool active = false, done = false;
      int group = 0;
      Kind kind = Kind::none;
      double done_at = 0;  // when it completed (virtual time)
      std::string error;   // why it failed, if it did
    } nb;
  };

  /// A pull or push on its way to the server (simulator), keyed by (time, rank, seq).
  struct Event {
    double time = 0;
    int rank = 0;
    std::uint64_t seq = 0;
    Kind kind = Kind::none;
  };
  static bool before(const Event& a, const Event& b) {
    if (a.time != b.time) return a.time < b.time;
    if (a.rank != b.rank) return a.rank < b.rank;
    return a.seq < b.seq;
  }

  /// The hosted model: rank 0's server, of one element type.
  struct Model {
    bool hosted = false;
    DType type = DType::f64;
    std::size_t size = 0;
    std::unique_ptr<ModelServer<float>> f32;
    std::unique_ptr<ModelServer<double>> f64;
    std::int64_t version = 0;  // updates applied
    double free_at = 0;        // simulator: when the server is next idle
    ServerStats stats;
  };

  struct Message {
    std::vector<unsigned char> data;  // reused from message to message: no steady-state allocation
    std::size_t count = 0;
    DType type = DType::f32;
    double weight = 0;
    double arrival = 0;
    int group = 0;          // the group it was sent on
    std::int64_t call = 0;  // the sender's neighbor_sum count on that group; 0: sent by exchange
  };

  /// FIFO of messages from one worker to another; slots are recycled.
  struct Channel {
    std::vector<Message> q;
    std::size_t head = 0, used = 0;
    bool empty() const { return head == used; }
    Message& push() {
      if (used == q.size()) q.emplace_back();
      return q[used++];
    }
    /// The oldest message sent on group g, or null.
    Message* first_of(int g) {
      for (std::size_t i = head; i < used; ++i)
        if (q[i].group == g) return &q[i];
      return nullptr;
    }
    /// Removes a message first_of returned: the older ones (of other groups) keep their order.
    void take(Message* m) {
      const auto i = static_cast<std::size_t>(m - q.data());
      std::rotate(q.begin() + std::ptrdiff_t(head), q.begin() + std::ptrdiff_t(i), q.begin() + std::ptrdiff_t(i + 1));
      if (++head == used) head = used = 0;
    }
  };

  /// One worker's buffers in an all-gather.
  struct GatherPart {
    const void* send = nullptr;
    std::size_t send_count = 0;
    void* recv = nullptr;
    std::size_t recv_count = 0;
    std::size_t* counts = nullptr;
    std::size_t counts_size = 0;
  };

  struct Slot {
    Op op;
    int first_rank = 0;  // the worker that arrived first
    int arrived = 0;
    double latest = 0;
    std::string error;
    std::vector<void*> bufs;         // per rank in the group
    std::vector<GatherPart> gather;  // per rank in the group, for all-gathers
    void clear() {
      arrived = 0;
      error.clear();
      std::fill(bufs.begin(), bufs.end(), nullptr);
      std::fill(gather.begin(), gather.end(), GatherPart{});
    }
  };

  /// A split's arguments and result, on its caller's stack while the collective runs.
  struct SplitArgs {
    int color = 0, key = 0;
    SplitResult result;
  };

  /// Workers that meet in collectives: every worker (group 0), or a split's group. Its
  /// slot is its own, so collectives of different groups proceed independently.
  struct Group {
    int id = 0;                // its index in groups_
    std::vector<int> members;  // workers, by rank in the group
    Slot slot;
    const Link* link = nullptr;  // what its collectives cost: the slowest link they use
    int size() const { return static_cast<int>(members.size()); }
    int rank_of(int w) const {
      const auto it = std::find(members.begin(), members.end(), w);
      return it == members.end() ? -1 : static_cast<int>(it - members.begin());
    }
    void init(const CostModel& cost) {
      slot.bufs.resize(members.size());
      slot.gather.resize(members.size());  // once: gathers allocate nothing
      bool one_node = true;
      for (int w : members) one_node = one_node && cost.node(w) == cost.node(members.front());
      link = one_node ? &cost.link : &cost.between;
    }
  };

  Worker& worker(int r) { return workers_[static_cast<std::size_t>(r)]; }
  Group& group(int g) { return *groups_[static_cast<std::size_t>(g)]; }
  const Group& group(int g) const { return *groups_[static_cast<std::size_t>(g)]; }
  /// The shared model's server sits beside worker 0.
  const Link& server_link(int r) const { return opt_.cost.link_between(r, 0); }
  void require_world(const Seat& at, const char* what) const {
    if (at.group != 0)
      throw usage_error(concat("slowmo: worker ", at.worker, ": ", what,
                               " on a communicator from split(): the shared model is hosted by all the workers; "
                               "call it on the communicator the run handed out"));
  }
  bool has_message(int src, int dst, int g) { return channel(src, dst).first_of(g) != nullptr; }
  Channel& channel(int src, int dst) {
    return channels_[static_cast<std::size_t>(src) * static_cast<std::size_t>(m_) + static_cast<std::size_t>(dst)];
  }
  double wall_seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  static bool is_aborted(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const Aborted&) {
      return true;
    } catch (...) {
      return false;
    }
  }
  void throw_if_aborted() const {
    if (aborted_) throw Aborted{};
  }
  /// Counts worker r's communication calls and injects the configured fault.
  void count_call(int r, const char* op) {
    Worker& w = worker(r);
    if (++w.calls == w.fail_at)
      throw injected_fault(concat("slowmo: injected fault: worker ", r, " fails at its communication call ", w.calls,
                                  " (", op, ")"));
  }
  static void check_peer(const Seat& at, int n, int peer, const char* what) {
    const int r = at.worker;
    if (peer < 0 || peer >= n)
      throw comm_error(concat("slowmo: worker ", r, ": exchange ", what, " = ", peer, " is out of range [0, ", n,
                              ")", at.group ? " (the ranks of its communicator from split())" : ""));
    if (peer == at.rank)
      throw comm_error(concat("slowmo: worker ", r, ": exchange ", what, " = ", peer,
                              " is the worker itself; a worker cannot exchange with itself"));
  }

  // Collective slot of the seat's group: the last arrival completes the operation for
  // every member. Returns the total of an all-gather.
  std::size_t collective(const Seat& at, Kind kind, DType type, void* data, std::size_t count, int root,
                         const GatherPart* part = nullptr, bool blocking = true) {
    const int r = at.worker;
    std::unique_lock lk(mu_);
    Group& g = group(at.group);
    Slot& slot = g.slot;
    const int n = g.size();
    // A collective that already failed fails its late arrivals with the same cause, even
    // once the first failures have aborted the run: every participant learns why.
    if (slot.arrived == 0 || slot.error.empty()) throw_if_aborted();
    // (Refused whether or not it has completed yet: the rule must not depend on timing.)
    if (const auto& p = worker(r).nb; p.active && (!blocking || p.group == at.group))
      throw usage_error(concat("slowmo: worker ", r, ": ", kind_name(kind), blocking ? "" : " (non-blocking)",
                               " while its non-blocking ", kind_name(p.kind),
                               p.group == at.group ? " on this communicator" : "",
                               " has not been waited for: wait() for it first (one non-blocking collective at a "
                               "time)"));
    count_call(r, kind_name(kind));
    if (opt_.on_failure == WorkerFailure::leave && member_departed(g))  // it would never complete
      throw comm_error(concat("slowmo: worker ", r, ": ", kind_name(kind), " needs every ",
                              at.group ? "member of its group" : "worker", ", but ", departed_description()));
    if (kind == Kind::broadcast && (root < 0 || root >= n))
      throw comm_error(concat("slowmo: worker ", r, ": broadcast root ", root, " is out of range [0, ", n, ")"));
    Worker& w = worker(r);
    const Op op{kind, type, count, root, ++op_seq_, at.group};
    if (slot.arrived == 0) {
      slot.op = op;
      slot.first_rank = r;
      slot.latest = w.clock + w.delay;
      slot.error.clear();
    } else if (slot.error.empty()) {
      slot.error = mismatch(slot, r, op);
    }
    slot.bufs[static_cast<std::size_t>(at.rank)] = data;
    if (part) slot.gather[static_cast<std::size_t>(at.rank)] = *part;
    slot.latest = std::max(slot.latest, w.clock + w.delay);  // a delayed worker's data arrives late
    if (blocking) {
      w.op = op;
      w.status = Status::blocked;
      ++blocked_;
    } else {
      w.nb = {.active = true, .done = false, .group = at.group, .kind = kind, .done_at = 0, .error = {}};
    }
    if (++slot.arrived == n) complete_collective(g);
    else if (!slot.error.empty()) fail_waiting_collective(g);
    if (!blocking) return 0;  // (wait() reports a failure)
    suspend(lk, r);
    return w.gathered;
  }
  /// Worker q's non-blocking collective on g has ended, at `at` (virtual time), with `error`
  /// ("" for success); a wait() for it resumes.
  void finish_pending(int q, double at, const std::string& error) {
    Worker& w = worker(q);
    w.nb.done = true;
    w.nb.done_at = at;
    w.nb.error = error;
    if (w.status == Status::blocked && w.op.kind == Kind::wait) make_runnable(q);
  }
  bool pending_on(int q, int g) const {
    const auto& p = workers_[static_cast<std::size_t>(q)].nb;
    return p.active && !p.done && p.group == g;
  }
  /// Whether a member of g has left the run (WorkerFailure::leave).
  bool member_departed(const Group& g) const {
    if (departed_.empty()) return false;
    if (&g == groups_.front().get()) return true;
    for (int q : departed_)
      if (g.rank_of(q) >= 0) return true;
    return false;
  }

  static std::string mismatch(const Slot& slot, int r, const Op& op) {
    const Op& first = slot.op;
    const int r0 = slot.first_rank;
    if (op.kind == Kind::host_model && first.kind == Kind::host_model) return {};  // judged at completion
    if (op.kind == Kind::split && first.kind == Kind::split) return {};            // likewise
    auto describe = [](const Op& o) {
      const bool sized = o.kind != Kind::barrier && o.kind != Kind::split;
      return concat(kind_name(o.kind), sized ? concat(" of ", o.count, " ", name_of(o.type)) : std::string(),
                    o.kind == Kind::broadcast ? concat(" from root ", o.peer) : std::string());
    };
    // An all-gather's sizes are judged at completion, with everyone's (gather_size_error).
    const bool same_count = op.count == first.count || (op.kind == first.kind && is_gather(op.kind));
    if (op.kind != first.kind || !same_count || op.type != first.type || op.peer != first.peer)
      return concat("slowmo: mismatched collective: worker ", r, " called ", describe(op), " while worker ", r0,
                    " called ", describe(first), op.group ? " on their communicator from split()" : "",
                    "; every worker must call the same collectives in the same order with the same sizes");
    return {};
  }
  /// A mismatch fails every participant: those already waiting now, later ones on arrival.
  void fail_waiting_collective(Group& g) {
    for (int q : g.members) {
      Worker& w = worker(q);
      if (pending_on(q, g.id)) {
        finish_pending(q, w.clock, g.slot.error);
        continue;
      }
      if (w.status == Status::blocked && is_collective(w.op.kind) && w.op.group == g.slot.op.group) {
        w.error = g.slot.error;
        make_runnable(q);
      }
    }
  }

  void complete_collective(Group& g) {
    Slot& slot = g.slot;
    const Op op = slot.op;
    const int n = g.size();
    const Link& link = *g.link;
    double done_at = slot.latest;
    if (slot.error.empty()) {
      const std::size_t bytes = op.count * size_of(op.type);
      switch (op.kind) {
        case Kind::all_reduce_sum:
        case Kind::all_reduce_mean:
          if (op.type == DType::f32) reduce<float>(slot, n);
          else reduce<double>(slot, n);
          done_at += CostModel::all_reduce(link, bytes, n);
          if (n > 1) {
            const auto share = static_cast<std::uint64_t>(2.0 * (n - 1) / n * double(bytes));
            for (int q : g.members) {
              worker(q).bytes_sent += share;
              worker(q).messages_sent += static_cast<std::uint64_t>(2 * (n - 1));
            }
          }
          break;
        case Kind::broadcast:
          for (int k = 0; k < n; ++k)
            if (k != op.peer && bytes > 0)
              std::memcpy(slot.bufs[static_cast<std::size_t>(k)], slot.bufs[static_cast<std::size_t>(op.peer)], bytes);
          done_at += CostModel::broadcast(link, bytes, n);
          account_broadcast(g, op.peer, bytes);
          break;
        case Kind::barrier: done_at += CostModel::barrier(link, n); break;
        case Kind::host_model:
          slot.error = host_model_error();
          if (slot.error.empty()) take_model(op.type, op.count);
          done_at += CostModel::barrier(link, n);  // it meets like a barrier
          break;
        case Kind::split:
          slot.error = split_error(g);
          if (slot.error.empty()) make_groups(g);
          done_at += CostModel::all_gather(link, 2 * sizeof(int) * std::size_t(n), n);  // (color, key) from all
          break;
        case Kind::all_gather:
        case Kind::all_gather_v: {
          const auto& parts = slot.gather;
          slot.error = gather_size_error("slowmo", op.group ? "rank" : "worker", op.kind == Kind::all_gather_v, n,
                                         name_of(op.type), [&](int k) {
                                           const GatherPart& p = parts[static_cast<std::size_t>(k)];
                                           return GatherSizes{p.send_count, p.recv_count, p.counts_size};
                                         });
          if (!slot.error.empty()) break;
          const std::size_t total_bytes = gather(g, op);
          done_at += CostModel::all_gather(link, total_bytes, n);
          account_all_gather(g, op, total_bytes);
          break;
        }
        default: break;
      }
    }
    for (int q : g.members) {
      Worker& w = worker(q);
      if (pending_on(q, g.id)) {  // it went on computing: wait() takes it to done_at
        finish_pending(q, done_at, slot.error);
        continue;
      }
      if (!slot.error.empty()) w.error = slot.error;
      if (w.status == Status::blocked && is_collective(w.op.kind) && w.op.group == g.id) {
        if (opt_.mode == Mode::virtual_time) w.clock = done_at;
        make_runnable(q);
      }
    }
    slot.clear();
  }

  /// Why a split cannot be made, or "": every color must be >= 0.
  std::string split_error(const Group& g) const {
    auto args = [&](int k) { return static_cast<const SplitArgs*>(g.slot.bufs[static_cast<std::size_t>(k)]); };
    return split_color_error("slowmo", "worker", g.size(), [&](int k) { return args(k)->color; },
                             [&](int k) { return g.members[static_cast<std::size_t>(k)]; });
  }
  /// The groups of a split of g: one per color, in increasing color order, its members
  /// ranked by (key, rank in g); each member's SplitArgs receives its place.
  void make_groups(const Group& g) {
    const int n = g.size();
    std::vector<int> order(static_cast<std::size_t>(n));
    for (int k = 0; k < n; ++k) order[static_cast<std::size_t>(k)] = k;
    auto args = [&](int k) { return static_cast<SplitArgs*>(g.slot.bufs[static_cast<std::size_t>(k)]); };
    std::sort(order.begin(), order.end(), [&](int a, int b) {
      const SplitArgs &x = *args(a), &y = *args(b);
      if (x.color != y.color) return x.color < y.color;
      if (x.key != y.key) return x.key < y.key;
      return a < b;
    });
    for (std::size_t i = 0; i < order.size();) {
      std::size_t j = i;
      while (j < order.size() && args(order[j])->color == args(order[i])->color) ++j;
      auto made = std::make_unique<Group>();
      for (std::size_t k = i; k < j; ++k) made->members.push_back(g.members[static_cast<std::size_t>(order[k])]);
      made->init(opt_.cost);
      const int id = static_cast<int>(groups_.size());
      made->id = id;
      for (std::size_t k = i; k < j; ++k) args(order[k])->result = {id, static_cast<int>(k - i), static_cast<int>(j - i)};
      groups_.push_back(std::move(made));
      i = j;
    }
  }

  /// "worker 1<describe(1)>, worker 3<describe(3)>" (at most 8 named) for the q where pick(q) holds.
  template <class Pick, class Describe>
  std::string list_workers(Pick pick, Describe describe) const {
    std::string out;
    int listed = 0;
    for (int q = 0; q < m_; ++q) {
      if (!pick(q)) continue;
      if (listed++ == 8) {
        out += ", ...";
        break;
      }
      out += concat(listed > 1 ? ", " : "", "worker ", q, describe(q));
    }
    return out;
  }

  /// Why host_model cannot host, judged from every worker's server, or "".
  std::string host_model_error() const {
    auto null = [&](int q) { return groups_.front()->slot.bufs[static_cast<std::size_t>(q)] == nullptr; };
    auto none = [](int) { return std::string(); };
    for (int q = 0; q < m_; ++q)
      if (null(q))
        return concat("slowmo: host_model: ", list_workers(null, none),
                      " passed no server (a null pointer); every worker passes a server built the same way "
                      "(rank 0's is kept)");
    const Op& o0 = workers_[0].op;
    auto differs = [&](int q) {
      const Op& o = workers_[static_cast<std::size_t>(q)].op;
      return q == 0 || o.type != o0.type || o.count != o0.count;
    };
    auto model = [&](int q) {
      const Op& o = workers_[static_cast<std::size_t>(q)].op;
      return concat(": ", o.count, " ", name_of(o.type));
    };
    for (int q = 1; q < m_; ++q)
      if (differs(q))
        return concat("slowmo: host_model: the workers' servers differ (", list_workers(differs, model),
                      "); every worker passes a server of the same element type and size (rank 0's is kept)");
    return {};
  }
  /// Keeps rank 0's server (its unique_ptr, which the blocked worker 0 still holds), in place
  /// of a model hosted before: nobody is in a pull or push (all are here), and every worker
  /// pulls the new model before it pushes.
  void take_model(DType type, std::size_t size) {
    model_.hosted = true;
    model_.type = type;
    model_.size = size;
    model_.f32.reset();
    model_.f64.reset();
    if (type == DType::f32) model_.f32 = std::move(*static_cast<std::unique_ptr<ModelServer<float>>*>(groups_.front()->slot.bufs[0]));
    else model_.f64 = std::move(*static_cast<std::unique_ptr<ModelServer<double>>*>(groups_.front()->slot.bufs[0]));
    model_.version = type == DType::f32 ? model_.f32->initial_version() : model_.f64->initial_version();
    for (Worker& w : workers_) w.has_pulled = false, w.pull_version = 0, w.own_since_pull = 0;
  }

  std::size_t model_bytes() const { return model_.size * size_of(model_.type); }

  /// A pull or push is checked on its worker before it goes anywhere: the model is unchanged.
  void check_model_call(int r, bool is_push, DType type, std::size_t n) const {
    const char* what = is_push ? "push" : "pull";
    if (!model_.hosted)
      throw usage_error(concat("slowmo: worker ", r, ": ", what,
                               " before host_model: every worker calls comm.host_model(server) once, before its "
                               "first pull or push"));
    if (type != model_.type)
      throw comm_error(concat("slowmo: worker ", r, ": ", what, " of ", name_of(type),
                              " values, but the hosted model holds ", name_of(model_.type), " values"));
    if (n != model_.size)
      throw comm_error(concat("slowmo: worker ", r, ": ", what, " of ", n, " values, but the hosted model has ",
                              model_.size, " (every pull and push moves the whole model)"));
    if (is_push && !workers_[static_cast<std::size_t>(r)].has_pulled)
      throw usage_error(concat("slowmo: worker ", r,
                               ": push before this worker's first pull: pull the parameters first (a push's "
                               "staleness counts the updates since the worker's last pull)"));
  }

  /// Reads the model into worker r's pull buffer; its version becomes the worker's.
  void serve_pull(int r) {
    Worker& w = worker(r);
    try {
      if (model_.type == DType::f32) model_.f32->read(std::span<float>(static_cast<float*>(w.pull_buf), model_.size));
      else model_.f64->read(std::span<double>(static_cast<double*>(w.pull_buf), model_.size));
    } catch (...) {
      w.server_failure = std::current_exception();
      return;
    }
    w.has_pulled = true;
    w.pull_version = model_.version;
    w.own_since_pull = 0;
    w.pulled = {model_.version};
    const std::uint64_t bytes = model_bytes();
    w.bytes_received += bytes;
    model_.stats.bytes_sent += bytes;
    ++model_.stats.pulls;
  }
  /// Applies worker r's push buffer: one update; staleness counts the others' updates since
  /// the worker's last pull.
  void apply_push(int r) {
    Worker& w = worker(r);
    const Arrival arrival{r, model_.version - w.pull_version - w.own_since_pull};
    try {
      if (model_.type == DType::f32)
        model_.f32->apply(arrival, std::span<const float>(static_cast<const float*>(w.push_buf), model_.size));
      else model_.f64->apply(arrival, std::span<const double>(static_cast<const double*>(w.push_buf), model_.size));
    } catch (...) {
      w.server_failure = std::current_exception();
      return;
    }
    w.pushed.staleness = arrival.staleness;
    w.pushed.version = ++model_.version;
    ++w.own_since_pull;
    const std::uint64_t bytes = model_bytes();
    w.bytes_sent += bytes;
    w.messages_sent += 1;
    model_.stats.bytes_received += bytes;
    ++model_.stats.updates;
  }
  static void rethrow_server_failure(Worker& w) {
    if (w.server_failure) std::rethrow_exception(std::exchange(w.server_failure, nullptr));
  }

  // Simulator: worker r waits for its pull or push, an event at `time`.
  void post_event(int r, Kind kind, double time) {
    Worker& w = worker(r);
    w.op = Op{kind, model_.type, model_.size, -1, ++op_seq_};
    w.status = Status::blocked;
    ++blocked_;
    events_.push_back({time, r, w.op.seq, kind});
    std::push_heap(events_.begin(), events_.end(), later);
  }
  static bool later(const Event& a, const Event& b) { return before(b, a); }  // a min-heap on before

  /// Serves one event: a push occupies the server for server_seconds from
  /// max(arrival, server free) and its ack reaches the worker latency later; a pull reads
  /// the model at max(arrival, server free) and the parameters reach the worker
  /// bytes / bandwidth + latency later.
  void process_event(const Event& e) {
    Worker& w = worker(e.rank);
    const double start = std::max(e.time, model_.free_at);
    if (e.kind == Kind::push) {
      const double done = start + opt_.server_seconds;
      model_.free_at = done;
      apply_push(e.rank);
      w.clock = done + server_link(e.rank).latency;
    } else {
      serve_pull(e.rank);
      const Link& l = server_link(e.rank);
      w.clock = (start + l.transfer(double(model_bytes()))) + l.latency;
    }
    make_runnable(e.rank);
  }

  /// Serves the pending events that are safe, earliest first: those before every event a
  /// worker could still create. A new event is at least its creator's clock + latency
  /// later, and comes after every event of the same time from a lower rank; so a runnable
  /// worker q creates none before (clock_q + L, q). A worker blocked in a collective or an
  /// exchange resumes only when a runnable one releases it, at no earlier a clock, so it
  /// creates none before (min runnable clock + L, its rank). Workers waiting for their own
  /// event create nothing until it is served (and are then runnable); those done, nothing.
  /// With nobody runnable, the earliest event is therefore always safe. O(m) to bound, then
  /// O(log events) per event served; nothing allocates (events_ holds one per worker at most).
  void settle_events() {
    if (aborted_ || events_.empty()) return;
    const double L = opt_.cost.min_latency();
    bool any = false;
    double bound_time = 0, min_clock = 0;
    int bound_rank = 0, blocked_rank = -1;
    auto lower = [&](double t, int q) {  // bound = min(bound, (t, q))
      if (!any || t < bound_time || (t == bound_time && q < bound_rank)) bound_time = t, bound_rank = q;
    };
    for (int q = 0; q < m_; ++q) {
      const Worker& w = workers_[static_cast<std::size_t>(q)];
      if (w.status == Status::runnable) {
        lower(w.clock + L, q);
        min_clock = any ? std::min(min_clock, w.clock) : w.clock;
        any = true;
      } else if (w.status == Status::blocked && blocked_rank < 0 && w.op.kind != Kind::pull &&
                 w.op.kind != Kind::push) {
        blocked_rank = q;
      }
    }
    auto earlier = [](const Event& e, double t, int q) { return e.time < t || (e.time == t && e.rank < q); };
    while (!events_.empty()) {
      const Event e = events_.front();
      if (any && !(earlier(e, bound_time, bound_rank) && (blocked_rank < 0 || earlier(e, min_clock + L, blocked_rank))))
        break;
      std::pop_heap(events_.begin(), events_.end(), later);
      events_.pop_back();
      process_event(e);
      const double c = worker(e.rank).clock;
      lower(c + L, e.rank);
      min_clock = any ? std::min(min_clock, c) : c;
      any = true;
    }
  }

  // ---- departures (WorkerFailure::leave) -----------------------------------------------

  /// Whether worker q has left a run that goes on without it.
  bool departs_for_good(int q) const {
    return opt_.on_failure == WorkerFailure::leave && workers_[static_cast<std::size_t>(q)].status == Status::done;
  }
  /// "worker 2 (failed: boom)" or "worker 3 (returned)".
  std::string departure_of(int q) const {
    const Worker& w = workers_[static_cast<std::size_t>(q)];
    return concat("worker ", q, w.failure ? concat(" (failed: ", w.failure_message, ")") : std::string(" (returned)"));
  }
  /// "worker 2 (failed: boom) has left the run", or "worker 2 (failed: boom), worker 3
  /// (returned) have left the run" (in the order they left; at most 8 named).
  std::string departed_description() const {
    std::string out;
    for (std::size_t i = 0; i < departed_.size() && i < 8; ++i) out += concat(i ? ", " : "", departure_of(departed_[i]));
    if (departed_.size() > 8) out += ", ...";
    return concat(out, departed_.size() > 1 ? " have" : " has", " left the run");
  }
  /// Worker q's operation fails with `what`; on the simulator it resumes no earlier than
  /// `at` (the time of what failed it), so that it creates no event before those served.
  void fail_waiting(int q, std::string what, double at) {
    Worker& w = worker(q);
    w.error = std::move(what);
    if (opt_.mode == Mode::virtual_time) w.clock = std::max(w.clock, at);
    make_runnable(q);
  }
  /// Worker r has left: the collective waiting for it, and the receives from it with no
  /// message left to deliver, fail.
  void release_waiting_on(int r) {
    const double at = worker(r).clock;
    for (std::size_t id = 0; id < groups_.size(); ++id) {
      Group& g = *groups_[id];
      if (g.slot.arrived == 0 || g.rank_of(r) < 0) continue;
      for (int q : g.members) {
        const Worker& w = workers_[static_cast<std::size_t>(q)];
        const bool pending = pending_on(q, int(id));
        if (pending || (w.status == Status::blocked && is_collective(w.op.kind) && w.op.group == int(id))) {
          std::string why = concat("slowmo: worker ", q, ": ", kind_name(pending ? w.nb.kind : w.op.kind),
                                   " needs every ", id ? "member of its group" : "worker", ", but ",
                                   departed_description());
          if (pending) finish_pending(q, std::max(w.clock, at), why);
          else fail_waiting(q, std::move(why), at);
        }
      }
      g.slot.clear();
    }
    for (int q = 0; q < m_; ++q) {
      const Worker& w = workers_[static_cast<std::size_t>(q)];
      if (w.status == Status::blocked && w.op.kind == Kind::receive && w.op.peer == r && !has_message(r, q, w.op.group))
        fail_waiting(q, concat("slowmo: worker ", q, ": ", receive_name(w.op), " waits for a message from ",
                               departure_of(r), ", which has left the run"), at);
    }
  }
  static std::string message_of(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      return ex.what();
    } catch (...) {
      return "unknown exception";
    }
  }

  /// Sum in rank order: out = ((b0 + b1) + b2) + ..., then / m for the mean, then written
  /// back to every worker's buffer. Bit-identical whichever thread runs it.
  template <class T>
  void reduce(const Slot& slot, int n) {
    const Op& op = slot.op;
    auto& acc = scratch<T>();
    if (acc.size() < op.count) acc.resize(op.count);  // grows once; never shrinks
    T* out = acc.data();
    const T* b0 = static_cast<const T*>(slot.bufs[0]);
    std::copy(b0, b0 + op.count, out);
    for (int q = 1; q < n; ++q) {
      const T* b = static_cast<const T*>(slot.bufs[static_cast<std::size_t>(q)]);
      for (std::size_t i = 0; i < op.count; ++i) out[i] += b[i];
    }
    if (op.kind == Kind::all_reduce_mean) {
      const T m = static_cast<T>(n);
      for (std::size_t i = 0; i < op.count; ++i) out[i] /= m;
    }
    for (int q = 0; q < n; ++q) std::copy(out, out + op.count, static_cast<T*>(slot.bufs[static_cast<std::size_t>(q)]));
  }
  /// Copies every worker's block into every worker's recv, in rank order, and fills counts;
  /// returns the total bytes. Straight from send to recv: no staging, no allocation.
  std::size_t gather(Group& g, const Op& op) {
    const std::size_t elem = size_of(op.type);
    const int n = g.size();
    std::size_t total = 0;
    for (const GatherPart& q : g.slot.gather) total += q.send_count;
    for (int p = 0; p < n; ++p) {
      GatherPart& dst = g.slot.gather[static_cast<std::size_t>(p)];
      auto* out = static_cast<unsigned char*>(dst.recv);
      std::size_t at = 0;
      for (int q = 0; q < n; ++q) {
        const GatherPart& src = g.slot.gather[static_cast<std::size_t>(q)];
        const std::size_t bytes = src.send_count * elem;
        // In place (send is the worker's own block of recv): nothing to move.
        if (bytes > 0 && out + at != src.send) std::memcpy(out + at, src.send, bytes);
        at += bytes;
        if (dst.counts) dst.counts[q] = src.send_count;
      }
      worker(g.members[static_cast<std::size_t>(p)]).gathered = total;
    }
    return total * elem;
  }

  /// Ring all-gather: in step k worker q passes block (q - k) mod m to worker q + 1, so over
  /// the m - 1 steps it sends every block but its successor's (which the successor owns):
  /// the total less block q + 1. For equal blocks that is (m-1) blocks; summed over workers,
  /// (m-1) times the total, which is what CostModel::all_gather spreads over the m links.
  void account_all_gather(const Group& g, const Op& op, std::size_t total_bytes) {
    const int n = g.size();
    if (n <= 1) return;
    const std::size_t elem = size_of(op.type);
    for (int q = 0; q < n; ++q) {
      Worker& w = worker(g.members[static_cast<std::size_t>(q)]);
      w.bytes_sent += total_bytes - g.slot.gather[static_cast<std::size_t>((q + 1) % n)].send_count * elem;
      w.messages_sent += static_cast<std::uint64_t>(n - 1);
    }
  }

  template <class T>
  std::vector<T>& scratch() {
    if constexpr (std::is_same_v<T, float>) return scratch_f32_;
    else return scratch_f64_;
  }

  void account_broadcast(const Group& g, int root, std::size_t bytes) {
    // Binomial tree over ranks relative to the root: relative rank v sends to v + 2^k for
    // every k with 2^k > v and v + 2^k < n.
    const int n = g.size();
    for (int v = 0; v < n; ++v) {
      std::uint64_t sends = 0;
      for (int k = 0; (1 << k) < n; ++k)
        if ((1 << k) > v && v + (1 << k) < n) ++sends;
      Worker& w = worker(g.members[static_cast<std::size_t>((v + root) % n)]);
      w.messages_sent += sends;
      w.bytes_sent += sends * bytes;
    }
  }

  void post(int src, int dst, int group, DType type, const void* data, std::size_t count, double weight,
            std::int64_t call = 0) {
    Worker& s = worker(src);
    Message& msg = channel(src, dst).push();
    const std::size_t bytes = count * size_of(type);
    msg.data.resize(bytes);
    if (bytes > 0) std::memcpy(msg.data.data(), data, bytes);
    msg.count = count;
    msg.type = type;
    msg.weight = weight;
    msg.group = group;
    msg.call = call;
    msg.arrival = s.clock + s.delay + opt_.cost.link_between(src, dst).message(bytes);
    s.bytes_sent += bytes;
    s.messages_sent += 1;
  }

  static const char* receive_name(const Op& op) { return op.call > 0 ? "neighbor_sum" : "exchange"; }

  /// Why the oldest message from src cannot be what dst waits for: it belongs to another call.
  static std::string call_mismatch(int src, int dst, std::int64_t sent, std::int64_t expected) {
    if (sent == 0 || expected == 0)
      return concat("slowmo: worker ", dst, " waits in ", expected ? "neighbor_sum" : "exchange",
                    " for a message from worker ", src, ", whose next message to it was sent by ",
                    sent ? "neighbor_sum" : "exchange", "; the two workers must make the same calls");
    if (sent < expected)
      return concat("slowmo: neighbor_sum: worker ", src, " sent worker ", dst, " a message in its call ", sent,
                    ", but worker ", dst, " did not list worker ", src, " among its sources in its call ", sent,
                    " (it is now in call ", expected, "); worker j must list i in its dests exactly when i lists j "
                    "in its sources, in the same round");
    return concat("slowmo: neighbor_sum: worker ", dst, " lists worker ", src, " among its sources in its call ",
                  expected, ", but worker ", src, " did not list worker ", dst, " among its dests in its call ",
                  expected, " (its next message to it is from call ", sent,
                  "); worker j must list i in its dests exactly when i lists j in its sources, in the same round");
  }
  /// dst[i] += src[i] for `count` values of `type` (the message bytes need not be aligned).
  static void add_into(DType type, void* dst, const unsigned char* src, std::size_t count) {
    auto add = [&](auto* out) {
      using T = std::remove_pointer_t<decltype(out)>;
      for (std::size_t i = 0; i < count; ++i) {
        T v;
        std::memcpy(&v, src + i * sizeof(T), sizeof(T));
        out[i] += v;
      }
    };
    if (type == DType::f32) add(static_cast<float*>(dst));
    else add(static_cast<double*>(dst));
  }

  /// Delivers the oldest message from src to dst if dst is waiting for one from src.
  void try_deliver(int src, int dst) {
    Worker& d = worker(dst);
    Channel& ch = channel(src, dst);
    if (ch.empty() || d.status != Status::blocked || d.op.kind != Kind::receive || d.op.peer != src) return;
    Message* found = ch.first_of(d.op.group);
    if (!found) return;
    Message& msg = *found;
    if (msg.call != d.op.call) {
      d.error = call_mismatch(src, dst, msg.call, d.op.call);
    } else if (msg.type != d.op.type || msg.count != d.op.count) {
      d.error = concat("slowmo: ", receive_name(d.op), ": worker ", dst, " expected ", d.op.count, " ",
                       name_of(d.op.type), " values from worker ", src, ", which sent ", msg.count, " ",
                       name_of(msg.type));
    } else {
      if (d.op.add) add_into(msg.type, d.recv_buf, msg.data.data(), msg.count);
      else if (!msg.data.empty()) std::memcpy(d.recv_buf, msg.data.data(), msg.data.size());
      d.recv_weight = msg.weight;
      if (opt_.mode == Mode::virtual_time) d.clock = std::max(d.clock, msg.arrival);
    }
    ch.take(found);
    make_runnable(dst);
  }

  void make_runnable(int q) {
    Worker& w = worker(q);
    if (w.status == Status::blocked) --blocked_;
    w.status = Status::runnable;
    if (opt_.mode == Mode::parallel) w.cv.notify_one();
  }

  /// Waits until worker r's operation is complete (and, on the simulator, its turn).
  void suspend(std::unique_lock<std::mutex>& lk, int r) {
    Worker& w = worker(r);
    if (opt_.mode == Mode::virtual_time) {
      hand_over(lk, r);
      wait_for_turn(lk, r);
    } else {
      check_progress();
      w.cv.wait(lk, [&] { return w.status != Status::blocked || aborted_; });
    }
    if (w.status == Status::blocked) --blocked_, w.status = Status::runnable;  // woken by an abort
    w.op = Op{};
    if (!w.error.empty()) {  // before the abort check: every participant reports the real cause
      std::string e = std::move(w.error);
      w.error.clear();
      throw comm_error(e);
    }
    throw_if_aborted();
  }

  // Simulator: pass the turn to the runnable worker with the smallest (clock, rank).
  void hand_over(std::unique_lock<std::mutex>&, int /*from*/) {
    settle_events();  // so that the workers whose events were served can run, at their new clocks
    int next = -1;
    for (int q = 0; q < m_; ++q) {
      const Worker& w = workers_[static_cast<std::size_t>(q)];
      if (w.status == Status::runnable &&
          (next < 0 || w.clock < workers_[static_cast<std::size_t>(next)].clock))
        next = q;
    }
    if (next < 0 && blocked_ > 0) {
      report_deadlock();
      for (int q = 0; q < m_; ++q)
        if (workers_[static_cast<std::size_t>(q)].status == Status::runnable) {
          next = q;
          break;
        }
    }
    running_ = next;
    if (next >= 0) worker(next).cv.notify_one();
  }
  void wait_for_turn(std::unique_lock<std::mutex>& lk, int r) {
    Worker& w = worker(r);
    w.cv.wait(lk, [&] { return (running_ == r && w.status == Status::runnable) || aborted_; });
    running_ = r;
  }

  // Threads: if every live worker waits, none can ever proceed.
  void check_progress() {
    if (alive_ > 0 && blocked_ == alive_) report_deadlock();
  }

  void report_deadlock() {
    if (aborted_) return;  // waiting workers are being released with the real cause
    std::string what = "slowmo: deadlock: no worker can proceed:";
    for (int q = 0; q < m_; ++q) {
      const Worker& w = workers_[static_cast<std::size_t>(q)];
      what += concat(q ? ";" : "", " worker ", q, " ");
      if (w.status == Status::done)
        what += "has returned";
      else if (w.op.kind == Kind::receive)
        what += concat("waits in ", receive_name(w.op), " for a message from worker ", w.op.peer,
                       group_note(w.op.group));
      else if (w.op.kind == Kind::wait)
        what += concat("waits for its non-blocking ", kind_name(w.nb.kind), group_note(w.op.group));
      else
        what += concat("waits in ", kind_name(w.op.kind), group_note(w.op.group));
    }
    for (int q = 0; q < m_; ++q)
      if (worker(q).status == Status::blocked) {
        worker(q).error = what;
        make_runnable(q);
      }
    for (auto& g : groups_) g->slot.clear();
  }
  /// " on the group of workers 0, 2, 5 (from split())", or "" for every worker's.
  std::string group_note(int id) const {
    if (id == 0) return {};
    const Group& g = group(id);
    std::string list;
    for (std::size_t k = 0; k < g.members.size() && k < 8; ++k) list += concat(k ? ", " : "", g.members[k]);
    if (g.members.size() > 8) list += ", ...";
    return concat(" on the group of worker", g.size() > 1 ? "s " : " ", list, " (from split())");
  }

  void abort_all() {
    aborted_ = true;
    for (auto& w : workers_) w.cv.notify_all();
  }

  EngineOptions opt_;
  int m_;
  std::mutex mu_;
  std::vector<Worker> workers_;
  std::vector<Channel> channels_;
  std::vector<std::unique_ptr<Group>> groups_;  // [0]: every worker; then split()'s, in creation order
  Model model_;
  std::vector<Event> events_;  // simulator: pending pulls and pushes, a min-heap on (time, rank, seq)
  std::vector<int> departed_;
  std::vector<float> scratch_f32_;
  std::vector<double> scratch_f64_;
  std::vector<std::uint32_t> mark_;  // neighbor_sum: the peers seen, by epoch (grows to m once)
  std::uint32_t mark_epoch_ = 0;
  std::uint64_t op_seq_ = 0;
  int alive_ = 0;
  int blocked_ = 0;
  int running_ = -1;
  bool aborted_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace slowmo::detail
