// Lookahead over an optimizer of integers: the compiler must ask for float or double.
#include <slowmo/optim/lookahead.hpp>

#ifdef SLOWMO_COMPILE_FAIL_CONTROL
using Scalar = float;
#else
using Scalar = int;
#endif

struct IntOpt {
  using scalar_type = Scalar;
  void step(slowmo::VectorRef<float>, slowmo::ConstVectorRef<float>) {}
  float last_lr() const { return 0.1f; }
  std::int64_t steps() const { return 0; }
  template <class V>
  void visit_state(V&&, const slowmo::StateScope* = nullptr) const {}
};

int main() {
  slowmo::Lookahead<IntOpt> opt(IntOpt{});
  (void)opt;
}
