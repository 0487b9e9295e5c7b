// Streaming DiLoCo: with one fragment, no overlap and alpha = 0 it is DiLoCo bit for bit; with
// fragments, overlap and a merge it follows a loop written here from torchft's definition; a
// synchronisation moves a fragment's bytes; the overlap hides communication in simulated time.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include <slowmo/slowmo.hpp>

#include "support/errors.hpp"
#include "support/zoo.hpp"

namespace {

using slowmo::Vector;
using Workers = std::vector<Vector<double>>;

double max_diff(const std::vector<std::vector<Vector<double>>>& a, const std::vector<std::vector<Vector<double>>>& b) {
  double worst = 0;
  for (std::size_t r = 0; r < a.size(); ++r)
    for (std::size_t t = 0; t < a[r].size(); ++t) worst = std::max(worst, (a[r][t] - b[r][t]).cwiseAbs().maxCoeff());
  return worst;
}

}  // namespace

TEST_CASE("StreamingDiLoCo with one fragment, no overlap and alpha = 0 is DiLoCo bit for bit") {
  using namespace slowmo;
  const auto streaming = zoo::trajectories<double>(4, 30, [](auto& c) {
    return StreamingDiLoCo(AdamW<double>({.lr = 0.05}), c, {.H = 5});
  });
  const auto diloco = zoo::trajectories<double>(4, 30, [](auto& c) {
    return outer_loop(AdamW<double>({.lr = 0.05}), c, {.tau = 5},
                      outer::HeavyBall<double>({.lr = 0.7, .momentum = 0.9, .nesterov = true}));
  });
  CHECK(max_diff(streaming, diloco) == 0);
}

TEST_CASE("StreamingDiLoCo: 3 fragments, overlap 1, alpha 0.5, against a loop from torchft's definition") {
  using namespace slowmo;
  const int m = 4, steps = 30;
  const Eigen::Index n = 7;  // fragments [0, 2), [2, 4), [4, 7)
  const double lr = 0.1, outer_lr = 0.7, mu = 0.9, alpha = 0.5;
  const std::int64_t H = 6, S = 2, overlap = 1;
  const auto got = zoo::trajectories<double>(
      m, steps,
      [&](auto& c) {
        return StreamingDiLoCo(Sgd<double>({.lr = lr}), c, {.H = H, .fragments = 3, .overlap = overlap, .alpha = alpha});
      },
      n);
  // The loop: sync k is fragment k % 3's; at step (k+1) S - overlap its mean over the workers
  // is taken (prepare_sync), at (k+1) S the outer Nesterov step moves the global fragment
  // from d = x0 - mean and every worker's fragment becomes x0 + alpha (x - x0).
  std::vector<std::vector<Vector<double>>> want(static_cast<std::size_t>(m));
  Workers x(std::size_t(m), Vector<double>::LinSpaced(n, -2, 2));
  Vector<double> x0 = x[0], u = Vector<double>::Zero(n), mean;
  const Eigen::Index lo[] = {0, 2, 4}, len[] = {2, 2, 3};
  std::int64_t k = 0;
  for (std::int64_t s = 1; s <= steps; ++s) {
    for (int r = 0; r < m; ++r) {
      Vector<double> g(n);
      zoo::gradient(r, x[std::size_t(r)], g);
      x[std::size_t(r)] -= lr * g;
    }
    const int f = int(k % 3);
    if (s == (k + 1) * S - overlap) {
      mean = x[0].segment(lo[f], len[f]);
      for (int r = 1; r < m; ++r) mean += x[std::size_t(r)].segment(lo[f], len[f]);
      mean /= double(m);
    }
    if (s == (k + 1) * S) {
      const Vector<double> d = x0.segment(lo[f], len[f]) - mean;
      u.segment(lo[f], len[f]) = mu * u.segment(lo[f], len[f]) + d;
      x0.segment(lo[f], len[f]) -= outer_lr * (d + mu * u.segment(lo[f], len[f]));
      for (auto& xr : x)
        xr.segment(lo[f], len[f]) = x0.segment(lo[f], len[f]) + alpha * (xr.segment(lo[f], len[f]) - x0.segment(lo[f], len[f]));
      ++k;
    }
    for (int r = 0; r < m; ++r) want[std::size_t(r)].push_back(x[std::size_t(r)]);
  }
  CHECK(max_diff(got, want) <= 1e-12);
}

TEST_CASE("StreamingDiLoCo: an exchange moves one fragment, and the overlap hides it in simulated time") {
  using namespace slowmo;
  const int m = 4, P = 4;
  const Eigen::Index n = 4000;  // 32000 bytes of double, 8000 per fragment
  const double L = 1e-4, B = 1e7, c = 1e-3;  // 0.1 ms, 10 MB/s; 1 ms of compute per step
  const double fragment_ar = 2.0 * (m - 1) * L + 2.0 * (m - 1) / m * 8000 / B;  // 0.6 + 1.2 = 1.8 ms
  auto run = [&](int fragments, std::int64_t overlap, std::vector<std::uint64_t>& exchange) {
    const auto report = sim::run({.workers = m, .network = {.latency = L, .bandwidth = B}}, [&](sim::Comm& comm) {
      StreamingDiLoCo opt(Sgd<double>({.lr = 0.01}), comm, {.H = 8, .fragments = fragments, .overlap = overlap},
                          outer::HeavyBall<double>({.lr = 0.7, .momentum = 0.9, .nesterov = true}));
      Vector<double> x = Vector<double>::Ones(n), g(n);
      opt.start(x);
      std::uint64_t before = comm.bytes_sent();
      for (int t = 0; t < 16; ++t) {
        g = x - Vector<double>::Constant(n, double(comm.rank()));
        comm.compute(c);
        opt.step(x, g);
        if (comm.rank() == 0 && comm.bytes_sent() != before) exchange.push_back(comm.bytes_sent() - before);
        before = comm.bytes_sent();
      }
    });
    return report.makespan();
  };
  std::vector<std::uint64_t> whole, streamed, overlapped;
  const double t_whole = run(1, 0, whole), t_streamed = run(P, 0, streamed), t_overlapped = run(P, 1, overlapped);
  // DiLoCo sends the whole model every 8 steps; streaming one fragment every 2: a quarter.
  CHECK(whole == std::vector<std::uint64_t>(2, 48000));  // 2 (m-1)/m of 32000 bytes
  CHECK(streamed == std::vector<std::uint64_t>(8, 12000));
  CHECK(overlapped == std::vector<std::uint64_t>(8, 12000));
  const double whole_ar = 2.0 * (m - 1) * L + 2.0 * (m - 1) / m * 32000 / B;
  // Without overlap every exchange adds its time; with it, the 1 ms step after the start
  // covers all but fragment_ar - c of it. (Start-up broadcast: 2 rounds of a 32000-byte message.)
  const double broadcast = 2 * (L + 32000 / B);
  CHECK(t_whole == doctest::Approx(broadcast + 16 * c + 2 * whole_ar).epsilon(1e-9));
  CHECK(t_streamed == doctest::Approx(broadcast + 16 * c + 8 * fragment_ar).epsilon(1e-9));
  CHECK(t_overlapped == doctest::Approx(broadcast + 16 * c + 8 * (fragment_ar - c)).epsilon(1e-9));
}

TEST_CASE("StreamingDiLoCo: bad options name the field and the constraint") {
  using namespace slowmo;
  sim::run({.workers = 2}, [](sim::Comm& c) {
    auto error = [&](StreamingDiLoCoOptions o) {
      return check::error_of([&] { (void)StreamingDiLoCo(Sgd<double>({.lr = 0.1}), c, o); });
    };
    CHECK(check::has(error({.H = 6, .fragments = 4}), "'fragments' = 4 is invalid: must be >= 1 and divide H = 6"));
    CHECK(check::has(error({.H = 6, .fragments = 3, .overlap = 2}), "'overlap' = 2 is invalid: must be in [0, H / fragments) = [0, 2)"));
    CHECK(check::has(error({.H = 6, .alpha = 1.5}), "'alpha' = 1.5"));
    CHECK(check::has(error({.H = 0}), "'H' = 0"));
  });
}

TEST_CASE("StreamingDiLoCo: a rebase while a fragment is in flight skips that fragment's outer step") {
  using namespace slowmo;
  sim::run({.workers = 2}, [](sim::Comm& c) {
    StreamingDiLoCo opt(Sgd<double>({.lr = 0.1}), c, {.H = 4, .fragments = 2, .overlap = 1});
    Vector<double> x = Vector<double>::Ones(4), g = Vector<double>::Ones(4);
    opt.start(x);
    opt.step(x, g);  // step 1: fragment 0's all-reduce starts
    x.setConstant(3.0);
    opt.rebase(x);
    CHECK(opt.outer_params() == x);
    opt.step(x, g);  // step 2: its outer step is skipped, x0 stays 3
    CHECK(opt.syncs() == 1);
    CHECK(opt.outer_params() == Vector<double>::Constant(4, 3.0));
    CHECK(x == Vector<double>::Constant(4, 3.0 - 0.1));  // one plain SGD step from the rebased point
  });
}
