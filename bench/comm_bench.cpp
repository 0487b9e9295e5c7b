// comm_bench: the in-process backends against their physical references.
//  - threads: all-reduce (mean) of n floats on m threads against a memcpy of the same bytes;
//    the reduction reads m buffers and writes m, so its bytes are 2 m n sizeof(T).
//  - threads: all-gather of n floats per worker on m threads: every worker's block goes into
//    every worker's recv, 2 m^2 n sizeof(T) bytes read and written (the BM_Memcpy row with
//    m n in place of n); x_memcpy is its time over that of an in-binary memcpy of as many
//    bytes, measured in the same run.
//  - simulator: wall time and resident memory of a step (all-reduce mean of d floats per
//    worker) as the number of workers grows from 16 to 256, at d = 1e5 (the working set
//    outgrows the last-level cache on the way) and d = 1e4 (it never does).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <slowmo/slowmo.hpp>

namespace {

long resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string key;
  long value = 0;
  while (status >> key) {
    if (key == "VmHWM:") {
      status >> value;
      return value;
    }
    status.ignore(1 << 10, '\n');
  }
  return 0;
}

void BM_Memcpy(benchmark::State& state) {
  const auto n = std::size_t(state.range(0)), m = std::size_t(state.range(1));
  std::vector<float> a(n * m, 1.0f), b(n * m);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), n * m * sizeof(float));
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(2 * n * m * sizeof(float)));
}

/// 20 all-reduces per run of the threads backend (thread start-up amortised).
void BM_ThreadsAllReduce(benchmark::State& state) {
  const auto n = std::size_t(state.range(0));
  const int m = int(state.range(1));
  const int rounds = 20;
  for (auto _ : state) {
    slowmo::threads::run({.workers = m}, [&](slowmo::threads::Comm& c) {
      std::vector<float> x(n, float(c.rank()));
      for (int r = 0; r < rounds; ++r) c.all_reduce(std::span<float>(x), slowmo::ReduceOp::mean);
      benchmark::DoNotOptimize(x.data());
    });
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * rounds * int64_t(2 * n * std::size_t(m) * sizeof(float)));
}

/// Seconds of the fastest of 5 memcpys of `floats` floats (pages touched first).
double memcpy_seconds(std::size_t floats) {
  std::vector<float> a(floats, 1.0f), b(floats, 0.0f);
  double best = 1e30;
  for (int k = 0; k < 5; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    std::memcpy(b.data(), a.data(), floats * sizeof(float));
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

/// 20 all-gathers per run of the threads backend (thread start-up amortised), buffers made
/// once per run as a training loop would.
void BM_ThreadsAllGather(benchmark::State& state) {
  const auto n = std::size_t(state.range(0));
  const int m = int(state.range(1));
  const int rounds = 20;
  const double reference = memcpy_seconds(std::size_t(m) * std::size_t(m) * n);
  double seconds = 0;
  for (auto _ : state) {
    slowmo::threads::run({.workers = m}, [&](slowmo::threads::Comm& c) {
      std::vector<float> x(n, float(c.rank())), all(std::size_t(m) * n);
      c.all_gather(std::span<const float>(x), std::span<float>(all));  // first touch, outside the timing
      c.barrier();
      const auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < rounds; ++r) c.all_gather(std::span<const float>(x), std::span<float>(all));
      if (c.rank() == 0) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      benchmark::DoNotOptimize(all.data());
    });
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * rounds *
                          int64_t(2 * std::size_t(m) * std::size_t(m) * n * sizeof(float)));
  state.counters["x_memcpy"] = seconds / (double(state.iterations()) * rounds) / reference;
}

/// One simulated training step per round: every worker all-reduces d floats.
void BM_SimulatorStep(benchmark::State& state) {
  const int m = int(state.range(0));
  const auto d = std::size_t(state.range(1));
  const int rounds = 10;
  for (auto _ : state) {
    slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& c) {
      std::vector<float> x(d, float(c.rank()));
      for (int r = 0; r < rounds; ++r) c.all_reduce(std::span<float>(x), slowmo::ReduceOp::mean);
      benchmark::DoNotOptimize(x.data());
    });
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * rounds);  // steps
  state.counters["seconds_per_step"] =
      benchmark::Counter(double(rounds), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["seconds_per_step_per_Mparam"] = benchmark::Counter(
      double(rounds) * double(m) * double(d) / 1e6, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["peak_rss_MiB"] = double(resident_kib()) / 1024.0;
}

}  // namespace

BENCHMARK(BM_Memcpy)->Args({1 << 16, 4})->Args({1 << 20, 4})->Args({1 << 22, 4})->Unit(benchmark::kMillisecond);
// The workers are other threads: time is wall-clock (the main thread only waits).
BENCHMARK(BM_ThreadsAllReduce)->Args({1 << 16, 4})->Args({1 << 20, 4})->Args({1 << 22, 4})->UseRealTime()
    ->Unit(benchmark::kMillisecond);
// Rows of the same bytes as the BM_Memcpy rows above (m^2 n = 2^18, 2^22, 2^24 floats).
BENCHMARK(BM_ThreadsAllGather)->Args({1 << 14, 4})->Args({1 << 18, 4})->Args({1 << 20, 4})->UseRealTime()
    ->Unit(benchmark::kMillisecond);
// Increasing worker counts: peak RSS is monotone, so each row reports the largest so far.
BENCHMARK(BM_SimulatorStep)->ArgsProduct({{16, 32, 64, 128, 256}, {100000}})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SimulatorStep)->ArgsProduct({{16, 64, 256}, {10000}})->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
