// slowmo/optim/lion.hpp — Lion, evolved sign momentum (Chen et al. 2023, "Symbolic
// Discovery of Optimization Algorithms").
#pragma once

#include <array>
#include <cstdint>

#include "slowmo/optim/elementwise.hpp"

namespace slowmo {

/// Options of Lion; defaults as the paper's (Algorithm 2 and section 3).
struct LionOptions {
  double lr = 1e-4;
  std::array<double, 2> betas = {0.9, 0.99};  ///< interpolation of the update, decay of the momentum
  double weight_decay = 0.0;  ///< decoupled, lambda in the paper
  NonFinite non_finite = NonFinite::raise;
};

namespace method {

struct Lion {
  using options_type = LionOptions;
  static constexpr const char* name = "Lion";
  static constexpr std::array buffers = {BufferSpec<LionOptions>{.name = "exp_avg"}};

  static void validate(const LionOptions& o, OptionCheck check) {
    check.in_closed_unit_interval("betas[0]", o.betas[0]);
    check.in_unit_interval("betas[1]", o.betas[1]);
    check.non_negative("weight_decay", o.weight_decay);
  }

  template <class T>
  static rules::Lion<T> rule(const LionOptions& o, double lr, std::int64_t) {
    const auto [beta1, beta2] = o.betas;
    return {.lr = T(lr),
            .decay = T(1.0 - lr * o.weight_decay),
            .beta1 = T(beta1),
            .one_minus_beta1 = T(1.0 - beta1),
            .beta2 = T(beta2),
            .one_minus_beta2 = T(1.0 - beta2)};
  }
};

}  // namespace method

/// Lion (Algorithm 2 of the paper), with a zero momentum m:
///   c = beta1 m + (1 - beta1) g;  p = (1 - lr_t lambda) p - lr_t sign(c);  m = beta2 m + (1 - beta2) g
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
class Lion : public Elementwise<method::Lion, T, S, Space> {
 public:
  using Elementwise<method::Lion, T, S, Space>::Elementwise;
  const auto& exp_avg() const { return this->template buffer<0>(); }
};

}  // namespace slowmo
