// slowmo/distributed/topology.hpp — gossip topologies: small objects that answer "who are my
// out-peers and in-peers at gossip round s" (pagmo's shape). Two forms:
//  - a PermutationTopology (ExponentialGraph, Ring): k = peers() out-peers per round, and for
//    every round s and peer index j < k, r -> out_peer(r, s, j) is a permutation of the
//    workers without fixed points, in_peer(., s, j) its inverse; Sgp does one exchange per j,
//    every weight stays 1 (the graph is regular);
//  - a DirectedTopology (DirectedGraph, RandomDirectedGraph, or your own): out_peers(r, s, v)
//    and in_peers(r, s, v) fill v with worker r's lists, which may differ in length between
//    workers and rounds (Nedic & Olshevsky 2016; Assran et al. 2019). Sgp sends x/(k_r + 1)
//    to the k_r out-peers with one neighbor_sum (core/communicator.hpp), so push-sum's weights
//    move and its de-biasing z = x / w matters. The lists must be consistent: j lists i among
//    its out-peers at round s exactly when i lists j among its in-peers, with no self loops,
//    no duplicates and every rank in range (check_topology; Sgp checks its own worker's lists
//    over period() rounds, or the first round when the graph has no period). With the shares
//    1/(k_j + 1) every column of the mixing matrix sums to 1 (column stochastic) by
//    construction, so consistency is all there is to check.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "slowmo/core/error.hpp"

namespace slowmo {

/// k = peers() out-peers per round; for each round and peer index j, out_peer(., s, j) is a
/// permutation without fixed points and in_peer(., s, j) its inverse.
template <class G>
concept PermutationTopology = requires(const G& g, int rank, std::int64_t round, int j) {
  { g.size() } -> std::convertible_to<int>;
  { g.peers() } -> std::convertible_to<int>;
  { g.out_peer(rank, round, j) } -> std::convertible_to<int>;
  { g.in_peer(rank, round, j) } -> std::convertible_to<int>;
};

/// Any directed graph per round: out_peers(rank, round, v) and in_peers(rank, round, v)
/// replace v's contents with worker rank's lists (no allocation once v has grown). Optional:
/// period() (the schedule repeats; the rounds Sgp checks at construction) and max_degree()
/// (the longest list; Sgp reserves it so that no step allocates).
template <class G>
concept DirectedTopology = requires(const G& g, int rank, std::int64_t round, std::vector<int>& peers) {
  { g.size() } -> std::convertible_to<int>;
  g.out_peers(rank, round, peers);
  g.in_peers(rank, round, peers);
};

template <class G>
concept Topology = PermutationTopology<G> || DirectedTopology<G>;

/// Worker rank's out-peers at `round`, into `peers` (replaced), for either form.
template <Topology G>
void out_peers(const G& g, int rank, std::int64_t round, std::vector<int>& peers) {
  if constexpr (DirectedTopology<G>) {
    g.out_peers(rank, round, peers);
  } else {
    peers.clear();
    for (int j = 0; j < int(g.peers()); ++j) peers.push_back(int(g.out_peer(rank, round, j)));
  }
}
/// Worker rank's in-peers at `round`, into `peers` (replaced), for either form.
template <Topology G>
void in_peers(const G& g, int rank, std::int64_t round, std::vector<int>& peers) {
  if constexpr (DirectedTopology<G>) {
    g.in_peers(rank, round, peers);
  } else {
    peers.clear();
    for (int j = 0; j < int(g.peers()); ++j) peers.push_back(int(g.in_peer(rank, round, j)));
  }
}
/// The rounds a check covers: period() where the graph has one (> 0), else the first round.
template <Topology G>
std::int64_t checked_rounds(const G& g) {
  if constexpr (requires { { g.period() } -> std::convertible_to<std::int64_t>; })
    return std::int64_t(g.period()) > 0 ? std::int64_t(g.period()) : 1;
  else
    return 1;
}

namespace detail {

/// Scratch of the topology checks: the lists, and the peers seen, by epoch.
struct TopologyScratch {
  std::vector<int> out, in, other;
  std::vector<std::uint32_t> mark;
  std::uint32_t epoch = 0;
};

/// Why worker r's lists at `round` are not consistent with its peers' lists, or "". Checks r's
/// own out- and in-lists (ranks in range, no self loop, no duplicate), that each out-peer j
/// lists r among its in-peers (r's message has a receiver) and that each in-peer j lists r
/// among its out-peers (r waits for no message that is never sent). O(k^2) for degrees k.
template <Topology G>
std::string topology_error_at(const G& g, int r, std::int64_t round, TopologyScratch& sc) {
  const int m = int(g.size());
  out_peers(g, r, round, sc.out);
  in_peers(g, r, round, sc.in);
  if (sc.mark.size() < std::size_t(m)) sc.mark.assign(std::size_t(m), 0);
  for (const auto& [list, what] : {std::pair{&sc.out, "out"}, std::pair{&sc.in, "in"}}) {
    if (++sc.epoch == 0) std::fill(sc.mark.begin(), sc.mark.end(), 0), sc.epoch = 1;
    for (int p : *list) {
      if (p < 0 || p >= m)
        return concat("round ", round, ": worker ", r, " lists worker ", p, " among its ", what,
                      "-peers, out of range [0, ", m, ")");
      if (p == r)
        return concat("round ", round, ": worker ", r, " lists itself among its ", what,
                      "-peers (a self loop: a worker keeps its own share and sends none to itself)");
      if (sc.mark[std::size_t(p)] == sc.epoch)
        return concat("round ", round, ": worker ", r, " lists worker ", p, " twice among its ", what, "-peers");
      sc.mark[std::size_t(p)] = sc.epoch;
    }
  }
  auto lists = [](const std::vector<int>& v, int q) { return std::find(v.begin(), v.end(), q) != v.end(); };
  for (int j : sc.out) {
    in_peers(g, j, round, sc.other);
    if (!lists(sc.other, r))
      return concat("round ", round, ": worker ", r, " lists worker ", j, " among its out-peers, but worker ", j,
                    " does not list worker ", r, " among its in-peers: the message from ", r, " to ", j,
                    " would have no receiver");
  }
  for (int j : sc.in) {
    out_peers(g, j, round, sc.other);
    if (!lists(sc.other, r))
      return concat("round ", round, ": worker ", r, " lists worker ", j, " among its in-peers, but worker ", j,
                    " does not list worker ", r, " among its out-peers: worker ", r,
                    " would wait for a message that is never sent");
  }
  return {};
}

/// Throws invalid_option("slowmo::<owner>: topology: round s: worker ...") unless worker r's
/// lists are consistent over the rounds [0, rounds).
template <Topology G>
void check_topology_of(const G& g, int r, std::int64_t rounds, std::string_view owner, TopologyScratch& sc) {
  for (std::int64_t s = 0; s < rounds; ++s)
    if (std::string e = topology_error_at(g, r, s, sc); !e.empty())
      throw invalid_option(concat("slowmo::", owner, ": topology: ", e));
}

}  // namespace detail

/// Throws invalid_option naming the first round and workers where the lists of some worker
/// are not consistent (see the top of this file), over the rounds [0, rounds) (default: the
/// graph's period, or the first round). O(rounds * m * k^2): a one-off check for a graph of
/// your own; Sgp checks only its own worker's lists.
template <Topology G>
void check_topology(const G& g, std::int64_t rounds = -1, std::string_view owner = "check_topology") {
  detail::TopologyScratch sc;
  if (rounds < 0) rounds = checked_rounds(g);
  for (std::int64_t s = 0; s < rounds; ++s)
    for (int r = 0; r < int(g.size()); ++r)
      if (std::string e = detail::topology_error_at(g, r, s, sc); !e.empty())
        throw invalid_option(detail::concat("slowmo::", owner, ": topology: ", e));
}

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

/// A directed graph of your own, given per round as out-neighbour lists and cycled over them:
/// out[s][r] lists worker r's out-peers at rounds s, s + period(), ... (any lengths, including
/// none). The in-lists are derived, each in increasing rank order, so the two always agree;
/// the constructor checks the shape, ranges, self loops and duplicates, naming the round and
/// workers (invalid_option). Copies share the lists (Sgp holds one per worker).
class DirectedGraph {
 public:
  DirectedGraph(int workers, std::vector<std::vector<std::vector<int>>> out) {
    detail::require_option(workers >= 1, "DirectedGraph", "workers", workers, "must be >= 1");
    detail::require_option(!out.empty(), "DirectedGraph", "rounds", out.size(),
                           "must be >= 1: give at least one round of out-neighbour lists");
    auto data = std::make_shared<Data>();
    data->m = workers;
    for (std::size_t s = 0; s < out.size(); ++s) {
      if (out[s].size() != std::size_t(workers))
        throw invalid_option(detail::concat("slowmo::DirectedGraph: round ", s, " has ", out[s].size(),
                                            " out-neighbour lists; it needs one per worker (", workers, ")"));
      std::vector<std::vector<int>> in(static_cast<std::size_t>(workers));
      std::vector<int> seen(static_cast<std::size_t>(workers), -1);
      for (int r = 0; r < workers; ++r) {
        for (int p : out[s][std::size_t(r)]) {
          if (p < 0 || p >= workers)
            throw invalid_option(detail::concat("slowmo::DirectedGraph: round ", s, ": worker ", r, " lists worker ",
                                                p, " among its out-peers, out of range [0, ", workers, ")"));
          if (p == r)
            throw invalid_option(detail::concat(
                "slowmo::DirectedGraph: round ", s, ": worker ", r,
                " lists itself among its out-peers (a self loop: a worker keeps its own share and sends none to "
                "itself)"));
          if (seen[std::size_t(p)] == r)
            throw invalid_option(detail::concat("slowmo::DirectedGraph: round ", s, ": worker ", r, " lists worker ",
                                                p, " twice among its out-peers"));
          seen[std::size_t(p)] = r;
          in[std::size_t(p)].push_back(r);
          data->max_degree = std::max(data->max_degree, int(out[s][std::size_t(r)].size()));
        }
      }
      for (const auto& v : in) data->max_degree = std::max(data->max_degree, int(v.size()));
      data->in.push_back(std::move(in));
    }
    data->out = std::move(out);
    data_ = std::move(data);
  }
  int size() const { return data_->m; }
  /// The number of rounds given: round s uses lists s mod period().
  std::int64_t period() const { return std::int64_t(data_->out.size()); }
  /// The longest out- or in-list of any round.
  int max_degree() const { return data_->max_degree; }
  void out_peers(int rank, std::int64_t round, std::vector<int>& peers) const {
    const auto& v = data_->out[std::size_t(round % period())][std::size_t(rank)];
    peers.assign(v.begin(), v.end());
  }
  void in_peers(int rank, std::int64_t round, std::vector<int>& peers) const {
    const auto& v = data_->in[std::size_t(round % period())][std::size_t(rank)];
    peers.assign(v.begin(), v.end());
  }

 private:
  struct Data {
    int m = 0, max_degree = 0;
    std::vector<std::vector<std::vector<int>>> out, in;
  };
  std::shared_ptr<const Data> data_;
};

/// A random directed graph per round, seeded (the same on every worker and backend): at round
/// s, K = peers distinct distances d_0, ..., d_{K-1} in [1, m - 1] are drawn, and every worker
/// r draws its own out-degree k_r(s) uniformly in [1, K] and sends to r + d_0, ..., r +
/// d_{k_r - 1} (mod m). Out-degrees differ between workers and so do in-degrees (worker i
/// hears from i - d_l whenever that worker's out-degree exceeds l), so push-sum's weights
/// really move. Each list is computed from (seed, s, r) alone in O(K^2): no worker needs the
/// whole graph, whatever m. The lists are consistent by construction (distinct nonzero
/// distances: no self loop, no duplicate); the in-list is ordered by l. With period p > 0,
/// round s uses the graph of round s mod p (a random schedule that repeats, whose transients
/// of the in-process backends die out: their message queues stop growing).
class RandomDirectedGraph {
 public:
  RandomDirectedGraph(int workers, int peers = 1, std::uint64_t seed = 0, std::int64_t period = 0)
      : m_(workers), k_(peers), seed_(seed), period_(period) {
    detail::require_option(workers >= 2, "RandomDirectedGraph", "workers", workers, "must be >= 2");
    detail::require_option(peers >= 1 && peers <= workers - 1, "RandomDirectedGraph", "peers", peers,
                           detail::concat("must be in [1, m - 1] = [1, ", workers - 1, "] for ", workers, " workers"));
    detail::require_option(period >= 0, "RandomDirectedGraph", "period", period, "must be >= 0 (0: never repeats)");
  }
  int size() const { return m_; }
  /// The rounds after which the graph repeats; 0: it never does.
  std::int64_t period() const { return period_; }
  /// The most out-peers a worker has in a round (K).
  int peers() const { return k_; }
  int max_degree() const { return k_; }
  std::uint64_t seed() const { return seed_; }
  /// Worker rank's out-degree at `round`, in [1, K].
  int out_degree(int rank, std::int64_t round) const {
    return 1 + int(draw(std::uint64_t(round), 0x5EED0000ull + std::uint64_t(rank)) % std::uint64_t(k_));
  }
  void out_peers(int rank, std::int64_t round, std::vector<int>& peers) const {
    distances(round, peers);
    peers.resize(std::size_t(out_degree(rank, round)));
    for (int& p : peers) p = (rank + p) % m_;
  }
  void in_peers(int rank, std::int64_t round, std::vector<int>& peers) const {
    distances(round, peers);
    std::size_t kept = 0;
    for (std::size_t l = 0; l < peers.size(); ++l) {
      const int from = (rank + m_ - peers[l]) % m_;
      if (out_degree(from, round) > int(l)) peers[kept++] = from;
    }
    peers.resize(kept);
  }

 private:
  /// SplitMix64's finaliser over (seed, round mod period, what).
  std::uint64_t draw(std::uint64_t round, std::uint64_t what) const {
    if (period_ > 0) round %= std::uint64_t(period_);
    std::uint64_t z = seed_ * 0x9E3779B97F4A7C15ull + round * 0xD1B54A32D192ED03ull + what * 0x8CB92BA72F3D8DD7ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// The K distinct distances of `round`, in draw order, into d (rejection: a repeat is drawn again).
  void distances(std::int64_t round, std::vector<int>& d) const {
    d.clear();
    for (std::uint64_t attempt = 0; int(d.size()) < k_; ++attempt) {
      const int v = 1 + int(draw(std::uint64_t(round), attempt) % std::uint64_t(m_ - 1));
      if (std::find(d.begin(), d.end(), v) == d.end()) d.push_back(v);
    }
  }

  int m_, k_;
  std::uint64_t seed_;
  std::int64_t period_;
};

}  // namespace slowmo
