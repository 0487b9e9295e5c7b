// What the CPU/GPU parity tests share: the optimizer configurations, written once for any
// memory space, the test problem, and the CPU reference trajectories, which reference.cpp
// computes with the host compiler exactly as a user's program would (Eigen's SIMD packets),
// not inside the nvcc translation unit (where Eigen does not vectorize).
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <type_traits>

#include <slowmo/slowmo.hpp>

namespace parity {

using Const = slowmo::schedule::Constant;

/// The test problem's gradient, as a rule, so that host and device compute it identically:
/// g = a * (x - c) + s, with s a per-step offset.
template <class T>
struct Gradient {
  T s;
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& g, const V& x, const V& a, const V& c) const {
    g = a * (x - c) + V(s);
  }
};

template <class T>
struct Problem {
  slowmo::Vector<T> a, c, x0;
  explicit Problem(Eigen::Index n) : a(n), c(n), x0(n) {
    for (Eigen::Index i = 0; i < n; ++i) {
      a[i] = T(0.5 + 0.05 * double((7 * i) % 11));
      c[i] = T(std::sin(double(i) + 0.5));
      x0[i] = T(std::cos(3.0 * double(i)));
    }
  }
  static Gradient<T> gradient(int t) { return {T(0.01 * std::sin(double(t)))}; }
};

enum class Config {
  sgd,
  sgd_momentum,
  sgd_maximize,
  nesterov_cosine,
  adam,
  adam_l2_maximize,
  adamw,
  adam_amsgrad,
  lookahead_sgd_reset,
  lookahead_adamw,
  lookahead_as_slowmo,
  outer_fedyogi,
  outer_fedadam_divided,
  rmsprop_centered_momentum,
  rmsprop_maximize,
  adagrad_decay_init,
  nadam,
  adamax_maximize,
  qhm,
  qhadam,
  lion_decay,
};
inline constexpr Config all_configs[] = {Config::sgd,          Config::sgd_momentum,        Config::sgd_maximize,
                                         Config::nesterov_cosine, Config::adam,           Config::adam_l2_maximize,
                                         Config::adamw,        Config::adam_amsgrad,        Config::lookahead_sgd_reset,
                                         Config::lookahead_adamw, Config::lookahead_as_slowmo,
                                         Config::outer_fedyogi,   Config::outer_fedadam_divided,
                                         Config::rmsprop_centered_momentum, Config::rmsprop_maximize,
                                         Config::adagrad_decay_init, Config::nadam, Config::adamax_maximize,
                                         Config::qhm, Config::qhadam, Config::lion_decay};

inline const char* name(Config c) {
  switch (c) {
    case Config::sgd: return "sgd";
    case Config::sgd_momentum: return "sgd momentum dampening weight decay";
    case Config::sgd_maximize: return "sgd maximize";
    case Config::nesterov_cosine: return "nesterov, warm-up cosine";
    case Config::adam: return "adam";
    case Config::adam_l2_maximize: return "adam l2 maximize";
    case Config::adamw: return "adamw";
    case Config::adam_amsgrad: return "adam amsgrad";
    case Config::lookahead_sgd_reset: return "lookahead(sgd), reset";
    case Config::lookahead_adamw: return "lookahead(adamw)";
    case Config::lookahead_as_slowmo: return "lookahead as slowmo (the SlowMo outer rule)";
    case Config::outer_fedyogi: return "outer loop, FedYogi rule, one worker";
    case Config::outer_fedadam_divided: return "outer loop, FedAdam rule on d / gamma, one worker";
    case Config::rmsprop_centered_momentum: return "rmsprop centered momentum weight decay";
    case Config::rmsprop_maximize: return "rmsprop maximize";
    case Config::adagrad_decay_init: return "adagrad lr_decay initial_accumulator_value";
    case Config::nadam: return "nadam";
    case Config::adamax_maximize: return "adamax maximize";
    case Config::qhm: return "qhm";
    case Config::qhadam: return "qhadam";
    case Config::lion_decay: return "lion weight decay";
  }
  return "?";
}

/// Calls f(optimizer) with configuration c built in memory space Space.
template <class T, class Space, class F>
void with_optimizer(Config c, F&& f) {
  using namespace slowmo;
  switch (c) {
    case Config::sgd: return f(Sgd<T, Const, Space>({.lr = 0.1}));
    case Config::sgd_momentum:
      return f(Sgd<T, Const, Space>({.lr = 0.05, .momentum = 0.9, .dampening = 0.2, .weight_decay = 1e-2}));
    case Config::sgd_maximize: return f(Sgd<T, Const, Space>({.lr = 0.05, .momentum = 0.5, .maximize = true}));
    case Config::nesterov_cosine:
      return f(Nesterov<T, schedule::Sequence<schedule::Linear, schedule::Cosine>, Space>(
          {.lr = 0.1, .weight_decay = 1e-3}, schedule::warmup_cosine(5, 25)));
    case Config::adam: return f(Adam<T, Const, Space>({.lr = 0.05}));
    case Config::adam_l2_maximize:
      return f(Adam<T, Const, Space>({.lr = 0.05, .weight_decay = 0.1, .maximize = true}));
    case Config::adamw:
      return f(AdamW<T, Const, Space>({.lr = 0.05, .betas = {0.8, 0.95}, .weight_decay = 0.1}));
    case Config::adam_amsgrad: return f(Adam<T, Const, Space>({.lr = 0.05, .eps = 1e-6, .amsgrad = true}));
    case Config::lookahead_sgd_reset:
      return f(Lookahead(Sgd<T, Const, Space>({.lr = 0.1, .momentum = 0.9}),
                         {.k = 4, .alpha = 0.5, .base_state = OnSync::reset}));
    case Config::lookahead_adamw: return f(Lookahead(AdamW<T, Const, Space>({.lr = 0.05}), {.k = 3, .alpha = 0.8}));
    case Config::lookahead_as_slowmo: return f(lookahead_as_slowmo(Nesterov<T, Const, Space>({.lr = 0.1}), 4, 0.7));
    case Config::outer_fedyogi: {
      SingleWorker solo;  // (empty: the loop keeps its own copy)
      return f(outer_loop(Adam<T, Const, Space>({.lr = 0.05}), solo, {.tau = 3}, outer::FedYogi<T, Space>({.lr = 0.05})));
    }
    case Config::outer_fedadam_divided: {
      SingleWorker solo;
      return f(outer_loop(Sgd<T, Const, Space>({.lr = 0.1}), solo, {.tau = 4, .divide_by_lr = true},
                          outer::FedAdam<T, Space>()));
    }
    case Config::rmsprop_centered_momentum:
      return f(RMSprop<T, Const, Space>({.lr = 0.01, .weight_decay = 0.01, .momentum = 0.5, .centered = true}));
    case Config::rmsprop_maximize: return f(RMSprop<T, Const, Space>({.lr = 0.01, .alpha = 0.9, .maximize = true}));
    case Config::adagrad_decay_init:
      return f(Adagrad<T, Const, Space>({.lr = 0.1, .lr_decay = 0.01, .initial_accumulator_value = 0.1}));
    case Config::nadam: return f(NAdam<T, Const, Space>({.lr = 0.05, .weight_decay = 0.01}));
    case Config::adamax_maximize: return f(Adamax<T, Const, Space>({.lr = 0.05, .maximize = true}));
    case Config::qhm: return f(Qhm<T, Const, Space>({.lr = 0.1, .beta = 0.9}));
    case Config::qhadam: return f(QhAdam<T, Const, Space>({.lr = 0.05, .nus = {0.7, 0.9}}));
    case Config::lion_decay: return f(Lion<T, Const, Space>({.lr = 0.01, .weight_decay = 0.1}));
  }
}

/// Every buffer, counter and scalar of an optimizer's state, on the host, widened to double
/// (exactly), by path.
using State = std::map<std::string, slowmo::Vector<double>>;

template <class Opt>
State state_of(const Opt& opt) {
  State out;
  opt.visit_state([&](const slowmo::StateKey& key, const auto& ref, slowmo::StateKind) {
    using R = std::remove_cvref_t<decltype(ref)>;
    if constexpr (std::is_arithmetic_v<R>)
      out[key.path()] = slowmo::Vector<double>::Constant(1, double(ref));
    else if constexpr (requires { ref.to_host(); })
      out[key.path()] = ref.to_host().template cast<double>();
    else
      out[key.path()] = ref.template cast<double>();
  });
  return out;
}

template <class T>
struct Trajectory {
  slowmo::Vector<T> x;  // after the last step
  State state;
};

inline constexpr int steps = 25;

/// The CPU reference (reference.cpp): `steps` steps of configuration c on Problem<T>(n).
template <class T>
Trajectory<T> cpu_reference(Config c, Eigen::Index n);

extern template Trajectory<float> cpu_reference<float>(Config, Eigen::Index);
extern template Trajectory<double> cpu_reference<double>(Config, Eigen::Index);

}  // namespace parity
