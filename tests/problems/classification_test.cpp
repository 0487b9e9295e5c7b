// problems::Classification<problems::Mlp>: the Problem interface on a shared dataset split into
// shards; stochastic gradients as pure functions of (seed, rank, step); the identity
// "AR-SGD on m workers = SGD on the concatenated batch"; the same draws from concurrent
// threads; validation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <slowmo/comm/threads.hpp>
#include <slowmo/problems/classification.hpp>
#include <vector>

namespace {

using slowmo::Vector;
using slowmo::problems::Dataset;
using slowmo::problems::Activation;
using slowmo::problems::Mlp;
using Index = Eigen::Index;
namespace pb = slowmo::problems;
using Problem = pb::Classification<Mlp>;

static_assert(pb::Problem<Problem>);
static_assert(!pb::ConvexProblem<Problem>, "a non-convex problem has no minimizer()");

std::shared_ptr<const Dataset> random_dataset(Index features, int classes, Index n, std::uint64_t seed) {
  auto d = std::make_shared<Dataset>(Dataset{.X = Eigen::MatrixXf(features, n),
                                             .y = std::vector<std::int32_t>(std::size_t(n)),
                                             .classes = classes,
                                             .name = "random"});
  const std::uint64_t key = pb::stream_key(seed, 99, 0);
  for (Index i = 0; i < d->X.size(); ++i) d->X.data()[i] = float(pb::normal(key, std::uint64_t(i)));
  for (Index j = 0; j < n; ++j) d->y[std::size_t(j)] = std::int32_t(pb::uniform01(key ^ 1, std::uint64_t(j)) * classes);
  return d;
}

/// Worker i gets the samples j with j % m == i, but worker 0 only the first 5 of them (shards
/// of different sizes).
std::vector<std::vector<Index>> strided_shards(Index n, int m) {
  std::vector<std::vector<Index>> s(static_cast<std::size_t>(m));
  for (Index j = 0; j < n; ++j) s[std::size_t(j % m)].push_back(j);
  s[0].resize(5);
  return s;
}

Problem small_problem(int batch = 6, std::uint64_t seed = 3) {
  const Mlp model({.widths = {5, 7, 4, 3}, .activation = Activation::tanh, .l2 = 1e-2});
  return Problem(model, random_dataset(5, 3, 60, 1), strided_shards(60, 4), {.batch = batch, .seed = seed});
}

double rel_diff(const Vector<double>& a, const Vector<double>& b) {
  return (a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff();
}

}  // namespace

TEST_CASE("Classification: f_i on the shards, f their mean, exact gradients against finite differences") {
  const Problem p = small_problem();
  CHECK(p.workers() == 4);
  CHECK(p.dim() == p.model().dim());
  CHECK(p.shard(0).size() == 5);
  CHECK(p.shard(1).size() == 15);
  const Vector<double> x = p.init<double>(5) + Vector<double>::LinSpaced(p.dim(), -0.3, 0.3);
  double mean = 0;
  for (int i = 0; i < p.workers(); ++i) {
    auto ws = p.model().workspace<double>(64);
    const double fi = p.loss(i, x);
    CHECK(std::abs(fi - p.model().loss(x, p.train(), p.shard(i), ws)) < 1e-13 * fi);
    mean += fi / p.workers();
    // the exact gradient is the gradient of f_i: central differences
    Vector<double> g(p.dim());
    p.gradient(i, x, g);
    double worst = 0;
    for (Index j = 0; j < x.size(); ++j) {
      Vector<double> a = x, b = x;
      a[j] += 1e-6;
      b[j] -= 1e-6;
      worst = std::max(worst, std::abs((p.loss(i, a) - p.loss(i, b)) / 2e-6 - g[j]));
    }
    CHECK(worst < 1e-6 * g.cwiseAbs().maxCoeff());
    // and batch_gradient of the shard is the same gradient (in other chunks: to rounding)
    Vector<double> gb(p.dim());
    CHECK(p.batch_gradient(p.shard(i), x, gb) == doctest::Approx(fi).epsilon(1e-13));
    CHECK(rel_diff(gb, g) < 1e-13);
  }
  CHECK(std::abs(p.loss(x) - mean) < 1e-13 * mean);
  // the held-out helpers on the training set itself
  std::vector<Index> all(std::size_t(p.train().size()));
  for (std::size_t k = 0; k < all.size(); ++k) all[k] = Index(k);
  auto ws = p.model().workspace<double>(8);
  CHECK(std::abs(p.loss(x, p.train()) - p.model().loss(x, p.train(), all, ws)) < 1e-13);
  CHECK(p.accuracy(x, p.train()) == p.model().accuracy(x, p.train(), ws));
  CHECK(p.init<float>(5) == p.model().init<float>(5));
}

TEST_CASE_TEMPLATE("Classification: sample_gradient is a pure function of (seed, rank, step)", T, float, double) {
  const Problem p = small_problem();
  const Vector<T> x = p.init<T>(1);
  Vector<T> g1(p.dim()), g2(p.dim()), g3(p.dim()), other(p.dim());
  p.sample_gradient(1, 7, x, g1);
  p.sample_gradient(2, 7, x, other);  // other ranks and steps in between change nothing
  p.sample_gradient(1, 8, x, g3);
  p.sample_gradient(1, 7, x, g2);
  CHECK(g1 == g2);
  CHECK(g1 != g3);
  CHECK(g1 != other);
  // a fresh copy of the problem draws the same
  const Problem q = p;
  Vector<T> gq(p.dim());
  q.sample_gradient(1, 7, x, gq);
  CHECK(gq == g1);
  // another seed draws other batches
  const Problem r = small_problem(6, 4);
  r.sample_gradient(1, 7, x, gq);
  CHECK(gq != g1);
  // the draws: `batch` samples of the worker's own shard, with replacement, and they are what
  // the gradient used
  for (int rank = 0; rank < p.workers(); ++rank)
    for (std::int64_t step : {0, 1, 2, 1000000}) {
      const auto b = p.batch(rank, step);
      CHECK(b.size() == 6);
      for (Index s : b) CHECK(std::find(p.shard(rank).begin(), p.shard(rank).end(), s) != p.shard(rank).end());
      CHECK(b == p.batch(rank, step));
      Vector<T> gs(p.dim()), gb(p.dim());
      const double ls = p.sample_gradient(rank, step, x, gs);
      const double lb = p.batch_gradient(b, x, gb);
      CHECK(gs == gb);
      CHECK(ls == lb);
    }
  // with replacement: worker 0 has 5 samples, so a batch of 6 repeats one; over many steps
  // every sample of the shard is drawn
  std::vector<Index> seen;
  for (std::int64_t step = 0; step < 50; ++step)
    for (Index s : p.batch(0, step)) seen.push_back(s);
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  CHECK(seen == p.shard(0));
}

TEST_CASE("Classification: AR-SGD on m workers is SGD on the concatenated batch") {
  for (Activation act : {Activation::relu, Activation::tanh}) {
    const Mlp model({.widths = {6, 9, 4}, .activation = act, .l2 = 1e-3});
    const int m = 4;
    const Problem p(model, random_dataset(6, 4, 80, 2), strided_shards(80, m), {.batch = 5, .seed = 8});
    const Vector<double> x = p.init<double>(3);
    for (std::int64_t step : {0, 3, 17}) {
      Vector<double> mean = Vector<double>::Zero(p.dim()), g(p.dim());
      std::vector<Index> all;
      double loss = 0;
      for (int r = 0; r < m; ++r) {
        loss += p.sample_gradient(r, step, x, g) / m;
        mean += g / m;
        const auto b = p.batch(r, step);
        all.insert(all.end(), b.begin(), b.end());
      }
      Vector<double> g_all(p.dim());
      CHECK(p.batch_gradient(all, x, g_all) == doctest::Approx(loss).epsilon(1e-14));
      CHECK(rel_diff(g_all, mean) < 1e-13);
      // in float, to float's rounding
      const Vector<float> xf = x.cast<float>();
      Vector<float> gf(p.dim()), mean_f = Vector<float>::Zero(p.dim()), gf_all(p.dim());
      for (int r = 0; r < m; ++r) {
        p.sample_gradient(r, step, xf, gf);
        mean_f += gf / float(m);
      }
      p.batch_gradient(all, xf, gf_all);
      CHECK((gf_all - mean_f).cwiseAbs().maxCoeff() < 1e-5f * mean_f.cwiseAbs().maxCoeff());
    }
  }
}

TEST_CASE("Classification: workers on threads draw what one thread draws") {
  const Problem p = small_problem(8);
  const Vector<float> x = p.init<float>(2);
  std::vector<std::vector<Vector<float>>> serial(4), threaded(4);
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < 20; ++t) {
      Vector<float> g(p.dim());
      p.sample_gradient(r, t, x, g);
      serial[std::size_t(r)].push_back(g);
    }
  const Problem fresh = small_problem(8);
  slowmo::threads::run({.workers = 4}, [&](auto& c) {
    for (int t = 0; t < 20; ++t) {
      Vector<float> g(fresh.dim());
      fresh.sample_gradient(c.rank(), t, x, g);
      threaded[std::size_t(c.rank())].push_back(g);
    }
  });
  CHECK(threaded == serial);
}

TEST_CASE("Classification: bad arguments name what is wrong; bad calls write nothing") {
  using slowmo::invalid_option;
  using slowmo::size_mismatch;
  const Mlp model({.widths = {5, 4, 3}});
  const auto data = random_dataset(5, 3, 20, 1);
  const auto shards = strided_shards(20, 2);
  CHECK_THROWS_WITH_AS(Problem(model, nullptr, shards), doctest::Contains("option 'train' = nullptr"), invalid_option);
  CHECK_THROWS_WITH_AS(Problem(model, data, {}), doctest::Contains("option 'shards' = {} is invalid"), invalid_option);
  CHECK_THROWS_WITH_AS(Problem(model, data, {{0, 1}, {}}), doctest::Contains("option 'shards' = shard 1 of 2 is empty"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(Problem(model, data, {{0, 20}}),
                       doctest::Contains("sample 20 (entry 1 of worker 0's shard) is out of range [0, 20) of random"),
                       size_mismatch);
  CHECK_THROWS_WITH_AS(Problem(model, data, shards, {.batch = 0}), doctest::Contains("option 'batch' = 0"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(Problem(Mlp({.widths = {6, 3}}), data, shards),
                       doctest::Contains("random has 5 features per sample; the model takes 6"), size_mismatch);
  CHECK_THROWS_WITH_AS(Problem(Mlp({.widths = {5, 4}}), data, shards),
                       doctest::Contains("random has 3 classes; the model has 4 outputs"), size_mismatch);
  auto bad = std::make_shared<Dataset>(*data);
  bad->y[2] = 7;
  CHECK_THROWS_WITH_AS(Problem(model, bad, shards), doctest::Contains("label 7 of sample 2"), size_mismatch);

  const Problem p(model, data, shards);
  const Vector<float> x = p.init<float>(0);
  Vector<float> g = Vector<float>::Constant(p.dim(), 42.0f);
  const Vector<float> untouched = g;
  Vector<float> x_short(4), g_short(4);
  CHECK_THROWS_WITH_AS(p.sample_gradient(2, 0, x, g),
                       doctest::Contains("Classification::sample_gradient: worker 2 is out of range [0, 2)"),
                       size_mismatch);
  CHECK_THROWS_WITH_AS(p.sample_gradient(-1, 0, x, g), doctest::Contains("worker -1"), size_mismatch);
  CHECK_THROWS_WITH_AS(p.gradient(0, x_short, g),
                       doctest::Contains("Classification::gradient: vector of size 4 for a problem of dimension 39"),
                       size_mismatch);
  CHECK_THROWS_AS(p.sample_gradient(0, 0, x, g_short), size_mismatch);
  CHECK_THROWS_AS(p.loss(5, x), size_mismatch);
  CHECK_THROWS_AS(p.loss(x_short), size_mismatch);
  CHECK_THROWS_AS(p.batch(2, 0), size_mismatch);
  CHECK_THROWS_WITH_AS(p.batch_gradient(std::vector<Index>{3, 25}, x, g), doctest::Contains("sample index 25"),
                       size_mismatch);
  Dataset held_out = *data;
  held_out.y[0] = 3;
  CHECK_THROWS_WITH_AS(p.loss(x, held_out), doctest::Contains("label 3 of sample 0"), size_mismatch);
  CHECK(g == untouched);
}
