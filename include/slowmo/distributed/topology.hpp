// slowmo/distributed/topology.hpp — gossip topologies: small objects that answer "who are my
// out-peers and in-peers at gossip round s". For every round s and peer index j < peers(),
// r -> out_peer(r, s, j) is a permutation of the workers without fixed points and
// in_peer(., s, j) is its inverse, so one exchange per j never deadlocks.
#pragma once

#include <concepts>
#include <cstdint>

#include "slowmo/core/error.hpp"

namespace slowmo {

template <class G>
concept Topology = requires(const G& g, int rank, std::int64_t round, int j) {
  { g.size() } -> std::convertible_to<int>;
  { g.peers() } -> std::convertible_to<int>;
  { g.out_peer(rank, round, j) } -> std::convertible_to<int>;
  { g.in_peer(rank, round, j) } -> std::convertible_to<int>;
};

/// The time-varying directed exponential graph of Stochastic Gradient Push (Assran et al.
/// 2019): at round s, worker r's j-th out-peer is r + 2^((s k + j) mod L) (mod m), with
/// L = floor(log2(m - 1)) + 1 distinct distances 1, 2, 4, ... < m, and k peers per round.
/// Valid for any m >= 2, not only powers of two.
class ExponentialGraph {
 public:
  ExponentialGraph(int workers, int peers = 1) : m_(workers), k_(peers) {
    detail::require_option(workers >= 2, "ExponentialGraph", "workers", workers, "must be >= 2");
    L_ = 0;
    while ((1 << L_) <= workers - 1) ++L_;  // floor(log2(m - 1)) + 1
    detail::require_option(peers >= 1 && peers <= L_, "ExponentialGraph", "peers", peers,
                           detail::concat("must be in [1, ", L_, "]: with ", workers,
                                          " workers the graph has L = floor(log2(m - 1)) + 1 = ", L_,
                                          " distinct peer distances"));
  }
  int size() const { return m_; }
  int peers() const { return k_; }
  /// Number of distinct distances; the schedule repeats every L / gcd(L, k) rounds.
  int distances() const { return L_; }
  int distance(std::int64_t round, int j) const {
    return 1 << static_cast<int>((round * k_ + j) % L_);
  }
  int out_peer(int rank, std::int64_t round, int j) const { return (rank + distance(round, j)) % m_; }
  int in_peer(int rank, std::int64_t round, int j) const { return (rank + m_ - distance(round, j)) % m_; }

 private:
  int m_, k_, L_;
};

/// A directed ring (k = 1: send to r + 1) or a bidirectional one (k = 2: also r - 1).
class Ring {
 public:
  Ring(int workers, int peers = 1) : m_(workers), k_(peers) {
    detail::require_option(workers >= 2, "Ring", "workers", workers, "must be >= 2");
    const int max_peers = workers == 2 ? 1 : 2;
    detail::require_option(peers >= 1 && peers <= max_peers, "Ring", "peers", peers,
                           detail::concat("must be in [1, ", max_peers, "] for ", workers, " workers"));
  }
  int size() const { return m_; }
  int peers() const { return k_; }
  int out_peer(int rank, std::int64_t, int j) const { return j == 0 ? (rank + 1) % m_ : (rank + m_ - 1) % m_; }
  int in_peer(int rank, std::int64_t, int j) const { return j == 0 ? (rank + m_ - 1) % m_ : (rank + 1) % m_; }

 private:
  int m_, k_;
};

}  // namespace slowmo
