// slowmo/compress/random_k.hpp — RandomK: keep k entries chosen uniformly at random, the same
// ones on every worker (Stich et al. 2018; Wangni et al. 2018), so that a plain all-reduce
// of k values is the whole message.
#pragma once

#include <algorithm>
#include <bit>
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

/// Options of RandomK.
struct RandomKOptions {
  double fraction = 0.01;  ///< k = max(1, round(fraction * n)) when k = 0; in (0, 1]
  std::int64_t k = 0;      ///< > 0: exactly k entries (k <= n); 0: from fraction
  bool unbiased = true;    ///< scale the kept entries by n / k, so that E[C(p)] = p
};

/// C(p) keeps k entries of p at indices S drawn uniformly without replacement (Floyd's
/// algorithm) from (seed, round) alone: the same S on every worker, a new S every round.
/// Kept entries are multiplied by n / k when unbiased (then E[C(p)] = p), else kept as they
/// are (then E||C(p) - p||^2 = (1 - k/n) ||p||^2).
///
/// reduce(): the k values (scaled) in ascending index order, one all_reduce(mean) of k
/// values: k sizeof(T) bytes into a ring all-reduce, 2 (m-1)/m k sizeof(T) sent per worker.
/// Works on any Communicator (no gather needed).
template <Real T>
class RandomK {
 public:
  using scalar_type = T;
  using options_type = RandomKOptions;

  explicit RandomK(slowmo::detail::DefaultOptions = {}) : RandomK(RandomKOptions{}) {}
  explicit RandomK(RandomKOptions options) : options_(validated(options)) {}

  const RandomKOptions& options() const { return options_; }

  /// Checks k <= n and sizes the scratch for vectors of n elements.
  void prepare(std::size_t n) {
    if (n == n_) return;
    detail::require_option(options_.k <= 0 || std::size_t(options_.k) <= n, "RandomK", "k", options_.k,
                           detail::concat("must be in (0, n] for a vector of n = ", n, " elements"));
    k_ = detail::count_of(options_.fraction, options_.k, n);
    sel_.assign(k_, 0);
    vals_.assign(k_, T(0));
    bitmap_.assign((n + 63) / 64, 0);
    n_ = n;
  }

  /// The indices of round `round` (seed, round) for a vector of n, ascending, into sel_;
  /// exposed for tests through indices().
  std::span<const std::size_t> indices(std::size_t n, const Round& round) {
    prepare(n);
    draw(round);
    return sel_;
  }

  void compress(std::span<const T> p, std::span<T> out, const Round& round = {}) {
    detail::check_sizes("RandomK", "compress", p.size(), out.size(), "out", false);
    prepare(p.size());
    gather_values(p, round);
    std::fill(out.begin(), out.end(), T(0));
    for (std::size_t j = 0; j < k_; ++j) out[sel_[j]] = vals_[j];
  }

  template <class Comm>
  void reduce(std::span<T> p, std::span<T> residual, Comm& comm, const Round& round = {}) {
    static_assert(Communicator<Comm>, "slowmo::compress::RandomK needs a Communicator (all_reduce)");
    detail::check_sizes("RandomK", "reduce", p.size(), residual.size(), "residual", true);
    prepare(p.size());
    gather_values(p, round);
    if (!residual.empty()) {
      std::copy(p.begin(), p.end(), residual.begin());
      for (std::size_t j = 0; j < k_; ++j) residual[sel_[j]] = p[sel_[j]] - vals_[j];
    }
    comm.all_reduce(std::span<T>(vals_), ReduceOp::mean);
    std::fill(p.begin(), p.end(), T(0));
    for (std::size_t j = 0; j < k_; ++j) p[sel_[j]] = vals_[j];
  }

  template <class V>
  void visit_state(V&&, const StateScope* = nullptr) {}
  template <class V>
  void visit_state(V&&, const StateScope* = nullptr) const {}

  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"compressor", scope}, "RandomK");  // (k and the scaling are plain hyper-parameters)
  }

 private:
  static RandomKOptions validated(const RandomKOptions& o) {
    detail::validate_count("RandomK", o.fraction, o.k);
    return o;
  }

  /// Floyd's algorithm (Bentley & Floyd 1987): for j = n-k .. n-1, t uniform in [0, j];
  /// insert t, or j if t is in already. Uniform k-subsets in O(k) draws; the bitmap scan
  /// that follows emits them in ascending order (and clears the bitmap) in O(n/64 + k).
  void draw(const Round& round) {
    const std::uint64_t key = detail::stream_key(round.seed, round.round, 0, detail::tag_random_k);
    for (std::size_t j = n_ - k_, t = 0; j < n_; ++j, ++t) {
      std::size_t i = std::size_t(detail::below(detail::draw(key, t), std::uint64_t(j) + 1));
      if (bitmap_[i / 64] >> (i % 64) & 1u) i = j;
      bitmap_[i / 64] |= std::uint64_t(1) << (i % 64);
    }
    std::size_t c = 0;
    for (std::size_t w = 0; w < bitmap_.size(); ++w) {
      for (std::uint64_t word = bitmap_[w]; word != 0; word &= word - 1)
        sel_[c++] = w * 64 + std::size_t(std::countr_zero(word));
      bitmap_[w] = 0;
    }
  }

  void gather_values(std::span<const T> p, const Round& round) {
    draw(round);
    const T scale = options_.unbiased ? T(double(n_) / double(k_)) : T(1);
    for (std::size_t j = 0; j < k_; ++j) vals_[j] = options_.unbiased ? scale * p[sel_[j]] : p[sel_[j]];
  }

  RandomKOptions options_;
  std::size_t n_ = 0, k_ = 0;
  std::vector<std::size_t> sel_;
  std::vector<T> vals_;
  std::vector<std::uint64_t> bitmap_;
};

}  // namespace slowmo::compress
