// slowmo/cuda/error.hpp — every CUDA runtime call is checked; a failure throws
// slowmo::cuda::cuda_error naming the call, what it was doing (sizes, device) and CUDA's
// own name and description of the error.
#pragma once

#include <cuda_runtime_api.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

#include "slowmo/core/error.hpp"

namespace slowmo::cuda {

/// A CUDA runtime call failed. code() is the cudaError_t it returned.
class cuda_error : public std::runtime_error {
 public:
  cuda_error(cudaError_t code, const std::string& what) : std::runtime_error(what), code_(code) {}
  cudaError_t code() const noexcept { return code_; }

 private:
  cudaError_t code_;
};

namespace detail {

/// The device current on this thread, or -1 when there is none to ask for.
inline int current_device_or_none() noexcept {
  int d = -1;
  if (cudaGetDevice(&d) != cudaSuccess) {
    (void)cudaGetLastError();  // do not leave a (non-sticky) error behind for the next check
    return -1;
  }
  return d;
}

}  // namespace detail

/// Throws cuda_error unless `code` is cudaSuccess:
///   "slowmo::cuda: cudaMalloc of 400 bytes on device 0 failed: cudaErrorMemoryAllocation (out of memory)"
/// `call` names the call and `parts...` say what it was doing.
template <class... Parts>
void check(cudaError_t code, const char* call, const Parts&... parts) {
  if (code == cudaSuccess) return;
  (void)cudaGetLastError();  // clear it, so that it is reported once, here
  const int device = detail::current_device_or_none();
  throw cuda_error(code, slowmo::detail::concat("slowmo::cuda: ", call, parts...,
                                                device >= 0 ? slowmo::detail::concat(" on device ", device) : "",
                                                " failed: ", cudaGetErrorName(code), " (",
                                                cudaGetErrorString(code), ")"));
}

/// The number of CUDA devices this process can use; 0 when there is no device or no
/// driver (the reason goes to *why when given). Other failures throw.
inline int device_count(std::string* why = nullptr) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaErrorNotSupported) {
    (void)cudaGetLastError();
    if (why) *why = slowmo::detail::concat(cudaGetErrorName(e), ": ", cudaGetErrorString(e));
    return 0;
  }
  check(e, "cudaGetDeviceCount");
  if (n == 0 && why) *why = "cudaGetDeviceCount reports 0 devices";
  return n;
}

namespace detail {
/// Set by run_local() on each worker thread: while a worker waits for its stream, a peer's
/// failure must not leave it waiting forever for NCCL work that peer will never do.
struct WaitHook {
  virtual bool peer_failed() const = 0;
  /// Abandons this worker's NCCL work (so that the stream can drain) and throws.
  [[noreturn]] virtual void give_up() = 0;

 protected:
  ~WaitHook() = default;
};
inline WaitHook*& wait_hook() noexcept {
  thread_local WaitHook* hook = nullptr;
  return hook;
}
}  // namespace detail

/// Waits for everything queued on `stream` and reports any error a kernel raised. On a
/// worker of run_local(), gives up (comm_error) when another worker failed meanwhile.
inline void synchronize(cudaStream_t stream) {
  detail::WaitHook* hook = detail::wait_hook();
  if (!hook) return check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  for (int spins = 0;; ++spins) {
    const cudaError_t e = cudaStreamQuery(stream);
    if (e != cudaErrorNotReady) return check(e, "cudaStreamQuery", " (waiting for the stream)");
    if (hook->peer_failed()) hook->give_up();
    if (spins > 64) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

}  // namespace slowmo::cuda
