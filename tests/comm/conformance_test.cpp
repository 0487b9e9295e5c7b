// The conformance suite on the in-process backends, for several worker counts (powers of
// two and not), and the cross-backend identity simulator == threads, bit for bit.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <slowmo/comm/simulator.hpp>
#include <slowmo/comm/single_worker.hpp>
#include <slowmo/comm/threads.hpp>

#include "comm/conformance.hpp"
#include "comm/observed_server.hpp"

static_assert(slowmo::Communicator<slowmo::sim::Comm>);
static_assert(slowmo::Communicator<slowmo::threads::Comm>);
static_assert(slowmo::check_communicator<slowmo::sim::Comm>());
static_assert(slowmo::check_gather_communicator<slowmo::sim::Comm>());
static_assert(slowmo::check_gather_communicator<slowmo::threads::Comm>());
static_assert(slowmo::check_gather_communicator<slowmo::SingleWorker>());
static_assert(slowmo::check_neighbor_communicator<slowmo::sim::Comm>());
static_assert(slowmo::check_neighbor_communicator<slowmo::threads::Comm>());
static_assert(slowmo::SharedModelCommunicator<slowmo::sim::Comm>);
static_assert(slowmo::SharedModelCommunicator<slowmo::threads::Comm>);
static_assert(slowmo::check_shared_model_communicator<slowmo::sim::Comm>());
static_assert(slowmo::check_shared_model_communicator<slowmo::threads::Comm>());

TEST_CASE("conformance: simulator") {
  for (int m : {1, 2, 3, 4, 5, 6, 8, 16}) {
    CAPTURE(m);
    CHECK_NOTHROW(slowmo::sim::run({.workers = m}, [](slowmo::sim::Comm& c) { conformance::all(c); }));
  }
}

TEST_CASE("conformance: threads") {
  for (int m : {1, 2, 3, 4, 5, 8}) {
    CAPTURE(m);
    CHECK_NOTHROW(slowmo::threads::run({.workers = m}, [](slowmo::threads::Comm& c) { conformance::all(c); }));
  }
}

static_assert(slowmo::check_split_communicator<slowmo::sim::Comm>());
static_assert(slowmo::check_split_communicator<slowmo::threads::Comm>());

TEST_CASE("conformance: groups from split() on the simulator and threads") {
  // m = 4 splits 2 + 2 and 3 + 1; 7 makes groups of odd sizes; 3 singletons (r % 3); 1 a
  // world of one. Threads run the same engine: the size that splits both ways suffices.
  for (int m : {1, 3, 4, 7}) {
    CAPTURE(m);
    CHECK_NOTHROW(slowmo::sim::run({.workers = m}, [](slowmo::sim::Comm& c) { conformance::groups(c); }));
    if (m == 4)
      CHECK_NOTHROW(slowmo::threads::run({.workers = m}, [](slowmo::threads::Comm& c) { conformance::groups(c); }));
  }
}

static_assert(slowmo::check_non_blocking_communicator<slowmo::sim::Comm>());
static_assert(slowmo::check_non_blocking_communicator<slowmo::threads::Comm>());
static_assert(slowmo::check_non_blocking_communicator<slowmo::SingleWorker>());

TEST_CASE("conformance: non-blocking all-reduce on the simulator, threads and a single worker") {
  for (int m : {1, 2, 3, 4, 5}) {
    CAPTURE(m);
    auto both = [](auto& c) {
      conformance::non_blocking<float>(c);
      conformance::non_blocking<double>(c);
      auto g = c.split(c.rank() % 2, 0);  // and on groups
      conformance::non_blocking<double>(g);
    };
    CHECK_NOTHROW(slowmo::sim::run({.workers = m}, both));
    CHECK_NOTHROW(slowmo::sim::run({.workers = m, .network = {.latency = 1e-3, .bandwidth = 1e6}}, both));
    CHECK_NOTHROW(slowmo::threads::run({.workers = m}, both));
  }
  slowmo::SingleWorker solo;
  CHECK_NOTHROW(conformance::non_blocking<double>(solo));
}

TEST_CASE("conformance: the shared model on the simulator, with free and costly networks") {
  for (int m : {1, 2, 3, 4, 5, 8}) {
    CAPTURE(m);
    CHECK_NOTHROW(slowmo::sim::run({.workers = m}, [](slowmo::sim::Comm& c) {
      conformance::host_model_errors<double>(c);
      conformance::shared_model<double>(c);
    }));
    CHECK_NOTHROW(slowmo::sim::run({.workers = m}, [](slowmo::sim::Comm& c) {
      conformance::host_model_errors<float>(c);
      conformance::shared_model<float>(c);
    }));
    // Stragglers, late messages and a busy server reorder the arrivals; the checks hold.
    std::vector<double> delay(static_cast<std::size_t>(m), 0.0);
    delay.back() = 3e-3;
    CHECK_NOTHROW(slowmo::sim::run({.workers = m,
                                    .network = {.latency = 1e-3, .bandwidth = 1e5},
                                    .jitter = 0.5,
                                    .seed = 3,
                                    .message_delay = delay,
                                    .server_seconds_per_update = 2e-3},
                                   [](slowmo::sim::Comm& c) {
                                     slowmo::charge_compute(c, 1e-3 * c.rank());
                                     conformance::shared_model<double>(c, 20);
                                   }));
  }
}

TEST_CASE("conformance: the shared model on threads") {
  for (int m : {1, 2, 3, 4, 8}) {
    CAPTURE(m);
    CHECK_NOTHROW(slowmo::threads::run({.workers = m}, [](slowmo::threads::Comm& c) {
      conformance::host_model_errors<double>(c);
      conformance::shared_model<double>(c);
    }));
    CHECK_NOTHROW(slowmo::threads::run({.workers = m}, [](slowmo::threads::Comm& c) {
      conformance::host_model_errors<float>(c);
      conformance::shared_model<float>(c);
    }));
  }
}

TEST_CASE("conformance: single worker") {
  slowmo::SingleWorker solo;
  CHECK_NOTHROW(conformance::all(solo));
}

TEST_CASE("all-gathers: the simulator and threads give the same bytes; mixed sizes in one run") {
  // Top-k style payload: int32 indices and float values of a per-worker length, gathered
  // twice per round, with an all-reduce between, as a compressed reduce policy would.
  for (int m : {2, 3, 5}) {
    CAPTURE(m);
    auto program = [m](auto& c, std::vector<float>& out) {
      const int r = c.rank();
      for (int round = 0; round < 4; ++round) {
        const std::size_t k = std::size_t((r + round) % 3 + 1);
        std::vector<std::int32_t> idx(k), all_idx(3 * std::size_t(m));
        std::vector<float> val(k), all_val(3 * std::size_t(m));
        for (std::size_t j = 0; j < k; ++j) {
          idx[j] = std::int32_t(10 * r + int(j));
          val[j] = float(r) + 0.25f * float(j);
        }
        std::vector<std::size_t> ci(static_cast<std::size_t>(m)), cv(static_cast<std::size_t>(m));
        const std::size_t ni = c.all_gather_v(std::span<const std::int32_t>(idx), std::span<std::int32_t>(all_idx),
                                              std::span(ci));
        std::vector<float> sum(1, float(ni));
        c.all_reduce(std::span<float>(sum), slowmo::ReduceOp::sum);
        const std::size_t nv = c.all_gather_v(std::span<const float>(val), std::span<float>(all_val), std::span(cv));
        conformance::expect(ni == nv && ci == cv && sum[0] == float(std::size_t(m) * ni), "worker ", r, " round ",
                            round, ": index and value gathers disagree");
        for (std::size_t i = 0; i < nv; ++i) out.push_back(all_val[i] + float(all_idx[i]));
      }
    };
    std::vector<std::vector<float>> sim(static_cast<std::size_t>(m)), thr(static_cast<std::size_t>(m));
    slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& c) { program(c, sim[std::size_t(c.rank())]); });
    slowmo::threads::run({.workers = m}, [&](slowmo::threads::Comm& c) { program(c, thr[std::size_t(c.rank())]); });
    CHECK(sim == thr);
    CHECK(sim.front() == sim.back());  // every worker gathered the same
  }
}

TEST_CASE("cross-backend: the same SPMD program is bit-identical on the simulator, run to run and on threads") {
  for (int m : {3, 4, 7}) {
    CAPTURE(m);
    auto collect = [m](auto run) {
      std::vector<std::vector<double>> out(static_cast<std::size_t>(m));
      run([&](auto& comm) { out[static_cast<std::size_t>(comm.rank())] = conformance::spmd_program(comm); });
      return out;
    };
    const auto sim1 = collect([m](auto f) { slowmo::sim::run({.workers = m}, f); });
    const auto sim2 = collect([m](auto f) {
      slowmo::sim::run({.workers = m, .network = {.latency = 1e-3, .bandwidth = 1e6}, .jitter = 0.5, .seed = 7}, f);
    });
    const auto thr = collect([m](auto f) { slowmo::threads::run({.workers = m}, f); });
    CHECK(sim1 == sim2);  // timing models change clocks, never values
    CHECK(sim1 == thr);
    // and the program really mixes: after the final broadcast, everyone holds the same
    CHECK(sim1[0] == sim1[static_cast<std::size_t>(m - 1)]);
  }
}

// ---- the shared model on both in-process backends ----------------------------------------

namespace {
struct SimBackend {
  template <class F>
  static auto run(int m, slowmo::detail::WorkerFailure on_failure, F fn) {
    return slowmo::sim::run({.workers = m, .worker_failure = on_failure}, fn);
  }
};
struct ThreadsBackend {
  template <class F>
  static auto run(int m, slowmo::detail::WorkerFailure on_failure, F fn) {
    return slowmo::threads::run({.workers = m, .worker_failure = on_failure}, fn);
  }
};
constexpr auto abort_run = slowmo::detail::WorkerFailure::abort_run;
constexpr auto leave = slowmo::detail::WorkerFailure::leave;

bool contains(const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); }
bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("shared model", Backend, shared_model_test) {
  SUBCASE("bytes: a push sends the model, a pull receives it; the server sends every pull") {
    // m = 3, 5 doubles (40 bytes); each worker pulls 3 times and pushes twice: it sends
    // 2 * 40 = 80 bytes in 2 messages and receives 3 * 40 = 120; the server sends
    // 9 * 40 = 360, receives 6 * 40 = 240, and applies 6 updates.
    std::vector<std::uint64_t> received(3);
    const auto report = Backend::run(3, abort_run, [&](auto& c) {
      c.host_model(std::make_unique<conformance::SumServer<double>>(std::vector<double>(5)));
      std::vector<double> x(5), d(5, 1.0);
      for (int k = 0; k < 2; ++k) {
        c.pull(std::span<double>(x));
        c.push(std::span<const double>(d));
      }
      c.pull(std::span<double>(x));
      received[std::size_t(c.rank())] = c.bytes_received();
    });
    for (int r = 0; r < 3; ++r) {
      CAPTURE(r);
      CHECK(received[std::size_t(r)] == 120);
      CHECK(report.workers[std::size_t(r)].bytes_received == 120);
      CHECK(report.workers[std::size_t(r)].bytes_sent == 80);
      CHECK(report.workers[std::size_t(r)].messages_sent == 2);
    }
    CHECK(report.server.updates == 6);
    CHECK(report.server.pulls == 9);
    CHECK(report.server.bytes_sent == 360);
    CHECK(report.server.bytes_received == 240);
    CHECK(report.failures.empty());
  }
  SUBCASE("the hosted server outlives rank 0's function; the others' servers are dropped") {
    // Rank 0 hosts and returns; workers 1..3 push 1, 2, 3 (as a vector of 2) ten times each:
    // the final model is 10 * (1 + 2 + 3) = 60 in both entries, after 30 updates.
    comm_test::Observed<double> record;
    const auto report = Backend::run(4, abort_run, [&](auto& c) {
      c.host_model(std::make_unique<comm_test::ObservedServer<double>>(std::vector<double>(2),
                                                                        c.rank() == 0 ? &record : nullptr));
      if (c.rank() == 0) return;
      std::vector<double> x(2), d(2, double(c.rank()));
      for (int k = 0; k < 10; ++k) {
        c.pull(std::span<double>(x));
        c.push(std::span<const double>(d));
      }
    });
    REQUIRE(record.destroyed);
    CHECK(record.final == std::vector<double>{60.0, 60.0});
    CHECK(record.order.size() == 30);
    CHECK(std::count(record.order.begin(), record.order.end(), 0) == 0);
    CHECK(report.server.updates == 30);
  }
  SUBCASE("WorkerFailure::leave: a worker that fails departs, the others go on, the model is intact") {
    // 4 workers pull and push d = (100 (r + 1) + k) * (1, 2, 3) in round k; worker 2 throws
    // instead of its 3rd push, after 2 pushes (rounds 0 and 1). The others push at least 10
    // times and until they see worker 2 in departed(). The model starts at (1, 2, 3):
    // final = (1, 2, 3) + (1, 2, 3) * [sum over the survivors of their rounds' 100 (r + 1) + k
    // + worker 2's 300 + 301].
    constexpr int m = 4;
    comm_test::Observed<double> record;
    std::vector<int> rounds(m, 0);
    std::vector<std::vector<int>> seen(m);
    const auto report = Backend::run(m, leave, [&](auto& c) {
      const int r = c.rank();
      c.host_model(std::make_unique<comm_test::ObservedServer<double>>(std::vector<double>{1, 2, 3},
                                                                        r == 0 ? &record : nullptr));
      std::vector<double> x(3), d(3);
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      for (int k = 0;; ++k) {
        if (k >= 10) {
          if (contains(c.departed(), 2)) break;
          if (std::chrono::steady_clock::now() > give_up) throw std::runtime_error("worker 2's departure never seen");
          std::this_thread::yield();  // threads: let worker 2 reach its 3rd push
        }
        c.pull(std::span<double>(x));
        slowmo::charge_compute(c, 0.01);
        if (r == 2 && k == 2) throw std::runtime_error("worker 2 fails at its 3rd push");
        for (std::size_t i = 0; i < 3; ++i) d[i] = double(100 * (r + 1) + k) * double(i + 1);
        c.push(std::span<const double>(d));
        rounds[std::size_t(r)] = k + 1;
      }
      seen[std::size_t(r)] = c.departed();
    });
    if (report.failures.size() != 1)
      for (const auto& f : report.failures) MESSAGE(f.rank, ": ", f.message);
    REQUIRE(report.failures.size() == 1);
    CHECK(report.failures[0].rank == 2);
    CHECK(report.failures[0].message == "worker 2 fails at its 3rd push");
    CHECK_THROWS_AS(std::rethrow_exception(report.failures[0].error), std::runtime_error);
    CHECK(rounds[2] == 2);
    double scale = 300 + 301;
    std::int64_t updates = 2;
    for (int r : {0, 1, 3}) {
      CAPTURE(r);
      CHECK(rounds[std::size_t(r)] >= 10);
      CHECK(contains(seen[std::size_t(r)], 2));
      for (int k = 0; k < rounds[std::size_t(r)]; ++k) scale += 100 * (r + 1) + k;
      updates += rounds[std::size_t(r)];
    }
    REQUIRE(record.destroyed);
    CHECK(record.final == std::vector<double>{1 + scale, 2 + 2 * scale, 3 + 3 * scale});
    CHECK(std::count(record.order.begin(), record.order.end(), 2) == 2);
    CHECK(report.server.updates == updates);
  }
  SUBCASE("WorkerFailure::leave: a collective, or a receive, that needs the departed worker fails naming it") {
    std::vector<std::string> barrier_error(3), exchange_error(3);
    std::vector<double> got(3, -1);
    const auto report = Backend::run(3, leave, [&](auto& c) {
      const int r = c.rank();
      if (r == 1) throw std::runtime_error("boom");
      barrier_error[std::size_t(r)] = conformance::comm_error_of([&] { c.barrier(); });
      // Workers 0 and 2 still exchange with each other; a receive from worker 1 fails.
      double out = 10.0 + r, in = -1;
      c.exchange(std::span<const double>(&out, 1), 1.0, 2 - r, std::span<double>(&in, 1), 2 - r);
      got[std::size_t(r)] = in;
      exchange_error[std::size_t(r)] = conformance::comm_error_of(
          [&] { c.exchange(std::span<const double>(&out, 1), 1.0, 2 - r, std::span<double>(&in, 1), 1); });
    });
    REQUIRE(report.failures.size() == 1);
    CHECK(report.failures[0].rank == 1);
    for (int r : {0, 2}) {
      CAPTURE(r);
      const std::string& b = barrier_error[std::size_t(r)];
      CHECK(has(b, slowmo::detail::concat("worker ", r, ": barrier needs every worker")));
      CHECK(has(b, "worker 1 (failed: boom) has left the run"));
      CHECK(got[std::size_t(r)] == 12.0 - r);
      CHECK(has(exchange_error[std::size_t(r)], "waits for a message from worker 1"));
      CHECK(has(exchange_error[std::size_t(r)], "worker 1 (failed: boom)"));
    }
  }
  SUBCASE("a server that throws: the pushing worker gets the exception, the version does not move") {
    // The server refuses a push whose first value is negative. Worker 0 pushes 1 twice, worker
    // 1 pushes 1 and then -1, which is refused: after a barrier, a pull reads version 3 and
    // the model 3.
    struct Picky final : slowmo::ModelServer<double> {
      double x = 0;
      std::size_t size() const override { return 1; }
      void apply(const slowmo::Arrival&, std::span<const double> d) override {
        if (d[0] < 0) throw std::domain_error("negative push");
        x += d[0];
      }
      void read(std::span<double> out) const override { out[0] = x; }
    };
    std::vector<std::string> refused(2);
    double final_x = -1;
    const auto report = Backend::run(2, abort_run, [&](auto& c) {
      c.host_model(std::make_unique<Picky>());
      double x = 0, one = 1, minus = -1;
      c.pull(std::span<double>(&x, 1));
      c.push(std::span<const double>(&one, 1));
      if (c.rank() == 1) {
        try {
          c.push(std::span<const double>(&minus, 1));
        } catch (const std::domain_error& e) {
          refused[1] = e.what();
        }
      } else {
        c.push(std::span<const double>(&one, 1));
      }
      c.barrier();
      const slowmo::Pulled p = c.pull(std::span<double>(&x, 1));
      if (c.rank() == 0) final_x = p.version == 3 ? x : -double(p.version);
    });
    CHECK(refused[1] == "negative push");
    CHECK(final_x == 3.0);
    CHECK(report.server.updates == 3);
    CHECK(report.workers[1].messages_sent == 1);  // only the accepted push counts
  }
  SUBCASE("WorkerFailure::abort_run (the default): a failure still ends the run while others push") {
    std::string e = "no error";
    try {
      Backend::run(3, abort_run, [](auto& c) {
        c.host_model(std::make_unique<conformance::SumServer<float>>(std::vector<float>(4)));
        std::vector<float> x(4), d(4, 1.0f);
        for (int k = 0;; ++k) {
          c.pull(std::span<float>(x));
          if (c.rank() == 1 && k == 5) throw std::runtime_error("gone");
          c.push(std::span<const float>(d));
        }
      });
    } catch (const slowmo::worker_error& err) {
      e = err.what();
    }
    CHECK(e == "worker 1 failed: gone");
  }
}
TEST_CASE_TEMPLATE_INVOKE(shared_model_test, SimBackend, ThreadsBackend);

namespace {
struct MissingBarrier {
  int rank() const { return 0; }
  int size() const { return 1; }
  template <class T>
  void all_reduce(std::span<T>, slowmo::ReduceOp) {}
  template <class T>
  void broadcast(std::span<T>, int) {}
  template <class T>
  double exchange(std::span<const T>, double, int, std::span<T>, int) {
    return 0;
  }
  double now() const { return 0; }
};
struct Complete : MissingBarrier {
  void barrier() {}
};
}  // namespace
static_assert(!slowmo::Communicator<MissingBarrier>);
static_assert(slowmo::Communicator<Complete>);
static_assert(!slowmo::Communicator<int>);
namespace {
struct GathersFloatOnly : Complete {
  void all_gather(std::span<const float>, std::span<float>) {}
  std::size_t all_gather_v(std::span<const float>, std::span<float>, std::span<std::size_t>) { return 0; }
};
struct Gathers : Complete {
  template <class T>
  void all_gather(std::span<const T>, std::span<T>) {}
  template <class T>
  std::size_t all_gather_v(std::span<const T>, std::span<T>, std::span<std::size_t>) {
    return 0;
  }
};
}  // namespace
// A refinement: the base concept does not ask for gathers; the refinement asks for all four types.
static_assert(!slowmo::GatherCommunicator<Complete>);
static_assert(!slowmo::GatherCommunicator<GathersFloatOnly>);
static_assert(slowmo::GatherCommunicator<Gathers> && slowmo::check_gather_communicator<Gathers>());
static_assert(!slowmo::GatherCommunicator<MissingBarrier>);
// The shared model is a refinement too: a Communicator without it is not one.
static_assert(!slowmo::SharedModelCommunicator<Complete>);
static_assert(!slowmo::SharedModelCommunicator<slowmo::SingleWorker>);

// neighbor_sum on the in-process backends: a pattern that is not consistent fails with the
// calls named, and a receive nobody will match is a deadlock, never a hang.
template <class Run>
void neighbor_sum_misuse(Run run) {
  // Call 1: worker 0 sends to worker 1, which lists no sources; call 2: a ring, so worker 1
  // finds call 1's message where it waits for call 2's.
  std::vector<std::string> errors(3);
  CHECK_NOTHROW(run([&](auto& c) {
    const int r = c.rank();
    std::vector<double> out(2, 1.0), in(2);
    const std::vector<int> none, first = r == 0 ? std::vector<int>{1} : none;
    c.neighbor_sum(std::span<const double>(out), 1.0, std::span<const int>(first), std::span<double>(in),
                   std::span<const int>(none));
    const std::vector<int> to{(r + 1) % 3}, from{(r + 2) % 3};
    errors[std::size_t(r)] = conformance::comm_error_of([&] {
      c.neighbor_sum(std::span<const double>(out), 1.0, std::span<const int>(to), std::span<double>(in),
                     std::span<const int>(from));
    });
  }));
  CHECK(errors[0].empty());
  CHECK(errors[1] ==
        "slowmo: neighbor_sum: worker 0 sent worker 1 a message in its call 1, but worker 1 did not list worker 0 "
        "among its sources in its call 1 (it is now in call 2); worker j must list i in its dests exactly when i "
        "lists j in its sources, in the same round");
  CHECK(errors[2].empty());
  // Worker 1 waits for worker 0, which sends nothing and returns.
  std::string what;
  try {
    run([&](auto& c) {
      std::vector<double> out(2, 1.0), in(2);
      const std::vector<int> none, from{0};
      c.neighbor_sum(std::span<const double>(out), 1.0, std::span<const int>(none), std::span<double>(in),
                     std::span<const int>(c.rank() == 1 ? from : none));
    });
  } catch (const slowmo::worker_error& e) {
    what = e.what();
  }
  CHECK(what.find("deadlock") != std::string::npos);
  CHECK(what.find("worker 1 waits in neighbor_sum for a message from worker 0") != std::string::npos);
}

TEST_CASE("neighbor_sum: an inconsistent pattern names the calls; an unmatched receive is a deadlock") {
  SUBCASE("simulator") {
    neighbor_sum_misuse([](auto&& f) { slowmo::sim::run({.workers = 3}, [&](slowmo::sim::Comm& c) { f(c); }); });
  }
  SUBCASE("threads") {
    neighbor_sum_misuse(
        [](auto&& f) { slowmo::threads::run({.workers = 3}, [&](slowmo::threads::Comm& c) { f(c); }); });
  }
}
