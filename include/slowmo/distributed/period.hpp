// slowmo/distributed/period.hpp — synchronisation schedules: how many base steps the next
// round of a periodic method (LocalSgd's averaging period H, the outer loop's tau) takes,
// chosen at the start of every round from the round's index, the steps so far and the
// learning rate the base will use next.
//  - period::Constant: every round takes the configured period (the default: the options'
//    H or tau, as before);
//  - period::Qsr: the Quadratic Synchronization Rule (Gu, Lyu, Arora, Zhang, Huang, ICLR
//    2024), H_k = max(H, floor((alpha / lr_k)^2)), so that averaging grows rarer as the
//    learning rate decays; power 1 gives the linear rule it is compared with;
//  - period::Linear: H_k = H + floor(growth * k), a period that grows with the rounds.
// (Post-local SGD's switch is LocalSgd's warmup_steps.) A schedule is any type with
// `std::int64_t operator()(const period::Context&) const`; a period below 1 is refused with an
// error naming the round.
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <utility>

#include "slowmo/core/error.hpp"
#include "slowmo/core/state.hpp"

namespace slowmo::period {

/// What a schedule sees when a round starts: the configured period (H or tau), the round's
/// 0-based index, the base steps taken so far, and the learning rate of the base's next step
/// (0 when the base cannot tell it).
struct Context {
  std::int64_t period = 1;
  std::int64_t round = 0;
  std::int64_t steps = 0;
  double lr = 0;
};

/// The largest period a schedule returns (a rule of 1 / lr at lr = 0 would be infinite).
inline constexpr std::int64_t max_period = std::int64_t(1) << 40;

/// Every round takes the configured period.
struct Constant {
  std::int64_t operator()(const Context& c) const { return c.period; }
};

/// H_k = max(H, floor((alpha / lr_k)^power)), at most max_period; power 2 is QSR, 1 the
/// linear rule (H proportional to 1 / lr).
struct Qsr {
  double alpha = 0.2;
  double power = 2;

  std::int64_t operator()(const Context& c) const {
    detail::require_option(std::isfinite(alpha) && alpha > 0, "period::Qsr", "alpha", alpha, "must be finite and > 0");
    detail::require_option(std::isfinite(power) && power > 0, "period::Qsr", "power", power, "must be finite and > 0");
    if (!(std::isfinite(c.lr) && c.lr >= 0))  // (the message is built only then: a round allocates nothing)
      detail::require_option(false, "period::Qsr", "lr", c.lr,
                             detail::concat("must be finite and >= 0 (the base's next learning rate, round ", c.round,
                                            ")"));
    const double h = c.lr > 0 ? std::floor(std::pow(alpha / c.lr, power)) : double(max_period);
    const double capped = h < double(max_period) ? h : double(max_period);
    return capped > double(c.period) ? std::int64_t(capped) : c.period;
  }
};

/// H_k = H + floor(growth * k).
struct Linear {
  double growth = 1;

  std::int64_t operator()(const Context& c) const {
    detail::require_option(std::isfinite(growth) && growth >= 0, "period::Linear", "growth", growth,
                           "must be finite and >= 0");
    const double h = double(c.period) + std::floor(growth * double(c.round));
    return h < double(max_period) ? std::int64_t(h) : max_period;
  }
};

template <class P>
concept Schedule = std::copy_constructible<P> && requires(const P& p, const Context& c) {
  { p(c) } -> std::convertible_to<std::int64_t>;
};

/// Where the rounds of a periodic method stand: which step ends the one under way. Rounds start
/// after `offset` steps (LocalSgd's warm-up; 0 for the outer loop). With the constant schedule
/// nothing is stored: a round ends every `period` steps. Any other schedule picks each round's
/// length when it starts, and that is state (checkpointed, as progress). Deciding is free of
/// side effects, so that a step refused afterwards changes nothing: next() says what the coming
/// step does, advance() records it once the step is done.
template <Schedule P>
class Rounds {
 public:
  static constexpr bool constant = std::same_as<P, Constant>;

  /// What step steps + 1 does: whether it ends a round, and the length of the round it is in.
  struct Next {
    bool ends = false;
    std::int64_t length = 0;
  };

  Rounds(P schedule, std::int64_t period, std::int64_t offset = 0)
      : schedule_(std::move(schedule)), period_(period), offset_(offset) {}

  /// Step steps + 1 (steps >= offset); lr() is the base's next learning rate, asked only when a
  /// schedule starts a round. A new round's length below 1 is refused, naming `owner`.
  template <class Lr>
  Next next(std::int64_t steps, Lr&& lr, const char* owner) const {
    if constexpr (constant) {
      return {(steps + 1 - offset_) % period_ == 0, period_};
    } else {
      std::int64_t length = length_;
      if (length == 0) {  // a round starts with this step
        length = schedule_(Context{.period = period_, .round = rounds_, .steps = steps, .lr = double(lr())});
        if (length < 1)
          slowmo::detail::require_option(false, owner, "period", length,
                                         slowmo::detail::concat("must be >= 1 (the schedule's period for round ",
                                                                rounds_, ", after ", steps, " steps)"));
      }
      return {steps + 1 - start_of(steps) == length, length};
    }
  }
  /// Step steps + 1 is done, as next() said.
  void advance(const Next& n, std::int64_t steps) {
    if constexpr (!constant) {
      if (length_ == 0) start_ = steps;
      length_ = n.ends ? 0 : n.length;
      if (n.ends) ++rounds_, last_end_ = steps + 1;
    }
  }

  /// Whether step `steps` (the last one taken) ended a round.
  bool ended_at(std::int64_t steps) const {
    if constexpr (constant) return steps > offset_ && (steps - offset_) % period_ == 0;
    else return rounds_ > 0 && steps == last_end_;
  }
  /// Rounds completed after `steps` steps.
  std::int64_t completed(std::int64_t steps) const {
    if constexpr (constant) return steps > offset_ ? (steps - offset_) / period_ : 0;
    else return rounds_;
  }
  /// The length of the round under way (0 between rounds, for a schedule).
  std::int64_t length() const {
    if constexpr (constant) return period_;
    else return length_;
  }
  const P& schedule() const { return schedule_; }

  template <class F>
  void visit_structure(F&& f, const StateScope* scope) const {
    if constexpr (!constant) f(StateKey{"period_schedule", scope}, slowmo::detail::type_name<P>());
  }
  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    if constexpr (!constant) {
      v(StateKey{"round_length", scope}, self.length_, StateKind::progress);
      v(StateKey{"round_start", scope}, self.start_, StateKind::progress);
      v(StateKey{"rounds", scope}, self.rounds_, StateKind::progress);
      v(StateKey{"last_round_end", scope}, self.last_end_, StateKind::progress);
    }
  }

 private:
  std::int64_t start_of(std::int64_t steps) const { return length_ == 0 ? steps : start_; }

  P schedule_;
  std::int64_t period_, offset_;
  std::int64_t length_ = 0, start_ = 0, rounds_ = 0, last_end_ = 0;  // (a schedule's only)
};

}  // namespace slowmo::period
