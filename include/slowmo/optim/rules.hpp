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

#include <type_traits>

#include "slowmo/core/config.hpp"
#include "slowmo/core/math.hpp"

namespace slowmo::rules {

/// The type a rule receives for a buffer the options leave out (Adam's max_exp_avg_sq
/// without amsgrad, see optim/elementwise.hpp); `if constexpr (absent<B>)` tests for it.
struct Absent {};
template <class B>
inline constexpr bool absent = std::is_same_v<std::remove_cv_t<B>, Absent>;

/// Sets a buffer to its initial value (Adagrad's initial_accumulator_value).
template <class T>
struct Fill {
  T value;
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& b) const {
    b = V(value);
  }
};

/// torch.optim.SGD for one element:
///   d = (maximize ? -g : g) + weight_decay * p
///   buf = keep * buf + damp * d        (first step: keep = 0, damp = 1, i.e. buf = d;
///                                       afterwards: keep = momentum, damp = 1 - dampening)
///   d = nesterov ? d + momentum * buf : buf
///   p = p - lr * d
/// Without momentum there is no buffer (B = Absent).
template <class T>
struct Sgd {
  T lr;
  T sign;  // -1 when maximizing
  T weight_decay;
  T momentum;
  T keep;
  T damp;
  bool nesterov;

  template <class V, class B>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, B& buf) const {
    V d = V(sign) * g;
    if (weight_decay != T(0)) d = d + V(weight_decay) * p;
    if constexpr (!absent<B>) {
      buf = V(keep) * buf + V(damp) * d;
      d = nesterov ? V(d + V(momentum) * buf) : buf;
    }
    p = p - V(lr) * d;
  }
};

/// torch.optim.Adam / AdamW for one element:
///   d = (maximize ? -g : g) + l2 * p         (Adam: l2 = weight_decay; AdamW: l2 = 0)
///   p = decay * p                            (AdamW: decay = 1 - lr * weight_decay; Adam: 1)
///   m = beta1 * m + (1 - beta1) * d
///   v = beta2 * v + (1 - beta2) * d * d
///   vmax = max(vmax, v), used instead of v  (amsgrad only; else VMax = Absent)
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

  template <class V, class VMax>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, V& m, V& v, VMax& vmax) const {
    using math::sqrt;
    V d = V(sign) * g;
    if (l2 != T(0)) d = d + V(l2) * p;
    if (decay != T(1)) p = V(decay) * p;
    m = V(beta1) * m + V(one_minus_beta1) * d;
    v = V(beta2) * v + V(one_minus_beta2) * d * d;
    V v_hat = v;
    if constexpr (!absent<VMax>) {
      using math::max;
      vmax = max(vmax, v);
      v_hat = vmax;
    }
    const V denom = sqrt(v_hat) * V(inv_bias_correction2_sqrt) + V(eps);
    p = p - V(step_size) * (m / denom);
  }
};

/// torch.optim.RMSprop for one element:
///   d = (maximize ? -g : g) + weight_decay * p
///   sq = alpha * sq + (1 - alpha) * d * d
///   centered:  ga = alpha * ga + (1 - alpha) * d,  avg = sqrt(sq - ga * ga) + eps
///   else:      avg = sqrt(sq) + eps
///   momentum:  buf = momentum * buf + d / avg,  p = p - lr * buf
///   else:      p = p - lr * (d / avg)
/// Buf is Absent without momentum, GAvg without centered.
template <class T>
struct RMSprop {
  T lr;
  T sign;
  T weight_decay;
  T alpha, one_minus_alpha;
  T eps;
  T momentum;

  template <class V, class Buf, class GAvg>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, V& sq, Buf& buf, GAvg& ga) const {
    using math::sqrt;
    V d = V(sign) * g;
    if (weight_decay != T(0)) d = d + V(weight_decay) * p;
    sq = V(alpha) * sq + V(one_minus_alpha) * d * d;
    V avg;
    if constexpr (!absent<GAvg>) {
      ga = V(alpha) * ga + V(one_minus_alpha) * d;
      avg = sqrt(V(sq - ga * ga)) + V(eps);
    } else {
      avg = sqrt(sq) + V(eps);
    }
    if constexpr (!absent<Buf>) {
      buf = V(momentum) * buf + d / avg;
      p = p - V(lr) * buf;
    } else {
      p = p - V(lr) * (d / avg);
    }
  }
};

/// torch.optim.Adagrad for one element:
///   d = (maximize ? -g : g) + weight_decay * p
///   sum = sum + d * d                         (sum starts at initial_accumulator_value)
///   p = p - clr * (d / (sqrt(sum) + eps)),    clr = lr / (1 + (t - 1) * lr_decay)
template <class T>
struct Adagrad {
  T clr;
  T sign;
  T weight_decay;
  T eps;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, V& sum) const {
    using math::sqrt;
    V d = V(sign) * g;
    if (weight_decay != T(0)) d = d + V(weight_decay) * p;
    sum = sum + d * d;
    p = p - V(clr) * (d / (sqrt(sum) + V(eps)));
  }
};

/// torch.optim.NAdam (Dozat 2016) for one element, with mu_t = beta1 (1 - 0.5 * 0.96^(t psi)):
///   d = g + weight_decay * p
///   m = beta1 * m + (1 - beta1) * d;   v = beta2 * v + (1 - beta2) * d * d
///   denom = sqrt(v) * inv_bias_correction2_sqrt + eps
///   p = p - grad_step * (d / denom);   p = p - avg_step * (m / denom)
/// with grad_step = lr (1 - mu_t) / (1 - prod_{s<=t} mu_s) and
/// avg_step = lr mu_{t+1} / (1 - prod_{s<=t+1} mu_s).
template <class T>
struct NAdam {
  T weight_decay;
  T beta1, one_minus_beta1;
  T beta2, one_minus_beta2;
  T inv_bias_correction2_sqrt;
  T eps;
  T grad_step, avg_step;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, V& m, V& v) const {
    using math::sqrt;
    V d = g;
    if (weight_decay != T(0)) d = d + V(weight_decay) * p;
    m = V(beta1) * m + V(one_minus_beta1) * d;
    v = V(beta2) * v + V(one_minus_beta2) * d * d;
    const V denom = sqrt(v) * V(inv_bias_correction2_sqrt) + V(eps);
    p = p - V(grad_step) * (d / denom);
    p = p - V(avg_step) * (m / denom);
  }
};

/// torch.optim.Adamax (Kingma & Ba 2015, Algorithm 2) for one element:
///   d = (maximize ? -g : g) + weight_decay * p
///   m = beta1 * m + (1 - beta1) * d;   u = max(beta2 * u, |d| + eps)
///   p = p - clr * (m / u),             clr = lr / (1 - beta1^t)
template <class T>
struct Adamax {
  T clr;
  T sign;
  T weight_decay;
  T beta1, one_minus_beta1;
  T beta2;
  T eps;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, V& m, V& u) const {
    using math::max;
    V d = V(sign) * g;
    if (weight_decay != T(0)) d = d + V(weight_decay) * p;
    m = V(beta1) * m + V(one_minus_beta1) * d;
    u = max(V(V(beta2) * u), V(max(d, V(-d)) + V(eps)));  // |d| = max(d, -d), exactly
    p = p - V(clr) * (m / u);
  }
};

/// Quasi-hyperbolic momentum (Ma & Yarats 2019, eq. 2) for one element:
///   d = g + weight_decay * p
///   buf = beta * buf + (1 - beta) * d
///   p = p - lr * ((1 - nu) * d + nu * buf)
template <class T>
struct Qhm {
  T lr;
  T weight_decay;
  T beta, one_minus_beta;
  T nu, one_minus_nu;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, V& buf) const {
    V d = g;
    if (weight_decay != T(0)) d = d + V(weight_decay) * p;
    buf = V(beta) * buf + V(one_minus_beta) * d;
    p = p - V(lr) * (V(one_minus_nu) * d + V(nu) * buf);
  }
};

/// QHAdam (Ma & Yarats 2019, Algorithm 1) for one element:
///   d = g + weight_decay * p
///   m = beta1 * m + (1 - beta1) * d;   v = beta2 * v + (1 - beta2) * d * d
///   p = p - lr * ((1 - nu1) d + nu1 m / (1 - beta1^t))
///             / (sqrt((1 - nu2) d^2 + nu2 v / (1 - beta2^t)) + eps)
/// with m_scale = nu1 / (1 - beta1^t) and v_scale = nu2 / (1 - beta2^t).
template <class T>
struct QhAdam {
  T lr;
  T weight_decay;
  T beta1, one_minus_beta1;
  T beta2, one_minus_beta2;
  T one_minus_nu1, m_scale;
  T one_minus_nu2, v_scale;
  T eps;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, V& m, V& v) const {
    using math::sqrt;
    V d = g;
    if (weight_decay != T(0)) d = d + V(weight_decay) * p;
    m = V(beta1) * m + V(one_minus_beta1) * d;
    v = V(beta2) * v + V(one_minus_beta2) * d * d;
    const V num = V(one_minus_nu1) * d + V(m_scale) * m;
    const V den = sqrt(V(V(one_minus_nu2) * d * d + V(v_scale) * v)) + V(eps);
    p = p - V(lr) * (num / den);
  }
};

/// Lion (Chen et al. 2023, Algorithm 2) for one element:
///   c = beta1 * m + (1 - beta1) * g
///   p = decay * p - lr * sign(c),     decay = 1 - lr * weight_decay
///   m = beta2 * m + (1 - beta2) * g
template <class T>
struct Lion {
  T lr;
  T decay;
  T beta1, one_minus_beta1;
  T beta2, one_minus_beta2;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& p, const V& g, V& m) const {
    using math::sign;
    const V c = V(beta1) * m + V(one_minus_beta1) * g;
    if (decay != T(1)) p = V(decay) * p;
    p = p - V(lr) * sign(c);
    m = V(beta2) * m + V(one_minus_beta2) * g;
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

// ---- gradient modifiers (optim/clip.hpp, optim/fedprox.hpp): out is the base's gradient ----

/// Clipping by norm: out = g * coef (coef = min(1, max_norm / (||g|| + 1e-6)), from the host).
template <class T>
struct ScaleGradient {
  T coef;
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& out, const V& g) const {
    out = g * V(coef);
  }
};

/// Coordinate-wise clipping: out = clamp(g, -c, c) = max(min(g, c), -c), as torch.clamp
/// (ClipGradValue hands a gradient with a NaN or an infinity to its base unclipped: see
/// optim/clip.hpp). Comparisons and selections only: exact, signed zeros kept.
template <class T>
struct ClampGradient {
  T c;
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& out, const V& g) const {
    using math::max;
    using math::min;
    out = max(min(g, V(c)), V(-c));
  }
};

/// FedProx's proximal term (Li et al. 2020, eq. 2): the gradient of
/// f(x) + mu/2 |x - x0|^2 is out = g + mu (x - x0).
template <class T>
struct ProximalGradient {
  T mu;
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& out, const V& g, const V& x, const V& x0) const {
    out = g + V(mu) * (x - x0);
  }
};

}  // namespace slowmo::rules
