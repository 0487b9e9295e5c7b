// Asynchronous Local SGD (distributed/async_local_sgd.hpp) and Delayed Nesterov
// (outer/delayed_nesterov.hpp): the rule by hand, its identity with Nesterov, one worker being
// synchronous DiLoCo bit for bit, the arrival order of equal-speed workers against a loop
// written here, staleness and its weighting, Dynamic Local Updates' step counts, bad input, and
// drain / checkpoint / resume (bit for bit on the simulator).
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include <slowmo/slowmo.hpp>

#include "support/errors.hpp"

namespace {

using check::error_of;
using check::has;

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

// Staleness weighting on the server (a momentum-free rule of lr 1, so x -= w(s) d), exponent
// 1 and threshold 2: w(0) = 1, w(1) = 1/2, a push of staleness 3 dropped, w(2) = 1/3.
//   x = 0 - 1 = -1;  -1 - 1/2 = -1.5;  dropped;  -1.5 - 3/3 = -2.5
// A dropped push counts as a version but not as a round of the rule.
TEST_CASE("staleness weighting: (1 + s)^-exponent, and a push staler than the threshold is dropped") {
  using Rule = slowmo::outer::HeavyBall<double>;
  const std::vector<double> x0{0.0};
  slowmo::detail::RuleServer<Rule> server(Rule({.lr = 1.0, .momentum = 0.0}), x0,
                                          {.exponent = 1.0, .max_staleness = 2});
  std::vector<double> x(1), d{1.0};
  auto apply = [&](int worker, std::int64_t staleness, double value) {
    d[0] = value;
    server.apply({worker, staleness}, d);
    server.read(x);
    return x[0];
  };
  CHECK(apply(0, 0, 1.0) == -1.0);
  CHECK(apply(1, 1, 1.0) == -1.5);
  CHECK(apply(2, 3, 1.0) == -1.5);
  CHECK(apply(0, 2, 3.0) == doctest::Approx(-2.5).epsilon(1e-15));
  slowmo::detail::RuleServerState<Rule> state{Rule()};
  server.snapshot(state);
  CHECK(state.version == 4);
  CHECK(state.rounds == 3);
  CHECK(state.params[0] == x[0]);
  CHECK(server.initial_version() == 0);
  // Restored from that state, a server starts at its version.
  slowmo::detail::RuleServer<Rule> restored(state, {});
  CHECK(restored.initial_version() == 4);
}

namespace {

namespace fs = std::filesystem;

/// What a heterogeneous asynchronous run ends with, per worker.
struct Outcome {
  std::vector<Vector<float>> x;
  std::vector<std::int64_t> version, pushes, steps;
  std::vector<double> clock;
  bool operator==(const Outcome&) const = default;
};

/// 4 workers of speeds 1 : 1/1.3 : 1/2.6 : 1/5.7 with jitter, a costly network, a late worker
/// and a busy server; AdamW inside, Delayed Nesterov outside, DyLU measured over two rounds,
/// staleness weighting. Every worker runs `total` steps; at step `stop` (if 0 < stop < total)
/// every worker drains, and with `interrupt` saves its checkpoint, the run ends, and a new one
/// resumes from the checkpoints.
Outcome heterogeneous_run(int total, int stop, bool interrupt) {
  const sim::Options options{.workers = 4,
                             .network = {.latency = 1e-3, .bandwidth = 1e8},
                             .slowdown = {1.0, 1.3, 2.6, 5.7},
                             .jitter = 0.3,
                             .seed = 5,
                             .message_delay = {0.0, 0.0, 0.02, 0.0},
                             .server_seconds_per_update = 1e-3};
  auto make = [](sim::Comm& c) {
    return slowmo::AsyncLocalSgd(slowmo::AdamW<float>({.lr = 1e-2}), c,
                                 {.H = 6,
                                  .dylu = {.enabled = true, .measure_rounds = 2},
                                  .staleness = {.exponent = 0.5, .max_staleness = 8}},
                                 slowmo::outer::DelayedNesterov<float>({.lr = 0.7, .momentum = 0.9, .N = 4, .c = 0.3}));
  };
  const fs::path dir = fs::temp_directory_path() / ("slowmo_async_resume_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  Outcome out{std::vector<Vector<float>>(4, Vector<float>::LinSpaced(11, -1, 2)), std::vector<std::int64_t>(4),
              std::vector<std::int64_t>(4), std::vector<std::int64_t>(4), std::vector<double>(4)};
  auto phase = [&](int from, int to, bool load) {
    sim::run(options, [&](sim::Comm& c) {
      const auto r = std::size_t(c.rank());
      auto opt = make(c);
      Vector<float>& x = out.x[r];
      if (load) slowmo::load_checkpoint(opt, dir / std::to_string(r));
      else slowmo::start(opt, x);
      for (int t = from; t < to; ++t) {
        c.compute(0.01);
        opt.step(x, gradient_of(c.rank(), x));
        if (t + 1 == stop) {
          opt.drain(x);
          if (interrupt) {
            slowmo::save_checkpoint(opt, dir / std::to_string(r));
            break;
          }
        }
      }
      out.version[r] = opt.last_pull().version;
      out.pushes[r] = opt.pushes();
      out.steps[r] = opt.steps();
      out.clock[r] = c.now();
    });
  };
  phase(0, total, false);
  if (interrupt && stop > 0 && stop < total) phase(stop, total, true);
  fs::remove_all(dir);
  return out;
}

}  // namespace

TEST_CASE("drain, checkpoint, resume: a heterogeneous asynchronous run continues bit for bit on the simulator") {
  const int total = 60;
  for (int stop : {3, 10, 12, 29, 47}) {  // in DyLU's measurement (rounds of 6, two of them), at its end, after
    CAPTURE(stop);
    const Outcome through = heterogeneous_run(total, stop, false), resumed = heterogeneous_run(total, stop, true);
    CHECK(resumed == through);
    for (std::size_t w = 0; w < 4; ++w) CHECK(through.steps[w] == total);
    // The workers are not in step: the fast ones pushed more often.
    CHECK(through.pushes[3] > through.pushes[0]);
  }
  // A drain changes the run (it is a synchronisation), but only by that.
  CHECK(heterogeneous_run(total, 0, false).x != heterogeneous_run(total, 29, false).x);
}

TEST_CASE("drain: every worker holds one version of the model; a checkpoint without it is refused") {
  const fs::path file = fs::temp_directory_path() / ("slowmo_async_nodrain_" + std::to_string(::getpid()));
  sim::run({.workers = 3, .slowdown = {1, 2, 3}}, [&](sim::Comm& comm) {
    auto opt = slowmo::AsyncLocalSgd(slowmo::Sgd<double>({.lr = 0.1}), comm, {.H = 4},
                                     slowmo::outer::DelayedNesterov<double>({.N = 3}));
    Vector<double> x = Vector<double>::Zero(5);
    slowmo::start(opt, x);
    for (int t = 0; t < 10; ++t) {
      comm.compute(1.0);
      opt.step(x, gradient_of(comm.rank(), x));
    }
    const std::string e = error_of([&] { slowmo::save_checkpoint(opt, file); });
    CHECK(has(e, "without drain"));
    CHECK(has(e, "worker " + std::to_string(comm.rank())));
    CHECK(!fs::exists(file));
    opt.drain(x);
    // 10 steps in rounds of 4: two full rounds and a partial one, each pushed: 9 updates.
    CHECK(opt.last_pull().version == 9);
    std::vector<double> sum(x.data(), x.data() + x.size());
    comm.all_reduce(std::span<double>(sum), slowmo::ReduceOp::mean);
    CHECK(Vector<double>(Eigen::Map<Vector<double>>(sum.data(), 5)) == x);
    CHECK_NOTHROW(slowmo::checkpoint_bytes(opt));
    opt.step(x, gradient_of(comm.rank(), x));
    CHECK_THROWS_AS(slowmo::checkpoint_bytes(opt), slowmo::usage_error);
  });
}

// On threads the arrival order is the threads', so only the bookkeeping is exact: the resumed
// server continues from the version it had at the drain, and every push after it is counted.
TEST_CASE("drain and resume on threads: the server continues from its version") {
  const int m = 3, H = 4, stop = 12, total = 28;
  const fs::path dir = fs::temp_directory_path() / ("slowmo_async_threads_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<Vector<double>> xs(m, Vector<double>::Zero(6));
  std::vector<std::int64_t> at_drain(m), at_resume(m), at_end(m);
  auto make = [](slowmo::threads::Comm& c) {
    return slowmo::AsyncLocalSgd(slowmo::Adam<double>({.lr = 0.05}), c, {.H = H},
                                 slowmo::outer::DelayedNesterov<double>({.lr = 0.5, .momentum = 0.5, .N = m}));
  };
  slowmo::threads::run({.workers = m}, [&](slowmo::threads::Comm& c) {
    const auto r = std::size_t(c.rank());
    auto opt = make(c);
    slowmo::start(opt, xs[r]);
    for (int t = 0; t < stop; ++t) opt.step(xs[r], gradient_of(c.rank(), xs[r]));
    opt.drain(xs[r]);
    at_drain[r] = opt.last_pull().version;
    slowmo::save_checkpoint(opt, dir / std::to_string(r));
  });
  slowmo::threads::run({.workers = m}, [&](slowmo::threads::Comm& c) {
    const auto r = std::size_t(c.rank());
    auto opt = make(c);
    slowmo::load_checkpoint(opt, dir / std::to_string(r));
    opt.step(xs[r], gradient_of(c.rank(), xs[r]));
    at_resume[r] = opt.last_pull().version;  // the resume's pull (the round is not over yet)
    for (int t = stop + 1; t < total; ++t) opt.step(xs[r], gradient_of(c.rank(), xs[r]));
    c.barrier();
    at_end[r] = c.pull(std::span<double>(xs[r].data(), 6)).version;
  });
  fs::remove_all(dir);
  for (int w = 0; w < m; ++w) {
    CAPTURE(w);
    CHECK(at_drain[std::size_t(w)] == m * stop / H);
    CHECK(at_resume[std::size_t(w)] >= m * stop / H);
    CHECK(at_end[std::size_t(w)] == m * total / H);
    CHECK(xs[std::size_t(w)] == xs[0]);
  }
}
