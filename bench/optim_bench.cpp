// optim_bench: every optimizer step's effective memory bandwidth, as a fraction of the
// STREAM triad bandwidth measured in the same binary.
//
// Bytes per parameter are the bytes a step must move: e.g. fp32 Adam reads p, g, m, v and
// writes p, m, v, so 7 * 4 = 28 bytes. Counters: bytes_per_second, params_per_second and
// of_triad (this step's bandwidth / triad bandwidth at the same size).
#include <benchmark/benchmark.h>

#include <chrono>
#include <map>

#include <slowmo/slowmo.hpp>

namespace {

using slowmo::Vector;

// STREAM triad a = b + s * c: 3 arrays moved, 24 bytes per double / 12 per float element.
template <class T>
double triad_bytes_per_second(Eigen::Index n) {
  static std::map<std::pair<Eigen::Index, int>, double> cache;
  auto& bw = cache[{n, int(sizeof(T))}];
  if (bw > 0) return bw;
  Vector<T> a = Vector<T>::Zero(n), b = Vector<T>::Ones(n), c = Vector<T>::Ones(n);
  const T s = T(1.0001);
  double best = 1e30;
  const int reps = n < (1 << 20) ? 2000 : 20;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    a.noalias() = b + s * c;
    benchmark::DoNotOptimize(a.data());
    benchmark::ClobberMemory();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return bw = 3.0 * sizeof(T) * double(n) / best;
}

template <class T>
void report(benchmark::State& state, Eigen::Index n, int arrays_moved) {
  const double bytes = double(arrays_moved) * sizeof(T) * double(n);
  state.SetItemsProcessed(int64_t(state.iterations()) * n);
  state.SetBytesProcessed(int64_t(double(state.iterations()) * bytes));
  state.counters["params_per_second"] = benchmark::Counter(double(n), benchmark::Counter::kIsIterationInvariantRate);
  // (bytes * iterations / seconds) / triad bandwidth
  state.counters["of_triad"] =
      benchmark::Counter(bytes / triad_bytes_per_second<T>(n), benchmark::Counter::kIsIterationInvariantRate);
}

template <class T>
void BM_Triad(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  Vector<T> a = Vector<T>::Zero(n), b = Vector<T>::Ones(n), c = Vector<T>::Ones(n);
  for (auto _ : state) {
    a.noalias() = b + T(1.0001) * c;
    benchmark::DoNotOptimize(a.data());
    benchmark::ClobberMemory();
  }
  report<T>(state, n, 3);
}

// `arrays` = buffers read + buffers written by one step.
template <class Opt>
void BM_Step(benchmark::State& state, Opt opt, int arrays) {
  using T = typename Opt::scalar_type;
  const Eigen::Index n = state.range(0);
  Vector<T> x = Vector<T>::Constant(n, T(0.5)), g = Vector<T>::Constant(n, T(1e-3));
  opt.step(x, g);
  for (auto _ : state) {
    opt.step(x, g);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  report<T>(state, n, arrays);
}

// The obvious Adam: three separate Eigen expressions, three passes over memory.
template <class T>
void BM_AdamThreeExpressions(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  Vector<T> p = Vector<T>::Constant(n, T(0.5)), g = Vector<T>::Constant(n, T(1e-3));
  Vector<T> m = Vector<T>::Zero(n), v = Vector<T>::Zero(n);
  const T b1 = T(0.9), b2 = T(0.999), eps = T(1e-8), lr = T(1e-3);
  for (auto _ : state) {
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g.cwiseAbs2();
    p.array() -= lr * m.array() / (v.array().sqrt() + eps);
    benchmark::DoNotOptimize(p.data());
    benchmark::ClobberMemory();
  }
  report<T>(state, n, 7);
}

void sizes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {int64_t(1000), int64_t(1) << 16, int64_t(1) << 20, int64_t(1) << 24}) b->Arg(n);
  b->Unit(benchmark::kMicrosecond);
}

template <class T>
void register_all(const char* tn) {
  using namespace slowmo;
  const std::string s = std::string("/") + tn;
  benchmark::RegisterBenchmark(("triad" + s).c_str(), BM_Triad<T>)->Apply(sizes);
  // p, g read; p written
  benchmark::RegisterBenchmark(("sgd" + s).c_str(), BM_Step<Sgd<T>>, Sgd<T>({.lr = 1e-3}), 3)->Apply(sizes);
  // p, g, buf read; p, buf written
  benchmark::RegisterBenchmark(("sgd_momentum" + s).c_str(), BM_Step<Sgd<T>>, Sgd<T>({.lr = 1e-3, .momentum = 0.9}),
                               5)->Apply(sizes);
  benchmark::RegisterBenchmark(("nesterov" + s).c_str(), BM_Step<Nesterov<T>>, Nesterov<T>({.lr = 1e-3}), 5)
      ->Apply(sizes);
  // p, g, m, v read; p, m, v written (+ vmax read and written with amsgrad)
  benchmark::RegisterBenchmark(("adam" + s).c_str(), BM_Step<Adam<T>>, Adam<T>(), 7)->Apply(sizes);
  benchmark::RegisterBenchmark(("adamw" + s).c_str(), BM_Step<AdamW<T>>, AdamW<T>(), 7)->Apply(sizes);
  benchmark::RegisterBenchmark(("adam_amsgrad" + s).c_str(), BM_Step<Adam<T>>, Adam<T>({.amsgrad = true}), 9)
      ->Apply(sizes);
  benchmark::RegisterBenchmark(("adam_three_expressions" + s).c_str(), BM_AdamThreeExpressions<T>)->Apply(sizes);
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
