// slowmo/optim/sgd.hpp — stochastic gradient descent with heavy-ball or Nesterov momentum,
// exactly torch.optim.SGD.
#pragma once

#include <array>
#include <cstdint>

#include "slowmo/optim/elementwise.hpp"

namespace slowmo {

/// Options of Sgd; names and defaults as torch.optim.SGD.
struct SgdOptions {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  bool maximize = false;
  NonFinite non_finite = NonFinite::raise;  ///< NaN/Inf in the gradient: raise, skip or propagate
};

namespace method {

/// torch.optim.SGD on the element-wise skeleton (optim/elementwise.hpp).
struct Sgd {
  using options_type = SgdOptions;
  static constexpr const char* name = "Sgd";
  // The buffer and its counter exist only with momentum.
  static constexpr std::array buffers = {BufferSpec<SgdOptions>{
      .name = "momentum_buffer", .when = [](const SgdOptions& o) { return o.momentum != 0.0; }}};
  static constexpr CounterSpec<SgdOptions> counter = {
      .name = "momentum_steps", .when = [](const SgdOptions& o) { return o.momentum != 0.0; }};

  static void validate(const SgdOptions& o, OptionCheck check) {
    check.non_negative("momentum", o.momentum);
    check.in_closed_unit_interval("dampening", o.dampening);
    check.non_negative("weight_decay", o.weight_decay);
    if (o.nesterov) {
      check(o.momentum > 0, "momentum", o.momentum, "Nesterov momentum (nesterov = true) requires momentum > 0");
      check(o.dampening == 0, "dampening", o.dampening, "Nesterov momentum (nesterov = true) requires dampening = 0");
    }
  }

  /// buf = d on the first step (t = 1), as PyTorch's fresh buffer; then the dampened form.
  template <class T>
  static rules::Sgd<T> rule(const SgdOptions& o, double lr, std::int64_t t) {
    const bool first = t <= 1;
    return {.lr = T(lr),
            .sign = T(o.maximize ? -1 : 1),
            .weight_decay = T(o.weight_decay),
            .momentum = T(o.momentum),
            .keep = T(first ? 0.0 : o.momentum),
            .damp = T(first ? 1.0 : 1.0 - o.dampening),
            .nesterov = o.nesterov};
  }

  /// Whether there is momentum at all (it decides the state), and Nesterov's form.
  template <class F>
  static void structure(const SgdOptions& o, F&& f) {
    f("momentum_enabled", o.momentum != 0.0);
    f("nesterov", o.nesterov);
  }
};

}  // namespace method

/// SGD (heavy ball, or Nesterov with `nesterov = true`). Per step, with d the gradient:
///   d = (maximize ? -d : d) + weight_decay * p
///   buf = d on the first step, then momentum * buf + (1 - dampening) * d
///   d = nesterov ? d + momentum * buf : buf          (when momentum != 0)
///   p = p - lr_t * d,   lr_t = lr * schedule(t)
/// The momentum buffer is allocated on the first step; later steps allocate nothing.
/// `Space` says where parameters and state live (core/space.hpp): Host by default,
/// slowmo::cuda::Device for the GPU (alias slowmo::cuda::Sgd<T>).
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
class Sgd : public Elementwise<method::Sgd, T, S, Space> {
 public:
  using Elementwise<method::Sgd, T, S, Space>::Elementwise;
  /// Empty until the first step with momentum.
  const auto& momentum_buffer() const { return this->template buffer<0>(); }
};

/// Options of Nesterov: those of Sgd without dampening (Nesterov requires none) and with
/// a default momentum of 0.9.
struct NesterovOptions {
  double lr = 1e-3;
  double momentum = 0.9;
  double weight_decay = 0.0;
  bool maximize = false;
  NonFinite non_finite = NonFinite::raise;
};

/// SGD with Nesterov momentum: Sgd with nesterov = true, under the name users look for.
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
class Nesterov : public Sgd<T, S, Space> {
 public:
  using options_type = NesterovOptions;

  /// Default options, also spelled `Nesterov<T>({})` (see detail::DefaultOptions).
  explicit Nesterov(detail::DefaultOptions = {}) : Nesterov(NesterovOptions{}, S{}) {}
  explicit Nesterov(NesterovOptions o, S schedule = {})
      : Sgd<T, S, Space>(SgdOptions{.lr = o.lr,
                             .momentum = o.momentum,
                             .dampening = 0.0,
                             .weight_decay = o.weight_decay,
                             .nesterov = true,
                             .maximize = o.maximize,
                             .non_finite = o.non_finite},
                  std::move(schedule)) {}

  /// The options as given (derived from the Sgd options they set).
  NesterovOptions options() const {
    const SgdOptions& o = Sgd<T, S, Space>::options();
    return {.lr = o.lr, .momentum = o.momentum, .weight_decay = o.weight_decay, .maximize = o.maximize,
            .non_finite = o.non_finite};
  }
};

}  // namespace slowmo
