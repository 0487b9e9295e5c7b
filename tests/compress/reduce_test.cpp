// The compressors and Compressed<C> communicating, on the simulator: identical bits on every
// worker and equal to the mean of the workers' local C(p_j); equality with reduce::Mean where
// nothing is dropped; the bytes sent; error feedback on a noisy quadratic; state, checkpoints
// and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <slowmo/compress.hpp>
#include <slowmo/slowmo.hpp>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using slowmo::Vector;
namespace cz = slowmo::compress;

template <class T>
std::span<const T> cs(const Vector<T>& v) {
  return {v.data(), std::size_t(v.size())};
}
template <class T>
std::span<T> ms(Vector<T>& v) {
  return {v.data(), std::size_t(v.size())};
}

template <class T>
Vector<T> gaussian(Eigen::Index n, std::uint64_t seed) {
  std::uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  auto next = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return double((s >> 11) + 1) * 0x1.0p-53;
  };
  Vector<T> v(n);
  for (Eigen::Index i = 0; i < n; ++i)
    v[i] = T(std::sqrt(-2 * std::log(next())) * std::cos(6.283185307179586 * next()));
  return v;
}

/// Worker r's vector of round t.
template <class T>
Vector<T> input(int r, int t, Eigen::Index n) {
  return gaussian<T>(n, std::uint64_t(1000 * t + r + 1));
}

/// Runs `rounds` reductions of make()'s compressor on m simulated workers: returns, per
/// worker, the reduced vectors and the residuals of every round.
template <class Make>
auto run_compressor(int m, int rounds, Eigen::Index n, Make make) {
  using C = decltype(make());
  using T = typename C::scalar_type;
  struct Out {
    std::vector<std::vector<Vector<T>>> reduced, residual;
  } out;
  out.reduced.resize(std::size_t(m));
  out.residual.resize(std::size_t(m));
  slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& comm) {
    C c = make();
    for (int t = 0; t < rounds; ++t) {
      Vector<T> p = input<T>(comm.rank(), t, n), e(n);
      c.reduce(ms(p), ms(e), comm, cz::Round{.seed = 42, .round = t, .rank = comm.rank(), .workers = m});
      out.reduced[std::size_t(comm.rank())].push_back(p);
      out.residual[std::size_t(comm.rank())].push_back(e);
    }
  });
  return out;
}

/// mean_j C(p_j) from every worker's local compress, in the engine's order (0 + C(p_0) + ... ) / m.
template <class Make>
auto local_mean(int m, int t, Eigen::Index n, Make make) {
  using C = decltype(make());
  using T = typename C::scalar_type;
  Vector<T> sum = Vector<T>::Zero(n), c(n);
  for (int r = 0; r < m; ++r) {
    C comp = make();
    const Vector<T> p = input<T>(r, t, n);
    comp.compress(cs(p), ms(c), cz::Round{.seed = 42, .round = t, .rank = r, .workers = m});
    sum += c;
  }
  return Vector<T>(sum / T(m));
}

template <class Make>
void check_identical_and_local(Make make, Eigen::Index n = 300) {
  const int m = 4, rounds = 3;
  const auto out = run_compressor(m, rounds, n, make);
  using T = typename decltype(make())::scalar_type;
  for (int t = 0; t < rounds; ++t) {
    CAPTURE(t);
    const Vector<T>& v0 = out.reduced[0][std::size_t(t)];
    for (int r = 1; r < m; ++r) CHECK(out.reduced[std::size_t(r)][std::size_t(t)] == v0);  // identical bits
    CHECK(v0 == local_mean(m, t, n, make));  // and what every worker contributes, averaged
    for (int r = 0; r < m; ++r) {            // residual = p - C(p), this worker's
      using C = decltype(make());
      C comp = make();
      const Vector<T> p = input<T>(r, t, n);
      Vector<T> c(n);
      comp.compress(cs(p), ms(c), cz::Round{.seed = 42, .round = t, .rank = r, .workers = m});
      CHECK(out.residual[std::size_t(r)][std::size_t(t)] == Vector<T>(p - c));
    }
  }
}

}  // namespace

TEST_CASE_TEMPLATE("Every compressor: identical bits on every worker, equal to the mean of the local C(p_j)", T, float,
                   double) {
  check_identical_and_local([] { return cz::TopK<T>({.fraction = 0.05}); });
  check_identical_and_local([] { return cz::TopK<T>({.k = 8, .chunk = 64}); });
  check_identical_and_local([] { return cz::TopK<T>({.k = 16, .chunk = 128, .value_bits = 2}); });
  check_identical_and_local([] { return cz::TopK<T>({.k = 30, .value_bits = 8}); });
  check_identical_and_local([] { return cz::RandomK<T>({.fraction = 0.1}); });
  check_identical_and_local([] { return cz::RandomK<T>({.k = 7, .unbiased = false}); });
  check_identical_and_local([] { return cz::SignScale<T>(); });
  check_identical_and_local([] { return cz::SignScale<T>(); }, 301);  // a partial last byte
  check_identical_and_local([] { return cz::Qsgd<T>(); });
  check_identical_and_local([] { return cz::Qsgd<T>({.levels = 3, .bucket = 64}); }, 301);
  check_identical_and_local([] { return cz::LowPrecision<T>({.format = cz::HalfFormat::bf16}); });
  check_identical_and_local([] { return cz::LowPrecision<T>({.format = cz::HalfFormat::fp16}); });
}

TEST_CASE_TEMPLATE("PowerSgd on 4 workers: identical bits; a shared rank-r column space is reduced exactly", T, float,
                   double) {
  const int m = 4;
  const Eigen::Index rows = 10, cols = 8, r = 2;
  using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  const Vector<T> a = gaussian<T>(rows * r, 77);
  auto worker_matrix = [&](int w) {  // M_w = A B_w^T: the same column space for every worker
    const Vector<T> b = gaussian<T>(cols * r, std::uint64_t(100 + w));
    const M mw = Eigen::Map<const M>(a.data(), rows, r) * Eigen::Map<const M>(b.data(), cols, r).transpose();
    return Vector<T>(Eigen::Map<const Vector<T>>(mw.data(), rows * cols));
  };
  Vector<T> mean = Vector<T>::Zero(rows * cols);
  for (int w = 0; w < m; ++w) mean += worker_matrix(w) / T(m);
  std::vector<Vector<T>> got(m), residual(m);
  slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& comm) {
    cz::PowerSgd<T> ps({.rank = r, .rows = rows, .cols = cols});
    Vector<T> p = worker_matrix(comm.rank()), e(p.size());
    ps.reduce(ms(p), ms(e), comm, {.seed = 3, .round = 0, .rank = comm.rank(), .workers = m});
    got[std::size_t(comm.rank())] = p;
    residual[std::size_t(comm.rank())] = e;
  });
  const double tol = 1e3 * std::numeric_limits<T>::epsilon();
  for (int w = 0; w < m; ++w) {
    CHECK(got[std::size_t(w)] == got[0]);
    CHECK((got[std::size_t(w)] - mean).norm() <= tol * mean.norm());
    // M_w lies in the span of P: nothing is left over.
    CHECK(residual[std::size_t(w)].norm() <= tol * worker_matrix(w).norm());
  }
}

TEST_CASE_TEMPLATE(
    "Nothing dropped: TopK(fraction 1) and RandomK(fraction 1, unbiased = false) equal reduce::Mean bit for bit", T,
    float, double) {
  const int m = 4;
  const Eigen::Index n = 257;
  for (int which = 0; which < 2; ++which) {
    std::vector<Vector<T>> got(m), want(m);
    slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& comm) {
      Vector<T> p = input<T>(comm.rank(), 0, n), q = p;
      if (which == 0) {
        cz::Compressed<cz::TopK<T>> c(cz::TopK<T>({.fraction = 1.0}), {.error_feedback = false});
        c.reduce(ms(p), comm, {});
      } else {
        auto c = cz::compressed(cz::RandomK<T>({.fraction = 1.0, .unbiased = false}));
        c.reduce(ms(p), comm, {});
        CHECK(c.residual() == Vector<T>::Zero(n));  // error feedback keeps nothing: all was sent
      }
      slowmo::reduce::Mean{}.reduce(ms(q), comm, {});
      got[std::size_t(comm.rank())] = p;
      want[std::size_t(comm.rank())] = q;
    });
    for (int w = 0; w < m; ++w) {
      CHECK(got[std::size_t(w)] == want[std::size_t(w)]);
      CHECK(std::memcmp(got[std::size_t(w)].data(), want[std::size_t(w)].data(), sizeof(T) * std::size_t(n)) == 0);
    }
  }
}

TEST_CASE("Bytes: a 1% top-k sends (m-1) messages of k (index, value) pairs: m k/n of a dense all-reduce") {
  const int m = 4;
  const Eigen::Index n = 10000;
  const std::int64_t k = 100;
  std::vector<std::uint64_t> dense(m), sparse(m), sign(m), qsgd(m), half(m), random(m), power(m);
  const auto report = slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& comm) {
    const auto r = std::size_t(comm.rank());
    Vector<float> p = input<float>(comm.rank(), 0, n), e(n);
    auto sent = [&](auto&& f) {
      const std::uint64_t before = comm.bytes_sent();
      f();
      return comm.bytes_sent() - before;
    };
    dense[r] = sent([&] { slowmo::reduce::Mean{}.reduce(ms(p), comm, {}); });
    cz::TopK<float> top({.k = k});
    sparse[r] = sent([&] { top.reduce(ms(p), ms(e), comm); });
    cz::SignScale<float> s;
    sign[r] = sent([&] { s.reduce(ms(p), ms(e), comm); });
    cz::Qsgd<float> q;
    qsgd[r] = sent([&] { q.reduce(ms(p), ms(e), comm); });
    cz::LowPrecision<float> lp;
    half[r] = sent([&] { lp.reduce(ms(p), ms(e), comm); });
    cz::RandomK<float> rk({.k = k});
    random[r] = sent([&] { rk.reduce(ms(p), ms(e), comm); });
    cz::PowerSgd<float> ps({.rank = 2, .rows = 100, .cols = 100});
    power[r] = sent([&] { ps.reduce(ms(p), ms(e), comm); });
  });
  // Ring models (comm/simulator.hpp): all-reduce 2(m-1)/m bytes per worker; all-gather of
  // equal blocks (m-1) blocks per worker.
  const double dense_bytes = 2.0 * (m - 1) / m * 4 * n;  // 60000
  const double pairs = double(k) * (4 + 4);              // a Gaussian vector has no zero: k pairs
  for (int r = 0; r < m; ++r) {
    CHECK(double(dense[std::size_t(r)]) == dense_bytes);
    CHECK(double(sparse[std::size_t(r)]) == (m - 1) * pairs);                                               // 2400
    CHECK(double(sparse[std::size_t(r)]) / dense_bytes == doctest::Approx(m * (k * 8.0) / (2 * 4.0 * n)));  // 4%
    CHECK(double(sign[std::size_t(r)]) == (m - 1) * (4 + n / 8.0));      // scale + one bit each
    CHECK(double(qsgd[std::size_t(r)]) == (m - 1) * (4 + 4 * n / 8.0));  // norm + 4 bits each (s = 7)
    CHECK(double(half[std::size_t(r)]) == (m - 1) * 2.0 * n);            // = dense_bytes when m = 4
    CHECK(double(random[std::size_t(r)]) == std::floor(2.0 * (m - 1) / m * 4 * k));
    CHECK(double(power[std::size_t(r)]) == 2 * std::floor(2.0 * (m - 1) / m * 4 * 200));  // P then Q, 100 x 2 each
  }
  CHECK(report.workers.size() == std::size_t(m));
}

TEST_CASE_TEMPLATE("Error feedback: EF top-k SGD on a noisy quadratic keeps a bounded residual and converges", T, float,
                   double) {
  // f(x) = 0.5 ||x||^2 on every worker, stochastic gradient g_j = x + sigma xi_j. Each round
  // d_j = gamma g_j, v = Compressed<TopK>(d_j), x = x - v (the same x on every worker).
  // Bound on the residual: with C a delta-contraction (top-k: delta = k/n),
  //   ||e'||^2 <= (1-delta) ||d + e||^2 <= (1-delta)(1+rho)||e||^2 + (1-delta)(1+1/rho)||d||^2,
  // and rho = delta / (2(1-delta)) gives ||e'||^2 <= (1 - delta/2)||e||^2 + (2/delta) D^2, D the
  // largest ||d|| so far; from e = 0 by induction ||e||^2 <= 4 D^2 / delta^2: ||e|| <= 2 D / delta.
  const int m = 4, rounds = 1000;
  const Eigen::Index n = 100;
  const std::int64_t k = 10;
  const double gamma = 0.2, sigma = 0.1, delta = double(k) / n;
  const Vector<T> x0 = gaussian<T>(n, 500);  // ||x0|| about 10
  std::vector<double> worst_ratio(m, 0), final_norm(m, 0);
  slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& comm) {
    const int j = comm.rank();
    auto policy = cz::compressed(cz::TopK<T>({.k = k}));
    static_assert(slowmo::ReducePolicy<decltype(policy), T, slowmo::sim::Comm>);
    Vector<T> x = x0, d(n);
    double largest_d = 0;
    for (int t = 0; t < rounds; ++t) {
      const Vector<T> xi = gaussian<T>(n, std::uint64_t(100000 + 7919 * t + j));
      d = T(gamma) * (x + T(sigma) * xi);
      largest_d = std::max(largest_d, double(d.norm()));
      policy.reduce(ms(d), comm, {.round = t});
      x -= d;
      worst_ratio[std::size_t(j)] = std::max(worst_ratio[std::size_t(j)], double(policy.residual().norm()) / largest_d);
    }
    final_norm[std::size_t(j)] = double(x.norm());
  });
  for (int j = 0; j < m; ++j) {
    CHECK(worst_ratio[std::size_t(j)] <= 2 / delta);  // ||e_t|| <= 2 max_s ||d_s|| / delta, every round
    // Converged: uncompressed SGD's noise floor here is sqrt(gamma sigma^2 n / ((2 - gamma) m))
    // = 0.17; a tenth of the starting distance is a generous explicit bound.
    CHECK(final_norm[std::size_t(j)] <= 0.1 * double(x0.norm()));
  }
}

TEST_CASE_TEMPLATE("Compressed: SparseLoCo's decayed error feedback, e = beta e + d, and what is visited", T, float,
                   double) {
  // One worker, TopK k = 1 of 3, beta = 0.5, by hand:
  //  round 0: d = (3, 1, -2), e = 0: p = d; C(p) = (3, 0, 0); e = (0, 1, -2); v = (3, 0, 0)
  //  round 1: d = (1, 1, 1): p = 0.5 e + d = (1, 1.5, 0); C = (0, 1.5, 0); e = (1, 0, 0)
  slowmo::SingleWorker solo;
  auto policy = cz::compressed(cz::TopK<T>({.k = 1}), {.error_decay = 0.5});
  Vector<T> d(3);
  d << 3, 1, -2;
  policy.reduce(ms(d), solo, {.round = 0});
  CHECK(d == (Vector<T>(3) << 3, 0, 0).finished());
  CHECK(policy.residual() == (Vector<T>(3) << 0, 1, -2).finished());
  d << 1, 1, 1;
  policy.reduce(ms(d), solo, {.round = 1});
  CHECK(d == (Vector<T>(3) << 0, 1.5, 0).finished());
  CHECK(policy.residual() == (Vector<T>(3) << 1, 0, 0).finished());
  // visited: the residual (an accumulator); reset_state zeroes it.
  int entries = 0;
  policy.visit_state([&](const slowmo::StateKey& key, auto& ref, slowmo::StateKind kind) {
    ++entries;
    CHECK(key.path() == "residual");
    CHECK(kind == slowmo::StateKind::accumulator);
    CHECK(ref.size() == 3);
  });
  CHECK(entries == 1);
  slowmo::reset_state(policy);
  CHECK(policy.residual() == Vector<T>::Zero(3));
  // Without error feedback nothing is kept or visited.
  auto plain = cz::compressed(cz::TopK<T>({.k = 1}), {.error_feedback = false});
  plain.reduce(ms(d), solo, {});
  CHECK(plain.residual().size() == 0);
  int none = 0;
  std::as_const(plain).visit_state([&](const slowmo::StateKey&, const auto&, slowmo::StateKind) { ++none; });
  CHECK(none == 0);
  // The SparseLoCo block.
  auto sl = cz::sparseloco_reduce<T>();
  CHECK(sl.options().error_decay == 0.95);
  CHECK(sl.compressor().options().k == 64);
  CHECK(sl.compressor().options().chunk == 4096);
  CHECK(sl.compressor().options().value_bits == 2);
  std::string structure;
  sl.visit_structure([&](const slowmo::StateKey& key, const auto& value) {
    structure += slowmo::detail::concat(key.path(), "=", value, ";");
  });
  CHECK(structure == "reduce=Compressed;error_feedback=1;compressor=TopK;");  // k, chunk, bits: plain
}

TEST_CASE("PowerSgd's Q is state: visited, checkpointed, and a resumed policy continues bit for bit") {
  using P = cz::Compressed<cz::PowerSgd<double>>;
  auto make = [] { return P(cz::PowerSgd<double>({.rank = 2, .rows = 6, .cols = 5}), {.seed = 8}); };
  slowmo::SingleWorker solo;
  P a = make();
  Vector<double> d = gaussian<double>(30, 1);
  a.reduce(ms(d), solo, {.round = 0});
  std::vector<std::string> keys;
  a.visit_state([&](const slowmo::StateKey& key, auto& ref, slowmo::StateKind) {
    keys.push_back(key.path());
    CHECK(ref.size() == 30);
  });
  CHECK(keys == std::vector<std::string>{"residual", "Q"});
  // Q's first cols x r entries are the warm start.
  const auto bytes = slowmo::checkpoint_bytes(a);
  P b = make();
  slowmo::restore_checkpoint(b, bytes);
  auto state = [](const P& p) {
    std::vector<Vector<double>> out;
    p.visit_state([&](const slowmo::StateKey&, const auto& ref, slowmo::StateKind) { out.push_back(ref); });
    return out;
  };
  CHECK(state(b) == state(a));
  Vector<double> da = gaussian<double>(30, 2), db = da, dc = da;
  a.reduce(ms(da), solo, {.round = 1});
  b.reduce(ms(db), solo, {.round = 1});
  CHECK(da == db);
  P fresh = make();  // without the warm start (and the residual) the next round differs
  fresh.reduce(ms(dc), solo, {.round = 1});
  CHECK(dc != da);
}

TEST_CASE("Errors at the first reduce leave the state as it was; a new size names the residual") {
  slowmo::SingleWorker solo;
  auto top = cz::compressed(cz::TopK<float>({.k = 10}));
  Vector<float> small = gaussian<float>(5, 1);
  CHECK_THROWS_WITH_AS(top.reduce(ms(small), solo, {}), doctest::Contains("TopK: option 'k' = 10 is invalid"),
                       slowmo::invalid_option);
  CHECK(top.residual().size() == 0);
  CHECK(small == gaussian<float>(5, 1));  // the vector is untouched
  Vector<float> d = gaussian<float>(20, 2);
  top.reduce(ms(d), solo, {});
  const Vector<float> kept = top.residual();
  CHECK_THROWS_WITH_AS(top.reduce(ms(small), solo, {}),
                       doctest::Contains("the vector has 5 elements but the state 'residual' has 20"),
                       slowmo::size_mismatch);
  CHECK(top.residual() == kept);
  auto power = cz::compressed(cz::PowerSgd<float>({.rank = 3, .rows = 2, .cols = 10}));
  CHECK_THROWS_WITH_AS(power.reduce(ms(d), solo, {}), doctest::Contains("PowerSgd: option 'rank' = 3 is invalid"),
                       slowmo::invalid_option);
  CHECK(power.residual().size() == 0);
  CHECK(power.compressor().q().size() == 0);
  std::size_t q_entries = 0;
  power.visit_state(
      [&](const slowmo::StateKey&, auto& ref, slowmo::StateKind) { q_entries += std::size_t(ref.size()); });
  CHECK(q_entries == 0);
}

TEST_CASE("Every Compressed<C> is a ReducePolicy, default-constructible, for the simulator, threads and one worker") {
  using namespace slowmo;
  auto check = [](auto policy) {
    using P = decltype(policy);
    using T = typename P::scalar_type;
    static_assert(ReducePolicy<P, T, sim::Comm>);
    static_assert(ReducePolicy<P, T, threads::Comm>);
    static_assert(ReducePolicy<P, T, SingleWorker>);
    static_assert(std::is_default_constructible_v<P>);
  };
  check(cz::Compressed<cz::TopK<float>>());
  check(cz::Compressed<cz::RandomK<double>>());
  check(cz::Compressed<cz::SignScale<float>>());
  check(cz::Compressed<cz::Qsgd<double>>());
  check(cz::Compressed<cz::LowPrecision<float>>());
  check(cz::Compressed<cz::PowerSgd<double>>());
  check(cz::sparseloco_reduce<float>());
}

TEST_CASE("The threads backend gives the simulator's bits") {
  const int m = 3;
  const Eigen::Index n = 500;
  auto body = [&](auto& comm, std::vector<Vector<float>>& out) {
    auto top = cz::sparseloco_reduce<float>({.chunk = 100, .k = 5});
    auto qs = cz::compressed(cz::Qsgd<float>({.bucket = 64}), {.seed = 4});
    auto lp = cz::compressed(cz::LowPrecision<float>({.format = cz::HalfFormat::fp16}));
    Vector<float> acc = Vector<float>::Zero(n);
    for (int t = 0; t < 4; ++t) {
      Vector<float> a = input<float>(comm.rank(), t, n), b = a, c = a;
      top.reduce(ms(a), comm, {.round = t});
      qs.reduce(ms(b), comm, {.round = t});
      lp.reduce(ms(c), comm, {.round = t});
      acc += a + b + c;
    }
    out[std::size_t(comm.rank())] = acc;
  };
  std::vector<Vector<float>> on_sim(m), on_threads(m);
  slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& c) { body(c, on_sim); });
  slowmo::threads::run({.workers = m}, [&](slowmo::threads::Comm& c) { body(c, on_threads); });
  for (int r = 0; r < m; ++r) CHECK(on_sim[std::size_t(r)] == on_threads[std::size_t(r)]);
}

TEST_CASE("Workers that reduce vectors of different sizes fail together, naming what differs") {
  auto attempt = [](auto make) {
    try {
      slowmo::sim::run({.workers = 2}, [&](slowmo::sim::Comm& comm) {
        auto policy = cz::compressed(make());
        Vector<float> v = input<float>(comm.rank(), 0, comm.rank() == 0 ? 64 : 80);
        policy.reduce(ms(v), comm, {});
      });
    } catch (const slowmo::worker_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(attempt([] { return cz::SignScale<float>(); }).find("all_gather") != std::string::npos);
  CHECK(attempt([] { return cz::RandomK<float>({.fraction = 0.1}); }).find("mismatched collective") !=
        std::string::npos);
  // TopK's messages may differ in size: more than this worker can hold is named by the
  // gather; an index beyond its vector by the decoder.
  CHECK(attempt([] { return cz::TopK<float>({.fraction = 1.0}); }).find("all_gather_v") != std::string::npos);
  CHECK(attempt([] { return cz::TopK<float>({.k = 10}); }).find("outside this worker's vector of 64") !=
        std::string::npos);
}
