// slowmo/distributed/detail/sync.hpp — what the distributed combinators share: holding the
// communicator, the start protocol, averaging the parameters and applying the base state
// policy at a synchronisation point (never repeating what the base has just averaged), and
// naming the worker whose own gradient is not finite.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <type_traits>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/non_finite.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"

namespace slowmo::detail {

/// How a combinator holds its communicator: a pointer to the caller's, or, for an empty
/// (stateless) communicator such as SingleWorker, its own copy — so that a preset can build
/// one without any object outliving it.
template <class Comm>
class CommHolder {
 public:
  explicit CommHolder(Comm& comm) : comm_(&comm) {}
  Comm& get() const { return *comm_; }

 private:
  Comm* comm_;
};

template <class Comm>
  requires(std::is_empty_v<Comm> && std::is_copy_constructible_v<Comm>)
class CommHolder<Comm> {
 public:
  explicit CommHolder(const Comm& comm) : comm_(comm) {}
  Comm& get() const { return comm_; }

 private:
  mutable Comm comm_;  // empty: holds no state to protect
};

/// Whether an optimizer nest holds a Savic (or other base with `needs_scaling_refresh`)
/// that no combinator inside the nest refreshes: such a nest may only be LocalSgd's base.
template <class Opt>
consteval bool needs_scaling_refresh() {
  if constexpr (requires { Opt::refreshes_scaling; })
    return false;  // a LocalSgd inside refreshes it
  else if constexpr (requires { Opt::needs_scaling_refresh; })
    return Opt::needs_scaling_refresh;
  else if constexpr (requires { typename Opt::base_type; })
    return needs_scaling_refresh<typename Opt::base_type>();
  else
    return false;
}

/// Refreshes the innermost scaling of a nest (see needs_scaling_refresh); nothing without one.
template <class Opt, class X, class G, class Comm>
void refresh_scaling(Opt& opt, const X& x, const G& g, Comm& comm) {
  if constexpr (requires { opt.refresh_scaling(x, g, comm); })
    opt.refresh_scaling(x, g, comm);
  else if constexpr (requires { opt.base(); } && needs_scaling_refresh<Opt>())
    refresh_scaling(opt.base(), x, g, comm);
}

/// What every distributed combinator asks of its base and its communicator; each failure is
/// one compiler message saying what is missing (`static_assert(check_distributed<Base,
/// Comm>(), ...)` in the combinator's body). A base in device memory needs a communicator that
/// reads device memory; a base whose scaling is refreshed every round (Savic) needs a
/// combinator that refreshes it (RefreshesScaling: LocalSgd).
template <class Base, class Comm, bool RefreshesScaling = false>
consteval bool check_distributed() {
  if constexpr (!check_optimizer<Base>()) {  // (its own static_assert has said what is missing)
    return false;
  } else if constexpr (!check_communicator<Comm>()) {
    return false;
  } else if constexpr (!RefreshesScaling && needs_scaling_refresh<Base>()) {
    static_assert(RefreshesScaling,
                  "slowmo: this base's scaling is refreshed at the start of every LocalSgd round (slowmo::Savic); "
                  "only LocalSgd does that: use slowmo::LocalSgd(Savic(...), comm, ...), inside any other "
                  "combinator if needed");
    return false;
  } else {
    static_assert(space_of_t<Base>::template communicates_with<Comm>,
                  "slowmo: the base keeps its parameters in a memory space this communicator cannot read (device "
                  "memory needs a device communicator such as slowmo::cuda::Nccl)");
    return space_of_t<Base>::template communicates_with<Comm>;
  }
}

/// x becomes the mean of every worker's x, unless the base's last step left it identical on
/// every worker of comm already (e.g. LocalSgd has just averaged them): then nothing is sent.
template <class Base, class X, class Comm>
void average_parameters(const Base& base, X& x, Comm& comm) {
  if (!agreement_over(base, comm.size()).parameters) comm.all_reduce(as_span(x), ReduceOp::mean);
}

/// keep: nothing; reset: re-initialise as a fresh optimizer; average: every accumulator
/// buffer becomes its mean across workers, unless the base's state agrees on every worker
/// already. Counters are equal on all workers without communication: every worker takes
/// the same number of steps, and a skipped step counts like any other (NonFinite::skip).
template <class Opt, class Comm>
void apply_sync_policy(OnSync policy, Opt& opt, Comm& comm) {
  switch (policy) {
    case OnSync::keep: break;
    case OnSync::reset: reset_state(opt); break;
    case OnSync::average:
      if (agreement_over(opt, comm.size()).state) break;
      opt.visit_state([&](const StateKey&, auto& ref, StateKind kind) {
        if constexpr (!std::is_arithmetic_v<std::remove_cvref_t<decltype(ref)>>)
          if (kind == StateKind::accumulator) comm.all_reduce(as_span(ref), ReduceOp::mean);
      });
      break;
  }
}

/// After a synchronisation with this policy, does the base's state agree on every worker?
/// average and reset make it so; keep leaves it as the base's own steps left it.
inline bool state_agrees_after(OnSync policy, bool before) { return policy != OnSync::keep || before; }

/// What an exact average of the parameters over m workers, with `policy` for the base's
/// state, leaves equal on all of them (LocalSgd's and HierarchicalLocalSgd's averages).
template <class Base>
Agreement agreement_after_average(OnSync policy, const Base& base, int m) {
  return {.parameters = true, .state = state_agrees_after(policy, agreement_over(base, m).state)};
}

/// The NonFinite policy that governs a nest's gradient: that of the innermost optimizer
/// with a `non_finite` option (propagate when there is none).
template <class Opt>
NonFinite non_finite_policy(const Opt& opt) {
  if constexpr (requires { opt.options().non_finite; })
    return opt.options().non_finite;
  else if constexpr (requires { opt.base(); })
    return non_finite_policy(opt.base());
  else
    return NonFinite::propagate;
}

/// Before this worker's gradient is averaged with the others' (gradient all-reduce), a NaN
/// or an infinity in it must be reported by this worker, under NonFinite::raise: after the
/// average every worker would see it and the error would name the wrong one. (skip acts on
/// the average, so that all workers skip together.)
template <class Base, class G>
void check_own_gradient(std::string_view owner, const Base& base, const G& g, std::int64_t step) {
  if (non_finite_policy(base) != NonFinite::raise) return;
  // In the base's memory space (a device gradient too: one reduction, read back).
  const auto [bad, value] = first_non_finite_in<space_of_t<Base>>(g.data(), Eigen::Index(g.size()));
  if (bad >= 0)  // (the message is built only on error: steps never allocate)
    throw_non_finite(concat(owner, " (this worker's own gradient, before averaging)"), bad, double(value), step);
}

/// Post-local SGD's warm-up step, once check_own_gradient has passed: g averaged over every
/// worker into `grad` (sized once), and the base steps with the average, so the replicas
/// stay identical.
template <class Base, class X, class G, class V, class Comm>
void averaged_gradient_step(Base& base, X& x, const G& g, V& grad, Comm& comm) {
  if (grad.size() != g.size()) grad.resize(g.size());  // once
  grad = g;
  comm.all_reduce(as_span(grad), ReduceOp::mean);
  base.step(x, grad);
}

template <class Comm>
void check_comm_size(std::string_view owner, const Comm& comm, int at_least) {
  if (comm.size() < at_least)
    throw invalid_option(concat("slowmo::", owner, ": needs at least ", at_least, " workers; the communicator has ",
                                comm.size()));
}

/// The learning rate of base's next step where it can tell (next_lr), else of its last one:
/// what a synchronisation schedule reads when a round starts.
template <class Base>
double upcoming_lr(const Base& base) {
  const std::optional<double> next = slowmo::next_lr(base);
  return next ? *next : static_cast<double>(base.last_lr());
}

}  // namespace slowmo::detail
