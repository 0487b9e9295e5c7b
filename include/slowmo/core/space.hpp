// slowmo/core/space.hpp — memory spaces: where an optimizer's parameters and state live
// and what applies a per-element rule to them.
//
// Every optimizer and combinator is written once against a Space policy (an extra,
// defaulted template parameter of the single-worker optimizers; the combinators take their
// base's). `Host` below is the default: Eigen vectors and the SIMD CPU driver. The CUDA
// component adds `slowmo::cuda::Device` (device vectors, a grid-stride kernel) in
// slowmo/cuda/device.hpp. The per-element rules (optim/rules.hpp, distributed/rules.hpp) are the
// same for every space.
//
// What a space provides, and all that the algorithms use of it:
//   vector<T>          owning buffer: default-constructible, copyable, size(), data(),
//                      resize(n) (contents unspecified), setZero(), setZero(n),
//                      assignment from const_ref<T> (resizing), and as_span(v) found by
//                      ADL (std::span over its memory, const or not);
//   ref<T>             mutable view step() takes the parameters as: size(), data(),
//                      as_span; a vector<T>& converts to it;
//   const_ref<T>       read-only view (the gradient): size(), data(); vector<T> and
//                      ref<T> convert to it;
//   for_each(n, rule, ptrs...)    applies the rule to n elements of each buffer in one pass;
//   reduce(n, op, p) -> T         reduces n elements of one buffer with a reduction op
//                                 (core/for_each.hpp: identity, map, combine) to a host
//                                 value, in an order fixed by n alone (deterministic);
//                                 what the NaN/Inf scan of NonFinite::raise / skip and the
//                                 norm of gradient clipping use. A space without it is
//                                 refused at compile time by whatever needs it (HasReduction);
//   communicates_with<Comm>       whether Comm may be handed spans over this space's memory.
#pragma once

#include <concepts>
#include <span>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/for_each.hpp"
#include "slowmo/core/vector.hpp"

namespace slowmo {

/// The default space: parameters and state in host memory as Eigen vectors, rules applied
/// by the SIMD CPU loop (detail::for_each_element).
struct Host {
  template <class T>
  using vector = Vector<T>;
  template <class T>
  using ref = VectorRef<T>;
  template <class T>
  using const_ref = ConstVectorRef<T>;

  /// Every communicator works on host memory.
  template <class Comm>
  static constexpr bool communicates_with = true;

  template <class Rule, class... Q>
  static SLOWMO_ALWAYS_INLINE void for_each(Eigen::Index n, const Rule& rule, Q*... ptrs) {
    detail::for_each_element(n, rule, ptrs...);
  }

  /// SIMD, several independent chains; the order is detail::reduce_elements's.
  template <class Op, class T>
  static T reduce(Eigen::Index n, const Op& op, const T* p) {
    return detail::reduce_elements(n, op, p);
  }

  static constexpr const char* name = "host";
};

/// The interface every space offers (see the top of this file), checked for float.
template <class S>
concept MemorySpace = requires(typename S::template vector<float>& v, const typename S::template vector<float>& cv,
                               typename S::template ref<float> r, typename S::template const_ref<float> cr,
                               Eigen::Index n) {
  typename S::template vector<double>;
  { v.size() } -> std::convertible_to<Eigen::Index>;
  { v.data() } -> std::same_as<float*>;
  { cv.data() } -> std::same_as<const float*>;
  v.resize(n);
  v.setZero();
  v.setZero(n);
  v = cr;
  { r.size() } -> std::convertible_to<Eigen::Index>;
  { r.data() } -> std::same_as<float*>;
  { cr.data() } -> std::same_as<const float*>;
  { as_span(v) } -> std::same_as<std::span<float>>;
  { as_span(cv) } -> std::same_as<std::span<const float>>;
  { as_span(r) } -> std::same_as<std::span<float>>;
  static_cast<typename S::template ref<float>>(v);
  static_cast<typename S::template const_ref<float>>(cv);
  static_cast<typename S::template const_ref<float>>(r);
  { S::template communicates_with<int> } -> std::convertible_to<bool>;
  { S::name } -> std::convertible_to<const char*>;
};

static_assert(MemorySpace<Host>);

/// Whether space S can reduce a buffer of float and of double (`S::reduce(n, op, p)`):
/// what the NaN/Inf scan and the gradient norm need. Checked where it is needed (the
/// element-wise optimizers, the clipping modifiers), by a static_assert that names it.
template <class S>
concept HasReduction = requires(Eigen::Index n, const float* f, const double* d) {
  { S::reduce(n, reductions::NonFiniteProbe<float>{}, f) } -> std::same_as<float>;
  { S::reduce(n, reductions::SumOfSquares<double>{}, d) } -> std::same_as<double>;
};

static_assert(HasReduction<Host>);

namespace detail {
template <class O>
struct space_of {
  using type = Host;
};
template <class O>
  requires requires { typename O::space_type; }
struct space_of<O> {
  using type = typename O::space_type;
};
}  // namespace detail

/// The memory space an optimizer works in: its `space_type`, or Host for an optimizer that
/// declares none (user-written optimizers on Eigen vectors need not know about spaces).
template <class O>
using space_of_t = typename detail::space_of<O>::type;

}  // namespace slowmo
