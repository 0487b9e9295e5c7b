// Bad options and bad states of the distributed combinators: clear errors naming the option.
#include <doctest/doctest.h>

#include <slowmo/slowmo.hpp>

#include "support/errors.hpp"

using check::error_of;
using check::has;

TEST_CASE("SlowMo, LocalSgd, Sgp, BMUF: invalid options name the option and the value") {
  using namespace slowmo;
  SingleWorker solo;
  const Sgd<float> sgd({.lr = 0.1});
  CHECK(has(error_of([&] { SlowMo(sgd, solo, {.tau = 0}); }), "option 'tau' = 0"));
  CHECK(has(error_of([&] { SlowMo(sgd, solo, {.alpha = 0.0}); }), "option 'alpha' = 0"));
  CHECK(has(error_of([&] { SlowMo(sgd, solo, {.alpha = -1.0}); }), "option 'alpha' = -1"));
  CHECK(has(error_of([&] { SlowMo(sgd, solo, {.beta = 1.0}); }), "option 'beta' = 1"));
  CHECK(has(error_of([&] { SlowMo(sgd, solo, {.beta = -0.1}); }), "option 'beta' = -0.1"));
  CHECK(has(error_of([&] { LocalSgd(sgd, solo, {.H = 0}); }), "option 'H' = 0"));
  CHECK(has(error_of([&] { LocalSgd(sgd, solo, {.warmup_steps = -1}); }), "option 'warmup_steps' = -1"));
  // In a nested composition every outer step must fall on an average of the base: H must
  // divide tau ...
  const std::string nested = error_of([&] { SlowMo(LocalSgd(sgd, solo, {.H = 4}), solo, {.tau = 6}); });
  CHECK(has(nested, "option 'tau' = 6"));
  CHECK(has(nested, "every outer step must fall on an average of the base, which averages after steps W + j H "
                    "with H = 4 and W = warmup_steps = 0: make tau and warmup_steps multiples of H"));
  CHECK_THROWS_AS(SlowMo(LocalSgd(sgd, solo, {.H = 4}), solo, {.tau = 6}), invalid_option);
  CHECK_NOTHROW(SlowMo(LocalSgd(sgd, solo, {.H = 3}), solo, {.tau = 6}));
  // ... and the warm-up too (issue 12, item 4): with H = 4 and W = 2 LocalSgd averages after
  // steps 6, 10, 14, ..., so tau = 8 (outer steps after 8, 16, ...) never falls on one.
  const std::string warm =
      error_of([&] { SlowMo(LocalSgd(sgd, solo, {.H = 4, .warmup_steps = 2}), solo, {.tau = 8}); });
  CHECK(has(warm, "slowmo::SlowMo: option 'tau' = 8 is invalid"));
  CHECK(has(warm, "H = 4"));
  CHECK(has(warm, "warmup_steps = 2"));
  CHECK_THROWS_AS(SlowMo(LocalSgd(sgd, solo, {.H = 4, .warmup_steps = 2}), solo, {.tau = 8}), invalid_option);
  // W = 4: averages after steps 8, 12, 16, ..., so every outer step (8, 16, ...) falls on one.
  CHECK_NOTHROW(SlowMo(LocalSgd(sgd, solo, {.H = 4, .warmup_steps = 4}), solo, {.tau = 8}));
  CHECK(has(error_of([&] { bmuf(sgd, solo, {.tau = 4, .block_lr = 0.0}); }), "option 'alpha' = 0"));
}

TEST_CASE("Sgp: peers beyond m - 1 or beyond the graph's distances, and topology size") {
  using namespace slowmo;
  std::vector<std::string> errors(4);
  sim::run({.workers = 4}, [&](sim::Comm& c) {
    const Sgd<double> sgd({.lr = 0.1});
    if (c.rank() != 0) return;
    errors[0] = error_of([&] { Sgp(sgd, c, 4); });
    errors[1] = error_of([&] { Sgp(sgd, c, 3); });  // 3 <= m - 1 but only L = 2 distances (1, 2)
    errors[2] = error_of([&] { Sgp(sgd, c, ExponentialGraph(5, 1)); });
    errors[3] = error_of([&] { Sgp(sgd, c, 0); });
  });
  CHECK(has(errors[0], "option 'peers' = 4 is invalid: must be in [1, m - 1] = [1, 3]"));
  CHECK(has(errors[1], "option 'peers' = 3"));
  CHECK(has(errors[1], "L = floor(log2(m - 1)) + 1 = 2"));
  CHECK(has(errors[2], "option 'topology size' = 5"));
  CHECK(has(errors[3], "option 'peers' = 0"));
  CHECK(has(error_of([] { ExponentialGraph(1, 1); }), "option 'workers' = 1"));
  CHECK(has(error_of([] { Ring(2, 2); }), "option 'peers' = 2"));
}

TEST_CASE("SlowMo: a zero learning rate at an outer step, when dividing by it, is an error before any change") {
  using namespace slowmo;
  SingleWorker solo;
  // Cosine down to 0 at step 4: the 4th step's lr is 0 and SlowMo's outer step would divide by it.
  SlowMo opt(Sgd<double, schedule::Cosine>({.lr = 0.1}, {.total_steps = 3}), solo, {.tau = 4});
  Vector<double> x = Vector<double>::Ones(2), g = x;
  opt.start(x);
  for (int t = 0; t < 3; ++t) opt.step(x, g);
  const Vector<double> before = opt.outer_params();
  const std::string e = error_of([&] { opt.step(x, g); });
  CHECK(has(e, "learning rate is 0 at outer step 1 (step 4)"));
  CHECK(has(e, "divide_by_lr = false"));
  CHECK(opt.outer_params() == before);
  // Raw pseudo-gradient: no division, no error.
  SlowMo raw(Sgd<double, schedule::Cosine>({.lr = 0.1}, {.total_steps = 3}), solo, {.tau = 4, .divide_by_lr = false});
  Vector<double> y = Vector<double>::Ones(2);
  raw.start(y);
  for (int t = 0; t < 4; ++t) CHECK_NOTHROW(raw.step(y, g));
}

TEST_CASE("combinators check sizes like the optimizers do") {
  using namespace slowmo;
  SingleWorker solo;
  SlowMo opt(Sgd<float>({.lr = 0.1}), solo, {.tau = 2});
  Vector<float> x = Vector<float>::Ones(3);
  opt.start(x);
  CHECK_THROWS_WITH_AS(opt.step(x, Vector<float>(Vector<float>::Ones(2))),
                       doctest::Contains("SlowMo::step: gradient size 2 does not match parameter size 3"),
                       size_mismatch);
  opt.step(x, x);
  Vector<float> y = Vector<float>::Ones(4);
  CHECK_THROWS_AS(opt.step(y, y), size_mismatch);
}

TEST_CASE("combinators refuse to step before start, and to start after stepping") {
  using namespace slowmo;
  SingleWorker solo;
  Vector<double> x = Vector<double>::Ones(2), g = x;
  auto check = [&](auto opt, const char* name) {
    CAPTURE(name);
    const std::string before = error_of([&] { opt.step(x, g); });
    CHECK(has(before, name));
    CHECK(has(before, "not started: call opt.start(x) once before computing the first gradient"));
    CHECK_THROWS_AS(opt.step(x, g), usage_error);
    CHECK(x == Vector<double>::Ones(2));  // a refused step changes nothing
    slowmo::start(opt, x);
    CHECK_NOTHROW(opt.step(x, g));
    CHECK_THROWS_WITH_AS(opt.start(x), doctest::Contains("called after 1 steps"), usage_error);
    x.setOnes();
  };
  const Sgd<double> sgd({.lr = 0.1});
  check(SlowMo(sgd, solo, {.tau = 2}), "SlowMo");
  check(LocalSgd(sgd, solo, {.H = 2}), "LocalSgd");
  check(GradientAllReduce(sgd, solo), "GradientAllReduce");
  check(bmuf(sgd, solo, {.tau = 2}), "SlowMo");
}
