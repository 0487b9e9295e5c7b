// slowmo/compress/detail/select.hpp — top-k selection by magnitude without sorting: a
// histogram of the magnitudes' leading bits finds the bucket of the k-th largest, then
// std::nth_element finds it among that bucket's entries only, then one scan emits the
// selected indices in ascending order.
//
// The order is total and deterministic: larger |x| first, ties to the lower index. |x| is
// compared through its bit pattern (sign cleared) as an unsigned integer, which orders
// non-negative IEEE values exactly as their values and puts NaN above infinity, so a NaN
// cannot break the strict weak ordering nth_element needs.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace slowmo::compress::detail {

template <class T>
using key_type = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;

template <class T>
inline key_type<T> magnitude_key(T x) {
  return std::bit_cast<key_type<T>>(x) & (~key_type<T>(0) >> 1);
}

template <class T>
class TopKSelector {
 public:
  /// Reserves the scratch for segments of up to `len` entries (the only allocation).
  void reserve(std::size_t len) {
    if (cand_.size() < len) cand_.resize(len);
    if (hist_.size() < (std::size_t(1) << max_bits)) hist_.resize(std::size_t(1) << max_bits);
  }

  /// Writes to out the indices base + i of the k entries of x[0, len) of largest magnitude
  /// (ties to the lower index) whose value is not zero, in ascending order; returns how many.
  /// Needs reserve(len) first.
  std::size_t select(const T* x, std::size_t len, std::size_t k, std::int32_t base, std::int32_t* out) {
    using K = key_type<T>;
    std::size_t c = 0;
    if (k >= len) {  // everything that is not zero
      for (std::size_t i = 0; i < len; ++i)
        if (magnitude_key(x[i]) != 0) out[c++] = base + static_cast<std::int32_t>(i);
      return c;
    }
    const std::size_t pivot = kth(x, len, k);
    const K pk = magnitude_key(x[pivot]);
    for (std::size_t i = 0; i < len; ++i) {
      const K kk = magnitude_key(x[i]);
      if (kk != 0 && (kk > pk || (kk == pk && i <= pivot))) out[c++] = base + static_cast<std::int32_t>(i);
    }
    return c;
  }

 private:
  static constexpr int max_bits = 16;
  static constexpr int key_bits = int(sizeof(T) * 8 - 1);

  /// The index of the k-th entry (1-based, k < len) in the order "larger magnitude, then
  /// lower index".
  std::size_t kth(const T* x, std::size_t len, std::size_t k) {
    auto before = [x](std::int32_t a, std::int32_t b) {
      const auto ka = magnitude_key(x[a]), kb = magnitude_key(x[b]);
      return ka > kb || (ka == kb && a < b);
    };
    if (len <= 512) {  // small: nth_element over all of it
      for (std::size_t i = 0; i < len; ++i) cand_[i] = static_cast<std::int32_t>(i);
      std::nth_element(cand_.begin(), cand_.begin() + std::ptrdiff_t(k - 1), cand_.begin() + std::ptrdiff_t(len),
                       before);
      return std::size_t(cand_[k - 1]);
    }
    // About len/4 buckets (2^8 to 2^16) on the leading bits of the key: exponent and the
    // first mantissa bits.
    const int bits = std::clamp(int(std::bit_width(len)) - 2, 8, max_bits);
    const int shift = key_bits - bits;
    const std::size_t buckets = std::size_t(1) << bits;
    std::fill(hist_.begin(), hist_.begin() + std::ptrdiff_t(buckets), 0u);
    for (std::size_t i = 0; i < len; ++i) ++hist_[std::size_t(magnitude_key(x[i]) >> shift)];
    std::size_t above = 0, b = buckets - 1;
    for (;; --b) {
      if (above + hist_[b] >= k) break;
      above += hist_[b];
    }
    std::size_t c = 0;
    for (std::size_t i = 0; i < len; ++i)
      if (std::size_t(magnitude_key(x[i]) >> shift) == b) cand_[c++] = static_cast<std::int32_t>(i);
    const std::size_t r = k - above;  // 1 <= r <= hist[b] = c
    std::nth_element(cand_.begin(), cand_.begin() + std::ptrdiff_t(r - 1), cand_.begin() + std::ptrdiff_t(c), before);
    return std::size_t(cand_[r - 1]);
  }

  std::vector<std::int32_t> cand_;
  std::vector<std::uint32_t> hist_;
};

}  // namespace slowmo::compress::detail
