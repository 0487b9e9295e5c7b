// compress_bench: the compute cost of every compressor per parameter, as a multiple of one
// STREAM triad (a = b + s c) over the same number of parameters, measured in the same binary.
//
//   compress/<name>:  compressor.compress(p, out): select/quantise/encode and decode this
//                     worker's contribution, no communication;
//   reduce/<name>:    Compressed<C>::reduce(v) on SingleWorker: error feedback (p = d + e),
//                     encode, the (local) gather, decode in rank order, the residual: what one
//                     worker computes per round, without the network.
//
// Counters: triads (time per call / time of one triad at the same n: "this costs as much as
// that many passes of triad"), ns_per_param, items_per_second (parameters per second). Single
// thread. The network's share is the simulator's business (bytes_sent), not this program's.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <slowmo/compress.hpp>
#include <slowmo/slowmo.hpp>

#include "triad.hpp"
#include <span>
#include <string>

namespace {

using slowmo::Vector;
namespace cz = slowmo::compress;

using bench::triad;
using bench::triad_seconds;

template <class T>
void report(benchmark::State& state, Eigen::Index n) {
  state.SetItemsProcessed(int64_t(state.iterations()) * n);
  using C = benchmark::Counter;
  state.counters["triads"] = C(triad_seconds<T>(n), C::kIsIterationInvariantRate | C::kInvert);
  state.counters["ns_per_param"] = C(double(n) * 1e-9, C::kIsIterationInvariantRate | C::kInvert);
}

/// A Gaussian-like vector without exact ties (sin of a spread argument).
template <class T>
Vector<T> signal(Eigen::Index n, int t) {
  Vector<T> v(n);
  for (Eigen::Index i = 0; i < n; ++i)
    v[i] = T(std::sin(0.7548776662 * double(i) + 1.3 * t) * (1 + 1e-3 * double(i % 1000)));
  return v;
}

template <class T>
void BM_Triad(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  Vector<T> a = Vector<T>::Zero(n), b = Vector<T>::Ones(n), c = Vector<T>::Ones(n);
  for (auto _ : state) triad(a, b, c);
  report<T>(state, n);
}

template <class C>
void BM_Compress(benchmark::State& state, C c) {
  using T = typename C::scalar_type;
  const Eigen::Index n = state.range(0);
  const Vector<T> p = signal<T>(n, 0);
  Vector<T> out(n);
  std::int64_t round = 0;
  c.compress({p.data(), std::size_t(n)}, {out.data(), std::size_t(n)}, {.round = round++});  // sizes the scratch
  for (auto _ : state) {
    c.compress({p.data(), std::size_t(n)}, {out.data(), std::size_t(n)}, {.round = round++});
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  report<T>(state, n);
}

template <class C>
void BM_Reduce(benchmark::State& state, C c) {
  using T = typename C::scalar_type;
  const Eigen::Index n = state.range(0);
  const Vector<T> d = signal<T>(n, 1);
  Vector<T> v = d;
  slowmo::SingleWorker solo;
  auto policy = cz::compressed(std::move(c));
  std::int64_t round = 0;
  policy.reduce({v.data(), std::size_t(n)}, solo, {.round = round++});
  for (auto _ : state) {
    state.PauseTiming();  // the input of a round: not part of the policy's cost
    v = d;
    state.ResumeTiming();
    policy.reduce({v.data(), std::size_t(n)}, solo, {.round = round++});
    benchmark::DoNotOptimize(v.data());
    benchmark::ClobberMemory();
  }
  report<T>(state, n);
}

void sizes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {int64_t(1) << 16, int64_t(1) << 20}) b->Arg(n);
  b->Unit(benchmark::kMicrosecond);
}

template <class T>
void register_all(const std::string& tn) {
  auto both = [&](const std::string& name, auto c) {
    benchmark::RegisterBenchmark(("compress/" + name + "/" + tn).c_str(), BM_Compress<decltype(c)>, c)->Apply(sizes);
    benchmark::RegisterBenchmark(("reduce/" + name + "/" + tn).c_str(), BM_Reduce<decltype(c)>, c)->Apply(sizes);
  };
  benchmark::RegisterBenchmark(("triad/" + tn).c_str(), BM_Triad<T>)->Apply(sizes);
  both("top_k_1pct", cz::TopK<T>({.fraction = 0.01}));
  both("top_k_10pct", cz::TopK<T>({.fraction = 0.1}));
  both("top_k_chunk4096_k41", cz::TopK<T>({.k = 41, .chunk = 4096}));
  both("sparseloco_chunk4096_k64_2bit", cz::TopK<T>({.k = 64, .chunk = 4096, .value_bits = 2}));
  both("random_k_1pct", cz::RandomK<T>({.fraction = 0.01}));
  both("sign_scale", cz::SignScale<T>());
  both("qsgd_s7", cz::Qsgd<T>());
  both("qsgd_s7_bucket512", cz::Qsgd<T>({.bucket = 512}));
  both("bf16", cz::LowPrecision<T>({.format = cz::HalfFormat::bf16}));
  both("fp16", cz::LowPrecision<T>({.format = cz::HalfFormat::fp16}));
  both("power_sgd_rank4", cz::PowerSgd<T>({.rank = 4}));
}

}  // namespace

int main(int argc, char** argv) {
  register_all<float>("f32");
  register_all<double>("f64");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
