// slowmo/distributed/reduce.hpp — reduce policies: how the workers' vectors (an outer loop's
// pseudo-gradients d_i, or GradientAllReduce's gradients g_i) become the one vector every
// worker applies. The exact mean is the default; the compressed policies with error feedback
// are in slowmo/compress/.
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"

namespace slowmo {

/// What a reduce policy is told about the reduction it performs.
struct ReduceContext {
  std::int64_t round = 0;  ///< 0-based index of this reduction (the outer step, or the GradientAllReduce step)
  bool agreed = false;     ///< the vectors are already identical on every worker (the base has just averaged)
};

/// A reduce policy: `reduce(v, comm, ctx)` turns this worker's v (in place) into the shared
/// vector, the same on every worker; it may keep per-worker state (an error-feedback
/// residual), which it visits like an optimizer's (`visit_state(v, scope)`, const and not),
/// and may offer `init(n)`, which the combinators call when they anchor (start, rebase) so
/// that its state exists, and its options are checked against n, before the first step.
template <class P, class T, class Comm>
concept ReducePolicy = requires(P& p, const P& cp, std::span<T> v, Comm& comm, const ReduceContext& ctx) {
  p.reduce(v, comm, ctx);
  p.visit_state(detail::AnyStateVisitor{});
  cp.visit_state(detail::AnyStateVisitor{});
  cp.visit_structure(detail::AnyStructureVisitor{});
};

namespace reduce {

/// The exact mean over workers (an all-reduce), in the communicator's fixed order; nothing
/// is sent when the vectors already agree.
struct Mean {
  /// The exact mean commutes with affine maps: an outer loop may average the parameters x_i
  /// and form x0 - mean x_i instead of averaging the d_i = x0 - x_i (one pass fewer).
  static constexpr bool exact_mean = true;

  template <class T, class Comm>
  void reduce(std::span<T> v, Comm& comm, const ReduceContext& ctx) const {
    if (!ctx.agreed) comm.all_reduce(v, ReduceOp::mean);
  }
  template <class V>
  void visit_state(V&&, const StateScope* = nullptr) const {}
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"reduce", scope}, "Mean");
  }
};

}  // namespace reduce
}  // namespace slowmo

namespace slowmo::detail {

/// A policy that reads the vectors on the host (a compressor) says `static constexpr bool
/// host_only = true;`: the outer loop then refuses a base in device memory at compile time.
template <class P>
concept host_only_policy = requires {
  requires P::host_only;
};

/// A policy that computes the exact mean (`static constexpr bool exact_mean = true;`).
template <class P>
concept exact_mean_policy = requires {
  requires P::exact_mean;
};

/// p.init(n) where the policy has it.
template <class P>
void init_policy(P& p, std::size_t n) {
  if constexpr (requires { p.init(n); }) p.init(n);
}

/// What a combinator asks of its reduce policy, for a base (its scalar type and memory space)
/// and a communicator: `static_assert(check_reduce_policy<Reduce, Base, Comm>())`.
template <class Reduce, class Base, class Comm>
consteval bool check_reduce_policy() {
  static_assert(ReducePolicy<Reduce, typename Base::scalar_type, Comm>,
                "slowmo: Reduce must model slowmo::ReducePolicy (reduce(span, comm, ctx), visit_state, "
                "visit_structure) for the base's scalar type");
  static_assert(!host_only_policy<Reduce> || std::is_same_v<space_of_t<Base>, Host>,
                "slowmo: this reduce policy (a compressor) runs on host memory only; the base keeps its parameters "
                "on the device");
  return true;
}

/// Whether p visits any buffer (per-worker state such as an error-feedback residual).
template <class P>
bool visits_buffers(const P& p) {
  bool any = false;
  p.visit_state([&](const StateKey&, const auto& ref, StateKind) {
    if constexpr (!std::is_arithmetic_v<std::remove_cvref_t<decltype(ref)>>) any = true;
  });
  return any;
}

}  // namespace slowmo::detail
