// The outer rules (slowmo/outer/): hand-computed steps of each, the whole loop against a loop
// written here from the papers' equations, identities between rules, a user-written rule, and
// bad input.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include <slowmo/slowmo.hpp>

#include "support/errors.hpp"

#include "support/zoo.hpp"

namespace {

using check::error_of;
using check::has;

using slowmo::Vector;

/// One outer step of `rule` on a one-element vector: x0 moves from d.
template <class Rule>
double outer_step(Rule& rule, double& x0, double d, double lr_scale = 1.0) {
  Vector<double> xd = Vector<double>::Constant(1, d), p = Vector<double>::Constant(1, x0);
  std::apply([&](auto&... b) { slowmo::Host::for_each(1, rule.kernel({.round = 0, .lr_scale = lr_scale}), xd.data(), p.data(), b.data()...); },
             rule.buffers());
  CHECK(xd[0] == p[0]);  // every worker restarts from the new outer point
  x0 = p[0];
  return x0;
}

}  // namespace

// Reddi et al. 2021, Algorithm 2, by hand (Delta = -d; x0 + lr m / (sqrt(v) + tau)), with
// lr 0.1, beta1 0.9, beta2 0.99, tau = eps = 1e-3 and d = 0.5, then -0.5, then 0.01.
TEST_CASE("FedAdam, FedYogi, FedAdagrad: hand-computed steps") {
  using namespace slowmo::outer;
  SUBCASE("FedAdam") {
    FedAdam<double> r({.lr = 0.1, .betas = {0.9, 0.99}, .eps = 1e-3});
    r.init(1);
    double x0 = 1.0;
    // m = 0.1 * 0.5 = 0.05, v = 0.01 * 0.25 = 0.0025, sqrt(v) = 0.05
    CHECK(outer_step(r, x0, 0.5) == doctest::Approx(1 - 0.1 * 0.05 / 0.051).epsilon(1e-15));
    // m = 0.045 - 0.05 = -0.005, v = 0.002475 + 0.0025 = 0.004975
    const double x1 = 1 - 0.1 * 0.05 / 0.051;
    CHECK(outer_step(r, x0, -0.5) == doctest::Approx(x1 + 0.1 * 0.005 / (std::sqrt(0.004975) + 1e-3)).epsilon(1e-15));
    CHECK(r.first_moment()[0] == doctest::Approx(-0.005).epsilon(1e-15));
    CHECK(r.second_moment()[0] == doctest::Approx(0.004975).epsilon(1e-15));
  }
  SUBCASE("FedYogi: the first step is Adam's from v = 0; then v grows additively where d^2 > v") {
    FedYogi<double> r({.lr = 0.1, .betas = {0.9, 0.99}, .eps = 1e-3});
    r.init(1);
    double x0 = 1.0;
    const double x1 = 1 - 0.1 * 0.05 / 0.051;  // v = 0 - 0.01 * 0.25 * sign(-0.25) = 0.0025
    CHECK(outer_step(r, x0, 0.5) == doctest::Approx(x1).epsilon(1e-15));
    // d^2 = 0.25 > v: v = 0.0025 + 0.0025 = 0.005 (Adam: 0.004975); m = -0.005
    const double x2 = x1 + 0.1 * 0.005 / (std::sqrt(0.005) + 1e-3);
    CHECK(outer_step(r, x0, -0.5) == doctest::Approx(x2).epsilon(1e-15));
    CHECK(r.second_moment()[0] == doctest::Approx(0.005).epsilon(1e-15));
    // d^2 = 1e-4 < v: v = 0.005 - 0.01 * 1e-4 = 0.004999; m = -0.0045 + 0.001 = -0.0035
    CHECK(outer_step(r, x0, 0.01) == doctest::Approx(x2 + 0.1 * 0.0035 / (std::sqrt(0.004999) + 1e-3)).epsilon(1e-15));
    CHECK(r.second_moment()[0] == doctest::Approx(0.004999).epsilon(1e-15));
  }
  SUBCASE("FedAdagrad, momentum 0 (Flower's): m = d, v = sum of d^2") {
    FedAdagrad<double> r({.lr = 0.1, .eps = 1e-3});
    r.init(1);
    double x0 = 1.0;
    const double x1 = 1 - 0.1 * 0.5 / (0.5 + 1e-3);
    CHECK(outer_step(r, x0, 0.5) == doctest::Approx(x1).epsilon(1e-15));
    CHECK(outer_step(r, x0, -0.5) == doctest::Approx(x1 + 0.1 * 0.5 / (std::sqrt(0.5) + 1e-3)).epsilon(1e-15));
  }
  SUBCASE("HeavyBall and its Nesterov form; lr_scale multiplies the lr") {
    slowmo::outer::HeavyBall<double> hb({.lr = 0.5, .momentum = 0.5});
    hb.init(1);
    double x0 = 1.0;
    CHECK(outer_step(hb, x0, 0.5) == 0.75);               // u = 0.5
    CHECK(outer_step(hb, x0, 0.5, 0.5) == 0.75 - 0.1875);  // u = 0.75, lr 0.25
    slowmo::outer::HeavyBall<double> nag({.lr = 0.5, .momentum = 0.5, .nesterov = true});
    nag.init(1);
    x0 = 1.0;
    CHECK(outer_step(nag, x0, 0.5) == 1 - 0.5 * (0.5 + 0.25));  // u = 0.5; d + beta u = 0.75
  }
}

// The whole loop on 2 simulated workers, against a loop written from Reddi et al.'s Algorithm 2:
// each worker takes tau SGD steps from x0; Delta = x_bar - x0; the server's Adam/Yogi/Adagrad.
TEST_CASE_TEMPLATE("the outer loop with an adaptive rule is Reddi et al.'s Algorithm 2", T, float, double) {
  using namespace slowmo;
  const int m = 2, tau = 3, rounds = 5, d = 7;
  const double gamma = 0.1, lr = 0.05, b1 = 0.9, b2 = 0.99, eps = 1e-3;
  for (int kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    std::vector<Vector<T>> final_x(m);
    sim::run({.workers = m}, [&](sim::Comm& c) {
      auto run = [&](auto loop) {
        Vector<T> x = zoo::initial_point<T>(c.rank(), d), g(d);
        loop.start(x);
        for (int t = 0; t < rounds * tau; ++t) {
          zoo::gradient(c.rank(), x, g);
          loop.step(x, g);
        }
        final_x[std::size_t(c.rank())] = x;
      };
      const Sgd<T> base({.lr = gamma});
      if (kind == 0) run(outer_loop(base, c, {.tau = tau}, outer::FedAdam<T>({.lr = lr, .betas = {b1, b2}, .eps = eps})));
      if (kind == 1) run(outer_loop(base, c, {.tau = tau}, outer::FedYogi<T>({.lr = lr, .betas = {b1, b2}, .eps = eps})));
      if (kind == 2) run(outer_loop(base, c, {.tau = tau}, outer::FedAdagrad<T>({.lr = lr, .momentum = b1, .eps = eps})));
    });
    CHECK(final_x[0] == final_x[1]);
    // Reference in double, the paper's signs.
    Eigen::VectorXd x0 = zoo::initial_point<double>(0, d), mom = Eigen::VectorXd::Zero(d), v = mom;
    for (int round = 0; round < rounds; ++round) {
      Eigen::VectorXd x_bar = Eigen::VectorXd::Zero(d);
      for (int r = 0; r < m; ++r) {
        Vector<double> w = x0, g(d);
        for (int s = 0; s < tau; ++s) {
          zoo::gradient(r, w, g);
          w -= gamma * g;
        }
        x_bar += w / m;
      }
      const Eigen::ArrayXd delta = (x_bar - x0).array();
      mom = b1 * mom.array() + (1 - b1) * delta;  // (FedAdagrad's momentum is b1 here too)
      if (kind == 0) v = b2 * v.array() + (1 - b2) * delta.square();
      if (kind == 1) v = v.array() - (1 - b2) * delta.square() * (v.array() - delta.square()).sign();
      if (kind == 2) v = v.array() + delta.square();
      x0 = x0.array() + lr * mom.array() / (v.array().sqrt() + eps);
    }
    // float: the rounding of T through 15 local and 5 outer steps on values of order 1.
    const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
    CHECK((final_x[0].template cast<double>() - x0).cwiseAbs().maxCoeff() <= tol);
  }
}

TEST_CASE("identities: FedAvgM is SlowMo on the raw pseudo-gradient; HeavyBall momentum 0, lr 1 is Local SGD") {
  using namespace slowmo;
  const auto fedavgm = zoo::trajectories<double>(3, 12, [](auto& c) {
    return outer_loop(Sgd<double>({.lr = 0.1}), c, {.tau = 4}, outer::fedavgm<double>({.lr = 0.8, .momentum = 0.6}));
  });
  const auto slowmo = zoo::trajectories<double>(3, 12, [](auto& c) {
    return SlowMo(Sgd<double>({.lr = 0.1}), c,
                  {.tau = 4, .alpha = 0.8, .beta = 0.6, .base_state = OnSync::keep, .divide_by_lr = false});
  });
  CHECK(fedavgm == slowmo);  // bit for bit: the same loop, the same rule
  const auto average = zoo::trajectories<double>(3, 12, [](auto& c) {
    return outer_loop(Sgd<double>({.lr = 0.1, .momentum = 0.5}), c, {.tau = 4},
                      outer::HeavyBall<double>({.lr = 1.0, .momentum = 0.0}));
  });
  const auto local = zoo::trajectories<double>(3, 12, [](auto& c) {
    return LocalSgd(Sgd<double>({.lr = 0.1, .momentum = 0.5}), c, {.H = 4});
  });
  // x0 - 1 * (x0 - x_bar): x_bar up to the rounding of two subtractions of values <= 3.
  for (std::size_t r = 0; r < 3; ++r)
    for (std::size_t t = 0; t < 12; ++t)
      CHECK((average[r][t] - local[r][t]).cwiseAbs().maxCoeff() <= 4 * 3 * 2.3e-16 * double(t / 4 + 1));
}

// The README's own outer rule: signed momentum on the server (Signum, Bernstein et al. 2018,
// applied to the pseudo-gradient): m = beta m + (1 - beta) d; x0 -= lr sign(m).
template <class T, class Space = slowmo::Host>
struct OuterSignum {
  using scalar_type = T;
  using space_type = Space;
  double lr = 0.01, beta = 0.9;
  typename Space::template vector<T> m{};

  struct Kernel {
    T lr, beta;
    template <class V>
    SLOWMO_HOST_DEVICE void operator()(V& xd, V& x0, V& mom) const {
      using slowmo::math::sign;
      mom = V(beta) * mom + V(T(1) - beta) * xd;
      x0 = x0 - V(lr) * sign(mom);
      xd = x0;
    }
  };
  void init(Eigen::Index n) {
    if (m.size() != n) m.setZero(n);
  }
  auto buffers() { return std::tie(m); }
  Kernel kernel(const slowmo::OuterContext& c) const { return {T(lr * c.lr_scale), T(beta)}; }
  template <class V>
  void visit_state(V&& v, const slowmo::StateScope* s = nullptr) {
    v(slowmo::StateKey{"momentum", s}, m, slowmo::StateKind::accumulator);
  }
  template <class V>
  void visit_state(V&& v, const slowmo::StateScope* s = nullptr) const {
    v(slowmo::StateKey{"momentum", s}, m, slowmo::StateKind::accumulator);
  }
  template <class F>
  void visit_structure(F&& f, const slowmo::StateScope* s = nullptr) const {
    f(slowmo::StateKey{"rule", s}, "OuterSignum");
  }
};
static_assert(slowmo::check_outer_rule<OuterSignum<float>>());

TEST_CASE("a user-written rule plugs in: checkpoint, agreement and the loop work unchanged") {
  using namespace slowmo;
  std::vector<Vector<double>> x(2);
  sim::run({.workers = 2}, [&](sim::Comm& c) {
    auto loop = outer_loop(Sgd<double>({.lr = 0.1}), c, {.tau = 2}, OuterSignum<double>{.lr = 0.125, .beta = 0.5});
    Vector<double> p = Vector<double>::Constant(3, 1.0), g(3);
    loop.start(p);
    for (int t = 0; t < 2; ++t) {
      g = Vector<double>::Constant(3, c.rank() == 0 ? 1.0 : 3.0);  // mean gradient 2
      loop.step(p, g);
    }
    CHECK(loop.agreement().parameters);
    x[std::size_t(c.rank())] = p;
    CHECK(loop.rule().m[0] == doctest::Approx(0.5 * 0.4).epsilon(1e-14));  // d = 2 steps * 0.1 * 2
    CHECK(!checkpoint_bytes(loop).empty());
  });
  CHECK(x[0] == Vector<double>::Constant(3, 1.0 - 0.125));  // one signed step
}

/// A rule that forgets to size its state in init(n).
struct Forgetful : OuterSignum<double> {
  void init(Eigen::Index) {}
};

TEST_CASE("bad input: rule options, and a rule whose state does not fit, named before anything changes") {
  using namespace slowmo;
  using outer::FedAdam;
  CHECK(has(error_of([] { FedAdam<float>({.lr = 0}); }), "outer::FedAdam: option 'lr' = 0"));
  CHECK(has(error_of([] { FedAdam<float>({.betas = {0.9, 1.0}}); }), "option 'betas[1]' = 1"));
  CHECK(has(error_of([] { outer::FedYogi<float>({.eps = 0}); }), "outer::FedYogi: option 'eps' = 0"));
  CHECK(has(error_of([] { outer::FedAdagrad<float>({.momentum = -0.5}); }), "outer::FedAdagrad: option 'momentum' = -0.5"));
  CHECK(has(error_of([] { outer::HeavyBall<float>({.momentum = 1}); }), "outer::HeavyBall: option 'momentum' = 1"));
  CHECK(has(error_of([] { outer::fedavgm<float>({.lr = -1}); }), "option 'lr' = -1"));
  SingleWorker solo;
  CHECK(has(error_of([&] { outer_loop(Sgd<float>({.lr = 0.1}), solo, {.tau = 0}); }), "OuterLoop: option 'tau' = 0"));
  auto loop = outer_loop(Sgd<double>({.lr = 0.1}), solo, {.tau = 2}, Forgetful{});
  Vector<double> x = Vector<double>::Constant(4, 1.0), g = Vector<double>::Constant(4, 1.0);
  loop.start(x);
  loop.step(x, g);
  const Vector<double> before = x;
  const std::string e = error_of([&] { loop.step(x, g); });
  CHECK(has(e, "Forgetful"));
  CHECK(has(e, "buffers() #0) of 0 elements; the parameters have 4"));
  CHECK(x == before);
  CHECK(loop.steps() == 1);
}
