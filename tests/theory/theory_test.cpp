// Theory conformance: measured quantities against their closed forms.
//
// Stochastic measurements are deterministic (seeded) runs; each returns a standard error
// estimated from batch means. The tests require the measurement within 4 standard errors
// of the prediction, and the standard error small (<= 1.5% of the prediction) so that a
// wrong formula or a wrong algorithm cannot hide inside the tolerance.
#include <doctest/doctest.h>

#include <slowmo/problems/quadratic.hpp>
#include <slowmo/slowmo.hpp>
#include <slowmo/theory/closed_forms.hpp>
#include <slowmo/theory/experiments.hpp>

namespace {

void check_estimate(const slowmo::theory::Estimate& measured, double predicted) {
  CAPTURE(measured.mean);
  CAPTURE(measured.standard_error);
  CAPTURE(predicted);
  CHECK(measured.standard_error <= 0.015 * predicted);
  CHECK(std::abs(measured.mean - predicted) <= 4 * measured.standard_error);
}

slowmo::problems::Quadratic homogeneous_noisy(int workers, Eigen::Index dim, double lambda_min, double lambda_max,
                                              double noise, std::uint64_t seed) {
  return slowmo::problems::Quadratic({.workers = workers, .dim = dim, .lambda_min = lambda_min,
                                      .lambda_max = lambda_max, .heterogeneity = 0.0, .noise = noise, .seed = seed});
}

}  // namespace

TEST_CASE("1a. homogeneous noisy quadratic: Local SGD's average iterate is minibatch SGD with noise s^2/M, any H") {
  const int M = 4;
  const double eta = 0.1;
  const auto p = homogeneous_noisy(M, 6, 0.5, 2.0, 1.0, 11);
  for (int H : {1, 3, 8}) {
    CAPTURE(H);
    std::vector<Eigen::VectorXd> avg;
    slowmo::sim::run({.workers = M}, [&](slowmo::sim::Comm& c) {
      slowmo::LocalSgd opt(slowmo::Sgd<double>({.lr = eta}), c, {.H = H});
      slowmo::Vector<double> x = slowmo::Vector<double>::Ones(6), g(6), a(6);
      opt.start(x);
      for (int t = 0; t < 50; ++t) {
        p.sample_gradient(c.rank(), t, x, g);
        opt.step(x, g);
        a = x;
        c.all_reduce(slowmo::as_span(a), slowmo::ReduceOp::mean);
        if (c.rank() == 0) avg.push_back(a);
      }
    });
    // Minibatch SGD: x <- x - eta (A x + mean_i xi_i), the same noise draws.
    Eigen::VectorXd x = Eigen::VectorXd::Ones(6), g(6), gi(6);
    for (int t = 0; t < 50; ++t) {
      g.setZero();
      for (int i = 0; i < M; ++i) {
        p.sample_gradient(i, t, x, gi);
        g += gi / M;
      }
      x -= eta * g;
      CHECK((avg[std::size_t(t)] - x).cwiseAbs().maxCoeff() <= 1e-13);
    }
  }
}

TEST_CASE("1b. its stationary loss is sum_j eta s^2 / (2 M (2 - eta lambda_j)), for H = 1, 4, 16") {
  const int M = 4;
  const double eta = 0.1, s = 1.0;
  const auto p = homogeneous_noisy(M, 16, 0.5, 2.0, s, 3);
  const double predicted = slowmo::theory::local_sgd_stationary_loss(eta, s, M, p.eigenvalues(0));
  for (int H : {1, 4, 16}) {
    CAPTURE(H);
    check_estimate(slowmo::theory::local_sgd_stationary_loss(p, eta, H, 500, 60000), predicted);
  }
}

namespace {
// The 1-D heterogeneous problem of tests 2 and 3: f_i = 1/2 a_i (x - c_i)^2.
const std::vector<double> drift_a{0.5, 1.0, 2.0, 4.0}, drift_c{1.0, -2.0, 3.0, 0.5};
slowmo::problems::Quadratic drift_problem() {
  std::vector<Eigen::VectorXd> a, c;
  for (std::size_t i = 0; i < drift_a.size(); ++i) {
    a.push_back(Eigen::VectorXd::Constant(1, drift_a[i]));
    c.push_back(Eigen::VectorXd::Constant(1, drift_c[i]));
  }
  return slowmo::problems::Quadratic(a, c);
}
}  // namespace

TEST_CASE("2. client drift: K local steps converge to sum (1 - q_i) c_i / sum (1 - q_i); outer momentum keeps it") {
  const auto p = drift_problem();
  const double eta = 0.1, true_min = p.minimizer()[0];
  for (int K : {1, 5, 20}) {
    CAPTURE(K);
    const double x_hat = slowmo::theory::client_drift_fixed_point(eta, K, drift_a, drift_c);
    if (K == 1)
      CHECK(x_hat == doctest::Approx(true_min).epsilon(1e-12));
    else
      CHECK(std::abs(x_hat - true_min) > 0.01);  // the drift is real (0.021 for K = 5)
    for (double beta : {0.0, 0.5, 0.9}) {
      CAPTURE(beta);
      const auto x0 = slowmo::theory::slowmo_outer_iterates(p, eta, K, {.alpha = 1.0, .beta = beta}, 1500, 0.0);
      CHECK(x0.back() == doctest::Approx(x_hat).epsilon(1e-9));
    }
  }
}

TEST_CASE("3. outer heavy-ball and Nesterov rates: measured contraction within 2% of the recurrence's root") {
  const auto p = drift_problem();
  const double eta = 0.1;
  const int K = 5;
  const double h = slowmo::theory::outer_contraction_gap(eta, K, drift_a);
  const double x_hat = slowmo::theory::client_drift_fixed_point(eta, K, drift_a, drift_c);
  // alpha h well below 1 keeps the rates above 0.6, so that the measured window spans
  // dozens of outer steps and the envelope of oscillating errors is resolved.
  for (bool nesterov : {false, true})
    for (double alpha : {0.3, 0.6})
      for (double beta : {0.0, 0.3, 0.6, 0.9}) {
        CAPTURE(nesterov);
        CAPTURE(alpha);
        CAPTURE(beta);
        const auto x0 = slowmo::theory::slowmo_outer_iterates(
            p, eta, K, {.alpha = alpha, .beta = beta, .nesterov = nesterov}, 3000, 10.0);
        std::vector<double> e;
        for (double v : x0) e.push_back(v - x_hat);
        const double predicted = slowmo::theory::outer_rate(alpha, beta, h, nesterov);
        const double measured = slowmo::theory::measured_rate(e);
        CAPTURE(measured);
        CAPTURE(predicted);
        CHECK(std::abs(measured - predicted) <= 0.02 * predicted);
      }
}

TEST_CASE("4. Lookahead's stationary variance relative to SGD's matches Zhang et al.'s closed form") {
  const double eta = 0.1, lambda = 1.0;
  const auto p = homogeneous_noisy(1, 256, lambda, lambda, 1.0, 5);
  for (auto [k, alpha] : {std::pair{5, 0.5}, std::pair{10, 0.8}, std::pair{3, 0.2}}) {
    CAPTURE(k);
    CAPTURE(alpha);
    const double predicted = slowmo::theory::lookahead_variance_ratio(alpha, k, 1 - eta * lambda);
    check_estimate(slowmo::theory::lookahead_variance_ratio(p, eta, k, alpha, 100, 4000), predicted);
  }
}

TEST_CASE("5. consensus distance k local steps after an average: eta^2 s^2 (1 - 1/M) (1 - q^2k) / (1 - q^2)") {
  const int M = 4, H = 8;
  const double eta = 0.1, lambda = 1.0, s = 1.0;
  const auto p = homogeneous_noisy(M, 256, lambda, lambda, s, 9);
  const auto measured = slowmo::theory::consensus_distances(p, eta, H, 400);
  for (int k = 1; k < H; ++k) {
    CAPTURE(k);
    check_estimate(measured[std::size_t(k - 1)],
                   slowmo::theory::consensus_distance(eta, s, M, 1 - eta * lambda, k));
  }
}
