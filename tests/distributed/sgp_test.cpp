// Stochastic Gradient Push: the topologies' traits and push-sum's invariants.
#include <doctest/doctest.h>

#include <numeric>

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
