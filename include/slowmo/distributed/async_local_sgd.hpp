// slowmo/distributed/async_local_sgd.hpp — AsyncLocalSgd<Base, Comm, Rule>: asynchronous
// Local SGD on a shared global model (Liu, Douillard et al. 2024, "Asynchronous Local-SGD
// Training for Language Modeling"). Each worker runs H base steps from the global parameters
// it pulled, pushes its pseudo-gradient d = x_pulled - x, and pulls again; the server applies
// the outer rule on every arrival, so no worker waits for another. With the Delayed Nesterov
// rule (outer/delayed_nesterov.hpp) and Dynamic Local Updates (H per worker from its speed)
// it is the paper's method; with H = 1, an SGD base and a momentum-free rule of lr 1, it is
// classic asynchronous SGD.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "slowmo/core/checkpoint.hpp"
#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/shared_model.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/distributed/detail/sync.hpp"
#include "slowmo/outer/heavy_ball.hpp"
#include "slowmo/outer/rule.hpp"

namespace slowmo {

/// Dynamic Local Updates (Liu et al. 2024, Sec. 4.2): worker w runs
/// H_w = max(1, floor(v_w / max_v v_v * H)) base steps per round, v_w its speed, so that fast
/// and slow workers push about as often in time rather than in steps.
struct DynamicLocalUpdates {
  bool enabled = false;
  /// Each worker's speed (any unit: steps per second, or 1 / step time), one per worker. Empty:
  /// measured, each worker timing its own first `measure_rounds` rounds of H steps with
  /// comm.now() (virtual time on the simulator) and taking their mean; the speeds are then
  /// shared by one all-reduce, the only time the workers wait for each other.
  std::vector<double> speeds{};
  std::int64_t measure_rounds = 1;
};

/// How the server weighs a push by its staleness s (the updates by others since its worker's
/// last pull): scaled by (1 + s)^-exponent (polynomial staleness discounting, as in FedAsync,
/// Xie et al. 2019), and dropped (no update of the rule, though it still counts as a version)
/// when s > max_staleness. The defaults weigh every push alike.
struct StalenessWeighting {
  double exponent = 0;
  std::int64_t max_staleness = -1;  ///< -1: none is dropped
};

struct AsyncLocalSgdOptions {
  std::int64_t H = 50;                ///< base steps per round (the fastest worker's, with DyLU)
  OnSync base_state = OnSync::keep;   ///< the base's state after each pull: keep or reset (no average: no one waits)
  DynamicLocalUpdates dylu{};
  StalenessWeighting staleness{};
  bool broadcast_initial = true;      ///< start(x): every worker and the server take worker 0's parameters
};

namespace detail {

/// The state of an asynchronous outer loop's server, as a checkpoint holds it: the global
/// parameters, the rule's state, the version (pushes served) and the rounds (pushes applied
/// to the rule; fewer when stale pushes are dropped).
template <class Rule>
struct RuleServerState {
  Rule rule;
  Host::vector<typename Rule::scalar_type> params{};
  std::int64_t version = 0, rounds = 0;
};

/// The server of an asynchronous outer loop: the global parameters x0 and an outer rule,
/// applied to each arriving pseudo-gradient (weighed by its staleness) with the count of
/// pushes applied so far as the rule's round.
template <class Rule>
class RuleServer final : public ModelServer<typename Rule::scalar_type> {
 public:
  using T = typename Rule::scalar_type;
  using State = RuleServerState<Rule>;

  /// A fresh server at x.
  RuleServer(const Rule& rule, std::span<const T> x, StalenessWeighting weighting)
      : state_{rule, Eigen::Map<const Host::vector<T>>(x.data(), Eigen::Index(x.size()))}, weighting_(weighting) {
    state_.rule.init(state_.params.size());
    xd_.resize(state_.params.size());
  }
  /// A server restored from a checkpoint.
  RuleServer(State state, StalenessWeighting weighting) : state_(std::move(state)), weighting_(weighting) {
    xd_.resize(state_.params.size());
    initial_version_ = state_.version;
  }

  std::size_t size() const override { return std::size_t(state_.params.size()); }
  std::int64_t initial_version() const override { return initial_version_; }
  void apply(const Arrival& arrival, std::span<const T> push) override {
    std::lock_guard lock(mutex_);
    ++state_.version;
    const std::int64_t s = arrival.staleness;
    if (weighting_.max_staleness >= 0 && s > weighting_.max_staleness) return;
    xd_ = Eigen::Map<const Host::vector<T>>(push.data(), xd_.size());
    if (weighting_.exponent != 0) xd_ *= T(std::pow(1.0 + double(s), -weighting_.exponent));
    const auto kernel = state_.rule.kernel(OuterContext{.round = state_.rounds, .lr_scale = 1.0});
    std::apply(
        [&](auto&... buffer) { Host::for_each(xd_.size(), kernel, xd_.data(), state_.params.data(), buffer.data()...); },
        state_.rule.buffers());
    ++state_.rounds;
  }
  void read(std::span<T> out) const override {
    std::lock_guard lock(mutex_);
    std::copy(state_.params.data(), state_.params.data() + state_.params.size(), out.data());
  }
  /// Copies the whole state out (for a checkpoint), consistent with the pushes applied so far.
  void snapshot(State& out) const {
    std::lock_guard lock(mutex_);
    out = state_;
  }

 private:
  State state_;
  StalenessWeighting weighting_;
  Host::vector<T> xd_;
  std::int64_t initial_version_ = 0;
  mutable std::mutex mutex_;  // the backend serialises apply and read; snapshot comes from rank 0's worker
};

}  // namespace detail

/// Each worker calls start(x) once (it hosts the server, built identically everywhere, and
/// pulls), then step(x, g) with its own gradient. After its H_w-th base step of a round, in
/// place in x: x = x_pulled - x (the pseudo-gradient), push(x), pull(x) (the new global
/// parameters), and the base is rebased there. The rule runs on the server.
///
/// Checkpoints: the run has no point where every worker stands still, so drain(x) makes one
/// (collectively): then the workers' checkpoints, rank 0's with the server's state, hold the
/// whole run, and a run resumed from them (load_checkpoint on every worker, which hosts the
/// server again) continues bit for bit on the simulator (whose clocks it restores).
template <class Base, class Comm, class Rule = outer::HeavyBall<typename Base::scalar_type>>
class AsyncLocalSgd {
  static_assert(detail::check_distributed<Base, Comm>() && check_shared_model_communicator<Comm>(),
                "slowmo::AsyncLocalSgd<Base, Comm, Rule>: see the message above");
  static_assert(check_outer_rule<Rule>(), "slowmo::AsyncLocalSgd: Rule must model slowmo::OuterRule");
  static_assert(std::is_same_v<space_of_t<Base>, Host>,
                "slowmo::AsyncLocalSgd: the shared model lives in host memory: the base must too");
  static_assert(std::is_same_v<typename Rule::scalar_type, typename Base::scalar_type>,
                "slowmo::AsyncLocalSgd: the outer rule must have the base's scalar type");

 public:
  using scalar_type = typename Base::scalar_type;
  using space_type = Host;
  using vector_type = Host::vector<scalar_type>;
  using ref_type = Host::ref<scalar_type>;
  using const_ref_type = Host::const_ref<scalar_type>;
  using options_type = AsyncLocalSgdOptions;
  using base_type = Base;
  using comm_type = Comm;
  using rule_type = Rule;

  AsyncLocalSgd(Base base, Comm& comm, AsyncLocalSgdOptions options = {}, Rule rule = Rule{})
      : options_(validated(options, comm)), base_(std::move(base)), comm_(comm), rule_(std::move(rule)),
        server_state_{rule_} {}

  /// Before the first gradient: every worker takes worker 0's parameters (broadcast_initial),
  /// hosts the server at them (the backend keeps worker 0's) and pulls.
  void start(ref_type x) {
    detail::require_not_stepped("AsyncLocalSgd", steps_);
    detail::check_step_sizes("AsyncLocalSgd", x.size(), x.size());
    if (options_.broadcast_initial) comm().broadcast(as_span(x), 0);
    host(std::make_unique<Server>(rule_, std::span<const scalar_type>(as_span(x)), options_.staleness));
    pull(x);
    if (options_.dylu.enabled && !options_.dylu.speeds.empty()) round_steps_ = dylu_steps(options_.dylu.speeds);
    begin_measuring();
  }

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes("AsyncLocalSgd", x.size(), g.size(), x_pulled_.size() > 0 ? x_pulled_.size() : -1);
    detail::require_started("AsyncLocalSgd", x_pulled_.size() > 0);
    base_.step(x, g);
    ++steps_;
    drained_ = 0;
    if (++local_ < round_steps_) return;
    push(x);
    pull(x);
    rebase_base(x);
    if (measuring()) {
      ++measured_rounds_;
      if (measured_rounds_ == options_.dylu.measure_rounds) measure_speeds();
    }
  }

  /// Collective: every worker pushes the steps of its round so far (if any), waits until all
  /// have, and pulls the global model, which every worker then holds (one version, nothing in
  /// flight). Rank 0 copies the server's state meanwhile, so that the checkpoints saved now
  /// hold the whole run. A round cut short is pushed as it is; the next one starts afresh (and
  /// DyLU's measurement, if it was under way, starts again).
  void drain(ref_type x) {
    detail::check_step_sizes("AsyncLocalSgd", x.size(), x.size(), x_pulled_.size() > 0 ? x_pulled_.size() : -1);
    detail::require_started("AsyncLocalSgd", x_pulled_.size() > 0);
    if (local_ > 0) push(x);
    comm().barrier();  // every push has been applied: each returned once it was
    if (hosted_here_) hosted_here_->snapshot(server_state_);
    cut_clock_ = comm().now();
    comm().barrier();  // nobody pushes before the copy is taken
    pull(x);
    rebase_base(x);
    if (measuring()) begin_measuring();
    drained_ = 1;
  }

  /// The parameters are x now, set from outside: this worker's round goes on from x (its next
  /// push holds only the steps taken from here), and its base is rebased. The global model is
  /// the server's, untouched.
  void rebase(const_ref_type x) {
    x_pulled_ = x;
    slowmo::rebase(base_, x);
  }

  /// Throws unless this state can be checkpointed: before start, or right after drain().
  /// (save_checkpoint calls it.)
  void check_checkpoint() const {
    if (x_pulled_.size() > 0 && !drained_)
      throw usage_error(detail::concat(
          "slowmo::AsyncLocalSgd: worker ", comm().rank(), ": checkpoint at step ", steps_,
          " without drain(x): the other workers and the server are somewhere else in the run; call drain(x) on "
          "every worker, then save"));
  }

  /// Collective, and called by load_checkpoint once the state is restored (a state from
  /// before start needs nothing): the clock back at the drain (on the simulator), the server
  /// hosted again from rank 0's copy, the global model pulled into the pulled parameters. It
  /// stands where the drain's second barrier stood (host_model costs the same), so clocks,
  /// versions and values continue as on the uninterrupted run, given the parameters x the
  /// drain left (save them with the checkpoint).
  void on_restored() {
    if (x_pulled_.size() == 0) return;
    if constexpr (requires(Comm& c) { c.advance_to(0.0); })
      if (comm().now() < cut_clock_) comm().advance_to(cut_clock_);
    const std::span<const scalar_type> at(x_pulled_.data(), std::size_t(x_pulled_.size()));
    if (comm().rank() == 0 && server_state_.params.size() != x_pulled_.size())
      throw checkpoint_error(detail::concat("slowmo::AsyncLocalSgd: worker 0: the loaded state holds no server "
                                            "(rank 0 loads rank 0's checkpoint, taken after drain)"));
    host(comm().rank() == 0 ? std::make_unique<Server>(server_state_, options_.staleness)
                            : std::make_unique<Server>(rule_, at, options_.staleness));
    pull(x_pulled_);
    if (measuring()) begin_measuring();
  }

  scalar_type last_lr() const { return base_.last_lr(); }
  std::int64_t steps() const { return steps_; }
  /// Pushes this worker has made, and the sum of their staleness.
  std::int64_t pushes() const { return pushes_; }
  std::int64_t staleness_sum() const { return staleness_sum_; }
  /// What the last push and pull returned.
  const Pushed& last_push() const { return last_push_; }
  const Pulled& last_pull() const { return last_pull_; }
  /// This worker's base steps per round (H, or its DyLU share).
  std::int64_t round_steps() const { return round_steps_; }
  const AsyncLocalSgdOptions& options() const { return options_; }
  const Base& base() const { return base_; }
  Base& base() { return base_; }
  Comm& comm() const { return comm_.get(); }

  /// Only right after a pull do the parameters equal the global model; even then other workers
  /// hold other versions, so nothing is known to agree.
  Agreement agreement() const { return {.parameters = false, .state = false}; }

  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"combinator", scope}, "AsyncLocalSgd");
    f(StateKey{"H", scope}, options_.H);
    f(StateKey{"dylu", scope}, options_.dylu.enabled);
    const StateScope rule_scope{"rule", scope};
    rule_.visit_structure(f, &rule_scope);
    const StateScope base_scope{"base", scope};
    slowmo::visit_structure(base_, f, &base_scope);
  }
  /// This worker's state: the parameters it pulled, its place in the round and in time, its
  /// base; on rank 0 also the server's state as of the last drain() (parameters, version,
  /// rounds, the rule's buffers), all of kind progress: no worker resets or re-anchors them.
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    visit(*this, v, scope);
  }

 private:
  using Server = detail::RuleServer<Rule>;

  void host(std::unique_ptr<Server> server) {
    Server* mine = server.get();
    comm().host_model(std::unique_ptr<ModelServer<scalar_type>>(std::move(server)));
    hosted_here_ = comm().rank() == 0 ? mine : nullptr;  // the backend kept rank 0's, dropped the others
  }
  /// The round is over (or cut short): d = x_pulled - x, formed in x, pushed.
  void push(ref_type x) {
    x = x_pulled_ - x;
    last_push_ = comm().push(std::span<const scalar_type>(x.data(), std::size_t(x.size())));
    ++pushes_;
    staleness_sum_ += last_push_.staleness;
  }
  void pull(ref_type x) {
    last_pull_ = comm().pull(std::span<scalar_type>(x.data(), std::size_t(x.size())));
    x_pulled_ = x;
  }
  void rebase_base(ref_type x) {
    detail::apply_sync_policy(options_.base_state, base_, comm());
    slowmo::rebase(base_, x);
    local_ = 0;
  }

  bool measuring() const { return options_.dylu.enabled && options_.dylu.speeds.empty() && !speeds_measured_; }
  void begin_measuring() {
    measure_started_ = comm().now();
    measured_rounds_ = 0;
  }
  std::int64_t dylu_steps(const std::vector<double>& speeds) const {
    const double fastest = *std::max_element(speeds.begin(), speeds.end());
    const double mine = speeds[std::size_t(comm().rank())];
    return std::max<std::int64_t>(1, std::int64_t(std::floor(mine / fastest * double(options_.H))));
  }
  /// After measure_rounds rounds of H steps on every worker: speed = steps / seconds, shared
  /// by one all-reduce of a vector with this worker's entry set.
  void measure_speeds() {
    std::vector<double> speeds(std::size_t(comm().size()), 0.0);
    const double seconds = comm().now() - measure_started_;
    const double steps = double(options_.H * options_.dylu.measure_rounds);
    speeds[std::size_t(comm().rank())] = seconds > 0 ? steps / seconds : 1.0;
    comm().all_reduce(std::span<double>(speeds), ReduceOp::sum);
    round_steps_ = dylu_steps(speeds);
    speeds_measured_ = 1;
  }

  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    v(StateKey{"pulled_params", scope}, self.x_pulled_, StateKind::anchor);
    v(StateKey{"steps", scope}, self.steps_, StateKind::progress);
    v(StateKey{"local_steps", scope}, self.local_, StateKind::progress);
    v(StateKey{"round_steps", scope}, self.round_steps_, StateKind::progress);
    v(StateKey{"pushes", scope}, self.pushes_, StateKind::progress);
    v(StateKey{"staleness_sum", scope}, self.staleness_sum_, StateKind::progress);
    v(StateKey{"speeds_measured", scope}, self.speeds_measured_, StateKind::progress);
    v(StateKey{"drained", scope}, self.drained_, StateKind::progress);
    v(StateKey{"clock", scope}, self.cut_clock_, StateKind::progress);
    const StateScope base_scope{"base", scope};
    self.base_.visit_state(v, &base_scope);
    if (self.comm().rank() != 0) return;
    auto& server = self.server_state_;
    const StateScope server_scope{"server", scope};
    v(StateKey{"params", &server_scope}, server.params, StateKind::progress);
    v(StateKey{"version", &server_scope}, server.version, StateKind::progress);
    v(StateKey{"rounds", &server_scope}, server.rounds, StateKind::progress);
    const StateScope rule_scope{"rule", &server_scope};
    server.rule.visit_state([&](const StateKey& key, auto& ref, StateKind) { v(key, ref, StateKind::progress); },
                            &rule_scope);
  }

  static AsyncLocalSgdOptions validated(const AsyncLocalSgdOptions& o, const Comm& comm) {
    detail::require_option(o.H >= 1, "AsyncLocalSgd", "H", o.H, "must be >= 1 (base steps per round)");
    detail::require_option(o.base_state != OnSync::average, "AsyncLocalSgd", "base_state", to_string(o.base_state),
                           "must be keep or reset: averaging would make the workers wait for each other");
    const auto& s = o.dylu.speeds;
    detail::require_option(s.empty() || s.size() == std::size_t(comm.size()), "AsyncLocalSgd", "dylu.speeds.size()",
                           s.size(), detail::concat("must be 0 (measured) or the number of workers, ", comm.size()));
    for (std::size_t w = 0; w < s.size(); ++w)
      detail::require_option(detail::finite(s[w]) && s[w] > 0, "AsyncLocalSgd", detail::concat("dylu.speeds[", w, "]"),
                             s[w], "must be finite and > 0");
    detail::require_option(o.dylu.measure_rounds >= 1, "AsyncLocalSgd", "dylu.measure_rounds", o.dylu.measure_rounds,
                           "must be >= 1");
    detail::require_option(detail::finite(o.staleness.exponent) && o.staleness.exponent >= 0, "AsyncLocalSgd",
                           "staleness.exponent", o.staleness.exponent, "must be finite and >= 0");
    detail::require_option(o.staleness.max_staleness >= -1, "AsyncLocalSgd", "staleness.max_staleness",
                           o.staleness.max_staleness, "must be >= 0, or -1 (none is dropped)");
    return o;
  }

  AsyncLocalSgdOptions options_;
  Base base_;
  detail::CommHolder<Comm> comm_;
  Rule rule_;
  vector_type x_pulled_;
  std::int64_t steps_ = 0, local_ = 0, pushes_ = 0, staleness_sum_ = 0;
  std::int64_t round_steps_ = options_.H;
  std::int64_t speeds_measured_ = 0, measured_rounds_ = 0;
  double measure_started_ = 0;
  std::int64_t drained_ = 0;  // the state is a cut of the whole run (drain(x) since the last step)
  double cut_clock_ = 0;      // this worker's clock at the drain
  Server* hosted_here_ = nullptr;  // the server, on rank 0 (the backend owns it)
  typename Server::State server_state_;  // rank 0: the server as of the last drain
  Pushed last_push_{};
  Pulled last_pull_{};
};

}  // namespace slowmo
