// slowmo/core/state.hpp — explicit, visitable optimizer state.
//
// Every optimizer enumerates its state through one hook,
//
//     template <class Visitor> void visit_state(Visitor&& v, const StateScope* scope = nullptr);
//
// calling v(key, ref, kind) once per entry, in a fixed order, where `ref` is a reference to
// a buffer (a Vector<T>, or the vector type of the optimizer's memory space, e.g. a
// device vector), a std::int64_t (a counter) or a T (a scalar), and `kind` says how
// the entry behaves when the owner re-initialises it. That one hook serves the reset / keep /
// average policies at synchronisation points, checkpointing and tests.
#pragma once

#include <concepts>
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

namespace slowmo {

/// How a state entry behaves.
enum class StateKind {
  accumulator,  ///< running statistic (momentum, Adam moments): zeroed by a reset
  anchor,       ///< a copy of the parameters (Lookahead slow weights): re-anchored, never zeroed
  counter,      ///< part of the state a reset re-initialises (Adam's bias-correction step)
  progress,     ///< how far training has come (drives schedules): never reset
};

/// What happens to a wrapped optimizer's state at a synchronisation point
/// (a Lookahead sync, a SlowMo outer step).
enum class OnSync {
  keep,     ///< leave it as it is
  reset,    ///< re-initialise accumulators and counters, as a freshly built optimizer
  average,  ///< average accumulators across workers (distributed combinators only)
};

inline constexpr std::string_view to_string(OnSync p) {
  switch (p) {
    case OnSync::keep: return "keep";
    case OnSync::reset: return "reset";
    case OnSync::average: return "average";
  }
  return "?";
}

/// Where an entry sits in a nest of optimizers: a chain of owner names, innermost first,
/// built on the stack so that visiting never allocates.
struct StateScope {
  std::string_view name;
  const StateScope* parent = nullptr;
};

/// The name of one state entry within its scope chain.
struct StateKey {
  std::string_view name;
  const StateScope* scope = nullptr;

  /// "base/base/exp_avg"-style path (allocates; for messages and checkpoints).
  std::string path() const {
    std::string out(name);
    for (const StateScope* s = scope; s != nullptr; s = s->parent)
      out.insert(0, std::string(s->name) + "/");
    return out;
  }
};

/// Re-initialises what a reset re-initialises: zeroes accumulators and counters; leaves
/// anchors and progress alone.
template <class Opt>
void reset_state(Opt& opt) {
  opt.visit_state([](const StateKey&, auto& ref, StateKind kind) {
    if (kind == StateKind::accumulator || kind == StateKind::counter) {
      using R = std::remove_cvref_t<decltype(ref)>;
      if constexpr (std::is_arithmetic_v<R>)
        ref = R(0);
      else
        ref.setZero();
    }
  });
}

/// Tells an optimizer that its parameters are now x, set from outside (a SlowMo outer step
/// sets every worker's x to the new x0; start(x) anchors a fresh nest). Optimizers that keep
/// their own copy of the parameters (SlowMo's outer start point, Lookahead's slow weights,
/// Sgp's push-sum numerator) implement `rebase(x)` to re-anchor it at x and forward it to their
/// base; for the others this does nothing. Every wrapper that overwrites its base's parameters
/// calls it, so that the base's next step starts from the overwritten point.
template <class Opt, class X>
void rebase(Opt& opt, const X& x) {
  if constexpr (requires { opt.rebase(x); }) opt.rebase(x);
}

/// Makes x the common starting point, before the first gradient is computed at it: a
/// distributed combinator broadcasts worker 0's parameters into x (unless its
/// broadcast_initial = false) and anchors its whole nest at x (rebase); a single-worker
/// optimizer only anchors. Call it once, after the optimizer is built and before the first
/// `g = gradient(x); opt.step(x, g)`; distributed combinators refuse to step without it. A
/// run resumed from a checkpoint is already started: load the checkpoint instead.
template <class Opt, class X>
void start(Opt& opt, X&& x) {
  if constexpr (requires { opt.start(x); })
    opt.start(x);
  else
    rebase(opt, x);
}

/// What the last step left identical on every worker: the parameters (after an exact
/// average, or when every worker applied the same averaged gradient), and the state
/// (accumulators and counters). Distributed combinators report it (`agreement()`), so that a
/// wrapper never averages again what its base has just averaged: SlowMo over LocalSgd
/// all-reduces once per outer step, not twice. An optimizer that says nothing agrees on
/// nothing.
struct Agreement {
  bool parameters = false;
  bool state = false;
};

template <class Opt>
Agreement agreement(const Opt& opt) {
  if constexpr (requires { { opt.agreement() } -> std::convertible_to<Agreement>; })
    return opt.agreement();
  else
    return {};
}

namespace detail {
/// The fewest workers a combinator of the nest talks to (`workers()`: its communicator's
/// size), or INT_MAX where none does: the widest its agreement() can hold over.
template <class Opt>
int agreement_scope(const Opt& opt) {
  int n = std::numeric_limits<int>::max();
  if constexpr (requires { { opt.workers() } -> std::convertible_to<int>; }) n = opt.workers();
  if constexpr (requires { opt.base(); }) n = std::min(n, agreement_scope(opt.base()));
  return n;
}
}  // namespace detail

/// agreement(opt) as a combinator over m workers may use it: nothing where part of the nest
/// talks to a smaller group only (LocalSgd on a communicator from split() agrees inside its
/// group, not across the m workers of a SlowMo around it).
template <class Opt>
Agreement agreement_over(const Opt& opt, int m) {
  return detail::agreement_scope(opt) < m ? Agreement{} : agreement(opt);
}

/// Structural options: those that fix the shape or the meaning of the state (Adam's
/// amsgrad, SlowMo's tau, LocalSgd's H, the schedule's type, ...). An optimizer lists them
/// with an optional second hook,
///
///     template <class F> void visit_structure(F&& f, const StateScope* scope = nullptr) const;
///
/// calling f(key, value) once per option (value: bool, an integer, a floating-point number or
/// a string), combinators first for themselves, then for their base under "base/".
/// Checkpoints write them into their signature, so a checkpoint loads only into an optimizer
/// whose state means the same thing. Plain hyper-parameters (lr, betas, alpha, beta, ...)
/// are not structural: they may change when a run resumes.
template <class Opt, class F>
void visit_structure(const Opt& opt, F&& f, const StateScope* scope = nullptr) {
  if constexpr (requires { opt.visit_structure(f, scope); }) opt.visit_structure(f, scope);
}

}  // namespace slowmo
