// An optimizer whose visit_state takes only the visitor. Combinators call
// visit_state(visitor, &scope) on their base, so check_optimizer must reject it and say
// that the scope argument is missing (it used to pass the concept, and the first use, a
// checkpoint of the combinator, failed deep inside with a long error).
#include <slowmo/comm/single_worker.hpp>
#include <slowmo/core/checkpoint.hpp>
#include <slowmo/distributed/slowmo.hpp>

struct VisitWithoutScope {
  using scalar_type = double;
  void step(slowmo::VectorRef<double>, slowmo::ConstVectorRef<double>) {}
  double last_lr() const { return 0.1; }
  std::int64_t steps() const { return 0; }
#ifdef SLOWMO_COMPILE_FAIL_CONTROL
  template <class V>
  void visit_state(V&&, const slowmo::StateScope* = nullptr) const {}
#else
  template <class V>
  void visit_state(V&&) const {}
#endif
};

int main() {
  slowmo::SingleWorker comm;
  slowmo::SlowMo<VisitWithoutScope, slowmo::SingleWorker> opt(VisitWithoutScope{}, comm);
  slowmo::save_checkpoint(opt, "never_written.ckpt");
}
