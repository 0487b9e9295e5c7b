// slowmo/compress/low_precision.hpp — LowPrecision: send bf16 or fp16, add in full precision.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "slowmo/compress/detail/common.hpp"
#include "slowmo/compress/detail/half.hpp"
#include "slowmo/compress/round.hpp"
#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"

namespace slowmo::compress {

/// A 16-bit floating-point format.
enum class HalfFormat {
  bf16,  ///< bfloat16: float's 8 exponent bits, 7 mantissa bits (range of float, 2-3 digits)
  fp16,  ///< IEEE binary16: 5 exponent bits, 10 mantissa bits (max 65504, subnormals below 2^-14)
};

inline constexpr std::string_view to_string(HalfFormat f) { return f == HalfFormat::bf16 ? "bf16" : "fp16"; }

struct LowPrecisionOptions {
  HalfFormat format = HalfFormat::bf16;
};

/// C(p) = p rounded to the format (nearest, ties to even; fp16 overflows to infinity beyond
/// 65519.99..., bf16 beyond float's range), as a T again.
///
/// reduce(): one all_gather of 2 n bytes per worker (the 16-bit codes as bytes); every worker
/// decodes every block and adds in T (fp32 for float) in rank order, then divides by m.
/// Honest cost: a ring all-gather sends (m - 1) blocks per worker, 2 n (m - 1) bytes, while a
/// dense fp32 ring all-reduce sends 2 (m - 1)/m 4 n = 8 n (m - 1)/m: the ratio is m / 4. So
/// this halves the bytes on 2 workers, breaks even on 4, and costs more beyond (the price of
/// adding in full precision: a 16-bit all-reduce would have to add in 16 bits).
template <Real T>
class LowPrecision {
 public:
  using scalar_type = T;
  using options_type = LowPrecisionOptions;

  explicit LowPrecision(slowmo::detail::DefaultOptions = {}) : LowPrecision(LowPrecisionOptions{}) {}
  explicit LowPrecision(LowPrecisionOptions options) : options_(validated(options)) {}

  const LowPrecisionOptions& options() const { return options_; }

  /// The 16-bit code of x, and the value of a code, in this compressor's format.
  std::uint16_t encode(T x) const {
    return options_.format == HalfFormat::bf16 ? enc<HalfFormat::bf16>(x) : enc<HalfFormat::fp16>(x);
  }
  T decode(std::uint16_t h) const {
    return options_.format == HalfFormat::bf16 ? dec<HalfFormat::bf16>(h) : dec<HalfFormat::fp16>(h);
  }

  void prepare(std::size_t n) {
    if (n == n_) return;
    send_.assign(2 * n, 0);
    recv_.clear();
    n_ = n;
  }

  void compress(std::span<const T> p, std::span<T> out, const Round& = {}) {
    detail::check_sizes("LowPrecision", "compress", p.size(), out.size(), "out", false);
    if (options_.format == HalfFormat::bf16)
      for (std::size_t i = 0; i < p.size(); ++i) out[i] = dec<HalfFormat::bf16>(enc<HalfFormat::bf16>(p[i]));
    else
      for (std::size_t i = 0; i < p.size(); ++i) out[i] = dec<HalfFormat::fp16>(enc<HalfFormat::fp16>(p[i]));
  }

  template <class Comm>
  void reduce(std::span<T> p, std::span<T> residual, Comm& comm, const Round& = {}) {
    static_assert(GatherCommunicator<Comm>,
                  "slowmo::compress::LowPrecision needs a GatherCommunicator: it sends its codes with all_gather");
    detail::check_sizes("LowPrecision", "reduce", p.size(), residual.size(), "residual", true);
    prepare(p.size());
    const std::size_t n = p.size();
    const int m = comm.size();
    if (recv_.size() != std::size_t(m) * 2 * n) recv_.assign(std::size_t(m) * 2 * n, 0);
    if (options_.format == HalfFormat::bf16)
      encode_all<HalfFormat::bf16>(p, residual);
    else
      encode_all<HalfFormat::fp16>(p, residual);
    comm.all_gather(std::span<const std::uint8_t>(send_), std::span<std::uint8_t>(recv_));
    std::fill(p.begin(), p.end(), T(0));
    for (int r = 0; r < m; ++r) {
      const std::uint8_t* in = recv_.data() + std::size_t(r) * 2 * n;
      if (options_.format == HalfFormat::bf16)
        add_all<HalfFormat::bf16>(in, p);
      else
        add_all<HalfFormat::fp16>(in, p);
    }
    detail::divide(p, m);
  }

  template <class V>
  void visit_state(V&&, const StateScope* = nullptr) {}
  template <class V>
  void visit_state(V&&, const StateScope* = nullptr) const {}
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"compressor", scope}, "LowPrecision");  // (the format is a plain hyper-parameter)
  }

 private:
  static LowPrecisionOptions validated(const LowPrecisionOptions& o) {
    detail::require_option(o.format == HalfFormat::bf16 || o.format == HalfFormat::fp16, "LowPrecision", "format",
                           int(o.format), "must be HalfFormat::bf16 or HalfFormat::fp16");
    return o;
  }

  template <HalfFormat F>
  static std::uint16_t enc(T x) {
    if constexpr (std::is_same_v<T, float>)
      return F == HalfFormat::bf16 ? detail::bf16_from_float(x) : detail::fp16_from_float(x);
    else
      return F == HalfFormat::bf16 ? detail::Bf16::encode(x) : detail::Fp16::encode(x);
  }
  template <HalfFormat F>
  static T dec(std::uint16_t h) {
    if constexpr (std::is_same_v<T, float>)
      return F == HalfFormat::bf16 ? detail::float_from_bf16(h) : detail::float_from_fp16(h);
    else
      return F == HalfFormat::bf16 ? T(detail::Bf16::decode(h)) : T(detail::Fp16::decode(h));
  }

  template <HalfFormat F>
  void encode_all(std::span<const T> p, std::span<T> residual) {
    std::uint8_t* out = send_.data();
    if (residual.empty()) {
      for (std::size_t i = 0; i < p.size(); ++i) {
        const std::uint16_t h = enc<F>(p[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    }
    for (std::size_t i = 0; i < p.size(); ++i) {
      const std::uint16_t h = enc<F>(p[i]);
      std::memcpy(out + 2 * i, &h, 2);
      residual[i] = p[i] - dec<F>(h);
    }
  }
  template <HalfFormat F>
  static void add_all(const std::uint8_t* in, std::span<T> p) {
    for (std::size_t i = 0; i < p.size(); ++i) {
      std::uint16_t h;
      std::memcpy(&h, in + 2 * i, 2);
      p[i] += dec<F>(h);
    }
  }

  LowPrecisionOptions options_;
  std::size_t n_ = 0;
  std::vector<std::uint8_t> send_, recv_;
};

}  // namespace slowmo::compress
