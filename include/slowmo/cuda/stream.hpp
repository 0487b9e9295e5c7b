// slowmo/cuda/stream.hpp — the stream slowmo's device work goes to.
//
// Every kernel, copy and NCCL call the library issues from a host thread goes to that
// thread's current stream: cuda::current_stream(), by default cudaStreamPerThread (the
// per-thread default stream, which is ordered with the legacy default stream, so work a
// user queues there is seen in order). StreamGuard sets another one for a scope. Calls
// return as soon as their work is queued; only copies to host memory, barrier() and the
// host-memory fallback of the NCCL communicator wait for the stream.
#pragma once

#include <cuda_runtime_api.h>

#include <utility>

#include "slowmo/cuda/error.hpp"

namespace slowmo::cuda {

namespace detail {
inline cudaStream_t& current_stream_slot() noexcept {
  thread_local cudaStream_t stream = cudaStreamPerThread;
  return stream;
}
}  // namespace detail

/// The stream this thread's slowmo work is queued on.
inline cudaStream_t current_stream() noexcept { return detail::current_stream_slot(); }

/// Makes `stream` this thread's current stream until the guard goes out of scope.
class StreamGuard {
 public:
  explicit StreamGuard(cudaStream_t stream) noexcept : previous_(std::exchange(detail::current_stream_slot(), stream)) {}
  ~StreamGuard() { detail::current_stream_slot() = previous_; }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  cudaStream_t previous_;
};

/// An owned non-blocking stream on the current device.
class Stream {
 public:
  Stream() { check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags"); }
  ~Stream() {
    if (stream_) (void)cudaStreamDestroy(stream_);
  }
  Stream(Stream&& o) noexcept : stream_(std::exchange(o.stream_, nullptr)) {}
  Stream& operator=(Stream&& o) noexcept {
    std::swap(stream_, o.stream_);
    return *this;
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const noexcept { return stream_; }
  operator cudaStream_t() const noexcept { return stream_; }
  void synchronize() const { cuda::synchronize(stream_); }

 private:
  cudaStream_t stream_ = nullptr;
};

}  // namespace slowmo::cuda
