// slowmo/distributed/local_sgd.hpp — LocalSgd<Base, Comm, Period>: local steps with periodic
// exact averaging of the parameters (Local SGD, Stich 2019), optionally after a warm-up of
// gradient all-reduce steps (post-local SGD, Lin et al. 2020), every H steps or on a
// synchronisation schedule (distributed/period.hpp: QSR, Gu et al. 2024).
#pragma once

#include <cstdint>
#include <utility>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/distributed/detail/sync.hpp"
#include "slowmo/distributed/period.hpp"

namespace slowmo {

struct LocalSgdOptions {
  std::int64_t H = 1;                 ///< local steps between averages (the schedule's base period)
  std::int64_t warmup_steps = 0;      ///< W: the first W steps average gradients instead (post-local SGD)
  OnSync base_state = OnSync::keep;   ///< the base optimizer's state at each average
  bool broadcast_initial = true;      ///< start(x): every worker takes worker 0's parameters
};

/// After start(x): steps 1..W average g over workers (all-reduce) and the base steps with it,
/// so the replicas stay identical. After that, every worker steps on its own gradient and
/// the parameters are averaged after steps W + H, W + 2H, ... (and the base rebased there);
/// with a schedule, each round's length is the schedule's, picked when the round starts from
/// the base's next learning rate (the same on every worker). A base with a shared scaling
/// (Savic) has it refreshed from the first gradient of every round (and of the warm-up).
template <class Base, class Comm, period::Schedule Period = period::Constant>
class LocalSgd {
  static_assert(detail::check_distributed<Base, Comm, /*RefreshesScaling=*/true>(),
                "slowmo::LocalSgd<Base, Comm>: see the message above");
  static constexpr bool constant_period = slowmo::period::Rounds<Period>::constant;

 public:
  using scalar_type = typename Base::scalar_type;
  using space_type = space_of_t<Base>;  // buffers and outer updates live where the base's do
  using vector_type = typename space_type::template vector<scalar_type>;
  using ref_type = typename space_type::template ref<scalar_type>;
  using const_ref_type = typename space_type::template const_ref<scalar_type>;
  using options_type = LocalSgdOptions;
  using base_type = Base;
  using comm_type = Comm;
  /// A base with a shared scaling (Savic) has it refreshed at the start of every round.
  static constexpr bool refreshes_scaling = true;

  LocalSgd(Base base, Comm& comm, LocalSgdOptions options = {}, Period schedule = Period{})
      : options_(validated(options)),
        base_(std::move(base)),
        comm_(comm),
        rounds_(std::move(schedule), options_.H, options_.warmup_steps) {}

  /// Before the first gradient: every worker takes worker 0's parameters (broadcast_initial)
  /// and the base is anchored there.
  void start(ref_type x) {
    detail::require_not_stepped("LocalSgd", steps_);
    detail::check_step_sizes("LocalSgd", x.size(), x.size());
    if (options_.broadcast_initial) comm_.get().broadcast(as_span(x), 0);
    rebase(x);
  }

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes("LocalSgd", x.size(), g.size());
    detail::require_started("LocalSgd", started_ || steps_ > 0);  // (a resumed run is started)
    Comm& comm = comm_.get();
    if (steps_ < options_.warmup_steps) {
      detail::check_own_gradient("LocalSgd", base_, g, steps_ + 1);
      if (steps_ == 0) detail::refresh_scaling(base_, x, g, comm);
      detail::averaged_gradient_step(base_, x, g, grad_, comm);
      ++steps_;
      return;
    }
    const auto next = rounds_.next(steps_, [&] { return detail::upcoming_lr(base_); }, "LocalSgd");
    if (steps_ == options_.warmup_steps || averaged_last_step()) detail::refresh_scaling(base_, x, g, comm);
    base_.step(x, g);
    rounds_.advance(next, steps_);
    ++steps_;
    if (next.ends) {
      detail::average_parameters(base_, x, comm);
      detail::apply_sync_policy(options_.base_state, base_, comm);
      slowmo::rebase(base_, x);
    }
  }

  /// With the constant schedule, LocalSgd averages after steps period_offset() + j period(),
  /// j >= 1 (SlowMo checks that its outer steps fall on them).
  std::int64_t period() const
    requires constant_period
  {
    return options_.H;
  }
  std::int64_t period_offset() const
    requires constant_period
  {
    return options_.warmup_steps;
  }
  /// The averages so far, and the length of the round under way (0 between rounds).
  std::int64_t averages() const { return rounds_.completed(steps_); }
  std::int64_t round_length() const { return rounds_.length(); }
  scalar_type last_lr() const { return base_.last_lr(); }
  std::int64_t steps() const { return steps_; }
  const LocalSgdOptions& options() const { return options_; }
  const Base& base() const { return base_; }
  Base& base() { return base_; }
  /// The size of its communicator: what its agreement() holds over.
  int workers() const { return comm_.get().size(); }

  /// The parameters are now x (set from outside, or by start): the base follows.
  void rebase(const_ref_type x) {
    started_ = true;
    slowmo::rebase(base_, x);
  }

  /// Warm-up steps and averages leave the parameters equal on every worker, and the state
  /// too during the warm-up (every worker applied the same gradient) or when the average
  /// resets or averages it; other steps leave what the base's own step left.
  Agreement agreement() const {
    if (steps_ == 0) return {};
    if (steps_ <= options_.warmup_steps) return {.parameters = true, .state = true};
    if (averaged_last_step()) return detail::agreement_after_average(options_.base_state, base_, workers());
    return agreement_over(base_, workers());
  }

  /// Structural: H and W position the averages.
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"combinator", scope}, "LocalSgd");
    f(StateKey{"H", scope}, options_.H);
    f(StateKey{"warmup_steps", scope}, options_.warmup_steps);
    rounds_.visit_structure(f, scope);
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

 private:
  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    v(StateKey{"steps", scope}, self.steps_, StateKind::progress);
    slowmo::period::Rounds<Period>::visit(self.rounds_, v, scope);
    const StateScope base_scope{"base", scope};
    self.base_.visit_state(v, &base_scope);
  }

  bool averaged_last_step() const { return rounds_.ended_at(steps_); }

  static LocalSgdOptions validated(const LocalSgdOptions& o) {
    detail::require_option(o.H >= 1, "LocalSgd", "H", o.H, "must be >= 1 (local steps between averages)");
    detail::require_option(o.warmup_steps >= 0, "LocalSgd", "warmup_steps", o.warmup_steps, "must be >= 0");
    return o;
  }

  LocalSgdOptions options_;
  Base base_;
  detail::CommHolder<Comm> comm_;
  vector_type grad_;  // averaged gradient during warm-up
  std::int64_t steps_ = 0;
  bool started_ = false;  // start(x) or a rebase anchored it (derived again from steps_ after a resume)
  slowmo::period::Rounds<Period> rounds_;
};

}  // namespace slowmo
