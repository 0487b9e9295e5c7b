// optim_bench: every update's effective memory bandwidth as a fraction of the STREAM triad
// bandwidth measured in the same binary, at the same size.
//
// "Bytes" are the bytes an update must move per parameter, counting each array read and
// each array written once (e.g. fp32 Adam reads p, g, m, v and writes p, m, v: 7 x 4 = 28
// bytes); triad a = b + s c moves 3 arrays. Counters: bytes_per_second, items_per_second
// (parameters per second), of_triad (this update's bandwidth / triad's, same size and type).
// Single thread; sizes from 1e3 (cache-resident) to 2^24 (memory-bound).
//
// The optimizer steps run with non_finite = propagate: the update alone, one pass. With
// the default policy (raise) a step first reads the gradient once more to look for NaN and
// infinities (so that nothing changes when it throws); the `_checked` variants measure that
// default, still counting only the update's bytes, and `nan_check` the scan alone; `scan`
// and `eigen_sum` compare the scan with Eigen's sum() of g (a read-only reduction, the
// reference of issue 18) from 2^12 to 2^24, and `sum_of_squares` is ClipGradNorm's norm.
#include <benchmark/benchmark.h>
#include <emmintrin.h>

#include <cstdint>

#include <chrono>
#include <map>
#include <string>

#include <slowmo/distributed/rules.hpp>
#include <slowmo/outer/rules.hpp>
#include <slowmo/slowmo.hpp>

#include "triad.hpp"

namespace {

using slowmo::Vector;

using bench::triad;
using bench::triad_bandwidth;

template <class T>
void report(benchmark::State& state, Eigen::Index n, int arrays) {
  const double bytes = double(arrays) * sizeof(T) * double(n);
  state.SetItemsProcessed(int64_t(state.iterations()) * n);
  state.SetBytesProcessed(int64_t(double(state.iterations()) * bytes));
  // (bytes * iterations / seconds) / triad bandwidth
  state.counters["of_triad"] =
      benchmark::Counter(bytes / triad_bandwidth<T>(n), benchmark::Counter::kIsIterationInvariantRate);
}

template <class T>
void BM_Triad(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  Vector<T> a = Vector<T>::Zero(n), b = Vector<T>::Ones(n), c = Vector<T>::Ones(n);
  for (auto _ : state) triad(a, b, c);
  report<T>(state, n, 3);
}

/// opt.step(x, g) in a loop; `arrays` = arrays read + arrays written by one step.
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

/// One application of a per-element rule to `k` buffers (the synchronisation updates).
template <class T, class Rule, std::size_t... I>
void BM_Rule(benchmark::State& state, Rule rule, int arrays, std::index_sequence<I...>) {
  const Eigen::Index n = state.range(0);
  std::array<Vector<T>, sizeof...(I)> buf;
  for (auto& b : buf) b = Vector<T>::Constant(n, T(0.25));
  for (auto _ : state) {
    slowmo::Host::for_each(n, rule, buf[I].data()...);
    benchmark::DoNotOptimize(buf[0].data());
    benchmark::ClobberMemory();
  }
  report<T>(state, n, arrays);
}

/// Sgp's share step (share = num / (k + 1)) written with SSE2 non-temporal stores, which
/// skip the read-for-ownership that an ordinary store to a line not in cache costs: the
/// reference for what a streaming-store driver would give a write-only buffer.
template <class T>
void BM_ShareNonTemporal(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  Vector<T> share = Vector<T>::Constant(n, T(0.25)), num = Vector<T>::Constant(n, T(0.25));
  for (auto _ : state) {
    T* out = share.data();
    const T* in = num.data();
    Eigen::Index i = 0;
    if constexpr (std::is_same_v<T, float>) {
      const __m128 c = _mm_set1_ps(0.5f);
      for (; i + 4 <= n && reinterpret_cast<std::uintptr_t>(out) % 16 == 0; i += 4)
        _mm_stream_ps(out + i, _mm_mul_ps(_mm_loadu_ps(in + i), c));
    } else {
      const __m128d c = _mm_set1_pd(0.5);
      for (; i + 2 <= n && reinterpret_cast<std::uintptr_t>(out) % 16 == 0; i += 2)
        _mm_stream_pd(out + i, _mm_mul_pd(_mm_loadu_pd(in + i), c));
    }
    for (; i < n; ++i) out[i] = in[i] * T(0.5);
    _mm_sfence();
    benchmark::DoNotOptimize(share.data());
    benchmark::ClobberMemory();
  }
  report<T>(state, n, 2);
}

/// The obvious Adam: three separate Eigen expressions, three passes over memory.
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

/// SlowMo over Nesterov with tau = 12 on one worker (zero-cost network) against Nesterov
/// alone: time per base step, the outer step amortised over tau.
template <class T, bool WithSlowMo>
void BM_SlowMoAmortised(benchmark::State& state, slowmo::NonFinite policy) {
  const Eigen::Index n = state.range(0);
  Vector<T> x = Vector<T>::Constant(n, T(0.5)), g = Vector<T>::Constant(n, T(1e-3));
  slowmo::SingleWorker solo;
  slowmo::Nesterov<T> base({.lr = 1e-3, .non_finite = policy});
  slowmo::SlowMo slow(base, solo, {.tau = 12, .beta = 0.5});
  slow.start(x);
  auto period = [&] {
    for (int t = 0; t < 12; ++t) {
      if constexpr (WithSlowMo)
        slow.step(x, g);
      else
        base.step(x, g);
    }
  };
  period();  // untimed: the first step allocates and first touches the state (x0, u, buffers)
  for (auto _ : state) {
    period();
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * 12 * n);
  state.counters["seconds_per_step"] =
      benchmark::Counter(12, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

/// The default policy's scan of the gradient for NaN and infinities, alone (reads g once).
template <class T>
void BM_NanCheck(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Vector<T> g = Vector<T>::Constant(n, T(1e-3));
  for (auto _ : state) benchmark::DoNotOptimize(slowmo::detail::first_non_finite(g.data(), n));
  report<T>(state, n, 1);
}

/// Issue 18's reference: a read-only reduction of g in this binary, Eigen's sum().
template <class T>
void BM_EigenSum(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Vector<T> g = Vector<T>::Constant(n, T(1e-3));
  for (auto _ : state) benchmark::DoNotOptimize(g.sum());
  report<T>(state, n, 1);
}

/// The 2-norm's reduction (ClipGradNorm's one read of g).
template <class T>
void BM_SumOfSquares(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const Vector<T> g = Vector<T>::Constant(n, T(1e-3));
  for (auto _ : state) benchmark::DoNotOptimize(slowmo::Host::reduce(n, slowmo::reductions::SumOfSquares<T>{}, g.data()));
  report<T>(state, n, 1);
}

void scan_sizes(benchmark::internal::Benchmark* b) {
  for (int e = 12; e <= 24; e += 2) b->Arg(int64_t(1) << e);
  b->Unit(benchmark::kMicrosecond);
}

void sizes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {int64_t(1000), int64_t(1) << 16, int64_t(1) << 20, int64_t(1) << 24}) b->Arg(n);
  b->Unit(benchmark::kMicrosecond);
}

template <class T>
void register_all(const std::string& tn) {
  using namespace slowmo;
  auto reg = [&](const std::string& name, auto&& fn, auto&&... args) {
    benchmark::RegisterBenchmark((name + "/" + tn).c_str(), fn, args...)->Apply(sizes);
  };
  constexpr auto unchecked = NonFinite::propagate;
  reg("triad", BM_Triad<T>);
  reg("sgd", BM_Step<Sgd<T>>, Sgd<T>({.lr = 1e-3, .non_finite = unchecked}), 3);                    // p g | p
  reg("sgd_momentum", BM_Step<Sgd<T>>, Sgd<T>({.lr = 1e-3, .momentum = 0.9, .non_finite = unchecked}), 5);  // p g b | p b
  reg("nesterov", BM_Step<Nesterov<T>>, Nesterov<T>({.lr = 1e-3, .non_finite = unchecked}), 5);    // p g b | p b
  reg("adam", BM_Step<Adam<T>>, Adam<T>({.non_finite = unchecked}), 7);                             // p g m v | p m v
  reg("adamw", BM_Step<AdamW<T>>, AdamW<T>({.non_finite = unchecked}), 7);                          // p g m v | p m v
  reg("adam_amsgrad", BM_Step<Adam<T>>, Adam<T>({.amsgrad = true, .non_finite = unchecked}), 9);    // + vmax | vmax
  reg("nesterov_checked", BM_Step<Nesterov<T>>, Nesterov<T>({.lr = 1e-3}), 5);
  reg("adam_checked", BM_Step<Adam<T>>, Adam<T>(), 7);
  reg("adamw_checked", BM_Step<AdamW<T>>, AdamW<T>(), 7);
  reg("nan_check", BM_NanCheck<T>);                                                                 // g
  // issue 18: the scan against Eigen's sum of g, 2^12 .. 2^24
  auto reg_scan = [&](const std::string& name, auto&& fn) {
    benchmark::RegisterBenchmark((name + "/" + tn).c_str(), fn)->Apply(scan_sizes);
  };
  reg_scan("scan", BM_NanCheck<T>);
  reg_scan("eigen_sum", BM_EigenSum<T>);
  reg_scan("sum_of_squares", BM_SumOfSquares<T>);
  reg("adam_three_expressions", BM_AdamThreeExpressions<T>);
  reg("lookahead_sync", BM_Rule<T, rules::LookaheadSync<T>, 0, 1>, rules::LookaheadSync<T>{T(0.5)}, 4,
      std::make_index_sequence<2>{});  // slow fast | slow fast
  // The outer step: the pseudo-gradient in x, then (after the reduce) the rule.
  reg("pseudo_gradient", BM_Rule<T, rules::PseudoGradient<T>, 0, 1>, rules::PseudoGradient<T>{T(0.1), true}, 3,
      std::make_index_sequence<2>{});  // x x0 | x
  reg("heavy_ball_outer", BM_Rule<T, rules::HeavyBallOuter<T>, 0, 1, 2>,
      rules::HeavyBallOuter<T>{.beta = T(0.5), .lr = T(0.1), .nesterov = false}, 6,
      std::make_index_sequence<3>{});  // xd x0 u | xd x0 u
  reg("fed_adam_outer", BM_Rule<T, rules::AdaptiveOuter<T>, 0, 1, 2, 3>,
      rules::AdaptiveOuter<T>{rules::SecondMoment::adam, T(0.9), T(0.1), T(0.99), T(0.01), T(0.1), T(1e-3)}, 8,
      std::make_index_sequence<4>{});  // xd x0 m v | xd x0 m v
  reg("sgp_share", BM_Rule<T, rules::PushSumShare<T>, 0, 1>, rules::PushSumShare<T>{T(0.5)}, 2,
      std::make_index_sequence<2>{});  // num | share
  reg("sgp_share_non_temporal", BM_ShareNonTemporal<T>);  // num | share, without write-allocate
  reg("sgp_combine", BM_Rule<T, rules::PushSumCombine<T>, 0, 1, 2, 3>, rules::PushSumCombine<T>{T(1)}, 4,
      std::make_index_sequence<4>{});  // kept received | num z
  reg("slowmo_tau12_step", BM_SlowMoAmortised<T, true>, unchecked);
  reg("nesterov_alone_step", BM_SlowMoAmortised<T, false>, unchecked);
  reg("slowmo_tau12_step_checked", BM_SlowMoAmortised<T, true>, NonFinite::raise);
  reg("nesterov_alone_step_checked", BM_SlowMoAmortised<T, false>, NonFinite::raise);
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
