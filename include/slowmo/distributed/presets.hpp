// slowmo/distributed/presets.hpp — published algorithms as configurations of the combinators,
// with their published defaults.
#pragma once

#include <cstdint>
#include <utility>

#include "slowmo/comm/single_worker.hpp"
#include "slowmo/compress/sparseloco.hpp"
#include "slowmo/distributed/local_sgd.hpp"
#include "slowmo/distributed/outer_loop.hpp"
#include "slowmo/distributed/slowmo.hpp"
#include "slowmo/optim/adam.hpp"
#include "slowmo/outer/heavy_ball.hpp"

namespace slowmo {

/// Local SGD: average every H local steps, base state kept.
template <class Base, class Comm>
LocalSgd<Base, Comm> local_sgd(Base base, Comm& comm, std::int64_t H) {
  return LocalSgd<Base, Comm>(std::move(base), comm, {.H = H});
}

/// BMUF, blockwise model-update filtering (Chen & Huo, ICASSP 2016): after each block of
/// tau local steps, Delta = eta Delta + zeta (x_bar - x0) and x0 += Delta; with Nesterov
/// block momentum the workers restart from x0 + eta Delta. This is SlowMo on the raw
/// pseudo-gradient with alpha = zeta, beta = eta (and the outer Nesterov rule for NBM).
struct BmufOptions {
  std::int64_t tau = 48;        ///< local steps per block
  double block_momentum = -1;   ///< eta; the published default 1 - 1/m when left negative
  double block_lr = 1.0;        ///< zeta
  bool nesterov = false;        ///< Nesterov block momentum (NBM)
  OnSync base_state = OnSync::keep;
};

template <class Base, class Comm>
SlowMo<Base, Comm> bmuf(Base base, Comm& comm, BmufOptions o = {}) {
  const double eta = o.block_momentum < 0 ? 1.0 - 1.0 / comm.size() : o.block_momentum;
  return SlowMo<Base, Comm>(std::move(base), comm,
                            {.tau = o.tau,
                             .alpha = o.block_lr,
                             .beta = eta,
                             .base_state = o.base_state,
                             .nesterov = o.nesterov,
                             .divide_by_lr = false});
}

/// DiLoCo (Douillard et al. 2023): AdamW inner optimizer, H inner steps, then an outer
/// Nesterov step (lr 0.7, momentum 0.9) on the raw pseudo-gradient x0 - x_bar; the inner
/// optimizer's state is kept across rounds.
struct DiLoCoOptions {
  std::int64_t H = 500;
  double inner_lr = 4e-4;
  double inner_weight_decay = 0.1;
  std::array<double, 2> inner_betas = {0.9, 0.95};
  double outer_lr = 0.7;
  double outer_momentum = 0.9;
  NonFinite non_finite = NonFinite::raise;  ///< the inner AdamW's NaN/Inf policy
};

/// `diloco<float>(comm)` on the host; `diloco<float, slowmo::cuda::Device>(nccl)` on the GPU.
/// The inner learning rate follows `schedule` (constant by default; the paper decays it
/// with a cosine after a linear warm-up, e.g. schedule::warmup_cosine(1000, total_steps)).
template <Real T, MemorySpace Space = Host, class Comm, Schedule S = schedule::Constant>
SlowMo<AdamW<T, S, Space>, Comm> diloco(Comm& comm, DiLoCoOptions o = {}, S schedule = {}) {
  using Inner = AdamW<T, S, Space>;
  return SlowMo<Inner, Comm>(
      Inner({.lr = o.inner_lr, .betas = o.inner_betas, .weight_decay = o.inner_weight_decay, .non_finite = o.non_finite},
            std::move(schedule)),
      comm,
      {.tau = o.H,
       .alpha = o.outer_lr,
       .beta = o.outer_momentum,
       .base_state = OnSync::keep,
       .nesterov = true,
       .divide_by_lr = false});
}

/// Lookahead (k, alpha) written as SlowMo with one worker and beta = 0:
///   x0 = x0 - alpha (x0 - x_k), every k steps. (SingleWorker is empty: SlowMo keeps its own
/// copy, so nothing outlives the call.)
template <class Base>
SlowMo<Base, SingleWorker> lookahead_as_slowmo(Base base, std::int64_t k, double alpha) {
  SingleWorker solo;
  return SlowMo<Base, SingleWorker>(std::move(base), solo,
                                    {.tau = k,
                                     .alpha = alpha,
                                     .beta = 0.0,
                                     .base_state = OnSync::keep,
                                     .divide_by_lr = false});
}

/// SparseLoCo (Sarfi, Therien, Lidin, Belilovsky 2025, arXiv:2508.15706): H inner steps, then
/// the pseudo-gradient into a decayed error-feedback accumulator e = beta e + d, chunk-wise
/// top-k of e with 2-bit values sent (compress::sparseloco_reduce), and a plain outer SGD step
/// x0 -= outer_lr mean_j c_j: the accumulator stands in for DiLoCo's outer momentum. The
/// paper's inner optimizer is AdamW, its base state kept; H is swept in the paper (no single
/// default): 30 here.
struct SparseLoCoOptions {
  std::int64_t H = 30;
  double outer_lr = 1.0;
  std::int64_t chunk = 4096;     ///< entries per chunk (the paper's 64 x 64 blocks, flattened)
  std::int64_t k = 64;           ///< kept per chunk: 1.56 % density
  int value_bits = 2;
  double error_decay = 0.95;     ///< beta
};

template <class Base, class Comm>
auto sparseloco(Base base, Comm& comm, SparseLoCoOptions o = {}) {
  using T = typename Base::scalar_type;
  return outer_loop(std::move(base), comm, {.tau = o.H, .base_state = OnSync::keep},
                    outer::HeavyBall<T>({.lr = o.outer_lr, .momentum = 0.0}),
                    compress::sparseloco_reduce<T>(
                        {.chunk = o.chunk, .k = o.k, .value_bits = o.value_bits, .error_decay = o.error_decay}));
}

}  // namespace slowmo
