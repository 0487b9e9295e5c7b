// slowmo/distributed/outer_loop.hpp — OuterLoop<Base, Comm, Rule, Reduce, Period>: the one loop
// behind every periodic-synchronisation method. Every tau base steps (or as a synchronisation
// schedule says: distributed/period.hpp) each worker forms its
// pseudo-gradient d_i = x0 - x_i, a reduce policy turns the workers' d_i into the shared d, an
// outer rule moves x0 from d, and every worker restarts from x0. SlowMo, BMUF, DiLoCo,
// Lookahead-as-outer, FedAvgM, FedAdam, FedYogi, FedAdagrad and the compressed variants are
// choices of Rule and Reduce (slowmo/outer/, slowmo/compress/).
#pragma once

#include <cstdint>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/distributed/detail/sync.hpp"
#include "slowmo/distributed/participation.hpp"
#include "slowmo/distributed/period.hpp"
#include "slowmo/distributed/reduce.hpp"
#include "slowmo/outer/heavy_ball.hpp"
#include "slowmo/outer/rule.hpp"
#include "slowmo/outer/rules.hpp"

namespace slowmo {

/// The part of the parameters an outer loop synchronises: [offset, offset + size), or from
/// offset to the end when size < 0 (the default: all of them).
struct Segment {
  Eigen::Index offset = 0;
  Eigen::Index size = -1;
};

/// Options of the outer loop itself (the rule and the reduce policy have their own).
struct OuterLoopOptions {
  std::int64_t tau = 48;              ///< base steps per outer step (SlowMo's tau, DiLoCo's H; a schedule's base period)
  OnSync base_state = OnSync::keep;   ///< the base optimizer's state at each outer step
  bool divide_by_lr = false;          ///< d_i = (x0 - x_i) / gamma, gamma the base's last lr (SlowMo); raw otherwise
  bool broadcast_initial = true;      ///< start(x): every worker takes worker 0's parameters
  Participation participation{};      ///< who takes part in each round (default: everyone, alike)
  /// Only this segment is the outer loop's (a module its communicator's workers share, DiPaCo
  /// style): its outer step averages and moves the segment alone, and start broadcasts it
  /// alone. Nest one outer loop per module, in the same order on every worker.
  Segment segment{};
};

namespace detail {
template <class Base>
using default_outer_rule = outer::HeavyBall<typename Base::scalar_type, space_of_t<Base>>;
}  // namespace detail

/// Each worker calls start(x) once, then step(x, g) with its own gradient. Every tau base
/// steps, in place in x (no extra buffer):
///  1. x = d_i = x0 - x_i, or (x0 - x_i) / gamma with divide_by_lr (rules::PseudoGradient);
///  2. reduce(x): the shared d, the same on every worker;
///  3. the base's state follows base_state (keep, reset, average);
///  4. the rule's kernel: x0 moves from d and the rule's state; x = x0 on every worker, and
///     the base is rebased there.
/// What is computed: with reduce::Mean (the default), which commutes with step 1, the
/// parameters are averaged and d = (x0 - mean_i x_i) [/ gamma], the formula of SlowMo's
/// Algorithm 1 and of fairscale, in one pass with the rule (nothing is sent when the base has
/// just averaged, e.g. LocalSgd). Every other policy reduces the workers' own d_i: in exact
/// arithmetic mean_i d_i is the same, in floating point it differs by rounding.
/// start(x) broadcasts worker 0's parameters (unless broadcast_initial = false) and anchors
/// x0 there, identically on every worker, before the first gradient is computed.
/// With partial participation (options.participation, distributed/participation.hpp), a worker
/// outside the round's sample does not step its base (its x stays x0 and its g is only
/// checked: participating() tells whether to compute one), and the average is the
/// participants' weighted mean: each scales its parameters by m w_r / W before the all-reduce.
template <class Base, class Comm, class Rule = detail::default_outer_rule<Base>, class Reduce = reduce::Mean,
          period::Schedule Period = period::Constant>
class OuterLoop {
  static_assert(detail::check_distributed<Base, Comm>() && detail::check_reduce_policy<Reduce, Base, Comm>(),
                "slowmo::OuterLoop<Base, Comm, Rule, Reduce>: see the message above");
  static_assert(check_outer_rule<Rule>(), "slowmo::OuterLoop<Base, Comm, Rule, Reduce>: Rule must model slowmo::OuterRule");
  static_assert(std::is_same_v<typename Rule::scalar_type, typename Base::scalar_type> &&
                    std::is_same_v<typename Rule::space_type, space_of_t<Base>>,
                "slowmo::OuterLoop: the outer rule must have the base's scalar type and memory space");

 public:
  using scalar_type = typename Base::scalar_type;
  using space_type = space_of_t<Base>;  // buffers and outer updates live where the base's do
  using vector_type = typename space_type::template vector<scalar_type>;
  using ref_type = typename space_type::template ref<scalar_type>;
  using const_ref_type = typename space_type::template const_ref<scalar_type>;
  using options_type = OuterLoopOptions;
  using base_type = Base;
  using comm_type = Comm;
  using rule_type = Rule;
  using reduce_type = Reduce;

  OuterLoop(Base base, Comm& comm, OuterLoopOptions options = {}, Rule rule = Rule{}, Reduce reduce = Reduce{},
            Period schedule = Period{})
      : OuterLoop("OuterLoop", std::move(base), comm, options, std::move(rule), std::move(reduce),
                  std::move(schedule)) {}

  /// Before the first gradient: every worker takes worker 0's parameters (broadcast_initial)
  /// and the nest is anchored there (x0 = x, the rule's state sized, the base rebased).
  void start(ref_type x) {
    detail::require_not_stepped(name(), steps_);
    detail::check_step_sizes(name(), x.size(), x.size());
    const auto [lo, len] = segment_of(x.size());
    // The reduce policy checks its options against n (a compressor's k) before x moves.
    detail::init_policy(reduce_, static_cast<std::size_t>(len));
    if (options_.broadcast_initial) comm().broadcast(std::span<scalar_type>(x.data() + lo, std::size_t(len)), 0);
    rebase(x);
  }

  void step(ref_type x, const_ref_type g) {
    if (n_ == 0 && x0_.size() > 0) n_ = whole() ? x0_.size() : x.size();  // resumed from a checkpoint
    detail::check_step_sizes(name(), x.size(), g.size(), n_ > 0 ? n_ : -1);
    detail::require_started(name(), x0_.size() > 0);
    if (!participating()) return idle_step(x, g);
    // Everything that can refuse this step is checked before anything changes: an outer
    // step that would divide by a zero learning rate, or a rule whose state does not fit,
    // is refused before the base steps. (A base that cannot tell its next lr is checked
    // after its step: then the base has moved.)
    const auto round = rounds_.next(steps_, [&] { return detail::upcoming_lr(base_); }, name());
    const bool outer = round.ends;
    const std::optional<double> next = outer && options_.divide_by_lr ? slowmo::next_lr(base_) : std::nullopt;
    if (next) check_gamma(*next, steps_ + 1);
    if (outer) check_rule_state(segment_of(x.size()).second);
    base_.step(x, g);
    if (outer && options_.divide_by_lr && !next) check_gamma(static_cast<double>(base_.last_lr()), steps_ + 1);
    rounds_.advance(round, steps_);
    ++steps_;
    if (outer) outer_step(x);
  }

  scalar_type last_lr() const { return base_.last_lr(); }
  std::int64_t steps() const { return steps_; }
  std::int64_t outer_steps() const { return rounds_.completed(steps_); }
  /// Whether this worker takes part in the round its next step belongs to (always, unless
  /// options.participation samples the workers): if not, its next step trains nothing.
  bool participating() const {
    return cohort_.everyone() || cohort_.takes_part(comm().rank(), rounds_.completed(steps_));
  }
  /// Round `round`'s participants, ascending (every worker computes the same).
  std::vector<int> participants(std::int64_t round) const { return cohort_.participants(round); }
  /// The length of the outer round under way (tau, or the schedule's; 0 between rounds).
  std::int64_t round_length() const { return rounds_.length(); }
  const OuterLoopOptions& options() const { return options_; }
  const Base& base() const { return base_; }
  Base& base() { return base_; }
  const Rule& rule() const { return rule_; }
  Rule& rule() { return rule_; }
  const Reduce& reduce_policy() const { return reduce_; }
  Reduce& reduce_policy() { return reduce_; }
  Comm& comm() const { return comm_.get(); }
  /// The size of its communicator: what its agreement() holds over.
  int workers() const { return comm_.get().size(); }
  /// The outer point x0 (empty before start).
  const vector_type& outer_params() const { return x0_; }

  /// After an outer step the parameters agree on every worker, and so does the base's state
  /// unless it is kept (and the rule's, computed from the shared d; a reduce policy's
  /// per-worker residual never does); in between, what the base's own steps left agreeing.
  /// An outer loop of a segment makes only its segment agree: never all the parameters.
  Agreement agreement() const {
    const Agreement base = agreement_over(base_, workers());
    if (!rounds_.ended_at(steps_) || !whole()) return base;
    return {.parameters = true,
            .state = detail::state_agrees_after(options_.base_state, base.state) && !detail::visits_buffers(reduce_)};
  }

  /// The parameters are now x (set from outside, or by start): x0 follows, the rule's and the
  /// reduce policy's state are sized for it, and the base is rebased.
  void rebase(const_ref_type x) {
    const auto [lo, len] = segment_of(x.size());
    detail::init_policy(reduce_, static_cast<std::size_t>(len));  // (may refuse n: before anything changes)
    if (x0_.size() != len) x0_.resize(len);
    space_type::for_each(len, rules::CopyInto{}, x0_.data(), x.data() + lo);
    n_ = x.size();
    rule_.init(len);
    slowmo::rebase(base_, x);
  }

  /// Structural: tau positions the outer steps; divide_by_lr and the rule's and reduce
  /// policy's own structure decide what their state means.
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"combinator", scope}, name_);
    f(StateKey{"tau", scope}, options_.tau);
    f(StateKey{"divide_by_lr", scope}, options_.divide_by_lr);
    if (!cohort_.everyone()) f(StateKey{"participants", scope}, std::int64_t(cohort_.per_round()));
    rounds_.visit_structure(f, scope);
    const StateScope rule_scope{"rule", scope};
    rule_.visit_structure(f, &rule_scope);
    const StateScope reduce_scope{"reduce", scope};
    reduce_.visit_structure(f, &reduce_scope);
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

 protected:
  /// For presets with their own name (SlowMo): `name` is what errors and checkpoints call it.
  OuterLoop(const char* name, Base base, Comm& comm, OuterLoopOptions options, Rule rule, Reduce reduce,
            Period schedule = Period{})
      : name_(name),
        options_(validated(name, options, base)),
        base_(std::move(base)),
        comm_(comm),
        rule_(std::move(rule)),
        reduce_(std::move(reduce)),
        rounds_(std::move(schedule), options_.tau),
        cohort_(options_.participation, comm.size(), name) {
    if (cohort_.everyone()) return;
    // A worker outside the sample does not step its base, so what would need every base to
    // have stepped alike is refused: the lr division, averaged base states, a schedule of
    // periods (read from the bases' lr), a reduce policy other than the mean, device memory.
    const char* why = "is not available with partial participation (the idle workers' bases do not step)";
    detail::require_option(!options_.divide_by_lr, name, "divide_by_lr", options_.divide_by_lr, why);
    detail::require_option(options_.base_state != OnSync::average, name, "base_state",
                           to_string(options_.base_state), why);
    detail::require_option(period::Rounds<Period>::constant, name, "period schedule", detail::type_name<Period>(),
                           why);
    detail::require_option(detail::exact_mean_policy<Reduce>, name, "reduce", detail::type_name<Reduce>(),
                           "must be reduce::Mean with partial participation (the weighted mean of the participants)");
    detail::require_option(std::is_same_v<space_type, Host>, name, "participation", cohort_.per_round(),
                           "is for host memory only");
  }

 private:
  const char* name() const { return name_; }

  void check_gamma(double gamma, std::int64_t step) const {
    if (!(gamma > 0))
      throw invalid_option(detail::concat(
          "slowmo::", name_, ": the base optimizer's learning rate is ", gamma, " at outer step ",
          rounds_.completed(steps_) + 1, " (step ", step,
          "); the pseudo-gradient is divided by it (divide_by_lr, as SlowMo): keep the lr > 0 or set divide_by_lr = "
          "false"));
  }

  // A user's rule whose init(n) does not size its state would have its kernel read past its
  // buffers: refused, naming the rule and the buffer.
  void check_rule_state(Eigen::Index n) {
    std::apply(
        [&](const auto&... buffer) {
          int index = 0;
          (check_buffer(index++, static_cast<Eigen::Index>(buffer.size()), n), ...);
        },
        rule_.buffers());
  }
  void check_buffer(int index, Eigen::Index size, Eigen::Index n) const {
    if (size != n)
      throw invalid_option(detail::concat("slowmo::", name_, ": the outer rule ", detail::type_name<Rule>(),
                                          " has a state buffer (buffers() #", index, ") of ", size,
                                          " elements; the parameters have ", n,
                                          ": its init(n) must size every buffer to n"));
  }

  /// A worker outside this round's sample: g is checked as the base would (bad input is an
  /// error on every worker), the base does not step, and at the round's end the worker joins
  /// the average with a factor of 0.
  void idle_step(ref_type x, const_ref_type g) {
    detail::check_own_gradient(name(), base_, g, steps_ + 1);
    const auto round = rounds_.next(steps_, [&] { return detail::upcoming_lr(base_); }, name());
    rounds_.advance(round, steps_);
    ++steps_;
    if (round.ends) outer_step(x);
  }

  void outer_step(ref_type x) {
    const double gamma = static_cast<double>(base_.last_lr());
    const std::int64_t round = rounds_.completed(steps_) - 1;
    const bool everyone = cohort_.everyone();
    if constexpr (std::is_same_v<space_type, Host>)  // (partial participation is host-only: see the ctor)
      if (!everyone) x *= scalar_type(cohort_.factor(comm().rank(), round));
    const auto [lo, n] = segment_of(x.size());
    scalar_type* xs = x.data() + lo;
    const std::span<scalar_type> seg(xs, std::size_t(n));
    const ReduceContext reduce_ctx{.round = round, .agreed = everyone && agreement_over(base_, workers()).parameters};
    const rules::PseudoGradient<scalar_type> pseudo_gradient{scalar_type(gamma), options_.divide_by_lr};
    const auto kernel = rule_.kernel(OuterContext{.round = round, .lr_scale = options_.divide_by_lr ? gamma : 1.0});
    std::apply(
        [&](auto&... buffer) {
          if constexpr (detail::exact_mean_policy<Reduce>) {
            // The exact mean commutes with forming the pseudo-gradient: average the
            // parameters, then d = (x0 - x_bar) [/ gamma] and the rule in one pass.
            reduce_.reduce(seg, comm(), reduce_ctx);
            detail::apply_sync_policy(options_.base_state, base_, comm());
            space_type::for_each(n, rules::PseudoGradientThen<scalar_type, decltype(kernel)>{pseudo_gradient, kernel},
                                 xs, x0_.data(), buffer.data()...);
          } else {
            // Any other policy sees each worker's own d_i (to compress it, keep a residual).
            space_type::for_each(n, pseudo_gradient, xs, x0_.data());
            reduce_.reduce(seg, comm(), reduce_ctx);
            detail::apply_sync_policy(options_.base_state, base_, comm());
            space_type::for_each(n, kernel, xs, x0_.data(), buffer.data()...);
          }
        },
        rule_.buffers());
    slowmo::rebase(base_, x);
  }

  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    v(StateKey{"outer_params", scope}, self.x0_, StateKind::anchor);
    const StateScope rule_scope{"rule", scope};
    self.rule_.visit_state(v, &rule_scope);
    const StateScope reduce_scope{"reduce", scope};
    self.reduce_.visit_state(v, &reduce_scope);
    v(StateKey{"steps", scope}, self.steps_, StateKind::progress);
    period::Rounds<Period>::visit(self.rounds_, v, scope);
    const StateScope base_scope{"base", scope};
    self.base_.visit_state(v, &base_scope);
  }

  bool whole() const { return options_.segment.offset == 0 && options_.segment.size < 0; }
  /// The segment's (offset, length) in parameters of size n; invalid_option if it does not fit.
  std::pair<Eigen::Index, Eigen::Index> segment_of(Eigen::Index n) const {
    const Segment& s = options_.segment;
    const Eigen::Index len = s.size < 0 ? n - s.offset : s.size;
    if (s.offset > n || len < (whole() ? 0 : 1) || s.offset + len > n)
      detail::require_option(false, name(), "segment", detail::concat("{", s.offset, ", ", s.size, "}"),
                             detail::concat("must lie inside the ", n, " parameters and hold at least one"));
    return {s.offset, len};
  }

  static OuterLoopOptions validated(const char* name, const OuterLoopOptions& o, const Base& base) {
    detail::require_option(o.tau >= 1, name, "tau", o.tau, "must be >= 1 (base steps per outer step)");
    const bool whole = o.segment.offset == 0 && o.segment.size < 0;
    detail::require_option(o.segment.offset >= 0, name, "segment.offset", o.segment.offset, "must be >= 0");
    // The base's state covers every parameter: a module's outer step must leave it alone.
    detail::require_option(whole || o.base_state == OnSync::keep, name, "base_state", to_string(o.base_state),
                           "must be keep for an outer loop of a segment (the base's state covers every parameter, "
                           "not the segment's alone)");
    const Participation& p = o.participation;
    detail::require_option(whole || (p.count == 0 && p.fraction == 0 && p.weights.empty()), name, "participation",
                           detail::concat("{count ", p.count, ", fraction ", p.fraction, "}"),
                           "is not available for an outer loop of a segment (every holder of the module takes part)");
    // A base that averages by itself after steps offset + j * period (LocalSgd: W + jH):
    // every outer step (a multiple of tau) falls on one of them iff both tau and the offset
    // are multiples of the period.
    if constexpr (period::Rounds<Period>::constant && requires { base.period(); base.period_offset(); })
      detail::require_option(o.tau % base.period() == 0 && base.period_offset() % base.period() == 0, name,
                             "tau", o.tau,
                             detail::concat("every outer step must fall on an average of the base, which averages "
                                            "after steps W + j H with H = ",
                                            base.period(), " and W = warmup_steps = ", base.period_offset(),
                                            ": make tau and warmup_steps multiples of H"));
    return o;
  }

  const char* name_;
  OuterLoopOptions options_;
  Base base_;
  detail::CommHolder<Comm> comm_;
  Rule rule_;
  Reduce reduce_;
  vector_type x0_;
  Eigen::Index n_ = 0;  // the parameters' size (0 before start); x0_ holds the segment's
  std::int64_t steps_ = 0;
  period::Rounds<Period> rounds_;
  mutable detail::Cohort cohort_;  // (mutable: it caches the sample of the round last asked)
};

/// Builds an OuterLoop, deducing every type: `outer_loop(base, comm, {.tau = 10},
/// outer::FedAdam<float>({.lr = 0.01}))`, or on a schedule, `outer_loop(base, comm, {.tau = 4},
/// rule, reduce::Mean{}, period::Qsr{.alpha = 0.1})`.
template <class Base, class Comm, class Rule = detail::default_outer_rule<Base>, class Reduce = reduce::Mean,
          period::Schedule Period = period::Constant>
OuterLoop<Base, Comm, Rule, Reduce, Period> outer_loop(Base base, Comm& comm, OuterLoopOptions options = {},
                                                       Rule rule = Rule{}, Reduce reduce = Reduce{},
                                                       Period schedule = Period{}) {
  return {std::move(base), comm, options, std::move(rule), std::move(reduce), std::move(schedule)};
}

}  // namespace slowmo
