// Stop anywhere, checkpoint every worker, resume in a new run: the trajectory is bit-identical
// to an uninterrupted run, for every algorithm, on the simulator and on threads.
#include <doctest/doctest.h>

#include <filesystem>

#include <slowmo/problems/quadratic.hpp>
#include <slowmo/slowmo.hpp>

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
      if (load) slowmo::load_checkpoint(opt, dir / std::to_string(r));
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
  for (int stop : {1, 3, 6, 7, 12, 19}) {  // inside rounds and on their boundaries (tau = H = 6)
    CAPTURE(stop);
    CHECK(train<Backend>(make, total, stop) == uninterrupted);
  }
}

template <class Backend>
void every_algorithm() {
  using namespace slowmo;
  check_resume<Backend>("local_sgd", [](auto& c) { return LocalSgd(Sgd<double>({.lr = 0.1, .momentum = 0.9}), c, {.H = 6}); });
  check_resume<Backend>("post_local_sgd",
                        [](auto& c) { return LocalSgd(Nesterov<double>({.lr = 0.1}), c, {.H = 6, .warmup_steps = 4}); });
  check_resume<Backend>("ar_adam", [](auto& c) { return GradientAllReduce(Adam<double>({.lr = 0.05}), c); });
  check_resume<Backend>("sgp", [](auto& c) { return Sgp(Sgd<double>({.lr = 0.1, .momentum = 0.5}), c); });
  check_resume<Backend>("slowmo", [](auto& c) {
    using S = schedule::Cosine;
    return SlowMo(Nesterov<double, S>({.lr = 0.1}, {.total_steps = 40}), c, {.tau = 6, .beta = 0.6});
  });
  check_resume<Backend>("slowmo_average", [](auto& c) {
    return SlowMo(Adam<double>({.lr = 0.05}), c, {.tau = 6, .beta = 0.5, .base_state = OnSync::average});
  });
  check_resume<Backend>("slowmo_local_sgd", [](auto& c) {
    return SlowMo(LocalSgd(Sgd<double>({.lr = 0.1}), c, {.H = 3}), c, {.tau = 6, .beta = 0.5});
  });
  check_resume<Backend>("slowmo_sgp", [](auto& c) { return SlowMo(Sgp(Sgd<double>({.lr = 0.1}), c), c, {.tau = 6}); });
  check_resume<Backend>("bmuf_nbm", [](auto& c) { return bmuf(Sgd<double>({.lr = 0.1}), c, {.tau = 6, .nesterov = true}); });
  check_resume<Backend>("diloco", [](auto& c) { return diloco<double>(c, {.H = 6, .inner_lr = 0.05}); });
  check_resume<Backend>("slowmo_lookahead", [](auto& c) {
    return SlowMo(Lookahead(Adam<double>({.lr = 0.05}), {.k = 4}), c, {.tau = 6, .base_state = OnSync::keep});
  });
}

}  // namespace

TEST_CASE("bit-exact resume of every algorithm on the simulator") { every_algorithm<Sim>(); }
TEST_CASE("bit-exact resume of every algorithm on threads") { every_algorithm<Threads>(); }
