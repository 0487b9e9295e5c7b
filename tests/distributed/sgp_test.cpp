// Stochastic Gradient Push: the topologies' traits and push-sum's invariants.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include <slowmo/slowmo.hpp>

TEST_CASE("topologies: each round and peer index is a fixed-point-free permutation, in_peer its inverse") {
  for (int m = 2; m <= 17; ++m) {
    CAPTURE(m);
    int L = 0;
    while ((1 << L) <= m - 1) ++L;  // floor(log2(m - 1)) + 1
    slowmo::ExponentialGraph g(m, 1);
    CHECK(g.distances() == L);
    for (int k = 1; k <= L; ++k) {
      slowmo::ExponentialGraph gk(m, k);
      for (std::int64_t s = 0; s < 2 * L; ++s) {
        std::vector<int> peers_of_0;
        for (int j = 0; j < k; ++j) {
          std::vector<int> hit(std::size_t(m), 0);
          for (int r = 0; r < m; ++r) {
            const int o = gk.out_peer(r, s, j);
            CHECK(o != r);
            CHECK(gk.in_peer(o, s, j) == r);
            ++hit[std::size_t(o)];
          }
          CHECK(std::count(hit.begin(), hit.end(), 1) == m);
          peers_of_0.push_back(gk.out_peer(0, s, j));
        }
        std::sort(peers_of_0.begin(), peers_of_0.end());
        CHECK(std::adjacent_find(peers_of_0.begin(), peers_of_0.end()) == peers_of_0.end());  // k distinct peers
      }
    }
    // distances cycle through 1, 2, 4, ..., 2^(L-1)
    for (std::int64_t s = 0; s < L; ++s) CHECK(g.out_peer(0, s, 0) == (1 << s) % m);
    if (m >= 3) {
      slowmo::Ring ring(m, 2);
      for (int r = 0; r < m; ++r) {
        CHECK(ring.out_peer(r, 0, 0) == (r + 1) % m);
        CHECK(ring.out_peer(r, 0, 1) == (r + m - 1) % m);
        CHECK(ring.in_peer(ring.out_peer(r, 5, 1), 5, 1) == r);
      }
    }
  }
}

TEST_CASE_TEMPLATE("Sgp with m = 2^p workers and zero gradients reaches exact consensus after p rounds", T, float,
                   double) {
  for (int p : {1, 2, 3, 4}) {
    const int m = 1 << p;
    CAPTURE(m);
    std::vector<std::vector<T>> z(static_cast<std::size_t>(m));
    slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& c) {
      // Each worker keeps its own start (no broadcast): the consensus is the point of the test.
      slowmo::Sgp sgp(slowmo::Sgd<T>({.lr = 0.1}), c, 1, {.broadcast_initial = false});
      slowmo::Vector<T> x = slowmo::Vector<T>::Constant(3, T(c.rank() * c.rank())), g = slowmo::Vector<T>::Zero(3);
      sgp.start(x);
      for (int t = 0; t < p; ++t) {
        sgp.step(x, g);
        z[std::size_t(c.rank())].push_back(x[0]);
      }
      CHECK(sgp.weight() == 1.0);  // a regular graph keeps every weight at 1
    });
    // The average of r^2 over 0..m-1 is (m-1)(2m-1)/6, dyadic for these m; every value on
    // the way is a sum of integers times powers of 1/2, so the consensus is exact.
    const T average = T((m - 1) * (2 * m - 1)) / T(6);
    bool all_before = true;
    for (int r = 0; r < m; ++r) {
      CHECK(z[std::size_t(r)].back() == average);
      if (p > 1) all_before = all_before && z[std::size_t(r)][std::size_t(p - 2)] == average;
    }
    if (p > 1) CHECK_FALSE(all_before);  // and not one round earlier
  }
}

TEST_CASE_TEMPLATE("Sgp preserves the sums of numerators and weights every round, for any m", T, float, double) {
  for (int m : {3, 5, 6, 7}) {
    for (int k : {1, 2}) {
      CAPTURE(m);
      CAPTURE(k);
      const int rounds = 9;
      std::vector<std::vector<double>> num_sum(rounds, std::vector<double>(std::size_t(m))),
          w(rounds, std::vector<double>(std::size_t(m)));
      slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& c) {
        // no local change: pure gossip, from a different point on every worker (no broadcast)
        slowmo::Sgp sgp(slowmo::Sgd<T>({.lr = 0.0}), c, k, {.broadcast_initial = false});
        slowmo::Vector<T> x = slowmo::Vector<T>::Constant(4, T(c.rank() * c.rank() + 1)), g = x;
        sgp.start(x);
        for (int t = 0; t < rounds; ++t) {
          sgp.step(x, g);
          num_sum[std::size_t(t)][std::size_t(c.rank())] = double(sgp.numerator()[2]);
          w[std::size_t(t)][std::size_t(c.rank())] = sgp.weight();
          CHECK(x[2] == doctest::Approx(sgp.numerator()[2] / sgp.weight()));
        }
      });
      double initial = 0;
      for (int r = 0; r < m; ++r) initial += r * r + 1;
      for (int t = 0; t < rounds; ++t) {
        const double s = std::accumulate(num_sum[std::size_t(t)].begin(), num_sum[std::size_t(t)].end(), 0.0);
        const double ws = std::accumulate(w[std::size_t(t)].begin(), w[std::size_t(t)].end(), 0.0);
        CHECK(s == doctest::Approx(initial).epsilon(8 * (t + 1) * std::numeric_limits<T>::epsilon()));
        CHECK(ws == doctest::Approx(m).epsilon(1e-14));
      }
    }
  }
}

TEST_CASE("Sgp accepts a user-written topology: a direction that flips every round") {
  struct Flipping {
    int size() const { return 3; }
    int peers() const { return 1; }
    int out_peer(int r, std::int64_t s, int) const { return s % 2 == 0 ? (r + 1) % 3 : (r + 2) % 3; }
    int in_peer(int r, std::int64_t s, int) const { return s % 2 == 0 ? (r + 2) % 3 : (r + 1) % 3; }
  };
  static_assert(slowmo::Topology<Flipping>);
  std::vector<double> z(3);
  slowmo::sim::run({.workers = 3}, [&](slowmo::sim::Comm& c) {
    slowmo::Sgp<slowmo::Sgd<double>, slowmo::sim::Comm, Flipping> sgp(slowmo::Sgd<double>({.lr = 0.0}), c, Flipping{},
                                                                      {.broadcast_initial = false});
    slowmo::Vector<double> x = slowmo::Vector<double>::Constant(1, 3.0 * c.rank()), g = x;
    sgp.start(x);
    for (int t = 0; t < 60; ++t) sgp.step(x, g);
    z[std::size_t(c.rank())] = x[0];
  });
  // Each round mixes with weights 1/2: the disagreement shrinks geometrically towards the
  // average of 0, 3, 6.
  for (double v : z) CHECK(v == doctest::Approx(3.0).epsilon(1e-9));
}

TEST_CASE("Sgp::start broadcasts worker 0's parameters by default and starts push-sum there with weight 1") {
  for (bool broadcast_initial : {true, false}) {
    CAPTURE(broadcast_initial);
    std::vector<double> x_after(3), num_after(3), w_after(3);
    slowmo::sim::run({.workers = 3}, [&](slowmo::sim::Comm& c) {
      slowmo::Sgp sgp(slowmo::Sgd<double>({.lr = 0.5}), c, 1, {.broadcast_initial = broadcast_initial});
      CHECK(sgp.options().broadcast_initial == broadcast_initial);
      slowmo::Vector<double> x = slowmo::Vector<double>::Constant(2, 1.0 + c.rank());
      sgp.start(x);
      x_after[std::size_t(c.rank())] = x[1];
      num_after[std::size_t(c.rank())] = sgp.numerator()[1];
      w_after[std::size_t(c.rank())] = sgp.weight();
    });
    for (int r = 0; r < 3; ++r) {
      const double expected = broadcast_initial ? 1.0 : 1.0 + r;  // worker 0's 1, or its own
      CHECK(x_after[std::size_t(r)] == expected);
      CHECK(num_after[std::size_t(r)] == expected);
      CHECK(w_after[std::size_t(r)] == 1.0);
    }
  }
}

// ---- general directed graphs (issue 14): degrees that differ, weights that move ----------

namespace {

/// The in-lists of a DirectedTopology recomputed by brute force from its out-lists: the
/// workers j (in increasing order) with i among out(j).
template <class G>
std::vector<int> brute_in_peers(const G& g, int i, std::int64_t s) {
  std::vector<int> in, out;
  for (int j = 0; j < g.size(); ++j) {
    g.out_peers(j, s, out);
    if (std::find(out.begin(), out.end(), i) != out.end()) in.push_back(j);
  }
  return in;
}

template <class F>
std::string invalid_option_of(F&& f) {
  try {
    f();
  } catch (const slowmo::invalid_option& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

}  // namespace

TEST_CASE("RandomDirectedGraph: out-degrees in [1, K] that differ, in-lists the inverse of the out-lists") {
  static_assert(slowmo::DirectedTopology<slowmo::RandomDirectedGraph> &&
                !slowmo::PermutationTopology<slowmo::RandomDirectedGraph>);
  for (int m : {2, 3, 5, 8, 13}) {
    for (int K : {1, 2, 4}) {
      if (K > m - 1) continue;
      CAPTURE(m);
      CAPTURE(K);
      slowmo::RandomDirectedGraph g(m, K, 7);
      CHECK_NOTHROW(slowmo::check_topology(g, 40));
      bool out_differ = false, in_differ = false;
      std::vector<int> out, in;
      for (std::int64_t s = 0; s < 40; ++s) {
        std::vector<std::size_t> out_deg, in_deg;
        for (int r = 0; r < m; ++r) {
          g.out_peers(r, s, out);
          g.in_peers(r, s, in);
          CHECK(out.size() >= 1);
          CHECK(int(out.size()) <= K);
          CHECK(int(out.size()) == g.out_degree(r, s));
          std::vector<int> sorted = in;
          std::sort(sorted.begin(), sorted.end());
          CHECK(sorted == brute_in_peers(g, r, s));
          out_deg.push_back(out.size());
          in_deg.push_back(in.size());
        }
        out_differ = out_differ || std::adjacent_find(out_deg.begin(), out_deg.end(), std::not_equal_to<>()) !=
                                       out_deg.end();
        in_differ = in_differ || std::adjacent_find(in_deg.begin(), in_deg.end(), std::not_equal_to<>()) !=
                                     in_deg.end();
      }
      CHECK(out_differ == (K > 1));  // with K = 1 every worker has exactly one out-peer
      if (K > 1) CHECK(in_differ);
      // The same seed gives the same graph; another seed another one.
      slowmo::RandomDirectedGraph same(m, K, 7), other(m, K, 8);
      std::vector<int> a, b;
      bool differs = false;
      for (std::int64_t s = 0; s < 10; ++s) {
        g.out_peers(0, s, a);
        same.out_peers(0, s, b);
        CHECK(a == b);
        other.out_peers(0, s, b);
        differs = differs || a != b;
      }
      if (m > 3) CHECK(differs);
    }
  }
  // With a period the schedule repeats (and Sgp checks that many rounds); without, it does not.
  const slowmo::RandomDirectedGraph periodic(9, 3, 1, 4), endless(9, 3, 1);
  CHECK(slowmo::checked_rounds(periodic) == 4);
  CHECK(slowmo::checked_rounds(endless) == 1);
  std::vector<int> a, b;
  bool repeats = true, endless_repeats = true;
  for (std::int64_t s = 0; s < 8; ++s)
    for (int r = 0; r < 9; ++r) {
      periodic.in_peers(r, s, a);
      periodic.in_peers(r, s + 4, b);
      repeats = repeats && a == b;
      endless.in_peers(r, s, a);
      endless.in_peers(r, s + 4, b);
      endless_repeats = endless_repeats && a == b;
    }
  CHECK(repeats);
  CHECK_FALSE(endless_repeats);
  CHECK(has(invalid_option_of([] { slowmo::RandomDirectedGraph(4, 4); }), "'peers' = 4"));
  CHECK(has(invalid_option_of([] { slowmo::RandomDirectedGraph(4, 2, 0, -1); }), "'period' = -1"));
  CHECK(has(invalid_option_of([] { slowmo::RandomDirectedGraph(1, 1); }), "'workers' = 1"));
}

TEST_CASE("DirectedGraph: derived in-lists, cycled rounds, and its errors name the round and the workers") {
  const slowmo::DirectedGraph g(4, {{{1, 2, 3}, {}, {0}, {2}}, {{1}, {0, 3}, {}, {}}});
  CHECK(g.period() == 2);
  CHECK(g.max_degree() == 3);
  std::vector<int> v;
  g.in_peers(2, 0, v);
  CHECK(v == std::vector<int>{0, 3});
  g.in_peers(0, 2, v);  // round 2 is round 0 again
  CHECK(v == std::vector<int>{2});
  g.in_peers(3, 1, v);
  CHECK(v == std::vector<int>{1});
  g.out_peers(1, 3, v);
  CHECK(v == std::vector<int>{0, 3});
  CHECK_NOTHROW(slowmo::check_topology(g));
  std::string e = invalid_option_of([] { slowmo::DirectedGraph(3, {{{1}, {2}, {0}}, {{1}, {1}, {0}}}); });
  CHECK(e == "slowmo::DirectedGraph: round 1: worker 1 lists itself among its out-peers (a self loop: a worker keeps "
             "its own share and sends none to itself)");
  e = invalid_option_of([] { slowmo::DirectedGraph(3, {{{1}, {2, 3}, {0}}}); });
  CHECK(e == "slowmo::DirectedGraph: round 0: worker 1 lists worker 3 among its out-peers, out of range [0, 3)");
  e = invalid_option_of([] { slowmo::DirectedGraph(3, {{{1}, {2}, {0}}, {{1}, {2}, {1, 1}}}); });
  CHECK(e == "slowmo::DirectedGraph: round 1: worker 2 lists worker 1 twice among its out-peers");
  e = invalid_option_of([] { slowmo::DirectedGraph(3, {{{1}, {2}}}); });
  CHECK(e == "slowmo::DirectedGraph: round 0 has 2 out-neighbour lists; it needs one per worker (3)");
}

namespace {

/// A user-written DirectedTopology whose round 1 is broken: worker 2 also lists worker 0 as an
/// out-peer (which worker 0 does not list as an in-peer), or worker 1 lists worker 2 as an
/// in-peer (which worker 2 never sends to): the ring 0 -> 1 -> 2 -> 0 otherwise.
struct Broken {
  int fault = 0;  // 0: none, 1: a message without a receiver, 2: a receive without a sender
  int size() const { return 3; }
  std::int64_t period() const { return 2; }
  void out_peers(int r, std::int64_t s, std::vector<int>& v) const {
    v.assign({(r + 1) % 3});
    if (fault == 1 && s % 2 == 1 && r == 2) v.push_back(1);
  }
  void in_peers(int r, std::int64_t s, std::vector<int>& v) const {
    v.assign({(r + 2) % 3});
    if (fault == 2 && s % 2 == 1 && r == 1) v.push_back(2);
  }
};

}  // namespace

TEST_CASE("Sgp checks a user topology's lists at construction, naming the round and the workers") {
  static_assert(slowmo::DirectedTopology<Broken>);
  CHECK_NOTHROW(slowmo::check_topology(Broken{0}));
  CHECK(invalid_option_of([] { slowmo::check_topology(Broken{1}); }) ==
        "slowmo::check_topology: topology: round 1: worker 2 lists worker 1 among its out-peers, but worker 1 does "
        "not list worker 2 among its in-peers: the message from 2 to 1 would have no receiver");
  CHECK(invalid_option_of([] { slowmo::check_topology(Broken{2}); }) ==
        "slowmo::check_topology: topology: round 1: worker 1 lists worker 2 among its in-peers, but worker 2 does "
        "not list worker 1 among its out-peers: worker 1 would wait for a message that is never sent");
  for (int fault : {1, 2}) {
    CAPTURE(fault);
    std::vector<std::string> errors(3);
    slowmo::sim::run({.workers = 3}, [&](slowmo::sim::Comm& c) {
      errors[std::size_t(c.rank())] = invalid_option_of([&] {
        slowmo::Sgp<slowmo::Sgd<double>, slowmo::sim::Comm, Broken> sgp(slowmo::Sgd<double>({.lr = 0.1}), c,
                                                                         Broken{fault});
      });
    });
    // The worker whose list holds the bad edge refuses (the sender of a message without a
    // receiver, the receiver of one never sent); the others' lists are fine as far as they see.
    const int culprit = fault == 1 ? 2 : 1;
    for (int r = 0; r < 3; ++r)
      CHECK(errors[std::size_t(r)].empty() == (r != culprit));
    CHECK(has(errors[std::size_t(culprit)], slowmo::detail::concat("slowmo::Sgp: topology: round 1: worker ", culprit,
                                                                   " lists worker ", 3 - culprit)));
  }
}

namespace {

/// Worker i's gradient at z of f_i(z) = 1/2 a_i |z - c_i|^2.
double grad(int i, std::size_t j, double z) {
  const double a = 0.5 + 0.25 * double(i % 3), c = std::cos(double(2 * i + int(j)));
  return a * (z - c);
}

struct Record {
  std::vector<std::vector<double>> z, num;  // [round][worker * d + j]
  std::vector<std::vector<double>> w;       // [round][worker]
};

/// Sgp with plain SGD on a seeded random directed graph, every worker from its own point.
template <class Comm>
void run_directed(Comm& c, int K, std::uint64_t seed, int rounds, std::size_t d, double lr, Record& rec) {
  const int r = c.rank();
  slowmo::Sgp sgp(slowmo::Sgd<double>({.lr = lr}), c, slowmo::RandomDirectedGraph(c.size(), K, seed),
                  {.broadcast_initial = false});
  slowmo::Vector<double> z(static_cast<Eigen::Index>(d)), g(static_cast<Eigen::Index>(d));
  for (std::size_t j = 0; j < d; ++j) z[Eigen::Index(j)] = double(r) - 0.5 * double(j);
  sgp.start(z);
  for (int t = 0; t < rounds; ++t) {
    for (std::size_t j = 0; j < d; ++j) g[Eigen::Index(j)] = grad(r, j, z[Eigen::Index(j)]);
    sgp.step(z, g);
    for (std::size_t j = 0; j < d; ++j) {
      rec.z[std::size_t(t)][std::size_t(r) * d + j] = z[Eigen::Index(j)];
      rec.num[std::size_t(t)][std::size_t(r) * d + j] = sgp.numerator()[Eigen::Index(j)];
    }
    rec.w[std::size_t(t)][std::size_t(r)] = sgp.weight();
  }
}

}  // namespace

TEST_CASE("Sgp on a random directed graph follows Algorithm 1 of Assran et al. (2019), on the simulator and threads") {
  const int rounds = 20;
  const std::size_t d = 3;
  const double lr = 0.1;
  for (int m : {4, 7}) {
    const int K = 3;
    const std::uint64_t seed = 11;
    CAPTURE(m);
    auto fresh = [&] {
      Record rec;
      rec.z.assign(rounds, std::vector<double>(std::size_t(m) * d));
      rec.num = rec.z;
      rec.w.assign(rounds, std::vector<double>(std::size_t(m)));
      return rec;
    };
    Record sim = fresh(), thr = fresh();
    slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& c) { run_directed(c, K, seed, rounds, d, lr, sim); });
    slowmo::threads::run({.workers = m}, [&](slowmo::threads::Comm& c) { run_directed(c, K, seed, rounds, d, lr, thr); });
    CHECK(sim.z == thr.z);  // bit for bit: the sums are added in the order of the in-lists
    CHECK(sim.w == thr.w);

    // The reference: Algorithm 1 with the column-stochastic P(t) of the graph, p_ji = 1/(k_i + 1)
    // for j in out_i(t) and for j = i. Plain arrays over all workers; only the out-lists are used.
    const slowmo::RandomDirectedGraph graph(m, K, seed);
    std::vector<double> x(std::size_t(m) * d), w(std::size_t(m), 1.0), z(x.size());
    for (int i = 0; i < m; ++i)
      for (std::size_t j = 0; j < d; ++j) x[std::size_t(i) * d + j] = double(i) - 0.5 * double(j);
    z = x;
    bool moved = false;
    std::vector<int> out;
    for (int t = 0; t < rounds; ++t) {
      CAPTURE(t);
      // local step at z: x_i^{t+1/2} = x_i^t - lr * grad f_i(z_i^t)
      for (int i = 0; i < m; ++i)
        for (std::size_t j = 0; j < d; ++j) x[std::size_t(i) * d + j] -= lr * grad(i, j, z[std::size_t(i) * d + j]);
      double half_sum = 0;
      for (double v : x) half_sum += v;
      // push-sum: x^{t+1} = P x^{t+1/2}, w^{t+1} = P w^t
      std::vector<double> nx(x.size(), 0.0), nw(std::size_t(m), 0.0);
      for (int i = 0; i < m; ++i) {
        graph.out_peers(i, t, out);
        const double p = 1.0 / double(out.size() + 1);
        out.push_back(i);
        for (int k : out) {
          for (std::size_t j = 0; j < d; ++j) nx[std::size_t(k) * d + j] += p * x[std::size_t(i) * d + j];
          nw[std::size_t(k)] += p * w[std::size_t(i)];
        }
      }
      x = nx;
      w = nw;
      for (int i = 0; i < m; ++i)
        for (std::size_t j = 0; j < d; ++j) z[std::size_t(i) * d + j] = x[std::size_t(i) * d + j] / w[std::size_t(i)];
      for (int i = 0; i < m; ++i) {
        CHECK(sim.w[std::size_t(t)][std::size_t(i)] == doctest::Approx(w[std::size_t(i)]).epsilon(1e-13));
        moved = moved || w[std::size_t(i)] != 1.0;
      }
      for (std::size_t q = 0; q < x.size(); ++q) {
        CHECK(sim.num[std::size_t(t)][q] == doctest::Approx(x[q]).epsilon(1e-12));
        CHECK(sim.z[std::size_t(t)][q] == doctest::Approx(z[q]).epsilon(1e-12));
      }
      // Push-sum preserves the sums: sum w = m, and sum x after the round = sum x after the local steps.
      double w_sum = 0, x_sum = 0, x_abs = 0;
      for (double v : sim.w[std::size_t(t)]) w_sum += v;
      for (double v : sim.num[std::size_t(t)]) x_sum += v, x_abs += std::abs(v);
      CHECK(std::abs(w_sum - m) <= 8 * m * std::numeric_limits<double>::epsilon());
      CHECK(std::abs(x_sum - half_sum) <= 16 * x_abs * std::numeric_limits<double>::epsilon());
    }
    CHECK(moved);
    // The weights differ from 1 after the first round already (out-degrees 1..3 differ).
    CHECK(std::any_of(sim.w[0].begin(), sim.w[0].end(), [](double v) { return v != 1.0; }));
  }
}

TEST_CASE_TEMPLATE("Sgp on a random directed graph without gradients: sums of x and w preserved, consensus on the average",
                   T, float, double) {
  const int m = 6, rounds = 60;
  std::vector<std::vector<double>> num(rounds, std::vector<double>(m)), w(rounds, std::vector<double>(m));
  std::vector<double> z(m);
  slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& c) {
    slowmo::Sgp sgp(slowmo::Sgd<T>({.lr = 0.0}), c, slowmo::RandomDirectedGraph(m, 3, 5), {.broadcast_initial = false});
    slowmo::Vector<T> x = slowmo::Vector<T>::Constant(2, T(c.rank() * c.rank() + 1)), g = x;
    sgp.start(x);
    for (int t = 0; t < rounds; ++t) {
      sgp.step(x, g);
      num[std::size_t(t)][std::size_t(c.rank())] = double(sgp.numerator()[1]);
      w[std::size_t(t)][std::size_t(c.rank())] = sgp.weight();
    }
    z[std::size_t(c.rank())] = double(x[1]);
  });
  double initial = 0;
  for (int r = 0; r < m; ++r) initial += r * r + 1;
  for (int t = 0; t < rounds; ++t) {
    const double s = std::accumulate(num[std::size_t(t)].begin(), num[std::size_t(t)].end(), 0.0);
    const double ws = std::accumulate(w[std::size_t(t)].begin(), w[std::size_t(t)].end(), 0.0);
    CHECK(s == doctest::Approx(initial).epsilon(8 * (t + 1) * std::numeric_limits<T>::epsilon()));
    CHECK(ws == doctest::Approx(m).epsilon(1e-14));
  }
  // z = x / w converges to the average of the starting points (1 + 0 + 1 + 4 + ... ) / m, while
  // x alone does not: the weights differ.
  for (int r = 0; r < m; ++r) CHECK(z[std::size_t(r)] == doctest::Approx(initial / m).epsilon(1e-4));
  CHECK(std::any_of(w.back().begin(), w.back().end(), [](double v) { return std::abs(v - 1.0) > 1e-3; }));
}

TEST_CASE("Sgp on a DirectedGraph where a worker has no in-peers or no out-peers in some rounds") {
  // Round 0: 0 -> 1, 0 -> 2, 1 -> 2 (worker 2 sends nothing, worker 0 hears nothing);
  // round 1: 2 -> 0, 2 -> 1, 1 -> 0.
  const slowmo::DirectedGraph g(3, {{{1, 2}, {2}, {}}, {{}, {0}, {0, 1}}});
  std::vector<double> x0(3), w0(3), x1(3), w1(3);
  slowmo::sim::run({.workers = 3}, [&](slowmo::sim::Comm& c) {
    slowmo::Sgp sgp(slowmo::Sgd<double>({.lr = 0.0}), c, g, {.broadcast_initial = false});
    slowmo::Vector<double> x = slowmo::Vector<double>::Constant(1, 6.0 * c.rank()), gr = x;
    sgp.start(x);
    sgp.step(x, gr);
    x0[std::size_t(c.rank())] = sgp.numerator()[0];
    w0[std::size_t(c.rank())] = sgp.weight();
    sgp.step(x, gr);
    x1[std::size_t(c.rank())] = sgp.numerator()[0];
    w1[std::size_t(c.rank())] = sgp.weight();
  });
  // By hand, from x = (0, 6, 12), w = (1, 1, 1). Round 0: worker 0 keeps 1/3, worker 1 keeps 1/2
  // and gets 1/3 of worker 0's, worker 2 keeps all and gets 1/3 of 0's and 1/2 of 1's.
  CHECK(x0 == std::vector<double>{0.0, 3.0, 15.0});
  CHECK(w0[0] == doctest::Approx(1.0 / 3));
  CHECK(w0[1] == doctest::Approx(1.0 / 2 + 1.0 / 3));
  CHECK(w0[2] == doctest::Approx(1.0 + 1.0 / 3 + 1.0 / 2));
  // Round 1: worker 2 splits in 3, worker 1 in 2, worker 0 keeps everything.
  CHECK(x1[0] == doctest::Approx(0.0 + 1.5 + 5.0));
  CHECK(x1[1] == doctest::Approx(1.5 + 5.0));
  CHECK(x1[2] == doctest::Approx(5.0));
  CHECK(w1[0] + w1[1] + w1[2] == doctest::Approx(3.0));
  CHECK(w1[2] == doctest::Approx(w0[2] / 3));
}
