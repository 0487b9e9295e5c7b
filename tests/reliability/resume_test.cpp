// Stop anywhere, checkpoint every worker, resume in a new run: the trajectory is bit-identical
// to an uninterrupted run, for every composition of the registry, on the simulator and on
// threads.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include <slowmo/problems/quadratic.hpp>
#include <slowmo/slowmo.hpp>

#include "support/zoo.hpp"

namespace {

using slowmo::Vector;
namespace fs = std::filesystem;

const slowmo::problems::Quadratic problem({.workers = 3, .dim = 9, .curvature_heterogeneity = 0.3,
                                           .heterogeneity = 1.0, .noise = 0.3, .seed = 8});

struct Sim {
  template <class F>
  static void run(F f) {
    slowmo::sim::run({.workers = 3}, f);
  }
};
struct Threads {
  template <class F>
  static void run(F f) {
    slowmo::threads::run({.workers = 3}, f);
  }
};

/// Trains `total` steps; if 0 < stop < total, stops after `stop` steps, saves every worker's
/// checkpoint, and resumes from it in a second run. Returns every worker's parameters.
template <class Backend, class Make>
std::vector<Vector<double>> train(Make make, int total, int stop) {
  const fs::path dir = fs::temp_directory_path() / ("slowmo_resume_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<Vector<double>> xs(3, Vector<double>::LinSpaced(9, -1, 1));
  auto phase = [&](int from, int to, bool load, bool save) {
    Backend::run([&](auto& c) {
      const auto r = std::size_t(c.rank());
      auto opt = make(c);
      if (load)
        slowmo::load_checkpoint(opt, dir / std::to_string(r));  // a resumed run is started already
      else
        slowmo::start(opt, xs[r]);
      Vector<double> g(9);
      for (int t = from; t < to; ++t) {
        problem.sample_gradient(c.rank(), t, xs[r], g);
        opt.step(xs[r], g);
      }
      if (save) slowmo::save_checkpoint(opt, dir / std::to_string(r));
    });
  };
  if (stop <= 0 || stop >= total) {
    phase(0, total, false, false);
  } else {
    phase(0, stop, false, true);
    phase(stop, total, true, false);
  }
  fs::remove_all(dir);
  return xs;
}

template <class Backend, class Make>
void check_resume(const char* name, Make make) {
  CAPTURE(name);
  const int total = 20;
  const auto uninterrupted = train<Backend>(make, total, 0);
  for (int stop : {1, 3, 6, 7, 12, 19}) {  // inside rounds and on their boundaries (periods 2, 3, 4, 6)
    CAPTURE(stop);
    CHECK(train<Backend>(make, total, stop) == uninterrupted);
  }
}

template <class Backend>
void every_algorithm() {
  zoo::for_each_composition<double>([](std::string_view name, int min_workers, auto make) {
    if (min_workers <= 3) check_resume<Backend>(std::string(name).c_str(), make);
  });
}

}  // namespace

TEST_CASE("bit-exact resume of every algorithm on the simulator") { every_algorithm<Sim>(); }
TEST_CASE("bit-exact resume of every algorithm on threads") { every_algorithm<Threads>(); }
