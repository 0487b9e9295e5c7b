// Hand-computed trajectories: two workers, one dimension, f_0(x) = (x - 2)^2 / 2 and
// f_1(x) = x^2 / 2, plain SGD with lr 1/2 from x = 0. Every number below is dyadic, so
// float and double reproduce it exactly.
//
// One local step from s: worker 0 goes to s - (s - 2)/2 = 1 + s/2, worker 1 to s/2.
// Two local steps from s: worker 0 at 1.5 + s/4, worker 1 at s/4, average 0.75 + s/4.
#include <doctest/doctest.h>

#include <slowmo/slowmo.hpp>

namespace {

/// x of worker `watch` after each step; worker 0 starts at 0, the others at `elsewhere`.
template <class T, class Make>
std::vector<T> run(Make make, int steps, int watch = 0, int m = 2, T elsewhere = T(0)) {
  std::vector<T> xs;
  slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& c) {
    auto opt = make(c);
    slowmo::Vector<T> x = slowmo::Vector<T>::Constant(1, c.rank() == 0 ? T(0) : elsewhere), g(1);
    slowmo::start(opt, x);  // worker 0's point for everyone (unless broadcast_initial = false)
    for (int t = 0; t < steps; ++t) {
      g[0] = c.rank() == 0 ? x[0] - T(2) : x[0];
      opt.step(x, g);
      if (c.rank() == watch) xs.push_back(x[0]);
    }
  });
  return xs;
}

template <class T>
std::vector<T> every(const std::vector<T>& xs, int k) {
  std::vector<T> out;
  for (std::size_t i = std::size_t(k) - 1; i < xs.size(); i += std::size_t(k)) out.push_back(xs[i]);
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("hand trajectories", T, float, double) {
  using namespace slowmo;
  const SgdOptions sgd{.lr = 0.5};
  using V = std::vector<T>;

  // Local SGD, H = 2: s -> 0.75 + s/4: 0 -> 0.75 -> 0.9375 -> 0.984375.
  CHECK(every(run<T>([&](auto& c) { return LocalSgd(Sgd<T>(sgd), c, {.H = 2}); }, 6), 2) ==
        V{0.75, 0.9375, 0.984375});
  for (int r : {0, 1})  // both workers hold the average
    CHECK(every(run<T>([&](auto& c) { return LocalSgd(Sgd<T>(sgd), c, {.H = 2}); }, 6, r), 2) ==
          V{0.75, 0.9375, 0.984375});

  // Gradient all-reduce: the mean gradient is x - 1: x -> x - (x - 1)/2: 0.5, 0.75, 0.875, 0.9375.
  CHECK(run<T>([&](auto& c) { return GradientAllReduce(Sgd<T>(sgd), c); }, 4) == V{0.5, 0.75, 0.875, 0.9375});

  // Post-local SGD, W = 2 all-reduce steps (0.5, 0.75), then Local SGD with H = 2 from 0.75:
  // 0.75 + 0.75/4 = 0.9375, then 0.984375.
  CHECK(run<T>([&](auto& c) { return LocalSgd(Sgd<T>(sgd), c, {.H = 2, .warmup_steps = 2}); }, 6) ==
        V{0.5, 0.75, 1.375, 0.9375, 1.46875, 0.984375});

  // SlowMo, tau = 2, alpha = 1, beta = 1/2 (gamma = 1/2):
  //  round 1: x_bar = 0.75, d = (0 - 0.75)/0.5 = -1.5, u = -1.5, x0 = 0 + 0.5 * 1.5 = 0.75
  //  round 2: x_bar = 0.9375, d = -0.375, u = -0.75 - 0.375 = -1.125, x0 = 0.75 + 0.5625 = 1.3125
  //  round 3: x_bar = 0.75 + 1.3125/4 = 1.078125, d = 0.46875, u = -0.5625 + 0.46875 = -0.09375,
  //           x0 = 1.3125 + 0.046875 = 1.359375
  auto slowmo_run = [&](int watch) {
    return every(run<T>([&](auto& c) { return SlowMo(Sgd<T>(sgd), c, {.tau = 2, .alpha = 1.0, .beta = 0.5}); }, 6,
                        watch),
                 2);
  };
  CHECK(slowmo_run(0) == V{0.75, 1.3125, 1.359375});
  CHECK(slowmo_run(1) == V{0.75, 1.3125, 1.359375});

  // BMUF, classic block momentum eta = 1/2, zeta = 1 (raw pseudo-gradient): here the same
  // numbers as SlowMo above, since SlowMo's 1/gamma and gamma cancel.
  CHECK(every(run<T>([&](auto& c) { return bmuf(Sgd<T>(sgd), c, {.tau = 2, .block_momentum = 0.5}); }, 6), 2) ==
        V{0.75, 1.3125, 1.359375});

  // BMUF with Nesterov block momentum, eta = 1/2, zeta = 1, in the paper's variables:
  //  block 1 from W_g = 0: x_bar = 0.75, Delta = 0.75, W = 0.75, W_g = W + Delta/2 = 1.125
  //  block 2 from 1.125: x_bar = 0.75 + 1.125/4 = 1.03125, Delta = 0.375 - 0.09375 = 0.28125,
  //          W = 1.03125, W_g = 1.03125 + 0.140625 = 1.171875
  CHECK(every(run<T>([&](auto& c) {
                return bmuf(Sgd<T>(sgd), c, {.tau = 2, .block_momentum = 0.5, .nesterov = true});
              }, 4), 2) == V{1.125, 1.171875});

  // DiLoCo's outer rule (Nesterov, raw pseudo-gradient) with lr 3/4, momentum 1/2, SGD inside:
  //  round 1: d = 0 - 0.75, u = -0.75, x0 = 0 - 0.75 (d + u/2) = 0.84375
  //  round 2: x_bar = 0.75 + 0.84375/4 = 0.9609375, d = -0.1171875, u = -0.375 - 0.1171875 = -0.4921875,
  //           x0 = 0.84375 - 0.75 (-0.1171875 - 0.24609375) = 1.1162109375
  CHECK(every(run<T>([&](auto& c) {
                return SlowMo(Sgd<T>(sgd), c,
                              {.tau = 2, .alpha = 0.75, .beta = 0.5, .base_state = OnSync::keep, .nesterov = true,
                               .divide_by_lr = false});
              }, 4), 2) == V{0.84375, 1.1162109375});

  // SGP with two workers: push-sum with one peer is an exact average every step, so it
  // follows gradient all-reduce here: 0.5, 0.75, 0.875, 0.9375 on both workers.
  CHECK(run<T>([&](auto& c) { return Sgp(Sgd<T>(sgd), c); }, 4, 0) == V{0.5, 0.75, 0.875, 0.9375});
  CHECK(run<T>([&](auto& c) { return Sgp(Sgd<T>(sgd), c); }, 4, 1) == V{0.5, 0.75, 0.875, 0.9375});

  // SlowMo over Local SGD (H = 1 inside, tau = 2 outside, beta = 0, alpha = 1/2):
  //  inner averages every step: 0.5, then 0.75 (= x_bar); outer: x0 = 0 - 0.5 (0 - 0.75) = 0.375
  //  then from 0.375: 0.6875, 0.84375 = x_bar; x0 = 0.375 + 0.5 (0.84375 - 0.375) = 0.609375
  CHECK(run<T>([&](auto& c) {
          return SlowMo(LocalSgd(Sgd<T>(sgd), c, {.H = 1}), c,
                        {.tau = 2, .alpha = 0.5, .beta = 0.0, .divide_by_lr = false});
        }, 4) == V{0.5, 0.375, 0.6875, 0.609375});
}

TEST_CASE_TEMPLATE("worker 1 starting elsewhere: start(x) puts it at worker 0's point before the first gradient", T,
                   float, double) {
  using namespace slowmo;
  const SgdOptions sgd{.lr = 0.5};
  using V = std::vector<T>;
  const T far = T(8);  // worker 1's own starting point; worker 0 starts at 0
  // start broadcasts worker 0's 0 to worker 1, whose first gradient is then taken at 0:
  // exactly the trajectories from 0 above, on both workers. (Before, worker 1 took its first
  // gradient g = 8 at its own point and applied it at the broadcast 0: 0 - 8/2 = -4, and
  // Local SGD's first average was (1.5 + (-4 - (-4)/2)) / 2 = (1.5 - 2) / 2 = -0.25.)
  for (int r : {0, 1}) {
    CAPTURE(r);
    CHECK(every(run<T>([&](auto& c) { return LocalSgd(Sgd<T>(sgd), c, {.H = 2}); }, 6, r, 2, far), 2) ==
          V{0.75, 0.9375, 0.984375});
    CHECK(run<T>([&](auto& c) { return GradientAllReduce(Sgd<T>(sgd), c); }, 4, r, 2, far) ==
          V{0.5, 0.75, 0.875, 0.9375});
    CHECK(every(run<T>([&](auto& c) { return SlowMo(Sgd<T>(sgd), c, {.tau = 2, .alpha = 1.0, .beta = 0.5}); }, 6,
                       r, 2, far),
                2) == V{0.75, 1.3125, 1.359375});
    CHECK(run<T>([&](auto& c) { return Sgp(Sgd<T>(sgd), c); }, 4, r, 2, far) == V{0.5, 0.75, 0.875, 0.9375});
  }
  // broadcast_initial = false: each worker starts where it is. Two local steps from s0, s1:
  // worker 0 at 1.5 + s0/4, worker 1 at s1/4, average 0.75 + (s0 + s1)/8 = 0.75 + 1 = 1.75;
  // then s -> 0.75 + s/4: 1.75 -> 0.75 + 0.4375 = 1.1875 -> 0.75 + 0.296875 = 1.046875.
  for (int r : {0, 1})
    CHECK(every(run<T>([&](auto& c) { return LocalSgd(Sgd<T>(sgd), c, {.H = 2, .broadcast_initial = false}); }, 6,
                       r, 2, far),
                2) == V{1.75, 1.1875, 1.046875});
}
