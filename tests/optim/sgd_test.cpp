// Sgd and Nesterov against hand calculations and against the scalar PyTorch reference.
#include <doctest/doctest.h>

#include <slowmo/optim/sgd.hpp>

#include "support/check.hpp"
#include "support/reference.hpp"

namespace {

using slowmo::Vector;

// f(x) = x^2 / 2 in each coordinate, so the gradient is x itself.
template <class Opt, class T = typename Opt::scalar_type>
std::vector<T> run_on_half_square(Opt& opt, T x0, int steps) {
  Vector<T> x = Vector<T>::Constant(3, x0);
  std::vector<T> out;
  for (int t = 0; t < steps; ++t) {
    const Vector<T> g = x;
    opt.step(x, g);
    REQUIRE(x[0] == x[2]);
    out.push_back(x[0]);
  }
  return out;
}

template <class T, class Opt>
void check_against_reference(Opt opt, ref::Sgd reference, int n = 37, int steps = 40) {
  check::against_reference<T>(opt, reference, n, steps);
}

}  // namespace

TEST_CASE_TEMPLATE("Sgd: hand-computed trajectories on f(x) = x^2/2", T, float, double) {
  // A handful of roundings per step, each at most eps/2 relative: 16 eps is a safe bound for 3 steps.
  const double tol = 16 * std::numeric_limits<T>::epsilon();
  SUBCASE("plain: x_{t+1} = (1 - lr) x_t") {
    slowmo::Sgd<T> opt({.lr = 0.1});
    const auto xs = run_on_half_square(opt, T(1), 3);
    CHECK(xs[0] == doctest::Approx(0.9).epsilon(tol));
    CHECK(xs[1] == doctest::Approx(0.81).epsilon(tol));
    CHECK(xs[2] == doctest::Approx(0.729).epsilon(tol));
  }
  SUBCASE("heavy ball, momentum 0.9") {
    // b1 = 1, x1 = 0.9; b2 = 0.9*1 + 0.9 = 1.8, x2 = 0.72; b3 = 1.62 + 0.72 = 2.34, x3 = 0.486
    slowmo::Sgd<T> opt({.lr = 0.1, .momentum = 0.9});
    const auto xs = run_on_half_square(opt, T(1), 3);
    CHECK(xs[0] == doctest::Approx(0.9).epsilon(tol));
    CHECK(xs[1] == doctest::Approx(0.72).epsilon(tol));
    CHECK(xs[2] == doctest::Approx(0.486).epsilon(tol));
  }
  SUBCASE("Nesterov, momentum 0.9") {
    // b1 = 1, d = 1 + 0.9 = 1.9, x1 = 0.81; b2 = 0.9 + 0.81 = 1.71, d = 0.81 + 1.539, x2 = 0.5751
    slowmo::Sgd<T> opt({.lr = 0.1, .momentum = 0.9, .nesterov = true});
    const auto xs = run_on_half_square(opt, T(1), 2);
    CHECK(xs[0] == doctest::Approx(0.81).epsilon(tol));
    CHECK(xs[1] == doctest::Approx(0.5751).epsilon(tol));
    slowmo::Nesterov<T> named({.lr = 0.1, .momentum = 0.9});
    CHECK(run_on_half_square(named, T(1), 2) == xs);
  }
  SUBCASE("dampening 0.5 and weight decay 0.1, momentum 0.5") {
    // d1 = 1 + 0.1 = 1.1, b1 = 1.1 (no dampening on the first step), x1 = 0.89
    // d2 = 0.89 + 0.089 = 0.979, b2 = 0.55 + 0.4895 = 1.0395, x2 = 0.78605
    slowmo::Sgd<T> opt({.lr = 0.1, .momentum = 0.5, .dampening = 0.5, .weight_decay = 0.1});
    const auto xs = run_on_half_square(opt, T(1), 2);
    CHECK(xs[0] == doctest::Approx(0.89).epsilon(tol));
    CHECK(xs[1] == doctest::Approx(0.78605).epsilon(tol));
  }
  SUBCASE("maximize climbs: x_{t+1} = (1 + lr) x_t") {
    slowmo::Sgd<T> opt({.lr = 0.1, .maximize = true});
    const auto xs = run_on_half_square(opt, T(1), 2);
    CHECK(xs[0] == doctest::Approx(1.1).epsilon(tol));
    CHECK(xs[1] == doctest::Approx(1.21).epsilon(tol));
  }
}

TEST_CASE_TEMPLATE("Sgd: 40-step trajectories equal the scalar PyTorch reference", T, float, double) {
  check_against_reference<T>(slowmo::Sgd<T>({.lr = 0.05}), {.lr = 0.05L});
  check_against_reference<T>(slowmo::Sgd<T>({.lr = 0.05, .momentum = 0.9}), {.lr = 0.05L, .momentum = 0.9L});
  check_against_reference<T>(slowmo::Sgd<T>({.lr = 0.05, .momentum = 0.9, .nesterov = true}),
                             {.lr = 0.05L, .momentum = 0.9L, .nesterov = true});
  check_against_reference<T>(slowmo::Nesterov<T>({.lr = 0.05, .momentum = 0.8, .weight_decay = 0.01}),
                             {.lr = 0.05L, .momentum = 0.8L, .weight_decay = 0.01L, .nesterov = true});
  check_against_reference<T>(
      slowmo::Sgd<T>({.lr = 0.02, .momentum = 0.7, .dampening = 0.3, .weight_decay = 0.05, .maximize = true}),
      {.lr = 0.02L, .momentum = 0.7L, .dampening = 0.3L, .weight_decay = 0.05L, .maximize = true});
  check_against_reference<T>(slowmo::Sgd<T>({.lr = 0.05, .weight_decay = 0.1, .maximize = true}),
                             {.lr = 0.05L, .weight_decay = 0.1L, .maximize = true});
}

TEST_CASE_TEMPLATE("Sgd: a schedule scales lr step by step and last_lr reports it", T, float, double) {
  // Constant unit gradient: x_t = x_0 - sum_{s < t} lr * schedule(s).
  slowmo::Sgd<T, slowmo::schedule::StepDecay> opt({.lr = 0.5}, {.step_size = 2, .gamma = 0.5});
  CHECK(opt.last_lr() == T(0.5));  // before any step: the lr the first step will use
  Vector<T> x = Vector<T>::Zero(5);
  const Vector<T> g = Vector<T>::Ones(5);
  const double expected_lr[] = {0.5, 0.5, 0.25, 0.25, 0.125};
  double expected_x = 0;
  for (double lr : expected_lr) {
    opt.step(x, g);
    expected_x -= lr;
    CHECK(opt.last_lr() == T(lr));
    CHECK(x[4] == T(expected_x));  // sums of powers of two: exact
  }
  CHECK(opt.steps() == 5);
}

TEST_CASE("Sgd: copies and moves taken mid-run continue independently and correctly") {
  slowmo::Sgd<double> a({.lr = 0.1, .momentum = 0.9});
  Vector<double> x = Vector<double>::Ones(4);
  for (int t = 0; t < 3; ++t) a.step(x, Vector<double>(x));
  slowmo::Sgd<double> b = a;                  // copy after steps
  slowmo::Sgd<double> c = std::move(slowmo::Sgd<double>(a));  // move of a copy
  Vector<double> xa = x, xb = x, xc = x;
  a.step(xa, Vector<double>::Constant(4, 1.0));
  b.step(xb, Vector<double>::Constant(4, -1.0));  // b's buffer must not be a's
  c.step(xc, Vector<double>::Constant(4, 1.0));
  CHECK(xa == xc);
  // After 3 steps on x^2/2 from 1: buffer 2.34, x = 0.486 (hand calculation above).
  CHECK(xa[0] == doctest::Approx(0.486 - 0.1 * (0.9 * 2.34 + 1.0)));
  CHECK(xb[0] == doctest::Approx(0.486 - 0.1 * (0.9 * 2.34 - 1.0)));
  CHECK(a.momentum_buffer()[0] == doctest::Approx(0.9 * 2.34 + 1.0));
  CHECK(b.momentum_buffer()[0] == doctest::Approx(0.9 * 2.34 - 1.0));
}
