// slowmo/problems/logistic.hpp — logistic regression (binary, classes = 2) and softmax
// regression (classes > 2) on synthetic Gaussian-cluster data, split across workers with a
// Dirichlet(alpha) label skew (Hsu et al. 2019): the smaller alpha, the fewer classes each
// worker sees. With an L2 term the objective is strongly convex; its minimiser is computed
// by Newton's method at construction.
//
// Parameters: binary, w in R^(features + 1) (the last entry is the bias); softmax, the
// (features + 1) x classes matrix W stored column by column (column k scores class k).
#pragma once

#include <Eigen/Cholesky>
#include <algorithm>
#include <cmath>
#include <functional>
#include <cstdint>
#include <random>
#include <vector>

#include "slowmo/core/error.hpp"
#include "slowmo/problems/problem.hpp"
#include "slowmo/problems/random.hpp"

namespace slowmo::problems {

struct LogisticOptions {
  int workers = 1;
  Eigen::Index features = 20;
  int classes = 2;               ///< 2: binary logistic regression; more: softmax regression
  int samples_per_worker = 200;  ///< on average; the label skew makes workers' sizes differ
  double dirichlet_alpha = 0.5;  ///< label skew; <= 0 for an IID split
  double separation = 1.5;       ///< std of the class means (larger: easier)
  double l2 = 1e-3;              ///< L2 regularisation on all parameters
  int batch = 32;                ///< samples per stochastic gradient (drawn with replacement)
  std::uint64_t seed = 0;
};

class LogisticRegression {
 public:
  explicit LogisticRegression(const LogisticOptions& o) : o_(o), f1_(o.features + 1) {
    using slowmo::detail::finite;
    using slowmo::detail::require_option;
    require_option(o.workers >= 1, "problems::LogisticRegression", "workers", o.workers, "must be >= 1");
    require_option(o.features >= 1, "problems::LogisticRegression", "features", o.features, "must be >= 1");
    require_option(o.classes >= 2, "problems::LogisticRegression", "classes", o.classes, "must be >= 2");
    require_option(o.samples_per_worker >= 1, "problems::LogisticRegression", "samples_per_worker",
                   o.samples_per_worker, "must be >= 1");
    require_option(finite(o.separation) && o.separation > 0, "problems::LogisticRegression", "separation",
                   o.separation, "must be > 0");
    require_option(finite(o.l2) && o.l2 > 0, "problems::LogisticRegression", "l2", o.l2,
                   "must be > 0 (it makes the minimiser unique)");
    require_option(o.batch >= 1, "problems::LogisticRegression", "batch", o.batch, "must be >= 1");
    generate();
    solve();
  }

  int workers() const { return o_.workers; }
  int classes() const { return o_.classes; }
  Eigen::Index dim() const { return binary() ? f1_ : f1_ * o_.classes; }
  /// Worker i's features (with a trailing 1 for the bias) and labels.
  const Eigen::MatrixXd& features(int rank) const { return X_[std::size_t(rank)]; }
  const std::vector<int>& labels(int rank) const { return y_[std::size_t(rank)]; }

  template <class T>
  double loss(int rank, const Vector<T>& x) const {
    check(rank, x.size());
    return evaluate(rank, x.template cast<double>(), nullptr);
  }
  template <class T>
  double loss(const Vector<T>& x) const {
    double f = 0;
    for (int i = 0; i < o_.workers; ++i) f += loss(i, x);
    return f / o_.workers;
  }
  template <class T>
  double excess_loss(const Vector<T>& x) const {
    return loss(x) - f_star_;
  }
  /// Fraction of all samples the model classifies correctly.
  template <class T>
  double accuracy(const Vector<T>& x) const {
    const Eigen::VectorXd xd = x.template cast<double>();
    std::size_t right = 0, total = 0;
    for (int i = 0; i < o_.workers; ++i) {
      const Eigen::MatrixXd Z = scores(i, xd);
      for (Eigen::Index n = 0; n < Z.rows(); ++n) {
        Eigen::Index best = 0;
        if (binary())
          best = Z(n, 0) > 0 ? 1 : 0;
        else
          Z.row(n).maxCoeff(&best);
        right += best == y_[std::size_t(i)][std::size_t(n)];
        ++total;
      }
    }
    return double(right) / double(total);
  }

  template <class T>
  void gradient(int rank, const Vector<T>& x, Vector<T>& g) const {
    check(rank, x.size());
    Eigen::VectorXd gd;
    evaluate(rank, x.template cast<double>(), &gd);
    g = gd.cast<T>();
  }
  /// The gradient over `batch` samples drawn with replacement (plus the L2 term).
  template <class T>
  void sample_gradient(int rank, std::int64_t step, const Vector<T>& x, Vector<T>& g) const {
    check(rank, x.size());
    const auto& X = X_[std::size_t(rank)];
    const std::uint64_t key = stream_key(o_.seed, std::uint64_t(rank), std::uint64_t(step));
    std::vector<Eigen::Index> rows(std::size_t(o_.batch));
    for (int k = 0; k < o_.batch; ++k)
      rows[std::size_t(k)] = Eigen::Index(uniform01(key, std::uint64_t(k)) * double(X.rows()));
    Eigen::VectorXd gd;
    evaluate(rank, x.template cast<double>(), &gd, &rows);
    g = gd.cast<T>();
  }

  /// out = (Hessian of f_i at x) v, in closed form over all of worker i's samples (the L2
  /// term included): binary, X^T diag(s (1 - s)) X v / n; softmax, per sample the block
  /// diag(p) - p p^T of the scores' Hessian. What savic::Oasis asks for.
  template <class T>
  void hessian_vector(int rank, const Vector<T>& x, const Vector<T>& v, Vector<T>& out) const {
    check(rank, x.size());
    detail::check_dim("LogisticRegression", v.size(), dim());
    const auto& X = X_[std::size_t(rank)];
    const Eigen::VectorXd xd = x.template cast<double>(), vd = v.template cast<double>();
    const double n = double(X.rows());
    Eigen::VectorXd hv;
    if (binary()) {
      const Eigen::VectorXd z = X * xd;
      Eigen::VectorXd u = X * vd;
      for (Eigen::Index k = 0; k < z.size(); ++k) u[k] *= sigmoid(z[k]) * (1 - sigmoid(z[k]));
      hv = X.transpose() * u / n;
    } else {
      Eigen::MatrixXd P = scores(rank, xd);
      Eigen::MatrixXd U = X * Eigen::Map<const Eigen::MatrixXd>(vd.data(), f1_, o_.classes);
      for (Eigen::Index k = 0; k < P.rows(); ++k) {
        P.row(k).array() = (P.row(k).array() - P.row(k).maxCoeff()).exp();
        P.row(k) /= P.row(k).sum();
        const double pu = P.row(k).dot(U.row(k));
        U.row(k) = P.row(k).cwiseProduct(U.row(k)) - pu * P.row(k);
      }
      const Eigen::MatrixXd G = X.transpose() * U / n;
      hv = Eigen::Map<const Eigen::VectorXd>(G.data(), G.size());
    }
    out = (hv + o_.l2 * vd).template cast<T>();
  }

  const Eigen::VectorXd& minimizer() const { return x_star_; }
  double optimum_loss() const { return f_star_; }

 private:
  bool binary() const { return o_.classes == 2; }
  void check(int rank, Eigen::Index size) const {
    detail::check_rank("LogisticRegression", rank, o_.workers);
    detail::check_dim("LogisticRegression", size, dim());
  }

  /// Scores of worker i's samples: n x 1 (binary logit) or n x classes.
  Eigen::MatrixXd scores(int rank, const Eigen::VectorXd& x) const {
    const auto& X = X_[std::size_t(rank)];
    if (binary()) return X * x;
    return X * Eigen::Map<const Eigen::MatrixXd>(x.data(), f1_, o_.classes);
  }

  /// Mean cross-entropy over the chosen samples (all by default) + l2/2 |x|^2, and its
  /// gradient when `grad` is given.
  double evaluate(int rank, const Eigen::VectorXd& x, Eigen::VectorXd* grad,
                  const std::vector<Eigen::Index>* rows = nullptr) const {
    const auto& X_all = X_[std::size_t(rank)];
    const auto& y_all = y_[std::size_t(rank)];
    Eigen::MatrixXd X;
    std::vector<int> y;
    if (rows) {
      X.resize(Eigen::Index(rows->size()), f1_);
      for (std::size_t k = 0; k < rows->size(); ++k) {
        X.row(Eigen::Index(k)) = X_all.row((*rows)[k]);
        y.push_back(y_all[std::size_t((*rows)[k])]);
      }
    }
    const Eigen::MatrixXd& Xs = rows ? X : X_all;
    const std::vector<int>& ys = rows ? y : y_all;
    const double n = double(Xs.rows());
    double f = 0;
    if (binary()) {
      const Eigen::VectorXd z = Xs * x;
      Eigen::VectorXd r(z.size());
      for (Eigen::Index k = 0; k < z.size(); ++k) {
        const double yk = ys[std::size_t(k)];
        f += softplus(z[k]) - yk * z[k];
        r[k] = sigmoid(z[k]) - yk;
      }
      if (grad) *grad = Xs.transpose() * r / n + o_.l2 * x;
    } else {
      const Eigen::Map<const Eigen::MatrixXd> W(x.data(), f1_, o_.classes);
      Eigen::MatrixXd Z = Xs * W;
      for (Eigen::Index k = 0; k < Z.rows(); ++k) {
        const double zmax = Z.row(k).maxCoeff();
        Z.row(k).array() = (Z.row(k).array() - zmax).exp();
        const double s = Z.row(k).sum();
        f += std::log(s) + zmax - (std::log(Z(k, ys[std::size_t(k)])) + zmax);
        Z.row(k) /= s;  // probabilities
        Z(k, ys[std::size_t(k)]) -= 1.0;
      }
      if (grad) {
        const Eigen::MatrixXd G = Xs.transpose() * Z / n;
        *grad = Eigen::Map<const Eigen::VectorXd>(G.data(), G.size()) + o_.l2 * x;
      }
    }
    return f / n + 0.5 * o_.l2 * x.squaredNorm();
  }

  static double sigmoid(double z) { return z >= 0 ? 1 / (1 + std::exp(-z)) : std::exp(z) / (1 + std::exp(z)); }
  static double softplus(double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }

  void generate() {
    std::mt19937_64 rng(o_.seed);
    std::normal_distribution<double> normal;
    const int K = o_.classes, m = o_.workers;
    Eigen::MatrixXd means(K, o_.features);
    for (Eigen::Index k = 0; k < means.size(); ++k) means.data()[k] = o_.separation * normal(rng);
    // Per class, the share of its samples each worker receives: Dirichlet(alpha, ..., alpha).
    const long total = long(o_.samples_per_worker) * m;
    const long per_class = total / K;
    std::vector<std::vector<long>> counts(static_cast<std::size_t>(K), std::vector<long>(static_cast<std::size_t>(m)));
    for (int k = 0; k < K; ++k) {
      std::vector<double> share(std::size_t(m), 1.0 / m);
      if (o_.dirichlet_alpha > 0) {
        std::gamma_distribution<double> gamma(o_.dirichlet_alpha, 1.0);
        double sum = 0;
        for (auto& s : share) sum += (s = gamma(rng));
        for (auto& s : share) s /= sum;
      }
      // Largest-remainder rounding so that the counts add up to per_class.
      long assigned = 0;
      std::vector<std::pair<double, int>> remainders;
      for (int i = 0; i < m; ++i) {
        const double exact = share[std::size_t(i)] * double(per_class);
        counts[std::size_t(k)][std::size_t(i)] = long(exact);
        assigned += long(exact);
        remainders.push_back({exact - std::floor(exact), i});
      }
      std::sort(remainders.begin(), remainders.end(), std::greater<>());
      for (long r = 0; r < per_class - assigned; ++r) ++counts[std::size_t(k)][std::size_t(remainders[std::size_t(r)].second)];
    }
    X_.resize(std::size_t(m));
    y_.resize(std::size_t(m));
    for (int i = 0; i < m; ++i) {
      long n = 0;
      for (int k = 0; k < K; ++k) n += counts[std::size_t(k)][std::size_t(i)];
      if (n == 0) {  // a worker with no data would have an undefined loss: give it one sample
        counts[0][std::size_t(i)] = 1;
        n = 1;
      }
      Eigen::MatrixXd X(n, f1_);
      long row = 0;
      for (int k = 0; k < K; ++k)
        for (long c = 0; c < counts[std::size_t(k)][std::size_t(i)]; ++c, ++row) {
          for (Eigen::Index j = 0; j < o_.features; ++j) X(row, j) = means(k, j) + normal(rng);
          X(row, o_.features) = 1.0;
          y_[std::size_t(i)].push_back(k);
        }
      X_[std::size_t(i)] = std::move(X);
    }
  }

  /// Newton's method with backtracking on f = mean_i f_i, to a gradient norm of 1e-10.
  void solve() {
    const Eigen::Index D = dim();
    Eigen::VectorXd x = Eigen::VectorXd::Zero(D);
    for (int it = 0; it < 100; ++it) {
      Eigen::VectorXd g = Eigen::VectorXd::Zero(D), gi;
      Eigen::MatrixXd H = Eigen::MatrixXd::Zero(D, D);
      double f = 0;
      for (int i = 0; i < o_.workers; ++i) {
        f += evaluate(i, x, &gi) / o_.workers;
        g += gi / o_.workers;
        add_hessian(i, x, H, 1.0 / o_.workers);
      }
      H.diagonal().array() += o_.l2;
      if (g.norm() < 1e-10) break;
      const Eigen::VectorXd step = H.ldlt().solve(g);
      double t = 1;
      auto total = [&](const Eigen::VectorXd& z) {
        double s = 0;
        for (int i = 0; i < o_.workers; ++i) s += evaluate(i, z, nullptr) / o_.workers;
        return s;
      };
      while (total(x - t * step) > f - 1e-4 * t * g.dot(step) && t > 1e-10) t /= 2;
      x -= t * step;
    }
    x_star_ = x;
    f_star_ = loss(x_star_);
  }

  /// H += weight * (Hessian of worker i's mean cross-entropy at x).
  void add_hessian(int rank, const Eigen::VectorXd& x, Eigen::MatrixXd& H, double weight) const {
    const auto& X = X_[std::size_t(rank)];
    const double scale = weight / double(X.rows());
    if (binary()) {
      const Eigen::VectorXd z = X * x;
      Eigen::VectorXd w(z.size());
      for (Eigen::Index k = 0; k < z.size(); ++k) w[k] = sigmoid(z[k]) * (1 - sigmoid(z[k]));
      H.noalias() += scale * X.transpose() * w.asDiagonal() * X;
      return;
    }
    const int K = o_.classes;
    const Eigen::Map<const Eigen::MatrixXd> W(x.data(), f1_, K);
    Eigen::MatrixXd P = X * W;
    for (Eigen::Index n = 0; n < P.rows(); ++n) {
      P.row(n).array() = (P.row(n).array() - P.row(n).maxCoeff()).exp();
      P.row(n) /= P.row(n).sum();
    }
    // Block (k, l) = X^T diag(delta_kl p_k - p_k p_l) X.
    for (int k = 0; k < K; ++k)
      for (int l = k; l < K; ++l) {
        Eigen::VectorXd w = -P.col(k).cwiseProduct(P.col(l));
        if (k == l) w += P.col(k);
        const Eigen::MatrixXd B = scale * X.transpose() * w.asDiagonal() * X;
        H.block(k * f1_, l * f1_, f1_, f1_) += B;
        if (l != k) H.block(l * f1_, k * f1_, f1_, f1_) += B.transpose();
      }
  }

  LogisticOptions o_;
  Eigen::Index f1_;
  std::vector<Eigen::MatrixXd> X_;
  std::vector<std::vector<int>> y_;
  Eigen::VectorXd x_star_;
  double f_star_ = 0;
};

}  // namespace slowmo::problems
