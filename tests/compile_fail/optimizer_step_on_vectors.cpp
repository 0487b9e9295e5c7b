// An optimizer whose step takes owning vectors, step(Vector&, const Vector&). Combinators
// pass their base views (ref<T>, const_ref<T>: Eigen::Ref on the host), so check_optimizer
// must reject it and say that step must accept the views (it used to pass the concept and
// fail inside SlowMo::step).
#include <slowmo/comm/single_worker.hpp>
#include <slowmo/distributed/slowmo.hpp>

struct StepOnVectors {
  using scalar_type = double;
#ifdef SLOWMO_COMPILE_FAIL_CONTROL
  void step(slowmo::VectorRef<double>, slowmo::ConstVectorRef<double>) {}
#else
  void step(Eigen::VectorXd&, const Eigen::VectorXd&) {}
#endif
  double last_lr() const { return 0.1; }
  std::int64_t steps() const { return 0; }
  template <class V>
  void visit_state(V&&, const slowmo::StateScope* = nullptr) const {}
};

int main() {
  slowmo::SingleWorker comm;
  slowmo::SlowMo<StepOnVectors, slowmo::SingleWorker> opt(StepOnVectors{}, comm);
  Eigen::VectorXd x = Eigen::VectorXd::Zero(3), g = Eigen::VectorXd::Ones(3);
  opt.start(x);
  opt.step(x, g);
}
