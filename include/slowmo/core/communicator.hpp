// slowmo/core/communicator.hpp — the Communicator concept: what every distributed
// algorithm may ask of the workers' transport, and nothing more. Algorithms are written
// against this concept only; backends (comm/simulator.hpp, comm/threads.hpp, comm/mpi.hpp,
// and the NCCL one) model it.
#pragma once

#include <concepts>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>

#include "slowmo/core/vector.hpp"

namespace slowmo {

/// What an all-reduce computes: the element-wise sum over workers, or the mean (the sum
/// divided by the number of workers: the exact average).
enum class ReduceOp { sum, mean };

namespace detail {

template <class C, class T>
concept CommunicatesIn = requires(C& c, std::span<T> buf, std::span<const T> out, int peer, double weight) {
  c.all_reduce(buf, ReduceOp::sum);    // in place, on every worker
  c.broadcast(buf, peer);              // from root `peer` to everyone, in place
  { c.exchange(out, weight, peer, buf, peer) } -> std::convertible_to<double>;
  // send `out` and `weight` to one peer and receive a buffer into `buf` (returning the
  // weight that came with it) from another, in one step, without deadlock for any pattern
  // where every worker sends to one peer and receives from one peer.
};

template <class C>
concept HasRankSize = requires(const C& c) {
  { c.rank() } -> std::convertible_to<int>;
  { c.size() } -> std::convertible_to<int>;
};

template <class C>
concept HasBarrierClock = requires(C& c) {
  c.barrier();
  { c.now() } -> std::convertible_to<double>;  // seconds: wall-clock, or virtual on the simulator
};

}  // namespace detail

/// A communicator between the workers of one SPMD program: rank/size, in-place all-reduce
/// (sum and mean), broadcast, barrier, point-to-point exchange with a scalar weight (for
/// push-sum gossip), and the worker's current time. All operations work on contiguous
/// float and double buffers.
template <class C>
concept Communicator = detail::HasRankSize<C> && detail::HasBarrierClock<C> && detail::CommunicatesIn<C, float> &&
                       detail::CommunicatesIn<C, double>;

/// `static_assert(check_communicator<C>())` names the first missing operation.
template <class C>
consteval bool check_communicator() {
  static_assert(detail::HasRankSize<C>, "slowmo: not a Communicator: it needs `rank() const` and `size() const`");
  static_assert(detail::HasBarrierClock<C>,
                "slowmo: not a Communicator: it needs `barrier()` and `now()` (seconds, wall-clock or virtual)");
  static_assert(detail::CommunicatesIn<C, float> && detail::CommunicatesIn<C, double>,
                "slowmo: not a Communicator: it needs, for float and double spans, `all_reduce(buf, ReduceOp)`, "
                "`broadcast(buf, root)` and `exchange(send, weight, dest, recv, source) -> double`");
  return Communicator<C>;
}

namespace detail {
/// A stride known only at run time (Map or Ref with InnerStride<>) must be 1.
template <class Derived>
void require_contiguous(const Eigen::DenseBase<Derived>& v) {
  static_assert(Derived::InnerStrideAtCompileTime == 1 || Derived::InnerStrideAtCompileTime == Eigen::Dynamic,
                "slowmo::as_span needs a contiguous vector");
  if constexpr (Derived::InnerStrideAtCompileTime == Eigen::Dynamic)
    if (v.size() > 1 && v.innerStride() != 1)
      throw std::invalid_argument("slowmo::as_span: the vector's inner stride is " + std::to_string(v.innerStride()) +
                                  "; a span needs contiguous elements (stride 1): copy it into a Vector first");
}
}  // namespace detail

/// A span over a contiguous Eigen vector (VectorX, Map, Ref, segment); a strided view throws
/// std::invalid_argument.
template <class Derived>
auto as_span(Eigen::DenseBase<Derived>& v) {
  detail::require_contiguous(v);
  return std::span<typename Derived::Scalar>(v.derived().data(), static_cast<std::size_t>(v.size()));
}
template <class Derived>
auto as_span(const Eigen::DenseBase<Derived>& v) {
  detail::require_contiguous(v);
  return std::span<const typename Derived::Scalar>(v.derived().data(), static_cast<std::size_t>(v.size()));
}

/// Charges `nominal_seconds` of computation to the worker's clock where the backend keeps
/// a virtual one (the simulator scales it by the worker's speed factor); elsewhere time
/// passes for real and this does nothing. Lets one training loop model compute cost on
/// the simulator and run unchanged on real backends.
template <class C>
void charge_compute(C& comm, double nominal_seconds) {
  if constexpr (requires { comm.compute(nominal_seconds); }) comm.compute(nominal_seconds);
}

}  // namespace slowmo
