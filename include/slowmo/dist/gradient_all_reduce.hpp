// slowmo/dist/gradient_all_reduce.hpp — GradientAllReduce<Base, Comm>: synchronous
// data-parallel training (AR-SGD, AR-Adam): average the gradients every step.
#pragma once

#include <cstdint>
#include <utility>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"

namespace slowmo {

/// Gradient all-reduce (AR-SGD, AR-Adam, ...): every step averages the gradients over the
/// workers, then the base steps with the average, so all replicas stay identical.
struct GradientAllReduceOptions {
  bool broadcast_initial = true;  ///< first step: every worker starts from worker 0's parameters
};

template <class Base, class Comm>
class GradientAllReduce {
  static_assert(check_optimizer<Base>(), "slowmo::GradientAllReduce<Base, Comm>: Base must model slowmo::Optimizer");
  static_assert(check_communicator<Comm>(),
                "slowmo::GradientAllReduce<Base, Comm>: Comm must model slowmo::Communicator");
  static_assert(space_of_t<Base>::template communicates_with<Comm>,
                "slowmo::GradientAllReduce<Base, Comm>: the base keeps its parameters in a memory space this "
                "communicator cannot read (device memory needs a device communicator such as slowmo::cuda::Nccl)");

 public:
  using scalar_type = typename Base::scalar_type;
  using space_type = space_of_t<Base>;  // buffers and outer updates live where the base's do
  using vector_type = typename space_type::template vector<scalar_type>;
  using ref_type = typename space_type::template ref<scalar_type>;
  using const_ref_type = typename space_type::template const_ref<scalar_type>;
  using options_type = GradientAllReduceOptions;
  using base_type = Base;
  using comm_type = Comm;

  GradientAllReduce(Base base, Comm& comm, GradientAllReduceOptions options = {})
      : options_(options), base_(std::move(base)), comm_(&comm) {}

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes("GradientAllReduce", x.size(), g.size(), grad_.size() > 0 ? grad_.size() : -1);
    if (grad_.size() != g.size()) grad_.resize(g.size());  // scratch: the only allocation
    // The first step is known from the (visited) step count, so a resumed run never repeats it.
    if (base_.steps() == 0 && options_.broadcast_initial) comm_->broadcast(as_span(x), 0);
    grad_ = g;
    comm_->all_reduce(as_span(grad_), ReduceOp::mean);
    base_.step(x, grad_);
  }

  scalar_type last_lr() const { return base_.last_lr(); }
  std::int64_t steps() const { return base_.steps(); }
  const Base& base() const { return base_; }
  Base& base() { return base_; }
  void rebase(const_ref_type x) { slowmo::rebase(base_, x); }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    const StateScope base_scope{"base", scope};
    base_.visit_state(v, &base_scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    const StateScope base_scope{"base", scope};
    base_.visit_state(v, &base_scope);
  }

 private:
  GradientAllReduceOptions options_;
  Base base_;
  Comm* comm_;
  vector_type grad_;
};

}  // namespace slowmo
