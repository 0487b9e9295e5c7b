// cuda_slowmo: SlowMo on every GPU of this machine, one worker per GPU, with parameters,
// gradients and optimizer state in device memory (the README's example, on the GPU).
//
// Worker r minimises f_r(x) = |x - r|^2 / 2; together they minimise the mean, whose
// minimiser is the mean of the ranks, (m - 1) / 2. Each step is one gradient kernel of ours
// and one fused update kernel of slowmo's; every 12 steps an NCCL all-reduce and the outer
// update follow, on the same stream: the host never waits for the GPU until the end.
// Without a CUDA device it prints "skipped: no CUDA device (...)" and exits with 77.
#include <slowmo/cuda.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

// g = x - r, for this worker's rank r.
__global__ void gradient(const float* x, float* g, float r, std::int64_t n) {
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) g[i] = x[i] - r;
}

int main() {
  std::string why;
  if (slowmo::cuda::device_count(&why) == 0) {
    std::printf("skipped: no CUDA device (%s)\n", why.c_str());
    return 77;
  }
  float error = 0;
  slowmo::cuda::run_local({}, [&](slowmo::cuda::Nccl& comm) {
    const std::int64_t n = 1 << 16;
    slowmo::cuda::DeviceVector<float> x = slowmo::cuda::DeviceVector<float>::Zero(n), g(n);
    slowmo::SlowMo opt(slowmo::cuda::Nesterov<float>({.lr = 0.1, .momentum = 0.9}), comm,
                       {.tau = 12, .alpha = 1.0, .beta = 0.6, .base_state = slowmo::OnSync::reset});
    opt.start(x);  // before the first gradient: every GPU takes worker 0's point
    for (int t = 0; t < 480; ++t) {
      gradient<<<256, 256, 0, slowmo::cuda::current_stream()>>>(x.data(), g.data(), float(comm.rank()), n);
      slowmo::cuda::check(cudaGetLastError(), "gradient kernel launch");
      opt.step(x, g);
    }
    const slowmo::Vector<float> result = x.to_host();  // waits for the stream
    const float optimum = float(comm.size() - 1) / 2.0f;
    if (comm.rank() == 0) {
      error = (result.array() - optimum).abs().maxCoeff() / std::max(1.0f, optimum);
      std::printf("x[0] = %.4f (the optimum is %.1f) on %d GPU(s), %lld outer steps\n", result[0], optimum,
                  comm.size(), static_cast<long long>(opt.outer_steps()));
    }
  });
  return error < 1e-3f ? 0 : 1;  // relative to the optimum: converged
}
