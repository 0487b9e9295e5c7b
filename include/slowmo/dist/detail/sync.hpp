// slowmo/dist/detail/sync.hpp — what the distributed combinators share: applying the base
// state policy at a synchronisation point, and the first-step broadcast.
#pragma once

#include <type_traits>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"

namespace slowmo::detail {

/// keep: nothing; reset: re-initialise as a fresh optimizer; average: every accumulator
/// buffer becomes its mean across workers (counters are equal on all workers already,
/// since all take the same number of steps).
template <class Opt, class Comm>
void apply_sync_policy(OnSync policy, Opt& opt, Comm& comm) {
  switch (policy) {
    case OnSync::keep: break;
    case OnSync::reset: reset_state(opt); break;
    case OnSync::average:
      opt.visit_state([&](const StateKey&, auto& ref, StateKind kind) {
        if constexpr (!std::is_arithmetic_v<std::remove_cvref_t<decltype(ref)>>)
          if (kind == StateKind::accumulator) comm.all_reduce(as_span(ref), ReduceOp::mean);
      });
      break;
  }
}

template <class Comm>
void check_comm_size(std::string_view owner, const Comm& comm, int at_least) {
  if (comm.size() < at_least)
    throw invalid_option(concat("slowmo::", owner, ": needs at least ", at_least, " workers; the communicator has ",
                                comm.size()));
}

}  // namespace slowmo::detail
