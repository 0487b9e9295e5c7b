// slowmo/dist/local_sgd.hpp — LocalSgd<Base, Comm>: local steps with periodic exact
// averaging of the parameters (Local SGD, Stich 2019), optionally after a warm-up of
// gradient all-reduce steps (post-local SGD, Lin et al. 2020).
#pragma once

#include <cstdint>
#include <utility>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/dist/detail/sync.hpp"

namespace slowmo {

struct LocalSgdOptions {
  std::int64_t H = 1;                 ///< local steps between averages
  std::int64_t warmup_steps = 0;      ///< W: the first W steps average gradients instead (post-local SGD)
  OnSync base_state = OnSync::keep;   ///< the base optimizer's state at each average
  bool broadcast_initial = true;      ///< first step: every worker starts from worker 0's parameters
};

/// Steps 1..W: g is averaged over workers (all-reduce) and the base steps with it, so the
/// replicas stay identical. After that, every worker steps on its own gradient and the
/// parameters are averaged after steps W + H, W + 2H, ...
template <class Base, class Comm>
class LocalSgd {
  static_assert(check_optimizer<Base>(), "slowmo::LocalSgd<Base, Comm>: Base must model slowmo::Optimizer");
  static_assert(check_communicator<Comm>(), "slowmo::LocalSgd<Base, Comm>: Comm must model slowmo::Communicator");
  static_assert(space_of_t<Base>::template communicates_with<Comm>,
                "slowmo::LocalSgd<Base, Comm>: the base keeps its parameters in a memory space this communicator cannot "
                "read (device memory needs a device communicator such as slowmo::cuda::Nccl)");

 public:
  using scalar_type = typename Base::scalar_type;
  using space_type = space_of_t<Base>;  // buffers and outer updates live where the base's do
  using vector_type = typename space_type::template vector<scalar_type>;
  using ref_type = typename space_type::template ref<scalar_type>;
  using const_ref_type = typename space_type::template const_ref<scalar_type>;
  using options_type = LocalSgdOptions;
  using base_type = Base;
  using comm_type = Comm;

  LocalSgd(Base base, Comm& comm, LocalSgdOptions options = {})
      : options_(validated(options)), base_(std::move(base)), comm_(&comm) {}

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes("LocalSgd", x.size(), g.size());
    // The first step is known from the visited step count, so a resumed run never repeats it.
    if (steps_ == 0 && options_.broadcast_initial) comm_->broadcast(as_span(x), 0);
    if (steps_ < options_.warmup_steps) {
      if (grad_.size() != g.size()) grad_.resize(g.size());  // once
      grad_ = g;
      comm_->all_reduce(as_span(grad_), ReduceOp::mean);
      base_.step(x, grad_);
      ++steps_;
      return;
    }
    base_.step(x, g);
    ++steps_;
    if ((steps_ - options_.warmup_steps) % options_.H == 0) {
      comm_->all_reduce(as_span(x), ReduceOp::mean);
      detail::apply_sync_policy(options_.base_state, base_, *comm_);
      slowmo::rebase(base_, x);
    }
  }

  /// Local steps between averages (SlowMo checks that its tau is a multiple).
  std::int64_t period() const { return options_.H; }
  scalar_type last_lr() const { return base_.last_lr(); }
  std::int64_t steps() const { return steps_; }
  const LocalSgdOptions& options() const { return options_; }
  const Base& base() const { return base_; }
  Base& base() { return base_; }
  void rebase(const_ref_type x) { slowmo::rebase(base_, x); }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    visit(*this, v, scope);
  }

 private:
  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    v(StateKey{"steps", scope}, self.steps_, StateKind::progress);
    const StateScope base_scope{"base", scope};
    self.base_.visit_state(v, &base_scope);
  }

  static LocalSgdOptions validated(const LocalSgdOptions& o) {
    detail::require_option(o.H >= 1, "LocalSgd", "H", o.H, "must be >= 1 (local steps between averages)");
    detail::require_option(o.warmup_steps >= 0, "LocalSgd", "warmup_steps", o.warmup_steps, "must be >= 0");
    return o;
  }

  LocalSgdOptions options_;
  Base base_;
  Comm* comm_;
  vector_type grad_;  // averaged gradient during warm-up
  std::int64_t steps_ = 0;
};

}  // namespace slowmo
