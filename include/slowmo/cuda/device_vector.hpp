// slowmo/cuda/device_vector.hpp — device-resident parameter storage.
//
//   DeviceVector<T>   owns n elements of device memory (RAII, copyable: copies are
//                     device-to-device). Host <-> device copies are explicit:
//                     from_host(v), copy_from_host(v), copy_to_host(out), to_host(); the
//                     host side is any Eigen vector, Map or segment (through Eigen::Ref).
//   DeviceSpan<T>     a non-owning view (pointer, size) of device memory; what device
//                     optimizers take as parameters (DeviceSpan<T>) and gradients
//                     (DeviceSpan<const T>). A DeviceVector converts to it.
//
// Copies and fills are queued on cuda::current_stream(); copies to or from host memory wait
// for their completion, so the host buffer may be used as soon as they return.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "slowmo/core/error.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/cuda/error.hpp"
#include "slowmo/cuda/stream.hpp"

namespace slowmo::cuda {

template <class T>
class DeviceVector;

namespace detail {
template <class T>
constexpr const char* type_name() {
  return std::is_same_v<std::remove_const_t<T>, float> ? "float" : "double";
}
}  // namespace detail

/// A view of `size()` contiguous elements of device memory.
template <class T>
class DeviceSpan {
 public:
  using element_type = T;
  using value_type = std::remove_const_t<T>;

  DeviceSpan() = default;
  /// Trusted: `data` must point to device (or managed) memory; see device_span() for a
  /// checked version.
  DeviceSpan(T* data, Eigen::Index size) noexcept : data_(data), size_(size) {}
  DeviceSpan(DeviceVector<value_type>& v) noexcept : DeviceSpan(v.data(), v.size()) {}  // NOLINT: like Eigen::Ref
  DeviceSpan(const DeviceVector<value_type>& v) noexcept
    requires std::is_const_v<T>
      : DeviceSpan(v.data(), v.size()) {}
  template <class U>
    requires(std::is_const_v<T> && std::is_same_v<U, value_type>)
  DeviceSpan(DeviceSpan<U> s) noexcept : DeviceSpan(s.data(), s.size()) {}

  T* data() const noexcept { return data_; }
  Eigen::Index size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  /// Elements [offset, offset + n), like Eigen's segment.
  DeviceSpan segment(Eigen::Index offset, Eigen::Index n) const {
    if (offset < 0 || n < 0 || offset > size_ - n)
      throw std::out_of_range(slowmo::detail::concat("slowmo::cuda::DeviceSpan::segment: [", offset, ", ", offset,
                                                     " + ", n, ") is outside [0, ", size_, ")"));
    return {data_ + offset, n};
  }

 private:
  T* data_ = nullptr;
  Eigen::Index size_ = 0;
};

/// An owning vector of n elements of T (float or double) in the memory of the device that
/// was current when it was allocated.
template <class T>
class DeviceVector {
  static_assert(Real<T>, "slowmo::cuda::DeviceVector<T>: T must be float or double");

 public:
  using Scalar = T;
  using value_type = T;

  DeviceVector() noexcept = default;
  /// n uninitialised elements.
  explicit DeviceVector(Eigen::Index n) { allocate(n); }
  /// n zeros.
  static DeviceVector Zero(Eigen::Index n) {
    DeviceVector v(n);
    v.setZero();
    return v;
  }
  /// A device copy of a host vector (VectorX, Map, segment, ...).
  static DeviceVector from_host(ConstVectorRef<T> host) {
    DeviceVector v(host.size());
    v.copy_from_host(host);
    return v;
  }

  DeviceVector(const DeviceVector& o) : DeviceVector(o.size_) { copy_device(o.data_, o.size_); }
  DeviceVector(DeviceVector&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), device_(o.device_) {}
  DeviceVector& operator=(const DeviceVector& o) {
    if (this != &o) *this = DeviceSpan<const T>(o);
    return *this;
  }
  DeviceVector& operator=(DeviceVector&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(device_, o.device_);
    return *this;
  }
  /// Becomes a copy of the elements `src` views (device-to-device, queued on the stream).
  DeviceVector& operator=(DeviceSpan<const T> src) {
    if (src.data() == data_ && src.size() == size_) return *this;
    if (size_ > 0 && src.data() >= data_ && src.data() < data_ + size_) {  // a part of itself
      DeviceVector part(src.size());
      part.copy_device(src.data(), src.size());
      return *this = std::move(part);
    }
    resize(src.size());
    copy_device(src.data(), src.size());
    return *this;
  }
  ~DeviceVector() { release(); }

  Eigen::Index size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  /// The device whose memory holds the elements (-1 while empty).
  int device() const noexcept { return data_ ? device_ : -1; }

  /// n elements; the contents are unspecified after a change of size (as Eigen's resize).
  void resize(Eigen::Index n) {
    if (n == size_) return;
    release();
    allocate(n);
  }
  void setZero() {
    if (size_ > 0)
      check(cudaMemsetAsync(data_, 0, bytes(size_), current_stream()), "cudaMemsetAsync", " of ", size_, " ",
            detail::type_name<T>());
  }
  void setZero(Eigen::Index n) {
    resize(n);
    setZero();
  }

  DeviceSpan<T> segment(Eigen::Index offset, Eigen::Index n) { return DeviceSpan<T>(*this).segment(offset, n); }
  DeviceSpan<const T> segment(Eigen::Index offset, Eigen::Index n) const {
    return DeviceSpan<const T>(*this).segment(offset, n);
  }

  /// Copies a host vector of the same size into this one, and waits for the copy.
  void copy_from_host(ConstVectorRef<T> host) {
    check_host_size("copy_from_host", host.size());
    if (size_ == 0) return;
    const cudaStream_t s = current_stream();
    check(cudaMemcpyAsync(data_, host.data(), bytes(size_), cudaMemcpyHostToDevice, s), "cudaMemcpyAsync",
          " (host to device, ", size_, " ", detail::type_name<T>(), ")");
    synchronize(s);
  }
  /// Copies this vector into a host vector (VectorX, Map, segment) of the same size, after
  /// the work queued before it on the stream; waits for the copy.
  void copy_to_host(VectorRef<T> host) const {
    check_host_size("copy_to_host", host.size());
    if (size_ == 0) return;
    const cudaStream_t s = current_stream();
    check(cudaMemcpyAsync(host.data(), data_, bytes(size_), cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync",
          " (device to host, ", size_, " ", detail::type_name<T>(), ")");
    synchronize(s);
  }
  /// A host copy.
  Vector<T> to_host() const {
    Vector<T> out(size_);
    copy_to_host(out);
    return out;
  }

 private:
  static std::size_t bytes(Eigen::Index n) { return static_cast<std::size_t>(n) * sizeof(T); }

  void allocate(Eigen::Index n) {
    if (n < 0)
      throw size_mismatch(slowmo::detail::concat("slowmo::cuda::DeviceVector: size ", n, " is negative"));
    if (static_cast<std::uint64_t>(n) > std::numeric_limits<std::size_t>::max() / sizeof(T))
      throw size_mismatch(slowmo::detail::concat("slowmo::cuda::DeviceVector: size ", n, " overflows size_t"));
    if (n == 0) return;
    void* p = nullptr;
    check(cudaMalloc(&p, bytes(n)), "cudaMalloc", " of ", bytes(n), " bytes (", n, " ", detail::type_name<T>(), ")");
    data_ = static_cast<T*>(p);
    size_ = n;
    device_ = detail::current_device_or_none();
  }
  void release() noexcept {
    if (data_) {
      const int here = detail::current_device_or_none();
      if (here != device_ && device_ >= 0) (void)cudaSetDevice(device_);
      (void)cudaFree(data_);  // a destructor cannot throw; an error here is sticky and seen later
      if (here != device_ && here >= 0) (void)cudaSetDevice(here);
    }
    data_ = nullptr;
    size_ = 0;
  }
  void copy_device(const T* src, Eigen::Index n) {
    if (n == 0) return;
    check(cudaMemcpyAsync(data_, src, bytes(n), cudaMemcpyDefault, current_stream()), "cudaMemcpyAsync",
          " (device to device, ", n, " ", detail::type_name<T>(), ")");
  }
  void check_host_size(const char* what, Eigen::Index host) const {
    if (host != size_)
      throw size_mismatch(slowmo::detail::concat("slowmo::cuda::DeviceVector::", what, ": host vector size ", host,
                                                 " does not match device vector size ", size_));
  }

  T* data_ = nullptr;
  Eigen::Index size_ = 0;
  int device_ = -1;
};

/// std::span views of device memory, what communicators exchange (the NCCL communicator
/// reads and writes them on the device).
template <class T>
std::span<T> as_span(DeviceSpan<T> s) noexcept {
  return {s.data(), static_cast<std::size_t>(s.size())};
}
template <class T>
std::span<T> as_span(DeviceVector<T>& v) noexcept {
  return {v.data(), static_cast<std::size_t>(v.size())};
}
template <class T>
std::span<const T> as_span(const DeviceVector<T>& v) noexcept {
  return {v.data(), static_cast<std::size_t>(v.size())};
}

/// A checked DeviceSpan over memory the caller owns: throws std::invalid_argument when
/// `data` is host memory that kernels cannot read (device and managed memory pass).
template <class T>
DeviceSpan<T> device_span(T* data, Eigen::Index size) {
  if (size < 0)
    throw size_mismatch(slowmo::detail::concat("slowmo::cuda::device_span: size ", size, " is negative"));
  if (size == 0) return {data, 0};
  cudaPointerAttributes attr{};
  check(cudaPointerGetAttributes(&attr, data), "cudaPointerGetAttributes");
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    throw std::invalid_argument(slowmo::detail::concat(
        "slowmo::cuda::device_span: the ", size, " ", detail::type_name<T>(), " at ", static_cast<const void*>(data),
        " are in host memory; device optimizers need device or managed memory: copy them with "
        "DeviceVector<T>::from_host"));
  return {data, size};
}

}  // namespace slowmo::cuda
