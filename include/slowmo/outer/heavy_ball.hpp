// slowmo/outer/heavy_ball.hpp — the heavy-ball outer rule: SlowMo's slow momentum (Wang et al.
// 2020, Alg. 1), BMUF's block momentum (Chen & Huo 2016), FedAvgM's server momentum (Hsu et al.
// 2019) and, in its Nesterov form, DiLoCo's outer Nesterov (Douillard et al. 2023) and BMUF-NBM.
#pragma once

#include <Eigen/Core>
#include <tuple>

#include "slowmo/core/error.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/outer/rule.hpp"
#include "slowmo/outer/rules.hpp"

namespace slowmo::outer {

/// Options of HeavyBall; SlowMo's names in brackets, defaults those of SlowMo.
struct HeavyBallOptions {
  double lr = 1.0;        ///< outer learning rate [alpha, slowmo_lr; BMUF's zeta]
  double momentum = 0.5;  ///< [beta, slowmo_momentum; BMUF's eta], in [0, 1)
  bool nesterov = false;  ///< x0 -= lr (d + momentum u), as torch.optim.SGD(nesterov=True)
};

/// u = momentum u + d; x0 -= lr_t u (or lr_t (d + momentum u) with nesterov), with
/// lr_t = lr * ctx.lr_scale (rules::HeavyBallOuter). momentum = 0, lr = 1 takes the average:
/// Local SGD; momentum = 0 on one worker is Lookahead.
template <Real T, MemorySpace Space = Host>
class HeavyBall {
 public:
  using scalar_type = T;
  using space_type = Space;
  using options_type = HeavyBallOptions;
  using vector_type = typename Space::template vector<T>;

  explicit HeavyBall(HeavyBallOptions options = {}) : options_(validated(options)) {}

  void init(Eigen::Index n) {
    if (u_.size() != n) u_.setZero(n);
  }
  auto buffers() { return std::tie(u_); }
  rules::HeavyBallOuter<T> kernel(const OuterContext& ctx) const {
    return {.beta = T(options_.momentum), .lr = T(options_.lr * ctx.lr_scale), .nesterov = options_.nesterov};
  }

  const HeavyBallOptions& options() const { return options_; }
  /// The momentum buffer u (SlowMo's slow momentum), empty before init.
  const vector_type& momentum_buffer() const { return u_; }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    v(StateKey{"momentum", scope}, u_, StateKind::accumulator);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    v(StateKey{"momentum", scope}, u_, StateKind::accumulator);
  }
  /// Structural: the form decides what u means.
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"rule", scope}, "HeavyBall");
    f(StateKey{"nesterov", scope}, options_.nesterov);
  }

 private:
  static HeavyBallOptions validated(const HeavyBallOptions& o) {
    using detail::finite;
    detail::require_option(finite(o.lr) && o.lr > 0, "outer::HeavyBall", "lr", o.lr, "must be finite and > 0");
    detail::require_option(finite(o.momentum) && o.momentum >= 0 && o.momentum < 1, "outer::HeavyBall", "momentum",
                           o.momentum, "must be in [0, 1)");
    return o;
  }

  HeavyBallOptions options_;
  vector_type u_;
};

/// FedAvgM (Hsu, Qi & Brown 2019, "Measuring the effects of non-identical data distribution
/// for federated visual classification"): server momentum on the averaged client update, as
/// Flower's FedAvgM (server_learning_rate, server_momentum). It is HeavyBall with these
/// defaults.
struct FedAvgMOptions {
  double lr = 1.0;        ///< server learning rate
  double momentum = 0.9;  ///< server momentum
};

template <Real T, MemorySpace Space = Host>
HeavyBall<T, Space> fedavgm(FedAvgMOptions o = {}) {
  return HeavyBall<T, Space>({.lr = o.lr, .momentum = o.momentum, .nesterov = false});
}

}  // namespace slowmo::outer
