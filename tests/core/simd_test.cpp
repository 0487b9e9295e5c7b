// The CPU driver's SIMD body and its scalar tail compute the same bits. Each update is one
// per-element rule, so updating a whole vector must give, element by element, exactly
// what updating that element alone gives (a vector of one element takes the scalar path,
// std::sqrt and all: the correctly rounded operations PyTorch and the GPU use).
//
// Built with the default flags, and again with -mavx2 and with -mavx512f where the
// compiler takes them (tests/CMakeLists.txt); those exit with 77 (skipped) on a CPU
// without the instruction set.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <slowmo/distributed/rules.hpp>
#include <slowmo/outer/rules.hpp>
#include <slowmo/slowmo.hpp>

namespace {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
[[maybe_unused]] const bool cpu_has_isa = [] {
#if defined(__AVX512F__)
  const bool ok = __builtin_cpu_supports("avx512f");
#elif defined(__AVX2__)
  const bool ok = __builtin_cpu_supports("avx2");
#else
  const bool ok = true;
#endif
  if (!ok) {
    std::puts("skipped: this CPU lacks the instruction set this test was compiled for");
    std::exit(77);
  }
  return ok;
}();
#endif

using slowmo::NonFinite;
using slowmo::Vector;

// 4 packets of the widest SIMD (16 floats with AVX-512) and a tail, for both types.
constexpr Eigen::Index n = 4 * 16 + 7;

template <class T>
bool same_bits(T a, T b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof(T)) == 0;
}

template <class T>
void check_same(const Vector<T>& whole, const Vector<T>& alone, const std::string& what) {
  for (Eigen::Index i = 0; i < n; ++i) {
    CAPTURE(what);
    CAPTURE(i);
    CAPTURE(whole[i]);
    CAPTURE(alone[i]);
    CHECK(same_bits(whole[i], alone[i]));
  }
}

/// Values over many magnitudes, both signs, zeros, subnormals; with `special`, also NaN
/// and infinities.
template <class T>
Vector<T> values(std::mt19937& rng, bool special) {
  std::uniform_real_distribution<double> mantissa(-2, 2);
  std::uniform_int_distribution<int> exponent(-30, 30);
  Vector<T> v(n);
  for (Eigen::Index i = 0; i < n; ++i) v[i] = T(mantissa(rng) * std::pow(10.0, exponent(rng)));
  v[3] = T(0);
  v[17] = -T(0);
  v[30] = std::numeric_limits<T>::denorm_min() * T(3);
  v[n - 2] = std::numeric_limits<T>::min() / T(4);
  if (special) {
    v[5] = std::numeric_limits<T>::quiet_NaN();
    v[40] = std::numeric_limits<T>::infinity();
    v[n - 1] = -std::numeric_limits<T>::infinity();
  }
  return v;
}

/// Steps `make()` on the whole vector and, separately, on each element alone.
template <class T, class Make>
void check_optimizer(Make make, const char* what, bool special) {
  std::mt19937 rng(7);
  Vector<T> whole = values<T>(rng, false), alone = whole;
  auto opt = make();
  std::vector<decltype(make())> singles(std::size_t(n), make());
  for (int t = 0; t < 4; ++t) {
    const Vector<T> g = values<T>(rng, special && t == 2);
    opt.step(whole, g);
    for (Eigen::Index i = 0; i < n; ++i) singles[std::size_t(i)].step(alone.segment(i, 1), g.segment(i, 1));
  }
  check_same(whole, alone, what);
}

/// Applies `rule` to k buffers as a whole and element by element; compares every buffer.
template <class T, class Rule, std::size_t... I>
void check_rule(const Rule& rule, const char* what, std::index_sequence<I...>) {
  std::mt19937 rng(11);
  std::array<Vector<T>, sizeof...(I)> whole;
  for (auto& b : whole) b = values<T>(rng, false).cwiseAbs() + Vector<T>::Constant(n, T(0.5));
  auto alone = whole;
  slowmo::Host::for_each(n, rule, whole[I].data()...);
  for (Eigen::Index i = 0; i < n; ++i) slowmo::Host::for_each(1, rule, (alone[I].data() + i)...);
  for (std::size_t b = 0; b < whole.size(); ++b) check_same(whole[b], alone[b], what);
}

}  // namespace

TEST_CASE_TEMPLATE("single-worker optimizers: the SIMD body equals the scalar path, bit for bit", T, float, double) {
  using namespace slowmo;
  for (bool special : {false, true}) {
    const NonFinite nf = special ? NonFinite::propagate : NonFinite::raise;
    CAPTURE(special);
    check_optimizer<T>([&] { return Sgd<T>({.lr = 0.1, .non_finite = nf}); }, "sgd", special);
    check_optimizer<T>(
        [&] {
          return Sgd<T>({.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01, .maximize = true,
                         .non_finite = nf});
        },
        "sgd momentum", special);
    check_optimizer<T>([&] { return Nesterov<T>({.lr = 0.1, .weight_decay = 0.01, .non_finite = nf}); }, "nesterov",
                       special);
    check_optimizer<T>([&] { return Adam<T>({.lr = 0.01, .weight_decay = 0.1, .non_finite = nf}); }, "adam", special);
    check_optimizer<T>([&] { return AdamW<T>({.lr = 0.01, .betas = {0.8, 0.95}, .non_finite = nf}); }, "adamw",
                       special);
    check_optimizer<T>([&] { return Adam<T>({.lr = 0.01, .amsgrad = true, .maximize = true, .non_finite = nf}); },
                       "adam amsgrad", special);
    check_optimizer<T>(
        [&] { return RMSprop<T>({.lr = 0.01, .weight_decay = 0.1, .momentum = 0.5, .centered = true, .non_finite = nf}); },
        "rmsprop centered momentum", special);
    check_optimizer<T>(
        [&] { return Adagrad<T>({.lr = 0.1, .lr_decay = 0.01, .initial_accumulator_value = 0.1, .non_finite = nf}); },
        "adagrad", special);
    check_optimizer<T>([&] { return NAdam<T>({.lr = 0.01, .weight_decay = 0.1, .non_finite = nf}); }, "nadam", special);
    check_optimizer<T>([&] { return Adamax<T>({.lr = 0.01, .betas = {0.8, 0.95}, .non_finite = nf}); }, "adamax",
                       special);
    check_optimizer<T>([&] { return Qhm<T>({.lr = 0.1, .beta = 0.9, .weight_decay = 0.01, .non_finite = nf}); }, "qhm",
                       special);
    check_optimizer<T>([&] { return QhAdam<T>({.lr = 0.01, .nus = {0.7, 0.9}, .non_finite = nf}); }, "qhadam", special);
    check_optimizer<T>([&] { return Lion<T>({.lr = 0.01, .weight_decay = 0.1, .non_finite = nf}); }, "lion", special);
    // element-wise gradient modifiers (clipping by norm is not element-wise: see the reduction below)
    check_optimizer<T>([&] { return ClipGradValue(Sgd<T>({.lr = 0.1, .non_finite = nf}), {.threshold = 1e3}); },
                       "clip value", false);
    check_optimizer<T>([&] { return FedProx(Adam<T>({.lr = 0.01, .non_finite = nf}), {.mu = 0.3}); }, "fedprox",
                       special);
  }
}

TEST_CASE_TEMPLATE("synchronisation rules: the SIMD body equals the scalar path, bit for bit", T, float, double) {
  using namespace slowmo::rules;
  check_rule<T>(LookaheadSync<T>{T(0.3)}, "lookahead alpha < 1/2", std::make_index_sequence<2>{});
  check_rule<T>(LookaheadSync<T>{T(0.8)}, "lookahead alpha > 1/2", std::make_index_sequence<2>{});
  for (bool divide : {false, true})
    check_rule<T>(PseudoGradient<T>{T(0.05), divide}, "pseudo-gradient", std::make_index_sequence<2>{});
  for (bool nesterov : {false, true})
    check_rule<T>(HeavyBallOuter<T>{.beta = T(0.7), .lr = T(0.3), .nesterov = nesterov}, "heavy-ball outer",
                  std::make_index_sequence<3>{});
  for (SecondMoment kind : {SecondMoment::adam, SecondMoment::yogi, SecondMoment::adagrad})
    check_rule<T>(AdaptiveOuter<T>{kind, T(0.9), T(0.1), T(0.99), T(0.01), T(0.1), T(1e-3)}, "adaptive outer",
                  std::make_index_sequence<4>{});
  check_rule<T>(PushSumShare<T>{T(1.0 / 3)}, "push-sum share", std::make_index_sequence<2>{});
  check_rule<T>(PushSumCombine<T>{T(0.7)}, "push-sum combine", std::make_index_sequence<4>{});
  check_rule<T>(AddTo{}, "push-sum add", std::make_index_sequence<2>{});
}

// The host reduction's order (core/for_each.hpp: 128 bytes of lanes folded in increasing
// order, a fixed tree, then the tail), written here as a plain scalar loop: the same bits
// whatever the SIMD width this file is built for (SSE2, AVX2, AVX-512).
template <class T, class Op>
T reduce_in_documented_order(const Vector<T>& x, const Op& op) {
  const Eigen::Index L = 128 / sizeof(T), n = x.size(), body = n - n % L;
  std::vector<T> a(std::size_t(L), Op::identity());
  for (Eigen::Index i = 0; i < body; ++i) a[std::size_t(i % L)] = op.combine(a[std::size_t(i % L)], op.map(x[i]));
  for (Eigen::Index w = L / 2; w >= 1; w /= 2)
    for (Eigen::Index l = 0; l < w; ++l) a[std::size_t(l)] = op.combine(a[std::size_t(l)], a[std::size_t(l + w)]);
  T r = a[0];
  for (Eigen::Index i = body; i < n; ++i) r = op.combine(r, op.map(x[i]));
  return r;
}

TEST_CASE_TEMPLATE("reductions: the SIMD reduction folds in the documented order, bit for bit", T, float, double) {
  using namespace slowmo::reductions;
  std::mt19937 rng(5);
  for (Eigen::Index size : {Eigen::Index(0), Eigen::Index(1), Eigen::Index(15), Eigen::Index(32), Eigen::Index(1000),
                            Eigen::Index(4099)}) {
    CAPTURE(size);
    Vector<T> x(size);
    std::uniform_real_distribution<double> u(-3, 3);
    for (Eigen::Index i = 0; i < size; ++i) x[i] = T(u(rng));
    CHECK(same_bits(slowmo::Host::reduce(size, Sum<T>{}, x.data()), reduce_in_documented_order(x, Sum<T>{})));
    CHECK(same_bits(slowmo::Host::reduce(size, SumOfSquares<T>{}, x.data()),
                    reduce_in_documented_order(x, SumOfSquares<T>{})));
    CHECK(same_bits(slowmo::Host::reduce(size, SumOfSquares<T>{T(0.25)}, x.data()),
                    reduce_in_documented_order(x, SumOfSquares<T>{T(0.25)})));
    CHECK(same_bits(slowmo::Host::reduce(size, MaxAbs<T>{}, x.data()), reduce_in_documented_order(x, MaxAbs<T>{})));
    CHECK(slowmo::Host::reduce(size, NonFiniteProbe<T>{}, x.data()) == T(0));
    if (size > 0) {
      T largest = T(0);  // (not Eigen's maxCoeff: GCC 12 warns in its AVX-512 max)
      for (Eigen::Index i = 0; i < size; ++i) largest = std::max(largest, std::abs(x[i]));
      CHECK(slowmo::Host::reduce(size, MaxAbs<T>{}, x.data()) == largest);
      for (Eigen::Index at : {Eigen::Index(0), size / 2, size - 1}) {  // body and tail
        for (T bad : {std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::infinity(),
                      -std::numeric_limits<T>::infinity()}) {
          Vector<T> y = x;
          y[at] = bad;
          CHECK(std::isnan(slowmo::Host::reduce(size, NonFiniteProbe<T>{}, y.data())));
          CHECK(std::isnan(slowmo::Host::reduce(size, MaxAbs<T>{}, y.data())));
          CHECK(slowmo::detail::first_non_finite(y.data(), size) == at);
        }
      }
    }
  }
}
