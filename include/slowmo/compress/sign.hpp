// slowmo/compress/sign.hpp — SignScale: the scaled sign of EF-signSGD (Karimireddy et al.
// 2019, "Error Feedback Fixes SignSGD and other Gradient Compression Schemes"):
// C(p) = ||p||_1 / n * sign(p), one bit per entry and one scale per worker.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "slowmo/compress/detail/common.hpp"
#include "slowmo/compress/round.hpp"
#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"

namespace slowmo::compress {

/// Options of SignScale (none: the compressor has no parameter).
struct SignScaleOptions {};

/// C(p)_i = s if p_i >= 0 (zero included: one bit has no third value), -s if p_i < 0, with
/// s = ||p||_1 / n. Then ||C(p) - p||^2 = ||p||^2 - ||p||_1^2 / n exactly (zeros included),
/// the contraction of the paper's Lemma with delta = ||p||_1^2 / (n ||p||_2^2).
///
/// reduce(): one all_gather of sizeof(T) + ceil(n / 8) bytes per worker (the scale, then the
/// sign bits, 1 for negative, little-endian within each byte); every worker adds the
/// decoded +-s_j in rank order and divides by m. A ring all-gather sends (m - 1) such
/// messages per worker: (m - 1)(sizeof(T) + n / 8) bytes, against 2 (m-1)/m n sizeof(T) for
/// a dense ring all-reduce: 1/64 of it (float) times m.
template <Real T>
class SignScale {
 public:
  using scalar_type = T;
  using options_type = SignScaleOptions;

  explicit SignScale(slowmo::detail::DefaultOptions = {}) {}
  explicit SignScale(SignScaleOptions) {}

  void prepare(std::size_t n) {
    if (n == n_) return;
    message_ = sizeof(T) + detail::bytes_for_bits(n);
    send_.assign(message_, 0);
    recv_.clear();
    n_ = n;
  }

  void compress(std::span<const T> p, std::span<T> out, const Round& = {}) {
    detail::check_sizes("SignScale", "compress", p.size(), out.size(), "out", false);
    prepare(p.size());
    const T s = scale(p);
    for (std::size_t i = 0; i < p.size(); ++i) out[i] = p[i] < T(0) ? -s : s;
  }

  template <class Comm>
  void reduce(std::span<T> p, std::span<T> residual, Comm& comm, const Round& = {}) {
    static_assert(GatherCommunicator<Comm>,
                  "slowmo::compress::SignScale needs a GatherCommunicator: it sends its bits with all_gather");
    detail::check_sizes("SignScale", "reduce", p.size(), residual.size(), "residual", true);
    prepare(p.size());
    const std::size_t n = p.size();
    const int m = comm.size();
    if (recv_.size() != std::size_t(m) * message_) recv_.assign(std::size_t(m) * message_, 0);
    const T s = scale(p);
    std::uint8_t* out = send_.data();
    detail::put(out, s);
    std::size_t b = 0;
    for (; b + 8 <= n; b += 8) {
      unsigned byte = 0;
      for (std::size_t t = 0; t < 8; ++t) byte |= unsigned(p[b + t] < T(0)) << t;
      *out++ = static_cast<std::uint8_t>(byte);
    }
    if (b < n) {
      unsigned byte = 0;
      for (std::size_t t = 0; b + t < n; ++t) byte |= unsigned(p[b + t] < T(0)) << t;
      *out++ = static_cast<std::uint8_t>(byte);
    }
    if (!residual.empty())
      for (std::size_t i = 0; i < n; ++i) residual[i] = p[i] - (p[i] < T(0) ? -s : s);
    comm.all_gather(std::span<const std::uint8_t>(send_), std::span<std::uint8_t>(recv_));
    std::fill(p.begin(), p.end(), T(0));
    for (int r = 0; r < m; ++r) {
      const std::uint8_t* in = recv_.data() + std::size_t(r) * message_;
      const T sr = detail::get<T>(in);
      // +-s_r as s_r times a row of +-1 (exact), eight entries per byte of signs.
      std::size_t i = 0;
      for (; i + 8 <= n; i += 8) {
        const auto& row = signs()[*in++];
        for (std::size_t t = 0; t < 8; ++t) p[i + t] += sr * row[t];
      }
      if (i < n) {
        const auto& row = signs()[*in++];
        for (std::size_t t = 0; i + t < n; ++t) p[i + t] += sr * row[t];
      }
    }
    detail::divide(p, m);
  }

  template <class V>
  void visit_state(V&&, const StateScope* = nullptr) {}
  template <class V>
  void visit_state(V&&, const StateScope* = nullptr) const {}
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"compressor", scope}, "SignScale");
  }

 private:
  /// signs()[byte][t] = -1 if bit t of byte is set, else +1.
  static const std::array<std::array<T, 8>, 256>& signs() {
    static constexpr std::array<std::array<T, 8>, 256> table = [] {
      std::array<std::array<T, 8>, 256> out{};
      for (unsigned byte = 0; byte < 256; ++byte)
        for (unsigned t = 0; t < 8; ++t) out[byte][t] = (byte >> t & 1u) ? T(-1) : T(1);
      return out;
    }();
    return table;
  }

  static T scale(std::span<const T> p) {
    const Eigen::Map<const Vector<T>> v(p.data(), Eigen::Index(p.size()));
    return v.cwiseAbs().sum() / T(p.size());
  }

  std::size_t n_ = 0, message_ = 0;
  std::vector<std::uint8_t> send_, recv_;
};

}  // namespace slowmo::compress
