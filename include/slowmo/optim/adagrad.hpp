// slowmo/optim/adagrad.hpp — Adagrad (Duchi, Hazan, Singer 2011), exactly torch.optim.Adagrad.
#pragma once

#include <array>
#include <cstdint>

#include "slowmo/optim/elementwise.hpp"

namespace slowmo {

/// Options of Adagrad; names and defaults as torch.optim.Adagrad.
struct AdagradOptions {
  double lr = 1e-2;
  double lr_decay = 0.0;  ///< step t uses lr / (1 + (t - 1) * lr_decay)
  double weight_decay = 0.0;
  double initial_accumulator_value = 0.0;
  double eps = 1e-10;
  bool maximize = false;
  NonFinite non_finite = NonFinite::raise;
};

namespace method {

struct Adagrad {
  using options_type = AdagradOptions;
  static constexpr const char* name = "Adagrad";
  static constexpr std::array buffers = {BufferSpec<AdagradOptions>{
      .name = "sum", .init = [](const AdagradOptions& o) { return o.initial_accumulator_value; }}};
  /// Drives lr_decay; after a reset it also refills `sum` with initial_accumulator_value.
  static constexpr CounterSpec<AdagradOptions> counter = {.name = "adagrad_steps"};

  static void validate(const AdagradOptions& o, OptionCheck check) {
    check.non_negative("lr_decay", o.lr_decay);
    check.non_negative("weight_decay", o.weight_decay);
    check.non_negative("initial_accumulator_value", o.initial_accumulator_value);
    check.non_negative("eps", o.eps);
  }

  template <class T>
  static rules::Adagrad<T> rule(const AdagradOptions& o, double lr, std::int64_t t) {
    return {.clr = T(lr / (1.0 + double(t - 1) * o.lr_decay)),
            .sign = T(o.maximize ? -1 : 1),
            .weight_decay = T(o.weight_decay),
            .eps = T(o.eps)};
  }
};

}  // namespace method

/// Adagrad. Per step t (1-based), with d the gradient (negated with maximize) plus
/// weight_decay * p:  sum += d^2;  p -= lr_t / (1 + (t - 1) lr_decay) * d / (sqrt(sum) + eps),
/// sum starting at initial_accumulator_value.
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
class Adagrad : public Elementwise<method::Adagrad, T, S, Space> {
 public:
  using Elementwise<method::Adagrad, T, S, Space>::Elementwise;
  const auto& sum() const { return this->template buffer<0>(); }
};

}  // namespace slowmo
