// slowmo/core/shared_model.hpp — a shared global model: the capability asynchronous methods
// need beside collectives. One versioned parameter vector lives with a server; a worker
// `pull`s the current parameters (and their version) and `push`es an update, which the server
// applies at once, one arrival at a time, and answers with the version it produced. No
// worker waits for another: only for the server's answer.
//
// What an arriving push does is the algorithm's (distributed/async_local_sgd.hpp applies an
// outer rule), so it is given to the backend as a ModelServer; where the model lives, how
// pushes and pulls travel and in which order they arrive is the backend's:
//  - the simulator orders them as events by virtual time (bit-reproducible);
//  - threads apply them under a lock in arrival order (reproducible within tolerance only);
//  - MPI runs the server beside rank 0 and applies them in arrival order.
// A backend that has it models SharedModelCommunicator, a refinement of Communicator, so an
// algorithm that needs it says so and one that does not never sees it.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "slowmo/core/communicator.hpp"

namespace slowmo {

/// The server's side of a shared model: its parameters and what a push does to them. The
/// backend owns it once hosted and calls it from one thread at a time, in arrival order (not
/// necessarily the pushing worker's thread, and under the backend's lock: apply and read must
/// not call the communicator). An exception from apply or read reaches the worker whose pull
/// or push it was serving; the version does not move.
/// Who pushed, and how stale the push is: the updates (by other workers) the server applied
/// between the pusher's last pull and this push.
struct Arrival {
  int worker = 0;
  std::int64_t staleness = 0;
};

template <class T>
class ModelServer {
 public:
  virtual ~ModelServer() = default;
  /// The number of parameters; every pull and push moves exactly this many values.
  virtual std::size_t size() const = 0;
  /// Applies a push (of size()) to the model: one global update.
  virtual void apply(const Arrival& arrival, std::span<const T> push) = 0;
  /// Writes the current parameters into `out` (of size()).
  virtual void read(std::span<T> out) const = 0;
  /// The version the model has when hosted: 0 for a fresh one; a model restored from a
  /// checkpoint returns the updates it had, and versions (and staleness) continue from there.
  virtual std::int64_t initial_version() const { return 0; }
};

/// What a pull returns: the version of the parameters it read (the number of updates the
/// server had applied).
struct Pulled {
  std::int64_t version = 0;
};

/// What a push returns: the version its update produced, and its staleness: how many
/// updates (by other workers) the server applied between this worker's last pull and this push.
struct Pushed {
  std::int64_t version = 0;
  std::int64_t staleness = 0;
};

namespace detail {
template <class C, class T>
concept SharesModelIn = requires(C& c, std::unique_ptr<ModelServer<T>> server, std::span<T> x, std::span<const T> d) {
  c.host_model(std::move(server));
  { c.pull(x) } -> std::same_as<Pulled>;
  { c.push(d) } -> std::same_as<Pushed>;
};
}  // namespace detail

/// A Communicator with a shared global model, for float and double parameters:
///  - `host_model(server)`: collective, before any pull or push; every worker passes a server
///    built the same way and the backend keeps rank 0's (the others are dropped), so an SPMD
///    program needs no special case for the server. Hosting again replaces the model (every
///    worker must pull the new one before pushing);
///  - `pull(x)`: x = the current global parameters; returns their version;
///  - `push(d)`: the server applies d through the hosted server's apply(); returns the version
///    produced and the staleness;
///  - `departed()`: the ranks that have left the run so far (returned or failed), in order.
/// Misuse throws on the worker that made it, naming it, and leaves the model as it was: a pull
/// or push before host_model, a push before this worker's first pull, a size or element type
/// other than the hosted model's.
template <class C>
concept SharedModelCommunicator = Communicator<C> && detail::SharesModelIn<C, float> &&
                                  detail::SharesModelIn<C, double> && requires(const C& c) {
                                    { c.departed() } -> std::convertible_to<std::vector<int>>;
                                  };

/// `static_assert(check_shared_model_communicator<C>())` names what is missing.
template <class C>
consteval bool check_shared_model_communicator() {
  if constexpr (!Communicator<C>) {
    return check_communicator<C>();
  } else if constexpr (constexpr bool ok = detail::SharesModelIn<C, float> && detail::SharesModelIn<C, double>; !ok) {
    static_assert(ok, "slowmo: not a SharedModelCommunicator: it needs, for float and double, "
                      "`host_model(std::unique_ptr<ModelServer<T>>)`, `pull(span<T>) -> Pulled` and "
                      "`push(span<const T>) -> Pushed` (the NCCL backend has no shared model)");
    return false;
  } else {
    static_assert(SharedModelCommunicator<C>,
                  "slowmo: not a SharedModelCommunicator: it needs `departed() const -> std::vector<int>`");
    return SharedModelCommunicator<C>;
  }
}

}  // namespace slowmo
