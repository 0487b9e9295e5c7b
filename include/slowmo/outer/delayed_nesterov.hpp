// slowmo/outer/delayed_nesterov.hpp — Delayed Nesterov (Liu, Douillard et al. 2024,
// "Asynchronous Local-SGD Training for Language Modeling", Alg. 2; the form of HALoS, Kim et
// al. 2025): the outer rule for pseudo-gradients that arrive one worker at a time. Outer
// momentum applied on every stale arrival misbehaves; DN accumulates the arrivals and moves
// the momentum only every N of them, applying each arrival's own share at once.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <tuple>

#include "slowmo/core/config.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/outer/rule.hpp"

namespace slowmo {
namespace rules {

/// One arrival d (which xd holds on entry) with the accumulator D and the momentum m:
///   D  = D + d
///   on the N-th arrival:  m = beta m + D / N;  x0 = x0 - lr ((1 - c N + c) beta m + d / N);  D = 0
///   otherwise:            x0 = x0 - lr (c beta m + d / N)
///   xd = x0
/// With N = 1 and c = 0 it is Nesterov on every arrival: m = beta m + d, x0 -= lr (beta m + d),
/// the same numbers as HeavyBallOuter with nesterov.
template <class T>
struct DelayedNesterovOuter {
  T beta;
  T lr;
  T inv_n;        // 1 / N
  T late_beta;    // (1 - c N + c) beta: the momentum's weight on the N-th arrival
  T early_beta;   // c beta: its weight on the others
  bool nth;       // this arrival completes a group of N

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& xd, V& x0, V& m, V& acc) const {
    const V d = xd;
    acc = acc + d;
    if (nth) {
      m = V(beta) * m + acc * V(inv_n);
      x0 = x0 - V(lr) * (V(late_beta) * m + d * V(inv_n));
      acc = V(T(0));
    } else {
      x0 = x0 - V(lr) * (V(early_beta) * m + d * V(inv_n));
    }
    xd = x0;
  }
};

}  // namespace rules

namespace outer {

struct DelayedNesterovOptions {
  double lr = 0.7;        ///< outer learning rate (DiLoCo's 0.7)
  double momentum = 0.9;  ///< beta, in [0, 1)
  std::int64_t N = 1;     ///< arrivals per momentum update (the paper sets it to the number of workers)
  double c = 0;           ///< momentum activation in [0, 1]: how much of beta m each arrival applies between updates
};

/// The rule: its context's round is the 0-based arrival (or outer step) index, so round + 1
/// divisible by N marks the N-th arrival. It also serves the synchronous loop, where every
/// outer step is an arrival.
template <Real T, MemorySpace Space = Host>
class DelayedNesterov {
 public:
  using scalar_type = T;
  using space_type = Space;
  using options_type = DelayedNesterovOptions;
  using vector_type = typename Space::template vector<T>;

  explicit DelayedNesterov(DelayedNesterovOptions options = {}) : options_(validated(options)) {}

  void init(Eigen::Index n) {
    if (m_.size() != n) m_.setZero(n);
    if (acc_.size() != n) acc_.setZero(n);
  }
  auto buffers() { return std::tie(m_, acc_); }
  rules::DelayedNesterovOuter<T> kernel(const OuterContext& ctx) const {
    const auto N = options_.N;
    const double beta = options_.momentum, c = options_.c;
    return {.beta = T(beta),
            .lr = T(options_.lr * ctx.lr_scale),
            .inv_n = T(1.0 / double(N)),
            .late_beta = T((1 - c * double(N) + c) * beta),
            .early_beta = T(c * beta),
            .nth = (ctx.round + 1) % N == 0};
  }

  const DelayedNesterovOptions& options() const { return options_; }
  const vector_type& momentum_buffer() const { return m_; }
  const vector_type& accumulator() const { return acc_; }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    visit(*this, v, scope);
  }
  /// Structural: N decides when the accumulator is emptied.
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"rule", scope}, "DelayedNesterov");
    f(StateKey{"N", scope}, options_.N);
  }

 private:
  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    v(StateKey{"momentum", scope}, self.m_, StateKind::accumulator);
    v(StateKey{"accumulator", scope}, self.acc_, StateKind::accumulator);
  }

  static DelayedNesterovOptions validated(const DelayedNesterovOptions& o) {
    using detail::finite;
    detail::require_option(finite(o.lr) && o.lr > 0, "outer::DelayedNesterov", "lr", o.lr, "must be finite and > 0");
    detail::require_option(finite(o.momentum) && o.momentum >= 0 && o.momentum < 1, "outer::DelayedNesterov",
                           "momentum", o.momentum, "must be in [0, 1)");
    detail::require_option(o.N >= 1, "outer::DelayedNesterov", "N", o.N, "must be >= 1 (arrivals per momentum update)");
    detail::require_option(finite(o.c) && o.c >= 0 && o.c <= 1, "outer::DelayedNesterov", "c", o.c,
                           "must be in [0, 1] (the momentum activation)");
    return o;
  }

  DelayedNesterovOptions options_;
  vector_type m_, acc_;
};

}  // namespace outer
}  // namespace slowmo
