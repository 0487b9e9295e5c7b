// single_worker: the single-worker optimizers on one least-squares problem.
//
// f(x) = |A x - b|^2 / (2 n) with a seeded random A (n = 400, d = 50); every optimizer
// starts from 0 and takes 100 full-batch steps. Prints the loss and the distance to the
// exact minimiser (from a QR solve) for each.
#include <slowmo/slowmo.hpp>

#include <Eigen/QR>

#include <cstdio>
#include <random>
#include <string>

namespace {

struct LeastSquares {
  Eigen::MatrixXd A;
  Eigen::VectorXd b, x_star;

  explicit LeastSquares(unsigned seed, int n = 400, int d = 50) : A(n, d), b(n) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal;
    for (int j = 0; j < d; ++j)
      for (int i = 0; i < n; ++i) A(i, j) = normal(rng) * (1.0 + 0.1 * j);  // uneven curvature
    for (int i = 0; i < n; ++i) b[i] = normal(rng);
    x_star = A.colPivHouseholderQr().solve(b);
  }
  double loss(const Eigen::VectorXd& x) const { return (A * x - b).squaredNorm() / (2.0 * A.rows()); }
  void gradient(const Eigen::VectorXd& x, Eigen::VectorXd& g) const {
    g.noalias() = A.transpose() * (A * x - b) / double(A.rows());
  }
};

template <slowmo::Optimizer Opt>
bool run(const std::string& name, Opt opt, const LeastSquares& p, int steps = 100) {
  Eigen::VectorXd x = Eigen::VectorXd::Zero(p.A.cols()), g(p.A.cols());
  const double start = p.loss(x);
  for (int t = 0; t < steps; ++t) {
    p.gradient(x, g);
    opt.step(x, g);
  }
  const double end = p.loss(x);
  std::printf("  %-34s  %11.6f  %11.2e  %9.2e\n", name.c_str(), end, end - p.loss(p.x_star),
              (x - p.x_star).norm());
  return end < start;
}

}  // namespace

int main() {
  using namespace slowmo;
  const LeastSquares p(42);
  std::printf("least squares, n = %lld, d = %lld, 100 full-batch steps from x = 0\n",
              static_cast<long long>(p.A.rows()), static_cast<long long>(p.A.cols()));
  std::printf("  %-34s  %11s  %11s  %9s\n", "optimizer", "loss", "excess", "|x - x*|");
  bool ok = true;
  ok &= run("Sgd lr 0.02", Sgd<double>({.lr = 0.02}), p);
  ok &= run("Sgd lr 0.02, momentum 0.9", Sgd<double>({.lr = 0.02, .momentum = 0.9}), p);
  ok &= run("Nesterov lr 0.02, momentum 0.9", Nesterov<double>({.lr = 0.02, .momentum = 0.9}), p);
  ok &= run("Adam lr 0.05", Adam<double>({.lr = 0.05}), p);
  ok &= run("AdamW lr 0.05, weight_decay 1e-3", AdamW<double>({.lr = 0.05, .weight_decay = 1e-3}), p);
  ok &= run("Lookahead(Adam), k 5, alpha 0.5", Lookahead(Adam<double>({.lr = 0.05}), {.k = 5, .alpha = 0.5}), p);
  ok &= run("Nesterov, warm-up + cosine", Nesterov<double, schedule::Sequence<schedule::Linear, schedule::Cosine>>(
                                                {.lr = 0.03}, schedule::warmup_cosine(10, 100)),
            p);
  return ok ? 0 : 1;
}
