// Worker groups in algorithms: HierarchicalLocalSgd against an independent loop and against
// PyTorch's documented HierarchicalModelAverager schedule; hierarchical SlowMo (Local SGD in
// each node, SlowMo over all) and the HALoS-style nest (an outer rule per group, a global
// one over the groups) as compositions on sub-communicators, against loops written here.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <vector>

#include <slowmo/slowmo.hpp>

#include "support/errors.hpp"
#include "support/zoo.hpp"

namespace {

using slowmo::Vector;
using Workers = std::vector<Vector<double>>;

/// Every worker's x after each step, from the simulator.
template <class Make>
std::vector<Workers> run_sim(int m, int steps, Make make, Eigen::Index d = 5) {
  const auto by_worker = zoo::trajectories<double>(m, steps, make, d);
  std::vector<Workers> out(std::size_t(steps), Workers(static_cast<std::size_t>(m)));
  for (int r = 0; r < m; ++r)
    for (int t = 0; t < steps; ++t) out[std::size_t(t)][std::size_t(r)] = by_worker[std::size_t(r)][std::size_t(t)];
  return out;
}

/// The mean over workers lo..hi-1, summed in rank order and divided, as every backend does.
Vector<double> mean_of(const Workers& x, int lo, int hi) {
  Vector<double> s = x[std::size_t(lo)];
  for (int q = lo + 1; q < hi; ++q) s += x[std::size_t(q)];
  return s / double(hi - lo);
}
/// Workers in groups of g consecutive ranks (the last one smaller) take their group's mean.
void average_groups(Workers& x, int g) {
  const int m = int(x.size());
  for (int lo = 0; lo < m; lo += g) {
    const int hi = std::min(m, lo + g);
    const Vector<double> mu = mean_of(x, lo, hi);
    for (int q = lo; q < hi; ++q) x[std::size_t(q)] = mu;
  }
}
/// The start every trajectory uses (zoo::trajectories), and one plain SGD step of worker r.
Vector<double> x_start(Eigen::Index d) { return Vector<double>::LinSpaced(d, -2, 2); }
void sgd_step(int r, Vector<double>& x, double lr) {
  Vector<double> g(x.size());
  zoo::gradient(r, x, g);
  x -= lr * g;
}

double max_diff(const std::vector<Workers>& a, const std::vector<Workers>& b) {
  double worst = 0;
  for (std::size_t t = 0; t < a.size(); ++t)
    for (std::size_t r = 0; r < a[t].size(); ++r) worst = std::max(worst, (a[t][r] - b[t][r]).cwiseAbs().maxCoeff());
  return worst;
}

}  // namespace

TEST_CASE("HierarchicalLocalSgd: three levels and a warm-up, against a loop written from the definition") {
  using namespace slowmo;
  const int m = 8, steps = 30, W = 2;
  const double lr = 0.1;
  const auto got = run_sim(m, steps, [&](auto& c) {
    return HierarchicalLocalSgd(Sgd<double>({.lr = lr}), c,
                                {.levels = {{.period = 2, .group_size = 2}, {.period = 4, .group_size = 4},
                                            {.period = 8, .group_size = 8}},
                                 .warmup_steps = W});
  });
  // The loop: W steps on the mean gradient, then local steps; after local step t the highest
  // level whose period divides t averages its groups.
  std::vector<Workers> want;
  Workers x(std::size_t(m), x_start(5));
  for (int s = 1; s <= steps; ++s) {
    if (s <= W) {
      Workers g(std::size_t(m), Vector<double>(5));
      for (int r = 0; r < m; ++r) zoo::gradient(r, x[std::size_t(r)], g[std::size_t(r)]);
      const Vector<double> gbar = mean_of(g, 0, m);
      for (auto& xr : x) xr -= lr * gbar;
    } else {
      for (int r = 0; r < m; ++r) sgd_step(r, x[std::size_t(r)], lr);
      const int t = s - W;
      if (t % 8 == 0) average_groups(x, 8);
      else if (t % 4 == 0) average_groups(x, 4);
      else if (t % 2 == 0) average_groups(x, 2);
    }
    want.push_back(x);
  }
  CHECK(max_diff(got, want) <= 1e-14);
  // The hierarchy is visible: after local step 2 the pairs agree and nothing else does; after
  // 4 the fours; after 8 everyone.
  auto same = [&](int t, int a, int b) { return got[std::size_t(W + t - 1)][std::size_t(a)] == got[std::size_t(W + t - 1)][std::size_t(b)]; };
  CHECK(same(2, 0, 1));
  CHECK(!same(2, 1, 2));
  CHECK(same(4, 0, 3));
  CHECK(!same(4, 3, 4));
  CHECK(same(8, 0, 7));
  CHECK(!same(3, 0, 1));
}

TEST_CASE("HierarchicalLocalSgd: one level is LocalSgd bit for bit, with every base-state policy") {
  using namespace slowmo;
  for (auto policy : {OnSync::keep, OnSync::reset, OnSync::average}) {
    CAPTURE(int(policy));
    const auto a = run_sim(4, 25, [&](auto& c) {
      return HierarchicalLocalSgd(Nesterov<double>({.lr = 0.1, .momentum = 0.8}), c,
                                  {.levels = {{.period = 3, .group_size = 4}}, .warmup_steps = 2, .base_state = policy});
    });
    const auto b = run_sim(4, 25, [&](auto& c) {
      return LocalSgd(Nesterov<double>({.lr = 0.1, .momentum = 0.8}), c,
                      {.H = 3, .warmup_steps = 2, .base_state = policy});
    });
    CHECK(max_diff(a, b) == 0);
  }
}

TEST_CASE("HierarchicalLocalSgd picks the level as PyTorch's HierarchicalModelAverager documents") {
  using namespace slowmo;
  // The documentation's example: periods 2, 4 and 8 — "at the 4th iteration, only the second
  // process group will run averaging ... the third can only be triggered every 8 iterations".
  slowmo::sim::run({.workers = 8}, [](sim::Comm& c) {
    HierarchicalLocalSgd opt(Sgd<double>({.lr = 0.1}), c,
                             {.levels = {{.period = 2, .group_size = 2}, {.period = 4, .group_size = 4},
                                         {.period = 8, .group_size = 8}}});
    const int want[] = {-1, 0, -1, 1, -1, 0, -1, 2, -1, 0, -1, 1, -1, 0, -1, 2};
    for (int s = 1; s <= 16; ++s) CHECK(opt.level_at(s) == want[s - 1]);
    CHECK(opt.group(0).size() == 2);
    CHECK(opt.group(1).size() == 4);
    CHECK(opt.group(1).rank() == c.rank() % 4);
  });
  // And its usage example on 16 workers, OrderedDict([(4, 8), (16, 16)]): groups of 8 every
  // 4 steps, everyone every 16; in between the workers drift apart.
  const auto x = run_sim(16, 16, [](auto& c) {
    return HierarchicalLocalSgd(Sgd<double>({.lr = 0.1}), c,
                                {.levels = {{.period = 4, .group_size = 8}, {.period = 16, .group_size = 16}}});
  });
  auto agree = [&](int s, int a, int b) { return x[std::size_t(s - 1)][std::size_t(a)] == x[std::size_t(s - 1)][std::size_t(b)]; };
  for (int s : {4, 8, 12}) {
    CAPTURE(s);
    CHECK(agree(s, 0, 7));
    CHECK(agree(s, 8, 15));
    CHECK(!agree(s, 7, 8));
  }
  CHECK(agree(16, 0, 15));
  for (int s : {1, 2, 3, 5}) CHECK(!agree(s, 0, 1));
}

TEST_CASE("HierarchicalLocalSgd: groups need not divide the workers: 3 + 1 and 2 + 2") {
  using namespace slowmo;
  const auto got = run_sim(4, 12, [](auto& c) {
    return HierarchicalLocalSgd(Sgd<double>({.lr = 0.1}), c,
                                {.levels = {{.period = 2, .group_size = 3}, {.period = 6, .group_size = 4}}});
  });
  std::vector<Workers> want;
  Workers x(4, x_start(5));
  for (int s = 1; s <= 12; ++s) {
    for (int r = 0; r < 4; ++r) sgd_step(r, x[std::size_t(r)], 0.1);
    if (s % 6 == 0) average_groups(x, 4);
    else if (s % 2 == 0) average_groups(x, 3);  // {0, 1, 2} and {3}
    want.push_back(x);
  }
  CHECK(max_diff(got, want) <= 1e-14);
}

TEST_CASE("HierarchicalLocalSgd: bad levels name the level and the field") {
  using namespace slowmo;
  slowmo::sim::run({.workers = 4}, [](sim::Comm& c) {
    auto make = [&](HierarchicalLocalSgdOptions o) { return HierarchicalLocalSgd(Sgd<double>({.lr = 0.1}), c, o); };
    auto error = [&](HierarchicalLocalSgdOptions o) { return check::error_of([&] { (void)make(o); }); };
    CHECK(check::has(error({}), "'levels.size()' = 0"));
    CHECK(check::has(error({.levels = {{2, 2}, {1, 4}}}), "'levels[1].period' = 1"));
    CHECK(check::has(error({.levels = {{2, 2}, {4, 3}, {8, 4}}}), "'levels[1].group_size' = 3"));
    CHECK(check::has(error({.levels = {{2, 2}, {4, 3}, {8, 4}}}), "multiple of levels[0].group_size = 2"));
    CHECK(check::has(error({.levels = {{2, 2}}}), "'levels[0].group_size' = 2 is invalid: must be the number of workers, 4"));
    CHECK(check::has(error({.levels = {{0, 4}}}), "'levels[0].period' = 0"));
    CHECK(check::has(error({.levels = {{2, 5}}}), "'levels[0].group_size' = 5"));
    CHECK(check::has(error({.levels = {{2, 4}}, .warmup_steps = -1}), "'warmup_steps' = -1"));
    // Every worker refused the same options before splitting: the communicator still works.
    std::vector<double> v{1.0};
    c.all_reduce(std::span<double>(v), ReduceOp::sum);
    CHECK(v[0] == 4);
  });
}

TEST_CASE("hierarchical SlowMo: Local SGD inside each node, SlowMo's outer step over everyone") {
  using namespace slowmo;
  // 2 nodes of 3 workers; each node averages every H = 2 steps; SlowMo's outer step every
  // tau = 6 (a node average then falls on it), alpha 1.2, beta 0.5, gamma 0.1.
  const int m = 6, node = 3, steps = 24, H = 2, tau = 6;
  const double lr = 0.1, alpha = 1.2, beta = 0.5;
  std::vector<Workers> got(std::size_t(steps), Workers(static_cast<std::size_t>(m)));
  sim::run({.workers = m}, [&](sim::Comm& c) {
    sim::Comm mine = c.split(c.rank() / node, c.rank());
    SlowMo opt(LocalSgd(Sgd<double>({.lr = lr}), mine, {.H = H}), c, {.tau = tau, .alpha = alpha, .beta = beta});
    Vector<double> x = x_start(5), g(5);
    opt.start(x);
    for (int t = 0; t < steps; ++t) {
      zoo::gradient(c.rank(), x, g);
      opt.step(x, g);
      got[std::size_t(t)][std::size_t(c.rank())] = x;
    }
  });
  // The loop (SlowMo's Algorithm 1 with node-level Local SGD as the base):
  //   local SGD steps; every H: node means; every tau: x_bar = mean of all,
  //   u = beta u + (x0 - x_bar) / gamma, x0 -= alpha gamma u, everyone restarts at x0.
  std::vector<Workers> want;
  Workers x(std::size_t(m), x_start(5));
  Vector<double> x0 = x_start(5), u = Vector<double>::Zero(5);
  for (int s = 1; s <= steps; ++s) {
    for (int r = 0; r < m; ++r) sgd_step(r, x[std::size_t(r)], lr);
    if (s % H == 0) average_groups(x, node);
    if (s % tau == 0) {
      const Vector<double> xbar = mean_of(x, 0, m);
      u = beta * u + (x0 - xbar) / lr;
      x0 -= alpha * lr * u;
      for (auto& xr : x) xr = x0;
    }
    want.push_back(x);
  }
  CHECK(max_diff(got, want) <= 1e-12);
}

TEST_CASE("HALoS-style nest: each group's outer rule on its own, a global rule merges the groups every K rounds") {
  using namespace slowmo;
  // 2 groups of 2: each runs DiLoCo-style rounds of tau1 = 3 local steps with its own Nesterov
  // outer rule (lr 0.7, momentum 0.9) over its group; every K = 2 group rounds (tau2 = 6 steps)
  // a global heavy-ball rule (lr 0.5, momentum 0.5) merges the groups over everyone, and the
  // groups restart from the global point with their momenta kept.
  const int m = 4, g = 2, steps = 24, tau1 = 3, tau2 = 6;
  const double lr = 0.1;
  std::vector<Workers> got(std::size_t(steps), Workers(static_cast<std::size_t>(m)));
  sim::run({.workers = m}, [&](sim::Comm& c) {
    sim::Comm group = c.split(c.rank() / g, c.rank());
    auto inner = outer_loop(Sgd<double>({.lr = lr}), group, {.tau = tau1},
                            outer::HeavyBall<double>({.lr = 0.7, .momentum = 0.9, .nesterov = true}));
    auto opt = outer_loop(std::move(inner), c, {.tau = tau2}, outer::HeavyBall<double>({.lr = 0.5, .momentum = 0.5}));
    Vector<double> x = x_start(5), grad(5);
    opt.start(x);
    for (int t = 0; t < steps; ++t) {
      zoo::gradient(c.rank(), x, grad);
      opt.step(x, grad);
      got[std::size_t(t)][std::size_t(c.rank())] = x;
    }
  });
  std::vector<Workers> want;
  Workers x(std::size_t(m), x_start(5));
  std::vector<Vector<double>> y0(2, x_start(5)), v(2, Vector<double>::Zero(5));  // per group
  Vector<double> x0 = x_start(5), u = Vector<double>::Zero(5);
  for (int s = 1; s <= steps; ++s) {
    for (int r = 0; r < m; ++r) sgd_step(r, x[std::size_t(r)], lr);
    if (s % tau1 == 0)
      for (int k = 0; k < 2; ++k) {  // the group's Nesterov outer step: y0 -= lr (d + momentum v)
        const Vector<double> d = y0[std::size_t(k)] - mean_of(x, g * k, g * k + g);
        v[std::size_t(k)] = 0.9 * v[std::size_t(k)] + d;
        y0[std::size_t(k)] -= 0.7 * (d + 0.9 * v[std::size_t(k)]);
        for (int q = g * k; q < g * k + g; ++q) x[std::size_t(q)] = y0[std::size_t(k)];
      }
    if (s % tau2 == 0) {  // the global heavy-ball step over everyone; the groups restart there
      const Vector<double> d = x0 - mean_of(x, 0, m);
      u = 0.5 * u + d;
      x0 -= 0.5 * u;
      for (auto& xr : x) xr = x0;
      for (auto& y : y0) y = x0;
    }
    want.push_back(x);
  }
  CHECK(max_diff(got, want) <= 1e-12);
}

TEST_CASE("module sharing (DiPaCo style): each module's outer step averages over the workers that hold it") {
  using namespace slowmo;
  // 4 workers on 2 paths of 2 modules out of 3: path 0 = {m0, m2} (workers 0, 1), path 1 =
  // {m1, m2} (workers 2, 3). A worker's parameters are its path's [first module, m2], 3 values
  // each; the first module's outer loop runs on the path's communicator, m2's on everyone's.
  const int m = 4, steps = 16, tau = 4;
  const double lr = 0.1, outer_lr = 0.7, mu = 0.5;
  std::vector<Workers> got(std::size_t(steps), Workers(static_cast<std::size_t>(m)));
  sim::run({.workers = m}, [&](sim::Comm& c) {
    sim::Comm path = c.split(c.rank() / 2, c.rank());  // the holders of m0, or of m1
    auto opt = outer_loop(outer_loop(Sgd<double>({.lr = lr}), path, {.tau = tau, .segment = {.offset = 0, .size = 3}},
                                     outer::HeavyBall<double>({.lr = outer_lr, .momentum = mu})),
                          c, {.tau = tau, .segment = {.offset = 3, .size = 3}},
                          outer::HeavyBall<double>({.lr = outer_lr, .momentum = mu}));
    Vector<double> x = x_start(6), g(6);
    opt.start(x);
    for (int t = 0; t < steps; ++t) {
      zoo::gradient(c.rank(), x, g);
      opt.step(x, g);
      got[std::size_t(t)][std::size_t(c.rank())] = x;
    }
  });
  // The loop: each module k has its global point y_k and momentum v_k; every tau steps,
  // d = y_k - (mean of its holders' copies), v = mu v + d, y -= lr v, every holder takes y.
  std::vector<Workers> want;
  Workers x(std::size_t(m), x_start(6));
  std::vector<Vector<double>> y = {x_start(6).head(3), x_start(6).head(3), x_start(6).tail(3)};
  std::vector<Vector<double>> v(3, Vector<double>::Zero(3));
  auto sync = [&](int k, std::vector<int> holders, Eigen::Index at) {
    Vector<double> mean = x[std::size_t(holders[0])].segment(at, 3);
    for (std::size_t h = 1; h < holders.size(); ++h) mean += x[std::size_t(holders[h])].segment(at, 3);
    mean /= double(holders.size());
    const Vector<double> d = y[std::size_t(k)] - mean;
    v[std::size_t(k)] = mu * v[std::size_t(k)] + d;
    y[std::size_t(k)] -= outer_lr * v[std::size_t(k)];
    for (int h : holders) x[std::size_t(h)].segment(at, 3) = y[std::size_t(k)];
  };
  for (int s = 1; s <= steps; ++s) {
    for (int r = 0; r < m; ++r) sgd_step(r, x[std::size_t(r)], lr);
    if (s % tau == 0) {
      sync(0, {0, 1}, 0);
      sync(1, {2, 3}, 0);
      sync(2, {0, 1, 2, 3}, 3);
    }
    want.push_back(x);
  }
  CHECK(max_diff(got, want) <= 1e-12);
  // The shared module agrees everywhere after a sync, the private ones only along their path.
  const Workers& last = got.back();
  CHECK(last[0].tail(3) == last[3].tail(3));
  CHECK(last[0].head(3) == last[1].head(3));
  CHECK(last[1].head(3) != last[2].head(3));
}

TEST_CASE("an outer loop of a segment: bad segments and base-state policies name the field") {
  using namespace slowmo;
  sim::run({.workers = 2}, [](sim::Comm& c) {
    Vector<double> x = Vector<double>::Zero(6);
    auto start_with = [&](OuterLoopOptions o) {
      return check::error_of([&] {
        auto opt = outer_loop(Sgd<double>({.lr = 0.1}), c, o);
        opt.start(x);
      });
    };
    CHECK(check::has(start_with({.tau = 2, .segment = {.offset = 4, .size = 3}}),
                     "'segment' = {4, 3} is invalid: must lie inside the 6 parameters"));
    CHECK(check::has(start_with({.tau = 2, .segment = {.offset = -1}}), "'segment.offset' = -1"));
    CHECK(check::has(start_with({.tau = 2, .base_state = OnSync::average, .segment = {.offset = 1}}),
                     "'base_state' = average is invalid: must be keep for an outer loop of a segment"));
  });
}
