// slowmo/comm/single_worker.hpp — the trivial communicator of a one-worker program:
// collectives are identities, so any distributed algorithm runs on one worker without a
// backend (e.g. SlowMo with one worker and beta = 0 is Lookahead).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/error.hpp"

namespace slowmo {

class SingleWorker {
 public:
  /// Its Communicator operations never read or write the buffers, so they may live in any
  /// memory space (a device optimizer can use lookahead_as_slowmo too). The gathers copy
  /// send into recv on the host, except in place (send is recv), which touches nothing.
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
  /// recv (of send.size() values) = send. T is deduced from recv; send converts.
  template <detail::GatherElement T>
  void all_gather(std::span<const std::type_identity_t<T>> send, std::span<T> recv) {
    check<T>(false, send.size(), recv.size(), 1);
    copy(send, recv);
  }
  /// counts = {send.size()}, recv starts with send; returns send.size().
  template <detail::GatherElement T>
  std::size_t all_gather_v(std::span<const std::type_identity_t<T>> send, std::span<T> recv,
                           std::span<std::size_t> counts) {
    check<T>(true, send.size(), recv.size(), counts.size());
    copy(send, recv);
    counts[0] = send.size();
    return send.size();
  }
  template <class T>
  double exchange(std::span<const T>, double, int dest, std::span<T>, int) {
    throw comm_error(detail::concat("slowmo::SingleWorker: exchange with worker ", dest,
                                    ": a single worker has no peers"));
  }
  double now() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  /// NonBlockingCommunicator: the all-reduce of one worker is done when it starts.
  struct Done {
    void wait() {}
    bool ready() { return true; }
  };
  template <class T>
  Request<Done> start_all_reduce(std::span<T>, ReduceOp) {
    return Request<Done>(Done{});
  }
  /// SplitCommunicator: the group of one worker is the worker itself (colors must be >= 0).
  SingleWorker split(int color, int /*key*/) const {
    if (color < 0)
      throw comm_error(detail::concat("slowmo::SingleWorker: split: a color must be >= 0, but worker 0 color ", color,
                                      " (there is no 'undefined' color)"));
    return {};
  }

 private:
  // The same judgement and messages as the other backends, over one worker.
  template <class T>
  static void check(bool variable, std::size_t send, std::size_t recv, std::size_t counts) {
    const std::string e = detail::gather_size_error("slowmo::SingleWorker", "worker", variable, 1,
                                                    detail::element_name(detail::element_code<T>()),
                                                    [&](int) { return detail::GatherSizes{send, recv, counts}; });
    if (!e.empty()) throw comm_error(e);
  }
  template <class T>
  static void copy(std::span<const T> send, std::span<T> recv) {
    // check() made recv large enough; the min keeps that visible to the compiler's bounds
    // analysis too (GCC's -Warray-bounds, with constant sizes).
    if (!send.empty() && send.data() != recv.data())
      std::copy_n(send.begin(), std::min(send.size(), recv.size()), recv.begin());
  }
};

}  // namespace slowmo
