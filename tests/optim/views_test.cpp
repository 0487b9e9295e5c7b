// Every optimizer updates any contiguous dense vector in place: VectorX, Map over user
// memory, Ref, and a segment of a larger vector; the result is the same in each case.
#include <doctest/doctest.h>

#include <array>

#include <slowmo/core/communicator.hpp>
#include <slowmo/optim/adam.hpp>
#include <slowmo/optim/lookahead.hpp>
#include <slowmo/optim/sgd.hpp>

namespace {

using slowmo::Vector;

template <class Opt>
void same_result_through_every_view(const Opt& prototype) {
  using T = typename Opt::scalar_type;
  const Eigen::Index n = 11;
  const Vector<T> x0 = Vector<T>::LinSpaced(n, -1, 1);
  const Vector<T> g = Vector<T>::LinSpaced(n, 2, -3);

  Vector<T> owned = x0;
  Opt a = prototype;
  for (int t = 0; t < 3; ++t) a.step(owned, g);

  std::array<T, 11> storage{};
  Eigen::Map<Vector<T>> mapped(storage.data(), n);
  mapped = x0;
  Opt b = prototype;
  for (int t = 0; t < 3; ++t) b.step(mapped, Eigen::Map<const Vector<T>>(g.data(), n));
  CHECK(mapped == owned);

  Vector<T> big = Vector<T>::Constant(n + 7, T(42));
  big.segment(3, n) = x0;
  Opt c = prototype;
  for (int t = 0; t < 3; ++t) c.step(big.segment(3, n), g);
  CHECK(big.segment(3, n) == owned);
  CHECK(big.head(3).isConstant(T(42)));  // neighbours untouched
  CHECK(big.tail(4).isConstant(T(42)));

  Vector<T> through_ref = x0;
  slowmo::VectorRef<T> r(through_ref);
  Opt d = prototype;
  for (int t = 0; t < 3; ++t) d.step(r, slowmo::ConstVectorRef<T>(g));
  CHECK(through_ref == owned);
}

}  // namespace

TEST_CASE_TEMPLATE("views: Sgd, Nesterov, Adam, AdamW, Lookahead", T, float, double) {
  same_result_through_every_view(slowmo::Sgd<T>({.lr = 0.1, .momentum = 0.5}));
  same_result_through_every_view(slowmo::Nesterov<T>({.lr = 0.1}));
  same_result_through_every_view(slowmo::Adam<T>({.lr = 0.1, .amsgrad = true}));
  same_result_through_every_view(slowmo::AdamW<T>({.lr = 0.1}));
  same_result_through_every_view(slowmo::Lookahead(slowmo::Sgd<T>({.lr = 0.1}), {.k = 2}));
}

TEST_CASE("as_span views contiguous vectors and refuses a strided one") {
  Vector<float> v = Vector<float>::LinSpaced(8, 0, 7);
  const auto whole = slowmo::as_span(v);
  CHECK(whole.data() == v.data());
  CHECK(whole.size() == 8);
  const auto part = slowmo::as_span(v.segment(2, 3));
  CHECK(part.data() == v.data() + 2);
  CHECK(part.size() == 3);
  // A Map whose stride is known only at run time: accepted when it is 1, refused otherwise
  // (a span over it would silently read the wrong elements).
  Eigen::Map<Vector<float>, 0, Eigen::InnerStride<>> unit(v.data(), 8, Eigen::InnerStride<>(1));
  CHECK(slowmo::as_span(unit).size() == 8);
  Eigen::Map<Vector<float>, 0, Eigen::InnerStride<>> every_other(v.data(), 4, Eigen::InnerStride<>(2));
  CHECK_THROWS_WITH_AS(slowmo::as_span(every_other), doctest::Contains("inner stride is 2"), std::invalid_argument);
  const Eigen::Map<const Vector<float>, 0, Eigen::InnerStride<>> const_strided(v.data(), 4, Eigen::InnerStride<>(2));
  CHECK_THROWS_AS(slowmo::as_span(const_strided), std::invalid_argument);
}
