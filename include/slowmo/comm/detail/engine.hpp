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

/// Communication cost model of the simulator (the engine charges it in virtual-time mode).
struct CostModel {
  double latency = 0;  // seconds per message
  double bandwidth = std::numeric_limits<double>::infinity();  // bytes per second

  double transfer(double bytes) const { return bytes / bandwidth; }
  /// One point-to-point message.
  double message(std::size_t bytes) const { return latency + transfer(double(bytes)); }
  /// Ring all-reduce: 2(m-1) steps, each sending bytes/m.
  double all_reduce(std::size_t bytes, int m) const {
    if (m <= 1) return 0;
    return 2.0 * (m - 1) * latency + transfer(2.0 * (m - 1) / m * double(bytes));
  }
  /// Ring all-gather of blocks adding up to `total_bytes`: m-1 steps in which every worker
  /// passes one block to its successor, so (m-1)/m of the total crosses each link. Exact for
  /// equal blocks; with unequal ones a real ring waits for the largest block of each step,
  /// so this is the load-balanced bound.
  double all_gather(std::size_t total_bytes, int m) const {
    if (m <= 1) return 0;
    return (m - 1) * latency + transfer(double(m - 1) / m * double(total_bytes));
  }
  /// Binomial-tree broadcast: ceil(log2 m) rounds of one full message.
  double broadcast(std::size_t bytes, int m) const { return rounds(m) * message(bytes); }
  /// Dissemination barrier: ceil(log2 m) rounds of an empty message.
  double barrier(int m) const { return rounds(m) * latency; }
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

class Engine {
 public:
  explicit Engine(EngineOptions o) : opt_(std::move(o)), m_(opt_.workers), workers_(static_cast<std::size_t>(m_)) {
    channels_.resize(static_cast<std::size_t>(m_) * static_cast<std::size_t>(m_));
    slot_.bufs.resize(static_cast<std::size_t>(m_));
    slot_.gather.resize(static_cast<std::size_t>(m_));  // once: gathers allocate nothing
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
  /// The ranks that have left the run so far (returned or failed), in the order they left.
  /// On threads: in wall-clock order. On the simulator: those that left at a virtual time
  /// up to worker r's clock, by (time, rank); the call first lets every worker that is
  /// behind r in virtual time run, so none can still leave before r's clock.
  std::vector<int> departed(int r) {
    std::unique_lock lk(mu_);
    if (opt_.mode == Mode::parallel) return departed_;
    hand_over(lk, r);  // r stays runnable: it resumes once it is the earliest again
    wait_for_turn(lk, r);
    const double now = worker(r).clock;
    std::vector<int> out;
    for (int q : departed_)
      if (worker(q).clock <= now) out.push_back(q);
    std::stable_sort(out.begin(), out.end(), [&](int a, int b) {
      const double ta = worker(a).clock, tb = worker(b).clock;
      return ta < tb || (ta == tb && a < b);
    });
    return out;
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

  template <class T>
  void all_reduce(int r, std::span<T> buf, ReduceOp op) {
    collective(r, op == ReduceOp::sum ? Kind::all_reduce_sum : Kind::all_reduce_mean, dtype_of<T>(), buf.data(),
               buf.size(), -1);
  }
  template <class T>
  void broadcast(int r, std::span<T> buf, int root) {
    collective(r, Kind::broadcast, dtype_of<T>(), buf.data(), buf.size(), root);
  }
  void barrier(int r) { collective(r, Kind::barrier, DType::f64, nullptr, 0, -1); }

  /// Every worker's send, in rank order, into every worker's recv (of size() * send.size()).
  template <class T>
  void all_gather(int r, std::span<const T> send, std::span<T> recv) {
    const GatherPart part{send.data(), send.size(), recv.data(), recv.size(), nullptr, 0};
    collective(r, Kind::all_gather, dtype_of<T>(), nullptr, send.size(), -1, &part);
  }
  /// The same with a size per worker, written to counts; returns the total.
  template <class T>
  std::size_t all_gather_v(int r, std::span<const T> send, std::span<T> recv, std::span<std::size_t> counts) {
    const GatherPart part{send.data(), send.size(), recv.data(), recv.size(), counts.data(), counts.size()};
    return collective(r, Kind::all_gather_v, dtype_of<T>(), nullptr, send.size(), -1, &part);
  }

  // ---- the shared model --------------------------------------------------------------

  /// Collective: every worker passes a server; rank 0's is kept for the rest of the run
  /// (the others stay with their callers, who destroy them). Null servers, different element
  /// types or sizes, and a second host_model fail on every worker, naming them.
  template <class T>
  void host_model(int r, std::unique_ptr<ModelServer<T>>& server) {
    collective(r, Kind::host_model, dtype_of<T>(), server ? static_cast<void*>(&server) : nullptr,
               server ? server->size() : 0, -1);
  }

  template <class T>
  Pulled pull(int r, std::span<T> x) {
    std::unique_lock lk(mu_);
    throw_if_aborted();
    count_call(r, "pull");
    check_model_call(r, false, dtype_of<T>(), x.size());
    Worker& w = worker(r);
    w.pull_buf = x.data();
    if (opt_.mode == Mode::parallel) {
      serve_pull(r);
    } else {  // the request reaches the server latency after it leaves (a small message)
      post_event(r, Kind::pull, (w.clock + w.delay) + opt_.cost.latency);
      suspend(lk, r);
    }
    rethrow_server_failure(w);
    return w.pulled;
  }

  template <class T>
  Pushed push(int r, std::span<const T> d) {
    std::unique_lock lk(mu_);
    throw_if_aborted();
    count_call(r, "push");
    check_model_call(r, true, dtype_of<T>(), d.size());
    Worker& w = worker(r);
    w.push_buf = d.data();  // read in place when the push is applied: the worker waits until then
    if (opt_.mode == Mode::parallel) {
      apply_push(r);
    } else {  // the push reaches the server latency + bytes / bandwidth after it leaves
      post_event(r, Kind::push, ((w.clock + w.delay) + opt_.cost.latency) + opt_.cost.transfer(double(model_bytes())));
      suspend(lk, r);
    }
    rethrow_server_failure(w);
    return w.pushed;
  }

  // ---- point to point ----------------------------------------------------------------

  template <class T>
  double exchange(int r, std::span<const T> out, double weight, int dest, std::span<T> in, int source) {
    std::unique_lock lk(mu_);
    throw_if_aborted();
    count_call(r, "exchange");
    check_peer(r, dest, "dest");
    check_peer(r, source, "source");
    Worker& w = worker(r);
    post(r, dest, dtype_of<T>(), out.data(), out.size(), weight);
    w.op = Op{Kind::receive, dtype_of<T>(), in.size(), source, ++op_seq_};
    w.recv_buf = in.data();
    w.recv_weight = 0;
    w.status = Status::blocked;
    ++blocked_;
    // The message from `source` may be there already; and `dest` may be waiting for ours.
    try_deliver(source, r);
    try_deliver(r, dest);
    if (w.status == Status::blocked && departs_for_good(source) && channel(source, r).empty())
      fail_waiting(r, concat("slowmo: worker ", r, ": exchange waits for a message from ", departure_of(source),
                             ", which has left the run"), worker(source).clock);
    suspend(lk, r);
    return w.recv_weight;
  }

  /// One round of gossip on any directed graph (NeighborCommunicator, core/communicator.hpp):
  /// posts (out, weight) to every dest through the per-pair channels, each message charged
  /// by the cost model from this worker's clock as exchange's is, then receives from the
  /// sources one at a time in their order (in = the first, then in += each next; the weights
  /// summed from 0 alike). The clock becomes the latest arrival. Every message carries its
  /// sender's neighbor_sum count, so one sent in another call (a pattern that is not
  /// consistent) fails its receiver, naming both calls.
  template <class T>
  double neighbor_sum(int r, std::span<const T> out, double weight, std::span<const int> dests, std::span<T> in,
                      std::span<const int> sources) {
    std::unique_lock lk(mu_);
    throw_if_aborted();
    count_call(r, "neighbor_sum");
    for (const auto& [peers, what] : {std::pair{dests, "dests"}, std::pair{sources, "sources"}})
      if (std::string e = neighbor_peer_error("slowmo", "worker", r, m_, peers, what, mark_, mark_epoch_); !e.empty())
        throw comm_error(e);
    Worker& w = worker(r);
    const std::int64_t call = ++w.neighbor_calls;
    for (int d : dests) post(r, d, dtype_of<T>(), out.data(), out.size(), weight, call);
    for (int d : dests) try_deliver(r, d);  // a dest may be waiting for ours already
    if (sources.empty()) std::fill(in.begin(), in.end(), T(0));
    double total = 0;
    std::string error;  // the first failed receive; the other sources are still received, so
                        // that no message of this call is left behind for the next one
    for (std::size_t j = 0; j < sources.size(); ++j) {
      const int source = sources[j];
      w.op = Op{Kind::receive, dtype_of<T>(), in.size(), source, ++op_seq_, call, j > 0};
      w.recv_buf = in.data();
      w.recv_weight = 0;
      w.status = Status::blocked;
      ++blocked_;
      try_deliver(source, r);
      if (w.status == Status::blocked && departs_for_good(source) && channel(source, r).empty())
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
    receive,
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
      case Kind::receive: return "exchange";
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
    return k != Kind::none && k != Kind::receive && k != Kind::pull && k != Kind::push;
  }

  struct Op {
    Kind kind = Kind::none;
    DType type = DType::f32;
    std::size_t count = 0;  // of a gather: what this worker sends
    int peer = -1;  // root of a broadcast, source of a receive
    std::uint64_t seq = 0;
    std::int64_t call = 0;  // a receive of neighbor_sum: the receiver's neighbor_sum count; 0 for exchange
    bool add = false;       // that receive adds into the buffer (every source after the first)
  };

  struct Worker {
    Status status = Status::runnable;
    double clock = 0;
    double factor = 1;
    double delay = 0;
    std::int64_t fail_at = 0, calls = 0;
    std::int64_t neighbor_calls = 0;  // neighbor_sum calls so far: the tag of its messages
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
    std::int64_t call = 0;  // the sender's neighbor_sum count; 0: sent by exchange
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
    Message& front() { return q[head]; }
    void pop() {
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
    int first_rank = 0;
    int arrived = 0;
    double latest = 0;
    std::string error;
    std::vector<void*> bufs;
    std::vector<GatherPart> gather;  // per worker, for all-gathers
  };

  Worker& worker(int r) { return workers_[static_cast<std::size_t>(r)]; }
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
  void check_peer(int r, int peer, const char* what) const {
    if (peer < 0 || peer >= m_)
      throw comm_error(concat("slowmo: worker ", r, ": exchange ", what, " = ", peer, " is out of range [0, ", m_,
                              ")"));
    if (peer == r)
      throw comm_error(concat("slowmo: worker ", r, ": exchange ", what, " = ", peer,
                              " is the worker itself; a worker cannot exchange with itself"));
  }

  // Collective slot: the last arrival completes the operation for everyone. Returns the
  // total of an all-gather.
  std::size_t collective(int r, Kind kind, DType type, void* data, std::size_t count, int root,
                         const GatherPart* part = nullptr) {
    std::unique_lock lk(mu_);
    // A collective that already failed fails its late arrivals with the same cause, even
    // once the first failures have aborted the run: every participant learns why.
    if (slot_.arrived == 0 || slot_.error.empty()) throw_if_aborted();
    count_call(r, kind_name(kind));
    if (opt_.on_failure == WorkerFailure::leave && !departed_.empty())  // it would never complete
      throw comm_error(concat("slowmo: worker ", r, ": ", kind_name(kind), " needs every worker, but ",
                              departed_description()));
    if (kind == Kind::broadcast && (root < 0 || root >= m_))
      throw comm_error(concat("slowmo: worker ", r, ": broadcast root ", root, " is out of range [0, ", m_, ")"));
    Worker& w = worker(r);
    const Op op{kind, type, count, root, ++op_seq_};
    if (slot_.arrived == 0) {
      slot_.op = op;
      slot_.first_rank = r;
      slot_.latest = w.clock + w.delay;
      slot_.error.clear();
    } else if (slot_.error.empty()) {
      slot_.error = mismatch(r, op);
    }
    slot_.bufs[static_cast<std::size_t>(r)] = data;
    if (part) slot_.gather[static_cast<std::size_t>(r)] = *part;
    slot_.latest = std::max(slot_.latest, w.clock + w.delay);  // a delayed worker's data arrives late
    w.op = op;
    w.status = Status::blocked;
    ++blocked_;
    if (++slot_.arrived == m_) complete_collective();
    else if (!slot_.error.empty()) fail_waiting_collective();
    suspend(lk, r);
    return w.gathered;
  }

  std::string mismatch(int r, const Op& op) const {
    const Op& first = slot_.op;
    const int r0 = slot_.first_rank;
    if (op.kind == Kind::host_model && first.kind == Kind::host_model) return {};  // judged at completion
    auto describe = [](const Op& o) {
      return concat(kind_name(o.kind), o.kind == Kind::barrier ? std::string()
                                                             : concat(" of ", o.count, " ", name_of(o.type)),
                    o.kind == Kind::broadcast ? concat(" from root ", o.peer) : std::string());
    };
    // An all-gather's sizes are judged at completion, with everyone's (gather_size_error).
    const bool same_count = op.count == first.count || (op.kind == first.kind && is_gather(op.kind));
    if (op.kind != first.kind || !same_count || op.type != first.type || op.peer != first.peer)
      return concat("slowmo: mismatched collective: worker ", r, " called ", describe(op), " while worker ", r0,
                    " called ", describe(first),
                    "; every worker must call the same collectives in the same order with the same sizes");
    return {};
  }
  /// A mismatch fails every participant: those already waiting now, later ones on arrival.
  void fail_waiting_collective() {
    for (int q = 0; q < m_; ++q) {
      Worker& w = worker(q);
      if (w.status == Status::blocked && is_collective(w.op.kind)) {
        w.error = slot_.error;
        make_runnable(q);
      }
    }
  }

  void complete_collective() {
    const Op op = slot_.op;
    double done_at = slot_.latest;
    if (slot_.error.empty()) {
      const std::size_t bytes = op.count * size_of(op.type);
      switch (op.kind) {
        case Kind::all_reduce_sum:
        case Kind::all_reduce_mean:
          if (op.type == DType::f32) reduce<float>(op);
          else reduce<double>(op);
          done_at += opt_.cost.all_reduce(bytes, m_);
          if (m_ > 1) {
            const auto share = static_cast<std::uint64_t>(2.0 * (m_ - 1) / m_ * double(bytes));
            for (int q = 0; q < m_; ++q) {
              worker(q).bytes_sent += share;
              worker(q).messages_sent += static_cast<std::uint64_t>(2 * (m_ - 1));
            }
          }
          break;
        case Kind::broadcast:
          for (int q = 0; q < m_; ++q)
            if (q != op.peer && bytes > 0)
              std::memcpy(slot_.bufs[static_cast<std::size_t>(q)], slot_.bufs[static_cast<std::size_t>(op.peer)],
                          bytes);
          done_at += opt_.cost.broadcast(bytes, m_);
          account_broadcast(op.peer, bytes);
          break;
        case Kind::barrier: done_at += opt_.cost.barrier(m_); break;
        case Kind::host_model:
          slot_.error = host_model_error();
          if (slot_.error.empty()) take_model(op.type, op.count);
          done_at += opt_.cost.barrier(m_);  // it meets like a barrier
          break;
        case Kind::all_gather:
        case Kind::all_gather_v: {
          const auto& parts = slot_.gather;
          slot_.error = gather_size_error("slowmo", "worker", op.kind == Kind::all_gather_v, m_, name_of(op.type),
                                          [&](int q) {
                                            const GatherPart& p = parts[static_cast<std::size_t>(q)];
                                            return GatherSizes{p.send_count, p.recv_count, p.counts_size};
                                          });
          if (!slot_.error.empty()) break;
          const std::size_t total_bytes = gather(op);
          done_at += opt_.cost.all_gather(total_bytes, m_);
          account_all_gather(op, total_bytes);
          break;
        }
        default: break;
      }
    }
    for (int q = 0; q < m_; ++q) {
      Worker& w = worker(q);
      if (!slot_.error.empty()) w.error = slot_.error;
      if (w.status == Status::blocked) {
        if (opt_.mode == Mode::virtual_time) w.clock = done_at;
        make_runnable(q);
      }
    }
    slot_.arrived = 0;
    std::fill(slot_.bufs.begin(), slot_.bufs.end(), nullptr);
    std::fill(slot_.gather.begin(), slot_.gather.end(), GatherPart{});
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
    auto null = [&](int q) { return slot_.bufs[static_cast<std::size_t>(q)] == nullptr; };
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
    if (type == DType::f32) model_.f32 = std::move(*static_cast<std::unique_ptr<ModelServer<float>>*>(slot_.bufs[0]));
    else model_.f64 = std::move(*static_cast<std::unique_ptr<ModelServer<double>>*>(slot_.bufs[0]));
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
      w.clock = done + opt_.cost.latency;
    } else {
      serve_pull(e.rank);
      w.clock = (start + opt_.cost.transfer(double(model_bytes()))) + opt_.cost.latency;
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
    const double L = opt_.cost.latency;
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
    if (slot_.arrived > 0) {
      for (int q = 0; q < m_; ++q) {
        const Worker& w = workers_[static_cast<std::size_t>(q)];
        if (w.status == Status::blocked && is_collective(w.op.kind))
          fail_waiting(q, concat("slowmo: worker ", q, ": ", kind_name(w.op.kind), " needs every worker, but ",
                                 departed_description()), at);
      }
      slot_.arrived = 0;
      slot_.error.clear();
      std::fill(slot_.bufs.begin(), slot_.bufs.end(), nullptr);
      std::fill(slot_.gather.begin(), slot_.gather.end(), GatherPart{});
    }
    for (int q = 0; q < m_; ++q) {
      const Worker& w = workers_[static_cast<std::size_t>(q)];
      if (w.status == Status::blocked && w.op.kind == Kind::receive && w.op.peer == r && channel(r, q).empty())
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
  void reduce(const Op& op) {
    auto& acc = scratch<T>();
    if (acc.size() < op.count) acc.resize(op.count);  // grows once; never shrinks
    T* out = acc.data();
    const T* b0 = static_cast<const T*>(slot_.bufs[0]);
    std::copy(b0, b0 + op.count, out);
    for (int q = 1; q < m_; ++q) {
      const T* b = static_cast<const T*>(slot_.bufs[static_cast<std::size_t>(q)]);
      for (std::size_t i = 0; i < op.count; ++i) out[i] += b[i];
    }
    if (op.kind == Kind::all_reduce_mean) {
      const T m = static_cast<T>(m_);
      for (std::size_t i = 0; i < op.count; ++i) out[i] /= m;
    }
    for (int q = 0; q < m_; ++q) std::copy(out, out + op.count, static_cast<T*>(slot_.bufs[static_cast<std::size_t>(q)]));
  }
  /// Copies every worker's block into every worker's recv, in rank order, and fills counts;
  /// returns the total bytes. Straight from send to recv: no staging, no allocation.
  std::size_t gather(const Op& op) {
    const std::size_t elem = size_of(op.type);
    std::size_t total = 0;
    for (const GatherPart& q : slot_.gather) total += q.send_count;
    for (int p = 0; p < m_; ++p) {
      GatherPart& dst = slot_.gather[static_cast<std::size_t>(p)];
      auto* out = static_cast<unsigned char*>(dst.recv);
      std::size_t at = 0;
      for (int q = 0; q < m_; ++q) {
        const GatherPart& src = slot_.gather[static_cast<std::size_t>(q)];
        const std::size_t bytes = src.send_count * elem;
        // In place (send is the worker's own block of recv): nothing to move.
        if (bytes > 0 && out + at != src.send) std::memcpy(out + at, src.send, bytes);
        at += bytes;
        if (dst.counts) dst.counts[q] = src.send_count;
      }
      worker(p).gathered = total;
    }
    return total * elem;
  }

  /// Ring all-gather: in step k worker q passes block (q - k) mod m to worker q + 1, so over
  /// the m - 1 steps it sends every block but its successor's (which the successor owns):
  /// the total less block q + 1. For equal blocks that is (m-1) blocks; summed over workers,
  /// (m-1) times the total, which is what CostModel::all_gather spreads over the m links.
  void account_all_gather(const Op& op, std::size_t total_bytes) {
    if (m_ <= 1) return;
    const std::size_t elem = size_of(op.type);
    for (int q = 0; q < m_; ++q) {
      Worker& w = worker(q);
      w.bytes_sent += total_bytes - slot_.gather[static_cast<std::size_t>((q + 1) % m_)].send_count * elem;
      w.messages_sent += static_cast<std::uint64_t>(m_ - 1);
    }
  }

  template <class T>
  std::vector<T>& scratch() {
    if constexpr (std::is_same_v<T, float>) return scratch_f32_;
    else return scratch_f64_;
  }

  void account_broadcast(int root, std::size_t bytes) {
    // Binomial tree over ranks relative to the root: relative rank v sends to v + 2^k for
    // every k with 2^k > v and v + 2^k < m.
    for (int v = 0; v < m_; ++v) {
      std::uint64_t sends = 0;
      for (int k = 0; (1 << k) < m_; ++k)
        if ((1 << k) > v && v + (1 << k) < m_) ++sends;
      Worker& w = worker((v + root) % m_);
      w.messages_sent += sends;
      w.bytes_sent += sends * bytes;
    }
  }

  void post(int src, int dst, DType type, const void* data, std::size_t count, double weight,
            std::int64_t call = 0) {
    Worker& s = worker(src);
    Message& msg = channel(src, dst).push();
    const std::size_t bytes = count * size_of(type);
    msg.data.resize(bytes);
    if (bytes > 0) std::memcpy(msg.data.data(), data, bytes);
    msg.count = count;
    msg.type = type;
    msg.weight = weight;
    msg.call = call;
    msg.arrival = s.clock + s.delay + opt_.cost.message(bytes);
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
    Message& msg = ch.front();
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
    ch.pop();
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
        what += concat("waits in ", receive_name(w.op), " for a message from worker ", w.op.peer);
      else
        what += concat("waits in ", kind_name(w.op.kind));
    }
    for (int q = 0; q < m_; ++q)
      if (worker(q).status == Status::blocked) {
        worker(q).error = what;
        make_runnable(q);
      }
    slot_.arrived = 0;
    std::fill(slot_.bufs.begin(), slot_.bufs.end(), nullptr);
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
  Slot slot_;
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
