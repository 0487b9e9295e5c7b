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
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
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
  Network network{};
  /// Per-worker compute slowdown: compute(s) advances worker r's clock by s * slowdown[r]
  /// (a straggler has slowdown 10). Empty: 1 for everyone.
  std::vector<double> slowdown{};
  /// compute(s) is further multiplied by U(1 - jitter, 1 + jitter), seeded per worker.
  double jitter = 0;
  std::uint64_t seed = 0;
  /// Fault injection: per worker, extra seconds before anything it sends arrives (its
  /// messages and its contributions to collectives). Empty: none.
  std::vector<double> message_delay{};
  /// Fault injection: per worker, the communication call (1-based) at which it throws
  /// sim::injected_fault; 0 never. Empty: no faults.
  std::vector<std::int64_t> fail_at_call{};
};

/// What a run leaves behind, per worker: virtual time at the end, bytes and messages sent.
struct Report {
  std::vector<detail::WorkerStats> workers;
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
  /// Advances this worker's virtual clock by exactly `seconds`.
  void advance(double seconds) { engine_->advance(rank_, seconds); }
  /// Charges `nominal_seconds` of computation, scaled by this worker's slowdown and jitter.
  void compute(double nominal_seconds) { engine_->compute(rank_, nominal_seconds); }
};


}  // namespace slowmo::sim

namespace slowmo::detail {

inline EngineOptions sim_engine_options(const sim::Options& o) {
  require_option(o.workers >= 1, "sim::run", "workers", o.workers, "must be >= 1");
  require_option(finite(o.network.latency) && o.network.latency >= 0, "sim::run", "network.latency",
                 o.network.latency, "must be finite and >= 0 (seconds)");
  require_option(o.network.bandwidth > 0 && !std::isnan(o.network.bandwidth), "sim::run", "network.bandwidth",
                 o.network.bandwidth, "must be > 0 (bytes per second; infinity for a free network)");
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
  return {.workers = o.workers,
          .mode = Mode::virtual_time,
          .cost = {.latency = o.network.latency, .bandwidth = o.network.bandwidth},
          .time_factor = o.slowdown,
          .jitter = o.jitter,
          .seed = o.seed,
          .message_delay = o.message_delay,
          .fail_at = o.fail_at_call};
}
}  // namespace slowmo::detail

namespace slowmo::sim {

/// Runs fn(comm) for every simulated worker; returns when all have returned. A worker that
/// throws ends the run: the others are released and run() throws slowmo::worker_error
/// naming the worker, with the original exception nested. If the system refuses one of the
/// workers' threads, no worker runs and run() throws slowmo::comm_error saying so.
template <class F>
Report run(const Options& options, F&& fn) {
  slowmo::detail::Engine engine(slowmo::detail::sim_engine_options(options));
  return {slowmo::detail::run_workers<Comm>(engine, fn, "sim::run")};
}

}  // namespace slowmo::sim
