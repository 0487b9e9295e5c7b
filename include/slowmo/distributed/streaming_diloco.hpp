// slowmo/distributed/streaming_diloco.hpp — StreamingDiLoCo<Base, Comm, Rule>: DiLoCo whose
// outer step synchronises one fragment of the parameters at a time and overlaps that
// communication with the next inner steps (Douillard et al. 2025, "Streaming DiLoCo with
// overlapping communication"; torchft's DiLoCo with fragment_sync_delay and
// fragment_update_alpha).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <tuple>
#include <utility>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/distributed/detail/sync.hpp"
#include "slowmo/outer/heavy_ball.hpp"
#include "slowmo/outer/rule.hpp"
#include "slowmo/outer/rules.hpp"

namespace slowmo {

struct StreamingDiLoCoOptions {
  std::int64_t H = 100;       ///< inner steps between two synchronisations of one fragment (torchft's sync_every)
  int fragments = 1;          ///< P: contiguous segments of the parameters, one synchronised every H / P steps
  std::int64_t overlap = 0;   ///< inner steps between a fragment's all-reduce starting and its outer step (fragment_sync_delay), < H / P
  double alpha = 0.0;         ///< merge x = (1 - alpha) x_global + alpha x_local (fragment_update_alpha), in [0, 1]
  bool broadcast_initial = true;  ///< start(x): every worker takes worker 0's parameters
};

namespace detail {
template <class Base>
using diloco_outer_rule = outer::HeavyBall<typename Base::scalar_type, space_of_t<Base>>;
}  // namespace detail

/// The parameters are cut into P contiguous fragments, fragment p = [p n / P, (p + 1) n / P).
/// With S = H / P, the k-th synchronisation (k = 0, 1, ...) is fragment k mod P's, at inner
/// step (k + 1) S:
///  - at step (k + 1) S - overlap, the fragment's parameters are copied and their mean over
///    the workers starts (a non-blocking all-reduce); the inner steps go on meanwhile;
///  - at step (k + 1) S, the worker waits for it; with d = x0_p - mean(x_p) (the fragment's
///    pseudo-gradient at the start) the rule moves x0_p (the global fragment), and the
///    worker's fragment becomes x_p = x0_p + alpha (x_p - x0_p), its local progress since
///    the start kept in proportion alpha.
/// Every fragment is thus synchronised every H steps; a synchronisation moves n / P values
/// (the peak per exchange falls by P); with P = 1, overlap = 0 and alpha = 0 this is DiLoCo
/// (OuterLoop with the same rule, raw pseudo-gradient, base state kept) bit for bit. The
/// rule's state is per element, so each fragment has its own; its OuterContext::round is
/// the fragment's own count of synchronisations. The base's state is kept, as torchft does.
template <class Base, NonBlockingCommunicator Comm, class Rule = detail::diloco_outer_rule<Base>>
class StreamingDiLoCo {
  static_assert(detail::check_distributed<Base, Comm>(), "slowmo::StreamingDiLoCo<Base, Comm, Rule>: see the message above");
  static_assert(check_outer_rule<Rule>(), "slowmo::StreamingDiLoCo: Rule must model slowmo::OuterRule");

 public:
  using scalar_type = typename Base::scalar_type;
  using space_type = space_of_t<Base>;
  using vector_type = typename space_type::template vector<scalar_type>;
  using ref_type = typename space_type::template ref<scalar_type>;
  using const_ref_type = typename space_type::template const_ref<scalar_type>;
  using options_type = StreamingDiLoCoOptions;
  using base_type = Base;
  using comm_type = Comm;
  using rule_type = Rule;

  /// The rule defaults to DiLoCo's outer step: Nesterov momentum, lr 0.7, momentum 0.9.
  StreamingDiLoCo(Base base, Comm& comm, StreamingDiLoCoOptions options = {},
                  Rule rule = Rule({.lr = 0.7, .momentum = 0.9, .nesterov = true}))
      : options_(validated(options)), base_(std::move(base)), comm_(comm), rule_(std::move(rule)) {}

  void start(ref_type x) {
    detail::require_not_stepped("StreamingDiLoCo", steps_);
    detail::check_step_sizes("StreamingDiLoCo", x.size(), x.size());
    if (options_.broadcast_initial) comm_.get().broadcast(as_span(x), 0);
    rebase(x);
  }

  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes("StreamingDiLoCo", x.size(), g.size(), x0_.size() > 0 ? x0_.size() : -1);
    detail::require_started("StreamingDiLoCo", x0_.size() > 0);
    base_.step(x, g);  // (refuses bad input before anything changes)
    ++steps_;
    const std::int64_t at = (syncs_ + 1) * interval();
    if (steps_ == at - options_.overlap) send(x);
    if (steps_ == at) apply(x);
  }

  /// The parameters are now x, the same on every worker: the global point follows (x0 = x,
  /// the rule's state sized), and a fragment whose all-reduce is under way is dropped (its
  /// pseudo-gradient was formed from the parameters before): its outer step is skipped.
  void rebase(const_ref_type x) {
    finish_request();
    if (in_flight()) dropped_ = 1;
    x0_ = x;
    rule_.init(x.size());
    if (buffer_.size() != x.size()) buffer_.resize(x.size());  // (each fragment uses its own range)
    slowmo::rebase(base_, x);
  }

  /// Fragment p's range [first, first + size) for parameters of size n.
  std::pair<Eigen::Index, Eigen::Index> fragment(int p, Eigen::Index n) const {
    const Eigen::Index lo = Eigen::Index(p) * n / options_.fragments, hi = Eigen::Index(p + 1) * n / options_.fragments;
    return {lo, hi - lo};
  }
  /// Synchronisations so far (each of one fragment), and the fragment the next one is of.
  std::int64_t syncs() const { return syncs_; }
  int next_fragment() const { return int(syncs_ % options_.fragments); }
  std::int64_t steps() const { return steps_; }
  scalar_type last_lr() const { return base_.last_lr(); }
  const StreamingDiLoCoOptions& options() const { return options_; }
  const Base& base() const { return base_; }
  Base& base() { return base_; }
  const Rule& rule() const { return rule_; }
  int workers() const { return comm_.get().size(); }
  /// The global point x0 (empty before start).
  const vector_type& outer_params() const { return x0_; }

  /// With one fragment and alpha = 0, a synchronisation leaves the parameters equal on every
  /// worker (DiLoCo's outer step); a fragment alone never does.
  Agreement agreement() const {
    const Agreement base = agreement_over(base_, workers());
    if (options_.fragments == 1 && options_.alpha == 0 && steps_ > 0 && steps_ % interval() == 0 && dropped_ == 0)
      return {.parameters = true, .state = base.state};
    return base;
  }

  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"combinator", scope}, "StreamingDiLoCo");
    f(StateKey{"H", scope}, options_.H);
    f(StateKey{"fragments", scope}, std::int64_t(options_.fragments));
    f(StateKey{"overlap", scope}, options_.overlap);
    const StateScope rule_scope{"rule", scope};
    slowmo::visit_structure(rule_, f, &rule_scope);
    const StateScope base_scope{"base", scope};
    slowmo::visit_structure(base_, f, &base_scope);
  }

  /// Visiting first completes an all-reduce under way (its buffer is then state: a run
  /// resumed from a checkpoint taken in flight applies the same mean at the same step).
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    finish_request();
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    finish_request();
    visit(*this, v, scope);
  }

 private:
  using request_type = decltype(std::declval<Comm&>().start_all_reduce(std::declval<std::span<scalar_type>>(),
                                                                       ReduceOp::mean));

  std::int64_t interval() const { return options_.H / options_.fragments; }
  /// Between a fragment's send and its outer step.
  bool in_flight() const {
    const std::int64_t at = (syncs_ + 1) * interval();
    return options_.overlap > 0 && steps_ >= at - options_.overlap && steps_ < at;
  }
  void finish_request() const {
    if (request_) {
      request_->wait();
      request_.reset();
    }
  }

  /// The fragment's parameters into the buffer, and their mean started.
  void send(const_ref_type x) {
    const auto [lo, len] = fragment(next_fragment(), x.size());
    space_type::for_each(len, rules::CopyInto{}, buffer_.data() + lo, x.data() + lo);
    dropped_ = 0;
    request_.emplace(comm_.get().start_all_reduce(std::span<scalar_type>(buffer_.data() + lo, std::size_t(len)),
                                                  ReduceOp::mean));
  }

  /// The fragment's outer step and merge, once its mean has arrived.
  void apply(ref_type x) {
    const int p = next_fragment();
    const std::int64_t round = syncs_ / options_.fragments;
    ++syncs_;
    finish_request();
    if (dropped_ == 1) {  // rebased while in flight: skipped (and said so until the next send)
      dropped_ = 2;
      return;
    }
    const auto [lo, len] = fragment(p, x.size());
    const rules::PseudoGradient<scalar_type> raw{scalar_type(1), false};
    const auto kernel = rule_.kernel(OuterContext{.round = round, .lr_scale = 1.0});
    std::apply(
        [&](auto&... state) {
          space_type::for_each(len, rules::PseudoGradientThen<scalar_type, decltype(kernel)>{raw, kernel},
                               buffer_.data() + lo, x0_.data() + lo, (state.data() + lo)...);
        },
        rule_.buffers());
    // buffer = the new global fragment; the worker's fragment moves there, keeping alpha of its own.
    space_type::for_each(len, rules::MergeFragment<scalar_type>{scalar_type(options_.alpha)}, x.data() + lo,
                         buffer_.data() + lo);
    slowmo::rebase(base_, x);
  }

  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    v(StateKey{"outer_params", scope}, self.x0_, StateKind::anchor);
    const StateScope rule_scope{"rule", scope};
    self.rule_.visit_state(v, &rule_scope);
    v(StateKey{"fragment_buffer", scope}, self.buffer_, StateKind::progress);
    v(StateKey{"steps", scope}, self.steps_, StateKind::progress);
    v(StateKey{"syncs", scope}, self.syncs_, StateKind::progress);
    v(StateKey{"dropped", scope}, self.dropped_, StateKind::progress);
    const StateScope base_scope{"base", scope};
    self.base_.visit_state(v, &base_scope);
  }

  static StreamingDiLoCoOptions validated(const StreamingDiLoCoOptions& o) {
    using detail::concat;
    using detail::require_option;
    require_option(o.H >= 1, "StreamingDiLoCo", "H", o.H, "must be >= 1 (inner steps between a fragment's syncs)");
    require_option(o.fragments >= 1 && o.fragments <= o.H && o.H % o.fragments == 0, "StreamingDiLoCo", "fragments",
                   o.fragments, concat("must be >= 1 and divide H = ", o.H, " (one fragment is synchronised every H / fragments steps)"));
    require_option(o.overlap >= 0 && o.overlap < o.H / o.fragments, "StreamingDiLoCo", "overlap", o.overlap,
                   concat("must be in [0, H / fragments) = [0, ", o.H / o.fragments,
                          "): a fragment's outer step comes before the next fragment's all-reduce starts"));
    require_option(o.alpha >= 0 && o.alpha <= 1, "StreamingDiLoCo", "alpha", o.alpha, "must be in [0, 1]");
    return o;
  }

  StreamingDiLoCoOptions options_;
  Base base_;
  detail::CommHolder<Comm> comm_;
  Rule rule_;
  vector_type x0_;
  vector_type buffer_;  // n values: a fragment's copy, then its mean, then its new global point, in its own range
  mutable std::optional<request_type> request_;  // the fragment's all-reduce under way
  std::int64_t steps_ = 0, syncs_ = 0;
  std::int64_t dropped_ = 0;  // 1: rebased while in flight, so the outer step is skipped; 2: it was
};

}  // namespace slowmo
