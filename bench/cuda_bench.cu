// cuda_bench: the fused device updates' effective memory bandwidth as a fraction of the
// device's copy bandwidth, both measured in this binary (bench/README.md).
//
// The reference is a plain copy kernel (16-byte loads and stores in a grid-stride loop,
// 8 bytes moved per fp32 element). Each update moves the bytes it must: fp32 Adam reads p, g,
// m, v and writes p, m, v, so 7 * 4 = 28 bytes per parameter. Times come from CUDA events
// around each step (manual time). Counters: bytes_per_second, params_per_second, of_copy
// (this update's bandwidth / the copy kernel's). At the end, a summary line per update with
// its target where the issue sets one (>= 0.80 of copy at 2^28 fp32 parameters for Adam,
// AdamW, Nesterov SGD and the SlowMo outer update).
//
//   cuda_bench [--smoke] [google benchmark flags]
// --smoke: 2^20 parameters and 3 iterations each, to check that everything runs. Without a
// CUDA device it prints "skipped: no CUDA device (...)" and exits with 77.
// First, alone (header self-containment, see tests/cuda/optim_test.cu).
#include <slowmo/cuda/for_each.hpp>
#include <slowmo/cuda/for_each.hpp>

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <slowmo/cuda.hpp>

namespace {

using slowmo::cuda::DeviceVector;

bool smoke = false;
std::int64_t n_params() { return smoke ? (std::int64_t(1) << 20) : (std::int64_t(1) << 28); }

__global__ void copy_kernel(const float4* __restrict__ in, float4* __restrict__ out, std::int64_t n4) {
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n4; i += stride) out[i] = in[i];
}

void copy(const DeviceVector<float>& in, DeviceVector<float>& out, cudaStream_t stream) {
  const std::int64_t n4 = in.size() / 4;  // sizes are multiples of 4 here
  const std::int64_t blocks = std::min((n4 + 255) / 256, slowmo::cuda::detail::resident_blocks());
  copy_kernel<<<unsigned(blocks), 256, 0, stream>>>(reinterpret_cast<const float4*>(in.data()),
                                                   reinterpret_cast<float4*>(out.data()), n4);
  slowmo::cuda::check(cudaGetLastError(), "copy kernel launch");
}

/// Times `step` with CUDA events on the current stream; returns seconds.
class Timer {
 public:
  Timer() {
    slowmo::cuda::check(cudaEventCreate(&start_), "cudaEventCreate");
    slowmo::cuda::check(cudaEventCreate(&stop_), "cudaEventCreate");
  }
  ~Timer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  template <class F>
  double time(F&& step) {
    const cudaStream_t s = slowmo::cuda::current_stream();
    slowmo::cuda::check(cudaEventRecord(start_, s), "cudaEventRecord");
    step();
    slowmo::cuda::check(cudaEventRecord(stop_, s), "cudaEventRecord");
    slowmo::cuda::check(cudaEventSynchronize(stop_), "cudaEventSynchronize");
    float ms = 0;
    slowmo::cuda::check(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
    return ms / 1e3;
  }

 private:
  cudaEvent_t start_{}, stop_{};
};

/// The copy kernel's bandwidth at n fp32 elements (bytes/s): the best of 20 runs.
double copy_bandwidth() {
  static double bw = 0;
  if (bw > 0) return bw;
  DeviceVector<float> a = DeviceVector<float>::Zero(n_params()), b(n_params());
  Timer timer;
  const cudaStream_t s = slowmo::cuda::current_stream();
  copy(a, b, s);  // warm-up
  double best = 1e30;
  for (int r = 0; r < 20; ++r) best = std::min(best, timer.time([&] { copy(a, b, s); }));
  return bw = 2.0 * sizeof(float) * double(n_params()) / best;
}

struct Result {
  double of_copy = 0;
  double target = 0;  // 0: none
};
std::map<std::string, Result> results;

void report(benchmark::State& state, const std::string& name, int arrays, double seconds_total, double target) {
  const double n = double(n_params());
  const double bytes = double(arrays) * sizeof(float) * n;
  state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(n));
  state.SetBytesProcessed(int64_t(double(state.iterations()) * bytes));
  state.counters["params_per_second"] = benchmark::Counter(n, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["of_copy"] = benchmark::Counter(bytes / copy_bandwidth(), benchmark::Counter::kIsIterationInvariantRate);
  const double bandwidth = bytes * double(state.iterations()) / seconds_total;
  results[name] = {bandwidth / copy_bandwidth(), target};
}

void BM_Copy(benchmark::State& state, const std::string& name) {
  DeviceVector<float> a = DeviceVector<float>::Zero(n_params()), b(n_params());
  const cudaStream_t s = slowmo::cuda::current_stream();
  Timer timer;
  copy(a, b, s);
  double total = 0;
  for (auto _ : state) {
    const double t = timer.time([&] { copy(a, b, s); });
    state.SetIterationTime(t);
    total += t;
  }
  report(state, name, 2, total, 0);
}

/// One optimizer step per iteration on n fp32 parameters; `arrays` = buffers read + written.
template <class Opt>
void BM_Step(benchmark::State& state, const std::string& name, Opt opt, int arrays, double target) {
  DeviceVector<float> x = DeviceVector<float>::Zero(n_params()), g(n_params());
  g.setZero();
  Timer timer;
  opt.step(x, g);  // allocates the state
  double total = 0;
  for (auto _ : state) {
    const double t = timer.time([&] { opt.step(x, g); });
    state.SetIterationTime(t);
    total += t;
  }
  report(state, name, arrays, total, target);
}

/// A rule applied once per iteration to `buffers` fp32 vectors, `arrays` = read + written.
template <class Rule, int Buffers>
void BM_Rule(benchmark::State& state, const std::string& name, Rule rule, int arrays, double target) {
  std::vector<DeviceVector<float>> v;
  for (int b = 0; b < Buffers; ++b) v.push_back(DeviceVector<float>::Zero(n_params()));
  Timer timer;
  auto apply = [&] {
    if constexpr (Buffers == 2) slowmo::cuda::Device::for_each(n_params(), rule, v[0].data(), v[1].data());
    else slowmo::cuda::Device::for_each(n_params(), rule, v[0].data(), v[1].data(), v[2].data());
  };
  apply();
  double total = 0;
  for (auto _ : state) {
    const double t = timer.time(apply);
    state.SetIterationTime(t);
    total += t;
  }
  report(state, name, arrays, total, target);
}

template <class B>
void setup(B* b) {
  b->UseManualTime()->Unit(benchmark::kMillisecond);
  if (smoke) b->Iterations(3);
}

void register_all() {
  using namespace slowmo;
  const std::string s = "/f32/2^" + std::to_string(smoke ? 20 : 28);
  constexpr double target = 0.80;
  setup(benchmark::RegisterBenchmark(("copy" + s).c_str(), BM_Copy, "copy"));
  // p, g read; p written
  setup(benchmark::RegisterBenchmark(("sgd" + s).c_str(), BM_Step<cuda::Sgd<float>>, "sgd", cuda::Sgd<float>({.lr = 1e-3}),
                                     3, 0.0));
  // p, g, buf read; p, buf written
  setup(benchmark::RegisterBenchmark(("sgd_momentum" + s).c_str(), BM_Step<cuda::Sgd<float>>, "sgd_momentum",
                                     cuda::Sgd<float>({.lr = 1e-3, .momentum = 0.9}), 5, 0.0));
  setup(benchmark::RegisterBenchmark(("nesterov" + s).c_str(), BM_Step<cuda::Nesterov<float>>, "nesterov",
                                     cuda::Nesterov<float>({.lr = 1e-3}), 5, target));
  // p, g, m, v read; p, m, v written (+ vmax read and written with amsgrad)
  setup(benchmark::RegisterBenchmark(("adam" + s).c_str(), BM_Step<cuda::Adam<float>>, "adam", cuda::Adam<float>(), 7,
                                     target));
  setup(benchmark::RegisterBenchmark(("adamw" + s).c_str(), BM_Step<cuda::AdamW<float>>, "adamw", cuda::AdamW<float>(), 7,
                                     target));
  setup(benchmark::RegisterBenchmark(("adam_amsgrad" + s).c_str(), BM_Step<cuda::Adam<float>>, "adam_amsgrad",
                                     cuda::Adam<float>({.amsgrad = true}), 9, 0.0));
  // The outer loop's rule (SlowMo's heavy ball): xd (the shared pseudo-gradient), x0, u read and written
  const rules::HeavyBallOuter<float> outer{.beta = 0.5f, .lr = 0.1f, .nesterov = false};
  setup(benchmark::RegisterBenchmark(("heavy_ball_outer" + s).c_str(), BM_Rule<rules::HeavyBallOuter<float>, 3>,
                                     "heavy_ball_outer", outer, 6, target));
  // Lookahead's sync: slow and fast read and written
  setup(benchmark::RegisterBenchmark(("lookahead_sync" + s).c_str(), BM_Rule<rules::LookaheadSync<float>, 2>, "lookahead_sync",
                                     rules::LookaheadSync<float>{0.5f}, 4, 0.0));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0)
      smoke = true;
    else
      args.push_back(argv[i]);
  }
  int nargs = int(args.size());
  std::string why;
  const int devices = slowmo::cuda::device_count(&why);
  if (devices == 0) {
    std::printf("skipped: no CUDA device (%s)\n", why.c_str());
    return 77;
  }
  cudaDeviceProp prop{};
  slowmo::cuda::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  benchmark::AddCustomContext("device", prop.name);
  register_all();
  benchmark::Initialize(&nargs, args.data());
  if (benchmark::ReportUnrecognizedArguments(nargs, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::printf("\n%s: copy kernel %.1f GB/s at %lld fp32 elements\n", prop.name, copy_bandwidth() / 1e9,
              static_cast<long long>(n_params()));
  bool all_met = true;
  for (const auto& [name, r] : results) {
    if (r.target > 0 && !smoke) all_met = all_met && r.of_copy >= r.target;
    std::printf("  %-28s %.3f of copy%s\n", name.c_str(), r.of_copy,
                r.target > 0 ? (r.of_copy >= r.target ? "  (target >= 0.80: met)" : "  (target >= 0.80: NOT met)")
                             : "");
  }
  return all_met ? 0 : 3;
}
