// slowmo/core/concepts.hpp — the Optimizer concept every single-worker optimizer and
// every combinator models, and a checker that names the missing piece in plain words.
#pragma once

#include <concepts>
#include <cstdint>
#include <optional>

#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"

namespace slowmo {

namespace detail {

/// The parameter of the optimizers' default constructors, so that `Adam<T>({})` means
/// default options. With only `Adam(options_type = {}, S = {})`, `{}` converts equally well
/// (a user-defined conversion each) to options_type and, through the default constructor,
/// to the `const Adam&` / `Adam&&` of the copy and move constructors: g++ rejects the call
/// as ambiguous, explicit or not. `{}` converts to an enumeration by the identity
/// conversion, which beats both; nothing else converts to it (not even 0).
enum class DefaultOptions {};

/// A visitor that accepts any state entry; stands in for real visitors in the concept.
struct AnyStateVisitor {
  template <class Ref>
  void operator()(const StateKey&, Ref&, StateKind) const {}
};
/// A structure visitor that accepts any option (visit_structure).
struct AnyStructureVisitor {
  template <class Value>
  void operator()(const StateKey&, const Value&) const {}
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

/// step(x, g) on its space's views, as every combinator calls its base: ref<scalar_type>
/// and const_ref<scalar_type> (Eigen::Ref on the host). A step taking `Vector<T>&` passes
/// HasStep and cannot take them.
template <class O>
concept HasViewStep = MemorySpace<space_of_t<O>> &&
                      requires(O& o, typename space_of_t<O>::template ref<typename O::scalar_type> x,
                               typename space_of_t<O>::template const_ref<typename O::scalar_type> g) {
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

/// visit_state(v) as reset_state, checkpoints and the sync policies call it (a temporary
/// visitor), const and non-const.
template <class O>
concept HasVisitState = requires(O& o, const O& co) {
  o.visit_state(AnyStateVisitor{});
  co.visit_state(AnyStateVisitor{});
};

/// visit_state(v, scope) as every combinator calls its base: the combinator's visitor (an
/// lvalue) and the combinator's scope, so that the base's keys read "base/exp_avg".
template <class O>
concept HasScopedVisitState = requires(O& o, const O& co, AnyStateVisitor& v, const StateScope* scope) {
  o.visit_state(v, scope);
  co.visit_state(v, scope);
};

}  // namespace detail

/// A single-worker optimizer (or a combinator that looks like one to whoever wraps it):
///  - `scalar_type`: float or double;
///  - `step(x, g)`: updates the parameters x in place from the gradient g, both vectors of
///    its memory space (`space_type`, core/space.hpp; Host, i.e. Vector<scalar_type>, when
///    the optimizer declares none), and also the space's views ref / const_ref
///    (VectorRef<scalar_type>, ConstVectorRef<scalar_type> on the host), which is what
///    combinators pass: declare `step(VectorRef<T> x, ConstVectorRef<T> g)`;
///  - `last_lr()`: the learning rate gamma it used on its last step (combinators read it);
///  - `steps()`: how many steps it has taken;
///  - `visit_state(v)` and `visit_state(v, scope)` with a `const StateScope*` scope (const
///    and non-const): enumerates its state (see core/state.hpp); combinators pass the scope.
template <class O>
concept Optimizer = detail::HasScalarType<O> && detail::HasStep<O> && detail::HasViewStep<O> &&
                    detail::HasLastLr<O> && detail::HasSteps<O> && detail::HasVisitState<O> &&
                    detail::HasScopedVisitState<O> && std::copy_constructible<O>;

/// The learning rate opt's next step will use, where it can tell: its own `next_lr()` (the
/// shipped optimizers' is checked, so a bad schedule value throws here), or, for a
/// combinator, its base's (a combinator steps its base with the base's lr); empty otherwise.
template <class O>
std::optional<double> next_lr(const O& opt) {
  if constexpr (requires { opt.next_lr(); })
    return static_cast<double>(opt.next_lr());
  else if constexpr (requires { opt.base(); })
    return next_lr(opt.base());
  else
    return std::nullopt;
}

/// Use as `static_assert(check_optimizer<Base>())` where a readable diagnostic is wanted:
/// the first missing requirement, and only that one, is named in the compiler's message.
template <class O>
consteval bool check_optimizer() {
  // One branch per requirement, in order: a type missing several pieces gets one message.
  // (Each condition is a bool, not a concept-id, so the compiler does not follow the
  // one-line message with its own account of the unsatisfied requires-expression.)
  if constexpr (constexpr bool ok = detail::HasScalarType<O>; !ok) {
    static_assert(ok, "slowmo: not an Optimizer: it needs `using scalar_type = float;` (or double)");
  } else if constexpr (constexpr bool ok = detail::HasStep<O>; !ok) {
    static_assert(ok,
                  "slowmo: not an Optimizer: it needs `step(x, g)` accepting Vector<scalar_type> parameters "
                  "and gradient (or its space_type's vectors)");
  } else if constexpr (constexpr bool ok = detail::HasViewStep<O>; !ok) {
    static_assert(ok,
                  "slowmo: not an Optimizer: its `step(x, g)` must accept the views combinators pass: declare "
                  "`step(VectorRef<T> x, ConstVectorRef<T> g)` (its space_type's ref, const_ref), not `Vector<T>&`");
  } else if constexpr (constexpr bool ok = detail::HasLastLr<O>; !ok) {
    static_assert(ok,
                  "slowmo: not an Optimizer: it needs `last_lr() const` returning the learning rate of its last "
                  "step");
  } else if constexpr (constexpr bool ok = detail::HasSteps<O>; !ok) {
    static_assert(ok, "slowmo: not an Optimizer: it needs `steps() const` returning the number of steps taken");
  } else if constexpr (constexpr bool ok = detail::HasVisitState<O>; !ok) {
    static_assert(ok,
                  "slowmo: not an Optimizer: it needs `visit_state(visitor)`, const and non-const, enumerating "
                  "its state");
  } else if constexpr (constexpr bool ok = detail::HasScopedVisitState<O>; !ok) {
    static_assert(ok,
                  "slowmo: not an Optimizer: its `visit_state` must also take the scope combinators pass: declare "
                  "`template <class V> void visit_state(V&& v, const StateScope* scope = nullptr)`, const and "
                  "non-const");
  } else if constexpr (constexpr bool ok = std::copy_constructible<O>; !ok) {
    static_assert(ok, "slowmo: not an Optimizer: it must be copy-constructible");
  }
  return Optimizer<O>;
}

}  // namespace slowmo
