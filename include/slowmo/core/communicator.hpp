// slowmo/core/communicator.hpp — the Communicator concept: what every distributed
// algorithm may ask of the workers' transport, and nothing more. Algorithms are written
// against this concept only; backends (comm/simulator.hpp, comm/threads.hpp, comm/mpi.hpp,
// and the NCCL one) model it. Refinements (GatherCommunicator, SplitCommunicator,
// NonBlockingCommunicator, NeighborCommunicator) add what only some algorithms need, so that
// an algorithm asks for exactly what it uses.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "slowmo/core/error.hpp"
#include "slowmo/core/vector.hpp"

namespace slowmo {

/// What an all-reduce computes: the element-wise sum over workers, or the mean (the sum
/// divided by the number of workers: the exact average).
enum class ReduceOp { sum, mean };

namespace detail {

template <class C, class T>
concept CommunicatesIn = requires(C& c, std::span<T> buf, std::span<const T> out, int peer, double weight) {
  c.all_reduce(buf, ReduceOp::sum);    // in place, on every worker
  c.broadcast(buf, peer);              // from root `peer` to everyone, in place
  { c.exchange(out, weight, peer, buf, peer) } -> std::convertible_to<double>;
  // send `out` and `weight` to one peer and receive a buffer into `buf` (returning the
  // weight that came with it) from another, in one step, without deadlock for any pattern
  // where every worker sends to one peer and receives from one peer.
};

template <class C>
concept HasRankSize = requires(const C& c) {
  { c.rank() } -> std::convertible_to<int>;
  { c.size() } -> std::convertible_to<int>;
};

template <class C>
concept HasBarrierClock = requires(C& c) {
  c.barrier();
  { c.now() } -> std::convertible_to<double>;  // seconds: wall-clock, or virtual on the simulator
};

}  // namespace detail

/// A communicator between the workers of one SPMD program: rank/size, in-place all-reduce
/// (sum and mean), broadcast, barrier, point-to-point exchange with a scalar weight (for
/// push-sum gossip), and the worker's current time. All operations work on contiguous
/// float and double buffers.
template <class C>
concept Communicator = detail::HasRankSize<C> && detail::HasBarrierClock<C> && detail::CommunicatesIn<C, float> &&
                       detail::CommunicatesIn<C, double>;

/// `static_assert(check_communicator<C>())` names the first missing operation.
template <class C>
consteval bool check_communicator() {
  static_assert(detail::HasRankSize<C>, "slowmo: not a Communicator: it needs `rank() const` and `size() const`");
  static_assert(detail::HasBarrierClock<C>,
                "slowmo: not a Communicator: it needs `barrier()` and `now()` (seconds, wall-clock or virtual)");
  static_assert(detail::CommunicatesIn<C, float> && detail::CommunicatesIn<C, double>,
                "slowmo: not a Communicator: it needs, for float and double spans, `all_reduce(buf, ReduceOp)`, "
                "`broadcast(buf, root)` and `exchange(send, weight, dest, recv, source) -> double`");
  return Communicator<C>;
}

namespace detail {

/// The element types an all-gather moves: values (float, double) and the indices and
/// bytes of compressed payloads (std::int32_t, std::uint8_t).
template <class T>
concept GatherElement = std::same_as<T, float> || std::same_as<T, double> || std::same_as<T, std::int32_t> ||
                        std::same_as<T, std::uint8_t>;

template <class C, class T>
concept GathersIn = requires(C& c, std::span<const T> send, std::span<T> recv, std::span<std::size_t> counts) {
  c.all_gather(send, recv);  // every worker's send, in rank order, into every worker's recv
  { c.all_gather_v(send, recv, counts) } -> std::convertible_to<std::size_t>;  // sizes may differ; the total
};

template <class C>
concept GathersAll = GathersIn<C, float> && GathersIn<C, double> && GathersIn<C, std::int32_t> &&
                     GathersIn<C, std::uint8_t>;

}  // namespace detail

/// A Communicator that also gathers: for float, double, std::int32_t and std::uint8_t spans,
///  - `all_gather(send, recv)`: every worker sends the same number of values; recv, of
///    size() * send.size() values, receives every worker's send in rank order;
///  - `all_gather_v(send, recv, counts) -> std::size_t`: the sizes may differ; counts (one
///    entry per worker) receives how many values each worker sent, recv holds the blocks
///    contiguously in rank order (worker r's starts at counts[0] + ... + counts[r-1]) and
///    must hold at least their total, which is returned; recv past the total is untouched.
/// send may be the worker's own block of recv (in place); otherwise the two must not
/// overlap. Sizes that do not fit (different sends in all_gather, a recv of the wrong size,
/// counts without one entry per worker) throw comm_error on every worker, naming the
/// workers and the sizes; so does a worker calling another collective or element type.
template <class C>
concept GatherCommunicator = Communicator<C> && detail::GathersAll<C>;

/// `static_assert(check_gather_communicator<C>())` names what is missing: the first base
/// operation (as check_communicator does), or the gathers.
template <class C>
consteval bool check_gather_communicator() {
  if constexpr (!Communicator<C>) {
    return check_communicator<C>();
  } else {
    static_assert(detail::GathersAll<C>,
                  "slowmo: not a GatherCommunicator: it needs, for float, double, std::int32_t and std::uint8_t "
                  "spans, `all_gather(send, recv)` and `all_gather_v(send, recv, counts) -> std::size_t`");
    return GatherCommunicator<C>;
  }
}

/// A Communicator whose workers can form groups: `split(color, key)` is a collective over
/// this communicator (MPI_Comm_split semantics) that returns, to every worker, a
/// communicator of the same type over the workers that passed the same color, ranked by
/// (key, rank here). Colors must be >= 0; a negative one fails every worker of the split
/// with comm_error naming the workers (there is no "undefined" color). The new communicator
/// is independent of this one (its collectives and messages never meet this one's), models
/// the same concepts, and every algorithm runs on it unchanged; it may be split again.
template <class C>
concept SplitCommunicator = Communicator<C> && requires(C& c, int color, int key) {
  { c.split(color, key) } -> std::same_as<C>;
};

/// `static_assert(check_split_communicator<C>())` names what is missing.
template <class C>
consteval bool check_split_communicator() {
  if constexpr (!Communicator<C>) {
    return check_communicator<C>();
  } else {
    static_assert(SplitCommunicator<C>,
                  "slowmo: not a SplitCommunicator: it needs `split(color, key)` returning a communicator of the "
                  "same type over the workers of one color");
    return SplitCommunicator<C>;
  }
}

/// A non-blocking collective under way, as a backend's start_all_reduce returns it: wait()
/// completes it (the buffer then holds the result; a failure throws comm_error, as the
/// blocking collective would have), pending() says whether it still has to be waited for.
/// Move-only; destroying one that is still pending waits for it — an operation is never
/// left behind — and throws what that wait throws, except while another exception unwinds
/// the stack (then the wait's error is dropped: the first one is the cause).
template <class Impl>
class Request {
 public:
  Request() = default;  ///< nothing pending
  explicit Request(Impl impl) : impl_(std::move(impl)), pending_(true) {}
  Request(Request&& o) noexcept : impl_(std::move(o.impl_)), pending_(std::exchange(o.pending_, false)) {}
  Request& operator=(Request&& o) {
    if (this != &o) {
      wait();
      impl_ = std::move(o.impl_);
      pending_ = std::exchange(o.pending_, false);
    }
    return *this;
  }
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;
  ~Request() noexcept(false) {
    if (!pending_) return;
    if (std::uncaught_exceptions() > 0) {
      try {
        wait();
      } catch (...) {  // the exception already unwinding is the cause; this one follows from it
      }
    } else {
      wait();
    }
  }

  void wait() {
    if (std::exchange(pending_, false)) impl_.wait();
  }
  bool pending() const { return pending_; }
  /// Whether wait() would return at once (on the simulator: by this worker's virtual clock).
  bool ready() { return !pending_ || impl_.ready(); }

 private:
  Impl impl_{};
  bool pending_ = false;
};

namespace detail {
template <class C, class T>
concept StartsAllReduceIn = requires(C& c, std::span<T> buf) {
  { c.start_all_reduce(buf, ReduceOp::sum) };
  c.start_all_reduce(buf, ReduceOp::sum).wait();
};
}  // namespace detail

/// A Communicator with a non-blocking all-reduce: `start_all_reduce(buf, op)` for float and
/// double spans starts the all-reduce and returns a Request at once; the caller computes,
/// then `request.wait()`; buf must not be touched in between. On the simulator the
/// collective completes in virtual time while the worker's clock goes on, so the overlap of
/// communication with computation shows in the simulated time. One non-blocking collective
/// per worker at a time: another start, or a blocking collective on the same communicator,
/// before the wait throws usage_error (MPI would allow more; the engine checks the rule).
template <class C>
concept NonBlockingCommunicator =
    Communicator<C> && detail::StartsAllReduceIn<C, float> && detail::StartsAllReduceIn<C, double>;

template <class C>
consteval bool check_non_blocking_communicator() {
  if constexpr (!Communicator<C>) {
    return check_communicator<C>();
  } else {
    static_assert(NonBlockingCommunicator<C>,
                  "slowmo: not a NonBlockingCommunicator: it needs, for float and double spans, "
                  "`start_all_reduce(buf, ReduceOp)` returning a request with `wait()`");
    return NonBlockingCommunicator<C>;
  }
}

namespace detail {

template <class C, class T>
concept NeighborSumsIn = requires(C& c, std::span<const T> out, std::span<T> in, std::span<const int> peers,
                                  double weight) {
  { c.neighbor_sum(out, weight, peers, in, peers) } -> std::convertible_to<double>;
};

}  // namespace detail

/// A Communicator that also does one round of gossip over any directed graph, for float and
/// double spans:
///  - `neighbor_sum(out, weight, dests, in, sources) -> double` sends (out, weight) to every
///    worker in dests and writes into `in` the sum of the buffers that the workers in sources
///    send it in the same round, added in the order sources lists them (in = r_0, then
///    in += r_1, ...: the same bits on every backend); returns the sum of their weights, added
///    in the same order from 0. With no sources, in = 0 and it returns 0.
/// It is the push-sum step of Stochastic Gradient Push on graphs whose degrees differ between
/// workers (sgp.hpp). `in` must not overlap `out`. The pattern must be consistent: worker j
/// lists i in its dests exactly when i lists j in its sources, in the same round (a topology
/// checks that at construction, topology.hpp). A dest or source out of range, the worker
/// itself, or listed twice throws comm_error on that worker before anything is sent; a
/// message of another size than `in` throws comm_error on its receiver, naming both workers
/// and the sizes. Where the backend can see it (the simulator and threads always; MPI in
/// validated mode), a message from another round (a pattern that is not consistent) throws
/// comm_error on its receiver, naming the round; on the in-process backends a receive that
/// can never be matched is reported as a deadlock. Nothing allocates once scratch has grown.
template <class C>
concept NeighborCommunicator = Communicator<C> && detail::NeighborSumsIn<C, float> && detail::NeighborSumsIn<C, double>;

/// `static_assert(check_neighbor_communicator<C>())` names what is missing: the first base
/// operation (as check_communicator does), or neighbor_sum.
template <class C>
consteval bool check_neighbor_communicator() {
  if constexpr (!Communicator<C>) {
    return check_communicator<C>();
  } else {
    static_assert(detail::NeighborSumsIn<C, float> && detail::NeighborSumsIn<C, double>,
                  "slowmo: not a NeighborCommunicator: it needs, for float and double spans, "
                  "`neighbor_sum(send, weight, dests, recv, sources) -> double` (dests and sources: "
                  "std::span<const int>)");
    return NeighborCommunicator<C>;
  }
}

namespace detail {

/// The peers of a neighbor_sum, checked on the calling worker before anything moves: in
/// range, not the worker itself, none listed twice. `mark` is the caller's scratch (grown to
/// m once); `who` prefixes the message ("slowmo", "slowmo::mpi") and `worker` names a
/// participant ("worker", "rank"). Returns "" when the peers are fine.
inline std::string neighbor_peer_error(std::string_view who, std::string_view worker, int self, int m,
                                       std::span<const int> peers, const char* what, std::vector<std::uint32_t>& mark,
                                       std::uint32_t& epoch) {
  if (mark.size() < std::size_t(m)) mark.assign(std::size_t(m), 0);
  if (++epoch == 0) std::fill(mark.begin(), mark.end(), 0), epoch = 1;  // wrapped: start over
  for (std::size_t j = 0; j < peers.size(); ++j) {
    const int p = peers[j];
    if (p < 0 || p >= m)
      return concat(who, ": ", worker, " ", self, ": neighbor_sum ", what, "[", j, "] = ", p, " is out of range [0, ",
                    m, ")");
    if (p == self)
      return concat(who, ": ", worker, " ", self, ": neighbor_sum ", what, "[", j, "] = ", p, " is the ", worker,
                    " itself; a ", worker, " keeps its own share and sends none to itself");
    if (mark[std::size_t(p)] == epoch)
      return concat(who, ": ", worker, " ", self, ": neighbor_sum lists ", worker, " ", p, " twice in its ", what,
                    "; each peer may appear once");
    mark[std::size_t(p)] = epoch;
  }
  return {};
}

/// What the backends call an element type in messages and agree on across workers (the
/// codes of float and double are their sizes, as the agreements always sent).
template <GatherElement T>
constexpr std::int64_t element_code() {
  if constexpr (std::same_as<T, float>) return 4;
  else if constexpr (std::same_as<T, double>) return 8;
  else if constexpr (std::same_as<T, std::int32_t>) return 0x104;
  else return 0x101;
}
constexpr const char* element_name(std::int64_t code) {
  switch (code) {
    case 4: return "float";
    case 8: return "double";
    case 0x104: return "int32";
    case 0x101: return "uint8";
  }
  return "none";
}

/// One worker's side of an all-gather, as every worker learns it from the sizes exchange.
struct GatherSizes {
  std::size_t send = 0;    ///< values it sends
  std::size_t recv = 0;    ///< values its recv holds
  std::size_t counts = 0;  ///< entries of its counts (all_gather_v)
};

/// The error every worker of an all-gather reports, or "" when the sizes fit. Every worker
/// computes it from the same sizes (sizes(q) for worker q of m), so all decide alike.
/// `who` prefixes the message ("slowmo", "slowmo::mpi"); `worker` names a participant
/// ("worker", "rank").
template <class Sizes>
std::string gather_size_error(std::string_view who, std::string_view worker, bool variable, int m,
                              const char* type, Sizes&& sizes) {
  constexpr int shown = 8;  // a population of 10^4 workers must not make a 10^4-line message
  // "worker 0: 3, worker 2: 4, ..." over the workers q for which pick(q) holds.
  auto list = [&](auto pick, auto value) {
    std::string out;
    int listed = 0;
    for (int q = 0; q < m; ++q) {
      if (!pick(q)) continue;
      if (listed++ == shown) {
        out += ", ...";
        break;
      }
      out += concat(listed > 1 ? ", " : "", worker, " ", q, ": ", value(q));
    }
    return out;
  };
  auto send = [&](int q) { return sizes(q).send; };
  auto recv = [&](int q) { return sizes(q).recv; };
  auto counts = [&](int q) { return sizes(q).counts; };
  if (!variable) {
    const std::size_t n = send(0);
    bool same = true;
    for (int q = 1; q < m; ++q) same = same && send(q) == n;
    if (!same)
      return concat(who, ": all_gather: the ", worker, "s send different numbers of ", type, " values (",
                    list([&](int q) { return q == 0 || send(q) != n; }, send),
                    "); all_gather needs the same number from every ", worker,
                    " (all_gather_v takes a different number from each)");
    const std::size_t need = std::size_t(m) * n;
    auto wrong = [&](int q) { return recv(q) != need; };
    for (int q = 0; q < m; ++q)
      if (wrong(q))
        return concat(who, ": all_gather of ", n, " ", type, " values from each of ", m, " ", worker,
                      "s: recv must hold size() * send.size() = ", need, " values, but it holds (",
                      list(wrong, recv), ")");
    return {};
  }
  auto bad_counts = [&](int q) { return counts(q) != std::size_t(m); };
  for (int q = 0; q < m; ++q)
    if (bad_counts(q))
      return concat(who, ": all_gather_v: counts must have one entry per ", worker, " (", m, "), but it has (",
                    list(bad_counts, counts), ")");
  std::size_t total = 0;
  for (int q = 0; q < m; ++q) total += send(q);
  auto small = [&](int q) { return recv(q) < total; };
  for (int q = 0; q < m; ++q)
    if (small(q))
      return concat(who, ": all_gather_v: the ", worker, "s send ", total, " ", type, " values in all (",
                    list([](int) { return true; }, send), "), but recv holds fewer (", list(small, recv),
                    "); every ", worker, "'s recv must hold the total");
  return {};
}

/// The error every worker of a split reports when some color is negative, or "": judged from
/// everyone's colors (color(q) for the q-th of m participants, named `worker id(q)`), so
/// that every worker decides alike. `who` prefixes the message.
template <class Color, class Id>
std::string split_color_error(std::string_view who, std::string_view worker, int m, Color color, Id id) {
  std::string bad;
  int listed = 0;
  for (int q = 0; q < m; ++q) {
    if (color(q) >= 0) continue;
    if (listed++ == 8) {
      bad += ", ...";
      break;
    }
    bad += concat(listed > 1 ? ", " : "", worker, " ", id(q), " color ", color(q));
  }
  if (bad.empty()) return {};
  return concat(who, ": split: a color must be >= 0, but ", bad, " (every ", worker,
                " of a split joins the group of its color; there is no 'undefined' color)");
}

/// A stride known only at run time (Map or Ref with InnerStride<>) must be 1.
template <class Derived>
void require_contiguous(const Eigen::DenseBase<Derived>& v) {
  static_assert(Derived::InnerStrideAtCompileTime == 1 || Derived::InnerStrideAtCompileTime == Eigen::Dynamic,
                "slowmo::as_span needs a contiguous vector");
  if constexpr (Derived::InnerStrideAtCompileTime == Eigen::Dynamic)
    if (v.size() > 1 && v.innerStride() != 1)
      throw std::invalid_argument("slowmo::as_span: the vector's inner stride is " + std::to_string(v.innerStride()) +
                                  "; a span needs contiguous elements (stride 1): copy it into a Vector first");
}
}  // namespace detail

/// A span over a contiguous Eigen vector (VectorX, Map, Ref, segment); a strided view throws
/// std::invalid_argument.
template <class Derived>
auto as_span(Eigen::DenseBase<Derived>& v) {
  detail::require_contiguous(v);
  return std::span<typename Derived::Scalar>(v.derived().data(), static_cast<std::size_t>(v.size()));
}
template <class Derived>
auto as_span(const Eigen::DenseBase<Derived>& v) {
  detail::require_contiguous(v);
  return std::span<const typename Derived::Scalar>(v.derived().data(), static_cast<std::size_t>(v.size()));
}

/// Charges `nominal_seconds` of computation to the worker's clock where the backend keeps
/// a virtual one (the simulator scales it by the worker's speed factor); elsewhere time
/// passes for real and this does nothing. Lets one training loop model compute cost on
/// the simulator and run unchanged on real backends.
template <class C>
void charge_compute(C& comm, double nominal_seconds) {
  if constexpr (requires { comm.compute(nominal_seconds); }) comm.compute(nominal_seconds);
}

}  // namespace slowmo
