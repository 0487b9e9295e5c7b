// Bad input and faults on the in-process backends: every worker gets a clear error,
// nobody hangs, and run() names the failing worker.
#include <doctest/doctest.h>

#include <atomic>
#include <span>
#include <string>
#include <vector>

#include <slowmo/comm/simulator.hpp>
#include <slowmo/comm/threads.hpp>

namespace {

template <class Run>
std::string run_error(Run run) {
  try {
    run();
  } catch (const slowmo::worker_error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("faults", Backend, faults_test) {
  auto run = [](int m, auto fn) { Backend::run(m, fn); };

  SUBCASE("buffers of different lengths in one all_reduce: a clear error on every worker") {
    std::atomic<int> saw_error{0};
    const std::string e = run_error([&] {
      run(3, [&](auto& c) {
        std::vector<float> x(c.rank() == 1 ? 5 : 4);
        try {
          c.all_reduce(std::span<float>(x), slowmo::ReduceOp::sum);
        } catch (const slowmo::comm_error& err) {
          if (std::string(err.what()).find("mismatched collective") != std::string::npos) ++saw_error;
          throw;
        }
      });
    });
    CHECK(saw_error == 3);
    CHECK(e.find("worker 0 failed") != std::string::npos);
    CHECK(e.find("of 5 float") != std::string::npos);
    CHECK(e.find("of 4 float") != std::string::npos);
  }
  SUBCASE("float on one worker, double on another") {
    const std::string e = run_error([&] {
      run(2, [](auto& c) {
        if (c.rank() == 0) {
          std::vector<float> x(3);
          c.all_reduce(std::span<float>(x), slowmo::ReduceOp::sum);
        } else {
          std::vector<double> x(3);
          c.all_reduce(std::span<double>(x), slowmo::ReduceOp::sum);
        }
      });
    });
    CHECK(e.find("3 float") != std::string::npos);
    CHECK(e.find("3 double") != std::string::npos);
  }
  SUBCASE("mismatched broadcast root, and barrier against all_reduce") {
    std::string e = run_error([&] {
      run(3, [](auto& c) {
        std::vector<double> x(2);
        c.broadcast(std::span<double>(x), c.rank() == 2 ? 1 : 0);
      });
    });
    CHECK(e.find("root 1") != std::string::npos);
    CHECK(e.find("root 0") != std::string::npos);
    e = run_error([&] {
      run(2, [](auto& c) {
        std::vector<double> x(2);
        if (c.rank() == 0) c.barrier();
        else c.all_reduce(std::span<double>(x), slowmo::ReduceOp::mean);
      });
    });
    CHECK(e.find("barrier") != std::string::npos);
    CHECK(e.find("all_reduce(mean)") != std::string::npos);
  }
  SUBCASE("all_gather against all_reduce, and int32 against float: every worker, naming both") {
    std::atomic<int> saw_error{0};
    std::string e = run_error([&] {
      run(3, [&](auto& c) {
        std::vector<float> x(3), all(9);
        try {
          if (c.rank() == 1) c.all_reduce(std::span<float>(x), slowmo::ReduceOp::sum);
          else c.all_gather(std::span<const float>(x), std::span<float>(all));
        } catch (const slowmo::comm_error& err) {
          if (std::string(err.what()).find("mismatched collective") != std::string::npos) ++saw_error;
          throw;
        }
      });
    });
    CHECK(saw_error == 3);
    CHECK(e.find("all_reduce(sum) of 3 float") != std::string::npos);
    CHECK(e.find("all_gather of 3 float") != std::string::npos);
    e = run_error([&] {
      run(2, [](auto& c) {
        std::vector<std::size_t> counts(2);
        if (c.rank() == 0) {
          std::vector<float> x(3), all(6);
          c.all_gather_v(std::span<const float>(x), std::span<float>(all), std::span(counts));
        } else {
          std::vector<std::int32_t> x(3), all(6);
          c.all_gather_v(std::span<const std::int32_t>(x), std::span<std::int32_t>(all), std::span(counts));
        }
      });
    });
    CHECK(e.find("all_gather_v of 3 float") != std::string::npos);
    CHECK(e.find("all_gather_v of 3 int32") != std::string::npos);
  }
  SUBCASE("peers out of range, and a worker exchanging with itself") {
    std::string e = run_error([&] {
      run(3, [](auto& c) {
        std::vector<double> x(2);
        c.exchange(std::span<const double>(x), 1.0, 3, std::span<double>(x), 0);
      });
    });
    CHECK(e.find("dest = 3 is out of range [0, 3)") != std::string::npos);
    e = run_error([&] {
      run(2, [](auto& c) {
        std::vector<double> x(2);
        c.exchange(std::span<const double>(x), 1.0, c.rank(), std::span<double>(x), 1 - c.rank());
      });
    });
    CHECK(e.find("cannot exchange with itself") != std::string::npos);
    e = run_error([&] {
      run(2, [](auto& c) {
        std::vector<double> x(2);
        c.broadcast(std::span<double>(x), -1);
      });
    });
    CHECK(e.find("broadcast root -1 is out of range") != std::string::npos);
  }
  SUBCASE("a message of the wrong size") {
    const std::string e = run_error([&] {
      run(2, [](auto& c) {
        std::vector<double> out(c.rank() == 0 ? 3 : 4), in(4);
        c.exchange(std::span<const double>(out), 1.0, 1 - c.rank(), std::span<double>(in), 1 - c.rank());
      });
    });
    CHECK(e.find("worker 1 expected 4 double values from worker 0, which sent 3") != std::string::npos);
  }
  SUBCASE("a worker that throws: run() names it, the others are released") {
    std::atomic<int> released{0};
    const std::string e = run_error([&] {
      run(4, [&](auto& c) {
        if (c.rank() == 2) throw std::runtime_error("boom at step 7");
        try {
          for (;;) c.barrier();  // would wait forever for worker 2
        } catch (...) {
          ++released;
          throw;
        }
      });
    });
    CHECK(e == "worker 2 failed: boom at step 7");
    CHECK(released == 3);
  }
  SUBCASE("the original exception is nested in worker_error") {
    try {
      run(2, [](auto& c) {
        if (c.rank() == 1) throw std::out_of_range("index 9");
      });
      FAIL("no exception");
    } catch (const slowmo::worker_error& e) {
      CHECK(e.rank() == 1);
      CHECK_THROWS_AS(std::rethrow_if_nested(e), std::out_of_range);
    }
  }
  SUBCASE("deadlock: waiting for a message that never comes, or a collective a worker left") {
    std::string e = run_error([&] {
      run(2, [](auto& c) {
        if (c.rank() == 0) {
          std::vector<double> x(1);
          c.exchange(std::span<const double>(x), 1.0, 1, std::span<double>(x), 1);
        }
      });
    });
    CHECK(e.find("deadlock") != std::string::npos);
    CHECK(e.find("worker 0 waits in exchange for a message from worker 1") != std::string::npos);
    CHECK(e.find("worker 1 has returned") != std::string::npos);
    e = run_error([&] {
      run(3, [](auto& c) {
        if (c.rank() != 1) c.barrier();
      });
    });
    CHECK(e.find("deadlock") != std::string::npos);
    CHECK(e.find("worker 0 waits in barrier") != std::string::npos);
  }
  SUBCASE("groups: a mismatch inside one group fails its members, naming both calls") {
    std::atomic<int> in_group{0};
    const std::string e = run_error([&] {
      run(4, [&](auto& c) {
        auto g = c.split(c.rank() % 2, 0);  // {0, 2} and {1, 3}
        std::vector<double> x(3);
        try {
          if (c.rank() == 2) g.barrier();
          else g.all_reduce(std::span<double>(x), slowmo::ReduceOp::sum);
        } catch (const slowmo::comm_error& err) {
          if (std::string(err.what()).find("on their communicator from split()") != std::string::npos) ++in_group;
          throw;
        }
      });
    });
    CHECK(in_group == 2);  // workers 0 and 2; the group {1, 3} completed its all-reduce
    CHECK(e.find("worker 0 failed") != std::string::npos);
    CHECK(e.find("barrier") != std::string::npos);
    CHECK(e.find("all_reduce(sum) of 3 double") != std::string::npos);
  }
  SUBCASE("groups: a split only some workers call is a mismatch or a deadlock, never a hang") {
    std::string e = run_error([&] {
      run(3, [](auto& c) {
        if (c.rank() < 2) (void)c.split(0, 0);
        else c.barrier();
      });
    });
    CHECK(e.find("mismatched collective") != std::string::npos);
    CHECK(e.find("split") != std::string::npos);
    CHECK(e.find("barrier") != std::string::npos);
    e = run_error([&] {
      run(3, [](auto& c) {
        if (c.rank() < 2) (void)c.split(0, 0);
      });
    });
    CHECK(e.find("deadlock") != std::string::npos);
    CHECK(e.find("worker 0 waits in split") != std::string::npos);
    CHECK(e.find("worker 2 has returned") != std::string::npos);
    // Inside a group: its member 3 returns, so worker 1 waits for ever on its group.
    e = run_error([&] {
      run(4, [](auto& c) {
        auto g = c.split(c.rank() % 2, 0);
        if (c.rank() != 3) g.barrier();
      });
    });
    CHECK(e.find("deadlock") != std::string::npos);
    CHECK(e.find("worker 1 waits in barrier on the group of workers 1, 3 (from split())") != std::string::npos);
  }
  SUBCASE("groups: messages stay on the communicator they were sent on") {
    // Worker 0 exchanges with 1 on the world, worker 1 with 0 on their group: in MPI this is
    // a deadlock (a receive never takes another communicator's message), and so here.
    const std::string e = run_error([&] {
      run(2, [](auto& c) {
        auto g = c.split(0, c.rank());
        double out = 1, in = 0;
        if (c.rank() == 0) c.exchange(std::span<const double>(&out, 1), 1.0, 1, std::span<double>(&in, 1), 1);
        else g.exchange(std::span<const double>(&out, 1), 1.0, 0, std::span<double>(&in, 1), 0);
      });
    });
    CHECK(e.find("deadlock") != std::string::npos);
    CHECK(e.find("worker 1 waits in exchange for a message from worker 0 on the group of workers 0, 1") !=
          std::string::npos);
  }
  SUBCASE("groups: the shared model is hosted on the communicator run() handed out only") {
    const std::string e = run_error([&] {
      run(2, [](auto& c) {
        auto g = c.split(0, 0);
        std::vector<double> x(2);
        (void)g.pull(std::span<double>(x));
      });
    });
    CHECK(e.find("pull on a communicator from split()") != std::string::npos);
  }
}

struct Sim {
  template <class F>
  static void run(int m, F fn) {
    slowmo::sim::run({.workers = m}, fn);
  }
};
struct Threads {
  template <class F>
  static void run(int m, F fn) {
    slowmo::threads::run({.workers = m}, fn);
  }
};
TEST_CASE_TEMPLATE_INVOKE(faults_test, Sim, Threads);

TEST_CASE("bad options name the field") {
  auto noop = [](auto&) {};
  CHECK_THROWS_WITH_AS(slowmo::sim::run({.workers = 0}, noop), doctest::Contains("'workers' = 0"),
                       slowmo::invalid_option);
  CHECK_THROWS_WITH_AS(slowmo::sim::run({.workers = 2, .slowdown = {1.0}}, noop),
                       doctest::Contains("'slowdown.size()' = 1"), slowmo::invalid_option);
  CHECK_THROWS_WITH_AS(slowmo::sim::run({.workers = 2, .slowdown = {1.0, -1.0}}, noop),
                       doctest::Contains("'slowdown[1]' = -1"), slowmo::invalid_option);
  CHECK_THROWS_WITH_AS(slowmo::sim::run({.workers = 2, .network = {.latency = -1}}, noop),
                       doctest::Contains("'network.latency' = -1"), slowmo::invalid_option);
  CHECK_THROWS_WITH_AS(slowmo::sim::run({.workers = 2, .network = {.bandwidth = 0}}, noop),
                       doctest::Contains("'network.bandwidth' = 0"), slowmo::invalid_option);
  CHECK_THROWS_WITH_AS(slowmo::threads::run({.workers = -2}, noop), doctest::Contains("'workers' = -2"),
                       slowmo::invalid_option);
}
