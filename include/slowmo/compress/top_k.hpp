// slowmo/compress/top_k.hpp — TopK: keep the k entries of largest magnitude (Stich et al.
// 2018, "Sparsified SGD with memory"; Aji & Heafield 2017), optionally per chunk and with
// quantised values (SparseLoCo, Sarfi et al. 2025: chunk-wise top-k, 2-bit values).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <vector>

#include "slowmo/compress/detail/common.hpp"
#include "slowmo/compress/detail/select.hpp"
#include "slowmo/compress/round.hpp"
#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"

namespace slowmo::compress {

/// Options of TopK.
struct TopKOptions {
  /// The share of entries kept when k = 0: k = max(1, round(fraction * n)), n the vector's
  /// size (the chunk's, with chunk > 0). In (0, 1].
  double fraction = 0.01;
  /// > 0: keep exactly k entries (per chunk with chunk > 0); must be <= n (<= chunk). 0: from fraction.
  std::int64_t k = 0;
  /// > 0: top-k within every run of `chunk` consecutive entries (a last, shorter run keeps
  /// min(k, its length)), as SparseLoCo does; 0: over the whole vector.
  std::int64_t chunk = 0;
  /// 0: values sent exactly (T). 1, 2, 4 or 8: every worker's kept values are quantised to
  /// 2^value_bits bins (SparseLoCo's statistical quantiser, below); SparseLoCo uses 2.
  int value_bits = 0;
  /// The quantiser's range, in standard deviations of the kept values (with value_bits > 0).
  double range_in_sigmas = 6.0;
};

/// C(p) keeps the k entries of p of largest |p_i| (ties to the lower index) and zeroes the
/// others; with chunk > 0, the k largest of every chunk. Selection is a histogram of the
/// magnitudes' leading bits then std::nth_element on one bucket: O(n), never a sort.
///
/// reduce(): every worker sends its kept entries that are not zero as (std::int32_t index,
/// value) pairs by one all_gather_v of bytes (so counts may differ), and every worker
/// decodes all of them: out = 0, then worker 0's, 1's, ... values added at their indices,
/// then divided by the number of workers: the order of the engine's exact mean, so that with
/// fraction = 1 the result equals reduce::Mean bit for bit (but for the sign of zeros: +0 here).
///
/// With value_bits = b > 0 (SparseLoCo's quantiser, after tplr's code): with mu and sigma
/// the mean and the standard deviation (divided by c - 1) of the c values a worker sends, a value v
/// goes to bin q = clamp(round((v - mu) / s + 2^(b-1)), 0, 2^b - 1), s = range_in_sigmas
/// sigma / 2^b, and decodes to the mean of the values in its bin (a lookup table of 2^b
/// values sent along). Biased; error feedback absorbs the difference.
///
/// Bytes per worker message: c (4 + sizeof(T)) exact; 4 + 2^b sizeof(T) + 4c + ceil(c b / 8)
/// quantised, c <= k the kept non-zero entries. A ring all-gather then sends, per worker,
/// every message but its successor's: about (m - 1) messages, so that top-k costs
/// m k (4 + sizeof(T)) / (2 n sizeof(T)) of a dense ring all-reduce's bytes.
template <Real T>
class TopK {
 public:
  using scalar_type = T;
  using options_type = TopKOptions;

  explicit TopK(slowmo::detail::DefaultOptions = {}) : TopK(TopKOptions{}) {}
  explicit TopK(TopKOptions options) : options_(validated(options)) {}

  const TopKOptions& options() const { return options_; }

  /// Checks the options that depend on the vector's size n (k <= n; n < 2^31) and sizes the
  /// scratch for it: the only allocations (reduce and compress call it).
  void prepare(std::size_t n) {
    if (n == n_) return;
    if (n > std::size_t(std::numeric_limits<std::int32_t>::max()))
      throw size_mismatch(detail::concat("slowmo::compress::TopK: a vector of ", n,
                                         " elements has indices beyond the std::int32_t it sends (at most 2^31 - 1 "
                                         "elements); reduce it in parts"));
    const std::size_t len = options_.chunk > 0 ? std::min<std::size_t>(std::size_t(options_.chunk), n) : n;
    if (options_.chunk == 0)
      detail::require_option(options_.k <= 0 || std::size_t(options_.k) <= n, "TopK", "k", options_.k,
                             detail::concat("must be in (0, n] for a vector of n = ", n, " elements"));
    // Per segment: min(k, its length) entries.
    std::size_t most = 0;
    const std::size_t k = detail::count_of(options_.fraction, options_.k, len);
    for (std::size_t b = 0; b < n; b += len) most += std::min(k, std::min(len, n - b));
    selector_.reserve(len);
    sel_.assign(most, 0);
    vals_.assign(most, T(0));
    if (options_.value_bits > 0) codes_.assign(most, 0);
    max_bytes_ = message_bytes(most);
    send_.assign(max_bytes_, 0);
    recv_.clear();  // sized by the first reduce, for its number of workers
    k_ = k;
    len_ = len;
    n_ = n;
  }

  /// out = C(p), decoded, without communicating: what this worker contributes.
  void compress(std::span<const T> p, std::span<T> out, const Round& = {}) {
    detail::check_sizes("TopK", "compress", p.size(), out.size(), "out", false);
    prepare(p.size());
    const std::size_t c = encode(p);
    std::fill(out.begin(), out.end(), T(0));
    for (std::size_t j = 0; j < c; ++j) out[std::size_t(sel_[j])] = vals_[j];
  }

  /// p = the mean over workers of C(p_j); residual (if not empty) = p - C(p), this worker's.
  template <class Comm>
  void reduce(std::span<T> p, std::span<T> residual, Comm& comm, const Round& = {}) {
    static_assert(GatherCommunicator<Comm>,
                  "slowmo::compress::TopK needs a GatherCommunicator: it sends its entries with all_gather_v");
    detail::check_sizes("TopK", "reduce", p.size(), residual.size(), "residual", true);
    prepare(p.size());
    const int m = comm.size();
    if (recv_.size() != std::size_t(m) * max_bytes_) recv_.assign(std::size_t(m) * max_bytes_, 0);
    if (counts_.size() != std::size_t(m)) counts_.assign(std::size_t(m), 0);
    const std::size_t c = encode(p);
    if (!residual.empty()) {
      std::copy(p.begin(), p.end(), residual.begin());
      for (std::size_t j = 0; j < c; ++j) residual[std::size_t(sel_[j])] = p[std::size_t(sel_[j])] - vals_[j];
    }
    comm.all_gather_v(std::span<const std::uint8_t>(send_.data(), bytes_), std::span<std::uint8_t>(recv_),
                      std::span<std::size_t>(counts_));
    std::fill(p.begin(), p.end(), T(0));
    std::size_t at = 0;
    for (int r = 0; r < m; ++r) {
      decode(recv_.data() + at, counts_[std::size_t(r)], r, p);
      at += counts_[std::size_t(r)];
    }
    detail::divide(p, m);
  }

  template <class V>
  void visit_state(V&&, const StateScope* = nullptr) {}
  template <class V>
  void visit_state(V&&, const StateScope* = nullptr) const {}

  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    // k, chunk and value_bits decide what is sent, not what the residual means: they may change
    // when a run resumes, like an lr.
    f(StateKey{"compressor", scope}, "TopK");
  }

 private:
  static TopKOptions validated(const TopKOptions& o) {
    detail::validate_count("TopK", o.fraction, o.k);
    detail::require_option(o.chunk >= 0 && o.chunk <= std::numeric_limits<std::int32_t>::max(), "TopK", "chunk",
                           o.chunk, "must be 0 (the whole vector) or a chunk length in [1, 2^31)");
    if (o.chunk > 0)
      detail::require_option(o.k <= o.chunk, "TopK", "k", o.k,
                             detail::concat("must be in (0, chunk] with chunk = ", o.chunk, " (k counts per chunk)"));
    detail::require_option(
        o.value_bits == 0 || o.value_bits == 1 || o.value_bits == 2 || o.value_bits == 4 || o.value_bits == 8, "TopK",
        "value_bits", o.value_bits, "must be 0 (exact values), 1, 2, 4 or 8");
    detail::require_option(detail::finite(o.range_in_sigmas) && o.range_in_sigmas > 0, "TopK", "range_in_sigmas",
                           o.range_in_sigmas, "must be finite and > 0");
    return o;
  }

  int bins() const { return 1 << options_.value_bits; }
  std::size_t header_bytes() const {
    return options_.value_bits == 0 ? 0 : sizeof(std::uint32_t) + std::size_t(bins()) * sizeof(T);
  }
  std::size_t message_bytes(std::size_t c) const {
    if (options_.value_bits == 0) return c * (sizeof(std::int32_t) + sizeof(T));
    return header_bytes() + c * sizeof(std::int32_t) + detail::bytes_for_bits(c * std::size_t(options_.value_bits));
  }

  /// Selects, fills sel_ and vals_ (this worker's decoded values) and the message; returns
  /// how many entries it sends.
  std::size_t encode(std::span<const T> p) {
    const std::size_t n = p.size();
    std::size_t c = 0;
    for (std::size_t b = 0; b < n; b += len_) {
      const std::size_t len = std::min(len_, n - b);
      c += selector_.select(p.data() + b, len, std::min(k_, len), static_cast<std::int32_t>(b), sel_.data() + c);
    }
    std::uint8_t* out = send_.data();
    if (options_.value_bits == 0) {
      for (std::size_t j = 0; j < c; ++j) vals_[j] = p[std::size_t(sel_[j])];
      std::memcpy(out, sel_.data(), c * sizeof(std::int32_t));
      std::memcpy(out + c * sizeof(std::int32_t), vals_.data(), c * sizeof(T));
    } else {
      quantise(p, c);
      detail::put(out, static_cast<std::uint32_t>(c));
      for (int b = 0; b < bins(); ++b) detail::put(out, lookup_[std::size_t(b)]);
      std::memcpy(out, sel_.data(), c * sizeof(std::int32_t));
      detail::BitWriter bits(out + c * sizeof(std::int32_t));
      for (std::size_t j = 0; j < c; ++j) bits.put(codes_[j], options_.value_bits);
      bits.finish();
    }
    bytes_ = message_bytes(c);
    return c;
  }

  /// The statistical quantiser (see the class comment); in double, in index order.
  void quantise(std::span<const T> p, std::size_t c) {
    const int nb = bins();
    double mean = 0;
    for (std::size_t j = 0; j < c; ++j) mean += double(p[std::size_t(sel_[j])]);
    mean = c > 0 ? mean / double(c) : 0.0;
    double ss = 0;
    for (std::size_t j = 0; j < c; ++j) {
      const double d = double(p[std::size_t(sel_[j])]) - mean;
      ss += d * d;
    }
    const double sigma = c > 1 ? std::sqrt(ss / double(c - 1)) : 0.0;
    double scale = options_.range_in_sigmas * sigma / nb;
    if (!(scale > 0) || !std::isfinite(scale)) scale = 1.0;
    std::array<double, 256> sum{};
    std::array<std::size_t, 256> count{};
    for (std::size_t j = 0; j < c; ++j) {
      const double d = double(p[std::size_t(sel_[j])]) - mean;
      const double t = std::nearbyint(d / scale + double(nb / 2));
      const int q = t >= 0 ? (t <= double(nb - 1) ? int(t) : nb - 1) : 0;  // NaN goes to bin 0
      codes_[j] = static_cast<std::uint8_t>(q);
      sum[std::size_t(q)] += d;
      ++count[std::size_t(q)];
    }
    for (int b = 0; b < nb; ++b)
      lookup_[std::size_t(b)] =
          count[std::size_t(b)] > 0 ? T(sum[std::size_t(b)] / double(count[std::size_t(b)]) + mean) : T(0);
    for (std::size_t j = 0; j < c; ++j) vals_[j] = lookup_[codes_[j]];
  }

  /// Adds worker `from`'s message (of `bytes` bytes) into out.
  void decode(const std::uint8_t* in, std::size_t bytes, int from, std::span<T> out) const {
    const std::size_t n = out.size();
    auto index = [&](const std::uint8_t*& at) {
      const auto i = detail::get<std::int32_t>(at);
      if (i < 0 || std::size_t(i) >= n)
        detail::bad_message("TopK", from, detail::concat("holds index ", i, ", outside this worker's vector of ", n));
      return std::size_t(i);
    };
    if (options_.value_bits == 0) {
      constexpr std::size_t pair = sizeof(std::int32_t) + sizeof(T);
      if (bytes % pair != 0)
        detail::bad_message("TopK", from, detail::concat("has ", bytes, " bytes, not a whole number of pairs"));
      const std::size_t c = bytes / pair;
      const std::uint8_t* idx = in;
      const std::uint8_t* val = in + c * sizeof(std::int32_t);
      for (std::size_t j = 0; j < c; ++j) out[index(idx)] += detail::get<T>(val);
      return;
    }
    if (bytes < header_bytes()) detail::bad_message("TopK", from, detail::concat("has only ", bytes, " bytes"));
    const std::uint8_t* at = in;
    const std::size_t c = detail::get<std::uint32_t>(at);
    if (message_bytes(c) != bytes)
      detail::bad_message("TopK", from, detail::concat("has ", bytes, " bytes for ", c, " entries"));
    std::array<T, 256> lookup{};
    for (int b = 0; b < bins(); ++b) lookup[std::size_t(b)] = detail::get<T>(at);
    const std::uint8_t* idx = at;
    detail::BitReader bits(at + c * sizeof(std::int32_t), in + bytes);
    for (std::size_t j = 0; j < c; ++j) {
      const std::size_t i = index(idx);
      out[i] += lookup[bits.get(options_.value_bits)];
    }
  }

  TopKOptions options_;
  std::size_t n_ = 0, k_ = 0, len_ = 0, max_bytes_ = 0, bytes_ = 0;
  detail::TopKSelector<T> selector_;
  std::vector<std::int32_t> sel_;
  std::vector<T> vals_;
  std::vector<std::uint8_t> codes_, send_, recv_;
  std::vector<std::size_t> counts_;
  std::array<T, 256> lookup_{};
};

}  // namespace slowmo::compress
