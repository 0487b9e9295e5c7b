// slowmo/core/detail/thread_group.hpp — m threads that either all run or none does: what
// every in-process launcher (sim::run, threads::run, cuda::run_local) shares.
#pragma once

#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "slowmo/core/error.hpp"

namespace slowmo::detail {

/// Holds every thread at its start until all m threads exist. The system may refuse a
/// thread (the per-user process limit, ulimit -u, or memory for its stack); a worker that had
/// already started would then wait for ever for the missing ones in its first collective (or
/// in ncclCommInitRank). Behind the gate no worker's body runs unless every worker's can.
class StartGate {
 public:
  /// Called by each thread: true once all threads started, false if the run was called off
  /// (the thread then returns without running its body).
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

/// Runs body(r) for r = 0..m-1, each on its own thread, and joins them all: either every
/// thread starts and every body runs, or (the system refused a thread) none runs, the
/// started threads are released and joined, and this throws comm_error naming `owner`.
/// body must not throw (each launcher records its workers' failures itself).
template <class Body>
void run_thread_group(std::string_view owner, int m, Body&& body) {
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(m));
  StartGate gate;
  for (int r = 0; r < m; ++r) {
    try {
      threads.emplace_back([&gate, &body, r] {
        if (gate.pass()) body(r);
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
}

}  // namespace slowmo::detail
