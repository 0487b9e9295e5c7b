// The conformance suite on the in-process backends, for several worker counts (powers of
// two and not), and the cross-backend identity simulator == threads, bit for bit.
#include <doctest/doctest.h>

#include <slowmo/comm/simulator.hpp>
#include <slowmo/comm/single_worker.hpp>
#include <slowmo/comm/threads.hpp>

#include "comm/conformance.hpp"

static_assert(slowmo::Communicator<slowmo::sim::Comm>);
static_assert(slowmo::Communicator<slowmo::threads::Comm>);
static_assert(slowmo::check_communicator<slowmo::sim::Comm>());
static_assert(slowmo::check_gather_communicator<slowmo::sim::Comm>());
static_assert(slowmo::check_gather_communicator<slowmo::threads::Comm>());
static_assert(slowmo::check_gather_communicator<slowmo::SingleWorker>());

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
