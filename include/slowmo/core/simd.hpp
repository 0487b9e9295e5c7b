// slowmo/core/simd.hpp — a minimal SIMD value type over Eigen's packet primitives.
//
// Why: the update rules call sqrt. With the default -fmath-errno, GCC will not vectorize a
// loop that calls std::sqrt, and a header-only library cannot ask its users for
// -fno-math-errno or -march flags. Writing the rules once as templates over the value
// type, and instantiating them with this wrapper, gives the CPU loop Eigen's SIMD for
// whatever instruction set the user compiles for, while CUDA instantiates the very same
// rule with a plain scalar.
#pragma once

#include <Eigen/Core>
#include <type_traits>

#include "slowmo/core/config.hpp"

namespace slowmo::detail {

template <class T>
struct Pack {
  using packet = typename Eigen::internal::packet_traits<T>::type;
  static constexpr int size = Eigen::internal::unpacket_traits<packet>::size;

  packet v;

  // SLOWMO_HOST_DEVICE: the rules are host-device functions; a CUDA translation unit that also
  // runs host optimizers instantiates them with Pack (whose packet is then T, and Eigen's
  // packet functions host-device too).
  Pack() = default;
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack(packet p) : v(p) {}
  // Broadcast; absent when Eigen has no SIMD for T here (EIGEN_DONT_VECTORIZE, nvcc's host
  // pass, ...) and the packet is T itself, which the constructor above then takes.
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack(T s)
    requires(!std::is_same_v<packet, T>)
      : v(Eigen::internal::pset1<packet>(s)) {}

  static SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack load(const T* p) { return Eigen::internal::ploadu<packet>(p); }
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE void store(T* p) const { Eigen::internal::pstoreu(p, v); }

  friend SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack operator+(Pack a, Pack b) { return Eigen::internal::padd(a.v, b.v); }
  friend SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack operator-(Pack a, Pack b) { return Eigen::internal::psub(a.v, b.v); }
  friend SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack operator*(Pack a, Pack b) { return Eigen::internal::pmul(a.v, b.v); }
  friend SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack operator/(Pack a, Pack b) { return Eigen::internal::pdiv(a.v, b.v); }
  friend SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack operator-(Pack a) { return Eigen::internal::pnegate(a.v); }
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack& operator+=(Pack b) { return *this = *this + b; }
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack& operator-=(Pack b) { return *this = *this - b; }
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack& operator*=(Pack b) { return *this = *this * b; }

  friend SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack sqrt(Pack a) { return Eigen::internal::psqrt(a.v); }
  // NaN handling follows the instruction set; the rules only take the max of second-moment
  // estimates, which are NaN only when the gradient already was.
  friend SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack max(Pack a, Pack b) { return Eigen::internal::pmax(a.v, b.v); }
};

}  // namespace slowmo::detail
