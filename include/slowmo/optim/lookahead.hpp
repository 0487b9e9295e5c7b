// slowmo/optim/lookahead.hpp — Lookahead (Zhang, Lucas, Hinton, Ba 2019): k steps forward
// with any optimizer, one step back towards slow weights.
#pragma once

#include <cstdint>
#include <utility>

#include "slowmo/core/concepts.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/optim/rules.hpp"

namespace slowmo {

struct LookaheadOptions {
  std::int64_t k = 5;                ///< synchronisation period, in base optimizer steps
  double alpha = 0.5;                ///< slow step size, in (0, 1]
  OnSync base_state = OnSync::keep;  ///< the base optimizer's state at each sync: keep or reset
};

/// Lookahead<Base> owns its base optimizer by value. The slow weights are captured from x
/// at the first step, before the base moves it; then every k base steps (steps, never
/// samples):  slow = slow + alpha * (x - slow);  x = slow.
/// The slow weights live in the base's memory space (host, or the GPU for a device base).
template <class Base>
class Lookahead {
  static_assert(check_optimizer<Base>(), "slowmo::Lookahead<Base>: Base must model slowmo::Optimizer");

 public:
  using scalar_type = typename Base::scalar_type;
  using options_type = LookaheadOptions;
  using base_type = Base;
  using space_type = space_of_t<Base>;
  using vector_type = typename space_type::template vector<scalar_type>;
  using ref_type = typename space_type::template ref<scalar_type>;
  using const_ref_type = typename space_type::template const_ref<scalar_type>;

  explicit Lookahead(Base base, LookaheadOptions options = {})
      : options_(validated(options)), base_(std::move(base)) {}
  Lookahead(LookaheadOptions options, Base base) : Lookahead(std::move(base), options) {}

  /// Anchors the slow weights at x (after the base's own start: a distributed base first
  /// makes x the workers' common point). Optional for a single-worker base: the first step
  /// captures them.
  void start(ref_type x) {
    detail::require_not_stepped("Lookahead", steps_);
    detail::check_step_sizes("Lookahead", x.size(), x.size());
    slowmo::start(base_, x);
    slow_ = x;
  }

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes("Lookahead", x.size(), g.size(), slow_.size() > 0 ? slow_.size() : -1);
    if (slow_.size() == 0) {  // without start: capture before the first base step moves x
      slow_ = x;
      try {
        base_.step(x, g);
      } catch (...) {
        slow_ = vector_type();  // a refused first step leaves the optimizer as it was
        throw;
      }
    } else {
      base_.step(x, g);
    }
    ++steps_;
    if (steps_ % options_.k == 0) {
      space_type::for_each(x.size(), rules::LookaheadSync<scalar_type>{scalar_type(options_.alpha)}, slow_.data(),
                           x.data());
      if (options_.base_state == OnSync::reset) reset_state(base_);
      slowmo::rebase(base_, x);  // x was overwritten: a base with its own copy (Sgp, Lookahead) follows
    }
  }

  /// The parameters were overwritten from outside (an outer step): the slow weights follow.
  void rebase(const_ref_type x) {
    slow_ = x;
    slowmo::rebase(base_, x);
  }

  /// Between syncs, what the base's step left agreeing; a sync step claims nothing (the
  /// slow weights are not tracked across workers).
  Agreement agreement() const {
    if (steps_ > 0 && steps_ % options_.k == 0) return {.parameters = false, .state = slowmo::agreement(base_).state};
    return slowmo::agreement(base_);
  }

  /// Structural: k positions the syncs.
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"optimizer", scope}, "Lookahead");
    f(StateKey{"k", scope}, options_.k);
    const StateScope base_scope{"base", scope};
    slowmo::visit_structure(base_, f, &base_scope);
  }

  scalar_type last_lr() const { return base_.last_lr(); }
  std::int64_t steps() const { return steps_; }
  const LookaheadOptions& options() const { return options_; }
  const Base& base() const { return base_; }
  Base& base() { return base_; }
  /// Empty until the first step.
  const vector_type& slow_weights() const { return slow_; }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    visit(*this, v, scope);
  }

 private:
  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    v(StateKey{"slow_weights", scope}, self.slow_, StateKind::anchor);
    v(StateKey{"steps", scope}, self.steps_, StateKind::progress);
    const StateScope base_scope{"base", scope};
    self.base_.visit_state(v, &base_scope);
  }

  static LookaheadOptions validated(const LookaheadOptions& o) {
    detail::require_option(o.k >= 1, "Lookahead", "k", o.k, "must be >= 1");
    detail::require_option(detail::finite(o.alpha) && o.alpha > 0 && o.alpha <= 1, "Lookahead", "alpha", o.alpha,
                           "must be in (0, 1]");
    detail::require_option(o.base_state != OnSync::average, "Lookahead", "base_state", to_string(o.base_state),
                           "Lookahead runs on one worker: use keep or reset");
    return o;
  }

  LookaheadOptions options_;
  Base base_;
  vector_type slow_;
  std::int64_t steps_ = 0;
};

}  // namespace slowmo
