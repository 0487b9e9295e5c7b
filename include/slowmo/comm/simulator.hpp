// slowmo/comm/simulator.hpp — the deterministic in-process simulator, the embedded
// default backend: m logical workers of one SPMD function in one process, with virtual
// clocks charged by a compute model and a network model.
//
//     auto report = slowmo::sim::run({.workers = 16, .network = {.latency = 50e-6, .bandwidth = 1.25e9}},
//                                    [&](slowmo::sim::Comm& comm) { train(comm); });
//
// Deterministic: reductions add the workers' buffers in rank order, and exactly one worker
// runs at a time, chosen by (virtual clock, rank), so every run of a program gives
// bit-identical results whatever the OS does, and the same results as slowmo::threads.
//
// The shared global model (SharedModelCommunicator, core/shared_model.hpp) is a server node
// beside the workers. With B = size() * sizeof(T) bytes, L the latency, bw the bandwidth,
// S = Options::server_seconds_per_update and d_w worker w's message_delay:
//  - push at worker clock t: it arrives at a = t + d_w + L + B/bw;
//  - pull at worker clock t: its request arrives at a = t + d_w + L;
//  - the server serves these events one at a time in (a, rank, sequence) order: a push
//    starts at max(a, free), is applied at done = start + S (the next version), free =
//    done, and the worker's clock becomes done + L (a small ack); a pull reads the
//    parameters at s = max(a, free) (every update served before it, none after; pulls
//    cost the server no time) and the worker's clock becomes s + B/bw + L;
//  - an event is served only once no worker can still create an earlier one, so the
//    versions, staleness, clocks and parameters are a function of the program alone:
//    bit-reproducible whatever the host's threads do.
// host_model meets like a barrier (ceil(log2 m) latencies). A push adds B to the worker's
// bytes sent and one message; a pull adds B to its bytes received and to the server's
// bytes sent (Report::server).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "slowmo/comm/detail/local_comm.hpp"

namespace slowmo::sim {

/// The network model: every message costs latency + bytes / bandwidth; an all-reduce costs
/// a ring all-reduce, 2(m-1) latency + 2(m-1)/m * bytes / bandwidth; an all-gather (either
/// form) a ring all-gather, (m-1) latency + (m-1)/m * total_bytes / bandwidth, where
/// total_bytes adds up every worker's block (exact for equal blocks; for unequal ones the
/// load-balanced bound); a broadcast ceil(log2 m) messages; a barrier ceil(log2 m)
/// latencies. A collective completes for everyone at the latest arrival plus its cost.
/// Bytes sent follow the same algorithms: per worker 2(m-1)/m * bytes for an all-reduce;
/// for an all-gather, total_bytes less its successor's block (a ring passes on every block
/// but the one its successor owns): (m-1) blocks when they are equal.
///
/// Groups and two levels: on a communicator from split(), m is the group's size and only
/// its members' clocks take part. With Options::workers_per_node = s, worker r sits on node
/// r / s; a message takes the link between its two workers (`network` inside a node,
/// `between_nodes` across), and a collective, whose steps every member takes at once, is as
/// slow as the slowest link it uses: its formula above is evaluated with `between_nodes` as
/// soon as its members span two nodes, with `network` otherwise. So a flat all-reduce over
/// a 4 x 4 cluster costs 2 * 15 steps of the slow link, while a group inside a node costs
/// its fast one (a hierarchical method's whole point). The shared model's server sits on
/// worker 0's node.
struct Network {
  double latency = 50e-6;    ///< seconds per message (default 50 microseconds)
  double bandwidth = 1.25e9;  ///< bytes per second (default 10 Gbit/s); infinity for a free network

  /// A zero-cost network (communication takes no virtual time).
  static Network free() { return {0.0, std::numeric_limits<double>::infinity()}; }
  /// "10 Gbit/s, 50 us" style description for printouts.
  std::string describe() const {
    if (std::isinf(bandwidth) && latency == 0) return "free network";
    return detail::concat(bandwidth * 8 / 1e9, " Gbit/s, ", latency * 1e6, " us latency");
  }
};

struct Options {
  int workers = 1;
  /// The links between workers: all of them, or, with workers_per_node, those inside a node.
  Network network{};
  /// A two-level cluster: nodes of this many consecutive ranks (worker r on node r / size),
  /// linked by between_nodes; 0: one flat network.
  int workers_per_node = 0;
  /// The links between nodes (used only when workers_per_node > 0).
  Network between_nodes{};
  /// Per-worker compute slowdown: compute(s) advances worker r's clock by s * slowdown[r]
  /// (a straggler has slowdown 10). Empty: 1 for everyone.
  std::vector<double> slowdown{};
  /// compute(s) is further multiplied by 1 + jitter * (2u - 1), u in [0, 1) a hash of (seed,
  /// rank, the worker's clock): uniform, seeded, and a function of the simulated state alone.
  double jitter = 0;
  std::uint64_t seed = 0;
  /// Fault injection: per worker, extra seconds before anything it sends arrives (its
  /// messages and its contributions to collectives). Empty: none.
  std::vector<double> message_delay{};
  /// Fault injection: per worker, the communication call (1-based) at which it throws
  /// sim::injected_fault; 0 never. Empty: no faults.
  std::vector<std::int64_t> fail_at_call{};
  /// The shared model's server spends this many virtual seconds on each push (pulls cost
  /// it nothing); pushes that arrive while it is busy queue in arrival order.
  double server_seconds_per_update = 0;
  /// What a worker whose function throws does: ends the run (abort_run: run() throws
  /// worker_error) or only departs (leave: the others go on; run() returns, with the
  /// failures in Report::failures).
  detail::WorkerFailure worker_failure = detail::WorkerFailure::abort_run;
};

/// What a failing worker does to the run (Options::worker_failure).
using WorkerFailure = slowmo::detail::WorkerFailure;
/// A worker that failed without ending the run (WorkerFailure::leave).
using Failure = slowmo::detail::Failure;

/// What a run leaves behind, per worker: virtual time at the end, bytes and messages sent,
/// bytes received from the shared model; the failed workers (WorkerFailure::leave, by
/// rank); and the shared model's server.
struct Report {
  std::vector<detail::WorkerStats> workers;
  std::vector<detail::Failure> failures{};
  detail::ServerStats server{};
  /// The virtual time at which the last worker finished.
  double makespan() const {
    double t = 0;
    for (const auto& w : workers) t = std::max(t, w.time);
    return t;
  }
  std::uint64_t total_bytes_sent() const {
    std::uint64_t b = 0;
    for (const auto& w : workers) b += w.bytes_sent;
    return b;
  }
};

/// What a worker throws where Options::fail_at_call injects a fault.
using injected_fault = slowmo::detail::injected_fault;

/// The communicator each simulated worker receives.
class Comm : public detail::LocalComm {
 public:
  using LocalComm::LocalComm;
  /// Collective over this communicator's workers (MPI_Comm_split): those that pass the same
  /// color (>= 0) get a communicator over just them, ranked by (key, rank here). Its
  /// collectives meet only its members, are charged to their clocks with its size (and the
  /// links it crosses), and stay bit-reproducible.
  Comm split(int color, int key) { return Comm(split_seat(color, key)); }
  /// Advances this worker's virtual clock by exactly `seconds`.
  void advance(double seconds) { engine_->advance(at_.worker, seconds); }
  /// Charges `nominal_seconds` of computation, scaled by this worker's slowdown and jitter.
  void compute(double nominal_seconds) { engine_->compute(at_.worker, nominal_seconds); }
  /// Moves this worker's clock forward to `t` (>= now()): how a resumed run continues at the
  /// virtual time it stopped (AsyncLocalSgd does it after loading a checkpoint).
  void advance_to(double t) { engine_->advance_to(at_.worker, t); }

 private:
  explicit Comm(LocalComm c) : LocalComm(c) {}
};


}  // namespace slowmo::sim

namespace slowmo::detail {

inline EngineOptions sim_engine_options(const sim::Options& o) {
  require_option(o.workers >= 1, "sim::run", "workers", o.workers, "must be >= 1");
  require_option(finite(o.network.latency) && o.network.latency >= 0, "sim::run", "network.latency",
                 o.network.latency, "must be finite and >= 0 (seconds)");
  require_option(o.network.bandwidth > 0 && !std::isnan(o.network.bandwidth), "sim::run", "network.bandwidth",
                 o.network.bandwidth, "must be > 0 (bytes per second; infinity for a free network)");
  require_option(o.workers_per_node >= 0, "sim::run", "workers_per_node", o.workers_per_node,
                 "must be >= 0 (0: one flat network)");
  if (o.workers_per_node > 0) {
    require_option(finite(o.between_nodes.latency) && o.between_nodes.latency >= 0, "sim::run",
                   "between_nodes.latency", o.between_nodes.latency, "must be finite and >= 0 (seconds)");
    require_option(o.between_nodes.bandwidth > 0 && !std::isnan(o.between_nodes.bandwidth), "sim::run",
                   "between_nodes.bandwidth", o.between_nodes.bandwidth,
                   "must be > 0 (bytes per second; infinity for a free network)");
  }
  require_option(o.slowdown.empty() || o.slowdown.size() == static_cast<std::size_t>(o.workers), "sim::run",
                 "slowdown.size()", o.slowdown.size(), "must be 0 or the number of workers");
  for (std::size_t r = 0; r < o.slowdown.size(); ++r)
    require_option(finite(o.slowdown[r]) && o.slowdown[r] > 0, "sim::run",
                   concat("slowdown[", r, "]"), o.slowdown[r], "must be finite and > 0");
  require_option(finite(o.jitter) && o.jitter >= 0 && o.jitter < 1, "sim::run", "jitter", o.jitter,
                 "must be in [0, 1)");
  require_option(o.message_delay.empty() || o.message_delay.size() == std::size_t(o.workers), "sim::run",
                 "message_delay.size()", o.message_delay.size(), "must be 0 or the number of workers");
  for (std::size_t r = 0; r < o.message_delay.size(); ++r)
    require_option(finite(o.message_delay[r]) && o.message_delay[r] >= 0, "sim::run",
                   concat("message_delay[", r, "]"), o.message_delay[r], "must be finite and >= 0");
  require_option(o.fail_at_call.empty() || o.fail_at_call.size() == std::size_t(o.workers), "sim::run",
                 "fail_at_call.size()", o.fail_at_call.size(), "must be 0 or the number of workers");
  require_option(finite(o.server_seconds_per_update) && o.server_seconds_per_update >= 0, "sim::run",
                 "server_seconds_per_update", o.server_seconds_per_update, "must be finite and >= 0 (seconds)");
  return {.workers = o.workers,
          .mode = Mode::virtual_time,
          .cost = {.link = {o.network.latency, o.network.bandwidth},
                   .between = {o.between_nodes.latency, o.between_nodes.bandwidth},
                   .node_size = o.workers_per_node},
          .time_factor = o.slowdown,
          .jitter = o.jitter,
          .seed = o.seed,
          .message_delay = o.message_delay,
          .fail_at = o.fail_at_call,
          .server_seconds = o.server_seconds_per_update,
          .on_failure = o.worker_failure};
}
}  // namespace slowmo::detail

namespace slowmo::sim {

/// Runs fn(comm) for every simulated worker; returns when all have returned. A worker that
/// throws ends the run: the others are released and run() throws slowmo::worker_error
/// naming the worker, with the original exception nested (with WorkerFailure::leave it
/// only departs and run() reports it in Report::failures). If the system refuses one of
/// the workers' threads, no worker runs and run() throws slowmo::comm_error saying so.
template <class F>
Report run(const Options& options, F&& fn) {
  slowmo::detail::Engine engine(slowmo::detail::sim_engine_options(options));
  slowmo::detail::RunResult result = slowmo::detail::run_workers<Comm>(engine, fn, "sim::run");
  return {std::move(result.workers), std::move(result.failures), result.server};
}

}  // namespace slowmo::sim
