// problems::Mlp: the layout of the flat parameter vector, a hand-computed 2-3-2 network, the
// loss against a naive per-sample implementation, gradients against central finite
// differences (ReLU and tanh, with and without L2, up to three hidden layers, in chunks), float
// against double, the Kaiming-uniform initialisation, and bad options and inputs.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <slowmo/problems/mlp.hpp>
#include <string>
#include <utility>
#include <vector>

namespace {

using slowmo::Vector;
using slowmo::problems::Dataset;
using slowmo::problems::Activation;
using slowmo::problems::Mlp;
using Index = Eigen::Index;
namespace pb = slowmo::problems;

/// `n` samples of `features` standard normal features, labels uniform in [0, classes).
Dataset random_dataset(Index features, int classes, Index n, std::uint64_t seed) {
  Dataset d{.X = Eigen::MatrixXf(features, n),
            .y = std::vector<std::int32_t>(std::size_t(n)),
            .classes = classes,
            .name = "random"};
  const std::uint64_t key = pb::stream_key(seed, 99, 0);
  for (Index i = 0; i < d.X.size(); ++i) d.X.data()[i] = float(pb::normal(key, std::uint64_t(i)));
  for (Index j = 0; j < n; ++j) d.y[std::size_t(j)] = std::int32_t(pb::uniform01(key ^ 1, std::uint64_t(j)) * classes);
  return d;
}

/// The network's initial parameters plus N(0, 0.3^2) noise on every entry (so that the
/// biases are not zero).
Vector<double> random_point(const Mlp& m, std::uint64_t seed) {
  Vector<double> x = m.init<double>(seed);
  const std::uint64_t key = pb::stream_key(seed, 77, 1);
  for (Index i = 0; i < x.size(); ++i) x[i] += 0.3 * pb::normal(key, std::uint64_t(i));
  return x;
}

std::vector<Index> random_samples(Index n, std::size_t count, std::uint64_t seed) {
  std::vector<Index> s(count);
  const std::uint64_t key = pb::stream_key(seed, 55, 2);
  for (std::size_t k = 0; k < count; ++k) s[k] = Index(pb::uniform01(key, k) * double(n));
  return s;
}

/// A naive reference, written from the definition without the model's code: per sample, per
/// unit loops in double over the layout "W_l column-major (out x in), then b_l, layer after
/// layer". Also returns the smallest |pre-activation| of a hidden unit (the distance to a
/// ReLU kink).
struct Reference {
  double loss = 0;
  double nearest_kink = std::numeric_limits<double>::infinity();
};
Reference reference(const std::vector<Index>& widths, Activation act, double l2, const Vector<double>& x,
                    const Dataset& d, const std::vector<Index>& samples) {
  Reference r;
  const std::size_t L = widths.size() - 1;
  for (Index s : samples) {
    std::vector<double> a(static_cast<std::size_t>(widths[0]));
    for (std::size_t j = 0; j < a.size(); ++j) a[j] = double(d.X(Index(j), s));
    Index offset = 0;
    for (std::size_t l = 0; l < L; ++l) {
      const Index in = widths[l], out = widths[l + 1];
      std::vector<double> z(static_cast<std::size_t>(out));
      for (Index i = 0; i < out; ++i) {
        double v = x[offset + out * in + i];  // bias
        for (Index j = 0; j < in; ++j) v += x[offset + j * out + i] * a[std::size_t(j)];
        z[std::size_t(i)] = v;
      }
      offset += out * in + out;
      if (l + 1 < L)
        for (double& v : z) {
          r.nearest_kink = std::min(r.nearest_kink, std::abs(v));
          v = act == Activation::relu ? std::max(v, 0.0) : std::tanh(v);
        }
      a = std::move(z);
    }
    double top = a[0];
    for (double v : a) top = std::max(top, v);
    double sum = 0;
    for (double v : a) sum += std::exp(v - top);
    r.loss += std::log(sum) + top - a[std::size_t(d.y[std::size_t(s)])];
  }
  r.loss = r.loss / double(samples.size()) + 0.5 * l2 * x.squaredNorm();
  return r;
}

/// max_j |g_j - fd_j| / max_j |g_j|, fd by central differences of the model's loss.
double fd_error(const Mlp& m, const Vector<double>& x, const Dataset& d, const std::vector<Index>& samples,
                Mlp::Workspace<double>& ws) {
  Vector<double> g(m.dim());
  m.loss_and_gradient(x, d, samples, ws, g);
  const double h = 1e-6;
  double worst = 0;
  for (Index j = 0; j < x.size(); ++j) {
    Vector<double> a = x, b = x;
    a[j] += h;
    b[j] -= h;
    const double fd = (m.loss(a, d, samples, ws) - m.loss(b, d, samples, ws)) / (2 * h);
    worst = std::max(worst, std::abs(fd - g[j]));
  }
  return worst / g.cwiseAbs().maxCoeff();
}

}  // namespace

TEST_CASE("Mlp: one flat vector, layer after layer, W_l column-major then b_l") {
  const Mlp m({.widths = {5, 7, 4, 3}});
  CHECK(m.layers() == 3);
  CHECK(m.inputs() == 5);
  CHECK(m.classes() == 3);
  CHECK(m.dim() == 7 * 5 + 7 + 4 * 7 + 4 + 3 * 4 + 3);
  CHECK(m.weights_offset(0) == 0);
  CHECK(m.bias_offset(0) == 35);
  CHECK(m.weights_offset(1) == 42);
  CHECK(m.bias_offset(1) == 70);
  CHECK(m.weights_offset(2) == 74);
  CHECK(m.bias_offset(2) == 86);
  Vector<float> x = Vector<float>::Zero(m.dim());
  auto W1 = m.weights(x, 1);
  static_assert(!std::is_const_v<std::remove_pointer_t<decltype(W1.data())>>);
  CHECK(W1.rows() == 4);
  CHECK(W1.cols() == 7);
  W1(2, 3) = 1.5f;  // column 3, row 2 of a 4-row matrix: entry 3 * 4 + 2 of the layer
  CHECK(x[42 + 3 * 4 + 2] == 1.5f);
  m.bias(x, 2)[1] = -2.0f;
  CHECK(x[86 + 1] == -2.0f);
  // const vectors give const views; any contiguous vector works (here a Map)
  const Vector<float>& cx = x;
  auto cW = m.weights(cx, 1);
  static_assert(std::is_const_v<std::remove_pointer_t<decltype(cW.data())>>);
  CHECK(cW(2, 3) == 1.5f);
  Eigen::Map<const Vector<float>> view(x.data(), x.size());
  CHECK(m.bias(view, 2)[1] == -2.0f);
  CHECK(m.weights(view, 0).data() == x.data());
  // sizes and layers are checked
  Vector<float> short_x(10);
  CHECK_THROWS_WITH_AS(m.weights(short_x, 0), doctest::Contains("a vector of size 10 for a network of dimension 89"),
                       slowmo::size_mismatch);
  CHECK_THROWS_WITH_AS(m.bias(x, 3), doctest::Contains("bias: layer 3 is out of range [0, 3)"), slowmo::size_mismatch);
  CHECK_THROWS_AS(m.weights(x, -1), slowmo::size_mismatch);
}

TEST_CASE("Mlp: a 2-3-2 ReLU network on two samples, by hand") {
  // W1 = [1 0; 0 1; 1 -1], b1 = (0, 0.5, -1); W2 = [1 -1 2; 0 1 1], b2 = (0.5, 0); l2 = 0.1.
  const Mlp m({.widths = {2, 3, 2}, .activation = Activation::relu, .l2 = 0.1});
  Vector<double> x(m.dim());
  CHECK(x.size() == 6 + 3 + 6 + 2);
  m.weights(x, 0) << 1, 0, 0, 1, 1, -1;
  m.bias(x, 0) << 0, 0.5, -1;
  m.weights(x, 1) << 1, -1, 2, 0, 1, 1;
  m.bias(x, 1) << 0.5, 0;
  // Sample 1: a = (1, 2), label 0. z1 = (1, 2 + 0.5, 1 - 2 - 1) = (1, 2.5, -2), h = (1, 2.5, 0),
  //   z2 = (1 - 2.5 + 0 + 0.5, 2.5 + 0) = (-1, 2.5):
  //   loss = log(e^-1 + e^2.5) - (-1) = log(1 + e^3.5) = 3.5297515...
  // Sample 2: a = (-1, 1), label 1. z1 = (-1, 1.5, -1 - 1 - 1) = (-1, 1.5, -3), h = (0, 1.5, 0),
  //   z2 = (-1.5 + 0.5, 1.5) = (-1, 1.5): loss = log(e^-1 + e^1.5) - 1.5 = log(1 + e^-2.5) = 0.0789...
  // |x|^2 = (1 + 1 + 1 + 1) + (0.25 + 1) + (1 + 1 + 4 + 1 + 1) + 0.25 = 13.5, l2/2 |x|^2 = 0.675.
  const Dataset d{.X = (Eigen::MatrixXf(2, 2) << 1, -1, 2, 1).finished(), .y = {0, 1}, .classes = 2, .name = "hand"};
  const double expected = 0.5 * (std::log1p(std::exp(3.5)) + std::log1p(std::exp(-2.5))) + 0.675;
  CHECK(expected == doctest::Approx(0.5 * (3.5297515 + 0.0789) + 0.675).epsilon(1e-4));  // the comment's figures
  const std::vector<Index> both = {0, 1};
  auto ws = m.workspace<double>(2);
  CHECK(std::abs(m.loss(x, d, both, ws) - expected) < 1e-12);
  Vector<double> g(m.dim());
  CHECK(std::abs(m.loss_and_gradient(x, d, both, ws, g) - expected) < 1e-12);
  // The output delta is softmax - one-hot: sample 1 (-s(3.5), s(3.5)), sample 2 (s(-2.5), -s(-2.5)),
  // s the logistic sigmoid (softmax of two logits is s of their difference).
  auto s = [](double t) { return 1 / (1 + std::exp(-t)); };
  const double d1 = s(3.5), d2 = s(-2.5);
  // db2 = mean of the deltas + l2 b2
  CHECK(std::abs(m.bias(g, 1)[0] - ((-d1 + d2) / 2 + 0.1 * 0.5)) < 1e-12);
  CHECK(std::abs(m.bias(g, 1)[1] - ((d1 - d2) / 2 + 0.0)) < 1e-12);
  // dW2 = mean of delta h^T + l2 W2, h1 = (1, 2.5, 0), h2 = (0, 1.5, 0)
  const double dW2[2][3] = {{(-d1 * 1 + d2 * 0) / 2 + 0.1, (-d1 * 2.5 + d2 * 1.5) / 2 - 0.1, 0 + 0.2},
                            {(d1 * 1 - d2 * 0) / 2 + 0.0, (d1 * 2.5 - d2 * 1.5) / 2 + 0.1, 0 + 0.1}};
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) CHECK(std::abs(m.weights(g, 1)(i, j) - dW2[i][j]) < 1e-12);
  // Unit 3 of the hidden layer is dead on both samples (z = -2, -3): only the L2 term reaches it.
  CHECK(m.weights(g, 0)(2, 0) == doctest::Approx(0.1 * 1).epsilon(1e-15));
  CHECK(m.weights(g, 0)(2, 1) == doctest::Approx(0.1 * -1).epsilon(1e-15));
  CHECK(m.bias(g, 0)[2] == doctest::Approx(0.1 * -1).epsilon(1e-15));
  // Unit 1 is alive on sample 1 only (z = 1, -1): dz = (W2^T delta)_1 = 1 * (-d1) + 0 * d1 = -d1,
  // so db1_1 = -d1 / 2 + 0 and dW1(0, :) = (-d1 * (1, 2)) / 2 + 0.1 (1, 0).
  CHECK(std::abs(m.bias(g, 0)[0] - (-d1 / 2)) < 1e-12);
  CHECK(std::abs(m.weights(g, 0)(0, 0) - (-d1 / 2 + 0.1)) < 1e-12);
  CHECK(std::abs(m.weights(g, 0)(0, 1) - (-d1)) < 1e-12);
  // Predictions: both samples score class 1 higher; only sample 2's label is 1.
  for (Index capacity : {1, 2}) {
    auto wsd = m.workspace<double>(capacity);
    CHECK(m.accuracy(x, d, wsd) == 0.5);
    std::vector<std::int32_t> predicted(2);
    m.predict(x, d, wsd, predicted);
    CHECK(predicted == std::vector<std::int32_t>{1, 1});
    CHECK(std::abs(m.loss(x, d, wsd) - expected) < 1e-12);
    const Vector<float> xf = x.cast<float>();
    auto wsf = m.workspace<float>(capacity);
    CHECK(m.accuracy(xf, d, wsf) == 0.5);
    CHECK(m.loss(xf, d, wsf) == doctest::Approx(expected).epsilon(1e-6));
  }
}

TEST_CASE("Mlp: the loss equals a naive per-sample implementation, in chunks of any size") {
  for (Activation act : {Activation::relu, Activation::tanh})
    for (const std::vector<Index>& widths : std::vector<std::vector<Index>>{{6, 4}, {5, 7, 4, 3}, {6, 8, 8, 5, 4}}) {
      CAPTURE(widths.size());
      CAPTURE(slowmo::problems::to_string(act));
      const Mlp m({.widths = widths, .activation = act, .l2 = 0.03});
      const Dataset d = random_dataset(widths.front(), int(widths.back()), 50, 3);
      const Vector<double> x = random_point(m, 11);
      const std::vector<Index> samples = random_samples(d.size(), 23, 5);
      const double want = reference(widths, act, 0.03, x, d, samples).loss;
      for (Index capacity : {1, 5, 23, 64}) {
        auto ws = m.workspace<double>(capacity);
        CHECK(std::abs(m.loss(x, d, samples, ws) - want) < 1e-12 * std::abs(want));
      }
      std::vector<Index> all(std::size_t(d.size()));
      for (std::size_t k = 0; k < all.size(); ++k) all[k] = Index(k);
      auto ws = m.workspace<double>(7);
      CHECK(std::abs(m.loss(x, d, ws) - reference(widths, act, 0.03, x, d, all).loss) < 1e-12 * want);
    }
}

TEST_CASE("Mlp: gradients match central finite differences (ReLU, tanh; with and without L2; deeper nets)") {
  int checked = 0;
  for (Activation act : {Activation::relu, Activation::tanh})
    for (double l2 : {0.0, 0.01})
      for (const std::vector<Index>& widths :
           std::vector<std::vector<Index>>{{5, 3}, {5, 7, 4, 3}, {6, 8, 8, 4}, {4, 6, 5, 6, 3}}) {
        CAPTURE(slowmo::problems::to_string(act));
        CAPTURE(l2);
        CAPTURE(widths.size());
        const Mlp m({.widths = widths, .activation = act, .l2 = l2});
        const Dataset d = random_dataset(widths.front(), int(widths.back()), 40, 7);
        auto ws = m.workspace<double>(4);  // 11 samples: chunks of 4, 4 and 3
        int points = 0;
        for (std::uint64_t seed = 1; points < 3 && seed < 20; ++seed) {
          const Vector<double> x = random_point(m, seed);
          const std::vector<Index> samples = random_samples(d.size(), 11, seed);
          // A ReLU kink within a step h of the point would break the difference: keep points
          // whose hidden pre-activations are all at least 1e-4 from 0 (with h = 1e-6 and
          // inputs of order 1, a step moves them by about 1e-6).
          if (act == Activation::relu && reference(widths, act, l2, x, d, samples).nearest_kink < 1e-4) continue;
          CHECK(fd_error(m, x, d, samples, ws) < 1e-6);
          ++points;
          ++checked;
        }
        CHECK(points == 3);
      }
  CHECK(checked == 2 * 2 * 4 * 3);
}

TEST_CASE("Mlp: float and double agree to float's rounding") {
  for (Activation act : {Activation::relu, Activation::tanh}) {
    const Mlp m({.widths = {20, 16, 12, 5}, .activation = act, .l2 = 1e-3});
    const Dataset d = random_dataset(20, 5, 200, 4);
    const Vector<double> xd = random_point(m, 3);
    const Vector<float> xf = xd.cast<float>();
    const std::vector<Index> samples = random_samples(d.size(), 64, 9);
    auto wsd = m.workspace<double>(32);
    auto wsf = m.workspace<float>(32);
    Vector<double> gd(m.dim());
    Vector<float> gf(m.dim());
    const double fd = m.loss_and_gradient(xd, d, samples, wsd, gd);
    const double ff = m.loss_and_gradient(xf, d, samples, wsf, gf);
    // xf is xd rounded: the double loss at xf itself, to compare computations, not points.
    const Vector<double> xfd = xf.cast<double>();
    const double at_xf = m.loss_and_gradient(xfd, d, samples, wsd, gd);
    CHECK(std::abs(fd - at_xf) < 1e-5 * fd);
    CHECK(std::abs(ff - at_xf) < 1e-6 * at_xf);
    CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() < 1e-5 * gd.cwiseAbs().maxCoeff());
    CHECK(m.accuracy(xf, d, wsf) == m.accuracy(xfd, d, wsd));
  }
}

TEST_CASE("Mlp: Kaiming-uniform initialisation, reproducible from the seed") {
  for (Activation act : {Activation::relu, Activation::tanh}) {
    const Mlp m({.widths = {784, 128, 10}, .activation = act});
    // He et al.: Var W = gain^2 / fan_in; uniform on (-b, b) has variance b^2 / 3, so
    // b = sqrt(3 gain^2 / fan_in): ReLU (gain^2 = 2) sqrt(6 / fan_in), tanh (gain 5/3) sqrt(25 / (3 fan_in)).
    const double want0 = act == Activation::relu ? std::sqrt(6.0 / 784) : std::sqrt(25.0 / (3 * 784));
    const double want1 = act == Activation::relu ? std::sqrt(6.0 / 128) : std::sqrt(25.0 / (3 * 128));
    CHECK(m.init_bound(0) == doctest::Approx(want0).epsilon(1e-15));
    CHECK(m.init_bound(1) == doctest::Approx(want1).epsilon(1e-15));
    const Vector<double> x = m.init<double>(42);
    for (int l = 0; l < 2; ++l) {
      const double b = m.init_bound(l);
      const auto W = m.weights(x, l);
      CHECK(W.cwiseAbs().maxCoeff() < b);
      CHECK(W.cwiseAbs().maxCoeff() > 0.99 * b);  // and the bound is used
      CHECK(m.bias(x, l).isZero(0));
      const double n = double(W.size()), mean = W.mean(), var = W.array().square().mean();
      // mean 0 with sd b / sqrt(3 n); E w^2 = b^2 / 3 with sd b^2 sqrt(4 / (45 n)): 5 sd
      CHECK(std::abs(mean) < 5 * b / std::sqrt(3 * n));
      CHECK(std::abs(var - b * b / 3) < 5 * b * b * std::sqrt(4 / (45 * n)));
    }
    CHECK(m.init<double>(42) == x);
    CHECK(m.init<double>(43) != x);
    CHECK(m.init<float>(42) == x.cast<float>());  // the same numbers, rounded
    const Vector<float> xf = m.init<float>(42);
    for (int l = 0; l < 2; ++l) CHECK(m.weights(xf, l).cwiseAbs().maxCoeff() <= float(m.init_bound(l)));
  }
}

TEST_CASE("Mlp: bad options name the field; bad inputs throw and write nothing") {
  using slowmo::invalid_option;
  CHECK_THROWS_WITH_AS(Mlp({.widths = {}}), doctest::Contains("option 'widths' = {} is invalid: needs at least 2"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(Mlp({.widths = {784}}), doctest::Contains("option 'widths' = {784}"), invalid_option);
  CHECK_THROWS_WITH_AS(Mlp({.widths = {5, 0, 3}}), doctest::Contains("entry 1 is 0; every width must be >= 1"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(Mlp({.widths = {5, 1}}), doctest::Contains("the classes) must be >= 2"), invalid_option);
  CHECK_THROWS_WITH_AS(Mlp({.widths = {5, 3}, .l2 = -1}), doctest::Contains("option 'l2' = -1 is invalid"),
                       invalid_option);
  CHECK_THROWS_WITH_AS(Mlp({.widths = {5, 3}, .l2 = std::nan("")}), doctest::Contains("option 'l2'"), invalid_option);
  CHECK_THROWS_WITH_AS(Mlp({.widths = {5, 3}, .activation = Activation(7)}),
                       doctest::Contains("option 'activation' = 7"), invalid_option);
  CHECK_THROWS_WITH_AS(Mlp({.widths = {Index(1) << 30, Index(1) << 30, 2}}), doctest::Contains("more than 2^40"),
                       invalid_option);

  const Mlp m({.widths = {4, 5, 3}});
  CHECK_THROWS_WITH_AS(m.workspace<float>(0), doctest::Contains("option 'capacity' = 0"), invalid_option);
  const Dataset d = random_dataset(4, 3, 10, 1);
  auto ws = m.workspace<float>(4);
  const Vector<float> x = m.init<float>(1);
  Vector<float> g = Vector<float>::Constant(m.dim(), 42.0f);
  const Vector<float> untouched = g;
  auto throws = [&](auto&& call, const char* message) {
    CHECK_THROWS_WITH_AS(call(), doctest::Contains(message), slowmo::size_mismatch);
    CHECK(g == untouched);
  };
  const std::vector<Index> ok = {0, 3, 9};
  throws(
      [&] {
        m.loss_and_gradient(x, d, std::vector<Index>{0, 10}, ws, g);
      },
      "sample index 10 (entry 1) is out of range [0, 10) of random");
  throws([&] { m.loss_and_gradient(x, d, std::vector<Index>{-1}, ws, g); }, "sample index -1");
  throws([&] { m.loss_and_gradient(x, d, std::vector<Index>{}, ws, g); }, "no samples");
  Vector<float> x_short(3), g_short(3);
  throws([&] { m.loss_and_gradient(x_short, d, ok, ws, g); },
         "parameter vector of size 3 for a network of dimension 43");
  throws([&] { m.loss_and_gradient(x, d, ok, ws, g_short); }, "gradient vector of size 3");
  Dataset bad_label = d;
  bad_label.y[3] = 3;
  throws([&] { m.loss_and_gradient(x, bad_label, ok, ws, g); },
         "label 3 of sample 3 of random is out of range [0, 3) of the network's classes");
  const Dataset wide = random_dataset(5, 3, 10, 1);
  throws([&] { m.loss_and_gradient(x, wide, ok, ws, g); }, "random has 5 features per sample; the network takes 4");
  const Mlp other({.widths = {4, 6, 3}});
  auto other_ws = other.workspace<float>(4);
  throws([&] { m.loss_and_gradient(x, d, ok, other_ws, g); },
         "a workspace made for widths {4, 6, 3} used with a network of widths {4, 5, 3}");
  std::vector<std::int32_t> predicted(9);
  CHECK_THROWS_WITH_AS(m.predict(x, d, ws, predicted), doctest::Contains("room for 9 predictions for the 10 samples"),
                       slowmo::size_mismatch);
  CHECK_THROWS_WITH_AS(m.loss(x, bad_label, ws), doctest::Contains("label 3 of sample 3"), slowmo::size_mismatch);
  // and after all that the workspace still works
  CHECK(std::isfinite(m.loss_and_gradient(x, d, ok, ws, g)));
}
