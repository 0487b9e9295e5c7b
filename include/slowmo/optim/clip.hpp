// slowmo/optim/clip.hpp — gradient clipping around any optimizer:
//   ClipGradNorm<Base>   by the global norm, as torch.nn.utils.clip_grad_norm_ (torch 1.13);
//   ClipGradValue<Base>  coordinate-wise, g_i' = clamp(g_i, -c, c), as
//                        torch.nn.utils.clip_grad_value_ (the coordinate-wise clipping of
//                        the analyses of adaptive methods on transformers).
//
//   slowmo::ClipGradNorm opt(slowmo::AdamW<float>({.lr = 4e-4}), {.max_norm = 1.0});  // DiLoCo's inner optimizer
//
// Both work in the base's memory space: the norm is a reduction of that space (Space::reduce,
// deterministic), the clipping one pass (Space::for_each), so a device base clips on the GPU.
#pragma once

#include <cmath>
#include <limits>

#include "slowmo/core/error.hpp"
#include "slowmo/core/for_each.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/optim/modifier.hpp"
#include "slowmo/optim/rules.hpp"

namespace slowmo {

struct ClipGradNormOptions {
  double max_norm = 1.0;   ///< > 0; infinity: never clips (the base's own step, bit for bit)
  double norm_type = 2.0;  ///< 2, or std::numeric_limits<double>::infinity() (max |g_i|)
};

struct ClipGradValueOptions {
  double threshold = 1.0;  ///< c > 0; infinity: never clips (the base's own step, bit for bit)
};

namespace method {

/// torch 1.13's clip_grad_norm_ on one vector, in T as torch computes it on T tensors:
///   total = ||g||  (norm_type 2: sqrt(sum g_i^2); inf: max |g_i|)
///   coef  = max_norm / (total + 1e-6), clamped to 1
///   g'    = g * coef  (with coef = 1 the base gets g itself: g * 1 is g, bit for bit)
/// A gradient with a NaN or an infinity (its norm is not finite) reaches the base as it is,
/// so that the base's NonFinite policy judges it and names the bad element (torch would
/// turn every element into NaN). A 2-norm whose sum of squares overflows although every
/// g_i is finite is recomputed scaled by a power of two near max |g_i|.
struct ClipGradNorm {
  using options_type = ClipGradNormOptions;
  static constexpr const char* name = "ClipGradNorm";
  static constexpr bool anchored = false;

  static void validate(const ClipGradNormOptions& o) {
    detail::require_option(o.max_norm > 0, name, "max_norm", o.max_norm, "must be > 0 (infinity: no clipping)");
    detail::require_option(o.norm_type == 2 || o.norm_type == std::numeric_limits<double>::infinity(), name,
                           "norm_type", o.norm_type, "must be 2 or infinity");
  }

  /// ||g|| in Space; NaN or infinity when some g_i is not finite.
  template <class Space, class T>
  static T norm(const ClipGradNormOptions& o, Eigen::Index n, const T* g) {
    static_assert(HasReduction<Space>,
                  "slowmo::ClipGradNorm: the base's memory space has no `reduce(n, op, p)`, which the norm needs "
                  "(core/space.hpp)");
    if (o.norm_type != 2) return Space::reduce(n, reductions::MaxAbs<T>{}, g);
    const T total = std::sqrt(Space::reduce(n, reductions::SumOfSquares<T>{}, g));
    if (std::isfinite(total) || Space::reduce(n, reductions::NonFiniteProbe<T>{}, g) != T(0)) return total;
    // Every g_i is finite, their squares overflowed: ||g|| = s ||g / s||, s = 2^ilogb(max |g_i|).
    const int e = std::ilogb(Space::reduce(n, reductions::MaxAbs<T>{}, g));
    return std::ldexp(std::sqrt(Space::reduce(n, reductions::SumOfSquares<T>{std::ldexp(T(1), -e)}, g)), e);
  }

  template <class Space, class T>
  static bool apply(const ClipGradNormOptions& o, Eigen::Index n, const T*, const T* g, const T*, T* out) {
    if (o.max_norm == std::numeric_limits<double>::infinity()) return false;
    const T total = norm<Space>(o, n, g);
    if (!std::isfinite(total)) return false;
    const T coef = T(o.max_norm) / (total + T(1e-6));
    if (!(coef < T(1))) return false;
    Space::for_each(n, rules::ScaleGradient<T>{coef}, out, g);
    return true;
  }
};

/// g_i' = clamp(g_i, -threshold, threshold) (rules::ClampGradient), after one reduction
/// (NonFiniteProbe) that checks every g_i is finite: a gradient with a NaN or an infinity
/// reaches the base as it is, for its NonFinite policy to judge (torch.clamp would turn an
/// infinity into +-threshold, hiding it from NonFinite::raise).
struct ClipGradValue {
  using options_type = ClipGradValueOptions;
  static constexpr const char* name = "ClipGradValue";
  static constexpr bool anchored = false;

  static void validate(const ClipGradValueOptions& o) {
    detail::require_option(o.threshold > 0, name, "threshold", o.threshold, "must be > 0 (infinity: no clipping)");
  }

  template <class Space, class T>
  static bool apply(const ClipGradValueOptions& o, Eigen::Index n, const T*, const T* g, const T*, T* out) {
    static_assert(HasReduction<Space>,
                  "slowmo::ClipGradValue: the base's memory space has no `reduce(n, op, p)`, which the check for "
                  "NaN and infinities needs (core/space.hpp)");
    if (o.threshold == std::numeric_limits<double>::infinity()) return false;
    if (Space::reduce(n, reductions::NonFiniteProbe<T>{}, g) != T(0)) return false;
    Space::for_each(n, rules::ClampGradient<T>{T(o.threshold)}, out, g);
    return true;
  }
};

}  // namespace method

/// Clips the gradient by its norm before the base's step (see method::ClipGradNorm).
template <class Base>
class ClipGradNorm : public Modified<Base, method::ClipGradNorm> {
 public:
  using Modified<Base, method::ClipGradNorm>::Modified;
};
template <class Base>
ClipGradNorm(Base) -> ClipGradNorm<Base>;
template <class Base>
ClipGradNorm(Base, ClipGradNormOptions) -> ClipGradNorm<Base>;
template <class Base>
ClipGradNorm(ClipGradNormOptions, Base) -> ClipGradNorm<Base>;

/// Clips each coordinate of the gradient before the base's step (see method::ClipGradValue).
template <class Base>
class ClipGradValue : public Modified<Base, method::ClipGradValue> {
 public:
  using Modified<Base, method::ClipGradValue>::Modified;
};
template <class Base>
ClipGradValue(Base) -> ClipGradValue<Base>;
template <class Base>
ClipGradValue(Base, ClipGradValueOptions) -> ClipGradValue<Base>;
template <class Base>
ClipGradValue(ClipGradValueOptions, Base) -> ClipGradValue<Base>;

}  // namespace slowmo
