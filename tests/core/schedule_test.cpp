// Learning-rate schedules against their closed forms.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>

#include <slowmo/core/schedule.hpp>

using namespace slowmo::schedule;

TEST_CASE("Constant and StepDecay (torch StepLR)") {
  CHECK(Constant{}(0) == 1.0);
  CHECK(Constant{}(123456) == 1.0);
  const StepDecay s{.step_size = 3, .gamma = 0.5};
  const double expected[] = {1, 1, 1, 0.5, 0.5, 0.5, 0.25};
  for (int t = 0; t < 7; ++t) CHECK(s(t) == expected[t]);
}

TEST_CASE("Linear (torch LinearLR): ramps over total_iters, then holds") {
  const Linear s{.start_factor = 0.25, .end_factor = 1.0, .total_iters = 3};
  CHECK(s(0) == 0.25);
  CHECK(s(1) == 0.5);
  CHECK(s(2) == 0.75);
  CHECK(s(3) == 1.0);
  CHECK(s(100) == 1.0);
}

TEST_CASE("Linear decays to zero: end_factor = 0 is valid, as torch LinearLR's [0, 1]") {
  const Linear s{.start_factor = 1.0, .end_factor = 0.0, .total_iters = 4};
  CHECK_NOTHROW(s.validate());
  CHECK(s(0) == 1.0);
  CHECK(s(2) == 0.5);  // 1 + (0 - 1) * 2 / 4
  CHECK(s(4) == 0.0);
  CHECK_THROWS_AS((Linear{.end_factor = -0.1}.validate()), slowmo::invalid_option);
  CHECK_THROWS_AS((Linear{.start_factor = 0.0}.validate()), slowmo::invalid_option);  // torch: (0, 1]
}

TEST_CASE("Cosine: 1 at t = 0, the midpoint at T/2, min_factor from T on") {
  const Cosine s{.total_steps = 10, .min_factor = 0.1};
  CHECK(s(0) == doctest::Approx(1.0));
  CHECK(s(5) == doctest::Approx(0.55));  // 0.1 + 0.9 * (1 + cos(pi/2)) / 2
  CHECK(s(10) == 0.1);
  CHECK(s(50) == 0.1);
  CHECK(s(2) == doctest::Approx(0.1 + 0.45 * (1 + std::cos(std::numbers::pi * 0.2))));
}

TEST_CASE("Composition: product and sequence; warmup_cosine") {
  const auto p = StepDecay{.step_size = 2, .gamma = 0.5} * Linear{.start_factor = 0.5, .total_iters = 2};
  CHECK(p(0) == 0.5);
  CHECK(p(1) == 0.75);
  CHECK(p(2) == 0.5);
  const auto seq = then(Constant{}, 3, StepDecay{.step_size = 1, .gamma = 0.1});
  CHECK(seq(2) == 1.0);
  CHECK(seq(3) == 1.0);  // the second schedule counts from 0
  CHECK(seq(4) == doctest::Approx(0.1));
  const auto wc = warmup_cosine(4, 14, 0.0, 0.25);
  CHECK(wc(0) == 0.25);
  CHECK(wc(2) == 0.625);
  CHECK(wc(4) == 1.0);
  CHECK(wc(9) == doctest::Approx(0.5));
  CHECK(wc(14) == 0.0);
  static_assert(slowmo::Schedule<decltype(wc)>);
  static_assert(slowmo::Schedule<decltype([](std::int64_t t) { return 1.0 / double(t + 1); })>);
  static_assert(!slowmo::Schedule<int>);
}
