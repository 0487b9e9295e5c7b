// slowmo/optim/rules.hpp — the per-element update rules: the one definition of each
// optimizer's math, shared by the CPU driver (detail::for_each_element, SIMD body and
// scalar tail) and by the CUDA kernels.
//
// Each rule holds its per-step coefficients (computed once per step on the host, in double
// as PyTorch computes them in Python floats, then rounded to T) and a call operator
// templated on the value type V (T, or a SIMD pack of T). Arguments are `V&` for buffers
// the rule updates, `const V&` for buffers it only reads. Branches are on coefficients that
// are uniform across the whole vector, so they cost nothing per element on either device.
#pragma once

#include "slowmo/core/config.hpp"
#include "slowmo/core/math.hpp"

namespace slowmo::rules {

/// torch.optim.SGD for one element:
///   d = (maximize ? -g : g) + weight_decay * p
///   buf = keep * buf + damp * d        (first step: keep = 0, damp = 1, i.e. buf = d;
///                                       afterwards: keep = momentum, damp = 1 - dampening)
///   d = nesterov ? d + momentum * buf : buf
///   p = p - lr * d
template <class T>
struct Sgd {
  T lr;
  T sign;  // -1 when maximizing
  T weight_decay;
  T momentum;
  T keep;
  T damp;
  bool nesterov;

  template <class V>
  SLOWMO_HOST_DEVICE V direction(const V& p, const V& g) const {
    V d = V(sign) * g;
    if (weight_decay != T(0)) d = d + V(weight_decay) * p;
    return d;
  }

  /// Without momentum: no buffer.
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g) const {
    p = p - V(lr) * direction(p, g);
  }

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, V& buf) const {
    V d = direction(p, g);
    buf = V(keep) * buf + V(damp) * d;
    d = nesterov ? V(d + V(momentum) * buf) : buf;
    p = p - V(lr) * d;
  }
};

/// torch.optim.Adam / AdamW for one element:
///   d = (maximize ? -g : g) + l2 * p         (Adam: l2 = weight_decay; AdamW: l2 = 0)
///   p = decay * p                            (AdamW: decay = 1 - lr * weight_decay; Adam: 1)
///   m = beta1 * m + (1 - beta1) * d
///   v = beta2 * v + (1 - beta2) * d * d
///   vmax = max(vmax, v), used instead of v  (amsgrad only)
///   p = p - step_size * m / (sqrt(v) * inv_bias_correction2_sqrt + eps)
/// with step_size = lr / (1 - beta1^t) and inv_bias_correction2_sqrt = 1 / sqrt(1 - beta2^t).
/// (PyTorch divides sqrt(v) by sqrt(1 - beta2^t); multiplying by the reciprocal, computed
/// once per step in double, differs by at most an ulp of the denominator and leaves one
/// division per element instead of two: divisions bound the step's speed on the CPU.)
template <class T>
struct Adam {
  T sign;
  T l2;
  T decay;
  T beta1, one_minus_beta1;
  T beta2, one_minus_beta2;
  T inv_bias_correction2_sqrt;
  T eps;
  T step_size;

  template <class V>
  SLOWMO_HOST_DEVICE V moments(V& p, const V& g, V& m, V& v) const {
    V d = V(sign) * g;
    if (l2 != T(0)) d = d + V(l2) * p;
    if (decay != T(1)) p = V(decay) * p;
    m = V(beta1) * m + V(one_minus_beta1) * d;
    v = V(beta2) * v + V(one_minus_beta2) * d * d;
    return v;
  }

  template <class V>
  SLOWMO_HOST_DEVICE void apply(V& p, const V& m, const V& v_hat) const {
    using math::sqrt;
    const V denom = sqrt(v_hat) * V(inv_bias_correction2_sqrt) + V(eps);
    p = p - V(step_size) * (m / denom);
  }

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, V& m, V& v) const {
    apply(p, m, moments(p, g, m, v));
  }

  /// amsgrad: keeps the running maximum of v in vmax.
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, V& m, V& v, V& vmax) const {
    using math::max;
    vmax = max(vmax, moments(p, g, m, v));
    apply(p, m, vmax);
  }
};

/// Pull towards the fast weights and restart from there (Lookahead, Zhang et al. 2019,
/// Algorithm 1): slow = slow + alpha * (fast - slow); fast = slow.
template <class T>
struct LookaheadSync {
  T alpha;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& slow, V& fast) const {
    slow = math::lerp(slow, fast, alpha);
    fast = slow;
  }
};

}  // namespace slowmo::rules
