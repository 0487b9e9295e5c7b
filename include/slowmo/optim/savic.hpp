// slowmo/optim/savic.hpp — SAVIC's scaled local steps (Chezhegov et al. 2024, "Local
// Methods with Adaptivity via Scaling"): Local SGD in which every worker preconditions its
// steps with one diagonal scaling D-hat, shared by all workers and updated only at
// communication rounds, so that between rounds every worker scales identically.
//
//   slowmo::LocalSgd opt(slowmo::Savic<float>({.lr = 0.01}), comm, {.H = 8});                        // Adam-type
//   slowmo::LocalSgd opt(slowmo::Savic<float, savic::RmsProp>({.lr = 0.01}), comm, {.H = 8});
//   slowmo::LocalSgd opt(slowmo::Savic<double, savic::Oasis<Hvp>>({.lr = 0.1}, {.hvp = hvp}), comm, {.H = 8});
//
// It is a composition: Savic is the base that steps x -= lr g / D-hat with the scaling it
// holds, and the synchronisation that updates the scaling is LocalSgd's, which calls
// refresh_scaling(x, g, comm) with the first gradient of every round (the gradient at the
// averaged point; the first round's at the common start). There, with p the number of
// updates so far (0 first):
//   h  = mean over workers of this worker's statistic at x:
//          Adam, RmsProp: g * g;   Oasis: z * (hessian_i(x) z), z a Rademacher vector shared by
//          the workers (drawn from (seed, p)), so that the mean is z * (hessian(x) z)
//   D  = beta_p D + (1 - beta_p) h, with beta_0 = 0 (D starts at the first statistic) and
//          Adam: beta_p = beta (1 - beta^p) / (1 - beta^(p+1))  (the bias-corrected average)
//          RmsProp, Oasis: beta_p = beta
//   D-hat = max(alpha, sqrt(D)) (Adam, RmsProp: D averages squares), max(alpha, |D|) (Oasis)
// This is the preconditioner family the paper analyses (as in Sadiev et al., "Stochastic
// gradient methods with preconditioned updates"): an exponential average of diagonal
// statistics with the safeguard alpha I <= D-hat. The constants' defaults are slowmo's own
// (Adam's beta2 and RMSprop's alpha from torch, OASIS's from its paper), not checked
// against SAVIC's experiments.
//
// The statistic costs one all-reduce of n + 1 numbers per round, on top of the average of
// the parameters (the gradient at the averaged point is known only after it). Under
// NonFinite::skip a worker whose gradient has a NaN contributes nothing (the last number
// counts the contributors); under raise it reports its own index before any collective.
// Savic's state is the same on every worker, so OnSync::average sends nothing for it.
// Savic outside LocalSgd is refused: at compile time by every other distributed combinator
// (they would never update the scaling), and at the first step when used alone.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>
#include <utility>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/for_each.hpp"
#include "slowmo/core/math.hpp"
#include "slowmo/core/non_finite.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/optim/rules.hpp"

namespace slowmo {

namespace savic {

/// Adam-type scaling: the bias-corrected average of squared gradients, square-rooted.
struct Adam {
  static constexpr const char* name = "Adam";
  static constexpr bool root = true;
  double beta = 0.999;   ///< torch Adam's beta2
  double alpha = 1e-8;   ///< D-hat >= alpha (Adam's eps, as a floor)
  double weight(std::int64_t p) const {
    return p == 0 ? 0.0 : beta * (1 - std::pow(beta, double(p))) / (1 - std::pow(beta, double(p + 1)));
  }
};

/// RMSProp-type scaling: the plain average of squared gradients, square-rooted.
struct RmsProp {
  static constexpr const char* name = "RmsProp";
  static constexpr bool root = true;
  double beta = 0.99;    ///< torch RMSprop's alpha
  double alpha = 1e-8;
  double weight(std::int64_t p) const { return p == 0 ? 0.0 : beta; }
};

/// OASIS-type scaling (Jahani et al. 2022): the average of Hutchinson's diagonal estimates
/// z * (H z), z Rademacher. hvp(x, z, out), all three Vector<T> on the host, writes this
/// worker's Hessian at x times z into out: closed forms for problems::Quadratic and
/// LogisticRegression (hessian_vector), savic::finite_difference around a gradient otherwise.
template <class Hvp>
struct Oasis {
  static constexpr const char* name = "Oasis";
  static constexpr bool root = false;
  Hvp hvp;
  double beta = 0.999;   ///< OASIS's beta2
  double alpha = 1e-5;   ///< D-hat >= alpha (OASIS's truncation)
  std::uint64_t seed = 0;
  double weight(std::int64_t p) const { return p == 0 ? 0.0 : beta; }
};
template <class Hvp>
Oasis(Hvp) -> Oasis<Hvp>;

/// A Hessian-vector product by a forward difference of gradients, (grad(x + eps z) - grad(x)) / eps,
/// where grad(x, out) writes this worker's gradient at x (for the MLP: on a fixed batch, so
/// that both calls see the same samples). Keeps its two scratch vectors: after the first call
/// it allocates nothing.
template <class Grad>
class FiniteDifference {
 public:
  explicit FiniteDifference(Grad grad, double eps = 1e-4) : grad_(std::move(grad)), eps_(eps) {}

  template <class T>
  void operator()(const Vector<T>& x, const Vector<T>& z, Vector<T>& out) {
    auto& [shifted, at_x] = scratch<T>();
    shifted = x + T(eps_) * z;
    at_x.resize(x.size());
    grad_(shifted, out);
    grad_(x, at_x);
    out = (out - at_x) / T(eps_);
  }

 private:
  template <class T>
  std::pair<Vector<T>, Vector<T>>& scratch() {
    if constexpr (std::is_same_v<T, float>)
      return f_;
    else
      return d_;
  }
  Grad grad_;
  double eps_;
  std::pair<Vector<float>, Vector<float>> f_;
  std::pair<Vector<double>, Vector<double>> d_;
};

template <class Grad>
FiniteDifference<Grad> finite_difference(Grad grad, double eps = 1e-4) {
  return FiniteDifference<Grad>(std::move(grad), eps);
}

}  // namespace savic

struct SavicOptions {
  double lr = 0.01;  ///< gamma: x -= lr g / D-hat
  NonFinite non_finite = NonFinite::raise;
};

namespace rules {

/// p -= lr g / max(alpha, sqrt(d))  (Root) or / max(alpha, |d|).
template <class T, bool Root>
struct ScaledStep {
  T lr, alpha;
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, const V& d) const {
    using math::max;
    using math::sqrt;
    if constexpr (Root)
      p = p - V(lr) * g / max(sqrt(d), V(alpha));
    else
      p = p - V(lr) * g / max(max(d, V(-d)), V(alpha));
  }
};

/// h = g * g.
template <class T>
struct Square {
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& h, const V& g) const {
    h = g * g;
  }
};

/// d = w d + (1 - w) h / count   (h holds the sum over the contributing workers).
template <class T>
struct ScalingAverage {
  T w, one_minus_w_over_count;
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& d, const V& h) const {
    d = V(w) * d + V(one_minus_w_over_count) * h;
  }
};

}  // namespace rules

/// The base optimizer of SAVIC (see the top of this file) on scalars T, with Scaling one of
/// savic::Adam, savic::RmsProp, savic::Oasis<Hvp>, in memory space Space (Oasis: the host).
template <Real T, class Scaling = savic::Adam, MemorySpace Space = Host>
class Savic {
  static constexpr bool oasis = !Scaling::root;
  static_assert(!oasis || std::is_same_v<Space, Host>, "slowmo::Savic: the Oasis scaling runs on the host");
  static_assert(HasReduction<Space>, "slowmo::Savic: the memory space has no `reduce(n, op, p)` (core/space.hpp)");

 public:
  using scalar_type = T;
  using options_type = SavicOptions;
  using scaling_type = Scaling;
  using space_type = Space;
  using vector_type = typename Space::template vector<T>;
  using ref_type = typename Space::template ref<T>;
  using const_ref_type = typename Space::template const_ref<T>;
  static constexpr const char* name = "Savic";
  /// Tells the distributed combinators that the scaling must be refreshed every round.
  static constexpr bool needs_scaling_refresh = true;

  explicit Savic(detail::DefaultOptions = {}) : Savic(SavicOptions{}) {}
  explicit Savic(SavicOptions options, Scaling scaling = {})
      : options_(validated(options)), scaling_(validated(std::move(scaling))) {}

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes(name, x.size(), g.size(), scaling_buffer_size());
    if (updates_ == 0)
      throw usage_error(detail::concat("slowmo::Savic::step (step ", steps_ + 1,
                                       "): the scaling has not been set; Savic is a base of LocalSgd, which sets it "
                                       "at the start of every round (slowmo::LocalSgd(slowmo::Savic<T>(...), comm, ...))"));
    if (detail::reject_gradient_in<Space>(options_.non_finite, name, g.data(), g.size(), steps_ + 1)) {
      ++steps_;
      return;
    }
    Space::for_each(x.size(), rules::ScaledStep<T, Scaling::root>{T(options_.lr), T(scaling_.alpha)}, x.data(),
                    g.data(), d_.data());
    ++steps_;
  }

  /// Collective, called by LocalSgd with the first gradient g of each round, at x: the new
  /// scaling from every worker's statistic (see the top of this file). Checks g first, so
  /// that under NonFinite::raise the worker with the bad gradient names itself and nothing
  /// changes.
  template <class Comm>
  void refresh_scaling(const_ref_type x, const_ref_type g, Comm& comm) {
    const Eigen::Index n = x.size();
    detail::check_step_sizes(name, n, g.size(), scaling_buffer_size());
    const bool bad = detail::reject_gradient_in<Space>(options_.non_finite, name, g.data(), n, steps_ + 1);
    if (work_.size() != n + 1) work_.setZero(n + 1);  // the statistic, and the count of contributors
    if (d_.size() != n) d_.setZero(n);               // (allocated at the first refresh, then never)
    if (bad) {
      work_.setZero();
    } else {
      statistic(x, g, n);
      set_count(T(1));
    }
    comm.all_reduce(as_span(work_), ReduceOp::sum);
    const T count = get_count();
    if (count == T(0)) return;  // every worker skipped: the scaling stays
    const double w = scaling_.weight(updates_);
    Space::for_each(n, rules::ScalingAverage<T>{T(w), T((1 - w) / double(count))}, d_.data(), work_.data());
    ++updates_;
  }

  T last_lr() const { return T(options_.lr); }
  T next_lr() const { return T(options_.lr); }
  std::int64_t steps() const { return steps_; }
  /// Updates of the scaling so far.
  std::int64_t scaling_updates() const { return updates_; }
  /// D (before the floor and the root): empty before the first refresh.
  const vector_type& scaling() const { return d_; }
  const SavicOptions& options() const { return options_; }
  const Scaling& scaling_options() const { return scaling_; }

  /// The scaling is refreshed from all-reduced statistics only, so it is the same on every worker.
  Agreement agreement() const { return {.parameters = false, .state = true}; }

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
    f(StateKey{"scaling", scope}, Scaling::name);
  }

 private:
  template <class Self, class Vis>
  static void visit(Self& self, Vis& v, const StateScope* scope) {
    v(StateKey{"scaling", scope}, self.d_, StateKind::accumulator);
    v(StateKey{"scaling_updates", scope}, self.updates_, StateKind::counter);
    v(StateKey{"steps", scope}, self.steps_, StateKind::progress);
  }

  Eigen::Index scaling_buffer_size() const { return d_.size() > 0 ? d_.size() : -1; }

  void statistic(const_ref_type x, const_ref_type g, Eigen::Index n) {
    if constexpr (!oasis) {
      Space::for_each(n, rules::Square<T>{}, work_.data(), g.data());
    } else {
      // Rademacher z from (seed, p), the same on every worker; h = z * (H z).
      if (z_.size() != n) z_.resize(n), hz_.resize(n);
      xh_ = x;  // (host memory: Oasis runs on the host) a copy, so that hvp takes three Vector<T>
      const std::uint64_t key = mix(scaling_.seed ^ mix(std::uint64_t(updates_) + 0x9e3779b97f4a7c15ull));
      for (Eigen::Index i = 0; i < n; ++i) z_[i] = (mix(key + std::uint64_t(i)) >> 63) != 0 ? T(1) : T(-1);
      scaling_.hvp(std::as_const(xh_), std::as_const(z_), hz_);
      if (hz_.size() != n)
        throw size_mismatch(detail::concat("slowmo::Savic: the Oasis scaling's hvp wrote ", hz_.size(),
                                           " values for a parameter vector of size ", n));
      for (Eigen::Index i = 0; i < n; ++i) work_[i] = z_[i] * hz_[i];
    }
  }
  static std::uint64_t mix(std::uint64_t z) {  // SplitMix64's finaliser
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // The count rides in the last element of the workspace (written and read in Space).
  void set_count(T c) { Space::for_each(1, rules::Fill<T>{c}, work_.data() + (work_.size() - 1)); }
  T get_count() const { return Space::reduce(1, reductions::Sum<T>{}, work_.data() + (work_.size() - 1)); }

  static SavicOptions validated(const SavicOptions& o) {
    detail::require_option(detail::finite(o.lr) && o.lr >= 0, name, "lr", o.lr, "must be finite and >= 0");
    return o;
  }
  static Scaling validated(Scaling s) {
    const auto owner = detail::concat("Savic (", Scaling::name, " scaling)");
    detail::require_option(detail::finite(s.beta) && s.beta >= 0 && s.beta < 1, owner, "beta", s.beta,
                           "must be in [0, 1)");
    detail::require_option(detail::finite(s.alpha) && s.alpha > 0, owner, "alpha", s.alpha,
                           "must be finite and > 0 (the floor of the scaling)");
    return s;
  }

  SavicOptions options_;
  Scaling scaling_;
  vector_type d_;     // D
  vector_type work_;  // the statistic and the count (workspace, not state)
  Vector<T> xh_, z_, hz_;  // Oasis's point, probe and H z (host)
  std::int64_t updates_ = 0;
  std::int64_t steps_ = 0;
};
}  // namespace slowmo
