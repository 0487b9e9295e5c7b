// Lookahead: hand trajectory, identities with its base optimizer, base-state policy.
#include <doctest/doctest.h>

#include <slowmo/optim/adam.hpp>
#include <slowmo/optim/lookahead.hpp>
#include <slowmo/optim/sgd.hpp>

#include "support/reference.hpp"

namespace {

using slowmo::Vector;

template <class T>
Vector<T> gradient_at(const Vector<T>& x, int t) {
  Vector<T> g(x.size());
  for (Eigen::Index i = 0; i < x.size(); ++i) g[i] = T(ref::gradient(int(i), t, x[i]));
  return g;
}

}  // namespace

TEST_CASE_TEMPLATE("Lookahead: hand-computed trajectory, k = 2, alpha = 0.5, SGD on x^2/2", T, float, double) {
  // x: 1 -> 0.9 -> 0.81, sync: slow = 1 + 0.5 (0.81 - 1) = 0.905 = x
  //    -> 0.8145 -> 0.73305, sync: slow = 0.905 + 0.5 (0.73305 - 0.905) = 0.819025 = x
  slowmo::Lookahead opt(slowmo::Sgd<T>({.lr = 0.1}), {.k = 2, .alpha = 0.5});
  Vector<T> x = Vector<T>::Ones(7);
  const double expected[] = {0.9, 0.905, 0.8145, 0.819025};
  for (double e : expected) {
    opt.step(x, Vector<T>(x));
    CHECK(x[6] == doctest::Approx(e).epsilon(16 * std::numeric_limits<T>::epsilon()));
  }
  CHECK(opt.slow_weights()[0] == x[0]);
  CHECK(opt.steps() == 4);
  CHECK(opt.base().steps() == 4);
}

TEST_CASE_TEMPLATE("Lookahead with alpha = 1 is its base optimizer, bit for bit", T, float, double) {
  slowmo::Lookahead la(slowmo::Adam<T>({.lr = 0.03, .weight_decay = 0.01}), {.k = 3, .alpha = 1.0});
  slowmo::Adam<T> base({.lr = 0.03, .weight_decay = 0.01});
  Vector<T> x = Vector<T>::LinSpaced(19, -1, 1), y = x;
  for (int t = 0; t < 20; ++t) {
    la.step(x, gradient_at(x, t));
    base.step(y, gradient_at(y, t));
    REQUIRE(x == y);
  }
  CHECK(la.last_lr() == base.last_lr());
}

TEST_CASE_TEMPLATE("Lookahead with k = 1 over plain SGD is SGD with lr scaled by alpha", T, float, double) {
  // slow_{t+1} = slow_t + alpha ((slow_t - lr g) - slow_t) = slow_t - alpha lr g, up to rounding
  // of the two forms: a few ulps of x per step.
  const double lr = 0.1, alpha = 0.3;
  slowmo::Lookahead la(slowmo::Sgd<T>({.lr = lr}), {.k = 1, .alpha = alpha});
  slowmo::Sgd<T> sgd({.lr = lr * alpha});
  Vector<T> x = Vector<T>::LinSpaced(13, -2, 2), y = x;
  for (int t = 0; t < 30; ++t) {
    la.step(x, gradient_at(x, t));
    sgd.step(y, gradient_at(y, t));
    CHECK((x - y).cwiseAbs().maxCoeff() <= 8 * (t + 1) * std::numeric_limits<T>::epsilon());
  }
}

TEST_CASE("Lookahead: base state kept or reset at each sync") {
  for (auto policy : {slowmo::OnSync::keep, slowmo::OnSync::reset}) {
    CAPTURE(slowmo::to_string(policy));
    slowmo::Lookahead la(slowmo::Sgd<double>({.lr = 0.1, .momentum = 0.9}), {.k = 3, .base_state = policy});
    Vector<double> x = Vector<double>::Ones(4);
    for (int t = 1; t <= 6; ++t) {
      la.step(x, Vector<double>(x));
      const bool synced = t % 3 == 0;
      const bool zero = la.base().momentum_buffer().isZero(0.0);
      CHECK(zero == (synced && policy == slowmo::OnSync::reset));
    }
    // After a reset the base restarts as a fresh optimizer: its next step sets buf = g.
    if (policy == slowmo::OnSync::reset) {
      const Vector<double> before = x;
      la.step(x, Vector<double>(x));
      CHECK(la.base().momentum_buffer()[0] == doctest::Approx(before[0]));
    }
  }
}

TEST_CASE("Lookahead over Lookahead: the outer sync rebases the inner slow weights") {
  using Inner = slowmo::Lookahead<slowmo::Sgd<double>>;
  slowmo::Lookahead<Inner> outer(Inner(slowmo::Sgd<double>({.lr = 0.1}), {.k = 2, .alpha = 0.5}),
                                 {.k = 2, .alpha = 0.5});
  Vector<double> x = Vector<double>::Ones(2);
  // Inner after 2 steps: 0.905 (as above). The outer syncs at the same step: slow 1 ->
  // 1 + 0.5 (0.905 - 1) = 0.9525 = x, and the inner slow weights follow x to 0.9525.
  outer.step(x, Vector<double>(x));
  outer.step(x, Vector<double>(x));
  CHECK(x[0] == doctest::Approx(0.9525));
  CHECK(outer.slow_weights()[0] == doctest::Approx(0.9525));
  CHECK(outer.base().slow_weights()[0] == doctest::Approx(0.9525));
  // Two more steps from 0.9525: 0.85725, 0.771525; inner sync 0.9525 + 0.5 (0.771525 - 0.9525)
  // = 0.8620125; outer sync 0.9525 + 0.5 (0.8620125 - 0.9525) = 0.90725625. (Stale inner slow
  // weights, 0.905, would give 0.8382625 and 0.89538125.)
  outer.step(x, Vector<double>(x));
  outer.step(x, Vector<double>(x));
  CHECK(x[0] == doctest::Approx(0.90725625).epsilon(1e-14));
  CHECK(outer.base().slow_weights()[0] == doctest::Approx(0.90725625).epsilon(1e-14));
}
