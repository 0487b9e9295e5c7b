// Splits across workers and the held-out validation split: partitions (every index exactly
// once), sizes, the label skew's strength against alpha, stratification, seeds, bad options;
// and the Gamma sampler under them against the distribution's closed-form moments.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <slowmo/problems/split.hpp>

namespace {

namespace problems = slowmo::problems;
using Index = Eigen::Index;

/// A dataset whose one feature is the sample's index; sample j has label label(j).
template <class Label>
problems::Dataset labelled(Index n, int classes, Label label) {
  problems::Dataset ds{.X = Eigen::MatrixXf(1, n), .y = std::vector<std::int32_t>(std::size_t(n)), .classes = classes,
                   .name = "toy"};
  for (Index j = 0; j < n; ++j) {
    ds.X(0, j) = float(j);
    ds.y[std::size_t(j)] = std::int32_t(label(j));
  }
  return ds;
}

/// 10 classes of 600, interleaved.
problems::Dataset ten_classes() {
  return labelled(6000, 10, [](Index j) { return j % 10; });
}

/// Every index of [0, n) exactly once across the shards.
bool is_partition(const problems::Shards& shards, Index n) {
  std::vector<int> seen(static_cast<std::size_t>(n));
  for (const auto& s : shards)
    for (const Index j : s) {
      if (j < 0 || j >= n) return false;
      ++seen[std::size_t(j)];
    }
  return std::all_of(seen.begin(), seen.end(), [](int k) { return k == 1; });
}

std::vector<double> class_distribution(const problems::Dataset& ds, const std::vector<Index>& rows) {
  std::vector<double> p(std::size_t(ds.classes));
  for (const Index j : rows) p[std::size_t(ds.y[std::size_t(j)])] += 1.0 / double(rows.size());
  return p;
}

/// Mean over workers of the total-variation distance between the worker's class
/// distribution and the dataset's: 0 for IID shards, 1 - 1/classes for one balanced class each.
double mean_tv(const problems::Dataset& ds, const problems::Shards& shards) {
  std::vector<Index> all(std::size_t(ds.size()));
  std::iota(all.begin(), all.end(), Index(0));
  const auto global = class_distribution(ds, all);
  double sum = 0;
  for (const auto& s : shards) {
    const auto p = class_distribution(ds, s);
    double tv = 0;
    for (std::size_t k = 0; k < p.size(); ++k) tv += 0.5 * std::abs(p[k] - global[k]);
    sum += tv;
  }
  return sum / double(shards.size());
}

/// Mean over classes of the share of the class's samples held by the worker that has most of them.
double mean_top_share(const problems::Dataset& ds, const problems::Shards& shards) {
  double sum = 0;
  for (int k = 0; k < ds.classes; ++k) {
    Index top = 0, total = 0;
    for (const auto& s : shards) {
      const auto n = Index(std::count_if(s.begin(), s.end(), [&](Index j) { return ds.y[std::size_t(j)] == k; }));
      top = std::max(top, n);
      total += n;
    }
    sum += double(top) / double(total);
  }
  return sum / ds.classes;
}

}  // namespace

TEST_CASE("split_iid: a partition into sizes within one, seeded") {
  const auto ds = labelled(1003, 3, [](Index j) { return j % 3; });
  const auto shards = problems::split_iid(ds, 10, 5);
  REQUIRE(shards.size() == 10);
  CHECK(is_partition(shards, 1003));
  for (std::size_t i = 0; i < 10; ++i) CHECK(shards[i].size() == (i < 3 ? 101u : 100u));  // 1003 = 10 x 100 + 3
  CHECK(problems::split_iid(ds, 10, 5) == shards);
  CHECK(problems::split_iid(ds, 10, 6) != shards);
  // One worker: the whole dataset, shuffled.
  const auto one = problems::split_iid(ds, 1, 5);
  CHECK(is_partition(one, 1003));
  CHECK(!std::is_sorted(one[0].begin(), one[0].end()));
  // As many workers as samples: one each.
  const auto each = problems::split_iid(ds, 1003, 5);
  CHECK(is_partition(each, 1003));
  CHECK(std::all_of(each.begin(), each.end(), [](const auto& s) { return s.size() == 1; }));
  // IID shards have about the global class distribution.
  CHECK(mean_tv(ds, shards) < 0.15);
}

TEST_CASE("split_dirichlet: alpha = 1e-3 gives each class to about one worker, 1e3 about IID") {
  const auto ds = ten_classes();
  for (const double alpha : {1e-3, 0.1, 1.0, 1e3}) {
    CAPTURE(alpha);
    const auto shards = problems::split_dirichlet(ds, 10, alpha, 11);
    CHECK(is_partition(shards, ds.size()));
    CHECK(std::none_of(shards.begin(), shards.end(), [](const auto& s) { return s.empty(); }));
  }
  // Tiny alpha: whole classes. A worker with j of the 10 (balanced) classes is at distance
  // 1 - j / 10 from the global distribution; as the j add up to 10 over the workers and an
  // otherwise empty worker gets one sample (distance 0.9), the mean is 0.9 - 0.01 x (empty
  // workers) >= 0.81, less a little for the rare class split between two workers.
  const auto skewed = problems::split_dirichlet(ds, 10, 1e-3, 11);
  CHECK(mean_tv(ds, skewed) > 0.75);
  CHECK(mean_top_share(ds, skewed) > 0.95);
  // Huge alpha: shares 1/10 +- 0.003, counts 60 +- 2 of each class per worker.
  const auto flat = problems::split_dirichlet(ds, 10, 1e3, 11);
  CHECK(mean_tv(ds, flat) < 0.05);
  for (const auto& s : flat) CHECK(std::abs(double(s.size()) - 600) < 60);
  // In between, the skew falls as alpha grows.
  const double tv01 = mean_tv(ds, problems::split_dirichlet(ds, 10, 0.1, 11));
  const double tv1 = mean_tv(ds, problems::split_dirichlet(ds, 10, 1.0, 11));
  CHECK(tv01 > tv1);
  CHECK(tv1 > mean_tv(ds, flat));
}

TEST_CASE("split_dirichlet: no worker is left empty, the shards stay a partition") {
  // 16 workers, 10 classes that tiny alpha gives (nearly) whole: several workers get nothing
  // from the Dirichlet draws, then one sample each from the largest.
  const auto ds = ten_classes();
  const auto shards = problems::split_dirichlet(ds, 16, 1e-3, 2);
  REQUIRE(shards.size() == 16);
  CHECK(is_partition(shards, ds.size()));
  const auto singles = std::count_if(shards.begin(), shards.end(), [](const auto& s) { return s.size() == 1; });
  CHECK(singles >= 1);
  CHECK(std::none_of(shards.begin(), shards.end(), [](const auto& s) { return s.empty(); }));
  // As many workers as samples: one each, whatever alpha.
  const auto small = labelled(12, 3, [](Index j) { return j % 3; });
  const auto each = problems::split_dirichlet(small, 12, 1e-3, 2);
  CHECK(is_partition(each, 12));
  CHECK(std::all_of(each.begin(), each.end(), [](const auto& s) { return s.size() == 1; }));
}

TEST_CASE("split_dirichlet: seeded") {
  const auto ds = ten_classes();
  const auto a = problems::split_dirichlet(ds, 8, 0.5, 4);
  CHECK(problems::split_dirichlet(ds, 8, 0.5, 4) == a);
  CHECK(problems::split_dirichlet(ds, 8, 0.5, 5) != a);
}

TEST_CASE("largest-remainder rounding") {
  // 7 x (0.5, 0.3, 0.2) = (3.5, 2.1, 1.4): floors (3, 2, 1), the largest remainder (0.5) gets the 7th.
  const std::vector<double> shares = {0.5, 0.3, 0.2};
  CHECK(problems::detail::largest_remainder(shares, 7) == std::vector<Index>{4, 2, 1});
  // Equal remainders: the lower index first.
  const std::vector<double> thirds(3, 1.0 / 3.0);
  CHECK(problems::detail::largest_remainder(thirds, 4) == std::vector<Index>{2, 1, 1});
  const std::vector<double> one_hot = {0.0, 1.0, 0.0};
  CHECK(problems::detail::largest_remainder(one_hot, 9) == std::vector<Index>{0, 9, 0});
}

TEST_CASE("Gamma variates: the mean and variance of Gamma(k, 1) are both k") {
  constexpr int n = 40000;
  for (const double k : {0.1, 0.5, 1.0, 2.5, 30.0}) {
    CAPTURE(k);
    problems::detail::Stream s(slowmo::problems::stream_key(9, 0, std::uint64_t(k * 10)));
    double sum = 0, squares = 0;
    for (int t = 0; t < n; ++t) {
      const double g = std::exp(problems::detail::log_gamma_variate(k, s));
      sum += g;
      squares += g * g;
    }
    const double mean = sum / n, var = squares / n - mean * mean;
    // Standard errors: sqrt(k / n) for the mean; sqrt((mu4 - k^2) / n) for the variance,
    // with the fourth central moment mu4 = 3 k^2 + 6 k.
    CHECK(std::abs(mean - k) < 5 * std::sqrt(k / n));
    CHECK(std::abs(var - k) < 5 * std::sqrt((2 * k * k + 6 * k) / n));
  }
  // Tiny shape, where the variate itself underflows: E[log G] = digamma(1e-3) = -1000.5756
  // (-1/x - Euler's gamma + pi^2/6 x), Var[log G] = trigamma(1e-3) = 1e6 + 1.64.
  problems::detail::Stream s(slowmo::problems::stream_key(9, 1, 0));
  double sum = 0;
  for (int t = 0; t < n; ++t) sum += problems::detail::log_gamma_variate(1e-3, s);
  CHECK(std::abs(sum / n - -1000.5756) < 5 * 1000.0 / std::sqrt(double(n)));
}

TEST_CASE("holdout: stratified, disjoint, seeded, in random order") {
  // Classes of 500, 300, 200. 77 held out: 38.5, 23.1, 15.4, floors 38 + 23 + 15 = 76, and the
  // largest remainder (class 0's) gets the 77th.
  const auto ds = labelled(1000, 3, [](Index j) { return j % 10 < 5 ? 0 : (j % 10 < 8 ? 1 : 2); });
  const auto h = problems::holdout(ds, 77, 1);
  REQUIRE(h.validation.size() == 77);
  REQUIRE(h.train.size() == 923);
  auto counts = [&](const std::vector<Index>& rows) {
    std::vector<Index> n(3);
    for (const Index j : rows) ++n[std::size_t(ds.y[std::size_t(j)])];
    return n;
  };
  CHECK(counts(h.validation_rows) == std::vector<Index>{39, 23, 15});
  CHECK(counts(h.train_rows) == std::vector<Index>{461, 277, 185});
  CHECK(is_partition({h.train_rows, h.validation_rows}, 1000));
  // The parts are the rows they name (the feature is the index).
  for (std::size_t k = 0; k < h.validation_rows.size(); ++k) {
    REQUIRE(h.validation.X(0, Index(k)) == float(h.validation_rows[k]));
    REQUIRE(h.validation.y[k] == ds.y[std::size_t(h.validation_rows[k])]);
  }
  for (std::size_t k = 0; k < h.train_rows.size(); ++k) REQUIRE(h.train.X(0, Index(k)) == float(h.train_rows[k]));
  CHECK(!std::is_sorted(h.train_rows.begin(), h.train_rows.end()));
  CHECK(h.validation.name == "toy validation");
  CHECK(h.train.name == "toy minus validation");
  CHECK(problems::holdout(ds, 77, 1).validation_rows == h.validation_rows);
  CHECK(problems::holdout(ds, 77, 2).validation_rows != h.validation_rows);
  // Within one of proportional for every count.
  for (const Index count : {1, 2, 9, 333, 998, 999}) {
    CAPTURE(count);
    const auto c = counts(problems::holdout(ds, count, 3).validation_rows);
    const double n[] = {500, 300, 200};
    for (std::size_t k = 0; k < 3; ++k) CHECK(std::abs(double(c[k]) - double(count) * n[k] / 1000) < 1);
    CHECK(c[0] + c[1] + c[2] == count);
  }
}

TEST_CASE("splits: bad options throw invalid_option naming the parameter and value") {
  const auto ds = labelled(20, 2, [](Index j) { return j % 2; });
  using slowmo::invalid_option;
  CHECK_THROWS_WITH_AS(problems::split_iid(ds, 0, 1), doctest::Contains("split_iid: option 'workers' = 0 is invalid"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(problems::split_iid(ds, 21, 1),
                       doctest::Contains("option 'workers' = 21 is invalid: must be <= the 20 samples of toy"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(problems::split_dirichlet(ds, -1, 0.5, 1), doctest::Contains("option 'workers' = -1"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(problems::split_dirichlet(ds, 21, 0.5, 1), doctest::Contains("option 'workers' = 21"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(problems::split_dirichlet(ds, 2, 0.0, 1),
                       doctest::Contains("split_dirichlet: option 'alpha' = 0 is invalid"), invalid_option);
  CHECK_THROWS_WITH_AS(problems::split_dirichlet(ds, 2, -1.0, 1), doctest::Contains("option 'alpha' = -1"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(problems::split_dirichlet(ds, 2, INFINITY, 1), doctest::Contains("option 'alpha' = inf"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(problems::split_dirichlet(ds, 2, NAN, 1), doctest::Contains("option 'alpha' = nan"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(problems::holdout(ds, 0, 1), doctest::Contains("holdout: option 'count' = 0 is invalid"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(problems::holdout(ds, 20, 1),
                       doctest::Contains("option 'count' = 20 is invalid: must be in [1, 20)"), invalid_option);
  CHECK_THROWS_WITH_AS(problems::holdout(ds, -3, 1), doctest::Contains("option 'count' = -3"), invalid_option);
  // A label out of range is the dataset's fault: size_mismatch, from Dataset::validate.
  auto broken = ds;
  broken.y[3] = 2;
  CHECK_THROWS_AS(problems::split_dirichlet(broken, 2, 0.5, 1), slowmo::size_mismatch);
  CHECK_THROWS_AS(problems::holdout(broken, 5, 1), slowmo::size_mismatch);
}
