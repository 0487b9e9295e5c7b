// No heap allocation per stochastic gradient of an MLP after a rank's first call, proven by
// counting every call into the C allocator (counting_malloc.cpp). And why the model does
// not simply write `Z.noalias() = W * A`: Eigen's GEMM allocates its packing buffers on
// every product once they exceed EIGEN_STACK_ALLOCATION_LIMIT.
#include <doctest/doctest.h>

#include <cstdint>
#include <memory>
#include <slowmo/problems/classification.hpp>
#include <vector>

#include "alloc/counting_malloc.hpp"

using alloc::allocations;

namespace {

using slowmo::Vector;
using Index = Eigen::Index;
namespace pb = slowmo::problems;

std::shared_ptr<const slowmo::problems::Dataset> random_dataset(Index features, int classes, Index n) {
  auto d = std::make_shared<slowmo::problems::Dataset>();
  d->X.resize(features, n);
  const std::uint64_t key = pb::stream_key(5, 0, 0);
  for (Index i = 0; i < d->X.size(); ++i) d->X.data()[i] = float(pb::normal(key, std::uint64_t(i)));
  for (Index j = 0; j < n; ++j) d->y.push_back(std::int32_t(j % classes));
  d->classes = classes;
  d->name = "random";
  return d;
}

/// Allocations of 10 sample_gradients on each of 2 ranks (and of their full-shard losses and
/// gradients), after one call of each kind per rank.
template <class T>
long steady_state_allocations(std::vector<Index> widths, int batch) {
  const slowmo::problems::Mlp model({.widths = widths, .l2 = 1e-4});
  const Index n = 300;
  std::vector<std::vector<Index>> shards(2);
  for (Index j = 0; j < n; ++j) shards[std::size_t(j % 2)].push_back(j);
  const pb::Classification<slowmo::problems::Mlp> p(model, random_dataset(widths.front(), int(widths.back()), n), shards,
                                                  {.batch = batch});
  Vector<T> x = p.init<T>(1), g(p.dim());
  for (int r = 0; r < 2; ++r) {
    p.sample_gradient(r, 0, x, g);
    p.gradient(r, x, g);
    p.loss(r, x);
  }
  const long before = allocations.load();
  for (int t = 1; t <= 10; ++t)
    for (int r = 0; r < 2; ++r) {
      p.sample_gradient(r, t, x, g);
      x -= T(0.01) * g;  // a different point every step
    }
  for (int r = 0; r < 2; ++r) {
    p.gradient(r, x, g);
    p.loss(r, x);
  }
  return allocations.load() - before;
}

}  // namespace

TEST_CASE_TEMPLATE("Classification<Mlp>: sample_gradient allocates nothing after a rank's first call", T, float,
                   double) {
  if (!slowmo::problems::Mlp::allocation_free_passes) {
    MESSAGE("built with the public Eigen product (SLOWMO_MLP_PUBLIC_GEMM or another Eigen): not checked");
    return;
  }
  CHECK(steady_state_allocations<T>({784, 128, 10}, 64) == 0);
  CHECK(steady_state_allocations<T>({784, 64, 10}, 32) == 0);
  CHECK(steady_state_allocations<T>({5, 7, 4, 3}, 8) == 0);
  CHECK(steady_state_allocations<T>({20, 3}, 1) == 0);  // softmax regression, batch of one
}

TEST_CASE("Mlp: a workspace's passes allocate nothing, over chunks too") {
  if (!slowmo::problems::Mlp::allocation_free_passes) return;
  const slowmo::problems::Mlp model({.widths = {784, 128, 10}, .activation = slowmo::problems::Activation::tanh});
  const auto d = random_dataset(784, 10, 200);
  auto ws = model.workspace<float>(64);
  const Vector<float> x = model.init<float>(2);
  Vector<float> g(model.dim());
  std::vector<Index> samples(150);  // chunks of 64, 64 and 22
  for (std::size_t k = 0; k < samples.size(); ++k) samples[k] = Index((k * 7) % 200);
  std::vector<std::int32_t> predicted(200);
  model.loss_and_gradient(x, *d, samples, ws, g);
  model.predict(x, *d, ws, predicted);
  const long before = allocations.load();
  model.loss_and_gradient(x, *d, samples, ws, g);
  model.loss(x, *d, samples, ws);
  model.predict(x, *d, ws, predicted);
  model.accuracy(x, *d, ws);
  model.loss(x, *d, ws);
  CHECK(allocations.load() - before == 0);
}

TEST_CASE("Eigen's own product allocates its packing buffers at these sizes (why the workspace owns them)") {
  const Eigen::MatrixXf W = Eigen::MatrixXf::Random(128, 784), A = Eigen::MatrixXf::Random(784, 64);
  Eigen::MatrixXf Z(128, 64);
  Z.noalias() = W * A;
  const long before = allocations.load();
  Z.noalias() = W * A;  // blockA is kc x mc floats, well over the 128 KiB of EIGEN_STACK_ALLOCATION_LIMIT
  const long counted = allocations.load() - before;
  MESSAGE("Z.noalias() = W * A (128x784 by 784x64, float) allocated ", counted, " times");
  CHECK(counted > 0);
}
