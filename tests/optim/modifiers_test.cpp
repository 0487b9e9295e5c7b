// Gradient modifiers (optim/clip.hpp, optim/fedprox.hpp): hand-computed steps, trajectories
// against loops written here from the formulas, the identities (max_norm = inf, threshold =
// inf and mu = 0 are the base bit for bit), NaN handling through the base's policy, FedProx
// under LocalSgd pulled towards the last average (by hand), and the option checks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <slowmo/slowmo.hpp>

using namespace slowmo;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

template <class T>
Vector<T> vec(std::initializer_list<double> v) {
  Vector<T> out(Eigen::Index(v.size()));
  Eigen::Index i = 0;
  for (double x : v) out[i++] = T(x);
  return out;
}

template <class T>
bool same_bits(const Vector<T>& a, const Vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(T) * std::size_t(a.size())) == 0;
}

// Gradient of 1/2 sum_j a_j (x_j - c_j)^2, with a_j in {0.5, 1.5, 4}: large enough early on
// for clipping by norm 1 and by value 0.5 to act, small enough later for them not to.
template <class T>
Vector<T> quadratic_gradient(const Vector<T>& x) {
  Vector<T> g(x.size());
  for (Eigen::Index j = 0; j < x.size(); ++j) {
    const double a = j % 3 == 0 ? 0.5 : j % 3 == 1 ? 1.5 : 4.0, c = std::cos(double(j));
    g[j] = T(a * (double(x[j]) - c));
  }
  return g;
}

template <class T>
Vector<T> start_point(Eigen::Index d) {
  return Vector<T>::LinSpaced(d, T(-2), T(3));
}

/// x after `steps` steps of opt on quadratic_gradient.
template <class T, class Opt>
Vector<T> run(Opt opt, int steps, Eigen::Index d) {
  Vector<T> x = start_point<T>(d);
  slowmo::start(opt, x);
  for (int t = 0; t < steps; ++t) opt.step(x, quadratic_gradient(x));
  return x;
}

}  // namespace

TEST_CASE_TEMPLATE("ClipGradNorm: a gradient of norm 5 clipped to 1, by hand", T, float, double) {
  // g = (3, 0, 4): ||g|| = 5 exactly; coef = 1 / (5 + 1e-6); Sgd with lr 1 from 0: x = -g coef.
  ClipGradNorm opt(Sgd<T>({.lr = 1.0}), {.max_norm = 1.0});
  Vector<T> x = Vector<T>::Zero(3);
  opt.step(x, vec<T>({3, 0, 4}));
  const T coef = T(1) / (T(5) + T(1e-6));
  CHECK(x[0] == -(T(3) * coef));
  CHECK(x[1] == T(0));
  CHECK(x[2] == -(T(4) * coef));
  CHECK(x[0] == doctest::Approx(-0.6).epsilon(1e-6));
  CHECK(x[2] == doctest::Approx(-0.8).epsilon(1e-6));
  CHECK(opt.steps() == 1);
  CHECK(opt.last_lr() == T(1));
  // A gradient inside the ball is the base's: coef would be 1 / (0.5 + 1e-6) > 1, clamped to 1.
  opt.step(x, vec<T>({0.3, 0, 0.4}));
  CHECK(x[0] == -(T(3) * coef) - T(0.3));
}

TEST_CASE_TEMPLATE("ClipGradNorm: the inf-norm, and a 2-norm whose squares overflow", T, float, double) {
  // max |g_i| = 7, max_norm 3.5: coef = 3.5 / (7 + 1e-6), about 1/2.
  ClipGradNorm inf_norm(Sgd<T>({.lr = 1.0}), {.max_norm = 3.5, .norm_type = inf});
  Vector<T> x = Vector<T>::Zero(3);
  inf_norm.step(x, vec<T>({3, -7, 4}));
  const T coef = T(3.5) / (T(7) + T(1e-6));
  CHECK(x[0] == -(T(3) * coef));
  CHECK(x[1] == T(7) * coef);
  CHECK(x[1] == doctest::Approx(3.5).epsilon(1e-6));
  // (3, 4) * 2^100: the squares overflow float (not double); the norm is 5 * 2^100 all the same.
  ClipGradNorm two_norm(Sgd<T>({.lr = 1.0}), {.max_norm = 1.0});
  const T big = std::ldexp(T(1), 100);
  Vector<T> y = Vector<T>::Zero(2);
  two_norm.step(y, vec<T>({3, 4}) * big);
  CHECK(y[0] == doctest::Approx(-0.6).epsilon(1e-6));
  CHECK(y[1] == doctest::Approx(-0.8).epsilon(1e-6));
  CHECK(method::ClipGradNorm::norm<Host>(ClipGradNormOptions{}, 2, (vec<T>({3, 4}) * big).eval().data()) ==
        T(5) * big);
}

TEST_CASE_TEMPLATE("ClipGradNorm(Sgd with momentum): the trajectory of a loop written from the formulas", T, float,
                   double) {
  // d = 13 < the reduction's lanes (32 float, 16 double): the sum of squares is the plain
  // sequential sum, so the loop below gives the same bits.
  const Eigen::Index d = 13;
  const double lr = 0.1, momentum = 0.9, max_norm = 3.0;
  Vector<T> x = start_point<T>(d), buf = Vector<T>::Zero(d);
  int clipped = 0;
  for (int t = 0; t < 30; ++t) {
    Vector<T> g = quadratic_gradient(x);
    T sum = T(0);
    for (Eigen::Index j = 0; j < d; ++j) sum = sum + g[j] * g[j];
    const T coef = T(max_norm) / (std::sqrt(sum) + T(1e-6));  // torch: clamp(coef, max = 1), g * coef
    if (coef < T(1)) {
      for (Eigen::Index j = 0; j < d; ++j) g[j] = g[j] * coef;
      ++clipped;
    }
    for (Eigen::Index j = 0; j < d; ++j) {  // torch's SGD, dampening 0
      buf[j] = t == 0 ? g[j] : T(momentum) * buf[j] + g[j];
      x[j] = x[j] - T(lr) * buf[j];
    }
  }
  CHECK(clipped > 0);
  CHECK(clipped < 30);  // both branches are exercised
  const Vector<T> got = run<T>(ClipGradNorm(Sgd<T>({.lr = lr, .momentum = momentum}), {.max_norm = max_norm}), 30, d);
  CHECK(same_bits(got, x));
}

TEST_CASE_TEMPLATE("ClipGradValue: clamp(g, -c, c), by hand and along a trajectory", T, float, double) {
  ClipGradValue opt(Sgd<T>({.lr = 1.0}), {.threshold = 1.0});
  Vector<T> x = Vector<T>::Zero(5);
  opt.step(x, vec<T>({-3, 0.5, 2, -0.25, -1}));
  CHECK(same_bits<T>(x, vec<T>({1, -0.5, -1, 0.25, 1})));
  // Adam on coordinates clipped at 0.5: a loop from torch's Adam formulas.
  const Eigen::Index d = 7;
  const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, c = 0.5;
  Vector<T> y = start_point<T>(d), m = Vector<T>::Zero(d), v = Vector<T>::Zero(d);
  for (int t = 1; t <= 20; ++t) {
    const Vector<T> g = quadratic_gradient(y);
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    for (Eigen::Index j = 0; j < d; ++j) {
      const T gj = std::min(std::max(g[j], T(-c)), T(c));
      m[j] = T(b1) * m[j] + T(1 - b1) * gj;
      v[j] = T(b2) * v[j] + T(1 - b2) * gj * gj;
      const T denom = std::sqrt(v[j]) / T(std::sqrt(bc2)) + T(eps);
      y[j] = y[j] - T(lr / bc1) * (m[j] / denom);
    }
  }
  const Vector<T> got = run<T>(ClipGradValue(Adam<T>({.lr = lr}), {.threshold = c}), 20, d);
  for (Eigen::Index j = 0; j < d; ++j) CHECK(double(got[j]) == doctest::Approx(double(y[j])).epsilon(1e-6));
}

TEST_CASE_TEMPLATE("identities: max_norm = inf, threshold = inf and mu = 0 are the base, bit for bit", T, float,
                   double) {
  const Eigen::Index d = 41;  // body and tail of every SIMD width
  const auto base = [] { return AdamW<T>({.lr = 0.05, .amsgrad = true}); };
  const Vector<T> expected = run<T>(base(), 25, d);
  CHECK(same_bits(run<T>(ClipGradNorm(base(), {.max_norm = inf}), 25, d), expected));
  CHECK(same_bits(run<T>(ClipGradNorm(base(), {.max_norm = 1e30}), 25, d), expected));  // coef > 1: g itself
  CHECK(same_bits(run<T>(ClipGradNorm(base(), {.max_norm = 1e30, .norm_type = inf}), 25, d), expected));
  CHECK(same_bits(run<T>(ClipGradValue(base(), {.threshold = inf}), 25, d), expected));
  CHECK(same_bits(run<T>(ClipGradValue(base(), {.threshold = 1e30}), 25, d), expected));
  CHECK(same_bits(run<T>(FedProx(base(), {.mu = 0}), 25, d), expected));
  // and the modifiers compose: clipping by a huge value around a FedProx with mu = 0
  CHECK(same_bits(run<T>(ClipGradValue(ClipGradNorm(FedProx(base(), {.mu = 0}), {.max_norm = inf}),
                                       {.threshold = inf}),
                         25, d),
                  expected));
}

TEST_CASE_TEMPLATE("FedProx: g + mu (x - x0), by hand", T, float, double) {
  // f(x) = |x|^2 / 2, Sgd lr 0.5, mu 0.2, x0 = (1, 2):
  // x_{t+1} = x_t - 0.5 ((1 + 0.2) x_t - 0.2 x0) = 0.4 x_t + 0.1 x0: x0, (0.5, 1), (0.3, 0.6), (0.22, 0.44).
  FedProx opt(Sgd<T>({.lr = 0.5}), {.mu = 0.2});
  Vector<T> x = vec<T>({1, 2});
  opt.start(x);
  CHECK(same_bits(opt.anchor(), x));
  const double want[3][2] = {{0.5, 1}, {0.3, 0.6}, {0.22, 0.44}};
  for (const auto& w : want) {
    opt.step(x, Vector<T>(x));
    CHECK(double(x[0]) == doctest::Approx(w[0]).epsilon(1e-6));
    CHECK(double(x[1]) == doctest::Approx(w[1]).epsilon(1e-6));
  }
  CHECK(same_bits<T>(opt.anchor(), vec<T>({1, 2})));  // only a rebase moves it
  // rebase: the anchor follows the overwritten parameters
  const Vector<T> moved = vec<T>({-1, 4});
  opt.rebase(moved);
  CHECK(same_bits(opt.anchor(), moved));
  // without start, the first step anchors at the x it is given
  FedProx fresh(Sgd<T>({.lr = 0.5}), {.mu = 0.2});
  Vector<T> z = vec<T>({1, 2});
  fresh.step(z, Vector<T>(z));
  CHECK(same_bits<T>(fresh.anchor(), vec<T>({1, 2})));
  // the anchor is state of kind anchor, visited before the base's entries; a reset keeps it
  std::vector<std::string> keys;
  fresh.visit_state([&](const StateKey& k, const auto&, StateKind kind) {
    keys.push_back(k.path());
    if (k.path() == "anchor") CHECK(kind == StateKind::anchor);
  });
  CHECK(keys.front() == "anchor");
  CHECK(keys.back() == "base/steps");
  reset_state(fresh);
  CHECK(same_bits<T>(fresh.anchor(), vec<T>({1, 2})));
}

TEST_CASE_TEMPLATE("FedProx under LocalSgd pulls each worker towards the last average (by hand)", T, float, double) {
  // Worker r: f_r(x) = (x - c_r)^2 / 2, c = (0, 4); Sgd lr 0.5, mu 1, H 2, start x = 1.
  // Round 1 (anchor 1): worker 0: g' = 1 -> x = 0.5; g' = 0.5 + (0.5 - 1) = 0 -> 0.5.
  //                     worker 1: g' = -3 -> 2.5;   g' = -1.5 + (2.5 - 1) = 0 -> 2.5.  Average 1.5.
  // Round 2 (anchor 1.5): worker 0: 0.75, 0.75; worker 1: 2.75, 2.75. Average 1.75.
  // (mu = 0: worker 0 1 -> 0.5 -> 0.25, worker 1 1 -> 2.5 -> 3.25, average 1.75 after round 1.)
  const double c[2] = {0, 4};
  auto trajectory = [&](double mu) {
    std::vector<std::vector<double>> xs(2);
    std::vector<double> anchors(2);
    sim::run({.workers = 2}, [&](sim::Comm& comm) {
      LocalSgd opt(FedProx(Sgd<T>({.lr = 0.5}), {.mu = mu}), comm, {.H = 2});
      Vector<T> x = Vector<T>::Constant(1, T(comm.rank() == 0 ? 1 : 9));  // start: worker 0's point
      opt.start(x);
      for (int t = 0; t < 4; ++t) {
        opt.step(x, Vector<T>::Constant(1, x[0] - T(c[comm.rank()])));
        xs[std::size_t(comm.rank())].push_back(double(x[0]));
      }
      anchors[std::size_t(comm.rank())] = double(opt.base().anchor()[0]);
    });
    return std::pair{xs, anchors};
  };
  const auto [xs, anchors] = trajectory(1.0);
  CHECK(xs[0] == std::vector<double>{0.5, 1.5, 0.75, 1.75});  // after steps 2 and 4: the average
  CHECK(xs[1] == std::vector<double>{2.5, 1.5, 2.75, 1.75});
  CHECK(anchors == std::vector<double>{1.75, 1.75});
  // mu = 0, round 2 from 1.75: worker 0 -> 0.875 -> 0.4375, worker 1 -> 2.875 -> 3.4375.
  const auto plain = trajectory(0.0).first;
  CHECK(plain[0] == std::vector<double>{0.5, 1.75, 0.875, 1.9375});
  CHECK(plain[1] == std::vector<double>{2.5, 1.75, 2.875, 1.9375});
}

TEST_CASE("a NaN or an infinity reaches the base as it is: the base's policy judges it") {
  Vector<float> g = vec<float>({3, 0, std::nan(""), 4});
  Vector<float> x = Vector<float>::Ones(4);
  ClipGradNorm clip(Sgd<float>({.lr = 0.1}), {.max_norm = 1.0});
  CHECK_THROWS_WITH_AS(clip.step(x, g),
                       doctest::Contains("slowmo::Sgd::step: gradient[2] = nan at step 1 (1-based)"),
                       non_finite_error);
  CHECK((x.array() == 1.0f).all());
  CHECK(clip.steps() == 0);
  ClipGradValue value(Sgd<float>({.lr = 0.1}), {.threshold = 1.0});
  CHECK_THROWS_WITH_AS(value.step(x, g), doctest::Contains("gradient[2] = nan"), non_finite_error);
  g[2] = -std::numeric_limits<float>::infinity();  // not clipped to -1: the base sees it
  CHECK_THROWS_WITH_AS(value.step(x, g), doctest::Contains("gradient[2] = -inf"), non_finite_error);
  FedProx prox(Sgd<float>({.lr = 0.1}), {.mu = 0.5});
  g[2] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(prox.step(x, g), doctest::Contains("gradient[2] = inf"), non_finite_error);
  CHECK(prox.anchor().size() == 0);  // the refused first step left no anchor behind
  ClipGradNorm inf_norm(Sgd<float>({.lr = 0.1}), {.max_norm = 1.0, .norm_type = inf});
  CHECK_THROWS_WITH_AS(inf_norm.step(x, g), doctest::Contains("gradient[2] = inf"), non_finite_error);
  // skip: the step counts, nothing moves
  ClipGradNorm skipping(Sgd<float>({.lr = 0.1, .non_finite = NonFinite::skip}), {.max_norm = 1.0});
  skipping.step(x, g);
  CHECK(skipping.steps() == 1);
  CHECK((x.array() == 1.0f).all());
}

TEST_CASE("modifiers check sizes and name bad options with their value") {
  CHECK_THROWS_WITH_AS(ClipGradNorm(Sgd<float>(), {.max_norm = 0}),
                       "slowmo::ClipGradNorm: option 'max_norm' = 0 is invalid: must be > 0 (infinity: no clipping)",
                       invalid_option);
  CHECK_THROWS_WITH_AS(ClipGradNorm(Sgd<float>(), {.max_norm = std::nan("")}),
                       doctest::Contains("option 'max_norm' = nan is invalid"), invalid_option);
  CHECK_THROWS_WITH_AS(ClipGradNorm(Sgd<float>(), {.norm_type = 1}),
                       "slowmo::ClipGradNorm: option 'norm_type' = 1 is invalid: must be 2 or infinity",
                       invalid_option);
  CHECK_THROWS_WITH_AS(ClipGradValue(Sgd<float>(), {.threshold = -0.5}),
                       "slowmo::ClipGradValue: option 'threshold' = -0.5 is invalid: must be > 0 (infinity: no "
                       "clipping)",
                       invalid_option);
  CHECK_THROWS_WITH_AS(FedProx(Sgd<double>(), {.mu = -1}),
                       "slowmo::FedProx: option 'mu' = -1 is invalid: must be finite and >= 0", invalid_option);
  CHECK_THROWS_WITH_AS(FedProx(Sgd<double>(), {.mu = inf}),
                       "slowmo::FedProx: option 'mu' = inf is invalid: must be finite and >= 0", invalid_option);
  FedProx prox(Sgd<double>(), {.mu = 0.1});
  Vector<double> x = Vector<double>::Zero(3), g = Vector<double>::Ones(3), y = Vector<double>::Zero(4);
  CHECK_THROWS_WITH_AS(prox.step(x, y), "slowmo::FedProx::step: gradient size 4 does not match parameter size 3",
                       size_mismatch);
  prox.step(x, g);
  CHECK_THROWS_AS(prox.step(y, y), size_mismatch);  // the anchor has 3 elements
  CHECK_THROWS_AS(prox.start(x), usage_error);      // start after a step
}

TEST_CASE("modifiers model Optimizer, nest and forward the base's hooks") {
  static_assert(Optimizer<ClipGradNorm<Adam<float>>> && Optimizer<ClipGradValue<Sgd<double>>>);
  static_assert(Optimizer<FedProx<Lookahead<Nesterov<float>>>>);
  static_assert(Optimizer<LocalSgd<FedProx<Sgd<float>>, sim::Comm>>);
  static_assert(Optimizer<SlowMo<ClipGradNorm<AdamW<float>>, sim::Comm>>);
  ClipGradNorm opt(FedProx(AdamW<float, schedule::Cosine>({.lr = 0.1}, {.total_steps = 10}), {.mu = 0.1}));
  CHECK(opt.next_lr() == 0.1f);
  CHECK(*slowmo::next_lr(opt) == doctest::Approx(0.1));
  std::vector<std::string> structure;
  opt.visit_structure([&](const StateKey& k, const auto&) { structure.push_back(k.path()); });
  CHECK(structure.front() == "optimizer");
  CHECK(structure[1] == "base/optimizer");
  CHECK(structure[2] == "base/base/optimizer");
}
