// slowmo/optim/adamax.hpp — Adamax, Adam under the infinity norm (Kingma & Ba 2015,
// Algorithm 2), exactly torch.optim.Adamax.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "slowmo/optim/elementwise.hpp"

namespace slowmo {

/// Options of Adamax; names and defaults as torch.optim.Adamax.
struct AdamaxOptions {
  double lr = 2e-3;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool maximize = false;
  NonFinite non_finite = NonFinite::raise;
};

namespace method {

struct Adamax {
  using options_type = AdamaxOptions;
  static constexpr const char* name = "Adamax";
  static constexpr std::array buffers = {BufferSpec<AdamaxOptions>{.name = "exp_avg"},
                                         BufferSpec<AdamaxOptions>{.name = "exp_inf"}};
  static constexpr CounterSpec<AdamaxOptions> counter = {.name = "adamax_steps"};

  static void validate(const AdamaxOptions& o, OptionCheck check) {
    check.in_unit_interval("betas[0]", o.betas[0]);
    check.in_unit_interval("betas[1]", o.betas[1]);
    check.non_negative("eps", o.eps);
    check.non_negative("weight_decay", o.weight_decay);
  }

  template <class T>
  static rules::Adamax<T> rule(const AdamaxOptions& o, double lr, std::int64_t t) {
    const auto [beta1, beta2] = o.betas;
    return {.clr = T(lr / (1.0 - std::pow(beta1, double(t)))),
            .sign = T(o.maximize ? -1 : 1),
            .weight_decay = T(o.weight_decay),
            .beta1 = T(beta1),
            .one_minus_beta1 = T(1.0 - beta1),
            .beta2 = T(beta2),
            .eps = T(o.eps)};
  }
};

}  // namespace method

/// Adamax. Per step t (1-based), with d the gradient (negated with maximize) plus
/// weight_decay * p:  m = beta1 m + (1 - beta1) d;  u = max(beta2 u, |d| + eps);
/// p -= lr_t / (1 - beta1^t) * m / u.
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
class Adamax : public Elementwise<method::Adamax, T, S, Space> {
 public:
  using Elementwise<method::Adamax, T, S, Space>::Elementwise;
  const auto& exp_avg() const { return this->template buffer<0>(); }
  const auto& exp_inf() const { return this->template buffer<1>(); }
};

}  // namespace slowmo
