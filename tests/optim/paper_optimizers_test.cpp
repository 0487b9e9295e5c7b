// QHM, QHAdam, Lion and Delta-SGD against their papers (Delta-SGD: its authors' code): long-double formula loops
// (support/reference.hpp), the identities the QH paper states, and hand calculations.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <limits>

#include <slowmo/optim/adam.hpp>
#include <slowmo/optim/delta_sgd.hpp>
#include <slowmo/optim/lion.hpp>
#include <slowmo/optim/qhadam.hpp>
#include <slowmo/optim/qhm.hpp>
#include <slowmo/optim/sgd.hpp>

#include "support/check.hpp"
#include "support/reference.hpp"

namespace {

using slowmo::Vector;

template <class T, class Opt, class Ref>
void check_against_reference(Opt opt, Ref reference, int n = 37, int steps = 40) {
  check::against_reference<T>(opt, reference, n, steps);
}

template <class T>
Vector<T> gradient_at(const Vector<T>& x, int t) {
  Vector<T> g(x.size());
  for (Eigen::Index i = 0; i < x.size(); ++i) g[i] = T(ref::gradient(int(i), t, x[i]));
  return g;
}

/// Runs a and b side by side on the reference gradient; the largest |x_a - x_b| seen.
template <class A, class B, class T = typename A::scalar_type>
double max_divergence(A a, B b, int steps = 30) {
  Vector<T> x = Vector<T>::LinSpaced(13, -2, 2), y = x;
  double worst = 0;
  for (int t = 0; t < steps; ++t) {
    a.step(x, gradient_at(x, t));
    b.step(y, gradient_at(y, t));
    worst = std::max(worst, double((x - y).cwiseAbs().maxCoeff()));
  }
  return worst;
}

}  // namespace

TEST_CASE("QHM, QHAdam and Lion keep their papers' defaults") {
  CHECK(slowmo::QhmOptions{}.nu == 0.7);
  CHECK(slowmo::QhmOptions{}.beta == 0.999);
  CHECK(slowmo::QhAdamOptions{}.nus[0] == 0.7);
  CHECK(slowmo::QhAdamOptions{}.nus[1] == 1.0);
  CHECK(slowmo::QhAdamOptions{}.betas[0] == 0.995);
  CHECK(slowmo::QhAdamOptions{}.betas[1] == 0.999);
  CHECK(slowmo::LionOptions{}.lr == 1e-4);
  CHECK(slowmo::LionOptions{}.betas[0] == 0.9);
  CHECK(slowmo::LionOptions{}.betas[1] == 0.99);
  CHECK(slowmo::LionOptions{}.weight_decay == 0.0);
}

TEST_CASE_TEMPLATE("QHM, QHAdam, Lion: 40-step trajectories equal the papers' formulas in long double", T, float,
                   double) {
  check_against_reference<T>(slowmo::Qhm<T>({.lr = 0.05}), ref::Qhm{.lr = 0.05L});
  check_against_reference<T>(slowmo::Qhm<T>({.lr = 0.1, .nu = 0.4, .beta = 0.8, .weight_decay = 0.05}),
                             ref::Qhm{.lr = 0.1L, .nu = 0.4L, .beta = 0.8L, .weight_decay = 0.05L});
  check_against_reference<T>(slowmo::QhAdam<T>({.lr = 0.01}), ref::QhAdam{.lr = 0.01L});
  check_against_reference<T>(
      slowmo::QhAdam<T>({.lr = 0.02, .betas = {0.9, 0.95}, .nus = {0.8, 0.6}, .eps = 1e-6, .weight_decay = 0.1}),
      ref::QhAdam{.lr = 0.02L, .beta1 = 0.9L, .beta2 = 0.95L, .nu1 = 0.8L, .nu2 = 0.6L, .eps = 1e-6L,
                  .weight_decay = 0.1L});
  check_against_reference<T>(slowmo::Lion<T>({.lr = 0.01}), ref::Lion{.lr = 0.01L});
  check_against_reference<T>(slowmo::Lion<T>({.lr = 0.02, .betas = {0.8, 0.95}, .weight_decay = 0.5}),
                             ref::Lion{.lr = 0.02L, .beta1 = 0.8L, .beta2 = 0.95L, .weight_decay = 0.5L});
}

TEST_CASE_TEMPLATE("QHM recovers SGD (nu = 0), dampened momentum (nu = 1) and Nesterov (nu = beta)", T, float,
                   double) {
  // QHM's buffer is an exponential average with zero start: b_t = (1 - beta) sum_s beta^(t-s) d_s
  // = (1 - beta) B_t, where B_t = beta B_{t-1} + d_t (B_1 = d_1) is torch's undampened buffer.
  //   nu = 1:    p -= lr b_t = lr (1 - beta) B_t: torch heavy ball, momentum beta, lr (1 - beta);
  //   nu = beta: p -= lr ((1 - beta) d + beta (1 - beta) B_t) = lr (1 - beta) (d + beta B_t):
  //              torch's Nesterov form (nesterov = true), momentum beta, lr (1 - beta)
  //              (the paper's NAG in its normalised form: QHM section 3).
  // Equal in exact arithmetic; computed in T they differ by roundings: a few ulps of x a step.
  const double lr = 0.1, beta = 0.8;
  const double tol = 30 * 16 * std::numeric_limits<T>::epsilon();
  CHECK(max_divergence(slowmo::Qhm<T>({.lr = lr, .nu = 0.0, .beta = beta}), slowmo::Sgd<T>({.lr = lr})) == 0.0);
  CHECK(max_divergence(slowmo::Qhm<T>({.lr = lr, .nu = 1.0, .beta = beta}),
                       slowmo::Sgd<T>({.lr = lr * (1 - beta), .momentum = beta})) <= tol);
  CHECK(max_divergence(slowmo::Qhm<T>({.lr = lr, .nu = beta, .beta = beta}),
                       slowmo::Nesterov<T>({.lr = lr * (1 - beta), .momentum = beta})) <= tol);
  // Without the lr scaling the identity fails: a step of lr instead of lr (1 - beta).
  CHECK(max_divergence(slowmo::Qhm<T>({.lr = lr, .nu = beta, .beta = beta}),
                       slowmo::Nesterov<T>({.lr = lr, .momentum = beta})) > 0.1);
}

TEST_CASE_TEMPLATE("QHAdam with nus = {1, 1} is Adam", T, float, double) {
  // nu1 = nu2 = 1: p -= lr (m / bc1) / (sqrt(v / bc2) + eps), Adam's step, rounded differently.
  const double tol = 30 * 16 * std::numeric_limits<T>::epsilon();
  CHECK(max_divergence(slowmo::QhAdam<T>({.lr = 0.05, .betas = {0.9, 0.99}, .nus = {1.0, 1.0}}),
                       slowmo::Adam<T>({.lr = 0.05, .betas = {0.9, 0.99}})) <= tol);
}

TEST_CASE_TEMPLATE("QHAdam: hand-computed first step", T, float, double) {
  // t = 1: m = (1 - b1) g, v = (1 - b2) g^2, so m / bc1 = g and v / bc2 = g^2, and
  // p_1 = p_0 - lr ((1 - nu1) g + nu1 g) / (sqrt((1 - nu2) g^2 + nu2 g^2) + eps) = p_0 - lr g / (|g| + eps).
  slowmo::QhAdam<T> opt({.lr = 0.25, .nus = {0.3, 0.6}, .eps = 0.0});
  Vector<T> x = Vector<T>::Zero(5);
  Vector<T> g(5);
  g << 2, -4, 0.5, -1, 8;
  opt.step(x, g);
  for (int i = 0; i < 5; ++i) CHECK(x[i] == doctest::Approx(-0.25 * (g[i] > 0 ? 1 : -1)).epsilon(8 * std::numeric_limits<T>::epsilon()));
}

TEST_CASE_TEMPLATE("Lion: every step moves each coordinate by exactly lr against the gradient's sign", T, float,
                   double) {
  // With a gradient of constant sign, c = beta1 m + (1 - beta1) g has g's sign from the first
  // step (m starts at 0 and keeps g's sign), so p_t = p_0 - t lr sign(g): exact for lr = 2^-4.
  // With weight decay lambda: p_t = (1 - lr lambda) p_{t-1} - lr sign(g).
  slowmo::Lion<T> plain({.lr = 0.0625});
  slowmo::Lion<T> decayed({.lr = 0.0625, .weight_decay = 2.0});
  Vector<T> x = Vector<T>::Zero(6), y = Vector<T>::Ones(6);
  Vector<T> g(6);
  double p = 1;
  for (int t = 1; t <= 8; ++t) {
    g << 3, -0.001, 7, -2, 1e3, -5;  // the size of g does not matter, its sign does
    plain.step(x, g);
    decayed.step(y, g);
    p = (1 - 0.0625 * 2.0) * p - 0.0625;
    CHECK(x[0] == T(-0.0625 * t));
    CHECK(x[1] == T(0.0625 * t));
    CHECK(y[0] == doctest::Approx(p).epsilon(8 * t * std::numeric_limits<T>::epsilon()));
  }
  // A zero gradient on a zero momentum: sign(0) = 0, no step.
  slowmo::Lion<T> still({.lr = 0.5});
  Vector<T> z = Vector<T>::Ones(3);
  still.step(z, Vector<T>(Vector<T>::Zero(3)));
  CHECK(z == Vector<T>::Ones(3));
}

TEST_CASE("Delta-SGD keeps its authors' defaults") {
  // jlylekim/auto-tuned-FL: Adsgd(lr = 0.2, theta = 1), run.sh's CIFAR-100 runs
  // --lr_amplifier=0.1 --lr_damping=1 (gamma = 2 / damping), options.py's --lr_eps 1e-8.
  const slowmo::DeltaSgdOptions o{};
  CHECK(o.lr == 0.2);
  CHECK(o.gamma == 2.0);
  CHECK(o.delta == 0.1);
  CHECK(o.theta0 == 1.0);
  CHECK(o.eps == 1e-8);
}

TEST_CASE_TEMPLATE("Delta-SGD: 40-step trajectories equal its authors' rule in long double", T, float, double) {
  check_against_reference<T>(slowmo::DeltaSgd<T>(), ref::DeltaSgd{});
  check_against_reference<T>(slowmo::DeltaSgd<T>({.lr = 0.05, .gamma = 1.0, .delta = 0.5, .theta0 = 2.0, .eps = 0.0}),
                             ref::DeltaSgd{.lr = 0.05L, .gamma = 1, .delta = 0.5L, .theta = 2, .eps = 0});
}

TEST_CASE_TEMPLATE("Delta-SGD on f = L/2 |x|^2: the second step size is 1/L, which lands on the minimum", T, float,
                   double) {
  // Step 1 (no previous step): eta_0 = 0.2 sqrt(1 + 0.1 * 1). Step 2: |g_1 - g_0| = L |x_1 - x_0|,
  // so the smoothness term is gamma / (2 L) = 1/L = 0.1 (gamma = 2, L = 10), below the growth
  // term eta_0 sqrt(1 + 0.1 theta_0), theta_0 = eta_0 / 0.2; eta_1 = 1/L + eps, and
  // x_2 = x_1 - (1/L + eps) L x_1 = -eps L x_1.
  const double L = 10, eps = 1e-8;
  slowmo::DeltaSgd<T> opt;
  Vector<T> x(3);
  x << 1, -2, 0.5;
  const Vector<T> x0 = x;
  opt.step(x, Vector<T>(T(L) * x));
  const double eta0 = 0.2 * std::sqrt(1.1);
  CHECK(double(opt.last_lr()) == doctest::Approx(eta0).epsilon(4 * std::numeric_limits<T>::epsilon()));
  CHECK(double(opt.theta()) == doctest::Approx(std::sqrt(1.1)).epsilon(4 * std::numeric_limits<T>::epsilon()));
  const Vector<T> x1 = x;
  for (int i = 0; i < 3; ++i)
    CHECK(double(x1[i]) == doctest::Approx((1 - eta0 * L) * double(x0[i])).epsilon(8 * std::numeric_limits<T>::epsilon()));
  CHECK(eta0 * std::sqrt(1 + 0.1 * eta0 / 0.2) > 1 / L);  // the smoothness term is the smaller
  opt.step(x, Vector<T>(T(L) * x));
  CHECK(double(opt.last_lr()) == doctest::Approx(1 / L + eps).epsilon(16 * std::numeric_limits<T>::epsilon()));
  // |x_2| is eps L |x_1| plus the rounding of x_1 - eta L x_1 (a few ulps of x_1).
  for (int i = 0; i < 3; ++i)
    CHECK(std::abs(double(x[i])) <= eps * L * std::abs(double(x1[i])) + 8 * std::numeric_limits<T>::epsilon() * std::abs(double(x1[i])));
}

TEST_CASE_TEMPLATE("Delta-SGD: a reset restarts from lr and theta0; a rebase keeps eta but drops the estimate", T,
                   float, double) {
  // On f = sum_i a_i x_i^2 / 2, a = 1..5, from lr = 0.5 the step size soon exceeds what the
  // curvature allows, so the smoothness term binds (checked by the last case).
  const double lr = 0.5, delta = 2.0, theta0 = 1.0;
  const Vector<T> a = Vector<T>::LinSpaced(5, 1, 5);
  auto run = [&](auto&& between) {
    slowmo::DeltaSgd<T> opt({.lr = lr, .delta = delta, .theta0 = theta0});
    Vector<T> x = Vector<T>::LinSpaced(5, -1, 1.5);
    for (int t = 0; t < 4; ++t) opt.step(x, Vector<T>(a.cwiseProduct(x)));
    const double eta_before = double(opt.last_lr()), theta_before = double(opt.theta());
    between(opt, x);
    opt.step(x, Vector<T>(a.cwiseProduct(x)));
    return std::array<double, 3>{eta_before, theta_before, double(opt.last_lr())};
  };
  const double tol = 4 * std::numeric_limits<T>::epsilon();
  // reset: the next step is a first step, eta = lr sqrt(1 + delta theta0).
  const auto reset = run([](auto& opt, auto&) { slowmo::reset_state(opt); });
  CHECK(reset[2] == doctest::Approx(lr * std::sqrt(1 + delta * theta0)).epsilon(tol));
  // rebase: only the growth term, from the eta and theta the optimizer had.
  const auto rebased = run([](auto& opt, auto& x) { slowmo::rebase(opt, x); });
  CHECK(rebased[2] == doctest::Approx(rebased[0] * std::sqrt(1 + delta * rebased[1])).epsilon(tol));
  // Without either, the smoothness term applies here and is the smaller.
  const auto plain = run([](auto&, auto&) {});
  CHECK(plain[2] < plain[0] * std::sqrt(1 + delta * plain[1]) * (1 - 1e-3));
}
