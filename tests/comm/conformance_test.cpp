// The conformance suite on the in-process backends, for several worker counts (powers of
// two and not), and the cross-backend identity simulator == threads, bit for bit.
#include <doctest/doctest.h>

#include <slowmo/comm/simulator.hpp>
#include <slowmo/comm/threads.hpp>

#include "comm/conformance.hpp"

static_assert(slowmo::Communicator<slowmo::sim::Comm>);
static_assert(slowmo::Communicator<slowmo::threads::Comm>);
static_assert(slowmo::check_communicator<slowmo::sim::Comm>());

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
