// slowmo/cuda/device.hpp — the Device memory space, and the optimizers specialised for it.
//
//   slowmo::cuda::Adam<float> opt({.lr = 1e-3});       // = slowmo::Adam<float, schedule::Constant, cuda::Device>
//   cuda::DeviceVector<float> x = cuda::DeviceVector<float>::from_host(x0), g(x.size());
//   opt.step(x, g);                                     // one fused kernel on cuda::current_stream()
//
// Parameters, gradients and optimizer state stay in device memory; the host computes the
// per-step coefficients (learning rate, bias corrections) and launches one kernel per
// update, without waiting for it. Under NonFinite::raise and skip (the default is raise)
// each step first scans the gradient by a device reduction (cuda/reduce.hpp) whose one
// value comes back to the host: such a step waits for the device; NonFinite::propagate
// scans nothing and never waits. Combinators (SlowMo, LocalSgd, GradientAllReduce, Sgp,
// Lookahead) take the space of their base, so their buffers and outer updates live on the
// device too; their communicator must accept device memory (slowmo::cuda::Nccl).
#pragma once

#include <cstdint>

#include "slowmo/core/schedule.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/cuda/device_vector.hpp"
#include "slowmo/cuda/for_each.hpp"
#include "slowmo/cuda/reduce.hpp"
#include "slowmo/cuda/stream.hpp"
#include "slowmo/optim/adagrad.hpp"
#include "slowmo/optim/adam.hpp"
#include "slowmo/optim/adamax.hpp"
#include "slowmo/optim/delta_sgd.hpp"
#include "slowmo/optim/lion.hpp"
#include "slowmo/optim/nadam.hpp"
#include "slowmo/optim/qhadam.hpp"
#include "slowmo/optim/qhm.hpp"
#include "slowmo/optim/rmsprop.hpp"
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

  /// Two kernels (per-block folds, then one block over their results) in the order of
  /// cuda/reduce.hpp, fixed by n; the value is copied back: this waits for the stream.
  template <class Op, class T>
  static T reduce(Eigen::Index n, const Op& op, const T* p) {
    return detail::reduce(static_cast<std::int64_t>(n), op, p, current_stream());
  }
};

static_assert(MemorySpace<Device> && HasReduction<Device>);

// The single-worker optimizers on the device. Lookahead, the gradient modifiers and the
// combinators need no alias: slowmo::Lookahead(cuda::Adam<float>(...)),
// slowmo::ClipGradNorm(cuda::AdamW<float>(...)), slowmo::SlowMo(cuda::Nesterov<float>(...), nccl).
template <Real T, Schedule S = schedule::Constant>
using Sgd = slowmo::Sgd<T, S, Device>;
template <Real T, Schedule S = schedule::Constant>
using Nesterov = slowmo::Nesterov<T, S, Device>;
template <Real T, Schedule S = schedule::Constant>
using Adam = slowmo::Adam<T, S, Device>;
template <Real T, Schedule S = schedule::Constant>
using AdamW = slowmo::AdamW<T, S, Device>;
template <Real T, Schedule S = schedule::Constant>
using RMSprop = slowmo::RMSprop<T, S, Device>;
template <Real T, Schedule S = schedule::Constant>
using Adagrad = slowmo::Adagrad<T, S, Device>;
template <Real T, Schedule S = schedule::Constant>
using NAdam = slowmo::NAdam<T, S, Device>;
template <Real T, Schedule S = schedule::Constant>
using Adamax = slowmo::Adamax<T, S, Device>;
template <Real T, Schedule S = schedule::Constant>
using Qhm = slowmo::Qhm<T, S, Device>;
template <Real T, Schedule S = schedule::Constant>
using QhAdam = slowmo::QhAdam<T, S, Device>;
template <Real T, Schedule S = schedule::Constant>
using Lion = slowmo::Lion<T, S, Device>;
template <Real T>
using DeltaSgd = slowmo::DeltaSgd<T, Device>;

}  // namespace slowmo::cuda
