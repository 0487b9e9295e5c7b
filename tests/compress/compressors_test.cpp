// The compressors on one worker, without communication: hand-computed examples, the
// literature's contraction and unbiasedness properties, the 16-bit roundings, and options.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <slowmo/compress.hpp>
#include <slowmo/slowmo.hpp>
#include <span>
#include <string>
#include <vector>

namespace {

using slowmo::Vector;
namespace cz = slowmo::compress;

template <class T>
Vector<T> vec(std::initializer_list<double> v) {
  Vector<T> out(Eigen::Index(v.size()));
  Eigen::Index i = 0;
  for (double x : v) out[i++] = T(x);
  return out;
}

template <class T>
std::span<const T> cs(const Vector<T>& v) {
  return {v.data(), std::size_t(v.size())};
}
template <class T>
std::span<T> ms(Vector<T>& v) {
  return {v.data(), std::size_t(v.size())};
}

template <class C, class T = typename C::scalar_type>
Vector<T> apply(C& c, const Vector<T>& p, cz::Round round = {}) {
  Vector<T> out(p.size());
  c.compress(cs(p), ms(out), round);
  return out;
}

/// Reproducible Gaussian test vectors (the library's own streams are not used to make them).
template <class T>
Vector<T> gaussian(Eigen::Index n, std::uint64_t seed) {
  std::uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  auto next = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return double((s >> 11) + 1) * 0x1.0p-53;  // (0, 1]
  };
  Vector<T> v(n);
  for (Eigen::Index i = 0; i < n; ++i)
    v[i] = T(std::sqrt(-2 * std::log(next())) * std::cos(6.283185307179586 * next()));
  return v;
}

}  // namespace

// ---- TopK ----------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("TopK: the k largest magnitudes, ties to the lower index", T, float, double) {
  const Vector<T> p = vec<T>({1, -3, 3, 2, -2, 0.5});
  cz::TopK<T> top({.k = 3});
  // |p| = 1 3 3 2 2 .5: both 3s, then the first of the two 2s.
  CHECK(apply(top, p) == vec<T>({0, -3, 3, 2, 0, 0}));
  cz::TopK<T> one({.k = 1});
  CHECK(apply(one, p) == vec<T>({0, -3, 0, 0, 0, 0}));
  cz::TopK<T> all({.fraction = 1.0});
  CHECK(apply(all, p) == p);
  // fraction: k = round(0.5 * 6) = 3
  cz::TopK<T> half({.fraction = 0.5});
  CHECK(apply(half, p) == vec<T>({0, -3, 3, 2, 0, 0}));
  // Equal magnitudes everywhere: the first k indices.
  cz::TopK<T> two({.k = 2});
  CHECK(apply(two, vec<T>({-1, 1, -1, 1})) == vec<T>({-1, 1, 0, 0}));
}

TEST_CASE_TEMPLATE("TopK: per chunk, and a last shorter chunk", T, float, double) {
  const Vector<T> p = vec<T>({1, -3, 3, 2, -2, 0.5, 7});
  cz::TopK<T> top({.k = 1, .chunk = 3});
  // [1 -3 3] -> index 1 (tie with 2, lower index); [2 -2 .5] -> index 3; [7] -> index 6.
  CHECK(apply(top, p) == vec<T>({0, -3, 0, 2, 0, 0, 7}));
  cz::TopK<T> two({.k = 2, .chunk = 3});
  CHECK(apply(two, p) == vec<T>({0, -3, 3, 2, -2, 0, 7}));
}

TEST_CASE_TEMPLATE("TopK: the histogram path (long vectors) selects what a sort would", T, float, double) {
  for (Eigen::Index n : {600, 5000, 100000}) {
    CAPTURE(n);
    Vector<T> p = gaussian<T>(n, 7);
    for (Eigen::Index i = 0; i < n; i += 17) p[i] = T(0.5);  // many ties
    for (std::int64_t k : {std::int64_t(1), std::int64_t(n / 100), std::int64_t(n / 3), std::int64_t(n - 1)}) {
      CAPTURE(k);
      cz::TopK<T> top({.k = k});
      const Vector<T> got = apply(top, p);
      // Reference: a full sort of (|p|, index) here, in the test only.
      std::vector<Eigen::Index> order(static_cast<std::size_t>(n));
      for (Eigen::Index i = 0; i < n; ++i) order[std::size_t(i)] = i;
      std::sort(order.begin(), order.end(), [&](Eigen::Index a, Eigen::Index b) {
        return std::abs(p[a]) > std::abs(p[b]) || (std::abs(p[a]) == std::abs(p[b]) && a < b);
      });
      Vector<T> want = Vector<T>::Zero(n);
      for (std::int64_t j = 0; j < k; ++j) want[order[std::size_t(j)]] = p[order[std::size_t(j)]];
      CHECK(got == want);
    }
  }
}

TEST_CASE_TEMPLATE("TopK: contraction ||C(p) - p||^2 <= (1 - k/n) ||p||^2", T, float, double) {
  // Stich et al. 2018, Lemma A.1: the k largest of n entries carry at least k/n of ||p||^2.
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    const Eigen::Index n = 257;
    const Vector<T> p = gaussian<T>(n, seed);
    for (std::int64_t k : {1, 5, 64, 200}) {
      cz::TopK<T> top({.k = k});
      const Vector<T> c = apply(top, p);
      const double err = (c - p).template cast<double>().squaredNorm();
      CHECK(err <= (1 - double(k) / n) * p.template cast<double>().squaredNorm());
    }
  }
}

TEST_CASE_TEMPLATE("TopK: zeros are never sent; value_bits = 1 decodes to the two bins' means", T, float, double) {
  cz::TopK<T> top({.k = 3});
  CHECK(apply(top, vec<T>({0, 0, 1, 0})) == vec<T>({0, 0, 1, 0}));
  // p = 4 -2 1 -6, all kept: mean -0.75, deviations 4.75 -1.25 1.75 -5.25, sigma = sqrt(54.75/3)
  // = 4.272; with range 1 sigma and 2 bins the step is sigma / 2 = 2.136 and the bin
  // round(d / 2.136 + 1) clamped to {0, 1}: 2.22 -> 1, 0.41 -> 0, 1.82 -> 1, -1.46 -> 0.
  // Bin 1 holds {4, 1}, bin 0 {-2, -6}: they decode to their means 2.5 and -4.
  cz::TopK<T> q({.k = 4, .value_bits = 1, .range_in_sigmas = 1.0});
  CHECK(apply(q, vec<T>({4, -2, 1, -6})) == vec<T>({2.5, -4, 2.5, -4}));
}

TEST_CASE_TEMPLATE("TopK: 2-bit values take at most 4 values, each the mean of what it stands for", T, float, double) {
  const Vector<T> p = gaussian<T>(4096, 3);
  cz::TopK<T> q({.k = 64, .chunk = 1024, .value_bits = 2});
  const Vector<T> c = apply(q, p);
  std::set<T> levels;
  for (Eigen::Index i = 0; i < c.size(); ++i)
    if (c[i] != T(0)) levels.insert(c[i]);
  CHECK(levels.size() >= 2);
  CHECK(levels.size() <= 4);
  for (T level : levels) {
    double sum = 0;
    int count = 0;
    for (Eigen::Index i = 0; i < c.size(); ++i)
      if (c[i] == level) sum += double(p[i]), ++count;
    CHECK(double(level) == doctest::Approx(sum / count).epsilon(1e-6));
  }
  // 4 chunks x 64 kept entries.
  CHECK((c.array() != T(0)).count() == 256);
}

// ---- RandomK -------------------------------------------------------------------------------

TEST_CASE("RandomK: k distinct indices in ascending order, the same for a (seed, round), new each round") {
  cz::RandomK<float> a({.k = 10}), b({.k = 10});
  const auto drawn = a.indices(100, {.seed = 5, .round = 3, .rank = 0});
  const std::vector<std::size_t> ia(drawn.begin(), drawn.end());
  REQUIRE(ia.size() == 10);
  for (std::size_t j = 1; j < ia.size(); ++j) CHECK(ia[j - 1] < ia[j]);
  CHECK(ia.back() < 100);
  // Another instance, another rank: the same indices (they do not depend on the rank).
  const auto ib = b.indices(100, {.seed = 5, .round = 3, .rank = 2});
  CHECK(std::equal(ia.begin(), ia.end(), ib.begin(), ib.end()));
  const auto ic = b.indices(100, {.seed = 5, .round = 4, .rank = 0});
  CHECK_FALSE(std::equal(ia.begin(), ia.end(), ic.begin(), ic.end()));
  // k = n: every index.
  cz::RandomK<float> all({.fraction = 1.0});
  const auto every = all.indices(37, {});
  REQUIRE(every.size() == 37);
  for (std::size_t j = 0; j < 37; ++j) CHECK(every[j] == j);
}

TEST_CASE("RandomK: every index is drawn with probability k/n") {
  // 20000 rounds of 5 of 20: each index 5000 times in expectation, sd sqrt(20000 * 1/4 * 3/4) = 61.
  cz::RandomK<double> r({.k = 5});
  std::vector<int> hits(20, 0);
  for (std::int64_t t = 0; t < 20000; ++t)
    for (std::size_t i : r.indices(20, {.seed = 1, .round = t})) ++hits[i];
  for (int h : hits) CHECK(std::abs(h - 5000) < 4 * 61.3);
}

TEST_CASE_TEMPLATE("RandomK: scaled by n/k it is unbiased; unscaled it keeps k/n of ||p||^2 in expectation", T, float,
                   double) {
  const Eigen::Index n = 40;
  const Vector<T> p = gaussian<T>(n, 11);
  cz::RandomK<T> scaled({.k = 8}), plain({.k = 8, .unbiased = false});
  const int rounds = 4000;
  Eigen::VectorXd sum = Eigen::VectorXd::Zero(n), sum2 = Eigen::VectorXd::Zero(n);
  double err = 0;
  for (int t = 0; t < rounds; ++t) {
    const Eigen::VectorXd c = apply(scaled, p, {.seed = 9, .round = t}).template cast<double>();
    sum += c;
    sum2 += c.cwiseAbs2();
    err += (apply(plain, p, {.seed = 9, .round = t}) - p).template cast<double>().squaredNorm();
  }
  const Eigen::VectorXd mean = sum / rounds;
  const Eigen::VectorXd se = ((sum2 / rounds - mean.cwiseAbs2()) / (rounds - 1)).cwiseSqrt();
  for (Eigen::Index i = 0; i < n; ++i) CHECK(std::abs(mean[i] - double(p[i])) <= 4 * se[i]);
  // E||C(p) - p||^2 = (1 - k/n) ||p||^2 for the unscaled one: the mean of 4000 rounds within 5%.
  CHECK(err / rounds == doctest::Approx((1 - 8.0 / 40) * p.template cast<double>().squaredNorm()).epsilon(0.05));
}

// ---- SignScale -----------------------------------------------------------------------------

TEST_CASE_TEMPLATE("SignScale: ||p||_1 / n times the sign, and its exact contraction", T, float, double) {
  cz::SignScale<T> s;
  // ||p||_1 = 6, n = 4: scale 1.5; zero goes with the positive sign.
  CHECK(apply(s, vec<T>({1, -2, 0, 3})) == vec<T>({1.5, -1.5, 1.5, 1.5}));
  // ||C(p) - p||^2 = ||p||^2 - ||p||_1^2 / n, i.e. delta = ||p||_1^2 / (n ||p||_2^2)
  // (Karimireddy et al. 2019, Lemma 8), here 14 - 9 = 5.
  CHECK((apply(s, vec<T>({1, -2, 0, 3})) - vec<T>({1, -2, 0, 3})).squaredNorm() == doctest::Approx(5.0));
  for (std::uint64_t seed = 1; seed <= 10; ++seed) {
    const Vector<T> p = gaussian<T>(1000, seed);
    const double n2 = p.template cast<double>().squaredNorm(), n1 = p.template cast<double>().template lpNorm<1>();
    const double delta = n1 * n1 / (1000 * n2);
    CHECK((apply(s, p) - p).template cast<double>().squaredNorm() == doctest::Approx((1 - delta) * n2).epsilon(1e-4));
  }
}

// ---- Qsgd ----------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("Qsgd: levels hit exactly when s|p_i|/norm is an integer; otherwise one of the two neighbours", T,
                   float, double) {
  // p = 3 -4: norm 5. s = 5: s|p|/norm = 3, 4 exactly, so the level is that whatever u is.
  cz::Qsgd<T> five({.levels = 5});
  for (std::int64_t t = 0; t < 10; ++t) CHECK(apply(five, vec<T>({3, -4}), {.seed = 1, .round = t}) == vec<T>({3, -4}));
  // s = 1: 0.6 and 0.8 -> level 0 or 1, decoding to 0 or +-norm.
  cz::Qsgd<T> one({.levels = 1});
  bool saw[2][2] = {};
  for (std::int64_t t = 0; t < 50; ++t) {
    const Vector<T> c = apply(one, vec<T>({3, -4}), {.seed = 1, .round = t});
    CHECK((c[0] == T(0) || c[0] == T(5)));
    CHECK((c[1] == T(0) || c[1] == T(-5)));
    saw[0][c[0] != T(0)] = saw[1][c[1] != T(0)] = true;
  }
  CHECK((saw[0][0] && saw[0][1] && saw[1][0] && saw[1][1]));
  CHECK(one.code_bits() == 2);
  CHECK(cz::Qsgd<T>().code_bits() == 4);  // s = 7: sign + 3 bits
  // All zero: zero.
  CHECK(apply(five, vec<T>({0, 0, 0})) == vec<T>({0, 0, 0}));
}

TEST_CASE_TEMPLATE("Qsgd: unbiased, per coordinate within 4 standard errors; reproducible", T, float, double) {
  const Eigen::Index n = 30;
  const Vector<T> p = gaussian<T>(n, 5);
  for (std::int64_t bucket : {std::int64_t(0), std::int64_t(8)}) {
    CAPTURE(bucket);
    cz::Qsgd<T> q({.levels = 2, .bucket = bucket});
    const int rounds = 5000;
    Eigen::VectorXd sum = Eigen::VectorXd::Zero(n), sum2 = Eigen::VectorXd::Zero(n);
    for (int t = 0; t < rounds; ++t) {
      const Eigen::VectorXd c = apply(q, p, {.seed = std::uint64_t(t), .round = 0, .rank = 1}).template cast<double>();
      sum += c;
      sum2 += c.cwiseAbs2();
    }
    const Eigen::VectorXd mean = sum / rounds;
    const Eigen::VectorXd se = ((sum2 / rounds - mean.cwiseAbs2()) / (rounds - 1)).cwiseSqrt();
    for (Eigen::Index i = 0; i < n; ++i) CHECK(std::abs(mean[i] - double(p[i])) <= 4 * se[i] + 1e-12);
  }
  cz::Qsgd<T> a, b;
  CHECK(apply(a, p, {.seed = 3, .round = 7, .rank = 2}) == apply(b, p, {.seed = 3, .round = 7, .rank = 2}));
  CHECK(apply(a, p, {.seed = 3, .round = 7, .rank = 2}) != apply(b, p, {.seed = 3, .round = 7, .rank = 1}));
}

// ---- LowPrecision --------------------------------------------------------------------------

TEST_CASE_TEMPLATE("LowPrecision: bf16 and fp16 round to nearest even", T, float, double) {
  cz::LowPrecision<T> bf({.format = cz::HalfFormat::bf16}), fp({.format = cz::HalfFormat::fp16});
  auto r = [](cz::LowPrecision<T>& c, double x) { return double(c.decode(c.encode(T(x)))); };
  const double inf = std::numeric_limits<double>::infinity();
  // bf16: 7 mantissa bits, so 1 + 2^-8 is half an ulp above 1: the tie goes to even, 1.
  CHECK(r(bf, 1 + 0x1.0p-8) == 1.0);
  CHECK(r(bf, 1 + 3 * 0x1.0p-8) == 1 + 0x1.0p-6);          // tie between 1 + 2^-7 (odd) and 1 + 2^-6
  CHECK(r(bf, 1 + 0x1.0p-8 + 0x1.0p-20) == 1 + 0x1.0p-7);  // just above the tie
  CHECK(r(bf, -1.0 / 3) == -171.0 / 512);                  // 1.0101010|1.. rounds up to 1.0101011 x 2^-2
  CHECK(bf.encode(T(1)) == 0x3F80);
  CHECK(r(bf, 0x1.0p-133) == 0x1.0p-133);                          // the least bf16 subnormal
  CHECK(r(bf, 0x1.0p-134) == 0.0);                                 // half of it: tie to even (zero)
  CHECK(r(bf, 3 * 0x1.0p-134) == 0x1.0p-132);                      // tie between 2^-133 (odd) and 2^-132
  CHECK(r(bf, double(std::numeric_limits<float>::max())) == inf);  // beyond bf16's max + half an ulp
  CHECK(r(bf, 0x1.FEp127) == 0x1.FEp127);                          // bf16's max
  CHECK(std::isnan(r(bf, std::numeric_limits<double>::quiet_NaN())));
  CHECK(std::signbit(r(bf, -0.0)));
  // fp16: 10 mantissa bits, max 65504, least subnormal 2^-24.
  CHECK(r(fp, 1 + 0x1.0p-11) == 1.0);
  CHECK(r(fp, 1 + 3 * 0x1.0p-11) == 1 + 0x1.0p-9);
  CHECK(r(fp, 1.0 / 3) == 1365.0 / 4096);  // 0x3555
  CHECK(fp.encode(T(1.0 / 3)) == 0x3555);
  CHECK(r(fp, 65504) == 65504);
  CHECK(r(fp, 65519) == 65504);
  CHECK(r(fp, 65520) == inf);  // the tie above the max goes to "even": infinity
  CHECK(r(fp, -1e6) == -inf);
  CHECK(r(fp, 0x1.0p-24) == 0x1.0p-24);
  CHECK(r(fp, 0x1.0p-25) == 0.0);
  CHECK(r(fp, 3 * 0x1.0p-25) == 0x1.0p-23);
  CHECK(r(fp, 1023.5 * 0x1.0p-24) ==
        0x1.0p-14);  // the largest subnormal (1023 x 2^-24) + half an ulp: tie, to even: the least normal
  CHECK(r(fp, 1023 * 0x1.0p-24) == 1023 * 0x1.0p-24);
}

TEST_CASE("LowPrecision: the float fast paths agree with the generic rounding everywhere") {
  namespace d = slowmo::compress::detail;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const auto c = static_cast<std::uint16_t>(h);
    const double gb = d::Bf16::decode(c), gf = d::Fp16::decode(c);
    const float fb = d::float_from_bf16(c), ff = d::float_from_fp16(c);
    if (std::isnan(gb))
      CHECK(std::isnan(fb));
    else
      CHECK(double(fb) == gb);
    if (std::isnan(gf))
      CHECK(std::isnan(ff));
    else
      CHECK(double(ff) == gf);
  }
  // Every float near a code, at a midpoint between codes and on either side of it, plus a
  // sweep of bit patterns.
  auto agree = [](float x) {
    const auto b = d::bf16_from_float(x), f = d::fp16_from_float(x);
    const auto gb = d::Bf16::encode(double(x)), gf = d::Fp16::encode(double(x));
    if (std::isnan(x)) return std::isnan(d::float_from_bf16(b)) && std::isnan(d::float_from_fp16(f));
    return b == gb && f == gf;
  };
  long bad = 0;
  auto around = [&](double v, double w) {
    for (const double x : {v, (v + w) / 2}) {
      const float f = float(x);
      const float inf = std::numeric_limits<float>::infinity();
      for (const float y : {f, std::nextafter(f, inf), std::nextafter(f, -inf)}) bad += !agree(y);
    }
  };
  for (std::uint32_t h = 0; h < 65535; ++h) {
    around(d::Fp16::decode(std::uint16_t(h)), d::Fp16::decode(std::uint16_t(h + 1)));
    around(d::Bf16::decode(std::uint16_t(h)), d::Bf16::decode(std::uint16_t(h + 1)));
  }
  for (std::uint64_t bits = 0; bits < (1ull << 32); bits += 9973)
    bad += !agree(std::bit_cast<float>(std::uint32_t(bits)));
  CHECK(bad == 0);
}

// ---- PowerSgd ------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("PowerSgd: rank r reconstructs a rank-r matrix (to rounding); the shape is column-major", T, float,
                   double) {
  const Eigen::Index rows = 12, cols = 9;
  for (Eigen::Index r : {1, 2, 3}) {
    CAPTURE(r);
    const Vector<T> a = gaussian<T>(rows * r, 1), b = gaussian<T>(cols * r, 2);
    using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
    const M m = Eigen::Map<const M>(a.data(), rows, r) * Eigen::Map<const M>(b.data(), cols, r).transpose();
    const Vector<T> p = Eigen::Map<const Vector<T>>(m.data(), rows * cols);
    cz::PowerSgd<T> ps({.rank = r, .rows = rows, .cols = cols});
    const Vector<T> c = apply(ps, p);
    CHECK((c - p).norm() <= 1e3 * std::numeric_limits<T>::epsilon() * p.norm());
    CHECK(ps.rows() == rows);
    CHECK(ps.q().rows() == cols);
    CHECK(ps.q().cols() == r);
  }
  // Near-square default shape: 12 = 3 x 4.
  cz::PowerSgd<T> d;
  apply(d, gaussian<T>(12, 3));
  CHECK(d.rows() == 3);
  CHECK(d.cols() == 4);
  cz::PowerSgd<T> only_cols({.cols = 6});
  apply(only_cols, gaussian<T>(12, 3));
  CHECK(only_cols.rows() == 2);
}

TEST_CASE("PowerSgd: the warm start makes repeated rounds power iteration (rank 1 -> the top singular pair)") {
  // M = 5 u1 v1^T + 1 u2 v2^T (orthonormal u, v): repeated rounds converge to 5 u1 v1^T.
  const Eigen::Index rows = 4, cols = 3;
  Eigen::MatrixXd m = Eigen::MatrixXd::Zero(rows, cols);
  m(0, 0) = 5;
  m(1, 1) = 1;
  const Vector<double> p = Eigen::Map<const Vector<double>>(m.data(), rows * cols);
  cz::PowerSgd<double> ps({.rank = 1, .rows = rows, .cols = cols});
  Vector<double> c;
  for (int t = 0; t < 40; ++t) c = apply(ps, p);
  Vector<double> want = Vector<double>::Zero(rows * cols);
  want[0] = 5;
  CHECK((c - want).norm() < 1e-10);
}

// ---- options -------------------------------------------------------------------------------

TEST_CASE("Invalid options name the compressor, the option and the value") {
  using slowmo::invalid_option;
  CHECK_THROWS_WITH_AS(cz::TopK<float>({.fraction = 0.0}), doctest::Contains("TopK: option 'fraction' = 0 is invalid"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(cz::TopK<float>({.fraction = 1.5}), doctest::Contains("'fraction' = 1.5"), invalid_option);
  CHECK_THROWS_WITH_AS(cz::TopK<float>({.k = -1}), doctest::Contains("TopK: option 'k' = -1 is invalid"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(cz::TopK<float>({.k = 9, .chunk = 8}), doctest::Contains("'k' = 9"), invalid_option);
  CHECK_THROWS_WITH_AS(cz::TopK<float>({.value_bits = 3}), doctest::Contains("'value_bits' = 3"), invalid_option);
  CHECK_THROWS_WITH_AS(cz::RandomK<float>({.fraction = -0.1}), doctest::Contains("RandomK: option 'fraction' = -0.1"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(cz::Qsgd<float>({.levels = 0}), doctest::Contains("Qsgd: option 'levels' = 0 is invalid"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(cz::PowerSgd<float>({.rank = 0}), doctest::Contains("PowerSgd: option 'rank' = 0 is invalid"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(cz::Compressed<cz::TopK<float>>(cz::TopK<float>(), {.error_decay = 0.0}),
                       doctest::Contains("Compressed: option 'error_decay' = 0 is invalid"), invalid_option);
  CHECK_THROWS_WITH_AS(cz::Compressed<cz::TopK<float>>(cz::TopK<float>(), {.error_decay = 1.25}),
                       doctest::Contains("'error_decay' = 1.25"), invalid_option);
}

TEST_CASE("Options that depend on n throw at the first use on a vector of that size") {
  using slowmo::invalid_option;
  Vector<float> p = gaussian<float>(12, 1), out(12);
  cz::TopK<float> top({.k = 13});
  CHECK_THROWS_WITH_AS(top.compress(cs(p), ms(out)),
                       doctest::Contains("TopK: option 'k' = 13 is invalid: must be in (0, n] for a vector of n = 12"),
                       invalid_option);
  cz::RandomK<float> rk({.k = 20});
  CHECK_THROWS_WITH_AS(rk.compress(cs(p), ms(out)), doctest::Contains("RandomK: option 'k' = 20"), invalid_option);
  cz::PowerSgd<float> shape({.rows = 5, .cols = 3});
  CHECK_THROWS_WITH_AS(shape.compress(cs(p), ms(out)),
                       doctest::Contains("PowerSgd: option 'rows' = 5 is invalid: the shape rows x cols = 5 x 3 = 15"),
                       invalid_option);
  cz::PowerSgd<float> divides({.rows = 5});
  CHECK_THROWS_WITH_AS(divides.compress(cs(p), ms(out)),
                       doctest::Contains("'rows' = 5 is invalid: does not divide n = 12"), invalid_option);
  cz::PowerSgd<float> rank({.rank = 4, .rows = 3, .cols = 4});
  CHECK_THROWS_WITH_AS(rank.compress(cs(p), ms(out)),
                       doctest::Contains("PowerSgd: option 'rank' = 4 is invalid: must be <= min(rows, cols) = 3"),
                       invalid_option);
  CHECK(rank.q().size() == 0);  // nothing was made
  CHECK_THROWS_AS(cz::TopK<float>().prepare(std::size_t(std::numeric_limits<std::int32_t>::max()) + 1),
                  slowmo::size_mismatch);
  CHECK_THROWS_WITH_AS(top.compress(cs(p), std::span<float>(out.data(), 5)),
                       doctest::Contains("out has 5 elements but the vector has 12"), slowmo::size_mismatch);
}
