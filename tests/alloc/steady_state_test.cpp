// No heap allocation per step once an optimizer's state exists, proven by counting every
// call into the C allocator (Eigen allocates with malloc, operator new ends in malloc too):
// this program interposes malloc and friends and forwards to glibc's implementations.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <slowmo/slowmo.hpp>

#include "support/zoo.hpp"

#include "alloc/counting_malloc.hpp"

using alloc::allocations;

namespace {

/// On 3 simulated workers: start and 12 steps create the state and the scratch (every period
/// of the registry has come round once), then worker 0 counts the allocations of all workers
/// over 24 more steps, half of them through a Map view, between barriers.
template <class Make>
long allocations_in_steady_state(Make make) {
  long counted = -1;
  slowmo::sim::run({.workers = 3}, [&](slowmo::sim::Comm& c) {
    auto opt = make(c);
    using T = typename decltype(opt)::scalar_type;
    slowmo::Vector<T> x = slowmo::Vector<T>::LinSpaced(1001, -1, 1) * T(1 + c.rank());
    const slowmo::Vector<T> g = slowmo::Vector<T>::LinSpaced(1001, 1, -1) * T(0.1);
    Eigen::Map<slowmo::Vector<T>> view(x.data(), x.size());
    slowmo::start(opt, x);
    for (int t = 0; t < 12; ++t) opt.step(x, g);
    c.barrier();
    const long before = allocations.load();
    c.barrier();
    for (int t = 0; t < 12; ++t) opt.step(x, g);
    for (int t = 0; t < 12; ++t) opt.step(view.segment(0, view.size()), g);
    c.barrier();
    if (c.rank() == 0) counted = allocations.load() - before;
    c.barrier();
  });
  return counted;
}

}  // namespace

TEST_CASE("the allocation counter sees Eigen's and the standard library's allocations") {
  long before = allocations.load();
  slowmo::Vector<float> v(100);
  v.setZero();
  CHECK(allocations.load() - before == 1);
  before = allocations.load();
  auto* p = new std::vector<int>(1000);
  CHECK(allocations.load() - before == 2);
  delete p;
}

TEST_CASE_TEMPLATE("no heap allocation per step after the state exists, for every composition", T, float, double) {
  zoo::for_each_composition<T>([](std::string_view name, int min_workers, auto make) {
    if (min_workers > 3) return;
    CAPTURE(std::string(name));
    CHECK(allocations_in_steady_state(make) == 0);
  });
}

namespace {

/// Every worker warms up (first collectives and messages create the engine's scratch and
/// channel buffers), then runs 50 rounds of all_reduce, broadcast and ring exchange; worker
/// 0 reads the allocation counter around those rounds, between barriers.
template <class Run>
long allocations_per_comm_rounds(Run run) {
  long counted = -1;
  run([&](auto& comm) {
    const int m = comm.size(), r = comm.rank();
    std::vector<float> x(1000, 1.0f), in(1000);
    auto round = [&] {
      comm.all_reduce(std::span<float>(x), slowmo::ReduceOp::mean);
      comm.broadcast(std::span<float>(x), 0);
      comm.exchange(std::span<const float>(x), 1.0, (r + 1) % m, std::span<float>(in), (r + m - 1) % m);
    };
    for (int i = 0; i < 3; ++i) round();
    comm.barrier();
    const long before = allocations.load();
    comm.barrier();
    for (int i = 0; i < 50; ++i) round();
    comm.barrier();
    if (r == 0) counted = allocations.load() - before;
    comm.barrier();
  });
  return counted;
}

}  // namespace

TEST_CASE("no heap allocation per communication round on the simulator and threads") {
  CHECK(allocations_per_comm_rounds([](auto fn) { slowmo::sim::run({.workers = 4}, fn); }) == 0);
  CHECK(allocations_per_comm_rounds([](auto fn) { slowmo::threads::run({.workers = 4}, fn); }) == 0);
}

namespace {

/// x += d: a shared-model server that allocates nothing once built.
class AddServer final : public slowmo::ModelServer<float> {
 public:
  explicit AddServer(std::size_t n) : x_(n, 0.0f) {}
  std::size_t size() const override { return x_.size(); }
  void apply(const slowmo::Arrival&, std::span<const float> d) override {
    for (std::size_t i = 0; i < x_.size(); ++i) x_[i] += d[i];
  }
  void read(std::span<float> out) const override { std::copy(x_.begin(), x_.end(), out.begin()); }

 private:
  std::vector<float> x_;
};

/// The shared model: after a few rounds, 50 rounds of pull and push per worker (on the
/// simulator, as events in virtual time, with a busy server) between barriers.
template <class Run>
long allocations_per_model_rounds(Run run) {
  long counted = -1;
  run([&](auto& comm) {
    comm.host_model(std::make_unique<AddServer>(1000));
    std::vector<float> x(1000), d(1000, 1.0f);
    auto round = [&] {
      comm.pull(std::span<float>(x));
      slowmo::charge_compute(comm, 1e-3 * (1 + comm.rank()));
      comm.push(std::span<const float>(d));
    };
    for (int i = 0; i < 3; ++i) round();
    comm.barrier();
    const long before = allocations.load();
    comm.barrier();
    for (int i = 0; i < 50; ++i) round();
    comm.barrier();
    if (comm.rank() == 0) counted = allocations.load() - before;
    comm.barrier();
  });
  return counted;
}

}  // namespace

TEST_CASE("no heap allocation per pull and push of the shared model on the simulator and threads") {
  CHECK(allocations_per_model_rounds([](auto fn) {
    slowmo::sim::run({.workers = 4, .server_seconds_per_update = 1e-4}, fn);
  }) == 0);
  CHECK(allocations_per_model_rounds([](auto fn) { slowmo::threads::run({.workers = 4}, fn); }) == 0);
}
