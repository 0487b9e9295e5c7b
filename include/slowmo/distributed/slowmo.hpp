// slowmo/distributed/slowmo.hpp — SlowMo<Base, Comm>: slow momentum over periodic exact averaging
// (Wang, Tantia, Ballas, Rabbat, ICLR 2020, Algorithm 1).
#pragma once

#include <cstdint>
#include <optional>
#include <utility>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/distributed/detail/sync.hpp"
#include "slowmo/distributed/rules.hpp"

namespace slowmo {

/// Options of SlowMo. Names from the paper; fairscale's in brackets.
struct SlowMoOptions {
  std::int64_t tau = 48;    ///< base steps per outer step [slowmo_frequency]
  double alpha = 1.0;       ///< slow learning rate [slowmo_lr]
  double beta = 0.5;        ///< slow momentum [slowmo_momentum], in [0, 1)
  OnSync base_state = OnSync::reset;  ///< the base optimizer's state at each outer step
  bool nesterov = false;    ///< outer Nesterov: x0 -= lr (d + beta u), as DiLoCo / Nesterov block momentum
  bool divide_by_lr = true; ///< pseudo-gradient (x0 - x_bar) / gamma (SlowMo); false: raw (BMUF, DiLoCo)
  bool broadcast_initial = true;  ///< start(x): every worker takes worker 0's parameters
};

/// Each worker calls start(x) once, then step(x, g) with its own gradient; every tau base
/// steps:
///  1. x_bar = mean_i x_i (exact average, all-reduce; skipped when the base has just
///     averaged, e.g. LocalSgd, so nothing is sent twice);
///  2. u = beta u + (x0 - x_bar) / gamma, gamma = the base's lr on its last step;
///  3. x0 = x0 - alpha gamma u (or the Nesterov form); every worker sets x = x0 and rebases
///     its base there.
/// start(x) broadcasts worker 0's parameters (unless broadcast_initial = false) and captures
/// x0 there, identically on every worker, before the first gradient is computed.
/// With divide_by_lr = false the pseudo-gradient is x0 - x_bar and the outer lr is alpha.
template <class Base, class Comm>
class SlowMo {
  static_assert(check_optimizer<Base>(), "slowmo::SlowMo<Base, Comm>: Base must model slowmo::Optimizer");
  static_assert(check_communicator<Comm>(), "slowmo::SlowMo<Base, Comm>: Comm must model slowmo::Communicator");
  static_assert(space_of_t<Base>::template communicates_with<Comm>,
                "slowmo::SlowMo<Base, Comm>: the base keeps its parameters in a memory space this communicator cannot "
                "read (device memory needs a device communicator such as slowmo::cuda::Nccl)");

 public:
  using scalar_type = typename Base::scalar_type;
  using space_type = space_of_t<Base>;  // buffers and outer updates live where the base's do
  using vector_type = typename space_type::template vector<scalar_type>;
  using ref_type = typename space_type::template ref<scalar_type>;
  using const_ref_type = typename space_type::template const_ref<scalar_type>;
  using options_type = SlowMoOptions;
  using base_type = Base;
  using comm_type = Comm;

  SlowMo(Base base, Comm& comm, SlowMoOptions options = {})
      : options_(validated(options, base)), base_(std::move(base)), comm_(comm) {}

  /// Before the first gradient: every worker takes worker 0's parameters (broadcast_initial)
  /// and the nest is anchored there (x0 = x, the base rebased).
  void start(ref_type x) {
    detail::require_not_stepped("SlowMo", steps_);
    detail::check_step_sizes("SlowMo", x.size(), x.size());
    if (options_.broadcast_initial) comm().broadcast(as_span(x), 0);
    rebase(x);
  }

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes("SlowMo", x.size(), g.size(), x0_.size() > 0 ? x0_.size() : -1);
    detail::require_started("SlowMo", x0_.size() > 0);
    // Everything that can refuse this step is checked before anything changes: an outer
    // step that would divide by a zero learning rate is refused before the base steps. (A
    // base that cannot tell its next lr is checked after its step: then the base has moved.)
    const bool outer = (steps_ + 1) % options_.tau == 0;
    const std::optional<double> next = outer && options_.divide_by_lr ? slowmo::next_lr(base_) : std::nullopt;
    if (next) check_gamma(*next, steps_ + 1);
    base_.step(x, g);
    if (outer && options_.divide_by_lr && !next) check_gamma(static_cast<double>(base_.last_lr()), steps_ + 1);
    ++steps_;
    if (outer) outer_step(x);
  }

  scalar_type last_lr() const { return base_.last_lr(); }
  std::int64_t steps() const { return steps_; }
  std::int64_t outer_steps() const { return steps_ / options_.tau; }
  const SlowMoOptions& options() const { return options_; }
  const Base& base() const { return base_; }
  Base& base() { return base_; }
  Comm& comm() const { return comm_.get(); }
  /// The outer start point x0 and the slow momentum u (empty before start).
  const vector_type& outer_params() const { return x0_; }
  const vector_type& slow_momentum() const { return u_; }

  /// After an outer step the parameters agree on every worker, and so does the base's state
  /// unless it is kept; in between, what the base's own steps left agreeing.
  Agreement agreement() const {
    const Agreement base = slowmo::agreement(base_);
    if (steps_ == 0 || steps_ % options_.tau != 0) return base;
    return {.parameters = true, .state = detail::state_agrees_after(options_.base_state, base.state)};
  }

  /// The parameters are now x (set from outside, or by start): x0 follows, and the base.
  void rebase(const_ref_type x) {
    x0_ = x;
    if (u_.size() != x.size()) u_.setZero(x.size());
    slowmo::rebase(base_, x);
  }

  /// Structural: tau positions the outer steps; the outer rule's form decides what u means.
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"combinator", scope}, "SlowMo");
    f(StateKey{"tau", scope}, options_.tau);
    f(StateKey{"nesterov", scope}, options_.nesterov);
    f(StateKey{"divide_by_lr", scope}, options_.divide_by_lr);
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
  void check_gamma(double gamma, std::int64_t step) const {
    if (!(gamma > 0))
      throw invalid_option(detail::concat(
          "slowmo::SlowMo: the base optimizer's learning rate is ", gamma, " at outer step ", step / options_.tau,
          " (step ", step, "); SlowMo divides the pseudo-gradient by it: keep the lr > 0 or set divide_by_lr = false"));
  }

  void outer_step(ref_type x) {
    const double gamma = static_cast<double>(base_.last_lr());
    detail::average_parameters(base_, x, comm());
    detail::apply_sync_policy(options_.base_state, base_, comm());
    const rules::SlowMoOuter<scalar_type> rule{
        .gamma = scalar_type(gamma),
        .divide = options_.divide_by_lr,
        .beta = scalar_type(options_.beta),
        .lr = scalar_type(options_.divide_by_lr ? options_.alpha * gamma : options_.alpha),
        .nesterov = options_.nesterov};
    space_type::for_each(x.size(), rule, x.data(), x0_.data(), u_.data());
    slowmo::rebase(base_, x);
  }

  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    v(StateKey{"outer_params", scope}, self.x0_, StateKind::anchor);
    v(StateKey{"slow_momentum", scope}, self.u_, StateKind::accumulator);
    v(StateKey{"steps", scope}, self.steps_, StateKind::progress);
    const StateScope base_scope{"base", scope};
    self.base_.visit_state(v, &base_scope);
  }

  static SlowMoOptions validated(const SlowMoOptions& o, const Base& base) {
    using detail::finite;
    using detail::require_option;
    require_option(o.tau >= 1, "SlowMo", "tau", o.tau, "must be >= 1 (base steps per outer step)");
    require_option(finite(o.alpha) && o.alpha > 0, "SlowMo", "alpha", o.alpha, "must be finite and > 0");
    require_option(finite(o.beta) && o.beta >= 0 && o.beta < 1, "SlowMo", "beta", o.beta, "must be in [0, 1)");
    // A base that averages by itself after steps offset + j * period (LocalSgd: W + jH):
    // every outer step (a multiple of tau) falls on one of them iff both tau and the offset
    // are multiples of the period (or the outer step falls inside the warm-up, where every
    // step agrees).
    if constexpr (requires { base.period(); base.period_offset(); })
      require_option(o.tau % base.period() == 0 && base.period_offset() % base.period() == 0, "SlowMo", "tau",
                     o.tau,
                     detail::concat("every outer step must fall on an average of the base, which averages after "
                                    "steps W + j H with H = ",
                                    base.period(), " and W = warmup_steps = ", base.period_offset(),
                                    ": make tau and warmup_steps multiples of H"));
    return o;
  }

  SlowMoOptions options_;
  Base base_;
  detail::CommHolder<Comm> comm_;
  vector_type x0_;
  vector_type u_;
  std::int64_t steps_ = 0;
};

}  // namespace slowmo
