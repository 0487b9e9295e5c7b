// slowmo/distributed/gradient_all_reduce.hpp — GradientAllReduce<Base, Comm>: synchronous
// data-parallel training (AR-SGD, AR-Adam): average the gradients every step.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/distributed/detail/sync.hpp"
#include "slowmo/distributed/reduce.hpp"

namespace slowmo {

/// Gradient all-reduce (AR-SGD, AR-Adam, ...): after start(x), every step reduces the
/// gradients over the workers with the reduce policy (the exact mean by default; a compressor
/// with error feedback, as PyTorch's PowerSGD communication hook, from slowmo/compress/), then
/// the base steps with the result, so all replicas stay identical.
struct GradientAllReduceOptions {
  bool broadcast_initial = true;  ///< start(x): every worker takes worker 0's parameters
};

template <class Base, class Comm, class Reduce = reduce::Mean>
class GradientAllReduce {
  static_assert(detail::check_distributed<Base, Comm>() && detail::check_reduce_policy<Reduce, Base, Comm>(),
                "slowmo::GradientAllReduce<Base, Comm, Reduce>: see the message above");

 public:
  using scalar_type = typename Base::scalar_type;
  using space_type = space_of_t<Base>;  // buffers and outer updates live where the base's do
  using vector_type = typename space_type::template vector<scalar_type>;
  using ref_type = typename space_type::template ref<scalar_type>;
  using const_ref_type = typename space_type::template const_ref<scalar_type>;
  using options_type = GradientAllReduceOptions;
  using base_type = Base;
  using comm_type = Comm;
  using reduce_type = Reduce;

  GradientAllReduce(Base base, Comm& comm, GradientAllReduceOptions options = {}, Reduce reduce = Reduce{})
      : options_(options), base_(std::move(base)), comm_(comm), reduce_(std::move(reduce)) {}

  /// Before the first gradient: every worker takes worker 0's parameters (broadcast_initial)
  /// and the base is anchored there.
  void start(ref_type x) {
    detail::require_not_stepped("GradientAllReduce", base_.steps());
    detail::check_step_sizes("GradientAllReduce", x.size(), x.size());
    // The reduce policy checks its options against n (a compressor's k) before x moves.
    detail::init_policy(reduce_, static_cast<std::size_t>(x.size()));
    if (options_.broadcast_initial) comm_.get().broadcast(as_span(x), 0);
    rebase(x);
  }

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes("GradientAllReduce", x.size(), g.size(), grad_.size() > 0 ? grad_.size() : -1);
    detail::require_started("GradientAllReduce", started_ || base_.steps() > 0);  // (a resumed run is started)
    // A NaN of this worker's is reported by this worker, before the average spreads it.
    detail::check_own_gradient("GradientAllReduce", base_, g, base_.steps() + 1);
    if (grad_.size() != g.size()) grad_.resize(g.size());  // scratch: the only allocation
    grad_ = g;
    reduce_.reduce(as_span(grad_), comm_.get(), ReduceContext{.round = base_.steps(), .agreed = false});
    base_.step(x, grad_);
  }

  scalar_type last_lr() const { return base_.last_lr(); }
  std::int64_t steps() const { return base_.steps(); }
  const Base& base() const { return base_; }
  /// The size of its communicator: what its agreement() holds over.
  int workers() const { return comm_.get().size(); }
  Base& base() { return base_; }
  const Reduce& reduce_policy() const { return reduce_; }
  Reduce& reduce_policy() { return reduce_; }

  /// The parameters are now x (set from outside, or by start): the base follows.
  void rebase(const_ref_type x) {
    detail::init_policy(reduce_, static_cast<std::size_t>(x.size()));  // (may refuse n: before anything changes)
    started_ = true;
    slowmo::rebase(base_, x);
  }

  /// Every worker applies the same reduced gradient to the same parameters and state (a
  /// reduce policy's per-worker residual aside).
  Agreement agreement() const {
    if (base_.steps() == 0) return {};
    return {.parameters = true, .state = !detail::visits_buffers(reduce_)};
  }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    visit(*this, v, scope);
  }

  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"combinator", scope}, "GradientAllReduce");
    const StateScope reduce_scope{"reduce", scope};
    reduce_.visit_structure(f, &reduce_scope);
    const StateScope base_scope{"base", scope};
    slowmo::visit_structure(base_, f, &base_scope);
  }

 private:
  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    const StateScope reduce_scope{"reduce", scope};
    self.reduce_.visit_state(v, &reduce_scope);
    const StateScope base_scope{"base", scope};
    self.base_.visit_state(v, &base_scope);
  }

  GradientAllReduceOptions options_;
  Base base_;
  detail::CommHolder<Comm> comm_;
  Reduce reduce_;
  vector_type grad_;
  bool started_ = false;  // start(x) or a rebase anchored it (derived again from the steps after a resume)
};

}  // namespace slowmo
