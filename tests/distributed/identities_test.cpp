// Identities between algorithms (SlowMo paper and its special cases), on the simulator,
// in float and double.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include <slowmo/slowmo.hpp>

#include "support/zoo.hpp"

namespace {

using slowmo::Vector;

template <class T>
double eps() {
  return std::numeric_limits<T>::epsilon();
}

using zoo::trajectories;

template <class T>
double max_abs_diff(const Vector<T>& a, const Vector<T>& b) {
  return double((a - b).cwiseAbs().maxCoeff());
}

}  // namespace

TEST_CASE_TEMPLATE("1. beta = 0, alpha = 1: SlowMo equals Local SGD step for step", T, float, double) {
  using namespace slowmo;
  for (auto policy : {OnSync::keep, OnSync::reset}) {
    const auto a = trajectories<T>(3, 60, [&](auto& c) {
      return SlowMo(Nesterov<T>({.lr = 0.1}), c, {.tau = 5, .alpha = 1.0, .beta = 0.0, .base_state = policy});
    });
    const auto b = trajectories<T>(3, 60, [&](auto& c) {
      return LocalSgd(Nesterov<T>({.lr = 0.1}), c, {.H = 5, .base_state = policy});
    });
    // SlowMo computes x0 - gamma ((x0 - x_bar) / gamma), Local SGD x_bar: a few roundings
    // of |x| (<= 2) per outer step, carried along by the contracting local steps.
    for (std::size_t r = 0; r < 3; ++r)
      for (int t = 0; t < 60; ++t)
        CHECK(max_abs_diff(a[r][std::size_t(t)], b[r][std::size_t(t)]) <= 16 * eps<T>() * (t / 5 + 1));
  }
}

TEST_CASE_TEMPLATE("2. tau = 1, momentum-free SGD base: SGD with momentum beta, lr alpha gamma, on the mean gradient", T,
                   float, double) {
  using namespace slowmo;
  const int m = 4;
  const double gamma = 0.05, alpha = 0.8, beta = 0.7;
  const auto a = trajectories<T>(m, 40, [&](auto& c) {
    return SlowMo(Sgd<T>({.lr = gamma}), c, {.tau = 1, .alpha = alpha, .beta = beta});
  });
  // The reference: one heavy-ball SGD on the exact mean of the workers' gradients.
  Sgd<T> reference({.lr = alpha * gamma, .momentum = beta});
  Vector<T> x = Vector<T>::LinSpaced(9, T(-2), T(2)), g(9), gi(9);
  for (int t = 0; t < 40; ++t) {
    Eigen::VectorXd mean = Eigen::VectorXd::Zero(9);
    for (int r = 0; r < m; ++r) {
      zoo::gradient(r, x, gi);
      mean += gi.template cast<double>() / m;
    }
    g = mean.cast<T>();
    reference.step(x, g);
    // x_bar = x0 - gamma mean(g) and (x0 - x_bar) / gamma lose a few ulps of x per step.
    for (int r = 0; r < m; ++r) CHECK(max_abs_diff(a[std::size_t(r)][std::size_t(t)], x) <= 64 * eps<T>() * (t + 1));
  }
}

TEST_CASE_TEMPLATE("3. one worker, beta = 0, tau = k: SlowMo is Lookahead(k, alpha)", T, float, double) {
  using namespace slowmo;
  for (double alpha : {0.3, 0.5, 0.8}) {
    CAPTURE(alpha);
    Lookahead la(Adam<T>({.lr = 0.05}), {.k = 4, .alpha = alpha});
    auto as_slowmo = lookahead_as_slowmo(Adam<T>({.lr = 0.05}), 4, alpha);
    SingleWorker solo;
    SlowMo divided(Adam<T>({.lr = 0.05}), solo, {.tau = 4, .alpha = alpha, .beta = 0.0, .base_state = OnSync::keep});
    Vector<T> x = Vector<T>::LinSpaced(9, T(-2), T(2)), y = x, z = x, g(9);
    slowmo::start(la, x);
    slowmo::start(as_slowmo, y);
    slowmo::start(divided, z);
    for (int t = 0; t < 40; ++t) {
      zoo::gradient(0, x, g);
      la.step(x, g);
      zoo::gradient(0, y, g);
      as_slowmo.step(y, g);
      zoo::gradient(0, z, g);
      divided.step(z, g);
      if (alpha < 0.5)
        CHECK(x == y);  // x0 - a (x0 - x) is Lookahead's x0 + a (x - x0), bit for bit
      else
        CHECK(max_abs_diff(x, y) <= 8 * eps<T>() * (t + 1));
      CHECK(max_abs_diff(x, z) <= 16 * eps<T>() * (t + 1));  // and through / gamma * gamma
    }
  }
}

TEST_CASE_TEMPLATE("4. the outer step is SGD(lr = alpha gamma, momentum = beta) at x0 with gradient (x0 - x_bar)/gamma",
                   T, float, double) {
  using namespace slowmo;
  const int m = 2, tau = 3;
  const double gamma = 0.1, alpha = 0.9, beta = 0.6;
  for (bool nesterov : {false, true}) {
    CAPTURE(nesterov);
    const auto a = trajectories<T>(m, 4 * tau, [&](auto& c) {
      return SlowMo(Sgd<T>({.lr = gamma}), c, {.tau = tau, .alpha = alpha, .beta = beta, .nesterov = nesterov});
    });
    // Reference: two plain SGD workers for the local steps, x_bar = (x_0 + x_1) / 2, then the
    // library's own Sgd as the outer optimizer on x0.
    Sgd<T> outer({.lr = alpha * gamma, .momentum = beta, .nesterov = nesterov});
    Sgd<T> local0({.lr = gamma}), local1({.lr = gamma});
    Vector<T> x0 = Vector<T>::LinSpaced(9, T(-2), T(2)), g(9);
    for (int round = 0; round < 4; ++round) {
      Vector<T> w0 = x0, w1 = x0;
      for (int s = 0; s < tau; ++s) {
        zoo::gradient(0, w0, g);
        local0.step(w0, g);
        zoo::gradient(1, w1, g);
        local1.step(w1, g);
      }
      const Vector<T> x_bar = (w0 + w1) / T(2);
      const Vector<T> pseudo = (x0 - x_bar) / T(gamma);
      outer.step(x0, pseudo);
      for (int r = 0; r < m; ++r) CHECK(a[std::size_t(r)][std::size_t((round + 1) * tau - 1)] == x0);  // bit for bit
    }
  }
}

TEST_CASE_TEMPLATE("5. the first outer step with alpha = 1 returns x_bar, for any beta", T, float, double) {
  using namespace slowmo;
  for (double beta : {0.0, 0.5, 0.9}) {
    CAPTURE(beta);
    const auto a = trajectories<T>(3, 4, [&](auto& c) {
      return SlowMo(Sgd<T>({.lr = 0.1, .momentum = 0.5}), c, {.tau = 4, .alpha = 1.0, .beta = beta});
    });
    const auto local = trajectories<T>(3, 4, [&](auto& c) {
      return LocalSgd(Sgd<T>({.lr = 0.1, .momentum = 0.5}), c, {.H = 4});
    });
    for (std::size_t r = 0; r < 3; ++r) CHECK(max_abs_diff(a[r][3], local[r][3]) <= 8 * eps<T>());
  }
}

TEST_CASE_TEMPLATE("7. BMUF with Nesterov block momentum is the DiLoCo outer rule; both match their papers", T, float,
                   double) {
  using namespace slowmo;
  const int m = 2, tau = 4;
  const double eta = 0.9, zeta = 0.7;
  const auto nbm = trajectories<T>(m, 5 * tau, [&](auto& c) {
    return bmuf(Sgd<T>({.lr = 0.1}), c, {.tau = tau, .block_momentum = eta, .block_lr = zeta, .nesterov = true});
  });
  // DiLoCo's outer rule: torch.optim.SGD(lr, momentum, nesterov=True) on x0 with the raw
  // pseudo-gradient, here with the library's Sgd as the outer optimizer.
  // BMUF (Chen & Huo 2016): Delta = eta Delta + zeta (x_bar - W_g); W += Delta; the next
  // block starts from W_g = W + eta Delta.
  Sgd<T> outer({.lr = zeta, .momentum = eta, .nesterov = true});
  Sgd<T> l0({.lr = 0.1}), l1({.lr = 0.1});
  Vector<T> p = Vector<T>::LinSpaced(9, T(-2), T(2)), g(9);
  Eigen::VectorXd W = p.template cast<double>(), Wg = W, Delta = Eigen::VectorXd::Zero(9);
  for (int round = 0; round < 5; ++round) {
    Vector<T> w0 = p, w1 = p;
    for (int s = 0; s < tau; ++s) {
      zoo::gradient(0, w0, g);
      l0.step(w0, g);
      zoo::gradient(1, w1, g);
      l1.step(w1, g);
    }
    const Vector<T> x_bar = (w0 + w1) / T(2);
    const Vector<T> pseudo = p - x_bar;
    outer.step(p, pseudo);
    Delta = eta * Delta + zeta * (x_bar.template cast<double>() - Wg);
    W += Delta;
    Wg = W + eta * Delta;
    const Vector<T>& ours = nbm[0][std::size_t((round + 1) * tau - 1)];
    CHECK(ours == p);  // the DiLoCo rule, bit for bit
    // The BMUF formulation in double, fed the same x_bar: equal up to the rounding of T.
    CHECK((ours.template cast<double>() - Wg).cwiseAbs().maxCoeff() <= 64 * eps<T>() * (round + 1));
  }
}

TEST_CASE_TEMPLATE("the DiLoCo preset: published defaults, and its inner lr follows a schedule", T, float, double) {
  using namespace slowmo;
  SingleWorker solo;
  const auto d = diloco<T>(solo);
  CHECK(d.options().tau == 500);
  CHECK(d.options().alpha == 0.7);
  CHECK(d.options().beta == 0.9);
  CHECK(d.options().nesterov);
  CHECK_FALSE(d.options().divide_by_lr);
  CHECK(d.options().base_state == OnSync::keep);
  CHECK(d.base().options().lr == 4e-4);
  CHECK(d.base().options().betas == std::array<double, 2>{0.9, 0.95});
  CHECK(d.base().options().weight_decay == 0.1);
  // StepDecay(2, 0.5) halves the inner lr every 2 steps: steps 0..4 use 0.1, 0.1, 0.05, 0.05, 0.025.
  auto scheduled = diloco<T>(solo, {.H = 3, .inner_lr = 0.1}, schedule::StepDecay{.step_size = 2, .gamma = 0.5});
  Vector<T> x = Vector<T>::Ones(4), g = Vector<T>::Ones(4);
  slowmo::start(scheduled, x);
  for (double lr : {0.1, 0.1, 0.05, 0.05, 0.025}) {
    scheduled.step(x, g);
    CHECK(scheduled.last_lr() == doctest::Approx(lr));
  }
}

TEST_CASE_TEMPLATE("8. base state policy: reset zeroes the base buffers, average equalises them", T, float, double) {
  using namespace slowmo;
  const int m = 3, tau = 4;
  for (auto policy : {OnSync::reset, OnSync::average, OnSync::keep}) {
    CAPTURE(to_string(policy));
    std::vector<std::vector<Vector<T>>> buffers(m);
    slowmo::sim::run({.workers = m}, [&](sim::Comm& c) {
      SlowMo opt(Sgd<T>({.lr = 0.1, .momentum = 0.9}), c, {.tau = tau, .beta = 0.5, .base_state = policy});
      Vector<T> x = Vector<T>::Ones(5), g(5);
      opt.start(x);
      for (int t = 1; t <= 3 * tau; ++t) {
        zoo::gradient(c.rank(), x, g);
        opt.step(x, g);
        if (t % tau == 0) buffers[std::size_t(c.rank())].push_back(opt.base().momentum_buffer());
      }
    });
    for (int k = 0; k < 3; ++k) {
      const auto& b0 = buffers[0][std::size_t(k)];
      if (policy == OnSync::reset)
        for (int r = 0; r < m; ++r) CHECK(buffers[std::size_t(r)][std::size_t(k)].isZero(0));
      if (policy == OnSync::average)
        for (int r = 1; r < m; ++r) CHECK(buffers[std::size_t(r)][std::size_t(k)] == b0);
      if (policy == OnSync::keep) CHECK(buffers[1][std::size_t(k)] != b0);  // heterogeneous: they differ
      if (policy != OnSync::reset) CHECK(!b0.isZero(0));
    }
  }
}

// Nesting never repeats communication (issue 12, item 3), counted with the simulator's byte
// counters. The cost model (comm/detail/engine.hpp), for m = 4 workers and a payload of
// d = 1000 doubles = 8000 bytes:
//  - an all-reduce is a ring all-reduce: every worker sends 2(m-1)/m * 8000 = 2 * 3/4 * 8000
//    = 12,000 bytes;
//  - a broadcast is a binomial tree from the root: relative rank v sends the full payload to
//    v + 2^k for every k with 2^k > v and v + 2^k < m, i.e. worker 0 sends to 1 and 2 and
//    worker 1 to 3: worker 0 sends 16,000 bytes, worker 1 8,000, workers 2 and 3 nothing;
//    in all (m-1) * 8000 = 24,000 bytes, every non-root worker receiving the payload once.
TEST_CASE("nesting sends nothing twice: SlowMo over LocalSgd and over GradientAllReduce, by the byte counters") {
  using namespace slowmo;
  const int m = 4;
  const Eigen::Index d = 1000;
  const std::uint64_t all_reduce = 12000;                          // per worker, see above
  const std::vector<std::uint64_t> broadcast{16000, 8000, 0, 0};  // per worker, see above

  // Runs `make(c)`'s optimizer: start, then `steps` steps; the bytes each worker had sent
  // after start, and the run's report.
  auto count = [&](auto make, int steps) {
    std::vector<std::uint64_t> after_start(m);
    const auto report = sim::run({.workers = m}, [&](sim::Comm& c) {
      auto opt = make(c);
      Vector<double> x = zoo::initial_point<double>(c.rank(), d), g(d);
      opt.start(x);
      after_start[std::size_t(c.rank())] = c.bytes_sent();
      for (int t = 0; t < steps; ++t) {
        zoo::gradient(c.rank(), x, g);
        opt.step(x, g);
      }
    });
    return std::pair{after_start, report};
  };

  // SlowMo{tau = 6} over LocalSgd{H = 3}, 6 steps, no initial broadcast: LocalSgd averages
  // after steps 3 and 6; SlowMo's outer step after step 6 finds the parameters just averaged
  // and sends nothing (its base_state = reset needs no traffic either): 2 all-reduces,
  // 2 * 12,000 = 24,000 bytes per worker (36,000 when SlowMo averaged the same x again).
  for (bool broadcast_initial : {false, true}) {
    CAPTURE(broadcast_initial);
    const auto [after_start, report] = count(
        [&](auto& c) {
          return SlowMo(LocalSgd(Sgd<double>({.lr = 0.1}), c, {.H = 3, .broadcast_initial = broadcast_initial}), c,
                        {.tau = 6, .broadcast_initial = broadcast_initial});
        },
        6);
    for (int r = 0; r < m; ++r) {
      CAPTURE(r);
      // With broadcast_initial on both layers, start sends one broadcast (SlowMo's; it
      // anchors LocalSgd by a rebase, which sends nothing), not one per layer.
      const std::uint64_t b = broadcast_initial ? broadcast[std::size_t(r)] : 0;
      CHECK(after_start[std::size_t(r)] == b);
      CHECK(report.workers[std::size_t(r)].bytes_sent == b + 2 * all_reduce);
    }
    CHECK(report.total_bytes_sent() == (broadcast_initial ? 24000u : 0u) + 4u * 24000u);
  }

  // SlowMo{tau = 2} over GradientAllReduce, both broadcast_initial = true, 4 steps: start
  // broadcasts once (16,000 + 8,000 bytes, not twice that); each step all-reduces the
  // gradient (12,000 bytes per worker); the outer steps after steps 2 and 4 find the
  // parameters identical (every worker applied the same mean gradient) and send nothing:
  // 4 * 12,000 = 48,000 bytes per worker after start.
  const auto [after_start, report] = count(
      [&](auto& c) {
        return SlowMo(GradientAllReduce(Sgd<double>({.lr = 0.1}), c, {.broadcast_initial = true}), c,
                      {.tau = 2, .broadcast_initial = true});
      },
      4);
  for (int r = 0; r < m; ++r) {
    CAPTURE(r);
    CHECK(after_start[std::size_t(r)] == broadcast[std::size_t(r)]);
    CHECK(report.workers[std::size_t(r)].bytes_sent == broadcast[std::size_t(r)] + 4 * all_reduce);
  }
  CHECK(report.total_bytes_sent() == 24000u + 4u * 48000u);
}
