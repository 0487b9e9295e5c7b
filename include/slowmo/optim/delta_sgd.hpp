// slowmo/optim/delta_sgd.hpp — Delta-SGD (Kim, Toghani, Uribe, Kyrillidis, ICLR 2024,
// "Adaptive Federated Learning with Auto-Tuned Clients"): SGD whose step size follows the
// local smoothness of the client's own loss, so that every client picks its own step size
// and no client-side learning rate is tuned.
//
//   slowmo::OuterLoop fedavg(slowmo::DeltaSgd<float>(), comm, {.tau = 20, .base_state = slowmo::OnSync::reset}, ...);
//
// Per step k, from the previous step's gradient g_{k-1} and step x_k - x_{k-1}:
//   eta_k   = min( gamma |x_k - x_{k-1}| / (2 |g_k - g_{k-1}|),  sqrt(1 + delta theta_{k-1}) eta_{k-1} ) + eps
//   theta_k = eta_k / eta_{k-1};   x_{k+1} = x_k - eta_k g_k
// When there is no previous step (the first step, after a reset, or after the parameters were
// overwritten from outside: rebase), or either difference is zero, only the growth term
// applies: eta_k = sqrt(1 + delta theta_{k-1}) eta_{k-1}, without eps. The state starts at
// eta_{-1} = lr, theta_{-1} = theta0. This is the authors' code (jlylekim/auto-tuned-FL,
// src/adsgd.py: its `amplifier` is delta, its `damping` is 2 / gamma; their CIFAR-100 runs use
// amplifier 0.1 and damping 1, with lr 0.2, theta 1 and eps 1e-8: the defaults here).
//
// One difference, by design of slowmo's step(x, g): the authors' client evaluates the
// previous point on the current mini-batch (a second backward pass), so g_k - g_{k-1} has
// one sample; here g_{k-1} is the previous step's own gradient. On a full-batch gradient
// both are the same; on mini-batches this estimate is noisier and so more conservative.
// |x_k - x_{k-1}| is eta_{k-1} |g_{k-1}|, the optimizer's own step, so no copy of x is kept.
//
// In federated use the authors build a fresh optimizer per round: OnSync::reset.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "slowmo/core/concepts.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/non_finite.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/optim/elementwise.hpp"  // OptionCheck

namespace slowmo {

/// Options of DeltaSgd; defaults as the authors' runs (see the top of this file).
struct DeltaSgdOptions {
  double lr = 0.2;       ///< eta_{-1}: the step size the state starts from (> 0)
  double gamma = 2.0;    ///< the smoothness bound's factor (> 0); the authors' damping is 2 / gamma
  double delta = 0.1;    ///< how fast the step size may grow (>= 0); the authors' amplifier
  double theta0 = 1.0;   ///< theta_{-1} (>= 0)
  double eps = 1e-8;     ///< added to the smoothness branch's step size (>= 0)
  NonFinite non_finite = NonFinite::raise;
};

namespace rules {

/// diff = g - prev (in place in prev): what |g_k - g_{k-1}| is the norm of.
template <class T>
struct GradientDifference {
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& prev, const V& g) const {
    prev = g - prev;
  }
};

/// p -= eta g; prev = g.
template <class T>
struct DeltaSgdStep {
  T eta;
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, V& prev) const {
    p = p - V(eta) * g;
    prev = g;
  }
};

}  // namespace rules

/// Delta-SGD on scalars T in memory space Space (see the top of this file). State: the
/// previous gradient (a buffer), |x_k - x_{k-1}|, eta and theta (scalars, all accumulators:
/// a reset zeroes them, and eta = 0 means "no step yet": start from lr and theta0) and the
/// steps taken.
template <Real T, MemorySpace Space = Host>
class DeltaSgd {
 public:
  using scalar_type = T;
  using options_type = DeltaSgdOptions;
  using space_type = Space;
  using vector_type = typename Space::template vector<T>;
  using ref_type = typename Space::template ref<T>;
  using const_ref_type = typename Space::template const_ref<T>;
  static constexpr const char* name = "DeltaSgd";
  static_assert(HasReduction<Space>,
                "slowmo::DeltaSgd: the memory space has no `reduce(n, op, p)`, which the norms need (core/space.hpp)");

  explicit DeltaSgd(detail::DefaultOptions = {}) : DeltaSgd(DeltaSgdOptions{}) {}
  explicit DeltaSgd(DeltaSgdOptions options) : options_(validated(options)) {}

  void step(ref_type x, const_ref_type g) {
    const Eigen::Index n = x.size();
    detail::check_step_sizes(name, n, g.size(), prev_grad_.size() > 0 ? prev_grad_.size() : -1);
    if (detail::reject_gradient_in<Space>(options_.non_finite, name, g.data(), n, steps_ + 1)) {
      ++steps_;  // a skipped step leaves x and the estimate as they were
      return;
    }
    const bool fresh = eta_ == T(0);  // (every step leaves eta > 0)
    const double eta_prev = fresh ? options_.lr : double(eta_);
    const double theta_prev = fresh ? options_.theta0 : double(theta_);
    const double grow = std::sqrt(1.0 + options_.delta * theta_prev) * eta_prev;
    double eta = grow;
    if (prev_grad_.size() != n) prev_grad_.setZero(n);  // the state's only allocation
    if (!fresh && step_norm_ > T(0)) {
      Space::for_each(n, rules::GradientDifference<T>{}, prev_grad_.data(), g.data());
      const double diff = std::sqrt(double(Space::reduce(n, reductions::SumOfSquares<T>{}, prev_grad_.data())));
      if (diff > 0) eta = std::min(grow, options_.gamma * double(step_norm_) / (2.0 * diff)) + options_.eps;
    }
    const double g_norm = std::sqrt(double(Space::reduce(n, reductions::SumOfSquares<T>{}, g.data())));
    Space::for_each(n, rules::DeltaSgdStep<T>{T(eta)}, x.data(), g.data(), prev_grad_.data());
    theta_ = T(eta / eta_prev);
    eta_ = T(eta);
    step_norm_ = T(eta * g_norm);
    ++steps_;
  }

  /// The step size of the last step (before any step: lr, the one the state starts from).
  T last_lr() const { return eta_ == T(0) ? T(options_.lr) : eta_; }
  T theta() const { return eta_ == T(0) ? T(options_.theta0) : theta_; }
  std::int64_t steps() const { return steps_; }
  const DeltaSgdOptions& options() const { return options_; }

  /// x was overwritten from outside (an average, an outer step): the last step no longer
  /// leads to x, so the next step takes the growth term only; eta and theta carry on.
  template <class X>
  void rebase(const X&) {
    step_norm_ = T(0);
  }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    visit(*this, v, scope);
  }

  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"optimizer", scope}, name);
  }

 private:
  template <class Self, class Vis>
  static void visit(Self& self, Vis& v, const StateScope* scope) {
    v(StateKey{"prev_grad", scope}, self.prev_grad_, StateKind::accumulator);
    v(StateKey{"step_norm", scope}, self.step_norm_, StateKind::accumulator);
    v(StateKey{"eta", scope}, self.eta_, StateKind::accumulator);
    v(StateKey{"theta", scope}, self.theta_, StateKind::accumulator);
    v(StateKey{"steps", scope}, self.steps_, StateKind::progress);
  }

  static DeltaSgdOptions validated(const DeltaSgdOptions& o) {
    const OptionCheck check{name};
    check(detail::finite(o.lr) && o.lr > 0, "lr", o.lr, "must be finite and > 0 (the initial step size)");
    check(detail::finite(o.gamma) && o.gamma > 0, "gamma", o.gamma, "must be finite and > 0");
    check.non_negative("delta", o.delta);
    check.non_negative("theta0", o.theta0);
    check.non_negative("eps", o.eps);
    return o;
  }

  DeltaSgdOptions options_;
  vector_type prev_grad_;
  T step_norm_ = T(0);
  T eta_ = T(0);
  T theta_ = T(0);
  std::int64_t steps_ = 0;
};

}  // namespace slowmo
