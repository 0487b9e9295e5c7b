// slowmo/core/schedule.hpp — learning-rate schedules as composable callables.
//
// A schedule maps the 0-based index of a step to a factor that multiplies the optimizer's
// base `lr` (as torch.optim.lr_scheduler.LambdaLR does): step t uses lr * s(t). They are
// plain aggregates; `a * b` multiplies two schedules and `then(a, n, b)` runs `a` for n
// steps and then `b` counted from 0. Optimizers call validate() at construction.
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <numbers>
#include <string_view>

#include "slowmo/core/error.hpp"

namespace slowmo {

/// Anything callable as double(std::int64_t step).
template <class S>
concept Schedule = std::copy_constructible<S> && requires(const S& s, std::int64_t t) {
  { s(t) } -> std::convertible_to<double>;
};

namespace schedule {

/// Factor 1 for every step.
struct Constant {
  double operator()(std::int64_t) const { return 1.0; }
  void validate() const {}
};

/// gamma^(floor(t / step_size)), as torch.optim.lr_scheduler.StepLR.
struct StepDecay {
  std::int64_t step_size = 1;
  double gamma = 0.1;

  double operator()(std::int64_t t) const {
    return std::pow(gamma, static_cast<double>(t / step_size));
  }
  void validate() const {
    detail::require_option(step_size > 0, "schedule::StepDecay", "step_size", step_size, "must be >= 1");
    detail::require_option(detail::finite(gamma) && gamma > 0, "schedule::StepDecay", "gamma", gamma,
                           "must be finite and > 0");
  }
};

/// Linear ramp from start_factor to end_factor over total_iters steps, then constant, as
/// torch.optim.lr_scheduler.LinearLR (the usual linear warm-up).
struct Linear {
  double start_factor = 1.0 / 3.0;
  double end_factor = 1.0;
  std::int64_t total_iters = 5;

  double operator()(std::int64_t t) const {
    if (t >= total_iters) return end_factor;
    return start_factor + (end_factor - start_factor) * static_cast<double>(t) / static_cast<double>(total_iters);
  }
  void validate() const {
    detail::require_option(detail::finite(start_factor) && start_factor > 0 && start_factor <= 1,
                           "schedule::Linear", "start_factor", start_factor, "must be in (0, 1]");
    detail::require_option(detail::finite(end_factor) && end_factor >= 0 && end_factor <= 1,
                           "schedule::Linear", "end_factor", end_factor, "must be in [0, 1]");
    detail::require_option(total_iters > 0, "schedule::Linear", "total_iters", total_iters, "must be >= 1");
  }
};

/// Half-cosine from 1 down to min_factor over total_steps steps, then min_factor, as the
/// closed form of torch.optim.lr_scheduler.CosineAnnealingLR (which would rise again after
/// T_max; this one stays at the floor).
struct Cosine {
  std::int64_t total_steps = 1;
  double min_factor = 0.0;

  double operator()(std::int64_t t) const {
    if (t >= total_steps) return min_factor;
    const double c = std::cos(std::numbers::pi * static_cast<double>(t) / static_cast<double>(total_steps));
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + c);
  }
  void validate() const {
    detail::require_option(total_steps > 0, "schedule::Cosine", "total_steps", total_steps, "must be >= 1");
    detail::require_option(detail::finite(min_factor) && min_factor >= 0 && min_factor <= 1,
                           "schedule::Cosine", "min_factor", min_factor, "must be in [0, 1]");
  }
};

/// The product of two schedules, step by step.
template <Schedule A, Schedule B>
struct Product {
  A a;
  B b;
  double operator()(std::int64_t t) const { return a(t) * b(t); }
  void validate() const;
};

/// `first` for the first `switch_at` steps, then `second` counted from 0.
template <Schedule A, Schedule B>
struct Sequence {
  A first;
  std::int64_t switch_at = 0;
  B second;
  double operator()(std::int64_t t) const { return t < switch_at ? first(t) : second(t - switch_at); }
  void validate() const;
};

namespace detail {
template <class S>
void validate(const S& s) {
  if constexpr (requires { s.validate(); }) s.validate();
}
}  // namespace detail

template <Schedule A, Schedule B>
void Product<A, B>::validate() const {
  detail::validate(a);
  detail::validate(b);
}

template <Schedule A, Schedule B>
void Sequence<A, B>::validate() const {
  slowmo::detail::require_option(switch_at >= 0, "schedule::Sequence", "switch_at", switch_at, "must be >= 0");
  detail::validate(first);
  detail::validate(second);
}

template <Schedule A, Schedule B>
Product<A, B> operator*(A a, B b) {
  return {std::move(a), std::move(b)};
}

template <Schedule A, Schedule B>
Sequence<A, B> then(A first, std::int64_t switch_at, B second) {
  return {std::move(first), switch_at, std::move(second)};
}

/// Linear warm-up from start_factor to 1 over warmup_steps, then a cosine decay to
/// min_factor over the remaining total_steps - warmup_steps steps.
inline Sequence<Linear, Cosine> warmup_cosine(std::int64_t warmup_steps, std::int64_t total_steps,
                                              double min_factor = 0.0, double start_factor = 1e-3) {
  slowmo::detail::require_option(warmup_steps > 0 && warmup_steps < total_steps, "schedule::warmup_cosine",
                                 "warmup_steps", warmup_steps, "must be in [1, total_steps)");
  return {Linear{.start_factor = start_factor, .end_factor = 1.0, .total_iters = warmup_steps}, warmup_steps,
          Cosine{.total_steps = total_steps - warmup_steps, .min_factor = min_factor}};
}

}  // namespace schedule
}  // namespace slowmo

namespace slowmo::detail {

/// The learning-rate bookkeeping every optimizer shares: the base lr times the schedule at
/// the current step, and the step count (progress) that drives the schedule. The lr of the
/// last step is derived from the count, so the count is the only state.
template <Schedule S>
class LrClock {
 public:
  /// `owner` names the optimizer in messages; it must outlive the clock (a string literal).
  LrClock(std::string_view owner, double lr, S schedule) : owner_(owner), lr_(lr), schedule_(std::move(schedule)) {
    require_option(finite(lr) && lr >= 0, owner, "lr", lr, "must be finite and >= 0");
    schedule::detail::validate(schedule_);
  }

  /// The lr of step t (0-based).
  double at(std::int64_t t) const { return lr_ * static_cast<double>(schedule_(t)); }
  /// The lr for the step about to be taken, checked: a schedule may return anything, and a
  /// negative factor would silently turn descent into ascent, a NaN poison every parameter.
  /// Optimizers call this before they change anything.
  double current() const {
    const double lr = at(steps_);
    if (!(finite(lr) && lr >= 0))
      throw invalid_option(concat("slowmo::", owner_, "::step: the learning rate of step ", steps_ + 1,
                                  " (1-based) is ", lr, " (lr ", lr_, " times the schedule's factor ",
                                  static_cast<double>(schedule_(steps_)),
                                  "); it must be finite and >= 0: check the schedule"));
    return lr;
  }
  /// The lr of the last step taken (before any step: the lr the first step will use).
  double last_lr() const { return at(steps_ > 0 ? steps_ - 1 : 0); }
  void tick() { ++steps_; }

  std::int64_t steps() const { return steps_; }
  std::int64_t& steps_ref() { return steps_; }
  const std::int64_t& steps_ref() const { return steps_; }
  const S& schedule() const { return schedule_; }

 private:
  std::string_view owner_;
  double lr_;
  S schedule_;
  std::int64_t steps_ = 0;
};

}  // namespace slowmo::detail
