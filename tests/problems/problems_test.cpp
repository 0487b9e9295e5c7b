// The toy problems: gradients against finite differences of the losses, minimisers against
// the first-order condition, seeded reproducibility, heterogeneity controls, bad options.
#include <doctest/doctest.h>

#include <slowmo/problems/least_squares.hpp>
#include <slowmo/problems/logistic.hpp>
#include <slowmo/problems/quadratic.hpp>

namespace {

using slowmo::Vector;
namespace pb = slowmo::problems;

/// max_j |g_j - (f(x + h e_j) - f(x - h e_j)) / 2h| relative to max(1, |g|)
template <class P>
double gradient_error(const P& p, int rank, const Vector<double>& x) {
  Vector<double> g(x.size());
  p.gradient(rank, x, g);
  double worst = 0;
  const double h = 1e-6;
  for (Eigen::Index j = 0; j < x.size(); ++j) {
    Vector<double> a = x, b = x;
    a[j] += h;
    b[j] -= h;
    const double fd = (p.loss(rank, a) - p.loss(rank, b)) / (2 * h);
    worst = std::max(worst, std::abs(fd - g[j]) / std::max(1.0, std::abs(g[j])));
  }
  return worst;
}

/// |mean_i grad f_i(x*)|: zero at the minimiser of f = mean_i f_i.
template <class P>
double stationarity(const P& p) {
  const Vector<double> x = p.minimizer();
  Vector<double> g(x.size()), sum = Vector<double>::Zero(x.size());
  for (int i = 0; i < p.workers(); ++i) {
    p.gradient(i, x, g);
    sum += g / p.workers();
  }
  return sum.norm();
}

template <class P>
void common_checks(const P& p) {
  static_assert(pb::ConvexProblem<P>);  // a Problem with a known minimizer()
  const Vector<double> x = Vector<double>::LinSpaced(p.dim(), -0.5, 0.7);
  for (int i = 0; i < p.workers(); ++i) CHECK(gradient_error(p, i, x) < 1e-6);
  CHECK(stationarity(p) < 1e-9);
  CHECK(p.loss(Vector<double>(p.minimizer())) <= p.loss(x));
  // seeded: the same (worker, step) gives the same stochastic gradient, another step another one
  Vector<double> g1(p.dim()), g2(p.dim()), g3(p.dim());
  p.sample_gradient(0, 7, x, g1);
  p.sample_gradient(0, 7, x, g2);
  p.sample_gradient(0, 8, x, g3);
  CHECK(g1 == g2);
  CHECK(g1 != g3);
  // float parameters work too
  Vector<float> xf = x.cast<float>(), gf(p.dim());
  p.gradient(0, xf, gf);
  Vector<double> gd(p.dim());
  p.gradient(0, Vector<double>(xf.cast<double>()), gd);
  CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() <= 1e-5 * std::max(1.0, gd.cwiseAbs().maxCoeff()));
}

}  // namespace

TEST_CASE("Quadratic: diagonal and dense, gradients, minimiser, noise statistics") {
  for (bool dense : {false, true}) {
    CAPTURE(dense);
    const pb::Quadratic p({.workers = 3, .dim = 7, .curvature_heterogeneity = 0.5, .heterogeneity = 1.0,
                           .dense = dense, .noise = 0.5, .seed = 4});
    common_checks(p);
  }
  // Noise: mean over many steps is the exact gradient, variance s^2 per coordinate.
  const pb::Quadratic p({.workers = 1, .dim = 4, .noise = 2.0, .seed = 1});
  const Vector<double> x = Vector<double>::Ones(4);
  Vector<double> g(4), exact(4), mean = Vector<double>::Zero(4), sq = Vector<double>::Zero(4);
  p.gradient(0, x, exact);
  const int n = 40000;
  for (int t = 0; t < n; ++t) {
    p.sample_gradient(0, t, x, g);
    mean += (g - exact) / n;
    sq += (g - exact).cwiseAbs2() / n;
  }
  // standard errors: 2/sqrt(n) = 0.01 for the mean, 4 sqrt(2/n) = 0.028 for the variance
  CHECK(mean.cwiseAbs().maxCoeff() < 0.05);
  for (int j = 0; j < 4; ++j) CHECK(sq[j] == doctest::Approx(4.0).epsilon(0.04));
  // heterogeneity 0: every worker has the same centre, the minimiser is 0
  const pb::Quadratic homogeneous({.workers = 4, .dim = 3, .heterogeneity = 0.0});
  CHECK(homogeneous.minimizer().isZero(0));
  // given curvatures and centres: the minimiser of sum a_i (x - c_i)^2 is sum a_i c_i / sum a_i
  const pb::Quadratic given({Eigen::VectorXd::Constant(1, 1.0), Eigen::VectorXd::Constant(1, 3.0)},
                            {Eigen::VectorXd::Constant(1, 2.0), Eigen::VectorXd::Constant(1, -2.0)});
  CHECK(given.minimizer()[0] == doctest::Approx((2.0 - 6.0) / 4.0));
}

TEST_CASE("LeastSquares: gradients, minimiser, minibatch gradients average to the gradient") {
  const pb::LeastSquares p({.workers = 3, .dim = 5, .rows_per_worker = 40, .heterogeneity = 0.5,
                            .conditioning = 10, .batch = 4, .seed = 2});
  common_checks(p);
  // The expectation of the with-replacement minibatch gradient is the full gradient.
  const Vector<double> x = Vector<double>::Zero(5);
  Vector<double> g(5), exact(5), mean = Vector<double>::Zero(5);
  p.gradient(1, x, exact);
  const int n = 20000;
  for (int t = 0; t < n; ++t) {
    p.sample_gradient(1, t, x, g);
    mean += g / n;
  }
  CHECK((mean - exact).norm() < 0.05 * exact.norm());
}

TEST_CASE("LogisticRegression: binary and softmax, Newton minimiser, Dirichlet label skew") {
  const pb::LogisticRegression binary({.workers = 3, .features = 4, .classes = 2, .samples_per_worker = 60,
                                       .dirichlet_alpha = 1.0, .seed = 1});
  CHECK(binary.dim() == 5);
  common_checks(binary);
  const pb::LogisticRegression softmax({.workers = 4, .features = 3, .classes = 5, .samples_per_worker = 50,
                                        .dirichlet_alpha = 0.5, .seed = 2});
  CHECK(softmax.dim() == 4 * 5);
  common_checks(softmax);
  CHECK(softmax.accuracy(Vector<double>(softmax.minimizer())) > 0.5);

  // Label skew: the average share of a worker's most frequent class grows as alpha shrinks.
  auto dominance = [](double alpha) {
    const pb::LogisticRegression p({.workers = 16, .features = 2, .classes = 10, .samples_per_worker = 100,
                                    .dirichlet_alpha = alpha, .seed = 3});
    double share = 0;
    for (int i = 0; i < 16; ++i) {
      std::vector<int> count(10, 0);
      for (int y : p.labels(i)) ++count[std::size_t(y)];
      share += double(*std::max_element(count.begin(), count.end())) / double(p.labels(i).size()) / 16;
    }
    return share;
  };
  const double iid = dominance(0.0), mild = dominance(1.0), skewed = dominance(0.05);
  CHECK(iid < 0.15);  // 10 classes, evenly split: the largest is ~1/10
  CHECK(mild > iid);
  CHECK(skewed > 0.6);  // with alpha = 0.05 most workers see mostly one class
}

TEST_CASE("problems: bad options and bad calls name the field") {
  CHECK_THROWS_WITH_AS(pb::Quadratic({.lambda_min = 0}), doctest::Contains("'lambda_min' = 0"),
                       slowmo::invalid_option);
  CHECK_THROWS_WITH_AS(pb::Quadratic({.noise = -1}), doctest::Contains("'noise' = -1"), slowmo::invalid_option);
  CHECK_THROWS_WITH_AS(pb::LogisticRegression({.classes = 1}), doctest::Contains("'classes' = 1"),
                       slowmo::invalid_option);
  CHECK_THROWS_WITH_AS(pb::LeastSquares({.conditioning = 0.5}), doctest::Contains("'conditioning' = 0.5"),
                       slowmo::invalid_option);
  const pb::Quadratic p({.workers = 2, .dim = 3});
  Vector<double> x(4), g(4);
  CHECK_THROWS_WITH_AS(p.gradient(0, x, g), doctest::Contains("vector of size 4 for a problem of dimension 3"),
                       slowmo::size_mismatch);
  Vector<double> y(3), h(3);
  CHECK_THROWS_WITH_AS(p.gradient(2, y, h), doctest::Contains("worker 2 is out of range [0, 2)"),
                       slowmo::size_mismatch);
}
