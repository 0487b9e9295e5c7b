// slowmo/distributed/participation.hpp — partial participation (federated learning): each
// round of the outer loop, a seeded sample of the workers takes part; the others neither
// train nor contribute, and the average is over the participants only, weighted by the
// workers' weights (their local data sizes, say) where given.
//
// The sample of round r is a pure function of (seed, r): a partial Fisher-Yates shuffle of the
// ranks whose j-th draw is SplitMix64 of (seed, r, j) reduced to [j, m). Every worker computes
// the same one without communicating, and a resumed run (whose round count is state) draws the
// same sequence.
#pragma once

#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "slowmo/core/error.hpp"

namespace slowmo {

/// Who takes part in each outer round. The defaults: every worker, weighted alike.
struct Participation {
  std::int64_t count = 0;         ///< workers per round (0: see fraction; neither: all)
  double fraction = 0;            ///< or this fraction of the workers, rounded to nearest, at least 1
  std::uint64_t seed = 0;         ///< of the samples
  std::vector<double> weights{};  ///< per worker, > 0 (e.g. its number of samples); empty: equal
};

namespace detail {

inline std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// The participants of every round among m workers, and each one's share of the average.
/// Built once (its buffers are the only allocation); a round's sample is computed in O(m).
class Cohort {
 public:
  Cohort(const Participation& p, int m, const char* owner) : m_(m), seed_(p.seed), weights_(p.weights) {
    require_option(p.count >= 0 && p.count <= m, owner, "participation.count", p.count,
                   concat("must be in [0, ", m, "] (the number of workers)"));
    require_option(finite(p.fraction) && p.fraction >= 0 && p.fraction <= 1, owner, "participation.fraction",
                   p.fraction, "must be in [0, 1]");
    require_option(p.count == 0 || p.fraction == 0, owner, "participation.fraction", p.fraction,
                   "must be 0 when participation.count is set (one or the other)");
    require_option(p.weights.empty() || p.weights.size() == std::size_t(m), owner, "participation.weights.size()",
                   p.weights.size(), concat("must be 0 or the number of workers, ", m));
    for (std::size_t w = 0; w < p.weights.size(); ++w)
      require_option(finite(p.weights[w]) && p.weights[w] > 0, owner, concat("participation.weights[", w, "]"),
                     p.weights[w], "must be finite and > 0");
    k_ = p.count > 0 ? int(p.count) : p.fraction > 0 ? std::max(1, int(std::lround(p.fraction * m))) : m;
    order_.resize(std::size_t(m));
    in_.assign(std::size_t(m), 0);
  }

  /// Whether every worker takes part in every round, weighted alike (the plain outer loop).
  bool everyone() const { return k_ == m_ && weights_.empty(); }
  int per_round() const { return k_; }

  /// Whether worker r takes part in round `round`.
  bool takes_part(int r, std::int64_t round) { return draw(round), in_[std::size_t(r)] != 0; }
  /// Worker r's factor in round `round`: m w_r / W over the participants (0 for the others),
  /// so that the mean over all m workers of factor x_r is the participants' weighted mean.
  double factor(int r, std::int64_t round) {
    draw(round);
    if (!in_[std::size_t(r)]) return 0;
    return double(m_) * weight(r) / total_;
  }
  /// Round `round`'s participants, ascending.
  std::vector<int> participants(std::int64_t round) {
    draw(round);
    std::vector<int> out;
    for (int q = 0; q < m_; ++q)
      if (in_[std::size_t(q)]) out.push_back(q);
    return out;
  }

 private:
  double weight(int r) const { return weights_.empty() ? 1.0 : weights_[std::size_t(r)]; }
  void draw(std::int64_t round) {
    if (round == drawn_) return;
    std::iota(order_.begin(), order_.end(), 0);
    std::fill(in_.begin(), in_.end(), 0);
    const std::uint64_t base = splitmix64(seed_ ^ splitmix64(std::uint64_t(round)));
    for (int j = 0; j < k_; ++j) {
      const auto pick = j + int(splitmix64(base + std::uint64_t(j)) % std::uint64_t(m_ - j));
      std::swap(order_[std::size_t(j)], order_[std::size_t(pick)]);
      in_[std::size_t(order_[std::size_t(j)])] = 1;
    }
    total_ = 0;  // in rank order: the same sum on every worker
    for (int q = 0; q < m_; ++q)
      if (in_[std::size_t(q)]) total_ += weight(q);
    drawn_ = round;
  }

  int m_, k_ = 0;
  std::uint64_t seed_;
  std::vector<double> weights_;
  std::vector<int> order_;
  std::vector<char> in_;
  std::int64_t drawn_ = -1;
  double total_ = 0;
};

}  // namespace detail
}  // namespace slowmo
