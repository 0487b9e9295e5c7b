// slowmo/optim/adam.hpp — Adam (L2 weight decay) and AdamW (decoupled weight decay),
// exactly torch.optim.Adam / torch.optim.AdamW, with amsgrad and maximize.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "slowmo/core/concepts.hpp"
#include "slowmo/core/non_finite.hpp"
#include "slowmo/core/schedule.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/optim/rules.hpp"

namespace slowmo {

/// Options of Adam (Decoupled = false) and AdamW (Decoupled = true); names and defaults as
/// PyTorch, where only weight_decay's default differs (0 for Adam, 1e-2 for AdamW).
template <bool Decoupled>
struct BasicAdamOptions {
  double lr = 1e-3;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = Decoupled ? 1e-2 : 0.0;
  bool amsgrad = false;
  bool maximize = false;
  NonFinite non_finite = NonFinite::raise;  ///< NaN/Inf in the gradient: raise, skip or propagate
};
using AdamOptions = BasicAdamOptions<false>;
using AdamWOptions = BasicAdamOptions<true>;

/// Adam / AdamW. Per step, with t counting steps from 1 and d the gradient:
///   d = (maximize ? -d : d);  Adam: d += weight_decay * p;  AdamW: p *= 1 - lr_t * weight_decay
///   m = beta1 * m + (1 - beta1) * d;   v = beta2 * v + (1 - beta2) * d^2
///   amsgrad: vmax = max(vmax, v), used in place of v
///   p -= lr_t / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// One pass over p, g, m, v (and vmax): 28 bytes per fp32 parameter without amsgrad.
/// `Space`: where parameters and state live (core/space.hpp), Host by default.
template <Real T, Schedule S, bool Decoupled, MemorySpace Space = Host>
class BasicAdam {
 public:
  using scalar_type = T;
  using options_type = BasicAdamOptions<Decoupled>;
  using schedule_type = S;
  using space_type = Space;
  using vector_type = typename Space::template vector<T>;
  using ref_type = typename Space::template ref<T>;
  using const_ref_type = typename Space::template const_ref<T>;
  static constexpr const char* name = Decoupled ? "AdamW" : "Adam";

  /// Default options: `Adam<T>()`, `Adam<T>{}` and `Adam<T>({})` (see detail::DefaultOptions).
  explicit BasicAdam(detail::DefaultOptions = {}) : BasicAdam(options_type{}, S{}) {}
  explicit BasicAdam(options_type options, S schedule = {})
      : options_(validated(options)), clock_(name, options.lr, std::move(schedule)) {}

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes(name, x.size(), g.size(), exp_avg_.size() > 0 ? exp_avg_.size() : -1);
    if constexpr (std::is_same_v<Space, Host>)  // (device gradients are not scanned: see NonFinite)
      if (detail::reject_gradient(options_.non_finite, name, g.data(), g.size(), clock_.steps() + 1)) {
        // A skipped step still counts, for every counter: the schedule stays aligned and the
        // bias-correction step stays equal on every worker, so that OnSync::average never
        // mixes moments of different bias corrections.
        ++adam_steps_;
        clock_.tick();
        return;
      }
    const double lr = clock_.current();  // checked before anything changes
    if (exp_avg_.size() != x.size()) {  // first step: the state's only allocation
      exp_avg_.setZero(x.size());
      exp_avg_sq_.setZero(x.size());
      if (options_.amsgrad) max_exp_avg_sq_.setZero(x.size());
    }
    ++adam_steps_;
    const double t = static_cast<double>(adam_steps_);
    const auto [beta1, beta2] = options_.betas;
    const rules::Adam<T> rule{
        .sign = T(options_.maximize ? -1 : 1),
        .l2 = T(Decoupled ? 0.0 : options_.weight_decay),
        .decay = T(Decoupled ? 1.0 - lr * options_.weight_decay : 1.0),
        .beta1 = T(beta1),
        .one_minus_beta1 = T(1.0 - beta1),
        .beta2 = T(beta2),
        .one_minus_beta2 = T(1.0 - beta2),
        .inv_bias_correction2_sqrt = T(1.0 / std::sqrt(1.0 - std::pow(beta2, t))),
        .eps = T(options_.eps),
        .step_size = T(lr / (1.0 - std::pow(beta1, t))),
    };
    if (options_.amsgrad)
      Space::for_each(x.size(), rule, x.data(), g.data(), exp_avg_.data(), exp_avg_sq_.data(),
                      max_exp_avg_sq_.data());
    else
      Space::for_each(x.size(), rule, x.data(), g.data(), exp_avg_.data(), exp_avg_sq_.data());
    clock_.tick();
  }

  T last_lr() const { return T(clock_.last_lr()); }
  /// The learning rate the next step will use (checked: throws for a bad schedule value).
  T next_lr() const { return T(clock_.current()); }
  std::int64_t steps() const { return clock_.steps(); }
  const options_type& options() const { return options_; }
  const S& schedule() const { return clock_.schedule(); }
  const vector_type& exp_avg() const { return exp_avg_; }
  const vector_type& exp_avg_sq() const { return exp_avg_sq_; }
  const vector_type& max_exp_avg_sq() const { return max_exp_avg_sq_; }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    visit(*this, v, scope);
  }

  /// Structural: the variant (Adam or AdamW), amsgrad (it decides the state) and the
  /// schedule's type (what the step count means).
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"optimizer", scope}, name);
    f(StateKey{"amsgrad", scope}, options_.amsgrad);
    f(StateKey{"schedule", scope}, detail::type_name<S>());
  }

 private:
  // max_exp_avg_sq exists (and is visited) only with amsgrad: a state entry is either empty
  // (before the first step) or of the parameters' size, never structurally absent.
  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    v(StateKey{"exp_avg", scope}, self.exp_avg_, StateKind::accumulator);
    v(StateKey{"exp_avg_sq", scope}, self.exp_avg_sq_, StateKind::accumulator);
    if (self.options_.amsgrad)
      v(StateKey{"max_exp_avg_sq", scope}, self.max_exp_avg_sq_, StateKind::accumulator);
    v(StateKey{"adam_steps", scope}, self.adam_steps_, StateKind::counter);
    v(StateKey{"steps", scope}, self.clock_.steps_ref(), StateKind::progress);
  }

  static options_type validated(const options_type& o) {
    using detail::finite;
    using detail::require_option;
    for (int i = 0; i < 2; ++i)
      require_option(finite(o.betas[i]) && o.betas[i] >= 0 && o.betas[i] < 1, name, i == 0 ? "betas[0]" : "betas[1]",
                     o.betas[i], "must be in [0, 1)");
    require_option(finite(o.eps) && o.eps >= 0, name, "eps", o.eps, "must be finite and >= 0");
    require_option(finite(o.weight_decay) && o.weight_decay >= 0, name, "weight_decay", o.weight_decay,
                   "must be finite and >= 0");
    return o;
  }

  options_type options_;
  detail::LrClock<S> clock_;
  vector_type exp_avg_;
  vector_type exp_avg_sq_;
  vector_type max_exp_avg_sq_;  // amsgrad only
  std::int64_t adam_steps_ = 0;
};

/// Adam with L2 weight decay added to the gradient (torch.optim.Adam).
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
using Adam = BasicAdam<T, S, false, Space>;

/// Adam with decoupled weight decay (torch.optim.AdamW, Loshchilov & Hutter 2019).
template <Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
using AdamW = BasicAdam<T, S, true, Space>;

}  // namespace slowmo
