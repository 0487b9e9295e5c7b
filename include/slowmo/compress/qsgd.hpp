// slowmo/compress/qsgd.hpp — Qsgd: stochastic quantisation to s levels (Alistarh et al. 2017,
// "QSGD: Communication-Efficient SGD via Gradient Quantization and Encoding").
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
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

/// Options of Qsgd.
struct QsgdOptions {
  /// s, the number of non-zero levels: |p_i| / norm is rounded to a multiple of 1/s. In [1, 65535].
  std::int64_t levels = 7;
  /// > 0: one norm per run of `bucket` consecutive entries (the paper's bucketing; its variance
  /// bound min(b/s^2, sqrt(b)/s) then holds per bucket of b); 0: one norm for the whole vector.
  std::int64_t bucket = 0;
};

/// Q(p)_i = norm / s * sign(p_i) * l_i, l_i = floor(s |p_i| / norm + u_i), u_i ~ U[0, 1):
/// l_i is s|p_i|/norm rounded up with probability its fractional part, so E[Q(p)] = p. norm
/// is ||p||_2 (of the bucket). The u_i come from (seed, round, rank): a run is
/// bit-reproducible, and workers draw independently. A non-finite norm decodes to NaN.
///
/// reduce(): one all_gather per worker of (number of buckets) sizeof(T) bytes of norms, then
/// n codes of 1 + bit_width(s) bits (sign, level; 4 bits for the default s = 7), packed
/// little-endian. Every worker decodes in rank order and divides by m. A ring all-gather
/// sends (m - 1) such messages per worker.
template <Real T>
class Qsgd {
 public:
  using scalar_type = T;
  using options_type = QsgdOptions;

  explicit Qsgd(slowmo::detail::DefaultOptions = {}) : Qsgd(QsgdOptions{}) {}
  explicit Qsgd(QsgdOptions options)
      : options_(validated(options)), width_(1 + int(std::bit_width(std::uint64_t(options.levels)))) {}

  const QsgdOptions& options() const { return options_; }
  /// Bits per entry: one for the sign, bit_width(levels) for the level.
  int code_bits() const { return width_; }

  void prepare(std::size_t n) {
    if (n == n_) return;
    bucket_ = options_.bucket > 0 ? std::min<std::size_t>(std::size_t(options_.bucket), n) : n;
    buckets_ = (n + bucket_ - 1) / bucket_;
    message_ = buckets_ * sizeof(T) + detail::bytes_for_bits(n * std::size_t(width_));
    send_.assign(message_, 0);
    recv_.clear();
    norms_.assign(buckets_, T(0));
    n_ = n;
  }

  void compress(std::span<const T> p, std::span<T> out, const Round& round = {}) {
    detail::check_sizes("Qsgd", "compress", p.size(), out.size(), "out", false);
    prepare(p.size());
    encode(p, round, [&](std::size_t i, T v) { out[i] = v; });
  }

  template <class Comm>
  void reduce(std::span<T> p, std::span<T> residual, Comm& comm, const Round& round = {}) {
    static_assert(GatherCommunicator<Comm>,
                  "slowmo::compress::Qsgd needs a GatherCommunicator: it sends its codes with all_gather");
    detail::check_sizes("Qsgd", "reduce", p.size(), residual.size(), "residual", true);
    prepare(p.size());
    const int m = comm.size();
    if (recv_.size() != std::size_t(m) * message_) recv_.assign(std::size_t(m) * message_, 0);
    if (residual.empty())
      encode(p, round, [](std::size_t, T) {});
    else
      encode(p, round, [&](std::size_t i, T v) { residual[i] = p[i] - v; });
    comm.all_gather(std::span<const std::uint8_t>(send_), std::span<std::uint8_t>(recv_));
    std::fill(p.begin(), p.end(), T(0));
    const T s = T(options_.levels);
    for (int r = 0; r < m; ++r) {
      const std::uint8_t* in = recv_.data() + std::size_t(r) * message_;
      for (std::size_t b = 0; b < buckets_; ++b) norms_[b] = detail::get<T>(in);
      detail::BitReader bits(in, recv_.data() + std::size_t(r + 1) * message_);
      for (std::size_t b = 0; b < buckets_; ++b) {
        const T step = norms_[b] / s;
        const std::size_t end = std::min(p.size(), (b + 1) * bucket_);
        for (std::size_t i = b * bucket_; i < end; ++i) p[i] += decoded(bits.get(width_), step);
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
    f(StateKey{"compressor", scope}, "Qsgd");  // (levels and bucket are plain hyper-parameters)
  }

 private:
  static QsgdOptions validated(const QsgdOptions& o) {
    detail::require_option(o.levels >= 1 && o.levels <= 65535, "Qsgd", "levels", o.levels,
                           "must be in [1, 65535] (the number of non-zero levels s)");
    detail::require_option(o.bucket >= 0, "Qsgd", "bucket", o.bucket,
                           "must be 0 (one norm for the whole vector) or a bucket length >= 1");
    return o;
  }

  /// code = level << 1 | negative.
  static T decoded(std::uint32_t code, T step) {
    const T v = step * T(code >> 1);
    return (code & 1u) ? -v : v;
  }

  /// Writes the message; calls put(i, Q(p)_i) for every i (the value every worker decodes).
  template <class Put>
  void encode(std::span<const T> p, const Round& round, Put&& put) {
    const std::uint64_t key = detail::stream_key(round.seed, round.round, round.rank, detail::tag_qsgd);
    const double s = double(options_.levels);
    const auto top = static_cast<std::uint32_t>(options_.levels);
    std::uint8_t* out = send_.data();
    for (std::size_t b = 0; b < buckets_; ++b) {
      const std::size_t begin = b * bucket_, len = std::min(bucket_, p.size() - begin);
      norms_[b] = Eigen::Map<const Vector<T>>(p.data() + begin, Eigen::Index(len)).norm();
      detail::put(out, norms_[b]);
    }
    detail::BitWriter bits(out);
    for (std::size_t b = 0; b < buckets_; ++b) {
      const T norm = norms_[b];
      const bool usable = norm > T(0) && std::isfinite(norm);  // else every level is 0: 0 or NaN (norm * 0)
      const T step = norm / T(options_.levels);
      const double per = usable ? s / double(norm) : 0.0;
      const std::size_t end = std::min(p.size(), (b + 1) * bucket_);
      for (std::size_t i = b * bucket_; i < end; ++i) {
        std::uint32_t level = 0;
        if (usable) {
          // In double, so that r + u never rounds past the next integer (that would bias).
          const double r = double(std::fabs(p[i])) * per;
          // floor by truncation: r + u >= 0 (and SSE2 truncates without a libm call)
          level = std::min(static_cast<std::uint32_t>(r + detail::unit(detail::draw(key, i))), top);
        }
        const std::uint32_t code = level << 1 | (unsigned(level != 0) & unsigned(p[i] < T(0)));
        bits.put(code, width_);
        put(i, decoded(code, step));
      }
    }
    bits.finish();
  }

  QsgdOptions options_;
  int width_;
  std::size_t n_ = 0, bucket_ = 0, buckets_ = 0, message_ = 0;
  std::vector<T> norms_;
  std::vector<std::uint8_t> send_, recv_;
};

}  // namespace slowmo::compress
