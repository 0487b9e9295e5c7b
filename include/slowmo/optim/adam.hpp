// slowmo/optim/adam.hpp — Adam (L2 weight decay) and AdamW (decoupled weight decay),
// exactly torch.optim.Adam / torch.optim.AdamW, with amsgrad and maximize.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "slowmo/optim/elementwise.hpp"

namespace slowmo {

/// Options of Adam (Decoupled = false) and AdamW (Decoupled = true); names and defaults as
/// PyTorch, where only weight_decay's default differs (0 for Adam, 1e-2 for AdamW).
template <bool Decoupled>
struct BasicAdamOptions {
  double lr = 1e-3;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = Decoupled ? 1e-2 : 0.0;
  bool amsgrad = false;
  bool maximize = false;
  NonFinite non_finite = NonFinite::raise;  ///< NaN/Inf in the gradient: raise, skip or propagate
};
using AdamOptions = BasicAdamOptions<false>;
using AdamWOptions = BasicAdamOptions<true>;

namespace method {

/// torch.optim.Adam (Decoupled = false) / AdamW (Decoupled = true) on the element-wise
/// skeleton (optim/elementwise.hpp).
template <bool Decoupled>
struct Adam {
  using options_type = BasicAdamOptions<Decoupled>;
  static constexpr const char* name = Decoupled ? "AdamW" : "Adam";
  // max_exp_avg_sq exists only with amsgrad.
  static constexpr std::array buffers = {
      BufferSpec<options_type>{.name = "exp_avg"}, BufferSpec<options_type>{.name = "exp_avg_sq"},
      BufferSpec<options_type>{.name = "max_exp_avg_sq", .when = [](const options_type& o) { return o.amsgrad; }}};
  /// The bias-correction step.
  static constexpr CounterSpec<options_type> counter = {.name = "adam_steps"};

  static void validate(const options_type& o, OptionCheck check) {
    check.in_unit_interval("betas[0]", o.betas[0]);
    check.in_unit_interval("betas[1]", o.betas[1]);
    check.non_negative("eps", o.eps);
    check.non_negative("weight_decay", o.weight_decay);
  }

  template <class T>
  static rules::Adam<T> rule(const options_type& o, double lr, std::int64_t t) {
    const auto [beta1, beta2] = o.betas;
    return {.sign = T(o.maximize ? -1 : 1),
            .l2 = T(Decoupled ? 0.0 : o.weight_decay),
            .decay = T(Decoupled ? 1.0 - lr * o.weight_decay : 1.0),
            .beta1 = T(beta1),
            .one_minus_beta1 = T(1.0 - beta1),
            .beta2 = T(beta2),
            .one_minus_beta2 = T(1.0 - beta2),
            .inv_bias_correction2_sqrt = T(1.0 / std::sqrt(1.0 - std::pow(beta2, double(t)))),
            .eps = T(o.eps),
            .step_size = T(lr / (1.0 - std::pow(beta1, double(t))))};
  }

  /// amsgrad decides the state.
  template <class F>
  static void structure(const options_type& o, F&& f) {
    f("amsgrad", o.amsgrad);
  }
};

}  // namespace method

/// Adam / AdamW. Per step, with t counting steps from 1 and d the gradient:
///   d = (maximize ? -d : d);  Adam: d += weight_decay * p;  AdamW: p *= 1 - lr_t * weight_decay
///   m = beta1 * m + (1 - beta1) * d;   v = beta2 * v + (1 - beta2) * d^2
///   amsgrad: vmax = max(vmax, v), used in place of v
///   p -= lr_t / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// One pass over p, g, m, v (and vmax): 28 bytes per fp32 parameter without amsgrad.
/// `Space`: where parameters and state live (core/space.hpp), Host by default.
template <Real T, Schedule S, bool Decoupled, MemorySpace Space = Host>
class BasicAdam : public Elementwise<method::Adam<Decoupled>, T, S, Space> {
 public:
  using Elementwise<method::Adam<Decoupled>, T, S, Space>::Elementwise;
  const auto& exp_avg() const { return this->template buffer<0>(); }
  const auto& exp_avg_sq() const { return this->template buffer<1>(); }
  /// amsgrad only (empty otherwise).
  const auto& max_exp_avg_sq() const { return this->template buffer<2>(); }
};

/// Adam with L2 weight decay added to the gradient (torch.optim.Adam).
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
using Adam = BasicAdam<T, S, false, Space>;

/// Adam with decoupled weight decay (torch.optim.AdamW, Loshchilov & Hutter 2019).
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
using AdamW = BasicAdam<T, S, true, Space>;

}  // namespace slowmo
