// slowmo/comm/detail/local_comm.hpp — the communicator handed to each worker of an
// in-process backend (simulator or threads), and the loop that runs the workers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "slowmo/comm/detail/engine.hpp"
#include "slowmo/core/shared_model.hpp"
#include "slowmo/core/detail/thread_group.hpp"

namespace slowmo::detail {

/// The engine's side of a Request: the worker's one non-blocking collective.
struct PendingCollective {
  Engine* engine = nullptr;
  Seat at{};
  void wait() { engine->wait(at); }
  bool ready() { return engine->test(at); }
};

/// A worker's communicator over every worker of the run (what run() hands out) or over a
/// group that split() made; the derived backends add what only they have.
class LocalComm {
 public:
  LocalComm(Engine& engine, int worker) : engine_(&engine), at_{worker, 0, worker}, size_(engine.size()) {}

  int rank() const { return at_.rank; }
  int size() const { return size_; }

  void all_reduce(std::span<float> buf, ReduceOp op) { engine_->all_reduce(at_, buf, op); }
  void all_reduce(std::span<double> buf, ReduceOp op) { engine_->all_reduce(at_, buf, op); }
  void broadcast(std::span<float> buf, int root) { engine_->broadcast(at_, buf, root); }
  void broadcast(std::span<double> buf, int root) { engine_->broadcast(at_, buf, root); }
  void barrier() { engine_->barrier(at_); }
  double exchange(std::span<const float> out, double weight, int dest, std::span<float> in, int source) {
    return engine_->exchange(at_, out, weight, dest, in, source);
  }
  double exchange(std::span<const double> out, double weight, int dest, std::span<double> in, int source) {
    return engine_->exchange(at_, out, weight, dest, in, source);
  }
  // NeighborCommunicator (core/communicator.hpp).
  double neighbor_sum(std::span<const float> out, double weight, std::span<const int> dests, std::span<float> in,
                      std::span<const int> sources) {
    return engine_->neighbor_sum(at_, out, weight, dests, in, sources);
  }
  double neighbor_sum(std::span<const double> out, double weight, std::span<const int> dests, std::span<double> in,
                      std::span<const int> sources) {
    return engine_->neighbor_sum(at_, out, weight, dests, in, sources);
  }
  // GatherCommunicator (core/communicator.hpp): one overload per element type, so that
  // anything convertible to a span (a std::vector, say) may be passed.
  void all_gather(std::span<const float> send, std::span<float> recv) { engine_->all_gather(at_, send, recv); }
  void all_gather(std::span<const double> send, std::span<double> recv) { engine_->all_gather(at_, send, recv); }
  void all_gather(std::span<const std::int32_t> send, std::span<std::int32_t> recv) {
    engine_->all_gather(at_, send, recv);
  }
  void all_gather(std::span<const std::uint8_t> send, std::span<std::uint8_t> recv) {
    engine_->all_gather(at_, send, recv);
  }
  std::size_t all_gather_v(std::span<const float> send, std::span<float> recv, std::span<std::size_t> counts) {
    return engine_->all_gather_v(at_, send, recv, counts);
  }
  std::size_t all_gather_v(std::span<const double> send, std::span<double> recv, std::span<std::size_t> counts) {
    return engine_->all_gather_v(at_, send, recv, counts);
  }
  std::size_t all_gather_v(std::span<const std::int32_t> send, std::span<std::int32_t> recv,
                           std::span<std::size_t> counts) {
    return engine_->all_gather_v(at_, send, recv, counts);
  }
  std::size_t all_gather_v(std::span<const std::uint8_t> send, std::span<std::uint8_t> recv,
                           std::span<std::size_t> counts) {
    return engine_->all_gather_v(at_, send, recv, counts);
  }
  // NonBlockingCommunicator (core/communicator.hpp).
  Request<PendingCollective> start_all_reduce(std::span<float> buf, ReduceOp op) {
    engine_->start_all_reduce(at_, buf, op);
    return Request<PendingCollective>(PendingCollective{engine_, at_});
  }
  Request<PendingCollective> start_all_reduce(std::span<double> buf, ReduceOp op) {
    engine_->start_all_reduce(at_, buf, op);
    return Request<PendingCollective>(PendingCollective{engine_, at_});
  }
  // SharedModelCommunicator (core/shared_model.hpp): on the communicator run() handed out
  // only (a sub-communicator's call throws usage_error).
  void host_model(std::unique_ptr<ModelServer<float>> server) { engine_->host_model(at_, server); }
  void host_model(std::unique_ptr<ModelServer<double>> server) { engine_->host_model(at_, server); }
  Pulled pull(std::span<float> x) { return engine_->pull(at_, x); }
  Pulled pull(std::span<double> x) { return engine_->pull(at_, x); }
  Pushed push(std::span<const float> d) { return engine_->push(at_, d); }
  Pushed push(std::span<const double> d) { return engine_->push(at_, d); }
  /// The ranks (in this communicator) that have left the run so far (returned or failed), in
  /// the order they left: on threads in wall-clock order; on the simulator those that left
  /// up to this worker's virtual clock, by (time, worker).
  std::vector<int> departed() const { return engine_->departed(at_); }

  /// Seconds since the run started: virtual on the simulator, wall-clock on threads.
  double now() const { return engine_->now(at_.worker); }
  /// Payload bytes this worker has put on the (modelled) network so far (on every
  /// communicator it holds).
  std::uint64_t bytes_sent() const { return engine_->stats(at_.worker).bytes_sent; }
  /// Payload bytes this worker has received from the shared model's server (its pulls).
  std::uint64_t bytes_received() const { return engine_->stats(at_.worker).bytes_received; }
  /// This worker's index in the run (its rank on the communicator run() handed out).
  int worker() const { return at_.worker; }

 protected:
  /// Collective over this communicator (SplitCommunicator, core/communicator.hpp).
  LocalComm split_seat(int color, int key) {
    const SplitResult s = engine_->split(at_, color, key);
    LocalComm out(*this);
    out.at_ = {at_.worker, s.group, s.rank};
    out.size_ = s.size;
    return out;
  }

  Engine* engine_;
  Seat at_;
  int size_;
};

/// What run_workers leaves: per worker, the failures (WorkerFailure::leave) and the server.
struct RunResult {
  std::vector<WorkerStats> workers;
  std::vector<Failure> failures;
  ServerStats server;
};

/// Runs fn(comm) on every worker, each in its own thread, and waits for all. If workers
/// failed and failures abort the run, throws worker_error for the lowest failing rank, with
/// the original nested; where they leave it, returns them in RunResult::failures. If the
/// system refuses a thread, no worker runs and it throws comm_error (run_thread_group).
/// `owner` ("sim::run") names the caller in that message.
template <class Comm, class F>
RunResult run_workers(Engine& engine, F& fn, std::string_view owner) {
  const int m = engine.size();
  run_thread_group(owner, m, [&engine, &fn](int r) {
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
  for (int r = 0; r < m && engine.on_failure() == WorkerFailure::abort_run; ++r) {
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
  RunResult out;
  for (int r = 0; r < m; ++r) out.workers.push_back(engine.stats(r));
  out.failures = engine.failures();
  out.server = engine.server_stats();
  return out;
}

}  // namespace slowmo::detail
