// slowmo/cuda/device.hpp — the Device memory space, and the optimizers specialised for it.
//
//   slowmo::cuda::Adam<float> opt({.lr = 1e-3});       // = slowmo::Adam<float, schedule::Constant, cuda::Device>
//   cuda::DeviceVector<float> x = cuda::DeviceVector<float>::from_host(x0), g(x.size());
//   opt.step(x, g);                                     // one fused kernel on cuda::current_stream()
//
// Parameters, gradients and optimizer state stay in device memory; the host computes the
// per-step coefficients (learning rate, bias corrections) and launches one kernel per
// update, without waiting for it. Combinators (SlowMo, LocalSgd, GradientAllReduce, Sgp,
// Lookahead) take the space of their base, so their buffers and outer updates live on the
// device too; their communicator must accept device memory (slowmo::cuda::Nccl).
#pragma once

#include <cstdint>

#include "slowmo/core/schedule.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/cuda/device_vector.hpp"
#include "slowmo/cuda/for_each.hpp"
#include "slowmo/cuda/stream.hpp"
#include "slowmo/optim/adam.hpp"
#include "slowmo/optim/sgd.hpp"

namespace slowmo::cuda {

/// Device memory of the current CUDA device; rules run by one grid-stride kernel on the
/// thread's current stream (cuda::current_stream()).
struct Device {
  template <class T>
  using vector = DeviceVector<T>;
  template <class T>
  using ref = DeviceSpan<T>;
  template <class T>
  using const_ref = DeviceSpan<const T>;

  /// Only communicators that declare `static constexpr bool accepts_device_memory = true`
  /// may be given spans of device memory (slowmo::cuda::Nccl; SingleWorker, which never
  /// touches them).
  template <class Comm>
  static constexpr bool communicates_with = requires { requires Comm::accepts_device_memory; };

  static constexpr const char* name = "cuda";

  template <class Rule, class... Q>
  static void for_each(Eigen::Index n, const Rule& rule, Q*... ptrs) {
    detail::for_each(static_cast<std::int64_t>(n), rule, current_stream(), ptrs...);
  }
};

static_assert(MemorySpace<Device>);

// The single-worker optimizers on the device. Lookahead and the combinators need no alias:
// slowmo::Lookahead(cuda::Adam<float>(...)), slowmo::SlowMo(cuda::Nesterov<float>(...), nccl).
template <Real T, Schedule S = schedule::Constant>
using Sgd = slowmo::Sgd<T, S, Device>;
template <Real T, Schedule S = schedule::Constant>
using Nesterov = slowmo::Nesterov<T, S, Device>;
template <Real T, Schedule S = schedule::Constant>
using Adam = slowmo::Adam<T, S, Device>;
template <Real T, Schedule S = schedule::Constant>
using AdamW = slowmo::AdamW<T, S, Device>;

}  // namespace slowmo::cuda
