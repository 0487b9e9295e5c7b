// The Optimizer concept accepts every shipped optimizer and rejects what lacks a piece.
// (tests/compile_fail checks the wording of the diagnostics.)
#include <doctest/doctest.h>

#include <type_traits>

#include <slowmo/slowmo.hpp>

namespace {

struct Complete {
  using scalar_type = double;
  void step(slowmo::VectorRef<double>, slowmo::ConstVectorRef<double>) {}
  double last_lr() const { return 0; }
  std::int64_t steps() const { return 0; }
  template <class V>
  void visit_state(V&&, const slowmo::StateScope* = nullptr) const {}
};
struct NoScalarType {
  void step(slowmo::VectorRef<double>, slowmo::ConstVectorRef<double>) {}
  double last_lr() const { return 0; }
  std::int64_t steps() const { return 0; }
  template <class V>
  void visit_state(V&&, const slowmo::StateScope* = nullptr) const {}
};
struct NoLastLr {
  using scalar_type = double;
  void step(slowmo::VectorRef<double>, slowmo::ConstVectorRef<double>) {}
  std::int64_t steps() const { return 0; }
  template <class V>
  void visit_state(V&&, const slowmo::StateScope* = nullptr) const {}
};
struct WrongStepScalar {
  using scalar_type = double;
  void step(slowmo::VectorRef<float>, slowmo::ConstVectorRef<float>) {}
  double last_lr() const { return 0; }
  std::int64_t steps() const { return 0; }
  template <class V>
  void visit_state(V&&, const slowmo::StateScope* = nullptr) const {}
};
// Both pass the old concept and fail inside the first combinator that uses them.
struct VisitWithoutScope {  // combinators call visit_state(v, &scope)
  using scalar_type = double;
  void step(slowmo::VectorRef<double>, slowmo::ConstVectorRef<double>) {}
  double last_lr() const { return 0; }
  std::int64_t steps() const { return 0; }
  template <class V>
  void visit_state(V&&) const {}
};
struct StepOnVectors {  // combinators pass views (Eigen::Ref), not Vector&
  using scalar_type = double;
  void step(Eigen::VectorXd&, const Eigen::VectorXd&) {}
  double last_lr() const { return 0; }
  std::int64_t steps() const { return 0; }
  template <class V>
  void visit_state(V&&, const slowmo::StateScope* = nullptr) const {}
};
// Generic hooks are fine: whatever the combinators pass, they accept.
struct Generic {
  using scalar_type = float;
  template <class X, class G>
  void step(X&&, const G&) {}
  float last_lr() const { return 0; }
  std::int64_t steps() const { return 0; }
  template <class V>
  void visit_state(V&&) const {}
  template <class V>
  void visit_state(V&&, const slowmo::StateScope*) const {}
};
struct NotCopyable : Complete {
  NotCopyable() = default;
  NotCopyable(const NotCopyable&) = delete;
};

}  // namespace

using namespace slowmo;
using Const = schedule::Constant;

static_assert(Optimizer<Sgd<float>> && Optimizer<Sgd<double>>);
static_assert(Optimizer<Nesterov<float>> && Optimizer<Nesterov<double>>);
static_assert(Optimizer<Adam<float>> && Optimizer<Adam<double>>);
static_assert(Optimizer<AdamW<float>> && Optimizer<AdamW<double>>);
static_assert(Optimizer<Adam<float, schedule::Sequence<schedule::Linear, schedule::Cosine>>>);
static_assert(Optimizer<Lookahead<Sgd<float>>> && Optimizer<Lookahead<AdamW<double>>>);
static_assert(Optimizer<Lookahead<Lookahead<Nesterov<double>>>>);
static_assert(Optimizer<Complete>);
static_assert(check_optimizer<Complete>());

static_assert(!Optimizer<NoScalarType>);
static_assert(!Optimizer<NoLastLr>);
static_assert(!Optimizer<WrongStepScalar>);
static_assert(!Optimizer<NotCopyable>);
static_assert(!Optimizer<VisitWithoutScope>);
static_assert(!Optimizer<StepOnVectors>);
static_assert(Optimizer<Generic>);
static_assert(!Optimizer<int>);
static_assert(!Optimizer<Vector<float>>);

TEST_CASE("Optimizer concept: compile-time checks above") { CHECK(Optimizer<Complete>); }

// `({})` is the obvious spelling of "default options"; it used to be ambiguous with the
// copy and move constructors. The expected values are the README's optimizer table
// (PyTorch's defaults), written here by hand, not read back from the options structs.
TEST_CASE_TEMPLATE("Optimizers: ({}) compiles and means the documented default options", T, float, double) {
  const Sgd<T> sgd({});
  CHECK(sgd.options().lr == 1e-3);
  CHECK(sgd.options().momentum == 0.0);
  CHECK(sgd.options().dampening == 0.0);
  CHECK(sgd.options().weight_decay == 0.0);
  CHECK(!sgd.options().nesterov);
  CHECK(!sgd.options().maximize);
  CHECK(sgd.options().non_finite == NonFinite::raise);

  const Nesterov<T> nesterov({});
  // Nesterov's options are its own options_type (not the Sgd options it sets)
  static_assert(std::is_same_v<std::remove_cvref_t<decltype(nesterov.options())>, NesterovOptions>);
  static_assert(std::is_same_v<typename Nesterov<T>::options_type, NesterovOptions>);
  CHECK(Nesterov<T>({.lr = 0.2, .momentum = 0.8}).options().momentum == 0.8);
  CHECK(nesterov.options().lr == 1e-3);
  CHECK(nesterov.options().momentum == 0.9);
  CHECK(nesterov.options().weight_decay == 0.0);
  CHECK(!nesterov.options().maximize);

  const Adam<T> adam({});
  CHECK(adam.options().lr == 1e-3);
  CHECK(adam.options().betas[0] == 0.9);
  CHECK(adam.options().betas[1] == 0.999);
  CHECK(adam.options().eps == 1e-8);
  CHECK(adam.options().weight_decay == 0.0);
  CHECK(!adam.options().amsgrad);
  CHECK(!adam.options().maximize);

  const AdamW<T> adamw({});
  CHECK(adamw.options().lr == 1e-3);
  CHECK(adamw.options().betas[0] == 0.9);
  CHECK(adamw.options().betas[1] == 0.999);
  CHECK(adamw.options().eps == 1e-8);
  CHECK(adamw.options().weight_decay == 1e-2);
  CHECK(!adamw.options().amsgrad);

  const Lookahead lookahead(Adam<T>({}), {});
  CHECK(lookahead.options().k == 5);
  CHECK(lookahead.options().alpha == 0.5);
  CHECK(lookahead.options().base_state == OnSync::keep);
  CHECK(lookahead.base().options().lr == 1e-3);
  const Lookahead<Sgd<T>> lookahead_sgd(Sgd<T>({}), {});
  CHECK(lookahead_sgd.options().k == 5);

  // The other spellings of the defaults still compile and agree.
  CHECK(Adam<T>().options().weight_decay == 0.0);
  CHECK(AdamW<T>{}.options().weight_decay == 1e-2);
  CHECK(Nesterov<T>().options().momentum == 0.9);
  // ({}) with a schedule: the options, then the schedule.
  CHECK(Sgd<T, schedule::Constant>({}, schedule::Constant{}).options().lr == 1e-3);
  // Copy and move construction are unaffected.
  const Adam<T> copy(adam);
  CHECK(copy.options().eps == 1e-8);
}
