// slowmo/comm/threads.hpp — m workers as std::threads in one process, sharing memory.
//
// Real parallelism on a multi-core machine; reductions add the workers' buffers in rank
// order exactly as the simulator does, so a program gives bit-identical results on both.
// A waiting worker sleeps on a condition variable; nothing spins.
#pragma once

#include "slowmo/comm/detail/local_comm.hpp"

namespace slowmo::threads {

struct Options {
  int workers = 1;
};

/// Per-worker wall-clock time at the end of the run, and bytes and messages sent.
struct Report {
  std::vector<detail::WorkerStats> workers;
};

/// The communicator each thread receives; now() is wall-clock seconds since the run began.
class Comm : public detail::LocalComm {
 public:
  using LocalComm::LocalComm;
};

/// Runs fn(comm) on `workers` threads; returns when all have returned. A worker that throws
/// ends the run: the others are released and run() throws slowmo::worker_error naming it.
/// If the system refuses a thread, no worker runs and run() throws slowmo::comm_error.
template <class F>
Report run(const Options& options, F&& fn) {
  detail::require_option(options.workers >= 1, "threads::run", "workers", options.workers, "must be >= 1");
  detail::Engine engine({.workers = options.workers, .mode = detail::Mode::parallel});
  return {detail::run_workers<Comm>(engine, fn, "threads::run")};
}

}  // namespace slowmo::threads
