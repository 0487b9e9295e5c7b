// slowmo/cuda/for_each.hpp — the GPU driver of the per-element update rules: one fused
// grid-stride kernel per update, instantiating the very rule the CPU loop uses
// (optim/rules.hpp, distributed/rules.hpp; one definition of each update, shared by CPU and GPU).
//
// Parity with the CPU: the kernel runs each rule on detail::Exact<T>, a scalar whose
// + - * / and sqrt are the IEEE-754 round-to-nearest intrinsics (__fadd_rn, __fmul_rn,
// __fsqrt_rn, ...). nvcc never contracts those into fused multiply-adds, so an element
// goes through the same sequence of correctly rounded operations as in the CPU loop (SSE/AVX
// packets without FMA, or the scalar tail): the device trajectory equals the CPU's bit for
// bit, unless the CPU code itself is compiled to contract (e.g. -march with FMA and GCC's
// default -ffp-contract=fast).
//
// Memory: each element is loaded once from every buffer, updated in registers, and stored
// once to every buffer the rule writes (those it takes as V&): e.g. 28 bytes per fp32 Adam
// parameter. When every buffer is 16-byte aligned (cudaMalloc'd storage always is), each
// thread moves 16-byte vectors (float4 / double2) and runs the rule on each of their lanes.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

#include "slowmo/core/config.hpp"
#include "slowmo/core/math.hpp"
#include "slowmo/cuda/error.hpp"

namespace slowmo::cuda::detail {

/// A float or double whose arithmetic is correctly rounded, never contracted (see top).
template <class T>
struct Exact {
  T v;

  Exact() = default;
  SLOWMO_HOST_DEVICE Exact(T x) : v(x) {}  // NOLINT: rules write V(coefficient)

#if defined(__CUDA_ARCH__)
  friend __device__ __forceinline__ Exact operator+(Exact a, Exact b) {
    if constexpr (std::is_same_v<T, float>) return __fadd_rn(a.v, b.v);
    else return __dadd_rn(a.v, b.v);
  }
  friend __device__ __forceinline__ Exact operator-(Exact a, Exact b) {
    if constexpr (std::is_same_v<T, float>) return __fsub_rn(a.v, b.v);
    else return __dsub_rn(a.v, b.v);
  }
  friend __device__ __forceinline__ Exact operator*(Exact a, Exact b) {
    if constexpr (std::is_same_v<T, float>) return __fmul_rn(a.v, b.v);
    else return __dmul_rn(a.v, b.v);
  }
  friend __device__ __forceinline__ Exact operator/(Exact a, Exact b) {
    if constexpr (std::is_same_v<T, float>) return __fdiv_rn(a.v, b.v);
    else return __ddiv_rn(a.v, b.v);
  }
  friend __device__ __forceinline__ Exact sqrt(Exact a) {
    if constexpr (std::is_same_v<T, float>) return __fsqrt_rn(a.v);
    else return __dsqrt_rn(a.v);
  }
#else  // host pass of nvcc: never executed (the kernel is device code), but must parse
  friend Exact operator+(Exact a, Exact b) { return a.v + b.v; }
  friend Exact operator-(Exact a, Exact b) { return a.v - b.v; }
  friend Exact operator*(Exact a, Exact b) { return a.v * b.v; }
  friend Exact operator/(Exact a, Exact b) { return a.v / b.v; }
  friend Exact sqrt(Exact a) { return math::sqrt(a.v); }
#endif
  friend SLOWMO_HOST_DEVICE Exact operator-(Exact a) { return -a.v; }  // exact
  /// As math::max: a < b ? b : a (the rules take it of non-negative second moments).
  friend SLOWMO_HOST_DEVICE Exact max(Exact a, Exact b) { return a.v < b.v ? b : a; }
  /// As math::min: b < a ? b : a.
  friend SLOWMO_HOST_DEVICE Exact min(Exact a, Exact b) { return b.v < a.v ? b : a; }
  /// As math::sign (exact: a comparison, or a * 0).
  friend SLOWMO_HOST_DEVICE Exact sign(Exact a) { return math::sign(a.v); }
  SLOWMO_HOST_DEVICE Exact& operator+=(Exact b) { return *this = *this + b; }
  SLOWMO_HOST_DEVICE Exact& operator-=(Exact b) { return *this = *this - b; }
  SLOWMO_HOST_DEVICE Exact& operator*=(Exact b) { return *this = *this * b; }
};

/// 16 bytes of T: one vector load or store.
template <class T>
struct alignas(16) Chunk {
  static constexpr int lanes = 16 / sizeof(T);
  T lane[lanes];
};

template <class T, class Q>
__device__ __forceinline__ void store_if_mutable(Q* dst, const T& v) {
  if constexpr (!std::is_const_v<Q>) *dst = v;
}

/// Element i of every buffer: load, apply the rule, store what it may write.
template <class T, class Rule, std::size_t... I, class... Q>
__device__ __forceinline__ void apply_element(const Rule& rule, std::int64_t i, std::index_sequence<I...>,
                                              Q*... ptrs) {
  Exact<T> v[sizeof...(Q)] = {Exact<T>(ptrs[i])...};
  rule(v[I]...);
  (store_if_mutable(ptrs + i, v[I].v), ...);
}

/// Chunk c (elements c*lanes .. c*lanes + lanes - 1) of every buffer, with 16-byte accesses.
template <class T, class Rule, std::size_t... I, class... Q>
__device__ __forceinline__ void apply_chunk(const Rule& rule, std::int64_t c, std::index_sequence<I...>,
                                            Q*... ptrs) {
  using C = Chunk<T>;
  C in[sizeof...(Q)] = {reinterpret_cast<const C*>(ptrs)[c]...};
#pragma unroll
  for (int l = 0; l < C::lanes; ++l) {
    Exact<T> v[sizeof...(Q)] = {Exact<T>(in[I].lane[l])...};
    rule(v[I]...);
    ((in[I].lane[l] = v[I].v), ...);
  }
  (store_if_mutable(reinterpret_cast<std::conditional_t<std::is_const_v<Q>, const C, C>*>(ptrs) + c, in[I]), ...);
}

/// The one kernel: a grid-stride loop over 16-byte chunks (when `vectorized`), then over
/// the remaining elements.
template <class T, class Rule, class... Q>
__global__ void __launch_bounds__(256) for_each_kernel(std::int64_t n, Rule rule, bool vectorized, Q*... ptrs) {
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  const std::int64_t first = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const auto seq = std::index_sequence_for<Q...>{};
  std::int64_t done = 0;
  if (vectorized) {
    constexpr int lanes = Chunk<T>::lanes;
    const std::int64_t chunks = n / lanes;
    for (std::int64_t c = first; c < chunks; c += stride) apply_chunk<T>(rule, c, seq, ptrs...);
    done = chunks * lanes;
  }
  for (std::int64_t i = done + first; i < n; i += stride) apply_element<T>(rule, i, seq, ptrs...);
}

inline constexpr int block_threads = 256;

/// Blocks that keep every SM full (2048 resident threads per SM on sm_80/sm_90); a
/// grid-stride loop covers the rest. Cached per device.
inline std::int64_t resident_blocks() {
  static std::array<std::atomic<int>, 64> cache{};  // 0: not asked yet
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  const std::size_t slot = std::size_t(device) % cache.size();
  if (cache[slot].load(std::memory_order_relaxed) == 0) {
    int sms = 0, threads = 0;
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute",
          " (multiprocessor count)");
    check(cudaDeviceGetAttribute(&threads, cudaDevAttrMaxThreadsPerMultiProcessor, device), "cudaDeviceGetAttribute",
          " (threads per multiprocessor)");
    cache[slot].store(std::max(1, sms * std::max(1, threads / block_threads)), std::memory_order_relaxed);
  }
  return cache[slot].load(std::memory_order_relaxed);
}

/// Queues rule(element i of each buffer) for i in [0, n) on `stream`. Returns without
/// waiting; a launch failure throws cuda_error (a fault inside the kernel surfaces at the
/// next synchronisation).
template <class Rule, class... Q>
void for_each(std::int64_t n, const Rule& rule, cudaStream_t stream, Q*... ptrs) {
  using T = std::remove_const_t<std::tuple_element_t<0, std::tuple<Q...>>>;
  static_assert((std::is_same_v<std::remove_const_t<Q>, T> && ...),
                "slowmo::cuda: all buffers of one update must have the same scalar type");
  static_assert(std::is_trivially_copyable_v<Rule>, "slowmo::cuda: a rule is passed to the kernel by value");
  if (n <= 0) return;
  const bool vectorized = ((reinterpret_cast<std::uintptr_t>(ptrs) % 16 == 0) && ...);
  const std::int64_t lanes = vectorized ? Chunk<T>::lanes : 1;
  const std::int64_t work = n / lanes + n % lanes;  // loop trips of one thread if each had one
  const std::int64_t blocks = std::min((work + block_threads - 1) / block_threads, resident_blocks());
  for_each_kernel<T, Rule, Q...><<<static_cast<unsigned>(blocks), block_threads, 0, stream>>>(n, rule, vectorized,
                                                                                               ptrs...);
  check(cudaGetLastError(), "kernel launch", " (for_each over ", n, " elements, ", sizeof...(Q), " buffers, ",
        blocks, " blocks of ", block_threads, " threads)");
}

}  // namespace slowmo::cuda::detail
