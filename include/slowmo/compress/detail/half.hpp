// slowmo/compress/detail/half.hpp — IEEE binary16 (fp16) and bfloat16 (bf16) encodings,
// rounded to nearest, ties to even, with overflow to infinity, subnormals and quiet NaN.
//
// Two implementations: a generic one from double through frexp/ldexp/nearbyint (any exponent
// and mantissa width; exact for every double, so no double rounding when T is double) and
// bit-level fast paths from float. The tests check that both agree.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace slowmo::compress::detail {

/// A 16-bit format: E exponent bits, M mantissa bits (fp16: 5, 10; bf16: 8, 7).
template <int E, int M>
struct HalfFormat {
  static_assert(E + M == 15);
  static constexpr int bias = (1 << (E - 1)) - 1;
  static constexpr int emin = 1 - bias;  // the exponent of the least normal
  static constexpr int emax = bias;
  static constexpr std::uint32_t exp_mask = (1u << E) - 1;

  /// x rounded to nearest even (exact scalings by powers of two, one nearbyint).
  static std::uint16_t encode(double x) {
    const std::uint32_t sign = std::signbit(x) ? 0x8000u : 0u;
    if (std::isnan(x)) return static_cast<std::uint16_t>(sign | (exp_mask << M) | (1u << (M - 1)));
    const double a = std::fabs(x);
    if (std::isinf(a)) return static_cast<std::uint16_t>(sign | (exp_mask << M));
    if (a == 0) return static_cast<std::uint16_t>(sign);
    int e = 0;
    std::frexp(a, &e);                             // a in [2^(e-1), 2^e)
    int q = std::max(e - 1, emin) - M;             // the spacing of the format around a is 2^q
    double r = std::nearbyint(std::ldexp(a, -q));  // in quanta; default mode: ties to even
    if (r == std::ldexp(1.0, M + 1)) {             // rounded up to the next binade
      r = std::ldexp(1.0, M);
      ++q;
    }
    const auto ri = static_cast<std::uint32_t>(r);
    if (ri < (1u << M)) return static_cast<std::uint16_t>(sign | ri);  // subnormal (or zero)
    const int exponent = q + M;
    if (exponent > emax) return static_cast<std::uint16_t>(sign | (exp_mask << M));  // overflow
    return static_cast<std::uint16_t>(sign | (std::uint32_t(exponent + bias) << M) | (ri - (1u << M)));
  }

  static double decode(std::uint16_t h) {
    const bool negative = (h & 0x8000u) != 0;
    const std::uint32_t ef = (h >> M) & exp_mask, mf = h & ((1u << M) - 1);
    double v;
    if (ef == exp_mask)
      v = mf != 0 ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
    else if (ef == 0)
      v = std::ldexp(double(mf), emin - M);
    else
      v = std::ldexp(double(mf + (1u << M)), int(ef) - bias - M);
    return negative ? -v : v;
  }
};

using Fp16 = HalfFormat<5, 10>;
using Bf16 = HalfFormat<8, 7>;

// ---- fast paths from and to float ----

inline std::uint16_t bf16_from_float(float f) {
  const auto x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((x >> 16) | 0x0040u);  // quiet NaN
  // Adding 0x7FFF plus the lowest kept bit rounds to nearest even; a carry into the exponent
  // is the correct rounding up, to infinity included.
  return static_cast<std::uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}
inline float float_from_bf16(std::uint16_t h) { return std::bit_cast<float>(std::uint32_t(h) << 16); }

// Both written with masks rather than branches or selects, so that compilers vectorize their
// loops (GCC leaves a loop with conditionals scalar).
inline std::uint32_t mask_if(bool c) { return 0u - std::uint32_t(c); }

inline std::uint16_t fp16_from_float(float f) {
  std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7FFFFFFFu;
  // >= 2^16 (rounds to infinity), infinity: 0x7C00; NaN: 0x7E00.
  const auto xs = static_cast<std::int32_t>(x);  // sign cleared: signed compares (SSE2 has no unsigned ones)
  const std::uint32_t big = 0x7C00u | (mask_if(xs > 0x7F800000) & 0x0200u);
  // Below 2^-14, a subnormal half (or zero): adding 0.5 puts the units of 2^-24 in the low
  // mantissa bits, rounded to nearest even by the addition itself (1024 units, the least
  // normal, is also the right code).
  const std::uint32_t tiny = std::bit_cast<std::uint32_t>(std::bit_cast<float>(x) + 0.5f) - 0x3F000000u;
  // Normal: rebias the exponent (127 -> 15), round the mantissa 23 -> 10 bits to even; a carry
  // into the exponent is the correct rounding up.
  const std::uint32_t xn = x - (112u << 23);
  const std::uint32_t normal = (xn + 0xFFFu + ((xn >> 13) & 1u)) >> 13;
  const std::uint32_t is_big = mask_if(xs >= 0x47800000), is_tiny = mask_if(xs < 0x38800000);
  const std::uint32_t h = (big & is_big) | (tiny & is_tiny) | (normal & ~(is_big | is_tiny));
  return static_cast<std::uint16_t>(sign | h);
}
inline float float_from_fp16(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t em = std::uint32_t(h & 0x7FFFu) << 13;  // exponent and mantissa at float's places
  // Times 2^112 rebiases the exponent (15 -> 127); exact, for subnormal halves too.
  const std::uint32_t scaled = std::bit_cast<std::uint32_t>(std::bit_cast<float>(em) * 0x1.0p112f);
  const std::uint32_t special = mask_if((h & 0x7C00u) == 0x7C00u);  // infinity, NaN (payload kept)
  return std::bit_cast<float>(sign | (scaled & ~special) | ((0x7F800000u | em) & special));
}

}  // namespace slowmo::compress::detail
