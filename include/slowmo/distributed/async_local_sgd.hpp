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
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

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
  /// measured, each worker timing its own first round with comm.now() (virtual time on the
  /// simulator); the speeds are then shared by one all-reduce at the end of that round, the
  /// only time the workers wait for each other.
  std::vector<double> speeds{};
};

struct AsyncLocalSgdOptions {
  std::int64_t H = 50;                ///< base steps per round (the fastest worker's, with DyLU)
  OnSync base_state = OnSync::keep;   ///< the base's state after each pull: keep or reset (no average: no one waits)
  DynamicLocalUpdates dylu{};
  bool broadcast_initial = true;      ///< start(x): every worker and the server take worker 0's parameters
};

namespace detail {

/// The server of an asynchronous outer loop: the global parameters x0 and an outer rule,
/// applied to each arriving pseudo-gradient with the arrival's index as the rule's round.
template <class Rule>
class RuleServer final : public ModelServer<typename Rule::scalar_type> {
 public:
  using T = typename Rule::scalar_type;
  using vector_type = Host::vector<T>;

  RuleServer(const Rule& rule, std::span<const T> x) : rule_(rule) {
    x0_ = Eigen::Map<const vector_type>(x.data(), Eigen::Index(x.size()));
    xd_.resize(x0_.size());
    rule_.init(x0_.size());
  }
  std::size_t size() const override { return std::size_t(x0_.size()); }
  void apply(int, std::span<const T> push) override {
    xd_ = Eigen::Map<const vector_type>(push.data(), xd_.size());
    const auto kernel = rule_.kernel(OuterContext{.round = arrivals_, .lr_scale = 1.0});
    std::apply([&](auto&... buffer) { Host::for_each(xd_.size(), kernel, xd_.data(), x0_.data(), buffer.data()...); },
               rule_.buffers());
    ++arrivals_;
  }
  void read(std::span<T> out) const override { std::copy(x0_.data(), x0_.data() + x0_.size(), out.data()); }

 private:
  Rule rule_;
  vector_type x0_, xd_;
  std::int64_t arrivals_ = 0;
};

}  // namespace detail

/// Each worker calls start(x) once (it hosts the server, built identically everywhere, and
/// pulls), then step(x, g) with its own gradient. After its H_w-th base step of a round, in
/// place in x: x = x_pulled - x (the pseudo-gradient), push(x), pull(x) (the new global
/// parameters), and the base is rebased there. The rule runs on the server.
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
      : options_(validated(options, comm)), base_(std::move(base)), comm_(comm), rule_(std::move(rule)) {}

  /// Before the first gradient: every worker takes worker 0's parameters (broadcast_initial),
  /// hosts the server at them (the backend keeps worker 0's) and pulls.
  void start(ref_type x) {
    detail::require_not_stepped("AsyncLocalSgd", steps_);
    detail::check_step_sizes("AsyncLocalSgd", x.size(), x.size());
    if (options_.broadcast_initial) comm().broadcast(as_span(x), 0);
    comm().host_model(std::make_unique<detail::RuleServer<Rule>>(rule_, std::span<const scalar_type>(as_span(x))));
    pull(x);
    if (options_.dylu.enabled && !options_.dylu.speeds.empty()) round_steps_ = dylu_steps(options_.dylu.speeds);
    round_started_ = comm().now();
  }

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes("AsyncLocalSgd", x.size(), g.size(), x_pulled_.size() > 0 ? x_pulled_.size() : -1);
    detail::require_started("AsyncLocalSgd", x_pulled_.size() > 0);
    base_.step(x, g);
    ++steps_;
    if (++local_ < round_steps_) return;
    // The round is over: push d = x_pulled - x, formed in x, and pull the new global model.
    x = x_pulled_ - x;
    last_push_ = comm().push(std::span<const scalar_type>(x.data(), std::size_t(x.size())));
    ++pushes_;
    staleness_sum_ += last_push_.staleness;
    pull(x);
    detail::apply_sync_policy(options_.base_state, base_, comm());
    slowmo::rebase(base_, x);
    local_ = 0;
    if (options_.dylu.enabled && options_.dylu.speeds.empty() && pushes_ == 1) measure_speeds();
    round_started_ = comm().now();
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
  /// This worker's state: the parameters it pulled, its place in the round, its base. (The
  /// server's state lives with the backend.)
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    visit(*this, v, scope);
  }

 private:
  void pull(ref_type x) {
    last_pull_ = comm().pull(std::span<scalar_type>(x.data(), std::size_t(x.size())));
    x_pulled_ = x;
  }

  std::int64_t dylu_steps(const std::vector<double>& speeds) const {
    const double fastest = *std::max_element(speeds.begin(), speeds.end());
    const double mine = speeds[std::size_t(comm().rank())];
    return std::max<std::int64_t>(1, std::int64_t(std::floor(mine / fastest * double(options_.H))));
  }
  /// After the first round (H steps on every worker): speed = H / seconds, shared by one
  /// all-reduce of a vector with this worker's entry set.
  void measure_speeds() {
    std::vector<double> speeds(std::size_t(comm().size()), 0.0);
    const double seconds = comm().now() - round_started_;
    speeds[std::size_t(comm().rank())] = seconds > 0 ? double(options_.H) / seconds : 1.0;
    comm().all_reduce(std::span<double>(speeds), ReduceOp::sum);
    round_steps_ = dylu_steps(speeds);
  }

  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    v(StateKey{"pulled_params", scope}, self.x_pulled_, StateKind::anchor);
    v(StateKey{"steps", scope}, self.steps_, StateKind::progress);
    v(StateKey{"local_steps", scope}, self.local_, StateKind::progress);
    v(StateKey{"round_steps", scope}, self.round_steps_, StateKind::progress);
    const StateScope base_scope{"base", scope};
    self.base_.visit_state(v, &base_scope);
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
    return o;
  }

  AsyncLocalSgdOptions options_;
  Base base_;
  detail::CommHolder<Comm> comm_;
  Rule rule_;
  vector_type x_pulled_;
  std::int64_t steps_ = 0, local_ = 0, pushes_ = 0, staleness_sum_ = 0;
  std::int64_t round_steps_ = options_.H;
  double round_started_ = 0;
  Pushed last_push_{};
  Pulled last_pull_{};
};

}  // namespace slowmo
