// slowmo/outer/rules.hpp — per-element rules of the outer loop (slowmo/distributed/outer_loop.hpp),
// shared by the CPU driver and the CUDA kernels like those of optim/rules.hpp.
#pragma once

#include "slowmo/core/config.hpp"
#include "slowmo/core/math.hpp"

namespace slowmo::rules {

/// A worker's pseudo-gradient, formed in place in its parameters:
///   x = (x0 - x) / gamma     (SlowMo, Wang et al. 2020, Alg. 1 line 7, before the average)
///   x = x0 - x               (raw: BMUF, DiLoCo, FedOpt)
template <class T>
struct PseudoGradient {
  T gamma;
  bool divide;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& x, const V& x0) const {
    V d = x0 - x;
    if (divide) d = d / V(gamma);
    x = d;
  }
};

/// The pseudo-gradient from the averaged parameters, then the rule, in one pass: x holds the
/// exact mean x_bar on entry (the loop all-reduced the parameters), and the rule sees
/// d = (x0 - x_bar) [/ gamma], as SlowMo's Algorithm 1 writes it.
template <class T, class Rule>
struct PseudoGradientThen {
  PseudoGradient<T> pseudo_gradient;
  Rule rule;

  template <class V, class... S>
  SLOWMO_HOST_DEVICE void operator()(V& x, V& x0, S&... state) const {
    pseudo_gradient(x, x0);
    rule(x, x0, state...);
  }
};

/// out = in: a fragment of the parameters into the buffer its all-reduce works on.
struct CopyInto {
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& out, const V& in) const {
    out = in;
  }
};

/// Streaming DiLoCo's merge of a synchronised fragment (torchft's fragment_update_alpha):
/// x = global + alpha (x - global), torch.lerp from the new global point towards the local
/// one; alpha = 0 takes the global point exactly.
template <class T>
struct MergeFragment {
  T alpha;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& x, const V& global) const {
    x = global + V(alpha) * (x - global);
  }
};

/// Heavy-ball outer step on the shared pseudo-gradient d, which xd holds on entry (SlowMo
/// Alg. 1 lines 8-9; BMUF; FedAvgM; with nesterov, DiLoCo's outer Nesterov and BMUF-NBM):
///   u  = beta * u + d
///   x0 = x0 - lr * u                  (heavy ball)
///   x0 = x0 - lr * (d + beta * u)     (Nesterov, as torch.optim.SGD(nesterov=True))
///   xd = x0                           (every worker restarts from the new outer point)
template <class T>
struct HeavyBallOuter {
  T beta;
  T lr;
  bool nesterov;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& xd, V& x0, V& u) const {
    const V d = xd;
    u = V(beta) * u + d;
    x0 = x0 - V(lr) * (nesterov ? V(d + V(beta) * u) : u);
    xd = x0;
  }
};

/// The second-moment estimates of the adaptive server optimizers (Reddi et al. 2021, Alg. 2).
enum class SecondMoment { adam, yogi, adagrad };

/// Adaptive outer step on the shared pseudo-gradient d = x0 - x_bar (FedAdam, FedYogi,
/// FedAdagrad; Reddi et al., ICLR 2021, Algorithm 2, without bias correction, as Flower):
///   m  = beta1 m + (1 - beta1) d
///   v  = beta2 v + (1 - beta2) d^2                 (adam)
///   v  = v - (1 - beta2) d^2 sign(v - d^2)         (yogi)
///   v  = v + d^2                                   (adagrad)
///   x0 = x0 - (lr m) / (sqrt(v) + eps)             (eps: the paper's tau)
///   xd = x0
/// (The paper writes Delta = x_bar - x0 = -d and x0 + lr m / ...: the same numbers, m negated.)
template <class T>
struct AdaptiveOuter {
  SecondMoment kind;
  T beta1, one_minus_beta1;
  T beta2, one_minus_beta2;
  T lr;
  T eps;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& xd, V& x0, V& m, V& v) const {
    using math::sign;
    using math::sqrt;
    const V d = xd;
    const V d2 = d * d;
    m = V(beta1) * m + V(one_minus_beta1) * d;
    switch (kind) {
      case SecondMoment::adam: v = V(beta2) * v + V(one_minus_beta2) * d2; break;
      case SecondMoment::yogi: v = v - V(one_minus_beta2) * d2 * sign(V(v - d2)); break;
      case SecondMoment::adagrad: v = v + d2; break;
    }
    x0 = x0 - V(lr) * m / (sqrt(v) + V(eps));
    xd = x0;
  }
};

}  // namespace slowmo::rules
