// slowmo/problems/least_squares.hpp — least squares with per-worker design matrices:
//   f_i(x) = |A_i x - b_i|^2 / (2 n_i),  b_i = A_i (x_true + h delta_i) + noise,
// where the per-worker shift delta_i makes the workers disagree (heterogeneity h). The
// minimiser of f = mean_i f_i solves (sum_i A_i^T A_i / n_i) x = sum_i A_i^T b_i / n_i.
#pragma once

#include <Eigen/Cholesky>
#include <cstdint>
#include <random>
#include <vector>

#include "slowmo/core/error.hpp"
#include "slowmo/problems/problem.hpp"
#include "slowmo/problems/random.hpp"

namespace slowmo::problems {

struct LeastSquaresOptions {
  int workers = 1;
  Eigen::Index dim = 10;
  int rows_per_worker = 50;
  double heterogeneity = 0.0;  ///< std of each worker's shift of the ground truth
  double noise = 0.1;          ///< std of the label noise
  double conditioning = 1.0;   ///< column j of every A_i is scaled by conditioning^(j / (dim - 1))
  int batch = 8;               ///< rows per stochastic gradient (drawn with replacement)
  std::uint64_t seed = 0;
};

class LeastSquares {
 public:
  explicit LeastSquares(const LeastSquaresOptions& o) : o_(o) {
    using slowmo::detail::finite;
    using slowmo::detail::require_option;
    require_option(o.workers >= 1, "problems::LeastSquares", "workers", o.workers, "must be >= 1");
    require_option(o.dim >= 1, "problems::LeastSquares", "dim", o.dim, "must be >= 1");
    require_option(o.rows_per_worker >= 1, "problems::LeastSquares", "rows_per_worker", o.rows_per_worker,
                   "must be >= 1");
    require_option(finite(o.heterogeneity) && o.heterogeneity >= 0, "problems::LeastSquares", "heterogeneity",
                   o.heterogeneity, "must be >= 0");
    require_option(finite(o.noise) && o.noise >= 0, "problems::LeastSquares", "noise", o.noise, "must be >= 0");
    require_option(finite(o.conditioning) && o.conditioning >= 1, "problems::LeastSquares", "conditioning",
                   o.conditioning, "must be >= 1");
    require_option(o.batch >= 1, "problems::LeastSquares", "batch", o.batch, "must be >= 1");
    std::mt19937_64 rng(o.seed);
    std::normal_distribution<double> normal;
    Eigen::VectorXd truth(o.dim), scale(o.dim);
    for (Eigen::Index j = 0; j < o.dim; ++j) {
      truth[j] = normal(rng);
      scale[j] = o.dim == 1 ? 1.0 : std::pow(o.conditioning, double(j) / double(o.dim - 1));
    }
    Eigen::MatrixXd H = Eigen::MatrixXd::Zero(o.dim, o.dim);
    Eigen::VectorXd rhs = Eigen::VectorXd::Zero(o.dim);
    for (int i = 0; i < o.workers; ++i) {
      Eigen::MatrixXd A(o.rows_per_worker, o.dim);
      for (Eigen::Index k = 0; k < A.size(); ++k) A.data()[k] = normal(rng);
      A = A * scale.asDiagonal();
      Eigen::VectorXd shifted = truth;
      for (Eigen::Index j = 0; j < o.dim; ++j) shifted[j] += o.heterogeneity * normal(rng);
      Eigen::VectorXd b = A * shifted;
      for (Eigen::Index k = 0; k < b.size(); ++k) b[k] += o.noise * normal(rng);
      H += A.transpose() * A / double(o.rows_per_worker);
      rhs += A.transpose() * b / double(o.rows_per_worker);
      A_.push_back(std::move(A));
      b_.push_back(std::move(b));
    }
    x_star_ = H.ldlt().solve(rhs);
    f_star_ = loss(x_star_);
  }

  int workers() const { return o_.workers; }
  Eigen::Index dim() const { return o_.dim; }
  const Eigen::MatrixXd& design(int rank) const { return A_[std::size_t(rank)]; }
  const Eigen::VectorXd& targets(int rank) const { return b_[std::size_t(rank)]; }

  template <class T>
  double loss(int rank, const Vector<T>& x) const {
    detail::check_rank("LeastSquares", rank, o_.workers);
    detail::check_dim("LeastSquares", x.size(), o_.dim);
    const auto i = std::size_t(rank);
    return (A_[i] * x.template cast<double>() - b_[i]).squaredNorm() / (2.0 * double(A_[i].rows()));
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

  template <class T>
  void gradient(int rank, const Vector<T>& x, Vector<T>& g) const {
    detail::check_rank("LeastSquares", rank, o_.workers);
    detail::check_dim("LeastSquares", x.size(), o_.dim);
    const auto i = std::size_t(rank);
    g = (A_[i].transpose() * (A_[i] * x.template cast<double>() - b_[i]) / double(A_[i].rows())).template cast<T>();
  }
  /// The gradient of the mean squared error over `batch` rows drawn with replacement.
  template <class T>
  void sample_gradient(int rank, std::int64_t step, const Vector<T>& x, Vector<T>& g) const {
    detail::check_rank("LeastSquares", rank, o_.workers);
    detail::check_dim("LeastSquares", x.size(), o_.dim);
    const auto& A = A_[std::size_t(rank)];
    const auto& b = b_[std::size_t(rank)];
    const std::uint64_t key = stream_key(o_.seed, std::uint64_t(rank), std::uint64_t(step));
    const Eigen::VectorXd xd = x.template cast<double>();
    Eigen::VectorXd acc = Eigen::VectorXd::Zero(o_.dim);
    for (int k = 0; k < o_.batch; ++k) {
      const auto row = Eigen::Index(uniform01(key, std::uint64_t(k)) * double(A.rows()));
      acc += A.row(row).transpose() * (A.row(row).dot(xd) - b[row]);
    }
    g = (acc / double(o_.batch)).cast<T>();
  }

  const Eigen::VectorXd& minimizer() const { return x_star_; }
  double optimum_loss() const { return f_star_; }

 private:
  LeastSquaresOptions o_;
  std::vector<Eigen::MatrixXd> A_;
  std::vector<Eigen::VectorXd> b_;
  Eigen::VectorXd x_star_;
  double f_star_ = 0;
};

}  // namespace slowmo::problems
