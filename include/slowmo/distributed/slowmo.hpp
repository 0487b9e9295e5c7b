// slowmo/distributed/slowmo.hpp — SlowMo<Base, Comm, Reduce>: slow momentum over periodic exact averaging
// (Wang, Tantia, Ballas, Rabbat, ICLR 2020, Algorithm 1), the outer loop with the heavy-ball
// rule on the pseudo-gradient divided by the base's learning rate.
#pragma once

#include <cstdint>
#include <utility>

#include "slowmo/core/error.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/distributed/outer_loop.hpp"
#include "slowmo/distributed/reduce.hpp"
#include "slowmo/outer/heavy_ball.hpp"

namespace slowmo {

/// Options of SlowMo. Names from the paper; fairscale's in brackets.
struct SlowMoOptions {
  std::int64_t tau = 48;    ///< base steps per outer step [slowmo_frequency]
  double alpha = 1.0;       ///< slow learning rate [slowmo_lr]
  double beta = 0.5;        ///< slow momentum [slowmo_momentum], in [0, 1)
  OnSync base_state = OnSync::reset;  ///< the base optimizer's state at each outer step
  bool nesterov = false;    ///< outer Nesterov: x0 -= lr (d + beta u), as DiLoCo / Nesterov block momentum
  bool divide_by_lr = true; ///< pseudo-gradient (x0 - x_i) / gamma (SlowMo); false: raw (BMUF, DiLoCo)
  bool broadcast_initial = true;  ///< start(x): every worker takes worker 0's parameters
};

/// SlowMo is OuterLoop<Base, Comm, outer::HeavyBall> with the paper's options; every tau
/// base steps (gamma = the base's lr on its last step):
///   d = mean_i (x0 - x_i) / gamma      (the exact mean; nothing sent when the base has just
///                                       averaged, e.g. LocalSgd)
///   u = beta u + d;  x0 = x0 - alpha gamma u   (or the Nesterov form);  x = x0 everywhere.
/// With divide_by_lr = false the pseudo-gradient is x0 - x_i and the outer lr is alpha.
/// A reduce policy other than the exact mean (e.g. compress::compressed(compress::TopK<T>(...)):
/// SlowMo with error-feedback compression) reduces the workers' own pseudo-gradients.
template <class Base, class Comm, class Reduce = reduce::Mean>
class SlowMo : public OuterLoop<Base, Comm, outer::HeavyBall<typename Base::scalar_type, space_of_t<Base>>, Reduce> {
  using loop = OuterLoop<Base, Comm, outer::HeavyBall<typename Base::scalar_type, space_of_t<Base>>, Reduce>;

 public:
  using options_type = SlowMoOptions;
  using typename loop::vector_type;

  SlowMo(Base base, Comm& comm, SlowMoOptions options = {}, Reduce reduce = Reduce{})
      : loop("SlowMo", std::move(base), comm, loop_options(options), make_rule(options), std::move(reduce)),
        options_(options) {}

  const SlowMoOptions& options() const { return options_; }
  /// The slow momentum u (empty before start).
  const vector_type& slow_momentum() const { return loop::rule().momentum_buffer(); }

 private:
  static const SlowMoOptions& validated(const SlowMoOptions& o) {
    using detail::finite;
    detail::require_option(finite(o.alpha) && o.alpha > 0, "SlowMo", "alpha", o.alpha, "must be finite and > 0");
    detail::require_option(finite(o.beta) && o.beta >= 0 && o.beta < 1, "SlowMo", "beta", o.beta, "must be in [0, 1)");
    return o;
  }
  static OuterLoopOptions loop_options(const SlowMoOptions& o) {
    validated(o);
    return {.tau = o.tau, .base_state = o.base_state, .divide_by_lr = o.divide_by_lr, .broadcast_initial = o.broadcast_initial};
  }
  static typename loop::rule_type make_rule(const SlowMoOptions& o) {
    validated(o);
    return typename loop::rule_type({.lr = o.alpha, .momentum = o.beta, .nesterov = o.nesterov});
  }

  SlowMoOptions options_;
};

}  // namespace slowmo
