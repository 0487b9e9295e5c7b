// slowmo/optim/modifier.hpp — a gradient modifier around any optimizer: the base steps with
// a transformed gradient g' = M(x, g[, anchor]) instead of g.
//
// A modifier is a small "method" type M (optim/clip.hpp, optim/fedprox.hpp):
//
//   struct M {
//     using options_type = MOptions;               // a plain aggregate
//     static constexpr const char* name = "M";     // in messages and checkpoints
//     static constexpr bool anchored = false;      // true: keeps a copy of x (the anchor)
//     static void validate(const MOptions& o);     // throws invalid_option naming the field
//     // Writes g' to out and returns true, or returns false when g' is g itself (then the
//     // base gets g, bit for bit, and out is left alone). anchor is null unless anchored.
//     template <class Space, class T>
//     static bool apply(const MOptions& o, Eigen::Index n, const T* x, const T* g,
//                       const T* anchor, T* out);
//   };
//
// Modified<Base, M> adds the rest: the scratch gradient (allocated on the first step, then
// never again), the size checks, the anchor (set by start(x) and by every rebase(x), which
// each synchronising wrapper calls after it overwrites x; captured at the first step
// otherwise; visited as state of kind anchor), and forwards everything else to the base
// (visit_state and visit_structure under "base/", rebase, agreement, last_lr, next_lr,
// steps), so that it composes like Lookahead: inside LocalSgd, SlowMo, the outer loop, or
// around them. The strong guarantee: M only writes the scratch, and the base's step either
// succeeds or changes nothing (a first-step anchor is dropped again when it throws).
#pragma once

#include <cstdint>
#include <utility>

#include "slowmo/core/concepts.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"

namespace slowmo {

template <class Base, class M>
class Modified {
  static_assert(check_optimizer<Base>(), "slowmo: a gradient modifier's Base must model slowmo::Optimizer");

 public:
  using scalar_type = typename Base::scalar_type;
  using options_type = typename M::options_type;
  using method_type = M;
  using base_type = Base;
  using space_type = space_of_t<Base>;
  using vector_type = typename space_type::template vector<scalar_type>;
  using ref_type = typename space_type::template ref<scalar_type>;
  using const_ref_type = typename space_type::template const_ref<scalar_type>;
  static constexpr const char* name = M::name;

  explicit Modified(Base base, options_type options = {}) : options_(validated(options)), base_(std::move(base)) {}
  Modified(options_type options, Base base) : Modified(std::move(base), options) {}

  /// Starts the base (a distributed base makes x the workers' common point), then anchors
  /// at x.
  void start(ref_type x) {
    detail::require_not_stepped(name, base_.steps());
    detail::check_step_sizes(name, x.size(), x.size());
    slowmo::start(base_, x);
    if constexpr (M::anchored) anchor_ = x;
  }

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes(name, x.size(), g.size(), M::anchored && anchor_.size() > 0 ? anchor_.size() : -1);
    const bool capture = M::anchored && anchor_.size() == 0;  // without start: the first step's x
    if (capture) anchor_ = x;
    if (scratch_.size() != x.size()) scratch_.setZero(x.size());  // once (not state: never visited)
    try {
      const bool modified = M::template apply<space_type>(options_, x.size(), x.data(), g.data(),
                                                          M::anchored ? anchor_.data() : nullptr, scratch_.data());
      if (modified)
        base_.step(x, const_ref_type(std::as_const(scratch_)));
      else
        base_.step(x, g);
    } catch (...) {
      if (capture) anchor_ = vector_type();  // a refused first step leaves the optimizer as it was
      throw;
    }
  }

  /// The parameters were overwritten from outside (an average, an outer step): the anchor
  /// moves there, and the base follows.
  void rebase(const_ref_type x) {
    if constexpr (M::anchored) anchor_ = x;
    slowmo::rebase(base_, x);
  }

  /// What the base's step left agreeing (the anchor is set only where the parameters agree).
  Agreement agreement() const { return slowmo::agreement(base_); }

  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"optimizer", scope}, name);
    const StateScope base_scope{"base", scope};
    slowmo::visit_structure(base_, f, &base_scope);
  }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    visit(*this, v, scope);
  }

  scalar_type last_lr() const { return base_.last_lr(); }
  auto next_lr() const
    requires requires(const Base& b) { b.next_lr(); }
  {
    return base_.next_lr();
  }
  std::int64_t steps() const { return base_.steps(); }
  const options_type& options() const { return options_; }
  const Base& base() const { return base_; }
  Base& base() { return base_; }
  /// The anchor (anchored modifiers; empty until start or the first step).
  const vector_type& anchor() const
    requires(M::anchored)
  {
    return anchor_;
  }

 private:
  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    if constexpr (M::anchored) v(StateKey{"anchor", scope}, self.anchor_, StateKind::anchor);
    const StateScope base_scope{"base", scope};
    self.base_.visit_state(v, &base_scope);
  }

  static options_type validated(const options_type& o) {
    M::validate(o);
    return o;
  }

  options_type options_;
  Base base_;
  vector_type anchor_;   // anchored modifiers only
  vector_type scratch_;  // g', rewritten every step
};

}  // namespace slowmo
