// Stop anywhere, checkpoint every worker, resume in a new run: the trajectory is bit-identical
// to an uninterrupted run, for every composition of the registry, on the simulator and on
// threads (the asynchronous ones drain first, on the simulator).
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <utility>

#include <slowmo/problems/quadratic.hpp>
#include <slowmo/slowmo.hpp>

#include "support/zoo.hpp"

namespace {

using slowmo::Vector;
namespace fs = std::filesystem;

const slowmo::problems::Quadratic problem({.workers = 3, .dim = 9, .curvature_heterogeneity = 0.3,
                                           .heterogeneity = 1.0, .noise = 0.3, .seed = 8});

struct Sim {
  using comm_type = slowmo::sim::Comm;
  static constexpr bool virtual_time = true;
  template <class F>
  static void run(F f) {
    slowmo::sim::run({.workers = 3}, f);
  }
};
struct Threads {
  using comm_type = slowmo::threads::Comm;
  static constexpr bool virtual_time = false;
  template <class F>
  static void run(F f) {
    slowmo::threads::run({.workers = 3}, f);
  }
};

/// Trains `total` steps; if 0 < stop < total, an asynchronous composition drains after `stop`
/// steps (its checkpoints need that synchronisation, so the uninterrupted run has it too), and
/// with `interrupt` every worker saves its checkpoint there and a second run resumes from it.
/// Returns every worker's parameters.
template <class Backend, class Make>
std::vector<Vector<double>> train(Make make, int total, int stop, bool interrupt) {
  const fs::path dir = fs::temp_directory_path() / ("slowmo_resume_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<Vector<double>> xs(3, Vector<double>::LinSpaced(9, -1, 1));
  const bool cut = stop > 0 && stop < total;
  auto phase = [&](int from, bool load) {
    Backend::run([&](auto& c) {
      const auto r = std::size_t(c.rank());
      auto opt = make(c);
      if (load)
        slowmo::load_checkpoint(opt, dir / std::to_string(r));  // a resumed run is started already
      else
        slowmo::start(opt, xs[r]);
      Vector<double> g(9);
      for (int t = from; t < total; ++t) {
        problem.sample_gradient(c.rank(), t, xs[r], g);
        opt.step(xs[r], g);
        if (!cut || t + 1 != stop) continue;
        if constexpr (zoo::asynchronous<decltype(opt)>) opt.drain(xs[r]);
        if (interrupt) {
          slowmo::save_checkpoint(opt, dir / std::to_string(r));
          return;
        }
      }
    });
  };
  phase(0, false);
  if (cut && interrupt) phase(stop, true);
  fs::remove_all(dir);
  return xs;
}

template <class Backend, class Make>
void check_resume(const char* name, Make make) {
  CAPTURE(name);
  const int total = 20;
  const auto uninterrupted = train<Backend>(make, total, 0, false);
  for (int stop : {1, 3, 6, 7, 12, 19}) {  // inside rounds and on their boundaries (periods 2, 3, 4, 6)
    CAPTURE(stop);
    using Opt = decltype(make(std::declval<typename Backend::comm_type&>()));
    const auto through = zoo::asynchronous<Opt> ? train<Backend>(make, total, stop, false) : uninterrupted;
    CHECK(train<Backend>(make, total, stop, true) == through);
  }
}

template <class Backend>
void every_algorithm() {
  zoo::for_each_composition<double>([](std::string_view name, int min_workers, auto make) {
    using Opt = decltype(make(std::declval<typename Backend::comm_type&>()));
    // On threads an asynchronous run's arrival order is the threads': not bit-reproducible
    // (distributed/async_test.cpp checks its resume there).
    if constexpr (zoo::asynchronous<Opt> && !Backend::virtual_time) return;
    if (min_workers <= 3) check_resume<Backend>(std::string(name).c_str(), make);
  });
}

}  // namespace

TEST_CASE("bit-exact resume of every algorithm on the simulator") { every_algorithm<Sim>(); }
TEST_CASE("bit-exact resume of every algorithm on threads") { every_algorithm<Threads>(); }
