// slowmo/optim/fedprox.hpp — FedProx's proximal term (Li et al. 2020, "Federated
// Optimization in Heterogeneous Networks", eq. 2) around any optimizer: each worker
// minimises f(x) + mu/2 |x - x0|^2, x0 the last synchronised point, so its base steps with
//   g' = g + mu (x - x0).
//
//   slowmo::LocalSgd opt(slowmo::FedProx(slowmo::Sgd<float>({.lr = 0.1}), {.mu = 0.01}), comm, {.H = 8});
//
// x0 (the anchor) is set by start(x) and by rebase(x), which LocalSgd, SlowMo and the outer
// loop call after every average or outer step; it is state of kind anchor (checkpointed,
// kept by a reset). mu = 0 is the base's own step, bit for bit.
#pragma once

#include "slowmo/core/error.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/optim/modifier.hpp"
#include "slowmo/optim/rules.hpp"

namespace slowmo {

struct FedProxOptions {
  double mu = 0.01;  ///< the proximal coefficient, >= 0 (Li et al. try 0.001 to 1)
};

namespace method {

struct FedProx {
  using options_type = FedProxOptions;
  static constexpr const char* name = "FedProx";
  static constexpr bool anchored = true;

  static void validate(const FedProxOptions& o) {
    detail::require_option(detail::finite(o.mu) && o.mu >= 0, name, "mu", o.mu, "must be finite and >= 0");
  }

  template <class Space, class T>
  static bool apply(const FedProxOptions& o, Eigen::Index n, const T* x, const T* g, const T* x0, T* out) {
    if (o.mu == 0) return false;
    Space::for_each(n, rules::ProximalGradient<T>{T(o.mu)}, out, g, x, x0);
    return true;
  }
};

}  // namespace method

/// Adds FedProx's proximal gradient mu (x - x0) to the base's gradient (see the top of this file).
template <class Base>
class FedProx : public Modified<Base, method::FedProx> {
 public:
  using Modified<Base, method::FedProx>::Modified;
};
template <class Base>
FedProx(Base) -> FedProx<Base>;
template <class Base>
FedProx(Base, FedProxOptions) -> FedProx<Base>;
template <class Base>
FedProx(FedProxOptions, Base) -> FedProx<Base>;

}  // namespace slowmo
