// Simulator specifics: virtual time against the network-model formulas, the compute
// model, accounting, and scale.
#include <doctest/doctest.h>

#include <slowmo/comm/simulator.hpp>

namespace {
using slowmo::sim::Comm;
}

TEST_CASE("virtual time: an all-reduce completes at the latest arrival plus the ring cost") {
  const double L = 1e-4, B = 1e8;  // 100 us, 100 MB/s
  const int m = 4;
  const std::size_t n = 1000;      // 4000 bytes of float
  std::vector<double> done(m);
  auto report = slowmo::sim::run({.workers = m, .network = {.latency = L, .bandwidth = B}}, [&](Comm& c) {
    c.advance(0.01 * c.rank());  // arrivals at 0, 10, 20, 30 ms
    std::vector<float> x(n, 1.0f);
    c.all_reduce(std::span<float>(x), slowmo::ReduceOp::mean);
    done[std::size_t(c.rank())] = c.now();
  });
  // 2(m-1) L + 2(m-1)/m * bytes / B = 6e-4 + 1.5 * 4000 / 1e8 = 6.6e-4
  const double expected = 0.03 + 2.0 * (m - 1) * L + 2.0 * (m - 1) / m * 4000 / B;
  for (double t : done) CHECK(t == doctest::Approx(expected).epsilon(1e-12));
  for (const auto& w : report.workers) {
    CHECK(w.time == doctest::Approx(expected).epsilon(1e-12));
    CHECK(w.bytes_sent == 6000);  // 2(m-1)/m of 4000 bytes each
  }
  CHECK(report.makespan() == doctest::Approx(expected).epsilon(1e-12));
}

TEST_CASE("virtual time: an all-gather completes at the latest arrival plus the ring all-gather cost") {
  const double L = 1e-4, B = 1e8;  // 100 us, 100 MB/s
  const int m = 4;
  const std::size_t n = 1000;      // 4000 bytes of float per worker, 16000 in all
  std::vector<double> done(m);
  auto report = slowmo::sim::run({.workers = m, .network = {.latency = L, .bandwidth = B}}, [&](Comm& c) {
    c.advance(0.01 * c.rank());  // arrivals at 0, 10, 20, 30 ms
    std::vector<float> x(n, float(c.rank())), all(m * n);
    c.all_gather(std::span<const float>(x), std::span<float>(all));
    done[std::size_t(c.rank())] = c.now();
  });
  // (m-1) L + (m-1)/m * total / B = 3e-4 + 0.75 * 16000 / 1e8 = 3e-4 + 1.2e-4
  const double expected = 0.03 + 3e-4 + 1.2e-4;
  for (double t : done) CHECK(t == doctest::Approx(expected).epsilon(1e-12));
  for (const auto& w : report.workers) {
    CHECK(w.bytes_sent == 3 * 4000);  // a ring: the m-1 blocks other than its successor's
    CHECK(w.messages_sent == 3);
  }
}

TEST_CASE("virtual time: all_gather_v charges the bytes actually sent") {
  const double L = 1e-3, B = 1e6;
  const std::size_t count[] = {10, 0, 30, 20};  // doubles: 80, 0, 240, 160 bytes; 480 in all
  auto report = slowmo::sim::run({.workers = 4, .network = {.latency = L, .bandwidth = B}}, [&](Comm& c) {
    std::vector<double> x(count[c.rank()], 1.0), all(60);
    std::vector<std::size_t> counts(4);
    CHECK(c.all_gather_v(std::span<const double>(x), std::span<double>(all), std::span(counts)) == 60);
    CHECK(c.now() == doctest::Approx(3 * L + 0.75 * 480 / B));  // 3e-3 + 3.6e-4
  });
  // Worker q forwards every block but its successor's: 480 - 0, 480 - 240, 480 - 160, 480 - 80.
  CHECK(report.workers[0].bytes_sent == 480);
  CHECK(report.workers[1].bytes_sent == 240);
  CHECK(report.workers[2].bytes_sent == 320);
  CHECK(report.workers[3].bytes_sent == 400);
  CHECK(report.total_bytes_sent() == 3 * 480);  // (m-1) times the total, over the m links
}

TEST_CASE("virtual time: a sparse all_gather_v with 1% of a dense all-reduce's traffic costs 1% of its bandwidth") {
  // 8 workers, 1e5 floats: the ring all-reduce sends 2 * 7/8 * 400000 = 700000 bytes per
  // worker. A top-k style gather of k_r = 180 + 20 r floats (2000 in all, 8000 bytes) sends
  // 7/8 * 8000 = 7000 per worker on average: 1%. So is its bandwidth term:
  // (7/8 * 8000 / B) / (2 * 7/8 * 400000 / B) = 0.01.
  const double L = 50e-6, B = 1.25e9;
  const int m = 8;
  const std::size_t d = 100000;
  double dense = 0, sparse = 0;
  auto report = slowmo::sim::run({.workers = m, .network = {.latency = L, .bandwidth = B}}, [&](Comm& c) {
    std::vector<float> x(d, 1.0f), values(180 + 20 * std::size_t(c.rank()), 1.0f), all(2000);
    std::vector<std::size_t> counts(m);
    const double t0 = c.now();
    c.all_reduce(std::span<float>(x), slowmo::ReduceOp::mean);
    const double t1 = c.now();
    const std::uint64_t dense_bytes = c.bytes_sent();
    CHECK(c.all_gather_v(std::span<const float>(values), std::span<float>(all), std::span(counts)) == 2000);
    const double t2 = c.now();
    if (c.rank() == 0) dense = (t1 - t0) - 2 * (m - 1) * L, sparse = (t2 - t1) - (m - 1) * L;  // bandwidth terms
    CHECK(dense_bytes == 700000);
  });
  CHECK(dense == doctest::Approx(2.0 * 7 / 8 * 400000 / B));
  CHECK(sparse / dense == doctest::Approx(0.01));
  const std::uint64_t total = report.total_bytes_sent();
  CHECK(double(total - m * 700000) / double(m * 700000) == doctest::Approx(0.01));  // the gather's share
}

TEST_CASE("virtual time: a message arrives latency + bytes/bandwidth after it was sent") {
  const double L = 2e-3, B = 1e6;
  auto report = slowmo::sim::run({.workers = 2, .network = {.latency = L, .bandwidth = B}}, [&](Comm& c) {
    std::vector<double> out(500, 1.0), in(500);  // 4000 bytes: 4 ms on the wire
    if (c.rank() == 0) c.advance(0.1);           // worker 0 sends late; worker 1 waits for it
    c.exchange(std::span<const double>(out), 1.0, 1 - c.rank(), std::span<double>(in), 1 - c.rank());
    if (c.rank() == 1) CHECK(c.now() == doctest::Approx(0.1 + L + 4000 / B));
    if (c.rank() == 0) CHECK(c.now() == doctest::Approx(0.1));  // its message from 1 was already there
  });
  CHECK(report.workers[0].bytes_sent == 4000);
  CHECK(report.workers[0].messages_sent == 1);
}

TEST_CASE("virtual time: broadcast and barrier costs; a free network costs nothing") {
  const double L = 1e-3, B = 1e6;
  slowmo::sim::run({.workers = 5, .network = {.latency = L, .bandwidth = B}}, [&](Comm& c) {
    std::vector<float> x(250);  // 1000 bytes
    c.broadcast(std::span<float>(x), 2);
    CHECK(c.now() == doctest::Approx(3 * (L + 1000 / B)));  // ceil(log2 5) = 3 rounds
    c.barrier();
    CHECK(c.now() == doctest::Approx(3 * (L + 1000 / B) + 3 * L));
  });
  slowmo::sim::run({.workers = 5, .network = slowmo::sim::Network::free()}, [&](Comm& c) {
    std::vector<float> x(250);
    c.all_reduce(std::span<float>(x), slowmo::ReduceOp::sum);
    c.barrier();
    CHECK(c.now() == 0.0);
  });
}

TEST_CASE("compute model: slowdown 2 takes twice the virtual time; jitter is seeded") {
  auto report = slowmo::sim::run({.workers = 2, .slowdown = {1.0, 2.0}}, [](Comm& c) {
    for (int i = 0; i < 10; ++i) c.compute(0.1);
  });
  CHECK(report.workers[0].time == doctest::Approx(1.0));
  CHECK(report.workers[1].time == doctest::Approx(2.0));

  auto jittered = [](std::uint64_t seed) {
    return slowmo::sim::run({.workers = 3, .jitter = 0.2, .seed = seed}, [](Comm& c) {
      for (int i = 0; i < 100; ++i) c.compute(0.01);
    });
  };
  const auto a = jittered(1), b = jittered(1), c = jittered(2);
  for (int r = 0; r < 3; ++r) {
    CHECK(a.workers[std::size_t(r)].time == b.workers[std::size_t(r)].time);
    CHECK(a.workers[std::size_t(r)].time != c.workers[std::size_t(r)].time);
    // mean of U(0.8, 1.2) is 1: 100 draws stay well within 1 +- 0.1 (sd of the mean 0.012)
    CHECK(a.workers[std::size_t(r)].time == doctest::Approx(1.0).epsilon(0.1));
  }
}

TEST_CASE("the simulator runs workers one at a time, in (virtual clock, rank) order") {
  std::vector<int> order;  // no lock needed: one worker at a time
  slowmo::sim::run({.workers = 3, .network = slowmo::sim::Network::free()}, [&](Comm& c) {
    c.advance(0.1 * (3 - c.rank()));  // worker 2 is earliest, then 1, then 0
    c.barrier();                      // everyone at the same time: then by rank
    order.push_back(c.rank());
    c.advance(0.1 * (3 - c.rank()));
    std::vector<double> x(1);
    c.exchange(std::span<const double>(x), 0, (c.rank() + 1) % 3, std::span<double>(x), (c.rank() + 2) % 3);
    order.push_back(c.rank());
  });
  // After the barrier all clocks are equal (T): ranks 0, 1, 2 in turn. Then the clocks
  // become T+0.3, T+0.2, T+0.1 and the exchange leaves each at max(own, arrival of the
  // message from its left neighbour): worker 0 max(T+0.3, T+0.1) = T+0.3, worker 1
  // max(T+0.2, T+0.3) = T+0.3, worker 2 max(T+0.1, T+0.2) = T+0.2. So 2 resumes first, then
  // 0 and 1, tied on the clock, by rank.
  REQUIRE(order.size() == 6);
  CHECK(std::vector<int>(order.begin(), order.begin() + 3) == std::vector<int>{0, 1, 2});
  CHECK(std::vector<int>(order.begin() + 3, order.end()) == std::vector<int>{2, 0, 1});
}

TEST_CASE("scale: 256 workers with 1e5 float parameters each") {
  const int m = 256;
  const std::size_t d = 100000;
  auto report = slowmo::sim::run({.workers = m}, [&](Comm& c) {
    std::vector<float> x(d, float(c.rank()));
    for (int round = 0; round < 3; ++round) {
      c.all_reduce(std::span<float>(x), slowmo::ReduceOp::mean);
      CHECK(x[d - 1] == (m - 1) / 2.0f);  // exact: (0 + ... + 255) / 256 = 127.5
    }
  });
  CHECK(report.workers.size() == m);
}
