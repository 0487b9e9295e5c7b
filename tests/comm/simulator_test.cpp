// Simulator specifics: virtual time against the network-model formulas, the compute
// model, accounting, and scale.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <slowmo/comm/simulator.hpp>

#include "comm/observed_server.hpp"

namespace {
using slowmo::sim::Comm;
using Server = comm_test::ObservedServer<double>;
using Record = comm_test::Observed<double>;
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

TEST_CASE("groups: each group's collectives are charged to its members' clocks, with its size") {
  const double L = 1e-3, B = 1e6;
  const std::size_t n = 250;  // 2000 bytes of double
  std::vector<double> done(6);
  slowmo::sim::run({.workers = 6, .network = {.latency = L, .bandwidth = B}}, [&](Comm& c) {
    Comm g = c.split(c.rank() < 2 ? 0 : 1, 0);  // {0, 1} and {2, 3, 4, 5}
    c.advance(c.rank() < 2 ? 1.0 : 5.0);
    std::vector<double> x(n, 1.0);
    g.all_reduce(std::span<double>(x), slowmo::ReduceOp::sum);
    done[std::size_t(c.rank())] = c.now();
    CHECK(x[0] == double(g.size()));
  });
  // The split itself: a ring all-gather of (color, key), (m-1) L + (m-1)/m * 8 m / B over all 6.
  const double split = 5 * L + 5.0 / 6 * 48 / B;
  // {0, 1}: 2 L + bytes / B after its own arrival at 1 s, whatever the slower group does.
  for (int r : {0, 1}) CHECK(done[std::size_t(r)] == doctest::Approx(split + 1.0 + 2 * L + 2000 / B).epsilon(1e-12));
  // {2..5}: 2 * 3 L + 2 * 3/4 * bytes / B.
  for (int r : {2, 3, 4, 5})
    CHECK(done[std::size_t(r)] == doctest::Approx(split + 5.0 + 6 * L + 1.5 * 2000 / B).epsilon(1e-12));
}

TEST_CASE("two-level network: a collective pays the slowest link it uses, a message the link it takes") {
  const double Li = 1e-6, Bi = 1.25e10;  // inside a node: 1 us, 100 Gbit/s
  const double Lx = 1e-4, Bx = 1.25e8;   // between nodes: 100 us, 1 Gbit/s
  const std::size_t n = 1000;            // 8000 bytes of double
  const double bytes = 8000;
  std::vector<double> t_node(4), t_world(4), t_cross(4), t_near(4);
  slowmo::sim::run({.workers = 4,
                    .network = {.latency = Li, .bandwidth = Bi},
                    .workers_per_node = 2,
                    .between_nodes = {.latency = Lx, .bandwidth = Bx}},
                   [&](Comm& c) {
                     const auto r = std::size_t(c.rank());
                     Comm node = c.split(c.rank() / 2, 0);  // the two nodes
                     std::vector<double> x(n, 1.0);
                     double t0 = c.now();
                     node.all_reduce(std::span<double>(x), slowmo::ReduceOp::mean);
                     t_node[r] = c.now() - t0;
                     c.barrier();
                     t0 = c.now();
                     c.all_reduce(std::span<double>(x), slowmo::ReduceOp::mean);
                     t_world[r] = c.now() - t0;
                     c.barrier();
                     // Worker r sends to r + 2 (the other node) and receives from r - 2.
                     t0 = c.now();
                     c.exchange(std::span<const double>(x), 1.0, (c.rank() + 2) % 4, std::span<double>(x),
                                (c.rank() + 2) % 4);
                     t_cross[r] = c.now() - t0;
                     c.barrier();
                     t0 = c.now();
                     node.exchange(std::span<const double>(x), 1.0, 1 - node.rank(), std::span<double>(x),
                                   1 - node.rank());
                     t_near[r] = c.now() - t0;
                   });
  for (std::size_t r = 0; r < 4; ++r) {
    CAPTURE(r);
    CHECK(t_node[r] == doctest::Approx(2 * Li + bytes / Bi).epsilon(1e-9));              // m = 2, fast links
    CHECK(t_world[r] == doctest::Approx(6 * Lx + 1.5 * bytes / Bx).epsilon(1e-9));       // m = 4, slow links
    CHECK(t_cross[r] == doctest::Approx(Lx + bytes / Bx).epsilon(1e-9));                 // one slow message
    CHECK(t_near[r] == doctest::Approx(Li + bytes / Bi).epsilon(1e-9));                  // one fast message
  }
  CHECK_THROWS_WITH_AS(slowmo::sim::run({.workers = 2, .workers_per_node = -1}, [](Comm&) {}),
                       doctest::Contains("'workers_per_node' = -1"), slowmo::invalid_option);
  CHECK_THROWS_WITH_AS(
      slowmo::sim::run({.workers = 2, .workers_per_node = 1, .between_nodes = {.bandwidth = 0}}, [](Comm&) {}),
      doctest::Contains("'between_nodes.bandwidth' = 0"), slowmo::invalid_option);
}

TEST_CASE("non-blocking all-reduce: communication overlaps computation in virtual time") {
  const double L = 1e-4, B = 1e8;
  const int m = 4;
  const std::size_t n = 10000;  // 40000 bytes of float
  const double C = 2.0 * (m - 1) * L + 2.0 * (m - 1) / m * 40000 / B;  // the ring: 1.2 ms
  for (double compute : {0.25 * C, 3.0 * C}) {
    CAPTURE(compute);
    std::vector<double> started(m), done(m), blocking(m);
    slowmo::sim::run({.workers = m, .network = {.latency = L, .bandwidth = B}}, [&](Comm& c) {
      const auto r = std::size_t(c.rank());
      c.advance(1e-3 * c.rank());  // arrivals at 0, 1, 2, 3 ms
      std::vector<float> x(n, 1.0f);
      auto req = c.start_all_reduce(std::span<float>(x), slowmo::ReduceOp::sum);
      started[r] = c.now();  // returns at once
      c.compute(compute);
      req.wait();
      done[r] = c.now();
      CHECK(x[7] == float(m));
      // The same exchange, blocking, then the same computation.
      c.barrier();
      const double t0 = c.now();
      c.all_reduce(std::span<float>(x), slowmo::ReduceOp::sum);
      c.compute(compute);
      blocking[r] = c.now() - t0;
    });
    for (int r = 0; r < m; ++r) {
      CAPTURE(r);
      CHECK(started[std::size_t(r)] == doctest::Approx(1e-3 * r).epsilon(1e-12));
      // Completes at the last arrival (3 ms) plus C; wait() returns at max(own clock, that).
      const double own = 1e-3 * r + compute;
      CHECK(done[std::size_t(r)] == doctest::Approx(std::max(own, 3e-3 + C)).epsilon(1e-12));
      CHECK(blocking[std::size_t(r)] == doctest::Approx(C + compute).epsilon(1e-12));  // no overlap
    }
  }
}

TEST_CASE("non-blocking all-reduce: a mismatch or a departed worker fails the wait, naming them") {
  std::vector<std::string> errors(3);
  slowmo::sim::run({.workers = 3}, [&](Comm& c) {
    std::vector<double> x(c.rank() == 2 ? 4 : 3);
    auto req = c.start_all_reduce(std::span<double>(x), slowmo::ReduceOp::sum);
    try {
      req.wait();
    } catch (const slowmo::comm_error& e) {
      errors[std::size_t(c.rank())] = e.what();
    }
  });
  for (const auto& e : errors) {
    CHECK(e.find("mismatched collective") != std::string::npos);
    CHECK(e.find("of 4 double") != std::string::npos);
  }
  const auto report = slowmo::sim::run({.workers = 3, .worker_failure = slowmo::sim::WorkerFailure::leave},
                                       [&](Comm& c) {
                                         if (c.rank() == 1) throw std::runtime_error("gone");
                                         c.advance(1.0);
                                         // (at the start when worker 1 has left already; else at the wait)
                                         auto attempt = [&] {
                                           std::vector<double> x(3);
                                           auto req = c.start_all_reduce(std::span<double>(x), slowmo::ReduceOp::sum);
                                           req.wait();
                                         };
                                         CHECK_THROWS_WITH_AS(attempt(), doctest::Contains("worker 1 (failed: gone)"),
                                                              slowmo::comm_error);
                                       });
  CHECK(report.failures.size() == 1);
  for (const auto& f : report.failures) {
    CAPTURE(f.message);
    CHECK(f.rank == 1);
  }
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

// ---- the shared model as events in virtual time ------------------------------------------
//
// Notation: L latency, B/bw the model's bytes over the bandwidth, S server seconds per
// update, d_w worker w's message_delay. push at clock t arrives at t + d_w + L + B/bw, is
// applied at max(arrival, free) + S and returns at that + L; pull at t arrives at
// t + d_w + L, reads at max(arrival, free) and returns at that + B/bw + L; events are
// served in (arrival, rank) order. host_model meets like a barrier: ceil(log2 m) L after the
// latest arrival (clock + d_w).

TEST_CASE("shared model: a hand-worked schedule of 3 workers, clocks and order of application") {
  // L = 1/8 s, 2 doubles = 16 bytes at 64 B/s: B/bw = 1/4 s; S = 1/2 s (all exact in binary).
  // host_model: ceil(log2 3) = 2 rounds: everyone at 2L = 0.25.
  // Pulls at 0.25 arrive at 0.375, tied: served by rank, all at 0.375, version 0; every
  //   clock becomes 0.375 + 0.25 + 0.125 = 0.75.
  // Compute: worker 0 1 s (-> 1.75), workers 1 and 2 0.5 s (-> 1.25). Pushes arrive at
  //   worker 0: 1.75 + 0.375 = 2.125; workers 1 and 2: 1.25 + 0.375 = 1.625 (tied: rank 1 first).
  //   worker 1: start 1.625, applied at 2.125 (version 1, staleness 0), returns 2.25;
  //   worker 2: start max(1.625, 2.125) = 2.125, applied 2.625 (version 2, staleness 1), returns 2.75;
  //   worker 0: start max(2.125, 2.625) = 2.625, applied 3.125 (version 3, staleness 2), returns 3.25.
  // Pulls again, arriving at 2.375 (w1), 2.875 (w2), 3.375 (w0), after every push in that
  //   order: workers 1 and 2 read at max(., free = 3.125) = 3.125 and return at 3.5; worker 0
  //   reads at 3.375 and returns at 3.75. All read version 3, the model (1+2+3, 10+20+30).
  const double L = 0.125, bw = 64, S = 0.5;
  struct Seen {
    double after_pull = 0, after_push = 0, end = 0;
    slowmo::Pulled first, second;
    slowmo::Pushed push;
    std::vector<double> x;
  };
  std::vector<Seen> seen(3);
  Record record;
  const auto report = slowmo::sim::run(
      {.workers = 3, .network = {.latency = L, .bandwidth = bw}, .server_seconds_per_update = S}, [&](Comm& c) {
        const int r = c.rank();
        Seen& me = seen[std::size_t(r)];
        c.host_model(std::make_unique<Server>(std::vector<double>(2), r == 0 ? &record : nullptr));
        CHECK(c.now() == 0.25);
        std::vector<double> x(2), d{double(r + 1), 10.0 * (r + 1)};
        me.first = c.pull(std::span<double>(x));
        me.after_pull = c.now();
        c.compute(r == 0 ? 1.0 : 0.5);
        me.push = c.push(std::span<const double>(d));
        me.after_push = c.now();
        me.second = c.pull(std::span<double>(x));
        me.end = c.now();
        me.x = x;
      });
  const double after_push[] = {3.25, 2.25, 2.75}, end[] = {3.75, 3.5, 3.5};
  const std::int64_t version[] = {3, 1, 2}, staleness[] = {2, 0, 1};
  for (int r = 0; r < 3; ++r) {
    CAPTURE(r);
    const Seen& me = seen[std::size_t(r)];
    CHECK(me.first.version == 0);
    CHECK(me.after_pull == 0.75);
    CHECK(me.push.version == version[r]);
    CHECK(me.push.staleness == staleness[r]);
    CHECK(me.after_push == after_push[r]);
    CHECK(me.second.version == 3);
    CHECK(me.end == end[r]);
    CHECK(me.x == std::vector<double>{6, 60});
    CHECK(report.workers[std::size_t(r)].time == end[r]);
    CHECK(report.workers[std::size_t(r)].bytes_sent == 16);
    CHECK(report.workers[std::size_t(r)].messages_sent == 1);
    CHECK(report.workers[std::size_t(r)].bytes_received == 32);
  }
  CHECK(record.order == std::vector<int>{1, 2, 0});
  CHECK(record.staleness == std::vector<std::int64_t>{0, 1, 2});  // the server is told what each pusher hears
  CHECK(report.server.updates == 3);
  CHECK(report.server.pulls == 6);
  CHECK(report.server.bytes_sent == 6 * 16);
  CHECK(report.server.bytes_received == 3 * 16);
}

TEST_CASE("shared model: pushes that arrive together are applied by rank, whoever issued first") {
  // Free network, message_delay (0, 0.5). host_model: both at max(0, 0 + 0.5) = 0.5.
  // Worker 0 computes 1 s, then pulls at 1.5 (arrives 1.5) and pushes at once (arrives 1.5).
  // Worker 1 pulls at 0.5 (arrives 1.0: served first), then pushes at 1.0: it arrives at
  // 1.0 + 0.5 = 1.5, tied with worker 0's. Worker 1 issues its push first (at virtual 1.0,
  // while worker 0 waits for its pull), yet rank 0's is applied first.
  Record record;
  std::vector<int> issued;  // one worker runs at a time: no lock needed
  std::vector<slowmo::Pushed> pushed(2);
  slowmo::sim::run({.workers = 2, .network = slowmo::sim::Network::free(), .message_delay = {0.0, 0.5}}, [&](Comm& c) {
    const int r = c.rank();
    c.host_model(std::make_unique<Server>(std::vector<double>(1), r == 0 ? &record : nullptr));
    CHECK(c.now() == 0.5);
    std::vector<double> x(1), d{1.0};
    if (r == 0) c.compute(1.0);
    c.pull(std::span<double>(x));
    issued.push_back(r);
    pushed[std::size_t(r)] = c.push(std::span<const double>(d));
    CHECK(c.now() == 1.5);
  });
  CHECK(issued == std::vector<int>{1, 0});
  CHECK(record.order == std::vector<int>{0, 1});
  CHECK(pushed[0].version == 1);
  CHECK(pushed[0].staleness == 0);
  CHECK(pushed[1].version == 2);
  CHECK(pushed[1].staleness == 1);  // worker 0's update came after its pull
}

TEST_CASE("shared model: a pull that reaches the server before a push does not see it, though issued after it") {
  // L = 1/8, B/bw = 16 bytes / 64 B/s = 1/4, S = 0, m = 2: host_model at L = 0.125.
  // Both pull at 0.125 (arrive 0.25) and return at 0.25 + 0.25 + 0.125 = 0.625.
  // Worker 0 (first by rank) pushes at 0.625: it arrives at 0.625 + 0.125 + 0.25 = 1.0.
  // Then worker 1 pulls at 0.625: its request arrives at 0.75 < 1.0, so it reads version 0,
  // the initial model, and returns at 0.75 + 0.375 = 1.125; its next pull arrives at 1.25
  // and reads version 1 (returning at 1.625). Worker 0's push is applied at 1.0, back at 1.125.
  Record record;
  std::vector<std::string> issued;
  std::vector<slowmo::Pulled> pulls;
  std::vector<std::vector<double>> reads;
  std::vector<double> clocks;
  slowmo::sim::run({.workers = 2, .network = {.latency = 0.125, .bandwidth = 64}}, [&](Comm& c) {
    const int r = c.rank();
    c.host_model(std::make_unique<Server>(std::vector<double>{5, 7}, r == 0 ? &record : nullptr));
    std::vector<double> x(2), d{1, 2};
    c.pull(std::span<double>(x));
    CHECK(c.now() == 0.625);
    if (r == 0) {
      issued.push_back("push 0");
      const slowmo::Pushed p = c.push(std::span<const double>(d));
      CHECK(p.version == 1);
      CHECK(c.now() == 1.125);
      return;
    }
    for (int k = 0; k < 2; ++k) {
      issued.push_back("pull 1");
      pulls.push_back(c.pull(std::span<double>(x)));
      reads.push_back(x);
      clocks.push_back(c.now());
    }
  });
  CHECK(issued == std::vector<std::string>{"push 0", "pull 1", "pull 1"});
  REQUIRE(pulls.size() == 2);
  CHECK(pulls[0].version == 0);
  CHECK(reads[0] == std::vector<double>{5, 7});
  CHECK(clocks[0] == 1.125);
  CHECK(pulls[1].version == 1);
  CHECK(reads[1] == std::vector<double>{6, 9});
  CHECK(clocks[1] == 1.625);
}

TEST_CASE("shared model: message_delay moves a push after one issued later") {
  // Free network, message_delay (1, 0). host_model: both at max(0 + 1, 0) = 1.
  // Worker 0 pulls at 1 (arrives 2, returns 2) and pushes at 2: it arrives at 3.
  // Worker 1 pulls at 1 (arrives 1), computes 1.5 s and pushes at 2.5: it arrives at 2.5.
  // Worker 0 issued first (virtual 2 < 2.5) but worker 1's update is version 1 and worker 0's
  // version 2, with staleness 1; they return at 3 and 2.5.
  Record record;
  std::vector<slowmo::Pushed> pushed(2);
  std::vector<double> issued_at(2), done_at(2);
  slowmo::sim::run({.workers = 2, .network = slowmo::sim::Network::free(), .message_delay = {1.0, 0.0}}, [&](Comm& c) {
    const int r = c.rank();
    c.host_model(std::make_unique<Server>(std::vector<double>(1), r == 0 ? &record : nullptr));
    std::vector<double> x(1), d{1.0};
    c.pull(std::span<double>(x));
    if (r == 1) c.compute(1.5);
    issued_at[std::size_t(r)] = c.now();
    pushed[std::size_t(r)] = c.push(std::span<const double>(d));
    done_at[std::size_t(r)] = c.now();
  });
  CHECK(issued_at == std::vector<double>{2.0, 2.5});
  CHECK(record.order == std::vector<int>{1, 0});
  CHECK(pushed[1].version == 1);
  CHECK(pushed[1].staleness == 0);
  CHECK(pushed[0].version == 2);
  CHECK(pushed[0].staleness == 1);
  CHECK(done_at == std::vector<double>{3.0, 2.5});
}

TEST_CASE("shared model: server_seconds_per_update makes a queue") {
  // Free network, S = 1/4, m = 3: everyone pulls at 0, meets at a barrier (free) and pushes
  // at 0; the three pushes arrive together and are served by rank, finishing S apart:
  // 0.25, 0.5, 0.75 (versions 1, 2, 3; staleness 0, 1, 2). Worker 0 then pulls at 0.25; its
  // request queues behind the two pushes that arrived before it: read at 0.75, version 3.
  std::vector<double> done(3);
  std::vector<slowmo::Pushed> pushed(3);
  slowmo::Pulled after{};
  double after_at = 0;
  slowmo::sim::run(
      {.workers = 3, .network = slowmo::sim::Network::free(), .server_seconds_per_update = 0.25}, [&](Comm& c) {
        const int r = c.rank();
        c.host_model(std::make_unique<Server>(std::vector<double>(1), nullptr));
        std::vector<double> x(1), d{1.0};
        c.pull(std::span<double>(x));
        CHECK(c.now() == 0.0);
        c.barrier();
        pushed[std::size_t(r)] = c.push(std::span<const double>(d));
        done[std::size_t(r)] = c.now();
        if (r == 0) {
          after = c.pull(std::span<double>(x));
          after_at = c.now();
        }
      });
  CHECK(done == std::vector<double>{0.25, 0.5, 0.75});
  for (int r = 0; r < 3; ++r) {
    CHECK(pushed[std::size_t(r)].version == r + 1);
    CHECK(pushed[std::size_t(r)].staleness == r);
  }
  CHECK(after.version == 3);
  CHECK(after_at == 0.75);
}

namespace {
/// An asynchronous program whose result depends on the order of arrival (x = 0.9 x + d with
/// d a function of the parameters read), run on a costly network with jitter, late messages
/// and a busy server. `perturb`: every worker sleeps a few real milliseconds at times, which
/// changes how the host schedules the threads and nothing else.
struct Trace {
  std::vector<std::vector<double>> per_worker;  // pull versions, push versions, staleness, clocks
  std::vector<int> order;
  std::vector<double> model;
  bool operator==(const Trace&) const = default;
};
Trace async_program(bool perturb) {
  constexpr int m = 5, rounds = 25;
  Trace t;
  t.per_worker.resize(m);
  Record record;
  slowmo::sim::run({.workers = m,
                    .network = {.latency = 1e-3, .bandwidth = 1e7},
                    .jitter = 0.3,
                    .seed = 11,
                    .message_delay = {0, 2e-3, 0, 1e-3, 0},
                    .server_seconds_per_update = 2e-4},
                   [&](Comm& c) {
                     const int r = c.rank();
                     c.host_model(std::make_unique<Server>(std::vector<double>(64, 0.5), r == 0 ? &record : nullptr,
                                                           0.9));
                     std::vector<double> x(64), d(64);
                     auto& out = t.per_worker[std::size_t(r)];
                     for (int k = 0; k < rounds; ++k) {
                       out.push_back(double(c.pull(std::span<double>(x)).version));
                       if (perturb && (r + k) % 3 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
                       c.compute(0.01 * (1 + r % 2));
                       for (std::size_t i = 0; i < d.size(); ++i) d[i] = 0.1 * std::sin(x[i] + r + 0.01 * double(k * i));
                       const slowmo::Pushed p = c.push(std::span<const double>(d));
                       out.push_back(double(p.version));
                       out.push_back(double(p.staleness));
                       out.push_back(c.now());
                     }
                   });
  t.order = record.order;
  t.model = record.final;
  return t;
}
}  // namespace

TEST_CASE("shared model: bit-reproducible, whatever the host's threads do") {
  const Trace a = async_program(false), b = async_program(false), c = async_program(true);
  CHECK(a == b);
  CHECK(a == c);
  REQUIRE(a.order.size() == 5 * 25);
  // The program is really asynchronous: arrivals are not in rank order, and pushes are stale.
  bool interleaved = false;
  for (std::size_t i = 0; i + 1 < a.order.size(); ++i) interleaved = interleaved || a.order[i + 1] < a.order[i];
  CHECK(interleaved);
  double stale = 0;
  for (const auto& w : a.per_worker)
    for (std::size_t j = 2; j < w.size(); j += 4) stale += w[j];
  CHECK(stale > 0);
}

TEST_CASE("shared model: fault injection counts pulls and pushes; a leaving worker keeps the model intact") {
  // Worker 1's calls: host_model (1), pull (2), push (3), pull (4), push (5), pull (6), push (7):
  // fail_at_call = 7 fails it at its 3rd push, after 2 pushes of 1. Workers 0 and 2 push 1
  // five times each: the model ends at 5 + 2 + 5 = 12, after 12 updates.
  Record record;
  const auto report = slowmo::sim::run(
      {.workers = 3, .fail_at_call = {0, 7, 0}, .worker_failure = slowmo::sim::WorkerFailure::leave}, [&](Comm& c) {
        c.host_model(std::make_unique<Server>(std::vector<double>(1), c.rank() == 0 ? &record : nullptr));
        std::vector<double> x(1), d{1.0};
        for (int k = 0; k < 5; ++k) {
          c.pull(std::span<double>(x));
          c.push(std::span<const double>(d));
        }
      });
  REQUIRE(report.failures.size() == 1);
  CHECK(report.failures[0].rank == 1);
  CHECK(report.failures[0].message ==
        "slowmo: injected fault: worker 1 fails at its communication call 7 (push)");
  CHECK(record.final == std::vector<double>{12});
  CHECK(report.server.updates == 12);
}

TEST_CASE("shared model: departed() lists who left by the caller's virtual clock, by time") {
  // Free network; workers 0, 1, 2 compute 3, 2, 1 s and return (the simulator runs them to
  // their end in rank order, before worker 3 even starts); worker 3 asks every 0.5 s: it sees
  // worker 2 from 1 s, 1 from 2 s, 0 from 3 s.
  std::vector<std::vector<int>> seen;
  slowmo::sim::run({.workers = 4, .network = slowmo::sim::Network::free()}, [&](Comm& c) {
    if (c.rank() < 3) {
      c.compute(3.0 - c.rank());
      return;
    }
    for (int k = 1; k <= 6; ++k) {
      c.compute(0.5);
      seen.push_back(c.departed());
    }
  });
  const std::vector<std::vector<int>> expected{{}, {2}, {2}, {2, 1}, {2, 1}, {2, 1, 0}};
  CHECK(seen == expected);
  // departed() lets the workers behind the caller run first: worker 0 at 5 s sees worker 1,
  // which had not started when worker 0 asked, leave at 1 s.
  std::vector<int> at5;
  slowmo::sim::run({.workers = 2, .network = slowmo::sim::Network::free()}, [&](Comm& c) {
    c.compute(c.rank() == 0 ? 5.0 : 1.0);
    if (c.rank() == 0) at5 = c.departed();
  });
  CHECK(at5 == std::vector<int>{1});
}

TEST_CASE("shared model: pending events are no deadlock; a real one is still reported") {
  // Worker 0 waits in a barrier while worker 1 pushes 3 times: each time nobody is runnable,
  // and the pending push is served rather than reported. Then worker 1 returns: a deadlock.
  std::string e = "no error";
  std::vector<std::int64_t> versions;
  try {
    slowmo::sim::run({.workers = 2}, [&](Comm& c) {
      c.host_model(std::make_unique<Server>(std::vector<double>(3), nullptr));
      if (c.rank() == 0) {
        c.barrier();
        return;
      }
      std::vector<double> x(3), d(3, 1.0);
      c.pull(std::span<double>(x));
      for (int k = 0; k < 3; ++k) versions.push_back(c.push(std::span<const double>(d)).version);
    });
  } catch (const slowmo::worker_error& err) {
    e = err.what();
  }
  CHECK(versions == std::vector<std::int64_t>{1, 2, 3});
  CHECK(e.find("deadlock") != std::string::npos);
  CHECK(e.find("worker 0 waits in barrier") != std::string::npos);
  CHECK(e.find("worker 1 has returned") != std::string::npos);
}

TEST_CASE("shared model: server_seconds_per_update is validated") {
  auto noop = [](Comm&) {};
  CHECK_THROWS_WITH_AS(slowmo::sim::run({.workers = 2, .server_seconds_per_update = -1}, noop),
                       doctest::Contains("'server_seconds_per_update' = -1"), slowmo::invalid_option);
  CHECK_THROWS_WITH_AS(slowmo::sim::run({.workers = 2, .server_seconds_per_update = std::nan("")}, noop),
                       doctest::Contains("'server_seconds_per_update'"), slowmo::invalid_option);
}
