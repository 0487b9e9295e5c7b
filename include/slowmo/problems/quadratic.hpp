// slowmo/problems/quadratic.hpp — heterogeneous (and noisy) quadratics:
//   f_i(x) = 1/2 (x - c_i)^T A_i (x - c_i),  A_i diagonal or dense SPD,
// with stochastic gradients A_i (x - c_i) + s xi, xi ~ N(0, I) (noise variance s^2 per
// coordinate). The minimiser of f = mean_i f_i is (sum_i A_i)^{-1} sum_i A_i c_i.
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/QR>
#include <cstdint>
#include <random>
#include <vector>

#include "slowmo/core/error.hpp"
#include "slowmo/problems/problem.hpp"
#include "slowmo/problems/random.hpp"

namespace slowmo::problems {

struct QuadraticOptions {
  int workers = 1;
  Eigen::Index dim = 10;
  double lambda_min = 0.5;              ///< eigenvalues of A_i evenly spaced in [lambda_min, lambda_max]
  double lambda_max = 2.0;
  double curvature_heterogeneity = 0;   ///< worker i's eigenvalues times a factor in [1 - h, 1 + h]
  double heterogeneity = 1.0;           ///< centres c_i ~ N(0, heterogeneity^2 I); 0: all the same (c_i = 0)
  bool dense = false;                   ///< A_i = Q_i diag Q_i^T with a random rotation Q_i per worker
  double noise = 0;                     ///< s: standard deviation of the gradient noise per coordinate
  std::uint64_t seed = 0;
};

class Quadratic {
 public:
  explicit Quadratic(const QuadraticOptions& o) : m_(o.workers), d_(o.dim), noise_(o.noise), seed_(o.seed), dense_(o.dense) {
    using slowmo::detail::finite;
    using slowmo::detail::require_option;
    require_option(o.workers >= 1, "problems::Quadratic", "workers", o.workers, "must be >= 1");
    require_option(o.dim >= 1, "problems::Quadratic", "dim", o.dim, "must be >= 1");
    require_option(finite(o.lambda_min) && o.lambda_min > 0, "problems::Quadratic", "lambda_min", o.lambda_min,
                   "must be > 0 (A_i positive definite)");
    require_option(finite(o.lambda_max) && o.lambda_max >= o.lambda_min, "problems::Quadratic", "lambda_max",
                   o.lambda_max, "must be >= lambda_min");
    require_option(finite(o.curvature_heterogeneity) && o.curvature_heterogeneity >= 0 && o.curvature_heterogeneity < 1,
                   "problems::Quadratic", "curvature_heterogeneity", o.curvature_heterogeneity, "must be in [0, 1)");
    require_option(finite(o.heterogeneity) && o.heterogeneity >= 0, "problems::Quadratic", "heterogeneity",
                   o.heterogeneity, "must be >= 0");
    require_option(finite(o.noise) && o.noise >= 0, "problems::Quadratic", "noise", o.noise, "must be >= 0");
    std::mt19937_64 rng(o.seed);
    std::normal_distribution<double> normal;
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    Eigen::VectorXd spectrum = Eigen::VectorXd::LinSpaced(d_, o.lambda_min, o.lambda_max);
    if (d_ == 1) spectrum[0] = o.lambda_min;
    for (int i = 0; i < m_; ++i) {
      const double factor = 1.0 + o.curvature_heterogeneity * uniform(rng);
      Eigen::VectorXd lambdas = spectrum * factor;
      Eigen::VectorXd c(d_);
      for (Eigen::Index j = 0; j < d_; ++j) c[j] = o.heterogeneity * normal(rng);
      if (o.dense) {
        Eigen::MatrixXd G(d_, d_);
        for (Eigen::Index k = 0; k < G.size(); ++k) G.data()[k] = normal(rng);
        const Eigen::MatrixXd Q = Eigen::HouseholderQR<Eigen::MatrixXd>(G).householderQ();
        A_.push_back(Q * lambdas.asDiagonal() * Q.transpose());
      }
      diag_.push_back(lambdas);
      c_.push_back(c);
    }
    solve();
  }

  /// Diagonal quadratics with the given curvatures a_i and centres c_i (one vector per
  /// worker), for problems whose constants a theory calculation fixes.
  Quadratic(const std::vector<Eigen::VectorXd>& curvatures, const std::vector<Eigen::VectorXd>& centres,
            double noise = 0, std::uint64_t seed = 0)
      : m_(int(curvatures.size())), d_(curvatures.empty() ? 0 : curvatures[0].size()), noise_(noise), seed_(seed) {
    slowmo::detail::require_option(m_ >= 1 && centres.size() == curvatures.size(), "problems::Quadratic",
                                   "centres.size()", centres.size(), "must equal curvatures.size() >= 1");
    for (int i = 0; i < m_; ++i) {
      detail::check_dim("Quadratic", curvatures[std::size_t(i)].size(), d_);
      detail::check_dim("Quadratic", centres[std::size_t(i)].size(), d_);
      slowmo::detail::require_option(curvatures[std::size_t(i)].minCoeff() > 0, "problems::Quadratic", "curvature",
                                     curvatures[std::size_t(i)].minCoeff(), "must be > 0");
      diag_.push_back(curvatures[std::size_t(i)]);
      c_.push_back(centres[std::size_t(i)]);
    }
    solve();
  }

  int workers() const { return m_; }
  Eigen::Index dim() const { return d_; }
  double noise() const { return noise_; }
  /// Eigenvalues of A_i (its diagonal when A_i is diagonal).
  const Eigen::VectorXd& eigenvalues(int rank) const { return diag_[std::size_t(rank)]; }
  const Eigen::VectorXd& centre(int rank) const { return c_[std::size_t(rank)]; }

  template <class T>
  double loss(int rank, const Vector<T>& x) const {
    detail::check_rank("Quadratic", rank, m_);
    detail::check_dim("Quadratic", x.size(), d_);
    const Eigen::VectorXd e = x.template cast<double>() - c_[std::size_t(rank)];
    return 0.5 * e.dot(apply(rank, e));
  }
  template <class T>
  double loss(const Vector<T>& x) const {
    double f = 0;
    for (int i = 0; i < m_; ++i) f += loss(i, x);
    return f / m_;
  }
  /// f(x) - f(x*).
  template <class T>
  double excess_loss(const Vector<T>& x) const {
    return loss(x) - f_star_;
  }

  template <class T>
  void gradient(int rank, const Vector<T>& x, Vector<T>& g) const {
    detail::check_rank("Quadratic", rank, m_);
    detail::check_dim("Quadratic", x.size(), d_);
    g = apply(rank, x.template cast<double>() - c_[std::size_t(rank)]).template cast<T>();
  }
  /// gradient + s * xi with xi_j = normal(stream(seed, rank, step), j).
  template <class T>
  void sample_gradient(int rank, std::int64_t step, const Vector<T>& x, Vector<T>& g) const {
    gradient(rank, x, g);
    if (noise_ == 0) return;
    const std::uint64_t key = stream_key(seed_, std::uint64_t(rank), std::uint64_t(step));
    for (Eigen::Index j = 0; j < d_; ++j) g[j] += T(noise_ * normal(key, std::uint64_t(j)));
  }

  /// out = A_i v, the Hessian of f_i (at any x) times v: what savic::Oasis asks for.
  template <class T>
  void hessian_vector(int rank, const Vector<T>& x, const Vector<T>& v, Vector<T>& out) const {
    detail::check_rank("Quadratic", rank, m_);
    detail::check_dim("Quadratic", x.size(), d_);
    detail::check_dim("Quadratic", v.size(), d_);
    out = apply(rank, v.template cast<double>()).template cast<T>();
  }

  const Eigen::VectorXd& minimizer() const { return x_star_; }
  double optimum_loss() const { return f_star_; }

 private:
  /// A_i v
  Eigen::VectorXd apply(int rank, const Eigen::VectorXd& v) const {
    if (dense_) return A_[std::size_t(rank)] * v;
    return diag_[std::size_t(rank)].cwiseProduct(v);
  }

  void solve() {
    Eigen::VectorXd b = Eigen::VectorXd::Zero(d_);
    for (int i = 0; i < m_; ++i) b += apply(i, c_[std::size_t(i)]);
    if (dense_) {
      Eigen::MatrixXd H = Eigen::MatrixXd::Zero(d_, d_);
      for (const auto& A : A_) H += A;
      x_star_ = H.ldlt().solve(b);
    } else {
      Eigen::VectorXd h = Eigen::VectorXd::Zero(d_);
      for (const auto& l : diag_) h += l;
      x_star_ = b.cwiseQuotient(h);
    }
    f_star_ = loss(x_star_);
  }

  int m_;
  Eigen::Index d_;
  double noise_;
  std::uint64_t seed_;
  bool dense_ = false;
  std::vector<Eigen::VectorXd> diag_;  // eigenvalues (the diagonal when !dense_)
  std::vector<Eigen::MatrixXd> A_;     // dense_ only
  std::vector<Eigen::VectorXd> c_;
  Eigen::VectorXd x_star_;
  double f_star_ = 0;
};

}  // namespace slowmo::problems
