// NaN and infinities in gradients: raise (default), skip (counted, collectively aligned),
// propagate.
#include <doctest/doctest.h>

#include <limits>

#include <slowmo/slowmo.hpp>

namespace {
using slowmo::Vector;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
}  // namespace

TEST_CASE_TEMPLATE("raise (default): names the step and the first bad index; nothing changes", T, float, double) {
  slowmo::Adam<T> opt({.lr = 0.1});
  Vector<T> x = Vector<T>::Ones(37), g = Vector<T>::Ones(37);
  opt.step(x, g);
  const auto state = slowmo::checkpoint_bytes(opt);
  const Vector<T> before = x;
  g[29] = T(kNaN);
  g[33] = T(kInf);
  CHECK_THROWS_WITH_AS(opt.step(x, g), doctest::Contains("Adam::step: gradient[29] = nan at step 2"),
                       slowmo::non_finite_error);
  CHECK(x == before);
  CHECK(slowmo::checkpoint_bytes(opt) == state);
  g[29] = 1;
  CHECK_THROWS_WITH_AS(opt.step(x, g), doctest::Contains("gradient[33] = inf"), slowmo::non_finite_error);
  slowmo::Sgd<T> sgd({.lr = 0.1});
  Vector<T> h = Vector<T>::Ones(5);
  h[0] = T(-kInf);
  CHECK_THROWS_WITH_AS(sgd.step(x.head(5), h), doctest::Contains("Sgd::step: gradient[0] = -inf at step 1"),
                       slowmo::non_finite_error);
}

TEST_CASE("skip: parameters and state untouched, the step counted; propagate: NaN goes through") {
  slowmo::Sgd<double, slowmo::schedule::StepDecay> opt({.lr = 0.5, .momentum = 0.9, .non_finite = slowmo::NonFinite::skip},
                                                       {.step_size = 2, .gamma = 0.5});
  Vector<double> x = Vector<double>::Ones(4), g = Vector<double>::Ones(4);
  opt.step(x, g);  // x = 0.5, buf = 1
  const Vector<double> buf = opt.momentum_buffer(), before = x;
  Vector<double> bad = g;
  bad[2] = kNaN;
  opt.step(x, bad);
  CHECK(x == before);
  CHECK(opt.momentum_buffer() == buf);
  CHECK(opt.steps() == 2);  // counted: the schedule moves on
  opt.step(x, g);           // step 3 uses lr 0.25: buf = 0.9 + 1 = 1.9, x = 0.5 - 0.475
  CHECK(x[0] == doctest::Approx(0.025));

  slowmo::Sgd<double> through({.lr = 0.5, .non_finite = slowmo::NonFinite::propagate});
  Vector<double> y = Vector<double>::Ones(4);
  through.step(y, bad);
  CHECK(std::isnan(y[2]));
  CHECK(y[0] == 0.5);
}

TEST_CASE("distributed: a skip keeps every worker's schedule aligned; gradient all-reduce skips collectively") {
  using namespace slowmo;
  // Local SGD, H = 3: worker 1 gets a NaN at step 2 and skips it; averages still happen at
  // steps 3, 6 on every worker (step counts never drift), so all workers end equal.
  std::vector<Vector<double>> out(3);
  std::vector<std::int64_t> steps(3);
  sim::run({.workers = 3}, [&](sim::Comm& c) {
    LocalSgd opt(Sgd<double>({.lr = 0.1, .non_finite = NonFinite::skip}), c, {.H = 3});
    Vector<double> x = Vector<double>::Ones(2), g(2);
    opt.start(x);
    for (int t = 1; t <= 6; ++t) {
      g.setConstant(double(c.rank() + 1));
      if (c.rank() == 1 && t == 2) g[0] = kNaN;
      opt.step(x, g);
    }
    out[std::size_t(c.rank())] = x;
    steps[std::size_t(c.rank())] = opt.steps();
  });
  CHECK(out[0] == out[1]);
  CHECK(out[1] == out[2]);
  CHECK(steps == std::vector<std::int64_t>{6, 6, 6});
  CHECK(std::isfinite(out[0][0]));

  // Gradient all-reduce: one worker's NaN makes the averaged gradient NaN on every worker,
  // so every worker skips the same step: the replicas stay identical.
  std::vector<Vector<double>> ar(3);
  sim::run({.workers = 3}, [&](sim::Comm& c) {
    GradientAllReduce opt(Sgd<double>({.lr = 0.1, .non_finite = NonFinite::skip}), c);
    Vector<double> x = Vector<double>::Ones(2), g(2);
    opt.start(x);
    for (int t = 1; t <= 4; ++t) {
      g.setConstant(1.0);
      if (c.rank() == 2 && t == 3) g[1] = kInf;
      opt.step(x, g);
    }
    ar[std::size_t(c.rank())] = x;
  });
  CHECK(ar[0] == ar[2]);
  CHECK(ar[0][0] == doctest::Approx(1 - 3 * 0.1));  // three applied steps, one skipped

  // raise on the simulator: run() names the worker, the message names step and index.
  try {
    sim::run({.workers = 2}, [&](sim::Comm& c) {
      LocalSgd opt(Adam<double>({.lr = 0.1}), c, {.H = 2});
      Vector<double> x = Vector<double>::Ones(3), g = Vector<double>::Ones(3);
      opt.start(x);
      for (int t = 1; t <= 4; ++t) {
        if (c.rank() == 1 && t == 3) g[2] = kNaN;
        opt.step(x, g);
      }
    });
    FAIL("no error");
  } catch (const worker_error& e) {
    CHECK(e.rank() == 1);
    CHECK(std::string(e.what()).find("worker 1 failed: slowmo::Adam::step: gradient[2] = nan at step 3") !=
          std::string::npos);
  }
}

TEST_CASE_TEMPLATE("the gradient scan finds the first NaN or infinity wherever it is", T, float, double) {
  // Every position of a vector long enough to cover the scan's unrolled body (4 SIMD packets
  // a trip) several times and its scalar tail, and each kind of non-finite value.
  const Eigen::Index n = 101;
  Vector<T> g = Vector<T>::LinSpaced(n, T(-1e30), T(1e30));  // large but finite: x * 0 stays 0
  CHECK(slowmo::detail::first_non_finite(g.data(), n) == -1);
  CHECK(slowmo::detail::first_non_finite(g.data(), 0) == -1);
  for (T bad : {T(kNaN), T(kInf), T(-kInf)})
    for (Eigen::Index i = 0; i < n; ++i) {
      Vector<T> h = g;
      h[i] = bad;
      if (i + 3 < n) h[i + 3] = T(kNaN);  // a later one does not hide the first
      CAPTURE(i);
      CHECK(slowmo::detail::first_non_finite(h.data(), n) == i);
    }
}
