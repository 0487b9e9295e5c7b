// The Gaussian mixture of the asynchronous Local-SGD notebook: the defaults are the
// notebook's, generation is seeded, classes are balanced, and each cluster's empirical mean
// and spread match the options within a few standard errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <slowmo/problems/gaussian_mixture.hpp>

namespace {

namespace problems = slowmo::problems;

// 3 classes of 2 clusters in 16 dimensions, 1000 training samples per cluster.
const problems::GaussianMixtureOptions small{.features = 16,
                                         .classes = 3,
                                         .clusters_per_class = 2,
                                         .center_norm = 2.0,
                                         .cluster_std = 0.5,
                                         .train_samples = 6000,
                                         .test_samples = 600,
                                         .seed = 7};

std::vector<Eigen::Index> class_counts(const problems::Dataset& ds) {
  std::vector<Eigen::Index> n(std::size_t(ds.classes));
  for (const auto y : ds.y) ++n[std::size_t(y)];
  return n;
}

}  // namespace

TEST_CASE("Gaussian mixture: the defaults are the asyncdiloco notebook's") {
  const problems::GaussianMixtureOptions o;
  CHECK(o.features == 512);             // D
  CHECK(o.classes == 4);                // NUM_CLASSES
  CHECK(o.clusters_per_class == 8);     // CLUSTERS_PER_CLASS
  CHECK(o.center_norm == 1.0);          // centers / norm(centers)
  CHECK(o.cluster_std == 0.5);          // ep
  CHECK(o.train_samples == 128000);     // NUM_DATA
  CHECK(o.test_samples == 10000);       // random.sample(eval_indices, 10000)
  // The notebook's layout at a small size: 32 clusters of 10 samples, classes of 80.
  auto g = problems::make_gaussian_mixture({.train_samples = 320, .test_samples = 32});
  CHECK(g.train.features() == 512);
  CHECK(g.centers.cols() == 32);
  CHECK(class_counts(g.train) == std::vector<Eigen::Index>{80, 80, 80, 80});
  CHECK(class_counts(g.test) == std::vector<Eigen::Index>{8, 8, 8, 8});
}

TEST_CASE("Gaussian mixture: seeded; train and test are other draws of the same mixture") {
  const auto a = problems::make_gaussian_mixture(small), b = problems::make_gaussian_mixture(small);
  CHECK(a.train.X == b.train.X);
  CHECK(a.train.y == b.train.y);
  CHECK(a.test.X == b.test.X);
  CHECK(a.centers == b.centers);
  auto other_seed = small;
  other_seed.seed = 8;
  const auto c = problems::make_gaussian_mixture(other_seed);
  CHECK(c.centers != a.centers);
  CHECK(c.train.X != a.train.X);
  // The test samples are not copies of training samples.
  CHECK(a.test.X.col(0) != a.train.X.col(0));
  CHECK_NOTHROW(a.train.validate());
  CHECK_NOTHROW(a.test.validate());
  CHECK(a.train.name == "gaussian-mixture train");
  CHECK(a.test.name == "gaussian-mixture test");
}

TEST_CASE("Gaussian mixture: balanced classes, labels from clusters") {
  const auto g = problems::make_gaussian_mixture(small);
  CHECK(g.train.size() == 6000);
  CHECK(g.test.size() == 600);
  CHECK(class_counts(g.train) == std::vector<Eigen::Index>{2000, 2000, 2000});
  CHECK(class_counts(g.test) == std::vector<Eigen::Index>{200, 200, 200});
  for (std::size_t j = 0; j < g.train.y.size(); ++j) REQUIRE(g.train.y[j] == g.train_cluster[j] / 2);
  for (std::size_t j = 0; j < g.test.y.size(); ++j) REQUIRE(g.test.y[j] == g.test_cluster[j] / 2);
  // A remainder goes one per class in turn: 6004 = 6 x 1000 + 4 gives classes 0, 1, 2, 0 one more.
  auto o = small;
  o.train_samples = 6004;
  CHECK(class_counts(problems::make_gaussian_mixture(o).train) == std::vector<Eigen::Index>{2002, 2001, 2001});
}

TEST_CASE("Gaussian mixture: each cluster's mean and spread are the options'") {
  const auto g = problems::make_gaussian_mixture(small);
  const double sigma = small.cluster_std;
  for (Eigen::Index c = 0; c < g.centers.cols(); ++c) {
    CAPTURE(c);
    CHECK(double(g.centers.col(c).norm()) == doctest::Approx(small.center_norm).epsilon(1e-6));
    Eigen::VectorXd sum = Eigen::VectorXd::Zero(small.features);
    double squares = 0;
    int n = 0;
    for (std::size_t j = 0; j < g.train_cluster.size(); ++j) {
      if (g.train_cluster[j] != c) continue;
      const Eigen::VectorXd d = (g.train.X.col(Eigen::Index(j)) - g.centers.col(c)).cast<double>();
      sum += d;
      squares += d.squaredNorm();
      ++n;
    }
    REQUIRE(n == 1000);
    // Each coordinate's mean offset has standard error sigma / sqrt(n): within 5 of them
    // (96 such numbers in all: a false alarm has odds of about 1 in 20,000).
    const double se_mean = sigma / std::sqrt(double(n));
    CHECK((sum / n).cwiseAbs().maxCoeff() < 5 * se_mean);
    // The variance around the mean, over n x D squares of N(0, sigma^2): standard error
    // sigma^2 sqrt(2 / (n D)).
    const double var = squares / double(n * small.features);
    CHECK(std::abs(var - sigma * sigma) < 5 * sigma * sigma * std::sqrt(2.0 / double(n * small.features)));
  }
  // The means are far apart compared with the noise along the line between them: clusters
  // on a sphere of radius 2 in 16 dimensions, noise 0.5.
  CHECK((g.centers.col(0) - g.centers.col(1)).norm() > 1.0f);
}

TEST_CASE("Gaussian mixture: bad options name the field") {
  auto bad = [](auto edit, const char* message) {
    auto o = small;
    edit(o);
    CHECK_THROWS_WITH_AS(problems::make_gaussian_mixture(o), doctest::Contains(message), slowmo::invalid_option);
  };
  using O = problems::GaussianMixtureOptions;
  bad([](O& o) { o.features = 0; }, "option 'features' = 0 is invalid");
  bad([](O& o) { o.classes = 1; }, "option 'classes' = 1 is invalid");
  bad([](O& o) { o.clusters_per_class = 0; }, "option 'clusters_per_class' = 0 is invalid");
  bad([](O& o) { o.center_norm = 0; }, "option 'center_norm' = 0 is invalid");
  bad([](O& o) { o.center_norm = INFINITY; }, "option 'center_norm' = inf is invalid");
  bad([](O& o) { o.cluster_std = -0.5; }, "option 'cluster_std' = -0.5 is invalid");
  bad([](O& o) { o.cluster_std = NAN; }, "option 'cluster_std' = nan is invalid");
  bad([](O& o) { o.train_samples = 5; }, "option 'train_samples' = 5 is invalid: must be >= classes * "
                                          "clusters_per_class = 6");
  bad([](O& o) { o.test_samples = -1; }, "option 'test_samples' = -1 is invalid");
}
