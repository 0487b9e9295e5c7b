// slowmo/distributed/sgp.hpp — Sgp<Base, Comm, Topology>: Stochastic Gradient Push (Assran,
// Loizou, Ballas, Rabbat, ICML 2019, Algorithm 1): local steps on a push-sum numerator,
// mixed with out-peers over a time-varying directed graph, no global synchronisation.
//
// Two paths, chosen by the topology's form (topology.hpp):
//  - a PermutationTopology (ExponentialGraph, Ring): every worker has the same k out-peers and
//    k in-peers, one exchange per peer index j (any Communicator); the weights stay 1;
//  - a DirectedTopology (DirectedGraph, RandomDirectedGraph, your own): worker i has k_i(s)
//    out-peers, which may differ between workers and rounds, and any number of in-peers; it
//    keeps x_i / (k_i + 1), sends the same share to each out-peer and adds what its in-peers
//    sent, all in one neighbor_sum (a NeighborCommunicator: the simulator, threads, MPI and
//    NCCL are). The weights move and z = x / w removes the bias they carry (Nedic &
//    Olshevsky 2016). At construction the worker checks its own lists against its peers'
//    over the graph's period() rounds (or the first round), naming round and workers.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/distributed/detail/sync.hpp"
#include "slowmo/distributed/rules.hpp"
#include "slowmo/distributed/topology.hpp"

namespace slowmo {

struct SgpOptions {
  bool broadcast_initial = true;  ///< start(x): every worker takes worker 0's parameters (Alg. 1 starts all from one point)
};

/// After start(z), each worker keeps a numerator x_i and a weight w_i (initially its parameters and 1) and
/// the user holds the de-biased model z_i = x_i / w_i: the gradient is evaluated at z, and
/// step(z, g) does
///   x_i = base step of x_i with g                       (local optimisation)
///   send x_i / (k_i + 1) and w_i / (k_i + 1) to each of the k_i out-peers of this round,
///   keep the same share, add what the in-peers sent     (push-sum, column stochastic)
///   z_i = x_i / w_i.
/// The sums over workers of x and of w are preserved by every round (sum w = m).
template <class Base, class Comm, Topology Graph = ExponentialGraph>
class Sgp {
  static_assert(detail::check_distributed<Base, Comm>(), "slowmo::Sgp<Base, Comm, Graph>: see the message above");
  /// A directed topology (degrees that differ) needs neighbor_sum; a permutation one, exchange.
  static consteval bool communicator_fits() {
    if constexpr (DirectedTopology<Graph>) return check_neighbor_communicator<Comm>();
    else return true;
  }
  static_assert(communicator_fits(),
                "slowmo::Sgp on a DirectedTopology needs a NeighborCommunicator: see the message above");

 public:
  using scalar_type = typename Base::scalar_type;
  using space_type = space_of_t<Base>;  // buffers and outer updates live where the base's do
  using vector_type = typename space_type::template vector<scalar_type>;
  using ref_type = typename space_type::template ref<scalar_type>;
  using const_ref_type = typename space_type::template const_ref<scalar_type>;
  using base_type = Base;
  using comm_type = Comm;
  using topology_type = Graph;

  /// The topology must span the communicator's workers, e.g. ExponentialGraph(comm.size(), 1).
  Sgp(Base base, Comm& comm, Graph graph, SgpOptions options = {})
      : options_(options), base_(std::move(base)), comm_(comm), graph_(std::move(graph)) {
    detail::require_option(graph_.size() == comm.size(), "Sgp", "topology size", graph_.size(),
                           detail::concat("must equal the number of workers, ", comm.size()));
    if constexpr (DirectedTopology<Graph>) {
      detail::TopologyScratch scratch;
      detail::check_topology_of(graph_, comm.rank(), checked_rounds(graph_), "Sgp", scratch);
    }
  }
  /// The exponential graph (or ring) with `peers` out-peers per round over all workers.
  Sgp(Base base, Comm& comm, int peers = 1, SgpOptions options = {})
      : Sgp(std::move(base), comm, make_graph(comm, peers), options) {}

  /// Before the first gradient: every worker takes worker 0's parameters (broadcast_initial)
  /// and push-sum starts there with weight 1.
  void start(ref_type z) {
    detail::require_not_stepped("Sgp", round_);
    detail::check_step_sizes("Sgp", z.size(), z.size());
    if (options_.broadcast_initial) comm_.get().broadcast(as_span(z), 0);
    rebase(z);
  }

  void step(ref_type z, const_ref_type g) {
    detail::check_step_sizes("Sgp", z.size(), g.size(), num_.size() > 0 ? num_.size() : -1);
    detail::require_started("Sgp", num_.size() > 0);
    if (share_.size() != z.size()) {  // scratch (also after a resume): the only allocations
      share_.resize(z.size());
      received_.resize(z.size());
      if constexpr (!DirectedTopology<Graph>)
        if (graph_.peers() > 1) extra_.resize(z.size());
    }
    Comm& comm = comm_.get();
    base_.step(num_, g);
    if constexpr (DirectedTopology<Graph>) {
      directed_step(comm, z);
    } else {
      const int k = graph_.peers();
      const int me = comm.rank();
      space_type::for_each(z.size(), rules::PushSumShare<scalar_type>{scalar_type(1.0 / (k + 1))}, share_.data(),
                           num_.data());
      const double w_share = weight_ / (k + 1);
      double w_in = 0;
      for (int j = 0; j < k; ++j) {
        auto& into = j == 0 ? received_ : extra_;
        w_in += comm.exchange(as_span(std::as_const(share_)), w_share, graph_.out_peer(me, round_, j),
                              as_span(into), graph_.in_peer(me, round_, j));
        if (j > 0) space_type::for_each(z.size(), rules::AddTo{}, received_.data(), extra_.data());
      }
      weight_ = w_share + w_in;
      space_type::for_each(z.size(), rules::PushSumCombine<scalar_type>{scalar_type(weight_)}, num_.data(), z.data(),
                           share_.data(), received_.data());
      ++round_;
    }
  }

  /// The parameters were set from outside (start, or a wrapper's synchronisation, identical on
  /// all workers): restart push-sum from them with weight 1.
  void rebase(const_ref_type z) {
    num_ = z;
    weight_ = 1.0;
    slowmo::rebase(base_, z);
  }

  scalar_type last_lr() const { return base_.last_lr(); }
  std::int64_t steps() const { return round_; }
  double weight() const { return weight_; }
  const vector_type& numerator() const { return num_; }
  const Graph& topology() const { return graph_; }
  const SgpOptions& options() const { return options_; }

  /// Structural: the graph decides who talks to whom at each round.
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"combinator", scope}, "Sgp");
    f(StateKey{"topology", scope}, detail::type_name<Graph>());
    if constexpr (requires { graph_.peers(); }) f(StateKey{"peers", scope}, std::int64_t(graph_.peers()));
    if constexpr (requires { graph_.seed(); }) f(StateKey{"seed", scope}, std::int64_t(graph_.seed()));
    if constexpr (requires { graph_.period(); }) f(StateKey{"period", scope}, std::int64_t(graph_.period()));
    const StateScope base_scope{"base", scope};
    slowmo::visit_structure(base_, f, &base_scope);
  }
  const Base& base() const { return base_; }
  Base& base() { return base_; }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    visit(*this, v, scope);
  }

 private:
  /// One round on a DirectedTopology (the base step is done): k_i = this round's out-degree.
  void directed_step(Comm& comm, ref_type z) {
    const int me = comm.rank();
    if constexpr (requires { graph_.max_degree(); }) {  // so that no step allocates (a copy keeps no capacity)
      const auto most = std::size_t(graph_.max_degree());
      if (out_.capacity() < most) out_.reserve(most);
      if (in_.capacity() < most) in_.reserve(most);
    }
    slowmo::out_peers(graph_, me, round_, out_);
    slowmo::in_peers(graph_, me, round_, in_);
    const std::size_t parts = out_.size() + 1;
    space_type::for_each(z.size(), rules::PushSumShare<scalar_type>{scalar_type(1.0 / double(parts))},
                         share_.data(), num_.data());
    const double w_share = weight_ / double(parts);
    const double w_in = comm.neighbor_sum(as_span(std::as_const(share_)), w_share, std::span<const int>(out_),
                                          as_span(received_), std::span<const int>(in_));
    weight_ = w_share + w_in;
    space_type::for_each(z.size(), rules::PushSumCombine<scalar_type>{scalar_type(weight_)}, num_.data(), z.data(),
                         share_.data(), received_.data());
    ++round_;
  }

  static Graph make_graph(const Comm& comm, int peers) {
    detail::require_option(peers >= 1 && peers <= comm.size() - 1, "Sgp", "peers", peers,
                           detail::concat("must be in [1, m - 1] = [1, ", comm.size() - 1, "] for ", comm.size(),
                                          " workers"));
    return Graph(comm.size(), peers);
  }

  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    v(StateKey{"numerator", scope}, self.num_, StateKind::anchor);
    v(StateKey{"push_sum_weight", scope}, self.weight_, StateKind::anchor);
    v(StateKey{"round", scope}, self.round_, StateKind::progress);
    const StateScope base_scope{"base", scope};
    self.base_.visit_state(v, &base_scope);
  }

  SgpOptions options_;
  Base base_;
  detail::CommHolder<Comm> comm_;
  Graph graph_;
  vector_type num_, share_, received_, extra_;
  std::vector<int> out_, in_;  // a DirectedTopology's lists of this round (scratch)
  double weight_ = 1.0;
  std::int64_t round_ = 0;
};

}  // namespace slowmo
