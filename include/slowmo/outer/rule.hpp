// slowmo/outer/rule.hpp — what an outer rule is: how the outer loop (distributed/outer_loop.hpp)
// moves the outer point x0 from the shared pseudo-gradient d. The shipped rules are in this
// folder (heavy_ball.hpp: SlowMo, BMUF, DiLoCo, FedAvgM; adaptive.hpp: FedAdam, FedYogi,
// FedAdagrad); a user-written rule models the same concept and plugs in the same way.
#pragma once

#include <Eigen/Core>
#include <cstdint>

#include "slowmo/core/space.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/state.hpp"

namespace slowmo {

/// What the outer loop tells its rule at an outer step.
struct OuterContext {
  std::int64_t round = 0;  ///< 0-based index of this outer step
  /// The factor a rule multiplies its learning rate by: the base's lr on its last step when
  /// the pseudo-gradient was divided by it (SlowMo: x0 -= alpha gamma u), 1 otherwise.
  double lr_scale = 1.0;
};

namespace detail {
template <class R>
concept HasRuleTypes = requires {
  typename R::scalar_type;
  typename R::space_type;
};
template <class R>
concept HasRuleKernel = HasRuleTypes<R> && requires(R& r, const R& cr, Eigen::Index n, const OuterContext& ctx) {
  r.init(n);
  cr.kernel(ctx);
  r.buffers();
};
template <class R>
concept HasRuleState = requires(R& r, const R& cr) {
  r.visit_state(detail::AnyStateVisitor{});
  cr.visit_state(detail::AnyStateVisitor{});
  cr.visit_structure(detail::AnyStructureVisitor{});
};
}  // namespace detail

/// An outer rule R is a per-element update, like every rule of the library (applied by the
/// CPU driver and by the CUDA kernel alike), for scalars R::scalar_type in R::space_type:
///   r.init(n)        make the state fit n parameters (zero when its size changes, kept
///                    otherwise); the loop calls it whenever it anchors (start, rebase);
///   r.buffers()      std::tie of its state vectors, in the order the kernel takes them;
///   r.kernel(ctx)    the per-element rule for this outer step, called as
///                    k(xd, x0, buffers...) with V = a SIMD pack or a scalar: xd holds the
///                    shared pseudo-gradient d on entry; on exit x0 holds the new outer
///                    point and xd holds it too (every worker restarts from it);
///   visit_state(v, scope) const and not, visit_structure(f, scope): its state and its
///                    structural options, as optimizers have (core/state.hpp).
/// The loop fuses the kernel with the pseudo-gradient's formation where it can (one pass).
template <class R>
concept OuterRule = detail::HasRuleKernel<R> && detail::HasRuleState<R> && std::copy_constructible<R>;

/// `static_assert(check_outer_rule<R>())` names the first missing piece.
template <class R>
consteval bool check_outer_rule() {
  if constexpr (constexpr bool ok = detail::HasRuleTypes<R>; !ok) {
    static_assert(ok, "slowmo: not an OuterRule: it needs `using scalar_type = ...;` and `using space_type = ...;`");
  } else if constexpr (constexpr bool ok = detail::HasRuleKernel<R>; !ok) {
    static_assert(ok, "slowmo: not an OuterRule: it needs `init(n)`, `buffers()` (std::tie of its state vectors) and "
                      "`kernel(const OuterContext&) const` (the per-element rule)");
  } else if constexpr (constexpr bool ok = detail::HasRuleState<R>; !ok) {
    static_assert(ok, "slowmo: not an OuterRule: it needs `visit_state(v, scope)` (const and not) and "
                      "`visit_structure(f, scope) const`");
  } else {
    static_assert(std::copy_constructible<R>, "slowmo: not an OuterRule: it must be copy-constructible");
  }
  return OuterRule<R>;
}

}  // namespace slowmo
