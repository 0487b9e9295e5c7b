// Properties every shipped composition must have, run over the whole registry
// (support/zoo.hpp): agreement before the first gradient, rebase after an overwrite, the
// strong guarantee on bad input, consistent counters under NonFinite::skip. (Bit-exact resume
// is in reliability/resume_test.cpp, allocation-free steps in alloc/, simulator == threads in
// distributed/backends_test.cpp, all over the same registry.)
#include <doctest/doctest.h>

#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <slowmo/slowmo.hpp>

#include "support/zoo.hpp"

namespace {

using slowmo::Vector;
constexpr int workers = 3;
constexpr Eigen::Index dim = 13;

/// Whether a composition talks to other workers (and so must make them agree at start).
template <class Opt>
constexpr bool distributed() {
  if constexpr (requires { typename Opt::comm_type; })
    return !std::is_same_v<typename Opt::comm_type, slowmo::SingleWorker>;
  else if constexpr (requires { typename Opt::base_type; })
    return distributed<typename Opt::base_type>();
  else
    return false;
}

/// Runs fn(name, make) for every registered composition, inside each of `workers`
/// simulated workers (SPMD: every worker walks the registry in the same order).
template <class T, class Fn>
void on_every_composition(Fn fn, zoo::Config cfg = {}) {
  zoo::for_each_composition<T>(
      [&](std::string_view name, int min_workers, auto make) {
        if (min_workers > workers) return;
        CAPTURE(std::string(name));
        slowmo::sim::run({.workers = workers}, [&](slowmo::sim::Comm& c) { fn(c, make(c)); });
      },
      cfg);
}

/// Every anchor of a nest (SlowMo's x0, Lookahead's slow weights, Sgp's numerator) equals x,
/// and every anchor scalar (the push-sum weight) is 1: the nest restarts from x.
template <class Opt, class T>
bool anchored_at(const Opt& opt, const Vector<T>& x) {
  bool ok = true;
  opt.visit_state([&](const slowmo::StateKey& key, const auto& ref, slowmo::StateKind kind) {
    if (kind != slowmo::StateKind::anchor) return;
    using R = std::remove_cvref_t<decltype(ref)>;
    bool here = true;
    if constexpr (std::is_arithmetic_v<R>)
      here = ref == R(1);
    else
      here = ref.size() == x.size() && ref == x;
    if (!here) MESSAGE("anchor " << key.path() << " does not follow the overwritten parameters");
    ok = ok && here;
  });
  return ok;
}

}  // namespace

TEST_CASE_TEMPLATE("start: workers starting from different points follow the trajectory of a common start", T, float,
                   double) {
  // The first gradient must be taken at the common point: a broadcast inside the first
  // step (after the caller computed g at its own point) fails this.
  zoo::for_each_composition<T>([&](std::string_view name, int min_workers, auto make) {
    if (min_workers > workers) return;
    using Opt = decltype(make(std::declval<slowmo::sim::Comm&>()));
    if constexpr (distributed<Opt>()) {
      CAPTURE(std::string(name));
      std::vector<Vector<T>> apart(workers), together(workers);
      auto run = [&](std::vector<Vector<T>>& out, bool same_start) {
        slowmo::sim::run({.workers = workers}, [&](slowmo::sim::Comm& c) {
          auto opt = make(c);
          Vector<T> x = zoo::initial_point<T>(same_start ? 0 : c.rank(), dim), g(dim);
          opt.start(x);
          for (int t = 0; t < 8; ++t) {
            zoo::gradient(c.rank(), x, g);
            opt.step(x, g);
          }
          out[std::size_t(c.rank())] = x;
        });
      };
      run(apart, false);
      run(together, true);
      for (int r = 0; r < workers; ++r) CHECK(apart[std::size_t(r)] == together[std::size_t(r)]);
    }
  });
}

TEST_CASE("start: SlowMo over SGD from different points against a hand-written loop") {
  // Independent loop (Wang et al. 2020, Alg. 1, every worker from worker 0's point):
  // x_i = x0; tau steps x_i -= lr g_i(x_i); x_bar = mean; u = beta u + (x0 - x_bar) / lr;
  // x0 -= alpha lr u.
  const double lr = 0.1, alpha = 0.8, beta = 0.6;
  const int tau = 4, rounds = 3;
  Vector<double> x0 = zoo::initial_point<double>(0, dim), u = Vector<double>::Zero(dim), g(dim);
  for (int k = 0; k < rounds; ++k) {
    Vector<double> sum = Vector<double>::Zero(dim);
    for (int r = 0; r < workers; ++r) {
      Vector<double> x = x0;
      for (int t = 0; t < tau; ++t) {
        zoo::gradient(r, x, g);
        x -= lr * g;
      }
      sum += x;
    }
    const Vector<double> x_bar = sum / workers;
    u = beta * u + (x0 - x_bar) / lr;
    x0 -= alpha * lr * u;
  }
  std::vector<Vector<double>> got(workers);
  slowmo::sim::run({.workers = workers}, [&](slowmo::sim::Comm& c) {
    slowmo::SlowMo opt(slowmo::Sgd<double>({.lr = lr}), c, {.tau = tau, .alpha = alpha, .beta = beta});
    Vector<double> x = zoo::initial_point<double>(c.rank(), dim), gr(dim);
    opt.start(x);
    for (int t = 0; t < tau * rounds; ++t) {
      zoo::gradient(c.rank(), x, gr);
      opt.step(x, gr);
    }
    got[std::size_t(c.rank())] = x;
  });
  // The loop above rounds differently (x_bar from a sum, not the ring mean): a few ulps a step.
  for (const auto& x : got) CHECK((x - x0).cwiseAbs().maxCoeff() < 1e-13);
}

TEST_CASE_TEMPLATE("a combinator refuses to step before start, and start after a step", T, float, double) {
  on_every_composition<T>([](slowmo::sim::Comm&, auto opt) {
    using Opt = decltype(opt);
    Vector<T> x = zoo::initial_point<T>(0, dim), g = Vector<T>::Ones(dim);
    if constexpr (distributed<Opt>()) {
      const auto before = zoo::state_of(opt);
      CHECK_THROWS_AS(opt.step(x, g), slowmo::usage_error);
      CHECK(zoo::state_of(opt) == before);
      CHECK(x == zoo::initial_point<T>(0, dim));
    }
    slowmo::start(opt, x);
    opt.step(x, g);
    if constexpr (requires { opt.start(x); }) {
      const auto before = zoo::state_of(opt);
      const Vector<T> x_before = x;
      CHECK_THROWS_AS(opt.start(x), slowmo::usage_error);
      CHECK(zoo::state_of(opt) == before);
      CHECK(x == x_before);
    }
  });
}

TEST_CASE_TEMPLATE("rebase: after an overwrite from outside, the whole nest restarts from it", T, float, double) {
  on_every_composition<T>([](slowmo::sim::Comm& c, auto opt) {
    Vector<T> x = zoo::initial_point<T>(c.rank(), dim), g(dim);
    slowmo::start(opt, x);
    for (int t = 0; t < 5; ++t) {
      zoo::gradient(c.rank(), x, g);
      opt.step(x, g);
    }
    x = Vector<T>::LinSpaced(dim, T(-0.5), T(0.5));  // the same on every worker
    slowmo::rebase(opt, x);
    CHECK(anchored_at(opt, x));
  });
}

namespace {

/// Steps `wrapper` until its first own synchronisation (after `period` steps) and checks that
/// its base's anchors then equal the overwritten parameters.
template <class Wrapper>
void check_wrapper_rebases(slowmo::sim::Comm& c, Wrapper wrapper, int period) {
  using T = typename Wrapper::scalar_type;
  Vector<T> x = zoo::initial_point<T>(c.rank(), dim), g(dim);
  wrapper.start(x);
  for (int t = 0; t < period; ++t) {
    zoo::gradient(c.rank(), x, g);
    wrapper.step(x, g);
  }
  CHECK(anchored_at(wrapper.base(), x));
}

}  // namespace

TEST_CASE("every wrapper that overwrites its base's parameters rebases it (wrappers x bases with a copy)") {
  using namespace slowmo;
  using T = double;
  // Bases that keep their own copy of the parameters (or wrap one that does), with periods
  // that do not divide the wrappers' period 4, so that only the wrapper has just synced.
  auto bases = [](auto& c, auto with) {
    with("sgp", Sgp(Sgd<T>({.lr = 0.1}), c));
    with("lookahead", Lookahead(Sgd<T>({.lr = 0.1}), {.k = 3}));
    with("slowmo", SlowMo(Sgd<T>({.lr = 0.1}), c, {.tau = 3}));
    with("local_sgd_sgp", LocalSgd(Sgp(Sgd<T>({.lr = 0.1}), c), c, {.H = 2}));
  };
  slowmo::sim::run({.workers = workers}, [&](slowmo::sim::Comm& c) {
    bases(c, [&](const char* name, auto base) {
      CAPTURE(name);
      check_wrapper_rebases(c, Lookahead(base, {.k = 4, .alpha = 0.5}), 4);
      check_wrapper_rebases(c, LocalSgd(base, c, {.H = 4}), 4);
      check_wrapper_rebases(c, SlowMo(base, c, {.tau = 4, .beta = 0.5}), 4);
    });
  });
}

TEST_CASE_TEMPLATE("strong guarantee: every bad-input exception from step leaves all state and x as they were", T,
                   float, double) {
  on_every_composition<T>([](slowmo::sim::Comm& c, auto opt) {
    Vector<T> x = zoo::initial_point<T>(c.rank(), dim), g(dim);
    slowmo::start(opt, x);
    for (int t = 0; t < 4; ++t) {
      zoo::gradient(c.rank(), x, g);
      opt.step(x, g);
    }
    const auto state = zoo::state_of(opt);
    const Vector<T> x_before = x;
    auto unchanged = [&] { return zoo::state_of(opt) == state && x == x_before; };

    Vector<T> long_g = Vector<T>::Ones(dim + 1);
    CHECK_THROWS_AS(opt.step(x, long_g), slowmo::size_mismatch);
    CHECK(unchanged());
    bool sized = false;  // a stateless optimizer (plain SGD) may legitimately take any size
    for (const auto& [path, v] : state) sized = sized || v.size() == std::size_t(dim);
    if (sized) {
      Vector<T> short_x = x.head(dim - 1), short_g = Vector<T>::Ones(dim - 1);
      CHECK_THROWS_AS(opt.step(short_x, short_g), slowmo::size_mismatch);
      CHECK(unchanged());
    }
    Vector<T> bad_g = Vector<T>::Ones(dim);
    bad_g[2] = std::numeric_limits<T>::quiet_NaN();
    CHECK_THROWS_AS(opt.step(x, bad_g), slowmo::non_finite_error);
    CHECK(unchanged());
    bad_g[2] = std::numeric_limits<T>::infinity();
    CHECK_THROWS_AS(opt.step(x, bad_g), slowmo::non_finite_error);
    CHECK(unchanged());
    // and the run goes on: nothing is left half-done
    zoo::gradient(c.rank(), x, g);
    opt.step(x, g);
    CHECK(x.allFinite());
  });
}

namespace {

/// A schedule that is 1 except at one step, where it returns `value`.
struct SpikeSchedule {
  std::int64_t at = 3;
  double value = -1;
  double operator()(std::int64_t t) const { return t == at ? value : 1.0; }
};

template <class Opt>
void check_bad_lr(Opt opt, const char* owner, double value) {
  CAPTURE(owner);
  CAPTURE(value);
  using T = typename Opt::scalar_type;
  Vector<T> x = Vector<T>::LinSpaced(5, T(-1), T(1)), g = Vector<T>::Ones(5);
  slowmo::start(opt, x);
  for (int t = 0; t < 3; ++t) opt.step(x, g);
  const auto state = zoo::state_of(opt);
  const Vector<T> x_before = x;
  try {
    opt.step(x, g);
    FAIL("a bad learning rate was accepted");
  } catch (const slowmo::invalid_option& e) {
    const std::string what = e.what();
    CHECK(what.find(std::string("slowmo::") + owner + "::step") != std::string::npos);
    CHECK(what.find("step 4 (1-based)") != std::string::npos);
    CHECK(what.find(slowmo::detail::concat(0.1 * value)) != std::string::npos);
  }
  CHECK(zoo::state_of(opt) == state);
  CHECK(x == x_before);
}

}  // namespace

TEST_CASE_TEMPLATE("a schedule's negative or NaN learning rate is refused before anything changes", T, float, double) {
  using namespace slowmo;
  for (double value : {-1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    const SpikeSchedule s{.at = 3, .value = value};
    check_bad_lr(Sgd<T, SpikeSchedule>({.lr = 0.1, .momentum = 0.9}, s), "Sgd", value);
    check_bad_lr(Nesterov<T, SpikeSchedule>({.lr = 0.1}, s), "Sgd", value);
    check_bad_lr(Adam<T, SpikeSchedule>({.lr = 0.1}, s), "Adam", value);
    check_bad_lr(AdamW<T, SpikeSchedule>({.lr = 0.1, .amsgrad = true}, s), "AdamW", value);
    check_bad_lr(Lookahead(Adam<T, SpikeSchedule>({.lr = 0.1}, s), {.k = 2}), "Adam", value);
    SingleWorker solo;
    check_bad_lr(SlowMo(Sgd<T, SpikeSchedule>({.lr = 0.1}, s), solo, {.tau = 2}), "Sgd", value);
  }
}

TEST_CASE("SlowMo refuses an outer step with a zero base lr before the base steps; a retry is refused again") {
  using namespace slowmo;
  SingleWorker solo;
  SlowMo opt(Sgd<double, SpikeSchedule>({.lr = 0.1}, {.at = 5, .value = 0.0}), solo, {.tau = 6});
  Vector<double> x = Vector<double>::Ones(4), g = Vector<double>::Ones(4);
  opt.start(x);
  for (int t = 0; t < 5; ++t) opt.step(x, g);
  const auto state = zoo::state_of(opt);
  for (int attempt = 0; attempt < 2; ++attempt) {
    CHECK_THROWS_WITH_AS(opt.step(x, g),
                         doctest::Contains("learning rate is 0 at outer step 1 (step 6)"), invalid_option);
    CHECK(zoo::state_of(opt) == state);
    CHECK(opt.steps() == 5);
    CHECK(opt.outer_steps() == 0);
    CHECK(opt.base().steps() == 5);
  }
}

TEST_CASE_TEMPLATE("skip: a worker that skips NaN steps keeps every counter equal to the others'", T, float, double) {
  on_every_composition<T>(
      [](slowmo::sim::Comm& c, auto opt) {
        Vector<T> x = zoo::initial_point<T>(c.rank(), dim), g(dim);
        slowmo::start(opt, x);
        for (int t = 0; t < 24; ++t) {
          zoo::gradient(c.rank(), x, g);
          if (c.rank() == 1 && (t == 0 || t == 6 || t == 13)) g[4] = std::numeric_limits<T>::quiet_NaN();
          opt.step(x, g);
        }
        CHECK(x.allFinite());
        // counters and progress, gathered from every worker
        std::vector<double> mine;
        // Asynchronous workers' pushes, staleness and rounds are their own by design (and rank 0
        // holds the server's), as are the bases' under partial participation: there the step
        // counts of the combinator, which position its rounds, must agree.
        const bool own = zoo::own_counters(opt, c);
        opt.visit_state([&](const slowmo::StateKey& key, const auto& ref, slowmo::StateKind kind) {
          if constexpr (std::is_same_v<std::remove_cvref_t<decltype(ref)>, std::int64_t>)
            if ((kind == slowmo::StateKind::counter || kind == slowmo::StateKind::progress) &&
                (!own || key.path() == "steps"))
              mine.push_back(double(ref));
        });
        Vector<double> sum = Eigen::Map<Vector<double>>(mine.data(), Eigen::Index(mine.size())), first = sum;
        c.all_reduce(slowmo::as_span(sum), slowmo::ReduceOp::sum);
        c.broadcast(slowmo::as_span(first), 0);
        CHECK(sum == double(workers) * first);  // equal everywhere (they are small integers: exact)
        CHECK(Eigen::Map<Vector<double>>(mine.data(), Eigen::Index(mine.size())) == first);
      },
      {.non_finite = slowmo::NonFinite::skip});
}

TEST_CASE("a NaN of worker 2's under gradient all-reduce is reported as worker 2's") {
  using namespace slowmo;
  try {
    sim::run({.workers = 4}, [](sim::Comm& c) {
      GradientAllReduce opt(Adam<double>({.lr = 0.1}), c);
      Vector<double> x = Vector<double>::Ones(6), g = Vector<double>::Ones(6);
      opt.start(x);
      for (int t = 0; t < 4; ++t) {
        if (c.rank() == 2 && t == 2) g[3] = std::numeric_limits<double>::infinity();
        opt.step(x, g);
      }
    });
    FAIL("no error");
  } catch (const worker_error& e) {
    CHECK(e.rank() == 2);
    CHECK(std::string(e.what()).find("gradient[3] = inf at step 3") != std::string::npos);
  }
}

TEST_CASE("lookahead_as_slowmo keeps its own (empty) communicator: no state shared between instances") {
  auto a = slowmo::lookahead_as_slowmo(slowmo::Sgd<double>({.lr = 0.1}), 2, 0.5);
  auto b = slowmo::lookahead_as_slowmo(slowmo::Sgd<double>({.lr = 0.1}), 2, 0.5);
  CHECK(&a.comm() != &b.comm());
  auto c = a;  // a copy holds its own too
  CHECK(&c.comm() != &a.comm());
}
