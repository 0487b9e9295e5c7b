// slowmo/core/concepts.hpp — the Optimizer concept every single-worker optimizer and
// every combinator models, and a checker that names the missing piece in plain words.
#pragma once

#include <concepts>
#include <cstdint>

#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"

namespace slowmo {

namespace detail {

/// A visitor that accepts any state entry; stands in for real visitors in the concept.
struct AnyStateVisitor {
  template <class Ref>
  void operator()(const StateKey&, Ref&, StateKind) const {}
};

template <class O>
concept HasScalarType = requires { typename O::scalar_type; } && Real<typename O::scalar_type>;

/// step(x, g) on its space's vectors: Vector<scalar_type> for the host (the default),
/// device vectors for slowmo::cuda::Device.
template <class O>
concept HasStep = MemorySpace<space_of_t<O>> &&
                  requires(O& o, typename space_of_t<O>::template vector<typename O::scalar_type>& x,
                           const typename space_of_t<O>::template vector<typename O::scalar_type>& g) {
                    o.step(x, g);
                  };

template <class O>
concept HasLastLr = requires(const O& o) {
  { o.last_lr() } -> std::convertible_to<typename O::scalar_type>;
};

template <class O>
concept HasSteps = requires(const O& o) {
  { o.steps() } -> std::convertible_to<std::int64_t>;
};

template <class O>
concept HasVisitState = requires(O& o, const O& co, AnyStateVisitor v) {
  o.visit_state(v);
  co.visit_state(v);
};

}  // namespace detail

/// A single-worker optimizer (or a combinator that looks like one to whoever wraps it):
///  - `scalar_type`: float or double;
///  - `step(x, g)`: updates the parameters x in place from the gradient g, both vectors of
///    its memory space (`space_type`, core/space.hpp; Host, i.e. Vector<scalar_type>, when
///    the optimizer declares none);
///  - `last_lr()`: the learning rate gamma it used on its last step (combinators read it);
///  - `steps()`: how many steps it has taken;
///  - `visit_state(v)` (const and non-const): enumerates its state (see core/state.hpp).
template <class O>
concept Optimizer = detail::HasScalarType<O> && detail::HasStep<O> && detail::HasLastLr<O> &&
                    detail::HasSteps<O> && detail::HasVisitState<O> && std::copy_constructible<O>;

/// Use as `static_assert(check_optimizer<Base>())` where a readable diagnostic is wanted:
/// the first missing requirement is named in the compiler's message.
template <class O>
consteval bool check_optimizer() {
  static_assert(detail::HasScalarType<O>,
                "slowmo: not an Optimizer: it needs `using scalar_type = float;` (or double)");
  if constexpr (detail::HasScalarType<O>) {
    static_assert(detail::HasStep<O>,
                  "slowmo: not an Optimizer: it needs `step(x, g)` accepting Vector<scalar_type> parameters "
                  "and gradient (or its space_type's vectors)");
    static_assert(detail::HasLastLr<O>,
                  "slowmo: not an Optimizer: it needs `last_lr() const` returning the learning rate of its last "
                  "step");
    static_assert(detail::HasSteps<O>,
                  "slowmo: not an Optimizer: it needs `steps() const` returning the number of steps taken");
    static_assert(detail::HasVisitState<O>,
                  "slowmo: not an Optimizer: it needs `visit_state(visitor)`, const and non-const, enumerating "
                  "its state");
    static_assert(std::copy_constructible<O>, "slowmo: not an Optimizer: it must be copy-constructible");
  }
  return Optimizer<O>;
}

}  // namespace slowmo
