// slowmo/comm/threads.hpp — m workers as std::threads in one process, sharing memory.
//
// Real parallelism on a multi-core machine; reductions add the workers' buffers in rank
// order exactly as the simulator does, so a program gives bit-identical results on both.
// A waiting worker sleeps on a condition variable; nothing spins.
//
// The shared global model (SharedModelCommunicator, core/shared_model.hpp): a pull or push
// is served at once, under the engine's lock, in the order the threads get there. That
// order depends on thread timing, so versions, staleness and an asynchronous algorithm's
// parameters are reproducible only within tolerance, not bit for bit (the simulator orders
// them by virtual time and is).
#pragma once

#include <utility>
#include <vector>

#include "slowmo/comm/detail/local_comm.hpp"

namespace slowmo::threads {

/// What a failing worker does to the run (Options::worker_failure).
using WorkerFailure = slowmo::detail::WorkerFailure;
/// A worker that failed without ending the run (WorkerFailure::leave).
using Failure = slowmo::detail::Failure;

struct Options {
  int workers = 1;
  /// What a worker whose function throws does: ends the run (abort_run: run() throws
  /// worker_error) or only departs (leave: the others go on; run() returns, with the
  /// failures in Report::failures).
  WorkerFailure worker_failure = WorkerFailure::abort_run;
};

/// Per-worker wall-clock time at the end of the run, bytes and messages sent, bytes received
/// from the shared model; the failed workers (WorkerFailure::leave, by rank); the server.
struct Report {
  std::vector<detail::WorkerStats> workers;
  std::vector<detail::Failure> failures{};
  detail::ServerStats server{};
};

/// The communicator each thread receives; now() is wall-clock seconds since the run began.
class Comm : public detail::LocalComm {
 public:
  using LocalComm::LocalComm;
  /// Collective over this communicator's workers (MPI_Comm_split): those that pass the same
  /// color (>= 0) get a communicator over just them, ranked by (key, rank here).
  Comm split(int color, int key) { return Comm(split_seat(color, key)); }

 private:
  explicit Comm(LocalComm c) : LocalComm(c) {}
};

/// Runs fn(comm) on `workers` threads; returns when all have returned. A worker that throws
/// ends the run: the others are released and run() throws slowmo::worker_error naming it
/// (with WorkerFailure::leave it only departs and run() reports it in Report::failures).
/// If the system refuses a thread, no worker runs and run() throws slowmo::comm_error.
template <class F>
Report run(const Options& options, F&& fn) {
  detail::require_option(options.workers >= 1, "threads::run", "workers", options.workers, "must be >= 1");
  detail::Engine engine(
      {.workers = options.workers, .mode = detail::Mode::parallel, .on_failure = options.worker_failure});
  detail::RunResult result = detail::run_workers<Comm>(engine, fn, "threads::run");
  return {std::move(result.workers), std::move(result.failures), result.server};
}

}  // namespace slowmo::threads
