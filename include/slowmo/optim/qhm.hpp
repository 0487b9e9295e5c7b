// slowmo/optim/qhm.hpp — quasi-hyperbolic momentum (Ma & Yarats, ICLR 2019).
#pragma once

#include <array>
#include <cstdint>

#include "slowmo/optim/elementwise.hpp"

namespace slowmo {

/// Options of Qhm; nu and beta default to the paper's recommendation (section 7.1).
struct QhmOptions {
  double lr = 1e-3;
  double nu = 0.7;      ///< immediate discount: weight of the momentum buffer in the step
  double beta = 0.999;  ///< momentum: decay of the buffer
  double weight_decay = 0.0;  ///< L2, added to the gradient
  NonFinite non_finite = NonFinite::raise;
};

namespace method {

struct Qhm {
  using options_type = QhmOptions;
  static constexpr const char* name = "Qhm";
  static constexpr std::array buffers = {BufferSpec<QhmOptions>{.name = "momentum_buffer"}};

  static void validate(const QhmOptions& o, OptionCheck check) {
    check.in_closed_unit_interval("nu", o.nu);
    check.in_unit_interval("beta", o.beta);
    check.non_negative("weight_decay", o.weight_decay);
  }

  template <class T>
  static rules::Qhm<T> rule(const QhmOptions& o, double lr, std::int64_t) {
    return {.lr = T(lr),
            .weight_decay = T(o.weight_decay),
            .beta = T(o.beta),
            .one_minus_beta = T(1.0 - o.beta),
            .nu = T(o.nu),
            .one_minus_nu = T(1.0 - o.nu)};
  }
};

}  // namespace method

/// QHM (eq. 2 of the paper), with d the gradient plus weight_decay * p and a zero buffer:
///   buf = beta buf + (1 - beta) d;   p -= lr_t ((1 - nu) d + nu buf)
/// nu = 0 is plain SGD; nu = 1 is momentum with dampening (an exponential average), which is
/// torch's heavy ball (Sgd, momentum beta) at lr (1 - beta); nu = beta is Nesterov's
/// momentum, torch's form (Sgd, nesterov, momentum beta) at lr (1 - beta).
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
class Qhm : public Elementwise<method::Qhm, T, S, Space> {
 public:
  using Elementwise<method::Qhm, T, S, Space>::Elementwise;
  const auto& momentum_buffer() const { return this->template buffer<0>(); }
};

}  // namespace slowmo
