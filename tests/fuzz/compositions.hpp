// The compositions the checkpoint fuzzer loads into (shared by the harness and the corpus
// writer): with_composition(i, f) calls f with a freshly built optimizer number i % count.
#pragma once

#include <slowmo/slowmo.hpp>

namespace fuzz {

inline constexpr unsigned count = 6;

inline slowmo::SingleWorker& solo() {
  static slowmo::SingleWorker comm;
  return comm;
}

template <class F>
void with_composition(unsigned i, F&& f) {
  using namespace slowmo;
  switch (i % count) {
    case 0: f(Adam<float>({.lr = 0.1, .amsgrad = true})); break;
    case 1: f(Sgd<float>({.lr = 0.1, .momentum = 0.9, .nesterov = true})); break;
    case 2: f(Lookahead(Adam<float>({.lr = 0.1, .amsgrad = true}), {.k = 2})); break;
    case 3: f(SlowMo(Sgd<float>({.lr = 0.1, .momentum = 0.9}), solo(), {.tau = 4})); break;
    case 4: f(SlowMo(Lookahead(Adam<float>({.lr = 0.1, .amsgrad = true}), {.k = 2}), solo(), {.tau = 4})); break;
    default: f(LocalSgd(AdamW<double>({.lr = 0.1}), solo(), {.H = 2, .warmup_steps = 1})); break;
  }
}

/// The size of the first non-empty state buffer (0: the optimizer has no state yet).
template <class Opt>
long state_size(const Opt& opt) {
  long n = 0;
  opt.visit_state([&](const slowmo::StateKey&, const auto& ref, slowmo::StateKind) {
    using R = std::remove_cvref_t<decltype(ref)>;
    if constexpr (!std::is_arithmetic_v<R>)
      if (n == 0) n = long(ref.size());
  });
  return n;
}

/// A finite gradient at x.
template <class V>
void gradient(const V& x, V& g, int t) {
  using T = typename V::Scalar;
  for (Eigen::Index i = 0; i < x.size(); ++i) g[i] = T(0.5) * x[i] + T(0.1 * ((i + t) % 5) - 0.2);
}

}  // namespace fuzz
