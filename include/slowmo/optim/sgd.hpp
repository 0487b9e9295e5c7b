// slowmo/optim/sgd.hpp — stochastic gradient descent with heavy-ball or Nesterov momentum,
// exactly torch.optim.SGD.
#pragma once

#include <cstdint>

#include "slowmo/core/concepts.hpp"
#include "slowmo/core/non_finite.hpp"
#include "slowmo/core/schedule.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/optim/rules.hpp"

namespace slowmo {

/// Options of Sgd; names and defaults as torch.optim.SGD.
struct SgdOptions {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  bool maximize = false;
  NonFinite non_finite = NonFinite::raise;  ///< NaN/Inf in the gradient: raise, skip or propagate
};

/// SGD (heavy ball, or Nesterov with `nesterov = true`). Per step, with d the gradient:
///   d = (maximize ? -d : d) + weight_decay * p
///   buf = d on the first step, then momentum * buf + (1 - dampening) * d
///   d = nesterov ? d + momentum * buf : buf          (when momentum != 0)
///   p = p - lr_t * d,   lr_t = lr * schedule(t)
/// The momentum buffer is allocated on the first step; later steps allocate nothing.
/// `Space` says where parameters and state live (core/space.hpp): Host by default,
/// slowmo::cuda::Device for the GPU (alias slowmo::cuda::Sgd<T>).
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
class Sgd {
 public:
  using scalar_type = T;
  using options_type = SgdOptions;
  using schedule_type = S;
  using space_type = Space;
  using vector_type = typename Space::template vector<T>;
  using ref_type = typename Space::template ref<T>;
  using const_ref_type = typename Space::template const_ref<T>;

  /// Default options: `Sgd<T>()`, `Sgd<T>{}` and `Sgd<T>({})` (see detail::DefaultOptions).
  explicit Sgd(detail::DefaultOptions = {}) : Sgd(SgdOptions{}, S{}) {}
  explicit Sgd(SgdOptions options, S schedule = {})
      : options_(validated(options)), clock_("Sgd", options.lr, std::move(schedule)) {}

  /// One step: updates x in place from the gradient g (same size as x).
  void step(ref_type x, const_ref_type g) {
    const bool has_momentum = options_.momentum != 0.0;
    detail::check_step_sizes("Sgd", x.size(), g.size(), momentum_buffer_.size() > 0 ? momentum_buffer_.size() : -1);
    if constexpr (std::is_same_v<Space, Host>)  // (device gradients are not scanned: see NonFinite)
      if (detail::reject_gradient(options_.non_finite, "Sgd", g.data(), g.size(), clock_.steps() + 1)) {
        // A skipped step still counts, for every counter: the schedule stays aligned and the
        // counters stay equal on every worker (OnSync::average relies on it).
        if (has_momentum) ++momentum_steps_;
        clock_.tick();
        return;
      }
    const double lr = clock_.current();  // checked before anything changes
    rules::Sgd<T> rule{.lr = T(lr),
                       .sign = T(options_.maximize ? -1 : 1),
                       .weight_decay = T(options_.weight_decay),
                       .momentum = T(options_.momentum),
                       .keep = T(0),
                       .damp = T(1),
                       .nesterov = options_.nesterov};
    if (!has_momentum) {
      Space::for_each(x.size(), rule, x.data(), g.data());
    } else {
      if (momentum_buffer_.size() != x.size()) momentum_buffer_.setZero(x.size());
      if (momentum_steps_ > 0) {  // buf = d on the first step, as PyTorch's fresh buffer
        rule.keep = T(options_.momentum);
        rule.damp = T(1.0 - options_.dampening);
      }
      Space::for_each(x.size(), rule, x.data(), g.data(), momentum_buffer_.data());
      ++momentum_steps_;
    }
    clock_.tick();
  }

  /// The learning rate of the last step (before any step: that of the first).
  T last_lr() const { return T(clock_.last_lr()); }
  /// The learning rate the next step will use (checked: throws for a bad schedule value).
  T next_lr() const { return T(clock_.current()); }
  std::int64_t steps() const { return clock_.steps(); }
  const SgdOptions& options() const { return options_; }
  const S& schedule() const { return clock_.schedule(); }
  /// Empty until the first step with momentum.
  const vector_type& momentum_buffer() const { return momentum_buffer_; }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    visit(*this, v, scope);
  }

  /// Structural: whether there is momentum at all (it decides the state), Nesterov's form and
  /// the schedule's type (what the step count means).
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"optimizer", scope}, "Sgd");
    f(StateKey{"momentum_enabled", scope}, options_.momentum != 0.0);
    f(StateKey{"nesterov", scope}, options_.nesterov);
    f(StateKey{"schedule", scope}, detail::type_name<S>());
  }

 private:
  // The momentum buffer exists (and is visited) only with momentum: a state entry is either
  // empty (before the first step) or of the parameters' size, never structurally absent.
  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    if (self.options_.momentum != 0.0) {
      v(StateKey{"momentum_buffer", scope}, self.momentum_buffer_, StateKind::accumulator);
      v(StateKey{"momentum_steps", scope}, self.momentum_steps_, StateKind::counter);
    }
    v(StateKey{"steps", scope}, self.clock_.steps_ref(), StateKind::progress);
  }

  static SgdOptions validated(const SgdOptions& o) {
    using detail::finite;
    using detail::require_option;
    require_option(finite(o.momentum) && o.momentum >= 0, "Sgd", "momentum", o.momentum, "must be finite and >= 0");
    require_option(finite(o.dampening) && o.dampening >= 0 && o.dampening <= 1, "Sgd", "dampening", o.dampening,
                   "must be in [0, 1]");
    require_option(finite(o.weight_decay) && o.weight_decay >= 0, "Sgd", "weight_decay", o.weight_decay,
                   "must be finite and >= 0");
    if (o.nesterov) {
      require_option(o.momentum > 0, "Sgd", "momentum", o.momentum,
                     "Nesterov momentum (nesterov = true) requires momentum > 0");
      require_option(o.dampening == 0, "Sgd", "dampening", o.dampening,
                     "Nesterov momentum (nesterov = true) requires dampening = 0");
    }
    return o;
  }

  SgdOptions options_;
  detail::LrClock<S> clock_;
  vector_type momentum_buffer_;
  std::int64_t momentum_steps_ = 0;
};

/// Options of Nesterov: those of Sgd without dampening (Nesterov requires none) and with
/// a default momentum of 0.9.
struct NesterovOptions {
  double lr = 1e-3;
  double momentum = 0.9;
  double weight_decay = 0.0;
  bool maximize = false;
  NonFinite non_finite = NonFinite::raise;
};

/// SGD with Nesterov momentum: Sgd with nesterov = true, under the name users look for.
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
class Nesterov : public Sgd<T, S, Space> {
 public:
  using options_type = NesterovOptions;

  /// Default options, also spelled `Nesterov<T>({})` (see detail::DefaultOptions).
  explicit Nesterov(detail::DefaultOptions = {}) : Nesterov(NesterovOptions{}, S{}) {}
  explicit Nesterov(NesterovOptions o, S schedule = {})
      : Sgd<T, S, Space>(SgdOptions{.lr = o.lr,
                             .momentum = o.momentum,
                             .dampening = 0.0,
                             .weight_decay = o.weight_decay,
                             .nesterov = true,
                             .maximize = o.maximize,
                             .non_finite = o.non_finite},
                  std::move(schedule)) {}

  /// The options as given (derived from the Sgd options they set).
  NesterovOptions options() const {
    const SgdOptions& o = Sgd<T, S, Space>::options();
    return {.lr = o.lr, .momentum = o.momentum, .weight_decay = o.weight_decay, .maximize = o.maximize,
            .non_finite = o.non_finite};
  }
};

}  // namespace slowmo
