// slowmo/core/math.hpp — the few scalar functions the update rules call, usable in host
// and device code. The SIMD overloads live next to detail::Pack and are found by ADL.
#pragma once

#include <cmath>

#include "slowmo/core/config.hpp"

namespace slowmo::math {

SLOWMO_HOST_DEVICE inline float sqrt(float x) { return ::sqrtf(x); }
SLOWMO_HOST_DEVICE inline double sqrt(double x) { return ::sqrt(x); }
template <class T>
SLOWMO_HOST_DEVICE inline T max(T a, T b) {
  return a < b ? b : a;
}
/// b < a ? b : a: a NaN a stays, as in max.
template <class T>
SLOWMO_HOST_DEVICE inline T min(T a, T b) {
  return b < a ? b : a;
}

/// +1 for a > 0, -1 for a < 0, and a * 0 otherwise (a signed zero stays; NaN stays NaN), as
/// numpy.sign.
template <class T>
SLOWMO_HOST_DEVICE inline T sign(T a) {
  return a > T(0) ? T(1) : (a < T(0) ? T(-1) : a * T(0));
}

/// a + w*(b - a), exact at both ends (w = 0 gives a, w = 1 gives b), the same two-sided
/// formula as torch.lerp. Lookahead and the outer updates use it so that alpha = 1 is
/// bit-for-bit "take the fast weights".
template <class V, class T>
SLOWMO_HOST_DEVICE inline V lerp(const V& a, const V& b, T w) {
  return w < T(0.5) ? V(a + V(w) * (b - a)) : V(b - V(T(1) - w) * (b - a));
}

}  // namespace slowmo::math
