// slowmo/optim/rmsprop.hpp — RMSprop (Hinton's lecture 6e; Graves 2013 for the centered
// form), exactly torch.optim.RMSprop.
#pragma once

#include <array>
#include <cstdint>

#include "slowmo/optim/elementwise.hpp"

namespace slowmo {

/// Options of RMSprop; names and defaults as torch.optim.RMSprop.
struct RMSpropOptions {
  double lr = 1e-2;
  double alpha = 0.99;  ///< smoothing constant of the averages
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum = 0.0;
  bool centered = false;  ///< divide by the estimated standard deviation, not the RMS
  bool maximize = false;
  NonFinite non_finite = NonFinite::raise;
};

namespace method {

struct RMSprop {
  using options_type = RMSpropOptions;
  static constexpr const char* name = "RMSprop";
  static constexpr std::array buffers = {
      BufferSpec<RMSpropOptions>{.name = "square_avg"},
      BufferSpec<RMSpropOptions>{.name = "momentum_buffer",
                                 .when = [](const RMSpropOptions& o) { return o.momentum > 0; }},
      BufferSpec<RMSpropOptions>{.name = "grad_avg", .when = [](const RMSpropOptions& o) { return o.centered; }}};

  static void validate(const RMSpropOptions& o, OptionCheck check) {
    check.in_closed_unit_interval("alpha", o.alpha);
    check.non_negative("eps", o.eps);
    check.non_negative("weight_decay", o.weight_decay);
    check.non_negative("momentum", o.momentum);
  }

  template <class T>
  static rules::RMSprop<T> rule(const RMSpropOptions& o, double lr, std::int64_t) {
    return {.lr = T(lr),
            .sign = T(o.maximize ? -1 : 1),
            .weight_decay = T(o.weight_decay),
            .alpha = T(o.alpha),
            .one_minus_alpha = T(1.0 - o.alpha),
            .eps = T(o.eps),
            .momentum = T(o.momentum)};
  }

  /// Momentum and centering decide the state.
  template <class F>
  static void structure(const RMSpropOptions& o, F&& f) {
    f("momentum_enabled", o.momentum > 0);
    f("centered", o.centered);
  }
};

}  // namespace method

/// RMSprop. Per step, with d the gradient (negated with maximize) plus weight_decay * p:
///   square_avg = alpha * square_avg + (1 - alpha) * d^2
///   centered: grad_avg = alpha * grad_avg + (1 - alpha) * d, avg = sqrt(square_avg - grad_avg^2) + eps
///   otherwise avg = sqrt(square_avg) + eps
///   momentum > 0: buf = momentum * buf + d / avg, p -= lr_t * buf;  otherwise p -= lr_t * d / avg
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
class RMSprop : public Elementwise<method::RMSprop, T, S, Space> {
 public:
  using Elementwise<method::RMSprop, T, S, Space>::Elementwise;
  const auto& square_avg() const { return this->template buffer<0>(); }
  /// With momentum > 0 only (empty otherwise).
  const auto& momentum_buffer() const { return this->template buffer<1>(); }
  /// With centered only (empty otherwise).
  const auto& grad_avg() const { return this->template buffer<2>(); }
};

}  // namespace slowmo
