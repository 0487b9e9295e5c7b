// slowmo/optim/qhadam.hpp — QHAdam, quasi-hyperbolic Adam (Ma & Yarats, ICLR 2019).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "slowmo/optim/elementwise.hpp"

namespace slowmo {

/// Options of QhAdam; nus and betas default to the paper's recommendation (section 7.1).
struct QhAdamOptions {
  double lr = 1e-3;
  std::array<double, 2> betas = {0.995, 0.999};
  std::array<double, 2> nus = {0.7, 1.0};  ///< immediate discounts of the first and second moments
  double eps = 1e-8;
  double weight_decay = 0.0;  ///< L2, added to the gradient
  NonFinite non_finite = NonFinite::raise;
};

namespace method {

struct QhAdam {
  using options_type = QhAdamOptions;
  static constexpr const char* name = "QhAdam";
  static constexpr std::array buffers = {BufferSpec<QhAdamOptions>{.name = "exp_avg"},
                                         BufferSpec<QhAdamOptions>{.name = "exp_avg_sq"}};
  static constexpr CounterSpec<QhAdamOptions> counter = {.name = "qhadam_steps"};

  static void validate(const QhAdamOptions& o, OptionCheck check) {
    check.in_unit_interval("betas[0]", o.betas[0]);
    check.in_unit_interval("betas[1]", o.betas[1]);
    check.in_closed_unit_interval("nus[0]", o.nus[0]);
    check.in_closed_unit_interval("nus[1]", o.nus[1]);
    check.non_negative("eps", o.eps);
    check.non_negative("weight_decay", o.weight_decay);
  }

  template <class T>
  static rules::QhAdam<T> rule(const QhAdamOptions& o, double lr, std::int64_t t) {
    const auto [beta1, beta2] = o.betas;
    const auto [nu1, nu2] = o.nus;
    return {.lr = T(lr),
            .weight_decay = T(o.weight_decay),
            .beta1 = T(beta1),
            .one_minus_beta1 = T(1.0 - beta1),
            .beta2 = T(beta2),
            .one_minus_beta2 = T(1.0 - beta2),
            .one_minus_nu1 = T(1.0 - nu1),
            .m_scale = T(nu1 / (1.0 - std::pow(beta1, double(t)))),
            .one_minus_nu2 = T(1.0 - nu2),
            .v_scale = T(nu2 / (1.0 - std::pow(beta2, double(t)))),
            .eps = T(o.eps)};
  }
};

}  // namespace method

/// QHAdam (Algorithm 1 of the paper). Per step t (1-based), with d the gradient plus
/// weight_decay * p:  m = beta1 m + (1 - beta1) d;  v = beta2 v + (1 - beta2) d^2;
///   p -= lr_t ((1 - nu1) d + nu1 m / (1 - beta1^t)) / (sqrt((1 - nu2) d^2 + nu2 v / (1 - beta2^t)) + eps)
/// nus = {1, 1} is Adam.
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
class QhAdam : public Elementwise<method::QhAdam, T, S, Space> {
 public:
  using Elementwise<method::QhAdam, T, S, Space>::Elementwise;
  const auto& exp_avg() const { return this->template buffer<0>(); }
  const auto& exp_avg_sq() const { return this->template buffer<1>(); }
};

}  // namespace slowmo
