// slowmo/problems/split.hpp — who gets which samples: a dataset's sample indices split across
// workers, IID or with a Dirichlet label skew (Hsu, Qi and Brown 2019, "Measuring the
// effects of non-identical data distribution for federated visual classification"), and a
// stratified held-out validation split for tuning (the official test set stays for
// reporting).
//
// All of it is seeded and uses the counter-based streams of slowmo/problems/random.hpp
// with its own Gamma sampler, never the std distributions (implementation-defined): the
// same seed gives the same split with every compiler and standard library.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "slowmo/core/error.hpp"
#include "slowmo/problems/dataset.hpp"
#include "slowmo/problems/detail/stream.hpp"
#include "slowmo/problems/random.hpp"

namespace slowmo::problems {

/// Each worker's sample indices into the dataset: together a partition of [0, size()).
using Shards = std::vector<std::vector<Eigen::Index>>;

namespace detail {

// The streams each function draws from, so that one seed gives independent draws to each.
enum class SplitStream : std::uint64_t {
  iid = 1,             // the permutation of split_iid
  dirichlet = 2,       // class k's Dirichlet shares
  class_order = 3,     // class k's samples, shuffled before they are dealt out
  worker_order = 4,    // the order of worker i's indices
  holdout_class = 5,   // class k's samples, shuffled before the validation part is taken
  holdout_order = 6,   // the order of the train (0) and validation (1) parts
};

inline Stream split_stream(std::uint64_t seed, SplitStream which, std::uint64_t k) {
  return Stream(stream_key(seed, std::uint64_t(which), k));
}

inline void require_workers(std::string_view owner, const Dataset& ds, int workers) {
  slowmo::detail::require_option(workers >= 1, owner, "workers", workers, "must be >= 1");
  slowmo::detail::require_option(
      workers <= ds.size(), owner, "workers", workers,
      slowmo::detail::concat("must be <= the ", ds.size(), " samples of ", ds.name, " (every worker needs one)"));
}

/// Sample indices of each class, in increasing order.
inline std::vector<std::vector<Eigen::Index>> indices_by_class(const Dataset& ds) {
  std::vector<std::vector<Eigen::Index>> by_class(std::size_t(ds.classes));
  for (Eigen::Index j = 0; j < ds.size(); ++j) by_class[std::size_t(ds.y[std::size_t(j)])].push_back(j);
  return by_class;
}

/// Integer counts adding up to `total`, each within one of share_i * total (shares summing
/// to 1): the floors, plus one for the largest remainders (ties: the lower index first).
inline std::vector<Eigen::Index> largest_remainder(std::span<const double> shares, Eigen::Index total) {
  const std::size_t m = shares.size();
  std::vector<Eigen::Index> counts(m);
  std::vector<double> rest(m);
  Eigen::Index assigned = 0;
  for (std::size_t i = 0; i < m; ++i) {
    const double exact = shares[i] * double(total);
    counts[i] = std::min(Eigen::Index(exact), total);
    rest[i] = exact - double(counts[i]);
    assigned += counts[i];
  }
  std::vector<std::size_t> order(m);
  std::iota(order.begin(), order.end(), std::size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return rest[a] > rest[b]; });
  // The remainders sum to total - assigned < m (up to the rounding of the shares' sum,
  // which `r % m` absorbs); the floors never sum above total, as the shares sum to 1.
  for (std::size_t r = 0; assigned < total; ++r, ++assigned) ++counts[order[r % m]];
  return counts;
}

}  // namespace detail

/// An IID split: a seeded permutation of the samples cut into `workers` consecutive parts,
/// the first size() % workers of them one sample larger. Each worker's indices are in the
/// permutation's (random) order. Throws invalid_option unless 1 <= workers <= size().
inline Shards split_iid(const Dataset& ds, int workers, std::uint64_t seed) {
  detail::require_workers("problems::split_iid", ds, workers);
  std::vector<Eigen::Index> perm(std::size_t(ds.size()));
  std::iota(perm.begin(), perm.end(), Eigen::Index(0));
  auto s = detail::split_stream(seed, detail::SplitStream::iid, 0);
  detail::shuffle(std::span(perm), s);
  Shards shards(static_cast<std::size_t>(workers));
  const std::size_t q = perm.size() / std::size_t(workers), r = perm.size() % std::size_t(workers);
  auto next = perm.begin();
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const auto n = std::ptrdiff_t(q + (i < r ? 1 : 0));
    shards[i].assign(next, next + n);
    next += n;
  }
  return shards;
}

/// A label-skewed split (Hsu et al. 2019): for each class k, the shares of its samples that
/// the workers get are drawn from Dirichlet(alpha, ..., alpha), rounded to counts that add
/// up to the class's size (largest remainder), and the class's samples, shuffled, are dealt
/// out in those counts. Small alpha: each class goes almost whole to one worker; large alpha:
/// every worker gets about the global class distribution.
///
/// No worker is left empty: one the rounding would leave without samples gets a single
/// sample, taken from the worker that has the most (the lowest rank on ties), of that
/// worker's most frequent class. So the shards stay a partition of the dataset. (With small
/// alpha and more workers than classes that happens to most workers beyond the classes'
/// count: they hold one sample each.)
///
/// Each worker's indices are in a seeded random order. Throws invalid_option unless
/// 1 <= workers <= size() and alpha is finite and > 0; size_mismatch unless ds.validate().
inline Shards split_dirichlet(const Dataset& ds, int workers, double alpha, std::uint64_t seed) {
  const std::string_view owner = "problems::split_dirichlet";
  detail::require_workers(owner, ds, workers);
  slowmo::detail::require_option(slowmo::detail::finite(alpha) && alpha > 0, owner, "alpha", alpha,
                                 "must be finite and > 0 (small: few classes per worker; large: close to IID)");
  ds.validate();
  const auto m = std::size_t(workers);
  auto by_class = detail::indices_by_class(ds);
  Shards shards(m);
  std::vector<double> log_g(m), share(m);
  for (std::size_t k = 0; k < by_class.size(); ++k) {
    auto& members = by_class[k];
    // Dirichlet(alpha, ..., alpha) = independent Gamma(alpha, 1) variates over their sum;
    // normalised in logarithms (for small alpha the variates underflow).
    auto gs = detail::split_stream(seed, detail::SplitStream::dirichlet, k);
    for (auto& l : log_g) l = detail::log_gamma_variate(alpha, gs);
    const double top = *std::max_element(log_g.begin(), log_g.end());
    double sum = 0;
    for (std::size_t i = 0; i < m; ++i) sum += (share[i] = std::exp(log_g[i] - top));
    for (auto& sh : share) sh /= sum;
    const auto counts = detail::largest_remainder(share, Eigen::Index(members.size()));
    auto os = detail::split_stream(seed, detail::SplitStream::class_order, k);
    detail::shuffle(std::span(members), os);
    auto next = members.begin();
    for (std::size_t i = 0; i < m; ++i) {
      shards[i].insert(shards[i].end(), next, next + std::ptrdiff_t(counts[i]));
      next += std::ptrdiff_t(counts[i]);
    }
  }
  // An empty worker would have no loss and no gradient: give it one sample (see above). A
  // donor with two or more samples exists while one is empty, since workers <= size().
  std::vector<Eigen::Index> histogram(std::size_t(ds.classes));
  for (auto& empty : shards) {
    if (!empty.empty()) continue;
    auto& donor = *std::max_element(shards.begin(), shards.end(),
                                    [](const auto& a, const auto& b) { return a.size() < b.size(); });
    std::fill(histogram.begin(), histogram.end(), 0);
    for (const Eigen::Index j : donor) ++histogram[std::size_t(ds.y[std::size_t(j)])];
    const auto common = std::int32_t(std::max_element(histogram.begin(), histogram.end()) - histogram.begin());
    const auto it = std::find_if(donor.rbegin(), donor.rend(),
                                 [&](Eigen::Index j) { return ds.y[std::size_t(j)] == common; });
    empty.push_back(*it);
    donor.erase(std::next(it).base());
  }
  for (std::size_t i = 0; i < m; ++i) {
    auto s = detail::split_stream(seed, detail::SplitStream::worker_order, i);
    detail::shuffle(std::span(shards[i]), s);
  }
  return shards;
}

/// A dataset cut in two: `validation` for tuning, `train` the rest; `*_rows` say which samples
/// of the original each holds, in the same order.
struct Holdout {
  Dataset train, validation;
  std::vector<Eigen::Index> train_rows, validation_rows;
};

/// A stratified held-out split: `count` samples for validation, class k contributing its
/// proportional part count * n_k / n rounded by largest remainder (so each class's part is
/// within one of proportional and the parts add up to `count`), chosen at random within the
/// class. Both parts are in a seeded random order (their first samples are a random sample).
/// Throws invalid_option unless 1 <= count < size(); size_mismatch unless ds.validate().
inline Holdout holdout(const Dataset& ds, Eigen::Index count, std::uint64_t seed) {
  const std::string_view owner = "problems::holdout";
  slowmo::detail::require_option(
      count >= 1 && count < ds.size(), owner, "count", count,
      slowmo::detail::concat("must be in [1, ", ds.size(), ") for the ", ds.size(), " samples of ", ds.name,
                             " (both parts non-empty)"));
  ds.validate();
  auto by_class = detail::indices_by_class(ds);
  // Largest remainder in exact integer arithmetic: class k's quota is count * n_k / n.
  const auto n = ds.size();
  std::vector<Eigen::Index> quota(by_class.size()), rest(by_class.size());
  Eigen::Index assigned = 0;
  for (std::size_t k = 0; k < by_class.size(); ++k) {
    const Eigen::Index scaled = count * Eigen::Index(by_class[k].size());
    quota[k] = scaled / n;
    rest[k] = scaled % n;
    assigned += quota[k];
  }
  std::vector<std::size_t> order(by_class.size());
  std::iota(order.begin(), order.end(), std::size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return rest[a] > rest[b]; });
  for (std::size_t r = 0; assigned < count; ++r, ++assigned) ++quota[order[r]];  // fewer than classes
  Holdout h;
  for (std::size_t k = 0; k < by_class.size(); ++k) {
    auto& members = by_class[k];
    auto s = detail::split_stream(seed, detail::SplitStream::holdout_class, k);
    detail::shuffle(std::span(members), s);
    const auto cut = members.begin() + std::ptrdiff_t(quota[k]);
    h.validation_rows.insert(h.validation_rows.end(), members.begin(), cut);
    h.train_rows.insert(h.train_rows.end(), cut, members.end());
  }
  auto ts = detail::split_stream(seed, detail::SplitStream::holdout_order, 0);
  detail::shuffle(std::span(h.train_rows), ts);
  auto vs = detail::split_stream(seed, detail::SplitStream::holdout_order, 1);
  detail::shuffle(std::span(h.validation_rows), vs);
  h.train = ds.subset(h.train_rows, ds.name + " minus validation");
  h.validation = ds.subset(h.validation_rows, ds.name + " validation");
  return h;
}

}  // namespace slowmo::problems
