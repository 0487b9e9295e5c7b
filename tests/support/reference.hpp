// Obviously-correct scalar reference implementations of the optimizers, written from the
// PyTorch formulas (and the papers, for those PyTorch lacks) (not from slowmo's code) in long double, one element at a time, and a
// gradient oracle to drive multi-step trajectories.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace ref {

using R = long double;

/// A deterministic, non-trivial gradient for trajectory tests: a heterogeneous quadratic
/// a_i (x_i - c_i) plus a step-dependent perturbation, so every coordinate sees a different
/// and changing gradient (including sign changes).
inline R gradient(int i, int t, R x) {
  const R a = 0.5L + 0.25L * (i % 5);
  const R c = 0.3L * std::sin(R(i));
  return a * (x - c) + 0.2L * std::cos(R(3 * t + i));
}

inline std::vector<R> initial_point(int n) {
  std::vector<R> x(n);
  for (int i = 0; i < n; ++i) x[i] = 1.0L - 0.1L * i;
  return x;
}

struct Sgd {
  R lr, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, maximize = false;
  std::vector<R> buf{};
  bool has_buf = false;

  void step(std::vector<R>& p, const std::vector<R>& grad) {
    if (buf.empty()) buf.assign(p.size(), 0);
    for (size_t i = 0; i < p.size(); ++i) {
      R g = maximize ? -grad[i] : grad[i];
      if (weight_decay != 0) g = g + weight_decay * p[i];
      if (momentum != 0) {
        buf[i] = has_buf ? momentum * buf[i] + (1 - dampening) * g : g;
        g = nesterov ? g + momentum * buf[i] : buf[i];
      }
      p[i] = p[i] - lr * g;
    }
    has_buf = true;
  }
};

struct Adam {
  R lr, beta1 = 0.9L, beta2 = 0.999L, eps = 1e-8L, weight_decay = 0;
  bool amsgrad = false, maximize = false, decoupled = false;
  std::vector<R> m{}, v{}, vmax{};
  int t = 0;

  void step(std::vector<R>& p, const std::vector<R>& grad) {
    if (m.empty()) m.assign(p.size(), 0), v.assign(p.size(), 0), vmax.assign(p.size(), 0);
    ++t;
    const R bc1 = 1 - std::pow(beta1, R(t));
    const R bc2 = 1 - std::pow(beta2, R(t));
    for (size_t i = 0; i < p.size(); ++i) {
      R g = maximize ? -grad[i] : grad[i];
      if (decoupled)
        p[i] = p[i] * (1 - lr * weight_decay);
      else if (weight_decay != 0)
        g = g + weight_decay * p[i];
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      R vhat = v[i];
      if (amsgrad) vhat = vmax[i] = std::max(vmax[i], v[i]);
      p[i] = p[i] - (lr / bc1) * m[i] / (std::sqrt(vhat) / std::sqrt(bc2) + eps);
    }
  }
};

// From the papers, not from PyTorch: QHM and QHAdam (Ma & Yarats 2019, eq. 2 and
// Algorithm 1), Lion (Chen et al. 2023, Algorithm 2). Zero-initialised buffers.

struct Qhm {
  R lr, nu = 0.7L, beta = 0.999L, weight_decay = 0;
  std::vector<R> buf{};

  void step(std::vector<R>& p, const std::vector<R>& grad) {
    if (buf.empty()) buf.assign(p.size(), 0);
    for (size_t i = 0; i < p.size(); ++i) {
      const R g = grad[i] + weight_decay * p[i];
      buf[i] = beta * buf[i] + (1 - beta) * g;
      p[i] = p[i] - lr * ((1 - nu) * g + nu * buf[i]);
    }
  }
};

struct QhAdam {
  R lr, beta1 = 0.995L, beta2 = 0.999L, nu1 = 0.7L, nu2 = 1, eps = 1e-8L, weight_decay = 0;
  std::vector<R> m{}, v{};
  int t = 0;

  void step(std::vector<R>& p, const std::vector<R>& grad) {
    if (m.empty()) m.assign(p.size(), 0), v.assign(p.size(), 0);
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      const R g = grad[i] + weight_decay * p[i];
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      const R m_hat = m[i] / (1 - std::pow(beta1, R(t)));
      const R v_hat = v[i] / (1 - std::pow(beta2, R(t)));
      p[i] = p[i] - lr * ((1 - nu1) * g + nu1 * m_hat) / (std::sqrt((1 - nu2) * g * g + nu2 * v_hat) + eps);
    }
  }
};

struct Lion {
  R lr, beta1 = 0.9L, beta2 = 0.99L, weight_decay = 0;
  std::vector<R> m{};

  static R sign(R x) { return x > 0 ? 1 : (x < 0 ? -1 : 0); }
  void step(std::vector<R>& p, const std::vector<R>& grad) {
    if (m.empty()) m.assign(p.size(), 0);
    for (size_t i = 0; i < p.size(); ++i) {
      const R c = beta1 * m[i] + (1 - beta1) * grad[i];
      p[i] = p[i] - lr * (sign(c) + weight_decay * p[i]);
      m[i] = beta2 * m[i] + (1 - beta2) * grad[i];
    }
  }
};

/// Delta-SGD as the authors' client runs it (jlylekim/auto-tuned-FL, src/adsgd.py: amplifier =
/// delta, damping = 2 / gamma), keeping the previous point and gradient themselves:
///   with a previous step and both differences non-zero:
///     eta = min(sqrt(1 + delta theta) eta, |x - x_prev| / (damping |g - g_prev|)) + eps
///   otherwise eta = sqrt(1 + delta theta) eta;   theta = eta / eta_old;   x -= eta g.
struct DeltaSgd {
  R lr = 0.2L, gamma = 2, delta = 0.1L, theta = 1, eps = 1e-8L;
  std::vector<R> x_prev{}, g_prev{};

  static R distance(const std::vector<R>& a, const std::vector<R>& b) {
    R s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
    return std::sqrt(s);
  }
  void step(std::vector<R>& p, const std::vector<R>& grad) {
    const R damping = 2 / gamma;
    R eta = lr * std::sqrt(1 + delta * theta);
    if (!x_prev.empty()) {
      const R dx = distance(p, x_prev), dg = distance(grad, g_prev);
      if (dx > 0 && dg > 0) eta = std::min(eta, dx / (damping * dg)) + eps;
    }
    theta = eta / lr;
    lr = eta;
    x_prev = p;
    g_prev = grad;
    for (size_t i = 0; i < p.size(); ++i) p[i] -= eta * grad[i];
  }
};

}  // namespace ref
