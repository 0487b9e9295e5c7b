// Lookahead over a type without visit_state: the compiler must name the missing hook.
#include <slowmo/optim/lookahead.hpp>

struct NoState {
  using scalar_type = float;
  void step(slowmo::VectorRef<float>, slowmo::ConstVectorRef<float>) {}
  float last_lr() const { return 0.1f; }
  std::int64_t steps() const { return 0; }
#ifdef SLOWMO_COMPILE_FAIL_CONTROL
  template <class V>
  void visit_state(V&&, const slowmo::StateScope* = nullptr) const {}
#endif
};

int main() {
  slowmo::Lookahead<NoState> opt(NoState{});
  (void)opt;
}
