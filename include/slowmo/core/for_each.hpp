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
