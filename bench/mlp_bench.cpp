// mlp_bench: one forward and backward pass of problems::Mlp against the matrix products it
// needs, timed alone in the same binary; and the time of one stochastic gradient of
// problems::Classification at the demo's sizes.
//
// The reference of a pass is the sum of its GEMMs, each the public Eigen product on the same
// shapes with noalias() into a preallocated output (best of many runs): for widths
// in-h-c at batch n, forward Z1 = W1 X (h x in by in x n) and Z2 = W2 H (c x h by h x n);
// backward dW2 = D2 H^T, dH = W2^T D2 and dW1 = D1 X^T (the input's gradient is not needed).
// Counter `of_gemms`: the pass's time over the GEMMs' (1 = nothing but the products; the
// target is <= 2). The rest of a pass: gathering and casting the batch, bias, activation,
// softmax, and the reductions for the biases.
//
// `sample_gradient` draws `batch` samples of a worker's shard (as the demo does: 16 workers
// with IID shards of 55,000 synthetic samples, rank t mod 16 at step t) and runs the pass.
// Counter `demo_s_2_cores`: 16 workers x 600 steps x 35 runs of these, over 2 cores.
// Single thread.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <slowmo/problems/classification.hpp>
#include <string>
#include <vector>

namespace {

using Index = Eigen::Index;
using Matrix = Eigen::MatrixXf;
namespace pb = slowmo::problems;
using slowmo::problems::Mlp;

std::shared_ptr<const slowmo::problems::Dataset> synthetic(Index features, int classes, Index n) {
  auto d = std::make_shared<slowmo::problems::Dataset>();
  d->X.resize(features, n);
  const std::uint64_t key = pb::stream_key(1, 2, 3);
  for (Index i = 0; i < d->X.size(); ++i) d->X.data()[i] = float(pb::uniform01(key, std::uint64_t(i)));
  for (Index j = 0; j < n; ++j) d->y.push_back(std::int32_t(j % classes));
  d->classes = classes;
  d->name = "synthetic";
  return d;
}

/// The five products of a pass of an in-h-c network at batch n, with noalias into outputs
/// allocated here.
struct Gemms {
  Matrix W1, X, Z1, W2, H, Z2, D2, dW2, dH, D1, dW1;
  Gemms(Index in, Index h, Index c, Index n)
      : W1(Matrix::Random(h, in)),
        X(Matrix::Random(in, n)),
        Z1(h, n),
        W2(Matrix::Random(c, h)),
        H(Matrix::Random(h, n)),
        Z2(c, n),
        D2(Matrix::Random(c, n)),
        dW2(c, h),
        dH(h, n),
        D1(Matrix::Random(h, n)),
        dW1(h, in) {}
  void run() {
    Z1.noalias() = W1 * X;
    Z2.noalias() = W2 * H;
    dW2.noalias() = D2 * H.transpose();
    dH.noalias() = W2.transpose() * D2;
    dW1.noalias() = D1 * X.transpose();
    benchmark::DoNotOptimize(Z1.data());
    benchmark::DoNotOptimize(Z2.data());
    benchmark::DoNotOptimize(dW2.data());
    benchmark::DoNotOptimize(dH.data());
    benchmark::DoNotOptimize(dW1.data());
    benchmark::ClobberMemory();
  }
  /// flops of the five products
  static double flops(Index in, Index h, Index c, Index n) {
    return 2.0 * double(n) * (2.0 * double(h) * double(in) + 3.0 * double(c) * double(h));
  }
};

/// The GEMMs' best time (seconds), measured once per shape.
double gemm_seconds(Index in, Index h, Index c, Index n) {
  Gemms g(in, h, c, n);
  for (int r = 0; r < 20; ++r) g.run();
  double best = 1e30;
  for (int r = 0; r < 2000; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    g.run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

void BM_Gemms(benchmark::State& state) {
  const Index in = state.range(0), h = state.range(1), c = state.range(2), n = state.range(3);
  Gemms g(in, h, c, n);
  for (auto _ : state) g.run();
  state.counters["flops"] =
      benchmark::Counter(Gemms::flops(in, h, c, n), benchmark::Counter::kIsIterationInvariantRate);
}

/// Mlp::loss_and_gradient on n fixed samples (spread over a dataset of 10,000), one chunk.
void BM_Pass(benchmark::State& state) {
  const Index in = state.range(0), h = state.range(1), c = state.range(2), n = state.range(3);
  const Mlp model({.widths = {in, h, c}, .activation = slowmo::problems::Activation::relu});
  const auto data = synthetic(in, int(c), 10000);
  std::vector<Index> samples(static_cast<std::size_t>(n));
  for (std::size_t k = 0; k < samples.size(); ++k) samples[k] = Index((k * 7919) % 10000);
  auto ws = model.workspace<float>(n);
  const slowmo::Vector<float> x = model.init<float>(1);
  slowmo::Vector<float> g(model.dim());
  model.loss_and_gradient(x, *data, samples, ws, g);
  for (auto _ : state) {
    benchmark::DoNotOptimize(model.loss_and_gradient(x, *data, samples, ws, g));
    benchmark::ClobberMemory();
  }
  state.counters["flops"] =
      benchmark::Counter(Gemms::flops(in, h, c, n), benchmark::Counter::kIsIterationInvariantRate);
  // (seconds per pass) / (seconds of the GEMMs)
  state.counters["of_gemms"] = benchmark::Counter(
      gemm_seconds(in, h, c, n), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

/// Classification::sample_gradient as the demo calls it.
void BM_SampleGradient(benchmark::State& state) {
  const Index in = 784, h = state.range(0), c = 10;
  const int batch = int(state.range(1)), workers = 16;
  static const auto data = synthetic(in, int(c), 55000);
  std::vector<std::vector<Index>> shards(workers);
  for (Index j = 0; j < data->size(); ++j) shards[std::size_t(j % workers)].push_back(j);
  const pb::Classification<Mlp> problem(Mlp({.widths = {in, h, c}}), data, shards, {.batch = batch});
  const slowmo::Vector<float> x = problem.init<float>(1);
  slowmo::Vector<float> g(problem.dim());
  for (int r = 0; r < workers; ++r) problem.sample_gradient(r, 0, x, g);
  std::int64_t t = 1;
  for (auto _ : state) {
    benchmark::DoNotOptimize(problem.sample_gradient(int(t % workers), t, x, g));
    benchmark::ClobberMemory();
    ++t;
  }
  // (seconds per gradient) x 16 x 600 x 35 / 2
  state.counters["demo_s_2_cores"] = benchmark::Counter(
      2.0 / (16.0 * 600 * 35), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

}  // namespace

int main(int argc, char** argv) {
  for (auto shape : std::vector<std::vector<int64_t>>{
           {784, 128, 10, 64}, {784, 64, 10, 32}, {784, 32, 10, 32}, {784, 128, 10, 32}}) {
    benchmark::RegisterBenchmark("mlp_pass_f32", BM_Pass)->Args(shape)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("gemms_alone_f32", BM_Gemms)->Args(shape)->Unit(benchmark::kMicrosecond);
  }
  for (int64_t h : {128, 64, 32})
    benchmark::RegisterBenchmark("sample_gradient_f32", BM_SampleGradient)
        ->Args({h, 32})
        ->Unit(benchmark::kMicrosecond);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
