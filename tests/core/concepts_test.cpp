// The Optimizer concept accepts every shipped optimizer and rejects what lacks a piece.
// (tests/compile_fail checks the wording of the diagnostics.)
#include <doctest/doctest.h>

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
  void visit_state(V&&) const {}
};
struct NoLastLr {
  using scalar_type = double;
  void step(slowmo::VectorRef<double>, slowmo::ConstVectorRef<double>) {}
  std::int64_t steps() const { return 0; }
  template <class V>
  void visit_state(V&&) const {}
};
struct WrongStepScalar {
  using scalar_type = double;
  void step(slowmo::VectorRef<float>, slowmo::ConstVectorRef<float>) {}
  double last_lr() const { return 0; }
  std::int64_t steps() const { return 0; }
  template <class V>
  void visit_state(V&&) const {}
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
static_assert(!Optimizer<int>);
static_assert(!Optimizer<Vector<float>>);

TEST_CASE("Optimizer concept: compile-time checks above") { CHECK(Optimizer<Complete>); }
