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
// Failure handling: a worker whose function throws aborts the run (everyone else's next or
// current operation throws detail::Aborted, so nobody waits forever); mismatched
// collectives fail on every participant; when no worker can make progress the engine
// reports a deadlock to every waiting worker, naming what each one waits for.
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
#include <mutex>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/error.hpp"

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

struct EngineOptions {
  int workers = 1;
  Mode mode = Mode::parallel;
  CostModel cost{};
  std::vector<double> time_factor{};  // per worker, multiplies compute(); empty = all 1
  double jitter = 0;                  // compute() multiplied by U(1 - jitter, 1 + jitter)
  std::uint64_t seed = 0;
  std::vector<double> message_delay{};  // per worker: extra seconds before what it sends arrives
  std::vector<std::int64_t> fail_at{};  // per worker: throw at this communication call (1-based); 0: never
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
};

class Engine {
 public:
  explicit Engine(EngineOptions o) : opt_(std::move(o)), m_(opt_.workers), workers_(static_cast<std::size_t>(m_)) {
    channels_.resize(static_cast<std::size_t>(m_) * static_cast<std::size_t>(m_));
    slot_.bufs.resize(static_cast<std::size_t>(m_));
    slot_.gather.resize(static_cast<std::size_t>(m_));  // once: gathers allocate nothing
    for (int r = 0; r < m_; ++r) {
      Worker& w = workers_[static_cast<std::size_t>(r)];
      w.rng.seed(opt_.seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(r) + 1);
      w.factor = opt_.time_factor.empty() ? 1.0 : opt_.time_factor[static_cast<std::size_t>(r)];
      w.delay = opt_.message_delay.empty() ? 0.0 : opt_.message_delay[static_cast<std::size_t>(r)];
      w.fail_at = opt_.fail_at.empty() ? 0 : opt_.fail_at[static_cast<std::size_t>(r)];
    }
    alive_ = m_;
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
    if (error && !is_aborted(error)) {
      w.failure = error;
      abort_all();
    }
    if (opt_.mode == Mode::virtual_time)
      hand_over(lk, r);
    else
      check_progress();
  }

  std::exception_ptr failure(int r) const { return workers_[static_cast<std::size_t>(r)].failure; }
  WorkerStats stats(int r) {
    std::lock_guard lk(mu_);
    const Worker& w = workers_[static_cast<std::size_t>(r)];
    return {w.clock, w.bytes_sent, w.messages_sent};
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
  void compute(int r, double nominal) {
    require_option(finite(nominal) && nominal >= 0, "sim::Comm", "compute(seconds)", nominal,
                   "must be finite and >= 0");
    if (opt_.mode == Mode::parallel) return;
    std::lock_guard lk(mu_);
    Worker& w = worker(r);
    double factor = w.factor;
    if (opt_.jitter > 0) factor *= std::uniform_real_distribution<double>(1 - opt_.jitter, 1 + opt_.jitter)(w.rng);
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
    suspend(lk, r);
    return w.recv_weight;
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
    receive
  };

  static const char* kind_name(Kind k) {
    switch (k) {
      case Kind::all_reduce_sum: return "all_reduce(sum)";
      case Kind::all_reduce_mean: return "all_reduce(mean)";
      case Kind::broadcast: return "broadcast";
      case Kind::barrier: return "barrier";
      case Kind::all_gather: return "all_gather";
      case Kind::all_gather_v: return "all_gather_v";
      case Kind::receive: return "exchange";
      case Kind::none: break;
    }
    return "nothing";
  }

  static bool is_gather(Kind k) { return k == Kind::all_gather || k == Kind::all_gather_v; }

  struct Op {
    Kind kind = Kind::none;
    DType type = DType::f32;
    std::size_t count = 0;  // of a gather: what this worker sends
    int peer = -1;  // root of a broadcast, source of a receive
    std::uint64_t seq = 0;
  };

  struct Worker {
    Status status = Status::runnable;
    double clock = 0;
    double factor = 1;
    double delay = 0;
    std::int64_t fail_at = 0, calls = 0;
    std::mt19937_64 rng;
    std::condition_variable cv;
    Op op;
    void* recv_buf = nullptr;
    double recv_weight = 0;
    std::string error;  // why the current operation failed, if it did
    std::size_t gathered = 0;  // the total of its last all-gather
    std::exception_ptr failure;
    std::uint64_t bytes_sent = 0, messages_sent = 0;
  };

  struct Message {
    std::vector<unsigned char> data;  // reused from message to message: no steady-state allocation
    std::size_t count = 0;
    DType type = DType::f32;
    double weight = 0;
    double arrival = 0;
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
      if (w.status == Status::blocked && w.op.kind != Kind::receive && w.op.kind != Kind::none) {
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

  void post(int src, int dst, DType type, const void* data, std::size_t count, double weight) {
    Worker& s = worker(src);
    Message& msg = channel(src, dst).push();
    const std::size_t bytes = count * size_of(type);
    msg.data.resize(bytes);
    if (bytes > 0) std::memcpy(msg.data.data(), data, bytes);
    msg.count = count;
    msg.type = type;
    msg.weight = weight;
    msg.arrival = s.clock + s.delay + opt_.cost.message(bytes);
    s.bytes_sent += bytes;
    s.messages_sent += 1;
  }

  /// Delivers the oldest message from src to dst if dst is waiting for one from src.
  void try_deliver(int src, int dst) {
    Worker& d = worker(dst);
    Channel& ch = channel(src, dst);
    if (ch.empty() || d.status != Status::blocked || d.op.kind != Kind::receive || d.op.peer != src) return;
    Message& msg = ch.front();
    if (msg.type != d.op.type || msg.count != d.op.count) {
      d.error = concat("slowmo: exchange: worker ", dst, " expected ", d.op.count, " ", name_of(d.op.type),
                       " values from worker ", src, ", which sent ", msg.count, " ", name_of(msg.type));
    } else {
      if (!msg.data.empty()) std::memcpy(d.recv_buf, msg.data.data(), msg.data.size());
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
        what += concat("waits in exchange for a message from worker ", w.op.peer);
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
  std::vector<float> scratch_f32_;
  std::vector<double> scratch_f64_;
  std::uint64_t op_seq_ = 0;
  int alive_ = 0;
  int blocked_ = 0;
  int running_ = -1;
  bool aborted_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace slowmo::detail
