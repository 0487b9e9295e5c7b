// slowmo/cuda/reduce.hpp — the GPU driver of the reduction ops (core/for_each.hpp): what
// the NaN/Inf scan of NonFinite::raise / skip and the norm of gradient clipping run on
// device gradients.
//
// Order (fixed by n alone, never by timing: the same bits on every run and every device):
// G = min(ceil(n / 256), 1024) blocks of 256 threads;
//   1. thread t of block b (global index j = 256 b + t) folds the elements j, j + 256 G,
//      j + 512 G, ... in increasing order: a = combine(a, map(x_i)), a = identity at first;
//   2. each block's 256 values meet in a tree: for w = 128, 64, ..., 1: a_t = combine(a_t,
//      a_{t+w}) for t < w; the block's result is a_0;
//   3. one block combines the G block results in the same tree (padded with the identity).
// The ops run on detail::Exact<T> (correctly rounded, never contracted into FMA), as the
// update rules do. The result is copied to the host: reduce waits for the stream.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

#include "slowmo/core/config.hpp"
#include "slowmo/cuda/error.hpp"
#include "slowmo/cuda/for_each.hpp"
#include "slowmo/cuda/stream.hpp"

namespace slowmo::cuda::detail {

inline constexpr int reduce_threads = 256;
inline constexpr int reduce_max_blocks = 1024;

/// Block b's fold of its threads' elements (Map: apply op.map; the second pass combines
/// partial results as they are), written to out[blockIdx.x].
template <bool Map, class T, class Op>
__global__ void __launch_bounds__(reduce_threads) reduce_kernel(std::int64_t n, Op op, const T* p, T* out) {
  __shared__ T lanes[reduce_threads];
  const std::int64_t stride = std::int64_t(gridDim.x) * reduce_threads;
  Exact<T> a(Op::identity());
  for (std::int64_t i = std::int64_t(blockIdx.x) * reduce_threads + threadIdx.x; i < n; i += stride) {
    if constexpr (Map)
      a = op.combine(a, op.map(Exact<T>(p[i])));
    else
      a = op.combine(a, Exact<T>(p[i]));
  }
  lanes[threadIdx.x] = a.v;
  __syncthreads();
#pragma unroll
  for (int w = reduce_threads / 2; w >= 1; w /= 2) {
    if (int(threadIdx.x) < w) lanes[threadIdx.x] = op.combine(Exact<T>(lanes[threadIdx.x]), Exact<T>(lanes[threadIdx.x + w])).v;
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = lanes[0];
}

/// reduce_max_blocks + 1 values of double per device for this thread: the block results
/// and the final one (allocated on first use, freed when the thread ends).
inline void* reduce_scratch() {
  struct PerDevice {
    std::array<void*, 64> slot{};
    ~PerDevice() {
      for (void* p : slot)
        if (p) (void)cudaFree(p);
    }
  };
  thread_local PerDevice cache;
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  void*& p = cache.slot[std::size_t(device) % cache.slot.size()];
  if (p == nullptr)
    check(cudaMalloc(&p, (reduce_max_blocks + 1) * sizeof(double)), "cudaMalloc", " (reduction scratch, ",
          (reduce_max_blocks + 1) * sizeof(double), " bytes)");
  return p;
}

/// op reduced over p[0, n) (device memory) in the order above, on `stream`; waits for it.
template <class Op, class T>
T reduce(std::int64_t n, const Op& op, const T* p, cudaStream_t stream) {
  static_assert(std::is_trivially_copyable_v<Op>, "slowmo::cuda: a reduction op is passed to the kernel by value");
  if (n <= 0) return Op::identity();
  T* partial = static_cast<T*>(reduce_scratch());
  const std::int64_t blocks = std::min<std::int64_t>((n + reduce_threads - 1) / reduce_threads, reduce_max_blocks);
  reduce_kernel<true, T, Op><<<static_cast<unsigned>(blocks), reduce_threads, 0, stream>>>(n, op, p, partial);
  check(cudaGetLastError(), "kernel launch", " (reduction over ", n, " elements, ", blocks, " blocks)");
  reduce_kernel<false, T, Op><<<1, reduce_threads, 0, stream>>>(blocks, op, partial, partial + reduce_max_blocks);
  check(cudaGetLastError(), "kernel launch", " (reduction of ", blocks, " block results)");
  T result{};
  check(cudaMemcpyAsync(&result, partial + reduce_max_blocks, sizeof(T), cudaMemcpyDeviceToHost, stream),
        "cudaMemcpyAsync", " (reduction result to host)");
  synchronize(stream);
  return result;
}

}  // namespace slowmo::cuda::detail
