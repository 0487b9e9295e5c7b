// slowmo/dist/slowmo.hpp — SlowMo<Base, Comm>: slow momentum over periodic exact averaging
// (Wang, Tantia, Ballas, Rabbat, ICLR 2020, Algorithm 1).
#pragma once

#include <cstdint>
#include <utility>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/dist/detail/sync.hpp"
#include "slowmo/dist/rules.hpp"

namespace slowmo {

/// Options of SlowMo. Names from the paper; fairscale's in brackets.
struct SlowMoOptions {
  std::int64_t tau = 48;    ///< base steps per outer step [slowmo_frequency]
  double alpha = 1.0;       ///< slow learning rate [slowmo_lr]
  double beta = 0.5;        ///< slow momentum [slowmo_momentum], in [0, 1)
  OnSync base_state = OnSync::reset;  ///< the base optimizer's state at each outer step
  bool nesterov = false;    ///< outer Nesterov: x0 -= lr (d + beta u), as DiLoCo / Nesterov block momentum
  bool divide_by_lr = true; ///< pseudo-gradient (x0 - x_bar) / gamma (SlowMo); false: raw (BMUF, DiLoCo)
  bool broadcast_initial = true;  ///< first step: every worker starts from worker 0's parameters
};

/// Each worker calls step(x, g) with its own gradient; every tau base steps:
///  1. x_bar = mean_i x_i (exact average, all-reduce);
///  2. u = beta u + (x0 - x_bar) / gamma, gamma = the base's lr on its last step;
///  3. x0 = x0 - alpha gamma u (or the Nesterov form); every worker sets x = x0.
/// x0 is captured at the first step, before the first local step, identically on every
/// worker (after broadcasting worker 0's parameters, unless broadcast_initial = false).
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
      : options_(validated(options, base)), base_(std::move(base)), comm_(&comm) {}

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes("SlowMo", x.size(), g.size(), x0_.size() > 0 ? x0_.size() : -1);
    if (x0_.size() == 0) {  // before the first local step
      if (options_.broadcast_initial) comm_->broadcast(as_span(x), 0);
      x0_ = x;
      u_.setZero(x.size());
    }
    base_.step(x, g);
    ++steps_;
    if (steps_ % options_.tau == 0) outer_step(x);
  }

  scalar_type last_lr() const { return base_.last_lr(); }
  std::int64_t steps() const { return steps_; }
  std::int64_t outer_steps() const { return steps_ / options_.tau; }
  const SlowMoOptions& options() const { return options_; }
  const Base& base() const { return base_; }
  Base& base() { return base_; }
  Comm& comm() const { return *comm_; }
  /// The outer start point x0 and the slow momentum u (empty before the first step).
  const vector_type& outer_params() const { return x0_; }
  const vector_type& slow_momentum() const { return u_; }

  void rebase(const_ref_type x) {
    if (x0_.size() == x.size()) x0_ = x;
    slowmo::rebase(base_, x);
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
  void outer_step(ref_type x) {
    const double gamma = static_cast<double>(base_.last_lr());
    if (options_.divide_by_lr && !(gamma > 0))
      throw invalid_option(detail::concat(
          "slowmo::SlowMo: the base optimizer's learning rate is ", gamma, " at outer step ", outer_steps(), " (step ",
          steps_, "); SlowMo divides the pseudo-gradient by it: keep the lr > 0 or set divide_by_lr = false"));
    comm_->all_reduce(as_span(x), ReduceOp::mean);
    detail::apply_sync_policy(options_.base_state, base_, *comm_);
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
    if constexpr (requires { base.period(); })  // e.g. LocalSgd averaging every H steps inside
      require_option(o.tau % base.period() == 0, "SlowMo", "tau", o.tau,
                     detail::concat("must be a multiple of the base's averaging period H = ", base.period(),
                                    ", so that every outer step falls on an inner average"));
    return o;
  }

  SlowMoOptions options_;
  Base base_;
  Comm* comm_;
  vector_type x0_;
  vector_type u_;
  std::int64_t steps_ = 0;
};

}  // namespace slowmo
