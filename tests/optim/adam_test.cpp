// Adam and AdamW against closed forms and against the scalar PyTorch reference.
#include <doctest/doctest.h>

#include <slowmo/optim/adam.hpp>

#include "support/check.hpp"
#include "support/reference.hpp"

namespace {

using slowmo::Vector;

template <class T, class Opt>
void check_against_reference(Opt opt, ref::Adam reference, int n = 37, int steps = 40) {
  check::against_reference<T>(opt, reference, n, steps);
}

}  // namespace

TEST_CASE_TEMPLATE("Adam: with a constant gradient every step moves lr * g / (|g| + eps)", T, float, double) {
  // With g constant, m_t = (1 - b1^t) g and v_t = (1 - b2^t) g^2, so the bias-corrected
  // moments are exactly g and g^2, whatever the betas: p_t = p_0 - t lr g / (|g| + eps).
  const double lr = 0.01, eps = 1e-3;
  slowmo::Adam<T> opt({.lr = lr, .betas = {0.8, 0.9}, .eps = eps});
  Vector<T> x = Vector<T>::Zero(9);
  Vector<T> g(9);
  g << 2, -2, 0.5, -0.5, 1, 3, -4, 0.25, 8;
  for (int t = 1; t <= 10; ++t) {
    opt.step(x, g);
    for (int i = 0; i < 9; ++i) {
      const double gi = g[i];
      CHECK(x[i] == doctest::Approx(-t * lr * gi / (std::abs(gi) + eps)).epsilon(64 * std::numeric_limits<T>::epsilon()));
    }
  }
  CHECK(opt.steps() == 10);
}

TEST_CASE_TEMPLATE("AdamW: decoupled decay shrinks p by (1 - lr wd) before the Adam step", T, float, double) {
  // Constant gradient: p_t = (1 - lr wd) p_{t-1} - lr g / (|g| + eps), by the argument above.
  const double lr = 0.05, wd = 0.2, eps = 1e-8;
  slowmo::AdamW<T> opt({.lr = lr, .weight_decay = wd});
  CHECK(opt.options().eps == eps);
  Vector<T> x = Vector<T>::Constant(5, T(2));
  const Vector<T> g = Vector<T>::Constant(5, T(0.5));
  double p = 2;
  for (int t = 1; t <= 6; ++t) {
    opt.step(x, g);
    p = (1 - lr * wd) * p - lr * 0.5 / (0.5 + eps);
    CHECK(x[4] == doctest::Approx(p).epsilon(64 * std::numeric_limits<T>::epsilon()));
  }
}

TEST_CASE("Adam and AdamW keep PyTorch's defaults") {
  CHECK(slowmo::AdamOptions{}.lr == 1e-3);
  CHECK(slowmo::AdamOptions{}.betas[0] == 0.9);
  CHECK(slowmo::AdamOptions{}.betas[1] == 0.999);
  CHECK(slowmo::AdamOptions{}.eps == 1e-8);
  CHECK(slowmo::AdamOptions{}.weight_decay == 0.0);
  CHECK(slowmo::AdamWOptions{}.weight_decay == 1e-2);
  CHECK_FALSE(slowmo::AdamOptions{}.amsgrad);
  CHECK_FALSE(slowmo::AdamOptions{}.maximize);
}

TEST_CASE("Adam amsgrad: the denominator uses the running maximum of v (hand calculation)") {
  // betas (0, 0.5), eps 0, lr 1: step 1 with g = 1: m = 1, v = 0.5, bc2 = 0.5, p -= 1 / 1.
  // Step 2 with g = 0.1: m = 0.1, v = 0.25 + 0.005 = 0.255 < vmax = 0.5, bc2 = 0.75:
  //   with amsgrad  p -= 0.1 / sqrt(0.5 / 0.75);  without  p -= 0.1 / sqrt(0.255 / 0.75).
  for (bool amsgrad : {false, true}) {
    slowmo::Adam<double> opt({.lr = 1.0, .betas = {0.0, 0.5}, .eps = 0.0, .amsgrad = amsgrad});
    Vector<double> x = Vector<double>::Zero(3);
    opt.step(x, Vector<double>::Constant(3, 1.0));
    CHECK(x[0] == doctest::Approx(-1.0));
    opt.step(x, Vector<double>::Constant(3, 0.1));
    const double v_used = amsgrad ? 0.5 : 0.255;
    CHECK(x[2] == doctest::Approx(-1.0 - 0.1 / std::sqrt(v_used / 0.75)));
    if (amsgrad) CHECK(opt.max_exp_avg_sq()[1] == doctest::Approx(0.5));
  }
}

TEST_CASE_TEMPLATE("Adam/AdamW: 40-step trajectories equal the scalar PyTorch reference", T, float, double) {
  check_against_reference<T>(slowmo::Adam<T>({.lr = 0.01}), {.lr = 0.01L});
  check_against_reference<T>(slowmo::Adam<T>({.lr = 0.02, .betas = {0.8, 0.95}, .eps = 1e-6, .weight_decay = 0.1}),
                             {.lr = 0.02L, .beta1 = 0.8L, .beta2 = 0.95L, .eps = 1e-6L, .weight_decay = 0.1L});
  check_against_reference<T>(slowmo::Adam<T>({.lr = 0.02, .amsgrad = true, .maximize = true}),
                             {.lr = 0.02L, .amsgrad = true, .maximize = true});
  check_against_reference<T>(slowmo::AdamW<T>({.lr = 0.02, .betas = {0.9, 0.95}}),
                             {.lr = 0.02L, .beta2 = 0.95L, .weight_decay = 0.01L, .decoupled = true});
  check_against_reference<T>(slowmo::AdamW<T>({.lr = 0.02, .weight_decay = 0.3, .amsgrad = true}),
                             {.lr = 0.02L, .weight_decay = 0.3L, .amsgrad = true, .decoupled = true});
}

TEST_CASE_TEMPLATE("Adam: a schedule's lr reaches both the step size and AdamW's decay", T, float, double) {
  // Constant gradient, Linear warm-up factors 0.5, 0.75, 1: p_t = prod(1 - lr_s wd) chain.
  slowmo::AdamW<T, slowmo::schedule::Linear> opt({.lr = 0.1, .weight_decay = 0.5},
                                                 {.start_factor = 0.5, .end_factor = 1.0, .total_iters = 2});
  Vector<T> x = Vector<T>::Constant(2, T(1));
  const Vector<T> g = Vector<T>::Constant(2, T(-3));
  double p = 1;
  for (double lr : {0.05, 0.075, 0.1, 0.1}) {
    opt.step(x, g);
    p = (1 - lr * 0.5) * p + lr * 3 / (3 + 1e-8);
    CHECK(opt.last_lr() == doctest::Approx(lr));
    CHECK(x[1] == doctest::Approx(p).epsilon(64 * std::numeric_limits<T>::epsilon()));
  }
}

TEST_CASE("Adam: copies taken mid-run are independent") {
  slowmo::Adam<float> a({.lr = 0.1});
  Vector<float> x = Vector<float>::Ones(6);
  for (int t = 0; t < 4; ++t) a.step(x, Vector<float>(x));
  auto b = a;
  Vector<float> xa = x, xb = x;
  a.step(xa, Vector<float>::Constant(6, 1.f));
  b.step(xb, Vector<float>::Constant(6, -1.f));
  CHECK(a.exp_avg()[0] != b.exp_avg()[0]);
  CHECK(a.exp_avg_sq() == b.exp_avg_sq());  // g^2 is the same for +-1
  CHECK(xa[0] < x[0]);
  CHECK(xb[0] > xa[0]);
  CHECK(a.steps() == 5);
  CHECK(b.steps() == 5);
}
