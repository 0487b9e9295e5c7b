// Minimises f(x) = |x - 3|^2 / 2 with Adam through the installed headers.
#include <slowmo/slowmo.hpp>

#include <cstdio>

int main() {
  Eigen::VectorXd x = Eigen::VectorXd::Zero(4);
  slowmo::Adam<double> opt({.lr = 0.1});
  for (int t = 0; t < 500; ++t) {
    const Eigen::VectorXd g = x.array() - 3.0;
    opt.step(x, g);
  }
  const double err = (x.array() - 3.0).abs().maxCoeff();
  std::printf("consumer: max |x - 3| = %.3g after %lld steps\n", err, static_cast<long long>(opt.steps()));
  return err < 1e-3 ? 0 : 1;
}
