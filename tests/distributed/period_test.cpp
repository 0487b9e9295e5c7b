// Synchronisation schedules (distributed/period.hpp): QSR's periods by hand, LocalSgd on a QSR
// schedule under a cosine learning rate against a loop written here (bit for bit), the bytes
// it saves against a constant period, the outer loop on a growing schedule, the identities
// with the constant schedule, and bad schedules refused before anything changes.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include <slowmo/slowmo.hpp>

#include "support/errors.hpp"

namespace {

using check::error_of;
using check::has;

using slowmo::Vector;
namespace sim = slowmo::sim;
namespace period = slowmo::period;

/// f_w(x) = a_w |x - c_w|^2 / 2, a_w = 1 + w / 2, c_w = w - 1 in every coordinate.
Vector<double> gradient_of(int w, const Vector<double>& x) { return (1 + 0.5 * w) * (x.array() - (w - 1.0)).matrix(); }

}  // namespace

TEST_CASE("QSR and the linear schedule: periods by hand") {
  const period::Qsr qsr{.alpha = 0.2};
  CHECK(qsr({.period = 8, .lr = 0.01}) == 400);    // (0.2 / 0.01)^2
  CHECK(qsr({.period = 8, .lr = 0.1}) == 8);       // (0.2 / 0.1)^2 = 4 < H
  CHECK(qsr({.period = 8, .lr = 0.03}) == 44);     // floor(44.4...)
  CHECK(qsr({.period = 8, .lr = 0.0}) == period::max_period);
  const period::Qsr linear_rule{.alpha = 0.2, .power = 1};
  CHECK(linear_rule({.period = 2, .lr = 0.01}) == 20);
  const period::Linear growing{.growth = 1.5};
  CHECK(growing({.period = 4, .round = 0}) == 4);
  CHECK(growing({.period = 4, .round = 3}) == 8);  // 4 + floor(4.5)
  CHECK(period::Constant{}({.period = 6, .round = 9, .lr = 1e-9}) == 6);
  CHECK(has(error_of([] { period::Qsr{.alpha = 0}({.period = 2, .lr = 0.1}); }), "'alpha' = 0"));
  CHECK(has(error_of([] { period::Qsr{.alpha = 0.2}({.period = 2, .lr = -1}); }), "'lr' = -1"));
}

// Three workers, SGD with lr_t = 0.4 (1 + cos(pi t / 60)) / 2 (the cosine schedule over 60
// steps), QSR with H = 2 and alpha = 0.1: each round's length is max(2, floor((0.1 / lr)^2))
// with lr the one of the round's first step, then the parameters are averaged (summed in rank
// order, divided by 3: what the simulator computes).
TEST_CASE("LocalSgd on QSR under a cosine lr is a loop written here, bit for bit, and sends less") {
  const int m = 3, steps = 60;
  const Eigen::Index n = 7;
  const double lr0 = 0.4, alpha = 0.1;
  auto lr = [&](int t) { return lr0 * (0.5 * (1.0 + std::cos(std::numbers::pi * double(t) / double(steps)))); };

  std::vector<Vector<double>> x(m, Vector<double>::LinSpaced(n, -1, 1));
  std::vector<int> lengths;
  int averages = 0;
  for (int t = 0; t < steps;) {
    const int H = std::max(2, int(std::floor(std::pow(alpha / lr(t), 2))));
    lengths.push_back(H);
    int k = 0;
    for (; k < H && t < steps; ++k, ++t)
      for (int w = 0; w < m; ++w) x[std::size_t(w)] -= lr(t) * gradient_of(w, x[std::size_t(w)]);
    if (k == H) {
      const Vector<double> mean = ((x[0] + x[1]) + x[2]) / 3.0;
      x.assign(m, mean);
      ++averages;
    }
  }
  REQUIRE(lengths.front() == 2);
  REQUIRE(lengths.back() > 8);  // the periods grow as the lr decays

  auto run = [&](auto schedule, std::vector<Vector<double>>& out, std::vector<std::int64_t>& counts) {
    return sim::run({.workers = m}, [&](sim::Comm& c) {
      slowmo::LocalSgd opt(slowmo::Sgd<double, slowmo::schedule::Cosine>({.lr = lr0}, {.total_steps = steps}), c,
                           {.H = 2, .broadcast_initial = false}, schedule);  // (every worker starts at x already)
      Vector<double> xw = Vector<double>::LinSpaced(n, -1, 1);
      slowmo::start(opt, xw);
      for (int t = 0; t < steps; ++t) opt.step(xw, gradient_of(c.rank(), xw));
      out[std::size_t(c.rank())] = xw;
      counts[std::size_t(c.rank())] = opt.averages();
    });
  };
  std::vector<Vector<double>> qsr(m), constant(m);
  std::vector<std::int64_t> qsr_averages(m), constant_averages(m);
  const auto qsr_report = run(period::Qsr{.alpha = alpha}, qsr, qsr_averages);
  const auto constant_report = run(period::Constant{}, constant, constant_averages);
  for (int w = 0; w < m; ++w) {
    CAPTURE(w);
    CHECK(qsr[std::size_t(w)] == x[std::size_t(w)]);
    CHECK(qsr_averages[std::size_t(w)] == averages);
    CHECK(constant_averages[std::size_t(w)] == steps / 2);
  }
  // The bytes: each average is one all-reduce of n doubles, of which a ring sends 2 (m-1)/m.
  const auto per_average = std::uint64_t(2.0 * (m - 1) / m * double(n * sizeof(double)));
  CHECK(qsr_report.workers[0].bytes_sent == std::uint64_t(averages) * per_average);
  CHECK(constant_report.workers[0].bytes_sent == std::uint64_t(steps / 2) * per_average);
  CHECK(averages < steps / 2);  // QSR averages less often once the lr has decayed
}

TEST_CASE("the constant schedule's identities: QSR below H, a growth of 0, are the constant period bit for bit") {
  const int m = 3, steps = 36;
  auto final_of = [&](auto make) {
    std::vector<Vector<double>> out(m);
    sim::run({.workers = m}, [&](sim::Comm& c) {
      auto opt = make(c);
      Vector<double> x = Vector<double>::LinSpaced(5, -1, 1);
      slowmo::start(opt, x);
      for (int t = 0; t < steps; ++t) opt.step(x, gradient_of(c.rank(), x));
      out[std::size_t(c.rank())] = x;
    });
    return out;
  };
  auto local = [](auto schedule) {
    return [=](sim::Comm& c) { return slowmo::LocalSgd(slowmo::Sgd<double>({.lr = 0.1}), c, {.H = 4}, schedule); };
  };
  // (0.1 / 0.1)^2 = 1 < 4: every QSR period is H.
  CHECK(final_of(local(period::Qsr{.alpha = 0.1})) == final_of(local(period::Constant{})));
  CHECK(final_of(local(period::Linear{.growth = 0})) == final_of(local(period::Constant{})));
  auto outer = [](auto schedule) {
    return [=](sim::Comm& c) {
      return slowmo::outer_loop(slowmo::AdamW<double>({.lr = 0.02}), c, {.tau = 6},
                                slowmo::outer::HeavyBall<double>({.lr = 0.7, .momentum = 0.9, .nesterov = true}),
                                slowmo::reduce::Mean{}, schedule);
    };
  };
  CHECK(final_of(outer(period::Linear{.growth = 0})) == final_of(outer(period::Constant{})));
}

// tau = 3 growing by 1 per round: rounds of 3, 4, 5, 6 end after steps 3, 7, 12, 18; the
// parameters agree on every worker exactly there.
TEST_CASE("the outer loop on a growing schedule: outer steps where the schedule puts them") {
  std::vector<int> ends;
  sim::run({.workers = 2}, [&](sim::Comm& c) {
    auto opt = slowmo::outer_loop(slowmo::Sgd<double>({.lr = 0.1}), c, {.tau = 3}, slowmo::outer::HeavyBall<double>(),
                                  slowmo::reduce::Mean{}, period::Linear{.growth = 1});
    Vector<double> x = Vector<double>::Zero(4);
    slowmo::start(opt, x);
    std::int64_t outer = 0;
    for (int t = 1; t <= 20; ++t) {
      opt.step(x, gradient_of(c.rank(), x));
      if (opt.outer_steps() != outer) {
        outer = opt.outer_steps();
        CHECK(opt.agreement().parameters);
        Vector<double> other = x;
        c.broadcast(slowmo::as_span(other), 1);
        CHECK(other == x);
        if (c.rank() == 0) ends.push_back(t);
      } else {
        CHECK(!opt.agreement().parameters);
      }
    }
  });
  CHECK(ends == std::vector<int>{3, 7, 12, 18});
}

namespace {
/// A schedule that returns 0 for round 2: refused.
struct BrokenAtRound2 {
  std::int64_t operator()(const period::Context& c) const { return c.round == 2 ? 0 : c.period; }
};
}  // namespace

TEST_CASE("a schedule's period below 1 is refused, naming the round, before anything changes") {
  sim::run({.workers = 2}, [&](sim::Comm& c) {
    slowmo::LocalSgd opt(slowmo::Adam<double>({.lr = 0.1}), c, {.H = 3}, BrokenAtRound2{});
    Vector<double> x = Vector<double>::Ones(4), g = Vector<double>::Ones(4);
    slowmo::start(opt, x);
    for (int t = 0; t < 6; ++t) opt.step(x, g);  // rounds 0 and 1
    const Vector<double> before = x;
    const auto bytes = slowmo::checkpoint_bytes(opt);
    const std::string e = error_of([&] { opt.step(x, g); });
    CHECK(has(e, "'period' = 0"));
    CHECK(has(e, "round 2"));
    CHECK(x == before);
    CHECK(slowmo::checkpoint_bytes(opt) == bytes);
  });
}
