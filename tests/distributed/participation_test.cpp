// Partial participation (distributed/participation.hpp, OuterLoopOptions::participation): the
// seeded samples, FedAvg and FedAvgM over the participants against a loop written here, the
// identity with full participation, idle workers training nothing, and bad combinations.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include <slowmo/slowmo.hpp>

#include "support/errors.hpp"

namespace {

using check::error_of;
using check::has;

using slowmo::Vector;
namespace sim = slowmo::sim;

/// f_w(x) = a_w |x - c_w|^2 / 2, a_w = 1 + w / 4, c_w = w in every coordinate.
Vector<double> gradient_of(int w, const Vector<double>& x) { return (1 + 0.25 * w) * (x.array() - double(w)).matrix(); }

}  // namespace

TEST_CASE("the samples: k distinct workers per round, a function of (seed, round), each worker about k/m of rounds") {
  slowmo::detail::Cohort a({.count = 3, .seed = 7}, 10, "test"), b({.count = 3, .seed = 7}, 10, "test"),
      c({.count = 3, .seed = 8}, 10, "test");
  std::vector<int> times(10, 0);
  int same_as_other_seed = 0;
  for (std::int64_t r = 0; r < 3000; ++r) {
    const auto p = a.participants(r);
    REQUIRE(p.size() == 3);
    CHECK(std::is_sorted(p.begin(), p.end()));
    CHECK(std::adjacent_find(p.begin(), p.end()) == p.end());
    CHECK(p == b.participants(r));
    same_as_other_seed += p == c.participants(r);
    for (int q : p) ++times[std::size_t(q)];
  }
  // Each worker is drawn with probability 3/10: 900 of 3000 rounds, sd sqrt(3000 .3 .7) = 25.
  for (int q = 0; q < 10; ++q) CHECK(std::abs(times[std::size_t(q)] - 900) < 100);
  CHECK(same_as_other_seed < 100);  // another seed, other samples (1 in C(10, 3) = 120 alike by chance)
  CHECK(slowmo::detail::Cohort({.fraction = 0.25}, 10, "test").per_round() == 3);  // lround(2.5)
  CHECK(slowmo::detail::Cohort({.fraction = 0.01}, 10, "test").per_round() == 1);  // at least 1
  CHECK(slowmo::detail::Cohort({}, 10, "test").everyone());
  CHECK(has(error_of([] { slowmo::detail::Cohort({.count = 11}, 10, "X"); }), "'participation.count' = 11"));
  CHECK(has(error_of([] { slowmo::detail::Cohort({.fraction = 1.5}, 10, "X"); }), "'participation.fraction' = 1.5"));
  CHECK(has(error_of([] { slowmo::detail::Cohort({.weights = {1, 0}}, 2, "X"); }), "'participation.weights[1]' = 0"));
  CHECK(has(error_of([] { slowmo::detail::Cohort({.weights = {1}}, 2, "X"); }), "'participation.weights.size()' = 1"));
}

// Six workers of weights 1..6, two per round, three SGD steps each from x0; the server's rule
// on d = x0 - sum_p w_p x_p / W: FedAvg (HeavyBall lr 1, momentum 0: x0 = the weighted mean)
// and FedAvgM (momentum 0.9).
TEST_CASE("FedAvg and FedAvgM over a weighted sample of the workers are a loop written here") {
  const int m = 6, tau = 3, rounds = 8;
  const Eigen::Index n = 4;
  const double lr = 0.1;
  const slowmo::Participation participation{.count = 2, .seed = 3, .weights = {1, 2, 3, 4, 5, 6}};
  for (double momentum : {0.0, 0.9}) {
    CAPTURE(momentum);
    slowmo::detail::Cohort cohort(participation, m, "loop");
    Vector<double> x0 = Vector<double>::LinSpaced(n, -1, 1), u = Vector<double>::Zero(n);
    for (int r = 0; r < rounds; ++r) {
      Vector<double> mean = Vector<double>::Zero(n);
      double total = 0;
      for (int p : cohort.participants(r)) {
        Vector<double> x = x0;
        for (int t = 0; t < tau; ++t) x -= lr * gradient_of(p, x);
        mean += participation.weights[std::size_t(p)] * x;
        total += participation.weights[std::size_t(p)];
      }
      u = momentum * u + (x0 - mean / total);
      x0 -= u;
    }
    std::vector<Vector<double>> got(m);
    std::vector<int> active(m, 0);
    sim::run({.workers = m}, [&](sim::Comm& c) {
      auto opt = slowmo::outer_loop(slowmo::Sgd<double>({.lr = lr}), c, {.tau = tau, .participation = participation},
                                    slowmo::outer::HeavyBall<double>({.lr = 1.0, .momentum = momentum}));
      Vector<double> x = Vector<double>::LinSpaced(n, -1, 1), g(n);
      slowmo::start(opt, x);
      for (int t = 0; t < rounds * tau; ++t) {
        if (opt.participating()) {
          g = gradient_of(c.rank(), x);
          ++active[std::size_t(c.rank())];
        } else {
          g = x;  // (not read: an idle worker trains nothing)
        }
        opt.step(x, g);
      }
      got[std::size_t(c.rank())] = x;
    });
    int total_active = 0;
    for (int w = 0; w < m; ++w) {
      CAPTURE(w);
      CHECK((got[std::size_t(w)] - x0).cwiseAbs().maxCoeff() < 1e-14);  // (rounding: m w / W x, then the mean)
      total_active += active[std::size_t(w)];
    }
    CHECK(total_active == rounds * 2 * tau);  // two workers train in each round, tau steps each
  }
}

TEST_CASE("full participation with equal weights is the plain outer loop, bit for bit") {
  const int m = 3;
  auto final_of = [&](slowmo::Participation p) {
    std::vector<Vector<double>> out(m);
    sim::run({.workers = m}, [&](sim::Comm& c) {
      auto opt = slowmo::outer_loop(slowmo::Adam<double>({.lr = 0.05}), c, {.tau = 4, .participation = p},
                                    slowmo::outer::HeavyBall<double>({.lr = 0.7, .momentum = 0.9, .nesterov = true}));
      Vector<double> x = Vector<double>::LinSpaced(5, -1, 1);
      slowmo::start(opt, x);
      for (int t = 0; t < 24; ++t) opt.step(x, gradient_of(c.rank(), x));
      out[std::size_t(c.rank())] = x;
    });
    return out;
  };
  CHECK(final_of({.weights = {2, 2, 2}}) == final_of({}));  // factors m w / W = 1, exactly
  CHECK(final_of({.count = 3}) == final_of({}));
}

TEST_CASE("partial participation: what needs every base to step is refused, naming it") {
  sim::run({.workers = 3}, [&](sim::Comm& c) {
    auto sgd = slowmo::Sgd<double>({.lr = 0.1});
    const slowmo::Participation two{.count = 2};
    CHECK(has(error_of([&] { slowmo::outer_loop(sgd, c, {.tau = 2, .divide_by_lr = true, .participation = two}); }),
              "'divide_by_lr'"));
    CHECK(has(error_of([&] {
                slowmo::outer_loop(sgd, c, {.tau = 2, .base_state = slowmo::OnSync::average, .participation = two});
              }),
              "'base_state' = average"));
    CHECK(has(error_of([&] {
                slowmo::outer_loop(sgd, c, {.tau = 2, .participation = two}, slowmo::outer::HeavyBall<double>(),
                                   slowmo::compress::compressed(slowmo::compress::TopK<double>({.k = 1})));
              }),
              "must be reduce::Mean"));
    CHECK(has(error_of([&] {
                slowmo::outer_loop(sgd, c, {.tau = 2, .participation = two}, slowmo::outer::HeavyBall<double>(),
                                   slowmo::reduce::Mean{}, slowmo::period::Linear{.growth = 1});
              }),
              "'period schedule'"));
    CHECK(has(error_of([&] { slowmo::outer_loop(sgd, c, {.tau = 2, .participation = {.count = 4}}); }),
              "'participation.count' = 4"));
  });
}
