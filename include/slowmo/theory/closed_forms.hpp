// slowmo/theory/closed_forms.hpp — closed forms from the convergence theory of the Local-SGD
// family on quadratics, for comparing measurements against (tests/theory, examples/theory).
#pragma once

#include <cmath>
#include <complex>
#include <vector>

#include <Eigen/Core>

namespace slowmo::theory {

/// Homogeneous noisy quadratic f(x) = 1/2 sum_j lambda_j x_j^2, gradient noise variance s^2
/// per coordinate, M workers, SGD with lr eta: the average iterate of Local SGD follows
/// minibatch SGD with noise s^2 / M (for any H), whose stationary expected loss is
///   sum_j eta s^2 / (2 M (2 - eta lambda_j)).
inline double local_sgd_stationary_loss(double eta, double s, int M, const Eigen::VectorXd& lambdas) {
  double f = 0;
  for (double l : lambdas) f += eta * s * s / (2.0 * M * (2.0 - eta * l));
  return f;
}

/// q_i = (1 - eta a_i)^K: what K local gradient steps on 1/2 a_i (x - c_i)^2 keep of the
/// distance to c_i.
inline double local_contraction(double eta, double a, int K) { return std::pow(1.0 - eta * a, K); }

/// Client drift: local GD with K local steps and exact averaging on f_i = 1/2 a_i (x - c_i)^2
/// converges to sum_i (1 - q_i) c_i / sum_i (1 - q_i), which is the true minimiser
/// sum a_i c_i / sum a_i only for K = 1 or equal a_i. Outer momentum does not move it.
inline double client_drift_fixed_point(double eta, int K, const std::vector<double>& a, const std::vector<double>& c) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double w = 1.0 - local_contraction(eta, a[i], K);
    num += w * c[i];
    den += w;
  }
  return num / den;
}

/// h = 1 - mean_i q_i: how much of the error one round of local steps and averaging removes.
inline double outer_contraction_gap(double eta, int K, const std::vector<double>& a) {
  double q = 0;
  for (double ai : a) q += local_contraction(eta, ai, K);
  return 1.0 - q / double(a.size());
}

/// Largest root magnitude of z^2 - b z + c.
inline double largest_root_magnitude(double b, double c) {
  const std::complex<double> disc = std::sqrt(std::complex<double>(b * b - 4 * c));
  return std::max(std::abs((b + disc) / 2.0), std::abs((b - disc) / 2.0));
}

/// Outer error of SlowMo on that problem: heavy ball, e_{t+1} = (1 + beta - alpha h) e_t - beta e_{t-1};
/// Nesterov (x0 -= alpha (d + beta u)), e_{t+1} = (1 + beta - alpha h (1 + beta)) e_t - beta (1 - alpha h) e_{t-1}.
/// Returns the asymptotic contraction per outer step: the largest root magnitude.
inline double outer_rate(double alpha, double beta, double h, bool nesterov = false) {
  if (nesterov) return largest_root_magnitude(1 + beta - alpha * h * (1 + beta), beta * (1 - alpha * h));
  return largest_root_magnitude(1 + beta - alpha * h, beta);
}

/// Lookahead (k, alpha) over SGD with lr eta on a noisy 1-D quadratic of curvature lambda:
/// stationary variance of the slow weights divided by that of plain SGD's iterates,
/// with q = 1 - eta lambda (Zhang et al. 2019, Proposition 1):
///   alpha^2 (1 - q^2k) / (alpha^2 (1 - q^2k) + 2 alpha (1 - alpha) (1 - q^k)).
inline double lookahead_variance_ratio(double alpha, int k, double q) {
  const double a = alpha * alpha * (1 - std::pow(q, 2 * k));
  return a / (a + 2 * alpha * (1 - alpha) * (1 - std::pow(q, k)));
}

/// Consensus distance k local SGD steps after an exact average, homogeneous noisy quadratic,
/// per coordinate: (1/M) sum_i E (x_i - x_bar)^2 = eta^2 s^2 (1 - 1/M) (1 - q^2k) / (1 - q^2).
inline double consensus_distance(double eta, double s, int M, double q, int k) {
  return eta * eta * s * s * (1.0 - 1.0 / M) * (1 - std::pow(q, 2 * k)) / (1 - q * q);
}

}  // namespace slowmo::theory
