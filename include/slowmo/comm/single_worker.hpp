// slowmo/comm/single_worker.hpp — the trivial communicator of a one-worker program:
// collectives are identities, so any distributed algorithm runs on one worker without a
// backend (e.g. SlowMo with one worker and beta = 0 is Lookahead).
#pragma once

#include <chrono>
#include <span>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/error.hpp"

namespace slowmo {

class SingleWorker {
 public:
  /// Its collectives never read or write the buffers, so they may live in any memory
  /// space (a device optimizer can use lookahead_as_slowmo too).
  static constexpr bool accepts_device_memory = true;

  int rank() const { return 0; }
  int size() const { return 1; }
  template <class T>
  void all_reduce(std::span<T>, ReduceOp) {}  // the sum and the mean of one value are itself
  template <class T>
  void broadcast(std::span<T>, int root) {
    if (root != 0) throw comm_error(detail::concat("slowmo::SingleWorker: broadcast root ", root, " is not 0"));
  }
  void barrier() {}
  template <class T>
  double exchange(std::span<const T>, double, int dest, std::span<T>, int) {
    throw comm_error(detail::concat("slowmo::SingleWorker: exchange with worker ", dest,
                                    ": a single worker has no peers"));
  }
  double now() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
};

}  // namespace slowmo
