// slowmo/problems/gaussian_mixture.hpp — the toy classification data of asynchronous Local-SGD
// (Liu, Douillard et al. 2024, "Asynchronous Local-SGD Training for Language Modeling",
// arXiv:2401.09135; its notebook AsyncLocalSGDToyExample.ipynb in
// github.com/google-deepmind/asyncdiloco): a mixture of Gaussian mixtures. There are
// classes * clusters_per_class clusters; cluster c belongs to class c / clusters_per_class;
// its mean is a uniformly random point on the sphere of radius center_norm and its samples
// are the mean plus isotropic Gaussian noise of standard deviation cluster_std.
//
// The defaults are the notebook's "big" data: D = 512, 4 classes of 8 clusters, unit-norm
// means, noise std ep = 0.5, 128,000 training samples (4,000 per cluster), and an
// evaluation set of 10,000. Differences: the notebook draws its evaluation set from the
// training samples themselves; here the test set is fresh samples of the same mixture (the
// same means, another stream of noise). Its "small" data is {.clusters_per_class = 1,
// .train_samples = 4096}. The numbers are not the notebook's (another generator), only the
// distribution is.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <string>
#include <vector>

#include "slowmo/core/error.hpp"
#include "slowmo/problems/dataset.hpp"
#include "slowmo/problems/random.hpp"

namespace slowmo::problems {

struct GaussianMixtureOptions {
  Eigen::Index features = 512;          ///< D
  int classes = 4;                      ///< NUM_CLASSES
  int clusters_per_class = 8;           ///< CLUSTERS_PER_CLASS
  double center_norm = 1.0;             ///< |mean| of every cluster (the notebook normalises them to 1)
  double cluster_std = 0.5;             ///< std of each coordinate around the mean (the notebook's ep)
  Eigen::Index train_samples = 128000;  ///< NUM_DATA
  Eigen::Index test_samples = 10000;    ///< the notebook's 10,000 evaluation samples
  std::uint64_t seed = 42;              ///< the notebook's seeding(42) (another generator: other numbers)
};

/// Samples in cluster order (cluster 0's, then cluster 1's, ...: so sorted by class); each
/// cluster gets samples / clusters, the remainder going one per class in turn, so class sizes
/// differ by at most one. split_iid and split_dirichlet shuffle.
struct GaussianMixture {
  Dataset train, test;
  Eigen::MatrixXf centers;  ///< features x clusters: column c is cluster c's mean
  std::vector<std::int32_t> train_cluster, test_cluster;  ///< each sample's cluster
  int clusters_per_class = 1;  ///< cluster c belongs to class c / clusters_per_class
};

namespace detail {

/// How many of `total` samples cluster c = k * per_class + i (class k) gets: the floor, plus
/// one for the first total % clusters clusters in the order (i, k), i.e. one extra per class
/// in turn.
inline Eigen::Index mixture_cluster_size(Eigen::Index total, int classes, int per_class, int k, int i) {
  const Eigen::Index clusters = Eigen::Index(classes) * per_class;
  return total / clusters + (Eigen::Index(i) * classes + k < total % clusters ? 1 : 0);
}

/// Mean + std * noise for each cluster, noise number (s * D + j) of stream (seed, part, c).
inline void sample_mixture(const GaussianMixtureOptions& o, const Eigen::MatrixXf& centers, std::uint64_t part,
                           Eigen::Index total, Dataset& ds, std::vector<std::int32_t>& cluster) {
  const Eigen::Index D = o.features;
  ds.X.resize(D, total);
  ds.y.resize(std::size_t(total));
  cluster.resize(std::size_t(total));
  Eigen::Index col = 0;
  for (int k = 0; k < o.classes; ++k)
    for (int i = 0; i < o.clusters_per_class; ++i) {
      const int c = k * o.clusters_per_class + i;
      const std::uint64_t key = stream_key(o.seed, part, std::uint64_t(c));
      const Eigen::Index n = mixture_cluster_size(total, o.classes, o.clusters_per_class, k, i);
      for (Eigen::Index s = 0; s < n; ++s, ++col) {
        const std::uint64_t first = std::uint64_t(s) * std::uint64_t(D);
        for (Eigen::Index j = 0; j < D; ++j)
          ds.X(j, col) = float(double(centers(j, c)) + o.cluster_std * normal(key, first + std::uint64_t(j)));
        ds.y[std::size_t(col)] = k;
        cluster[std::size_t(col)] = c;
      }
    }
  ds.classes = o.classes;
}

}  // namespace detail

/// Draws the means, then the training and test samples (independent streams of one seed).
/// Throws invalid_option naming the field for a bad option.
inline GaussianMixture make_gaussian_mixture(const GaussianMixtureOptions& o = {}) {
  using slowmo::detail::finite;
  using slowmo::detail::require_option;
  const std::string_view owner = "problems::make_gaussian_mixture";
  require_option(o.features >= 1, owner, "features", o.features, "must be >= 1");
  require_option(o.classes >= 2, owner, "classes", o.classes, "must be >= 2");
  require_option(o.clusters_per_class >= 1, owner, "clusters_per_class", o.clusters_per_class, "must be >= 1");
  require_option(finite(o.center_norm) && o.center_norm > 0, owner, "center_norm", o.center_norm,
                 "must be finite and > 0");
  require_option(finite(o.cluster_std) && o.cluster_std >= 0, owner, "cluster_std", o.cluster_std,
                 "must be finite and >= 0");
  const Eigen::Index clusters = Eigen::Index(o.classes) * o.clusters_per_class;
  require_option(o.train_samples >= clusters, owner, "train_samples", o.train_samples,
                 slowmo::detail::concat("must be >= classes * clusters_per_class = ", clusters,
                                        " (a sample of every cluster)"));
  require_option(o.test_samples >= 0, owner, "test_samples", o.test_samples, "must be >= 0");

  GaussianMixture g;
  g.clusters_per_class = o.clusters_per_class;
  // A standard normal vector, normalised: uniform on the sphere (as the notebook's
  // randn / norm). Stream (seed, 0, c) for cluster c's mean.
  g.centers.resize(o.features, clusters);
  for (Eigen::Index c = 0; c < clusters; ++c) {
    const std::uint64_t key = stream_key(o.seed, 0, std::uint64_t(c));
    Eigen::VectorXd v(o.features);
    for (Eigen::Index j = 0; j < o.features; ++j) v[j] = normal(key, std::uint64_t(j));
    g.centers.col(c) = (o.center_norm / v.norm() * v).cast<float>();
  }
  g.train.name = "gaussian-mixture train";
  g.test.name = "gaussian-mixture test";
  detail::sample_mixture(o, g.centers, 1, o.train_samples, g.train, g.train_cluster);
  detail::sample_mixture(o, g.centers, 2, o.test_samples, g.test, g.test_cluster);
  return g;
}

}  // namespace slowmo::problems
