// Asynchronous Local SGD (distributed/async_local_sgd.hpp) and Delayed Nesterov
// (outer/delayed_nesterov.hpp): the rule by hand, its identity with Nesterov, one worker being
// synchronous DiLoCo bit for bit, the arrival order of equal-speed workers against a loop
// written here, staleness, Dynamic Local Updates' step counts, and bad input.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include <slowmo/slowmo.hpp>

namespace {

using slowmo::Vector;
namespace sim = slowmo::sim;

/// One arrival of d at `rule` (round = its 0-based index) on a one-element model.
template <class Rule>
double arrive(Rule& rule, double& x0, double d, std::int64_t round) {
  Vector<double> xd = Vector<double>::Constant(1, d), p = Vector<double>::Constant(1, x0);
  std::apply([&](auto&... b) { slowmo::Host::for_each(1, rule.kernel({.round = round}), xd.data(), p.data(), b.data()...); },
             rule.buffers());
  x0 = p[0];
  return x0;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// f_w(x) = |x - c_w|^2 / 2 with c_w = w + 1 in every coordinate: g = x - c_w.
template <class T>
Vector<T> gradient_of(int w, const Vector<T>& x) {
  return x.array() - T(w + 1);
}

}  // namespace

// N = 2, c = 0.5, beta = 0.9, lr = 0.5, arrivals d = 1, 2, 3, 4 (c beta = 0.45 and
// (1 - cN + c) beta = 0.45):
//   1: D = 1;  x = -0.5 (0.45 * 0 + 1/2)                           = -0.25
//   2: D = 3;  m = 3/2 = 1.5;  x = -0.25 - 0.5 (0.45 * 1.5 + 1)     = -1.0875;   D = 0
//   3: D = 3;  x = -1.0875 - 0.5 (0.45 * 1.5 + 1.5)                 = -2.175
//   4: D = 7;  m = 0.9 * 1.5 + 7/2 = 4.85;  x = -2.175 - 0.5 (0.45 * 4.85 + 2) = -4.26625
TEST_CASE("Delayed Nesterov: a hand-computed trajectory") {
  slowmo::outer::DelayedNesterov<double> dn({.lr = 0.5, .momentum = 0.9, .N = 2, .c = 0.5});
  dn.init(1);
  double x = 0;
  CHECK(arrive(dn, x, 1, 0) == doctest::Approx(-0.25).epsilon(1e-15));
  CHECK(dn.accumulator()[0] == 1);
  CHECK(arrive(dn, x, 2, 1) == doctest::Approx(-1.0875).epsilon(1e-15));
  CHECK(dn.momentum_buffer()[0] == doctest::Approx(1.5).epsilon(1e-15));
  CHECK(dn.accumulator()[0] == 0);
  CHECK(arrive(dn, x, 3, 2) == doctest::Approx(-2.175).epsilon(1e-15));
  CHECK(arrive(dn, x, 4, 3) == doctest::Approx(-4.26625).epsilon(1e-15));
  CHECK(dn.momentum_buffer()[0] == doctest::Approx(4.85).epsilon(1e-15));
}

TEST_CASE("Delayed Nesterov with N = 1, c = 0 is Nesterov on every arrival, bit for bit") {
  slowmo::outer::DelayedNesterov<float> dn({.lr = 0.7, .momentum = 0.9, .N = 1, .c = 0});
  slowmo::outer::HeavyBall<float> nesterov({.lr = 0.7, .momentum = 0.9, .nesterov = true});
  const Eigen::Index n = 37;
  dn.init(n);
  nesterov.init(n);
  Vector<float> xa = Vector<float>::LinSpaced(n, -1, 1), xb = xa;
  for (std::int64_t k = 0; k < 20; ++k) {
    const Vector<float> d = Vector<float>::LinSpaced(n, 0.3f, -0.2f) * float(std::sin(double(k)));
    Vector<float> da = d, db = d;
    std::apply([&](auto&... b) { slowmo::Host::for_each(n, dn.kernel({.round = k}), da.data(), xa.data(), b.data()...); },
               dn.buffers());
    std::apply([&](auto&... b) { slowmo::Host::for_each(n, nesterov.kernel({.round = k}), db.data(), xb.data(), b.data()...); },
               nesterov.buffers());
    REQUIRE(xa == xb);
  }
  CHECK(dn.momentum_buffer() == nesterov.momentum_buffer());
}

TEST_CASE("async Local SGD on one worker is synchronous DiLoCo, bit for bit") {
  const Eigen::Index n = 16;
  const int H = 5, steps = 60;
  auto inner = [] { return slowmo::AdamW<float>({.lr = 1e-2, .weight_decay = 0.01}); };
  Vector<float> x_sync, x_async;
  sim::run({.workers = 1}, [&](sim::Comm& comm) {
    auto opt = slowmo::outer_loop(inner(), comm, {.tau = H},
                                  slowmo::outer::HeavyBall<float>({.lr = 0.7, .momentum = 0.9, .nesterov = true}));
    Vector<float> x = Vector<float>::LinSpaced(n, -2, 3);
    slowmo::start(opt, x);
    for (int t = 0; t < steps; ++t) opt.step(x, gradient_of(0, x));
    x_sync = x;
  });
  sim::run({.workers = 1}, [&](sim::Comm& comm) {
    auto opt = slowmo::AsyncLocalSgd(inner(), comm, {.H = H},
                                     slowmo::outer::DelayedNesterov<float>({.lr = 0.7, .momentum = 0.9, .N = 1}));
    Vector<float> x = Vector<float>::LinSpaced(n, -2, 3);
    slowmo::start(opt, x);
    for (int t = 0; t < steps; ++t) opt.step(x, gradient_of(0, x));
    CHECK(opt.pushes() == steps / H);
    CHECK(opt.last_pull().version == steps / H);
    CHECK(opt.staleness_sum() == 0);
    x_async = x;
  });
  CHECK(x_sync == x_async);
  CHECK((x_sync.array() - 1).abs().maxCoeff() < 1.0);  // (it moved toward c = 1: it started 3 away)
}

// With equal speeds and a free network, the pushes of one round are simultaneous: the
// simulator serves them by rank, each worker's pull right after its own push (its pull
// (t, w) comes before the push (t, w + 1)). So the run is this loop, in this order:
//   for each round, for w = 0..m-1: H SGD steps from x_pulled[w]; push; pull.
TEST_CASE("equal-speed workers: the arrival order of a loop written here, and its staleness") {
  const int m = 3, H = 4, rounds = 6;
  const Eigen::Index n = 5;
  const double lr = 0.1;
  using Rule = slowmo::outer::DelayedNesterov<double>;
  const slowmo::outer::DelayedNesterovOptions dn{.lr = 0.6, .momentum = 0.9, .N = m, .c = 0.2};

  // The loop.
  Rule rule(dn);
  rule.init(n);
  Vector<double> global = Vector<double>::LinSpaced(n, -1, 1);
  std::vector<Vector<double>> pulled(m, global);
  std::vector<std::int64_t> pulled_version(m, 0), staleness;
  std::int64_t version = 0;
  for (int r = 0; r < rounds; ++r)
    for (int w = 0; w < m; ++w) {
      Vector<double> x = pulled[std::size_t(w)];
      for (int t = 0; t < H; ++t) x = x - lr * gradient_of(w, x);
      Vector<double> d = pulled[std::size_t(w)] - x;
      std::apply([&](auto&... b) { slowmo::Host::for_each(n, rule.kernel({.round = version}), d.data(), global.data(), b.data()...); },
                 rule.buffers());
      staleness.push_back(version - pulled_version[std::size_t(w)]);
      ++version;
      pulled[std::size_t(w)] = global;
      pulled_version[std::size_t(w)] = version;
    }

  // The simulator.
  std::vector<Vector<double>> final(m);
  std::vector<std::int64_t> stale_sum(m);
  sim::run({.workers = m, .network = sim::Network::free()}, [&](sim::Comm& comm) {
    auto opt = slowmo::AsyncLocalSgd(slowmo::Sgd<double>({.lr = lr}), comm, {.H = H}, Rule(dn));
    Vector<double> x = Vector<double>::LinSpaced(n, -1, 1);
    slowmo::start(opt, x);
    for (int t = 0; t < rounds * H; ++t) {
      comm.compute(1.0);
      opt.step(x, gradient_of(comm.rank(), x));
    }
    final[std::size_t(comm.rank())] = x;
    stale_sum[std::size_t(comm.rank())] = opt.staleness_sum();
  });
  for (int w = 0; w < m; ++w) {
    CAPTURE(w);
    CHECK(final[std::size_t(w)] == pulled[std::size_t(w)]);
    std::int64_t expect = 0;
    for (int r = 0; r < rounds; ++r) expect += staleness[std::size_t(r * m + w)];
    CHECK(stale_sum[std::size_t(w)] == expect);
  }
  // The first round: worker w's push finds the w pushes before it; after that, m - 1 every time.
  CHECK(staleness[0] == 0);
  CHECK(staleness[1] == 1);
  CHECK(staleness[2] == 2);
  for (std::size_t k = std::size_t(m); k < staleness.size(); ++k) CHECK(staleness[k] == m - 1);
}

TEST_CASE("Dynamic Local Updates: H_w = max(1, floor(v_w / max v * H))") {
  const std::vector<double> speeds = {1.0, 0.5, 0.13, 0.01};
  std::vector<std::int64_t> H_w(4);
  sim::run({.workers = 4}, [&](sim::Comm& comm) {
    auto opt = slowmo::AsyncLocalSgd(slowmo::Sgd<float>({.lr = 0.1}), comm, {.H = 20, .dylu = {.enabled = true, .speeds = speeds}},
                                     slowmo::outer::DelayedNesterov<float>());
    Vector<float> x = Vector<float>::Zero(3);
    slowmo::start(opt, x);
    H_w[std::size_t(comm.rank())] = opt.round_steps();
  });
  CHECK(H_w == std::vector<std::int64_t>{20, 10, 2, 1});  // 20, 10, floor(2.6), max(1, floor(0.2))

  // Measured: each worker times its first round on the simulator (slowdowns 1, 2, 4).
  std::vector<std::int64_t> measured(3);
  sim::run({.workers = 3, .network = sim::Network::free(), .slowdown = {1, 2, 4}}, [&](sim::Comm& comm) {
    auto opt = slowmo::AsyncLocalSgd(slowmo::Sgd<float>({.lr = 0.1}), comm, {.H = 8, .dylu = {.enabled = true}},
                                     slowmo::outer::DelayedNesterov<float>());
    Vector<float> x = Vector<float>::Zero(3);
    slowmo::start(opt, x);
    for (int t = 0; t < 8; ++t) {
      comm.compute(1.0);
      opt.step(x, gradient_of(comm.rank(), x));
    }
    measured[std::size_t(comm.rank())] = opt.round_steps();
  });
  CHECK(measured == std::vector<std::int64_t>{8, 4, 2});
}

TEST_CASE("async Local SGD and Delayed Nesterov: bad options name the option and the value") {
  using slowmo::outer::DelayedNesterov;
  CHECK(has(error_of([] { DelayedNesterov<float>({.N = 0}); }), "'N' = 0"));
  CHECK(has(error_of([] { DelayedNesterov<float>({.c = 1.5}); }), "'c' = 1.5"));
  CHECK(has(error_of([] { DelayedNesterov<float>({.c = -0.1}); }), "'c' = -0.1"));
  CHECK(has(error_of([] { DelayedNesterov<float>({.momentum = 1.0}); }), "'momentum' = 1"));
  sim::run({.workers = 2}, [&](sim::Comm& comm) {
    auto base = slowmo::Sgd<float>({.lr = 0.1});
    CHECK(has(error_of([&] { slowmo::AsyncLocalSgd(base, comm, {.H = 0}); }), "'H' = 0"));
    CHECK(has(error_of([&] { slowmo::AsyncLocalSgd(base, comm, {.base_state = slowmo::OnSync::average}); }),
              "'base_state' = average"));
    CHECK(has(error_of([&] { slowmo::AsyncLocalSgd(base, comm, {.dylu = {.enabled = true, .speeds = {1.0}}}); }),
              "'dylu.speeds.size()' = 1"));
    CHECK(has(error_of([&] { slowmo::AsyncLocalSgd(base, comm, {.dylu = {.enabled = true, .speeds = {1.0, -2.0}}}); }),
              "'dylu.speeds[1]' = -2"));
    CHECK(has(error_of([&] {
                slowmo::AsyncLocalSgd(base, comm, {.dylu = {.enabled = true, .speeds = {1.0, std::nan("")}}});
              }),
              "'dylu.speeds[1]' = nan"));
    // A step before start is refused, and nothing moves.
    auto opt = slowmo::AsyncLocalSgd(base, comm, {.H = 2});
    Vector<float> x = Vector<float>::Ones(4), g = Vector<float>::Ones(4);
    CHECK_THROWS_AS(opt.step(x, g), slowmo::usage_error);
    CHECK(x == Vector<float>::Ones(4));
    slowmo::start(opt, x);
    // A gradient of the wrong size is refused before anything changes.
    Vector<float> short_g = Vector<float>::Ones(3);
    CHECK_THROWS_AS(opt.step(x, short_g), slowmo::size_mismatch);
    CHECK(opt.steps() == 0);
  });
}

// Classic asynchronous SGD: H = 1, an SGD base, a momentum-free rule of lr 1 — the server
// takes d = x_pulled - (x_pulled - lr g) = lr g: SGD on one worker, to the rounding of d.
TEST_CASE("asynchronous SGD (H = 1) on one worker is SGD, to rounding") {
  const Eigen::Index n = 8;
  Vector<double> x_sgd = Vector<double>::LinSpaced(n, -1, 2), x_async = x_sgd;
  auto sgd = slowmo::Sgd<double>({.lr = 0.1});
  for (int t = 0; t < 30; ++t) sgd.step(x_sgd, gradient_of(0, x_sgd));
  sim::run({.workers = 1}, [&](sim::Comm& comm) {
    auto opt = slowmo::AsyncLocalSgd(slowmo::Sgd<double>({.lr = 0.1}), comm, {.H = 1},
                                     slowmo::outer::HeavyBall<double>({.lr = 1.0, .momentum = 0.0}));
    Vector<double> x = x_async;
    slowmo::start(opt, x);
    for (int t = 0; t < 30; ++t) opt.step(x, gradient_of(0, x));
    CHECK(opt.pushes() == 30);
    x_async = x;
  });
  CHECK((x_sgd - x_async).cwiseAbs().maxCoeff() < 1e-14);
}

// On threads the arrival order depends on thread timing, so results are not bit-reproducible
// (a worker may even run all its rounds before another starts); what must hold is the
// bookkeeping: every push is applied once, versions count them, staleness never exceeds the
// other workers' pushes, and everyone ends on the same final model.
TEST_CASE("async Local SGD on threads: every push applied once, the same final model for all") {
  const int m = 4, H = 4, steps = 200;
  std::vector<std::int64_t> version(m), stale(m), pushes(m);
  std::vector<Vector<double>> final(m);
  slowmo::threads::run({.workers = m}, [&](slowmo::threads::Comm& comm) {
    auto opt = slowmo::AsyncLocalSgd(slowmo::Sgd<double>({.lr = 0.05}), comm, {.H = H},
                                     slowmo::outer::DelayedNesterov<double>({.lr = 0.5, .momentum = 0.5, .N = m}));
    Vector<double> x = Vector<double>::Zero(6);
    slowmo::start(opt, x);
    for (int t = 0; t < steps; ++t) opt.step(x, gradient_of(comm.rank(), x));
    comm.barrier();  // every push is in: one more pull reads the final model
    const auto r = std::size_t(comm.rank());
    version[r] = comm.pull(std::span<double>(x.data(), std::size_t(x.size()))).version;
    final[r] = x;
    stale[r] = opt.staleness_sum();
    pushes[r] = opt.pushes();
  });
  for (int w = 0; w < m; ++w) {
    CAPTURE(w);
    CHECK(pushes[std::size_t(w)] == steps / H);
    CHECK(version[std::size_t(w)] == m * steps / H);
    CHECK(final[std::size_t(w)] == final[0]);
    CHECK(stale[std::size_t(w)] >= 0);
    CHECK(stale[std::size_t(w)] <= (m - 1) * steps / H);  // at most all the others' pushes
    CHECK(final[0].allFinite());
  }
}
