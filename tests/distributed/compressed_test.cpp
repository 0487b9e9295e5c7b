// The outer loop and gradient all-reduce with compressed reduce policies: what error feedback
// buys on the heterogeneous quadratic and on softmax regression, in loss and in bytes (the
// simulator's counters), and that a lossless setting is the uncompressed loop bit for bit.
//
// Bytes: a ring all-reduce sends 2 (m-1)/m * 4n bytes per worker (fp32); top-k sends k
// (int32 index, fp32 value) pairs by a ring all-gather, (m-1) * 8k bytes per worker, so the
// ratio is m k / n: 2% for top-1% on 2 workers (it grows with m: every worker receives every
// other worker's pairs).
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#include <slowmo/compress.hpp>
#include <slowmo/problems/logistic.hpp>
#include <slowmo/problems/quadratic.hpp>
#include <slowmo/slowmo.hpp>

#include "support/zoo.hpp"

namespace {

using slowmo::Vector;

struct Outcome {
  double excess = 0;
  std::uint64_t bytes = 0;  // per worker, outer steps only (the start broadcast is subtracted)
};

/// SlowMo over SGD (tau 4, beta 0.5) on `problem` with the given reduce policy; the excess loss
/// of worker 0's final parameters and its bytes sent after start.
template <class Problem, class Reduce>
Outcome slowmo_run(const Problem& problem, int m, int steps, double lr, Reduce reduce) {
  Outcome out;
  slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& c) {
    auto opt = slowmo::outer_loop(slowmo::Sgd<float>({.lr = lr}), c,
                                  {.tau = 4, .base_state = slowmo::OnSync::keep, .divide_by_lr = true},
                                  slowmo::outer::HeavyBall<float>({.lr = 1.0, .momentum = 0.5}), reduce);
    Vector<float> x = Vector<float>::Zero(problem.dim()), g(problem.dim());
    opt.start(x);
    const std::uint64_t after_start = c.bytes_sent();
    for (int t = 1; t <= steps; ++t) {
      problem.sample_gradient(c.rank(), t, x, g);
      opt.step(x, g);
    }
    if (c.rank() == 0) out = {problem.excess_loss(x), c.bytes_sent() - after_start};
  });
  return out;
}

/// The exact mean, but not marked exact_mean: the outer loop then all-reduces the d_i.
struct MeanOfPseudoGradients {
  template <class T, class Comm>
  void reduce(std::span<T> v, Comm& comm, const slowmo::ReduceContext&) const {
    comm.all_reduce(v, slowmo::ReduceOp::mean);
  }
  template <class V>
  void visit_state(V&&, const slowmo::StateScope* = nullptr) const {}
  template <class F>
  void visit_structure(F&&, const slowmo::StateScope* = nullptr) const {}
};

template <class T>
auto top_k(double fraction, bool error_feedback) {
  using namespace slowmo::compress;
  return Compressed<TopK<T>>(TopK<T>({.fraction = fraction}), {.error_feedback = error_feedback});
}

}  // namespace

// SlowMo (alpha 1, beta 0.5, tau 4) over SGD on 2 workers, 6000 steps, dense against EF top-1%
// against top-1% without EF, the same lr for all three. The lr is not tuned for the outcome:
// error feedback with a delta-contraction (top-k: delta = k/n = 0.01) is stable for an
// effective outer step below about delta / L (Stich & Karimireddy 2019); SlowMo's effective
// step is alpha tau gamma / (1 - beta), so on the quadratic (L = 2) gamma = 0.01/2 * 0.5/4 =
// 6.25e-4. At the lr the dense run would use (0.05) EF top-1% diverges there (measured: f - f*
// 7e8 after 1200 steps, tau 12). Softmax regression runs at the demo's lr 0.2, where it is stable.
// Measured (this test prints them): quadratic f - f* dense 0.0132, EF 6.23 (x471), without EF
// 509, from 649 at x = 0; softmax dense 0.0079, EF 0.054 (x6.8), without EF 0.108, from 2.05.
// On the heterogeneous quadratic EF top-k stalls at a floor: at the optimum the workers'
// pseudo-gradients do not vanish (only their mean does), each residual grows to about
// |d_i| / delta before it is sent, and workers send different coordinates at different rounds,
// so x0 keeps jumping by ~|d_i| / (2 delta). (EF21, Richtarik et al. 2021, compresses changes
// instead and has no such floor; it is not shipped.)
TEST_CASE("EF top-1% SlowMo: 2% of the bytes; within a factor of the dense loss on softmax, a floor on the quadratic") {
  using namespace slowmo;
  const int m = 2, steps = 6000;
  const problems::Quadratic quadratic({.workers = m, .dim = 2000, .heterogeneity = 1.0, .noise = 0.1, .seed = 3});
  const problems::LogisticRegression softmax(
      {.workers = m, .features = 69, .classes = 10, .samples_per_worker = 400, .dirichlet_alpha = 0.3,
       .separation = 0.3, .l2 = 1e-3, .batch = 32, .seed = 2020});  // n = 70 * 10 = 700: k = 7 exactly
  auto run = [&](const auto& problem, const char* name, double lr) {
    const Outcome dense = slowmo_run(problem, m, steps, lr, reduce::Mean{});
    const Outcome ef = slowmo_run(problem, m, steps, lr, top_k<float>(0.01, true));
    const Outcome lossy = slowmo_run(problem, m, steps, lr, top_k<float>(0.01, false));
    const double start = problem.excess_loss(Vector<float>(Vector<float>::Zero(problem.dim())));
    std::printf("%s (n = %lld, lr %g): f - f* from %.4g: dense %.4g, EF top-1%% %.4g (x%.3g), top-1%% without EF "
                "%.4g; EF bytes %.3f%% of dense\n",
                name, static_cast<long long>(problem.dim()), lr, start, dense.excess, ef.excess,
                ef.excess / dense.excess, lossy.excess, 100.0 * double(ef.bytes) / double(dense.bytes));
    CAPTURE(name);
    // Bytes: (m-1) * 8 k per outer step against 2 (m-1)/m * 4 n for the all-reduce: m k / n = 2%.
    CHECK(double(ef.bytes) == doctest::Approx(0.02 * double(dense.bytes)).epsilon(1e-9));
    CHECK(ef.excess < lossy.excess);  // what error feedback buys with the same bytes
    return std::tuple{start, dense, ef, lossy};
  };
  const auto [q0, q_dense, q_ef, q_lossy] = run(quadratic, "heterogeneous quadratic", 6.25e-4);
  CHECK(q_ef.excess < q0 / 100);
  CHECK(q_ef.excess < q_lossy.excess / 50);
  const auto [s0, s_dense, s_ef, s_lossy] = run(softmax, "softmax regression", 0.2);
  CHECK(s_ef.excess < s0 / 20);
  CHECK(s_ef.excess < 10 * s_dense.excess);  // measured x6.8: a regression guard, not a derivation
}

TEST_CASE_TEMPLATE("lossless settings are the uncompressed loop bit for bit", T, float, double) {
  using namespace slowmo;
  // Top-k with every coordinate kept, without EF: the gathered pairs summed in rank order and
  // divided by m, as the all-reduce's mean. Through a policy other than reduce::Mean the loop
  // reduces the pseudo-gradients d_i (not the parameters): the reference is the same loop with
  // a Mean that is not marked exact_mean, i.e. an all-reduce of the d_i.
  const auto dense = zoo::trajectories<T>(3, 24, [](auto& c) {
    return outer_loop(Sgd<T>({.lr = 0.1}), c, {.tau = 4}, outer::HeavyBall<T>({.momentum = 0.6}),
                      MeanOfPseudoGradients{});
  });
  const auto full = zoo::trajectories<T>(3, 24, [](auto& c) {
    return outer_loop(Sgd<T>({.lr = 0.1}), c, {.tau = 4}, outer::HeavyBall<T>({.momentum = 0.6}),
                      top_k<T>(1.0, false));
  });
  CHECK(dense == full);
  // Gradient all-reduce through the same policy.
  const auto ar = zoo::trajectories<T>(3, 8, [](auto& c) { return GradientAllReduce(Sgd<T>({.lr = 0.1}), c); });
  const auto ar_full = zoo::trajectories<T>(
      3, 8, [](auto& c) { return GradientAllReduce(Sgd<T>({.lr = 0.1}), c, {}, top_k<T>(1.0, false)); });
  CHECK(ar == ar_full);
}

TEST_CASE("a compressor option that does not fit the vector is refused at start, before x moves") {
  using namespace slowmo;
  sim::run({.workers = 2}, [](sim::Comm& c) {
    auto opt = outer_loop(Sgd<double>({.lr = 0.1}), c, {.tau = 2}, outer::HeavyBall<double>(),
                          compress::compressed(compress::TopK<double>({.k = 20})));
    Vector<double> x = Vector<double>::Constant(13, double(c.rank()));
    const Vector<double> before = x;
    std::string message;
    try {
      opt.start(x);
    } catch (const invalid_option& e) {
      message = e.what();
    }
    CHECK(message.find("compress::TopK: option 'k' = 20") != std::string::npos);
    CHECK(x == before);
    CHECK(opt.outer_params().size() == 0);
    CHECK(opt.reduce_policy().residual().size() == 0);
    auto ar = GradientAllReduce(Sgd<double>({.lr = 0.1}), c, {},
                                compress::compressed(compress::PowerSgd<double>({.rank = 5, .rows = 13})));
    CHECK_THROWS_WITH_AS(ar.start(x), doctest::Contains("compress::PowerSgd: option 'rank' = 5"), invalid_option);
    CHECK(x == before);
  });
}
