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
#include <cmath>
#include <type_traits>

#include "slowmo/core/config.hpp"
#include "slowmo/core/math.hpp"

namespace slowmo::detail {

// The correctly rounded square root of every lane: what IEEE-754, std::sqrt and the GPU's
// __fsqrt_rn compute. Not Eigen's psqrt: under Eigen's default EIGEN_FAST_MATH that is, for
// float with SSE and AVX (and float and double with AVX-512, float on 32-bit ARM), the
// hardware's reciprocal square-root estimate refined by Newton steps: 1-2 bits off, NaN for
// +inf, zero for denormals. Adam's step would then depend on whether an element fell in the
// SIMD body or the scalar tail, and would differ from PyTorch's and from the GPU's.
template <class Packet>
inline Packet exact_sqrt(const Packet& x) {  // any other packet: lane by lane
  using T = typename Eigen::internal::unpacket_traits<Packet>::type;
  constexpr int n = Eigen::internal::unpacket_traits<Packet>::size;
  T lanes[n];
  Eigen::internal::pstoreu(lanes, x);
  for (int k = 0; k < n; ++k) lanes[k] = std::sqrt(lanes[k]);
  return Eigen::internal::ploadu<Packet>(lanes);
}
// Where the packet is the scalar itself (no SIMD for T, or device code).
SLOWMO_HOST_DEVICE inline float exact_sqrt(float x) { return math::sqrt(x); }
SLOWMO_HOST_DEVICE inline double exact_sqrt(double x) { return math::sqrt(x); }
#if defined(EIGEN_VECTORIZE_SSE2)
inline Eigen::internal::Packet4f exact_sqrt(const Eigen::internal::Packet4f& x) { return _mm_sqrt_ps(x); }
inline Eigen::internal::Packet2d exact_sqrt(const Eigen::internal::Packet2d& x) { return _mm_sqrt_pd(x); }
#endif
#if defined(EIGEN_VECTORIZE_AVX)
inline Eigen::internal::Packet8f exact_sqrt(const Eigen::internal::Packet8f& x) { return _mm256_sqrt_ps(x); }
inline Eigen::internal::Packet4d exact_sqrt(const Eigen::internal::Packet4d& x) { return _mm256_sqrt_pd(x); }
#endif
#if defined(EIGEN_VECTORIZE_AVX512)
// (The masked forms with every lane selected: GCC 12 warns that the unmasked ones read an
// uninitialised register.)
inline Eigen::internal::Packet16f exact_sqrt(const Eigen::internal::Packet16f& x) {
  return _mm512_mask_sqrt_ps(x, __mmask16(0xFFFF), x);
}
inline Eigen::internal::Packet8d exact_sqrt(const Eigen::internal::Packet8d& x) {
  return _mm512_mask_sqrt_pd(x, __mmask8(0xFF), x);
}
#endif
#if defined(EIGEN_VECTORIZE_NEON) && EIGEN_ARCH_ARM64  // Eigen's psqrt is vsqrtq_f32 / vsqrtq_f64 there
inline Eigen::internal::Packet4f exact_sqrt(const Eigen::internal::Packet4f& x) { return Eigen::internal::psqrt(x); }
inline Eigen::internal::Packet2d exact_sqrt(const Eigen::internal::Packet2d& x) { return Eigen::internal::psqrt(x); }
#endif

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
  // Flips the sign bit, as the scalar -x does: not Eigen's pnegate, which is 0 - x for AVX
  // and AVX-512 (so +0 stays +0 there, while -x of a scalar +0 is -0).
  friend SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack operator-(Pack a) {
    if constexpr (size == 1)  // the packet is T itself
      return -a.v;
    else
      return Eigen::internal::pxor(a.v, Eigen::internal::pset1<packet>(T(-0.0)));
  }
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack& operator+=(Pack b) { return *this = *this + b; }
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack& operator-=(Pack b) { return *this = *this - b; }
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack& operator*=(Pack b) { return *this = *this * b; }

  friend SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack sqrt(Pack a) { return exact_sqrt(a.v); }
  // As math::max and the GPU's: a < b ? b : a, so a NaN takes the same side in every lane
  // (the instruction set's max would return its second operand).
  friend SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack max(Pack a, Pack b) {
    return Eigen::internal::pselect(Eigen::internal::pcmp_lt(a.v, b.v), b.v, a.v);
  }
  // As math::min: b < a ? b : a.
  friend SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack min(Pack a, Pack b) {
    return Eigen::internal::pselect(Eigen::internal::pcmp_lt(b.v, a.v), b.v, a.v);
  }
  // As math::sign: +1, -1, or a * 0 (a signed zero stays, a NaN stays NaN), like numpy.sign.
  friend SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE Pack sign(Pack a) {
    using namespace Eigen::internal;
    const packet zero = pzero(a.v), one = pset1<packet>(T(1));
    return pselect(pcmp_lt(zero, a.v), one, pselect(pcmp_lt(a.v, zero), pnegate(one), pmul(a.v, zero)));
  }
};

}  // namespace slowmo::detail
