// slowmo/distributed/hierarchical_local_sgd.hpp — HierarchicalLocalSgd<Base, Comm>: Local SGD
// whose averages form a hierarchy of worker groups (hierarchical SGD, Lin et al. 2018 and
// Zhou et al. 2021, arXiv:2010.12998; PyTorch's HierarchicalModelAverager): small groups
// (e.g. the GPUs of one node) average often, larger ones (racks, everyone) rarely.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <utility>
#include <vector>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/distributed/detail/sync.hpp"

namespace slowmo {

/// One level of the hierarchy: groups of `group_size` consecutive ranks (0..g-1, g..2g-1,
/// ...; the last one smaller when g does not divide the number of workers) average their
/// parameters every `period` local steps, unless a higher level averages at that step.
struct AveragingLevel {
  std::int64_t period = 1;
  int group_size = 1;
};

struct HierarchicalLocalSgdOptions {
  /// From the lowest level up: periods and group sizes strictly increasing, each group size
  /// below the top dividing the next (so that groups nest), the last one every worker (group_size =
  /// comm.size()), e.g. {{.period = 4, .group_size = 8}, {.period = 16, .group_size = 16}}.
  std::vector<AveragingLevel> levels{};
  std::int64_t warmup_steps = 0;     ///< W: the first W steps average gradients over every worker instead
  OnSync base_state = OnSync::keep;  ///< the base optimizer's state at each average, over the group that averages
  bool broadcast_initial = true;     ///< start(x): every worker takes worker 0's parameters
};

/// After start(x): steps 1..W average g over every worker (all-reduce) and the base steps with
/// it (post-local SGD's warm-up, as in LocalSgd). After that, at local step t = s - W of step
/// s, the highest level whose period divides t averages the parameters over its groups (each
/// group on its own, at once) and rebases the base there; no level averages when none
/// divides t. Each level's groups come from comm.split(rank / group_size, rank), made once at
/// construction (a collective: every worker constructs its optimizer at the same point).
///
/// With one level {H, m} this is LocalSgd with period H, bit for bit. PyTorch's
/// HierarchicalModelAverager picks the level the same way but counts its step from 0 after
/// the optimizer step, so it averages at its steps W, W + p, ... — after the first local
/// step when W = 0 — where this class, as LocalSgd, averages after local steps p, 2p, ...
template <class Base, SplitCommunicator Comm>
class HierarchicalLocalSgd {
  static_assert(detail::check_distributed<Base, Comm>(), "slowmo::HierarchicalLocalSgd<Base, Comm>: see the message above");

 public:
  using scalar_type = typename Base::scalar_type;
  using space_type = space_of_t<Base>;
  using vector_type = typename space_type::template vector<scalar_type>;
  using ref_type = typename space_type::template ref<scalar_type>;
  using const_ref_type = typename space_type::template const_ref<scalar_type>;
  using options_type = HierarchicalLocalSgdOptions;
  using base_type = Base;
  using comm_type = Comm;

  /// Validates the levels (invalid_option naming the level and the field), then splits comm
  /// once per level below the top one.
  HierarchicalLocalSgd(Base base, Comm& comm, HierarchicalLocalSgdOptions options)
      : options_(validated(std::move(options), comm.size())), base_(std::move(base)), comm_(comm) {
    const int r = comm.rank();
    groups_.reserve(options_.levels.size() - 1);
    for (std::size_t k = 0; k + 1 < options_.levels.size(); ++k)
      groups_.push_back(comm.split(r / options_.levels[k].group_size, r));
  }

  /// Before the first gradient: every worker takes worker 0's parameters (broadcast_initial)
  /// and the base is anchored there.
  void start(ref_type x) {
    detail::require_not_stepped("HierarchicalLocalSgd", steps_);
    detail::check_step_sizes("HierarchicalLocalSgd", x.size(), x.size());
    if (options_.broadcast_initial) comm_.get().broadcast(as_span(x), 0);
    rebase(x);
  }

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes("HierarchicalLocalSgd", x.size(), g.size());
    detail::require_started("HierarchicalLocalSgd", started_ || steps_ > 0);
    if (steps_ < options_.warmup_steps) {
      detail::check_own_gradient("HierarchicalLocalSgd", base_, g, steps_ + 1);
      detail::averaged_gradient_step(base_, x, g, grad_, comm_.get());
      ++steps_;
      return;
    }
    base_.step(x, g);
    ++steps_;
    const int level = level_at(steps_);
    if (level < 0) return;
    auto average = [&](auto& comm) {
      detail::average_parameters(base_, x, comm);
      detail::apply_sync_policy(options_.base_state, base_, comm);
    };
    if (level + 1 == int(options_.levels.size())) average(comm_.get());
    else average(groups_[std::size_t(level)]);
    slowmo::rebase(base_, x);
  }

  /// The level (index into options().levels) that averages after step s, or -1 for none.
  int level_at(std::int64_t s) const {
    const std::int64_t t = s - options_.warmup_steps;
    if (t <= 0) return -1;
    for (int k = int(options_.levels.size()) - 1; k >= 0; --k)
      if (t % options_.levels[std::size_t(k)].period == 0) return k;
    return -1;
  }
  /// The top level averages every worker after steps period_offset() + j period(), j >= 1
  /// (SlowMo checks that its outer steps fall on them).
  std::int64_t period() const { return options_.levels.back().period; }
  std::int64_t period_offset() const { return options_.warmup_steps; }
  scalar_type last_lr() const { return base_.last_lr(); }
  std::int64_t steps() const { return steps_; }
  const HierarchicalLocalSgdOptions& options() const { return options_; }
  const Base& base() const { return base_; }
  Base& base() { return base_; }
  /// The size of its communicator: what its agreement() holds over.
  int workers() const { return comm_.get().size(); }
  /// This worker's communicator at level k below the top (split from the one given).
  const Comm& group(std::size_t k) const { return groups_.at(k); }

  void rebase(const_ref_type x) {
    started_ = true;
    slowmo::rebase(base_, x);
  }

  /// The warm-up and the top level's averages leave the parameters equal on every worker (the
  /// state too during the warm-up, or when the average resets or averages it); a lower level
  /// makes them equal inside its groups only, which is not agreement.
  Agreement agreement() const {
    if (steps_ == 0) return {};
    if (steps_ <= options_.warmup_steps) return {.parameters = true, .state = true};
    if (level_at(steps_) + 1 == int(options_.levels.size()))
      return detail::agreement_after_average(options_.base_state, base_, workers());
    return agreement_over(base_, workers());
  }

  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"combinator", scope}, "HierarchicalLocalSgd");
    f(StateKey{"levels", scope}, std::int64_t(options_.levels.size()));
    for (std::size_t k = 0; k < options_.levels.size(); ++k) {
      const StateScope level{level_names[k], scope};
      f(StateKey{"period", &level}, options_.levels[k].period);
      f(StateKey{"group_size", &level}, std::int64_t(options_.levels[k].group_size));
    }
    f(StateKey{"warmup_steps", scope}, options_.warmup_steps);
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
    const StateScope base_scope{"base", scope};
    self.base_.visit_state(v, &base_scope);
  }

  static constexpr const char* level_names[] = {"level0", "level1", "level2", "level3",
                                                "level4", "level5", "level6", "level7"};
  static constexpr std::size_t max_levels = std::size(level_names);

  static HierarchicalLocalSgdOptions validated(HierarchicalLocalSgdOptions o, int m) {
    using detail::concat;
    using detail::require_option;
    require_option(!o.levels.empty() && o.levels.size() <= max_levels, "HierarchicalLocalSgd", "levels.size()",
                   o.levels.size(), concat("must be in [1, ", max_levels, "] (the last level averages every worker)"));
    for (std::size_t k = 0; k < o.levels.size(); ++k) {
      const AveragingLevel& l = o.levels[k];
      require_option(l.period >= 1, "HierarchicalLocalSgd", concat("levels[", k, "].period"), l.period, "must be >= 1");
      require_option(l.group_size >= 1 && l.group_size <= m, "HierarchicalLocalSgd",
                     concat("levels[", k, "].group_size"), l.group_size,
                     concat("must be in [1, ", m, "] (the number of workers)"));
      if (k == 0) continue;
      const AveragingLevel& below = o.levels[k - 1];
      require_option(l.period > below.period, "HierarchicalLocalSgd", concat("levels[", k, "].period"), l.period,
                     concat("must be > levels[", k - 1, "].period = ", below.period,
                            " (a higher level averages less often)"));
      // (The top level, every worker, holds every group; below it, a multiple nests them.)
      const bool top = k + 1 == o.levels.size();
      require_option(l.group_size > below.group_size && (top || l.group_size % below.group_size == 0),
                     "HierarchicalLocalSgd", concat("levels[", k, "].group_size"), l.group_size,
                     concat("must be a multiple of levels[", k - 1, "].group_size = ", below.group_size,
                            ", and larger, so that its groups are unions of the level below's"));
    }
    require_option(o.levels.back().group_size == m, "HierarchicalLocalSgd",
                   concat("levels[", o.levels.size() - 1, "].group_size"), o.levels.back().group_size,
                   concat("must be the number of workers, ", m, " (the top level averages everyone)"));
    require_option(o.warmup_steps >= 0, "HierarchicalLocalSgd", "warmup_steps", o.warmup_steps, "must be >= 0");
    return o;
  }

  HierarchicalLocalSgdOptions options_;
  Base base_;
  detail::CommHolder<Comm> comm_;
  std::vector<Comm> groups_;  // levels below the top: this worker's group at each
  vector_type grad_;          // averaged gradient during warm-up
  std::int64_t steps_ = 0;
  bool started_ = false;
};

}  // namespace slowmo
