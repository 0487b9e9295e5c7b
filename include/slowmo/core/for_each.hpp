// slowmo/core/for_each.hpp — the CPU driver that applies a per-element update rule to
// aligned element ranges of several buffers in a single pass over memory.
//
// A rule is a callable object whose call operator is a template over the value type V and
// takes one argument per buffer: `V&` for a buffer it updates, `const V&` for one it only
// reads. The driver instantiates it with detail::Pack<T> (SIMD) for the body and with T
// for the tail; the CUDA kernel (slowmo/cuda/for_each.hpp) instantiates the same rule with a
// scalar whose operations are the same IEEE-754 roundings (no contraction into FMA).
#pragma once

#include <Eigen/Core>
#include <tuple>
#include <type_traits>
#include <utility>

#include "slowmo/core/config.hpp"
#include "slowmo/core/math.hpp"
#include "slowmo/core/simd.hpp"

namespace slowmo::detail {

template <class T, class P>
SLOWMO_ALWAYS_INLINE void store_if_mutable(T* dst, const P& v) {
  v.store(dst);
}
template <class T, class P>
SLOWMO_ALWAYS_INLINE void store_if_mutable(const T*, const P&) {}

template <class Rule, std::size_t... I, class... Q>
SLOWMO_ALWAYS_INLINE void for_each_element_impl(Eigen::Index n, const Rule& rule,
                                                std::index_sequence<I...>, Q*... ptrs) {
  using T = std::remove_const_t<std::tuple_element_t<0, std::tuple<Q...>>>;
  static_assert((std::is_same_v<std::remove_const_t<Q>, T> && ...),
                "slowmo: all buffers of one update must have the same scalar type");
  using P = Pack<T>;
  const Eigen::Index body = n - n % P::size;
  for (Eigen::Index i = 0; i < body; i += P::size) {
    P v[sizeof...(Q)] = {P::load(ptrs + i)...};
    rule(v[I]...);
    (store_if_mutable(ptrs + i, v[I]), ...);
  }
  for (Eigen::Index i = body; i < n; ++i) rule(ptrs[i]...);
}

/// Applies `rule` element-wise to n elements of each buffer, in one pass.
template <class Rule, class... Q>
inline void for_each_element(Eigen::Index n, const Rule& rule, Q*... ptrs) {
  for_each_element_impl(n, rule, std::index_sequence_for<Q...>{}, ptrs...);
}

}  // namespace slowmo::detail

// ---- reductions --------------------------------------------------------------------------
//
// A reduction op reduces one buffer to one value: op.identity(), op.map(x) of each element
// and op.combine(a, b) of two partial results, the last two templates over the value type
// (T, detail::Pack<T>, the GPU's scalar), like the update rules. Memory spaces apply it with
// `Space::reduce(n, op, p)` (core/space.hpp). The order in which the partial results are
// combined is fixed by n alone (never by threads or timing), so a reduction gives the same
// bits on every run; each space documents its order.
namespace slowmo::reductions {

/// sum_i x_i.
template <class T>
struct Sum {
  static SLOWMO_HOST_DEVICE constexpr T identity() { return T(0); }
  template <class V>
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE V map(const V& x) const { return x; }
  template <class V>
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE V combine(const V& a, const V& b) const { return a + b; }
};

/// sum_i x_i * 0: exactly 0 while every x_i is finite, NaN as soon as one is NaN or infinite
/// (x * 0 is 0 or -0 for finite x, NaN for the others). The NaN/Inf scan of NonFinite.
template <class T>
struct NonFiniteProbe {
  static SLOWMO_HOST_DEVICE constexpr T identity() { return T(0); }
  template <class V>
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE V map(const V& x) const { return x * V(T(0)); }
  template <class V>
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE V combine(const V& a, const V& b) const { return a + b; }
};

/// sum_i (x_i / scale)^2 (scale 1: the squared 2-norm; overflows to +inf only when the sum
/// exceeds the largest T; NaN or +inf for a non-finite x_i).
template <class T>
struct SumOfSquares {
  T inv_scale = T(1);  ///< 1 / scale, exact when scale is a power of two
  static SLOWMO_HOST_DEVICE constexpr T identity() { return T(0); }
  template <class V>
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE V map(const V& x) const {
    const V y = x * V(inv_scale);
    return y * y;
  }
  template <class V>
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE V combine(const V& a, const V& b) const { return a + b; }
};

/// max_i |x_i| (the inf-norm), NaN when some x_i is NaN or infinite: combine adds b - b,
/// which is 0 for a finite b and NaN otherwise, and max(a, b) = a < b ? b : a keeps a NaN a.
template <class T>
struct MaxAbs {
  static SLOWMO_HOST_DEVICE constexpr T identity() { return T(0); }
  template <class V>
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE V map(const V& x) const {
    using math::max;
    return max(x, -x);
  }
  template <class V>
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE V combine(const V& a, const V& b) const {
    using math::max;
    return max(a, b) + (b - b);
  }
};

}  // namespace slowmo::reductions

namespace slowmo::detail {

/// Lanes of the host reduction: 128 bytes of T, so that the order does not depend on the SIMD
/// width (every width divides it) and each SIMD width has 2 (AVX-512) to 8 (SSE) independent
/// chains of partial results in flight, enough to be bound by memory, not by add latency.
template <class T>
inline constexpr Eigen::Index reduction_lanes = Eigen::Index(128 / sizeof(T));

/// The host reduction, in this order, for L = reduction_lanes<T> (32 for float, 16 for double):
///   1. lane l in [0, L) folds the elements l, l + L, l + 2L, ... of the body (the first
///      n - n % L elements) in increasing order: a_l = combine(a_l, map(x_i)), a_l = identity
///      at first;
///   2. the lanes meet in a fixed tree: for w = L/2, L/4, ..., 1: a_l = combine(a_l, a_{l+w})
///      for l < w;
///   3. the tail folds into a_0 in increasing order: r = combine(r, map(x_i)).
/// The same order for every SIMD instruction set (and without SIMD), so a build for SSE2,
/// AVX2 or AVX-512 gives the same bits; the body runs on L / Pack<T>::size packs at a time.
template <class Op, class T>
T reduce_elements(Eigen::Index n, const Op& op, const T* p) {
  using P = Pack<T>;
  constexpr Eigen::Index L = reduction_lanes<T>;
  constexpr int K = int(L / P::size);
  static_assert(L % P::size == 0, "slowmo: the SIMD width must divide the reduction's lanes");
  const Eigen::Index body = n - n % L;
  T lanes[L];
  [&]<std::size_t... k>(std::index_sequence<k...>) {
    P acc[K] = {((void)k, P(Op::identity()))...};
    for (Eigen::Index i = 0; i < body; i += L) ((acc[k] = op.combine(acc[k], op.map(P::load(p + i + k * P::size)))), ...);
    (acc[k].store(lanes + k * P::size), ...);
  }(std::make_index_sequence<K>{});
  for (Eigen::Index w = L / 2; w >= 1; w /= 2)
    for (Eigen::Index l = 0; l < w; ++l) lanes[l] = op.combine(lanes[l], lanes[l + w]);
  T r = lanes[0];
  for (Eigen::Index i = body; i < n; ++i) r = op.combine(r, op.map(p[i]));
  return r;
}

}  // namespace slowmo::detail
