// Lookahead over a type that has everything an Optimizer needs but step(x, g): the
// compiler must say which requirement is missing.
#include <slowmo/optim/lookahead.hpp>
#include <slowmo/optim/sgd.hpp>

struct NoStep {
  using scalar_type = double;
#ifdef SLOWMO_COMPILE_FAIL_CONTROL
  void step(slowmo::VectorRef<double>, slowmo::ConstVectorRef<double>) {}
#endif
  double last_lr() const { return 0.1; }
  std::int64_t steps() const { return 0; }
  template <class V>
  void visit_state(V&&, const slowmo::StateScope* = nullptr) const {}
};

int main() {
  slowmo::Lookahead<NoStep> opt(NoStep{});
  (void)opt;
}
