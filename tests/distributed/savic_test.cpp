// SAVIC (optim/savic.hpp inside LocalSgd): the three scalings against a loop written here
// from the formulas, the identity with Local SGD when the floor dominates, NonFinite::skip
// leaving a worker's statistic out, the problems' Hessian-vector products, and bad use.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <slowmo/problems/logistic.hpp>
#include <slowmo/problems/quadratic.hpp>
#include <slowmo/slowmo.hpp>

#include "support/errors.hpp"

namespace {

using check::error_of;
using check::has;
using slowmo::Vector;
namespace sim = slowmo::sim;
namespace savic = slowmo::savic;

constexpr int m = 3;

/// Worker w's diagonal quadratic f_w = sum_j a_wj (x_j - c_wj)^2 / 2 with a deterministic
/// perturbation per step (a stochastic gradient that every run sees alike).
struct Toy {
  Eigen::Index n = 7;
  double curvature(int w, Eigen::Index j) const { return 0.5 + 0.3 * double(j) + 0.2 * w; }
  Vector<double> gradient(int w, int t, const Vector<double>& x) const {
    Vector<double> g(n);
    for (Eigen::Index j = 0; j < n; ++j)
      g[j] = curvature(w, j) * (x[j] - 0.5 * w + 0.1 * double(j)) + 0.05 * std::cos(3.0 * t + 7.0 * w + double(j));
    return g;
  }
  Vector<double> start() const { return Vector<double>::LinSpaced(n, -1, 2); }
};

enum class Kind { adam, rmsprop, oasis };

/// SAVIC written from the formulas at the top of optim/savic.hpp, all workers in one loop.
std::vector<Vector<double>> reference(const Toy& toy, Kind kind, double lr, double beta, double alpha, int H,
                                      int steps) {
  std::vector<Vector<double>> x(m, toy.start());
  Vector<double> D = Vector<double>::Zero(toy.n);
  int p = 0;
  for (int t = 0; t < steps; ++t) {
    std::vector<Vector<double>> g(m);
    for (int w = 0; w < m; ++w) g[std::size_t(w)] = toy.gradient(w, t, x[std::size_t(w)]);
    if (t % H == 0) {  // a round starts: the statistic at the (common) point
      Vector<double> h = Vector<double>::Zero(toy.n);
      for (int w = 0; w < m; ++w)
        for (Eigen::Index j = 0; j < toy.n; ++j)
          // Oasis: z_j (A z)_j = a_wj z_j^2 = a_wj for a diagonal A, whatever the signs of z.
          h[j] += kind == Kind::oasis ? toy.curvature(w, j) : g[std::size_t(w)][j] * g[std::size_t(w)][j];
      h /= m;
      double bp = p == 0 ? 0.0 : beta;
      if (kind == Kind::adam && p > 0) bp = beta * (1 - std::pow(beta, p)) / (1 - std::pow(beta, p + 1));
      D = bp * D + (1 - bp) * h;
      ++p;
    }
    for (int w = 0; w < m; ++w)
      for (Eigen::Index j = 0; j < toy.n; ++j) {
        const double dhat = std::max(alpha, kind == Kind::oasis ? std::abs(D[j]) : std::sqrt(D[j]));
        x[std::size_t(w)][j] -= lr * g[std::size_t(w)][j] / dhat;
      }
    if ((t + 1) % H == 0) {
      Vector<double> mean = Vector<double>::Zero(toy.n);
      for (const auto& xi : x) mean += xi / m;
      for (auto& xi : x) xi = mean;
    }
  }
  return x;
}

template <class Base>
std::vector<Vector<double>> run_local(const Toy& toy, Base base, int H, int steps) {
  std::vector<Vector<double>> out(m);
  sim::run({.workers = m}, [&](sim::Comm& c) {
    slowmo::LocalSgd opt(base, c, {.H = H});
    Vector<double> x = toy.start();
    slowmo::start(opt, x);
    for (int t = 0; t < steps; ++t) opt.step(x, toy.gradient(c.rank(), t, x));
    out[std::size_t(c.rank())] = x;
  });
  return out;
}

double max_error(const std::vector<Vector<double>>& a, const std::vector<Vector<double>>& b) {
  double worst = 0;
  for (std::size_t w = 0; w < a.size(); ++w)
    worst = std::max(worst, (a[w] - b[w]).cwiseAbs().maxCoeff() / (1 + b[w].cwiseAbs().maxCoeff()));
  return worst;
}

}  // namespace

TEST_CASE("SAVIC with the Adam, RMSProp and OASIS scalings is the loop written from its formulas") {
  const Toy toy;
  const int H = 4, steps = 26;  // 7 rounds, the last one partial
  const double tol = 200 * std::numeric_limits<double>::epsilon();
  const auto adam = run_local(toy, slowmo::Savic<double>({.lr = 0.05}, {.beta = 0.9, .alpha = 1e-3}), H, steps);
  CHECK(max_error(adam, reference(toy, Kind::adam, 0.05, 0.9, 1e-3, H, steps)) <= tol);
  const auto rms =
      run_local(toy, slowmo::Savic<double, savic::RmsProp>({.lr = 0.05}, {.beta = 0.8, .alpha = 1e-3}), H, steps);
  CHECK(max_error(rms, reference(toy, Kind::rmsprop, 0.05, 0.8, 1e-3, H, steps)) <= tol);
  // The Adam and RMSProp scalings differ from the first average on (bias correction).
  CHECK(max_error(adam, reference(toy, Kind::rmsprop, 0.05, 0.9, 1e-3, H, steps)) > 1e-6);

  // OASIS: this worker's exact Hessian (diagonal) times z, supplied per worker.
  std::vector<Vector<double>> oasis(m);
  sim::run({.workers = m}, [&](sim::Comm& c) {
    const int w = c.rank();
    auto hvp = [&toy, w](const Vector<double>&, const Vector<double>& z, Vector<double>& out) {
      out.resize(z.size());
      for (Eigen::Index j = 0; j < z.size(); ++j) out[j] = toy.curvature(w, j) * z[j];
    };
    slowmo::LocalSgd opt(slowmo::Savic<double, savic::Oasis<decltype(hvp)>>({.lr = 0.2}, {.hvp = hvp, .beta = 0.7}), c,
                         {.H = H});
    Vector<double> x = toy.start();
    slowmo::start(opt, x);
    for (int t = 0; t < steps; ++t) opt.step(x, toy.gradient(w, t, x));
    CHECK(opt.base().scaling_updates() == 7);
    oasis[std::size_t(w)] = x;
  });
  CHECK(max_error(oasis, reference(toy, Kind::oasis, 0.2, 0.7, 1e-5, H, steps)) <= tol);
}

TEST_CASE("SAVIC whose floor alpha exceeds every sqrt(D) is Local SGD, bit for bit") {
  // D-hat = alpha = 2^40 everywhere: x -= (lr 2^40) g / 2^40, which is x -= lr g exactly (the
  // powers of two scale without rounding), as torch SGD's step.
  const Toy toy;
  const double big = std::ldexp(1.0, 40);
  const auto savic = run_local(toy, slowmo::Savic<double>({.lr = 0.05 * big}, {.alpha = big}), 5, 23);
  const auto sgd = run_local(toy, slowmo::Sgd<double>({.lr = 0.05}), 5, 23);
  for (int w = 0; w < m; ++w) CHECK(savic[std::size_t(w)] == sgd[std::size_t(w)]);
}

TEST_CASE("SAVIC under NonFinite::skip: a worker whose round-start gradient has a NaN contributes nothing") {
  // Round 1 starts at step 1: worker 1's gradient is NaN there, so D = mean of workers 0 and 2's
  // g^2 (beta_0 = 0), and worker 1 skips that step.
  const Eigen::Index n = 3;
  std::vector<Vector<double>> D(m);
  sim::run({.workers = m}, [&](sim::Comm& c) {
    slowmo::LocalSgd opt(slowmo::Savic<double>({.lr = 0.1, .non_finite = slowmo::NonFinite::skip}), c, {.H = 2});
    Vector<double> x = Vector<double>::Zero(n);
    slowmo::start(opt, x);
    Vector<double> g = Vector<double>::Constant(n, 1.0 + c.rank());
    if (c.rank() == 1) g[2] = std::numeric_limits<double>::quiet_NaN();
    opt.step(x, g);
    D[std::size_t(c.rank())] = opt.base().scaling();
    if (c.rank() == 1) CHECK(x == Vector<double>::Zero(n));  // skipped
  });
  for (int w = 0; w < m; ++w) CHECK(D[std::size_t(w)] == Vector<double>::Constant(n, (1.0 + 9.0) / 2));
}

TEST_CASE("Hessian-vector products: Quadratic and Logistic in closed form, finite_difference around a gradient") {
  const Vector<double> v = Vector<double>::LinSpaced(6, -1, 1.5);
  {
    const slowmo::problems::Quadratic q({.workers = 2, .dim = 6, .dense = true, .seed = 3});
    const Vector<double> x = Vector<double>::Ones(6);
    Vector<double> hv, fd;
    q.hessian_vector(1, x, v, hv);
    auto hvp = savic::finite_difference([&](const Vector<double>& y, Vector<double>& g) { q.gradient(1, y, g); }, 1.0);
    hvp(x, v, fd);  // the gradient is affine: exact up to rounding at any step
    CHECK((hv - fd).norm() <= 1e-12 * (1 + hv.norm()));
  }
  for (int classes : {2, 4}) {
    CAPTURE(classes);
    const slowmo::problems::LogisticRegression p({.workers = 2, .features = 5, .classes = classes, .l2 = 0.01});
    Vector<double> x = Vector<double>::LinSpaced(p.dim(), -0.3, 0.4), u = Vector<double>::LinSpaced(p.dim(), 1, -1);
    Vector<double> hv, fd;
    p.hessian_vector(0, x, u, hv);
    // Central differences, O(eps^2) with eps = 1e-4: agree to ~1e-7.
    Vector<double> gp, gm;
    p.gradient(0, Vector<double>(x + 1e-4 * u), gp);
    p.gradient(0, Vector<double>(x - 1e-4 * u), gm);
    fd = (gp - gm) / 2e-4;
    CHECK((hv - fd).norm() <= 1e-6 * (1 + hv.norm()));
    CHECK(hv.dot(u) > 0);  // positive definite (the L2 term)
  }
}

TEST_CASE("Savic alone refuses to step, and bad scaling options name the field") {
  slowmo::Savic<float> alone({.lr = 0.1});
  Vector<float> x = Vector<float>::Zero(3), g = Vector<float>::Ones(3);
  const std::string e = error_of([&] { alone.step(x, g); });
  CHECK(has(e, "Savic::step (step 1): the scaling has not been set"));
  CHECK(x == Vector<float>::Zero(3));
  CHECK(has(error_of([] { slowmo::Savic<float>({.lr = 0.1}, {.beta = 1.0}); }), "'beta' = 1"));
  CHECK(has(error_of([] { slowmo::Savic<float, savic::RmsProp>({.lr = 0.1}, {.alpha = 0.0}); }), "'alpha' = 0"));
  CHECK(has(error_of([] { slowmo::Savic<double>({.lr = -1.0}); }), "'lr' = -1"));
}
