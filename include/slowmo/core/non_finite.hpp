// slowmo/core/non_finite.hpp — what an optimizer does with a NaN or an infinity in its
// gradient: throw (the default), skip the step, or let it propagate.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <utility>

#include "slowmo/core/error.hpp"
#include "slowmo/core/space.hpp"

namespace slowmo {

enum class NonFinite {
  raise,      ///< throw non_finite_error naming the step and the first bad index; nothing is changed
  skip,       ///< leave parameters and state untouched, but count the step, so that every
              ///< schedule (averaging periods, outer steps) stays aligned across workers
  propagate,  ///< apply the update as it is (no check, no cost)
};

inline constexpr std::string_view to_string(NonFinite p) {
  switch (p) {
    case NonFinite::raise: return "raise";
    case NonFinite::skip: return "skip";
    case NonFinite::propagate: return "propagate";
  }
  return "?";
}

/// A gradient held a NaN or an infinity (with NonFinite::raise).
class non_finite_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

/// Index of the first non-finite value of p[0, n), or -1. One vectorised read of p: the
/// host reduction (detail::reduce_elements, several independent chains, so bound by memory)
/// of NonFiniteProbe, which stays exactly 0 while every value is finite; only when it is
/// not, a second pass finds the index.
template <class T>
Eigen::Index first_non_finite(const T* p, Eigen::Index n) {
  if (reduce_elements(n, reductions::NonFiniteProbe<T>{}, p) == T(0)) return -1;
  for (Eigen::Index i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return i;
  return -1;
}

/// The same in any memory space with a reduction: one reduce, then (only when something is
/// not finite) a bisection by reductions over halves, about n more elements read in
/// log2(n) reductions. Returns the index and the value there.
template <class Space, class T>
std::pair<Eigen::Index, T> first_non_finite_in(const T* p, Eigen::Index n) {
  if constexpr (std::is_same_v<Space, Host>) {
    const Eigen::Index i = first_non_finite(p, n);
    return {i, i < 0 ? T(0) : p[i]};
  } else {
    const reductions::NonFiniteProbe<T> probe;
    if (Space::reduce(n, probe, p) == T(0)) return {-1, T(0)};
    Eigen::Index lo = 0, len = n;  // [lo, lo + len) holds the first non-finite value
    while (len > 1) {
      const Eigen::Index half = len / 2;
      if (Space::reduce(half, probe, p + lo) == T(0)) {
        lo += half;
        len -= half;
      } else {
        len = half;
      }
    }
    return {lo, Space::reduce(1, reductions::Sum<T>{}, p + lo)};  // 0 + x: x itself, for a NaN or an infinity
  }
}

[[noreturn]] inline void throw_non_finite(std::string_view owner, Eigen::Index bad, double value, std::int64_t step) {
  throw non_finite_error(concat("slowmo::", owner, "::step: gradient[", bad, "] = ", value, " at step ", step,
                                " (1-based); set non_finite = NonFinite::skip to skip such steps, or find the "
                                "source of the ", std::isnan(value) ? "NaN" : "infinity"));
}

/// Applies `policy` to a host gradient before an update. Returns true when the step must be
/// skipped; throws for NonFinite::raise.
template <class T>
bool reject_gradient(NonFinite policy, std::string_view owner, const T* g, Eigen::Index n, std::int64_t step) {
  if (policy == NonFinite::propagate) return false;
  const Eigen::Index bad = first_non_finite(g, n);
  if (bad < 0) return false;
  if (policy == NonFinite::skip) return true;
  throw_non_finite(owner, bad, double(g[bad]), step);
}

/// The same for a gradient in memory space Space (host or device): one reduction per step
/// under raise and skip (on the GPU its result is read back: the step waits for the device),
/// none under propagate.
template <class Space, class T>
bool reject_gradient_in(NonFinite policy, std::string_view owner, const T* g, Eigen::Index n, std::int64_t step) {
  static_assert(HasReduction<Space>,
                "slowmo: this memory space has no `reduce(n, op, p)`: NonFinite::raise and skip scan every gradient "
                "with it, and a space must never ignore them silently; give the space a reduction (core/space.hpp)");
  if constexpr (std::is_same_v<Space, Host>) {
    return reject_gradient(policy, owner, g, n, step);
  } else {
    if (policy == NonFinite::propagate) return false;
    if (policy == NonFinite::skip) return Space::reduce(n, reductions::NonFiniteProbe<T>{}, g) != T(0);
    const auto [bad, value] = first_non_finite_in<Space>(g, n);
    if (bad < 0) return false;
    throw_non_finite(owner, bad, double(value), step);
  }
}

}  // namespace detail
}  // namespace slowmo
