// slowmo/compress/detail/common.hpp — what the compressors share: counter-based random
// numbers (bit-reproducible from (seed, round, rank) alone), the k of a fraction, byte and
// bit packing of messages, and the checks every compressor makes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string_view>
#include <type_traits>

#include "slowmo/core/error.hpp"

namespace slowmo::compress::detail {

using slowmo::detail::concat;
using slowmo::detail::finite;

/// slowmo::detail::require_option for the compressors: "slowmo::compress::<owner>: option ...".
template <class Value>
void require_option(bool ok, std::string_view owner, std::string_view field, const Value& value, std::string_view why) {
  if (!ok) slowmo::detail::require_option(false, concat("compress::", owner), field, value, why);
}

// ---- random numbers ----------------------------------------------------------------------
// SplitMix64 (Steele, Lea, Flood 2014): the i-th output from state s is mix64(s + (i+1) g),
// so any element's draw is computed directly (counter-based) and nothing depends on how
// many numbers were drawn before: no generator state to checkpoint.

inline constexpr std::uint64_t golden = 0x9E3779B97F4A7C15ull;

constexpr std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// A stream key for (seed, round, rank, tag): distinct tuples give unrelated streams.
constexpr std::uint64_t stream_key(std::uint64_t seed, std::int64_t round, std::int64_t rank, std::uint64_t tag) {
  std::uint64_t h = mix64(seed ^ mix64(tag + golden));
  h = mix64(h ^ (static_cast<std::uint64_t>(round) + 2 * golden));
  h = mix64(h ^ (static_cast<std::uint64_t>(rank) + 3 * golden));
  return h;
}

/// The i-th 64-bit draw of stream `key`.
constexpr std::uint64_t draw(std::uint64_t key, std::uint64_t i) { return mix64(key + (i + 1) * golden); }

/// A draw as a double in [0, 1), on the 2^-53 grid.
constexpr double unit(std::uint64_t x) {
  return double(std::int64_t(x >> 11)) * 0x1.0p-53;
}  // (signed: one instruction)

/// The high 64 bits of a * b (portable: no __int128).
constexpr std::uint64_t mulhi(std::uint64_t a, std::uint64_t b) {
  const std::uint64_t al = a & 0xFFFFFFFFu, ah = a >> 32, bl = b & 0xFFFFFFFFu, bh = b >> 32;
  const std::uint64_t p0 = al * bl, p1 = al * bh, p2 = ah * bl, p3 = ah * bh;
  const std::uint64_t mid = (p0 >> 32) + (p1 & 0xFFFFFFFFu) + (p2 & 0xFFFFFFFFu);
  return p3 + (p1 >> 32) + (p2 >> 32) + (mid >> 32);
}

/// A draw as an integer in [0, bound) (Lemire's multiply-shift; bias below 2^-64 * bound).
constexpr std::uint64_t below(std::uint64_t x, std::uint64_t bound) { return mulhi(x, bound); }

/// A standard normal from two draws (Box-Muller).
inline double normal(std::uint64_t a, std::uint64_t b) {
  const double u1 = 1.0 - unit(a);  // (0, 1]: the logarithm is finite
  const double u2 = unit(b);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Tags of the streams, one per use.
inline constexpr std::uint64_t tag_random_k = 1, tag_qsgd = 2, tag_power_sgd = 3;

// ---- options -----------------------------------------------------------------------------

/// The fraction/k pair of the sparsifiers: k > 0 wins; k = 0 means "from fraction".
inline void validate_count(std::string_view owner, double fraction, std::int64_t k) {
  require_option(finite(fraction) && fraction > 0 && fraction <= 1, owner, "fraction", fraction,
                 "must be in (0, 1] (the share of entries sent)");
  require_option(k >= 0, owner, "k", k, "must be in (0, n] (entries sent), or 0 to take k from fraction");
}

/// k for a vector (or chunk) of n entries: k itself if given (k <= n checked by the caller),
/// else max(1, round(fraction * n)).
inline std::size_t count_of(double fraction, std::int64_t k, std::size_t n) {
  if (k > 0) return static_cast<std::size_t>(k);
  const auto r = static_cast<std::size_t>(std::llround(fraction * double(n)));
  return std::clamp<std::size_t>(r, 1, std::max<std::size_t>(n, 1));
}

/// A compressor's vectors: non-empty, and the residual empty or of the vector's size.
inline void check_sizes(std::string_view owner, std::string_view call, std::size_t n, std::size_t other,
                        std::string_view other_name, bool other_may_be_empty) {
  if (n == 0)
    throw size_mismatch(
        concat("slowmo::compress::", owner, "::", call, ": the vector is empty; pass at least one element"));
  if (other != n && !(other_may_be_empty && other == 0))
    throw size_mismatch(concat("slowmo::compress::", owner, "::", call, ": ", other_name, " has ", other,
                               " elements but the vector has ", n,
                               other_may_be_empty ? " (pass an empty span for no residual)" : ""));
}

/// Decoded messages name the worker that sent something this one cannot read: a worker that
/// reduces a vector of another size, typically.
[[noreturn]] inline void bad_message(std::string_view owner, int from, std::string_view what) {
  throw comm_error(concat("slowmo::compress::", owner, ": the message of worker ", from, " ", what,
                          "; every worker must reduce a vector of the same size with the same options"));
}

// ---- bytes -------------------------------------------------------------------------------

template <class V>
void put(std::uint8_t*& out, const V& v) {
  std::memcpy(out, &v, sizeof v);
  out += sizeof v;
}
template <class V>
V get(const std::uint8_t*& in) {
  V v;
  std::memcpy(&v, in, sizeof v);
  in += sizeof v;
  return v;
}

/// Little-endian bit stream of fixed-width codes (width <= 32): code j occupies bits
/// [j w, (j+1) w) of the stream, bit b of the stream is bit b % 8 of byte b / 8.
class BitWriter {
 public:
  explicit BitWriter(std::uint8_t* out) : out_(out) {}
  void put(std::uint32_t code, int width) {
    acc_ |= std::uint64_t(code) << bits_;
    bits_ += width;
    if (bits_ >= 32) {  // four bytes at once (one store on little-endian machines)
      const auto w = static_cast<std::uint32_t>(acc_);
      out_[0] = static_cast<std::uint8_t>(w);
      out_[1] = static_cast<std::uint8_t>(w >> 8);
      out_[2] = static_cast<std::uint8_t>(w >> 16);
      out_[3] = static_cast<std::uint8_t>(w >> 24);
      out_ += 4;
      acc_ >>= 32;
      bits_ -= 32;
    }
  }
  /// Writes the last bytes (the last one zero-padded); returns one past the last byte written.
  std::uint8_t* finish() {
    for (; bits_ > 0; bits_ -= 8) {
      *out_++ = static_cast<std::uint8_t>(acc_);
      acc_ >>= 8;
    }
    bits_ = 0;
    return out_;
  }

 private:
  std::uint8_t* out_;
  std::uint64_t acc_ = 0;
  int bits_ = 0;
};

/// Reads what BitWriter wrote, never past `end`.
class BitReader {
 public:
  BitReader(const std::uint8_t* in, const std::uint8_t* end) : in_(in), end_(end) {}
  std::uint32_t get(int width) {
    if (bits_ < width)
      for (; bits_ <= 56 && in_ != end_; bits_ += 8) acc_ |= std::uint64_t(*in_++) << bits_;
    const auto v = static_cast<std::uint32_t>(acc_ & ((std::uint64_t(1) << width) - 1));
    acc_ >>= width;
    bits_ -= width;
    return v;
  }

 private:
  const std::uint8_t* in_;
  const std::uint8_t* end_;
  std::uint64_t acc_ = 0;
  int bits_ = 0;
};

constexpr std::size_t bytes_for_bits(std::size_t bits) { return (bits + 7) / 8; }

/// The engine's mean: the rank-order sum, then divided (not multiplied by 1/m) by m.
template <class T>
void divide(std::span<T> out, int m) {
  if (m == 1) return;
  const T d = static_cast<T>(m);
  for (T& v : out) v /= d;
}

}  // namespace slowmo::compress::detail
