// slowmo/outer/adaptive.hpp — the adaptive server optimizers of Reddi et al., "Adaptive
// Federated Optimization" (ICLR 2021), Algorithm 2: FedAdam, FedYogi and FedAdagrad, as outer
// rules on the pseudo-gradient, without bias correction, as Flower implements them.
#pragma once

#include <array>
#include <string_view>
#include <tuple>

#include "slowmo/core/error.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/outer/rule.hpp"
#include "slowmo/outer/rules.hpp"

namespace slowmo::outer {

/// Defaults: betas (0.9, 0.99), fixed in the paper's experiments; eps (the paper's tau,
/// "the degree of adaptivity") 1e-3; the server lr is the one to tune (the paper grid-searches
/// it): 0.1 for FedAdam and FedAdagrad, 0.01 for FedYogi, Flower's defaults.
struct FedAdamOptions {
  double lr = 0.1;
  std::array<double, 2> betas = {0.9, 0.99};
  double eps = 1e-3;
};
struct FedYogiOptions {
  double lr = 0.01;
  std::array<double, 2> betas = {0.9, 0.99};
  double eps = 1e-3;
};
/// FedAdagrad: v = v + d^2; m = momentum m + (1 - momentum) d, with momentum 0 (m = d) as in
/// Flower, the paper's beta1 otherwise.
struct FedAdagradOptions {
  double lr = 0.1;
  double momentum = 0.0;
  double eps = 1e-3;
};

}  // namespace slowmo::outer

namespace slowmo::detail {
using outer::FedAdagradOptions;
using outer::FedAdamOptions;
using outer::FedYogiOptions;

template <class Options>
struct AdaptiveTraits;
template <>
struct AdaptiveTraits<FedAdamOptions> {
  static constexpr rules::SecondMoment kind = rules::SecondMoment::adam;
  static constexpr std::string_view name = "FedAdam";
  static std::array<double, 2> betas(const FedAdamOptions& o) { return o.betas; }
};
template <>
struct AdaptiveTraits<FedYogiOptions> {
  static constexpr rules::SecondMoment kind = rules::SecondMoment::yogi;
  static constexpr std::string_view name = "FedYogi";
  static std::array<double, 2> betas(const FedYogiOptions& o) { return o.betas; }
};
template <>
struct AdaptiveTraits<FedAdagradOptions> {
  static constexpr rules::SecondMoment kind = rules::SecondMoment::adagrad;
  static constexpr std::string_view name = "FedAdagrad";
  static std::array<double, 2> betas(const FedAdagradOptions& o) { return {o.momentum, 0.0}; }
};

/// One class for the three: the options type picks the second moment (rules::AdaptiveOuter).
template <class Options, Real T, MemorySpace Space>
class AdaptiveRule {
  using traits = AdaptiveTraits<Options>;

 public:
  using scalar_type = T;
  using space_type = Space;
  using options_type = Options;
  using vector_type = typename Space::template vector<T>;

  explicit AdaptiveRule(Options options = {}) : options_(validated(options)) {}

  void init(Eigen::Index n) {
    if (m_.size() != n) m_.setZero(n);
    if (v_.size() != n) v_.setZero(n);
  }
  auto buffers() { return std::tie(m_, v_); }
  rules::AdaptiveOuter<T> kernel(const OuterContext& ctx) const {
    const auto [beta1, beta2] = traits::betas(options_);
    return {.kind = traits::kind,
            .beta1 = T(beta1),
            .one_minus_beta1 = T(1.0 - beta1),
            .beta2 = T(beta2),
            .one_minus_beta2 = T(1.0 - beta2),
            .lr = T(options_.lr * ctx.lr_scale),
            .eps = T(options_.eps)};
  }

  const Options& options() const { return options_; }
  const vector_type& first_moment() const { return m_; }
  const vector_type& second_moment() const { return v_; }

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
    f(StateKey{"rule", scope}, traits::name);
  }

 private:
  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    v(StateKey{"exp_avg", scope}, self.m_, StateKind::accumulator);
    v(StateKey{"exp_avg_sq", scope}, self.v_, StateKind::accumulator);
  }

  static Options validated(const Options& o) {
    const std::string owner = concat("outer::", traits::name);
    require_option(finite(o.lr) && o.lr > 0, owner, "lr", o.lr, "must be finite and > 0");
    if constexpr (requires { o.betas; }) {
      require_option(finite(o.betas[0]) && o.betas[0] >= 0 && o.betas[0] < 1, owner, "betas[0]", o.betas[0],
                     "must be in [0, 1)");
      require_option(finite(o.betas[1]) && o.betas[1] >= 0 && o.betas[1] < 1, owner, "betas[1]", o.betas[1],
                     "must be in [0, 1)");
    } else {
      require_option(finite(o.momentum) && o.momentum >= 0 && o.momentum < 1, owner, "momentum", o.momentum,
                     "must be in [0, 1)");
    }
    require_option(finite(o.eps) && o.eps > 0, owner, "eps", o.eps, "must be finite and > 0 (the paper's tau)");
    return o;
  }

  Options options_;
  vector_type m_;
  vector_type v_;
};

}  // namespace slowmo::detail

namespace slowmo::outer {

template <Real T, MemorySpace Space = Host>
using FedAdam = detail::AdaptiveRule<FedAdamOptions, T, Space>;
template <Real T, MemorySpace Space = Host>
using FedYogi = detail::AdaptiveRule<FedYogiOptions, T, Space>;
template <Real T, MemorySpace Space = Host>
using FedAdagrad = detail::AdaptiveRule<FedAdagradOptions, T, Space>;

}  // namespace slowmo::outer
