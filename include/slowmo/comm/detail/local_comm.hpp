// slowmo/comm/detail/local_comm.hpp — the communicator handed to each worker of an
// in-process backend (simulator or threads), and the loop that runs the workers.
#pragma once

#include <condition_variable>
#include <exception>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "slowmo/comm/detail/engine.hpp"

namespace slowmo::detail {

class LocalComm {
 public:
  LocalComm(Engine& engine, int rank) : engine_(&engine), rank_(rank) {}

  int rank() const { return rank_; }
  int size() const { return engine_->size(); }

  void all_reduce(std::span<float> buf, ReduceOp op) { engine_->all_reduce(rank_, buf, op); }
  void all_reduce(std::span<double> buf, ReduceOp op) { engine_->all_reduce(rank_, buf, op); }
  void broadcast(std::span<float> buf, int root) { engine_->broadcast(rank_, buf, root); }
  void broadcast(std::span<double> buf, int root) { engine_->broadcast(rank_, buf, root); }
  void barrier() { engine_->barrier(rank_); }
  double exchange(std::span<const float> out, double weight, int dest, std::span<float> in, int source) {
    return engine_->exchange(rank_, out, weight, dest, in, source);
  }
  double exchange(std::span<const double> out, double weight, int dest, std::span<double> in, int source) {
    return engine_->exchange(rank_, out, weight, dest, in, source);
  }
  /// Seconds since the run started: virtual on the simulator, wall-clock on threads.
  double now() const { return engine_->now(rank_); }
  /// Payload bytes this worker has put on the (modelled) network so far.
  std::uint64_t bytes_sent() const { return engine_->stats(rank_).bytes_sent; }

 protected:
  Engine* engine_;
  int rank_;
};

/// Holds every worker thread at its start until all m threads exist. The system may refuse
/// a thread (the per-user process limit, ulimit -u, or memory for its stack); a worker that
/// had already started would then wait for ever for the missing ones in its first
/// collective. Behind the gate no worker's function runs unless every worker's can.
class StartGate {
 public:
  /// Called by each worker thread: true once all threads started, false if the run was
  /// called off (the worker then returns without running its function).
  bool pass() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return state_ != State::closed; });
    return state_ == State::open;
  }
  void open() { set(State::open); }
  void call_off() { set(State::called_off); }

 private:
  enum class State { closed, open, called_off };
  void set(State s) {
    {
      std::lock_guard lk(mu_);
      state_ = s;
    }
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  State state_ = State::closed;
};

/// Rethrows the exception in flight (std::thread's std::system_error, or std::bad_alloc) as
/// a comm_error that says how many workers were asked for and what the system refused.
/// comm_error is the library's type for a backend that cannot do its work (as it is for a
/// failed NCCL or MPI call), so a user's existing handler catches it; the system's own
/// exception stays nested (std::rethrow_if_nested reaches its std::errc). Call it only
/// from a catch block.
[[noreturn]] inline void throw_thread_refused(std::string_view owner, int asked, int worker) {
  std::string why;
  try {
    throw;
  } catch (const std::system_error& e) {
    why = e.code().message();
  } catch (const std::exception& e) {
    why = e.what();
  } catch (...) {
    why = "unknown exception";
  }
  std::throw_with_nested(comm_error(concat(
      "slowmo::", owner, ": asked for ", asked, " workers; the system refused to start thread ", worker, " (", why,
      "): raise the per-user process limit (ulimit -u) or the address-space limit (ulimit -v), or use fewer "
      "workers (the ", worker, " threads already started were released; no worker ran)")));
}

/// Runs fn(comm) on every worker, each in its own thread, and waits for all. If workers
/// failed, throws worker_error for the lowest failing rank, with the original nested. If
/// the system refuses a thread, no worker runs and it throws comm_error (see above).
/// `owner` ("sim::run") names the caller in that message.
template <class Comm, class F>
std::vector<WorkerStats> run_workers(Engine& engine, F& fn, std::string_view owner) {
  const int m = engine.size();
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(m));
  StartGate gate;
  for (int r = 0; r < m; ++r) {
    try {
      threads.emplace_back([&engine, &fn, &gate, r] {
        if (!gate.pass()) return;
        std::exception_ptr error;
        engine.enter(r);
        try {
          Comm comm(engine, r);
          fn(comm);
        } catch (...) {
          error = std::current_exception();
        }
        engine.leave(r, error);
      });
    } catch (...) {
      // Destroying a joinable std::thread would call std::terminate: release the threads
      // already started (held at the gate, none has run), join them, then report.
      gate.call_off();
      for (auto& t : threads) t.join();
      throw_thread_refused(owner, m, r);
    }
  }
  gate.open();
  for (auto& t : threads) t.join();
  for (int r = 0; r < m; ++r) {
    if (std::exception_ptr e = engine.failure(r)) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::throw_with_nested(worker_error(r, ex.what()));
      } catch (...) {
        std::throw_with_nested(worker_error(r, "unknown exception"));
      }
    }
  }
  std::vector<WorkerStats> stats;
  for (int r = 0; r < m; ++r) stats.push_back(engine.stats(r));
  return stats;
}

}  // namespace slowmo::detail
