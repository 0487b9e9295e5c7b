// slowmo/distributed/rules.hpp — per-element rules of the distributed combinators, shared by the
// CPU driver and the CUDA kernels like those of optim/rules.hpp.
#pragma once

#include "slowmo/core/config.hpp"

namespace slowmo::rules {

/// SlowMo's outer update (Wang et al. 2020, Algorithm 1, lines 8-9) for one element, with
/// x holding the exact average x_bar on entry and the new x0 on exit:
///   d   = (x0 - x_bar) / gamma           (raw pseudo-gradient x0 - x_bar when !divide)
///   u   = beta * u + d
///   x0  = x0 - lr * u                    (heavy ball; lr = alpha * gamma, or alpha when raw)
///   x0  = x0 - lr * (d + beta * u)       (Nesterov, as torch.optim.SGD(nesterov=True))
///   x   = x0
template <class T>
struct SlowMoOuter {
  T gamma;
  bool divide;
  T beta;
  T lr;
  bool nesterov;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& x, V& x0, V& u) const {
    V d = x0 - x;
    if (divide) d = d / V(gamma);
    u = V(beta) * u + d;
    x0 = x0 - V(lr) * (nesterov ? V(d + V(beta) * u) : u);
    x = x0;
  }
};

/// Push-sum, first half: the share a worker keeps of its numerator, which is also what it
/// sends to each of its k out-peers: share = num / (k + 1).
template <class T>
struct PushSumShare {
  T inv_parts;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& share, const V& num) const {
    share = num * V(inv_parts);
  }
};

/// Push-sum, second half, after the messages arrived: num = kept share + received, and the
/// de-biased model z = num / w.
template <class T>
struct PushSumCombine {
  T weight;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& num, V& z, const V& kept, const V& received) const {
    num = kept + received;
    z = num / V(weight);
  }
};

/// Push-sum with k > 1 out-peers: the messages from the other in-peers add up,
/// received = received + extra.
struct AddTo {
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& received, const V& extra) const {
    received = received + extra;
  }
};

}  // namespace slowmo::rules
