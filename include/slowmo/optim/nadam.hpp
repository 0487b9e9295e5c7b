// slowmo/optim/nadam.hpp — NAdam, Adam with Nesterov momentum (Dozat 2016), as torch.optim.NAdam.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "slowmo/optim/elementwise.hpp"

namespace slowmo {

/// Options of NAdam; names and defaults as torch.optim.NAdam (which has no maximize).
struct NAdamOptions {
  double lr = 2e-3;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum_decay = 4e-3;  ///< psi in mu_t = beta1 (1 - 0.5 * 0.96^(t psi))
  NonFinite non_finite = NonFinite::raise;
};

namespace method {

class NAdam {
 public:
  using options_type = NAdamOptions;
  static constexpr const char* name = "NAdam";
  static constexpr std::array buffers = {BufferSpec<NAdamOptions>{.name = "exp_avg"},
                                         BufferSpec<NAdamOptions>{.name = "exp_avg_sq"}};
  static constexpr CounterSpec<NAdamOptions> counter = {.name = "nadam_steps"};

  static void validate(const NAdamOptions& o, OptionCheck check) {
    check.in_unit_interval("betas[0]", o.betas[0]);
    check.in_unit_interval("betas[1]", o.betas[1]);
    check.non_negative("eps", o.eps);
    check.non_negative("weight_decay", o.weight_decay);
    check.non_negative("momentum_decay", o.momentum_decay);
  }

  template <class T>
  rules::NAdam<T> rule(const NAdamOptions& o, double lr, std::int64_t t) {
    const auto [beta1, beta2] = o.betas;
    const double mu = mu_at(o, t), mu_next = mu_at(o, t + 1);
    const double product = mu_product(o, t);  // prod_{s <= t} mu_s
    return {.weight_decay = T(o.weight_decay),
            .beta1 = T(beta1),
            .one_minus_beta1 = T(1.0 - beta1),
            .beta2 = T(beta2),
            .one_minus_beta2 = T(1.0 - beta2),
            .inv_bias_correction2_sqrt = T(1.0 / std::sqrt(1.0 - std::pow(beta2, double(t)))),
            .eps = T(o.eps),
            .grad_step = T(lr * (1.0 - mu) / (1.0 - product)),
            .avg_step = T(lr * mu_next / (1.0 - product * mu_next))};
  }

 private:
  static double mu_at(const NAdamOptions& o, std::int64_t t) {
    return o.betas[0] * (1.0 - 0.5 * std::pow(0.96, double(t) * o.momentum_decay));
  }
  // The product is a function of t alone, kept as a cache rather than as state (a reset or
  // a checkpoint restores only the counter): advanced factor by factor, in the order PyTorch
  // multiplies (mu_product *= mu each step), and recomputed from 1 when t goes back.
  double mu_product(const NAdamOptions& o, std::int64_t t) {
    if (t <= cached_t_) cached_t_ = 0, cached_product_ = 1.0;
    for (; cached_t_ < t; ++cached_t_) cached_product_ *= mu_at(o, cached_t_ + 1);
    return cached_product_;
  }
  std::int64_t cached_t_ = 0;
  double cached_product_ = 1.0;
};

}  // namespace method

/// NAdam. Per step t (1-based), with d the gradient plus weight_decay * p:
///   m = beta1 m + (1 - beta1) d;  v = beta2 v + (1 - beta2) d^2;  denom = sqrt(v / (1 - beta2^t)) + eps
///   p -= lr_t (1 - mu_t) / (1 - prod_{s<=t} mu_s) * d / denom
///   p -= lr_t mu_{t+1} / (1 - prod_{s<=t+1} mu_s) * m / denom
/// (torch 1.13's default single-tensor path multiplies mu_t twice into the second product;
/// its foreach path, later releases and Dozat's paper do not, and neither does this.)
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
class NAdam : public Elementwise<method::NAdam, T, S, Space> {
 public:
  using Elementwise<method::NAdam, T, S, Space>::Elementwise;
  const auto& exp_avg() const { return this->template buffer<0>(); }
  const auto& exp_avg_sq() const { return this->template buffer<1>(); }
};

}  // namespace slowmo
