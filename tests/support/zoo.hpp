// The registry: every optimizer and combinator composition the library ships, under one
// name each, so that every property test (bit-exact resume, rebase after an overwrite, the
// strong guarantee on bad input, allocation-free steps, simulator == threads == MPI, skip
// consistency, agreement before the first gradient) runs over all of them. A new algorithm
// joins every check with one line in for_each_composition.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <slowmo/compress.hpp>
#include <slowmo/slowmo.hpp>

namespace zoo {

/// How the registry builds its compositions.
struct Config {
  slowmo::NonFinite non_finite = slowmo::NonFinite::raise;  ///< every base optimizer's policy
};

/// Calls f(name, min_workers, make) for every composition, where make(comm) builds a fresh
/// one for this worker (single-worker optimizers ignore the communicator) and min_workers is
/// the least number of workers it runs on. Periods are 3, 4 and 6 so that 24 steps end on
/// every synchronisation.
template <class T, class F>
void for_each_composition(F&& f, Config cfg = {}) {
  using namespace slowmo;
  const NonFinite nf = cfg.non_finite;
  using Cos = schedule::Cosine;
  // single-worker optimizers
  f("sgd", 1, [=](auto&) { return Sgd<T>({.lr = 0.1, .non_finite = nf}); });
  f("sgd_momentum", 1, [=](auto&) {
    return Sgd<T>({.lr = 0.05, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01, .non_finite = nf});
  });
  f("nesterov_cosine", 1, [=](auto&) { return Nesterov<T, Cos>({.lr = 0.1, .non_finite = nf}, {.total_steps = 40}); });
  f("adam", 1, [=](auto&) { return Adam<T>({.lr = 0.05, .weight_decay = 0.01, .non_finite = nf}); });
  f("adam_amsgrad", 1, [=](auto&) { return Adam<T>({.lr = 0.05, .amsgrad = true, .non_finite = nf}); });
  f("adamw", 1, [=](auto&) { return AdamW<T>({.lr = 0.05, .non_finite = nf}); });
  f("rmsprop_centered_momentum", 1, [=](auto&) {
    return RMSprop<T>({.lr = 0.01, .weight_decay = 0.01, .momentum = 0.5, .centered = true, .non_finite = nf});
  });
  f("adagrad_cosine", 1, [=](auto&) {
    return Adagrad<T, Cos>({.lr = 0.1, .lr_decay = 0.01, .initial_accumulator_value = 0.1, .non_finite = nf},
                           {.total_steps = 40});
  });
  f("nadam", 1, [=](auto&) { return NAdam<T>({.lr = 0.05, .weight_decay = 0.01, .non_finite = nf}); });
  f("adamax", 1, [=](auto&) { return Adamax<T>({.lr = 0.05, .betas = {0.8, 0.95}, .non_finite = nf}); });
  f("qhm", 1, [=](auto&) { return Qhm<T>({.lr = 0.1, .beta = 0.9, .weight_decay = 0.01, .non_finite = nf}); });
  f("qhadam", 1, [=](auto&) { return QhAdam<T>({.lr = 0.05, .nus = {0.7, 0.9}, .non_finite = nf}); });
  f("lion", 1, [=](auto&) { return Lion<T>({.lr = 0.01, .weight_decay = 0.1, .non_finite = nf}); });
  f("lookahead_sgd", 1, [=](auto&) {
    return Lookahead(Sgd<T>({.lr = 0.1, .momentum = 0.9, .non_finite = nf}), {.k = 3, .base_state = OnSync::reset});
  });
  f("lookahead_lookahead_adam", 1, [=](auto&) {
    return Lookahead(Lookahead(Adam<T>({.lr = 0.05, .non_finite = nf}), {.k = 2}), {.k = 3, .alpha = 0.8});
  });
  f("lookahead_as_slowmo", 1,
    [=](auto&) { return lookahead_as_slowmo(Nesterov<T>({.lr = 0.1, .non_finite = nf}), 4, 0.7); });
  // distributed combinators and presets
  f("local_sgd", 1, [=](auto& c) { return LocalSgd(Sgd<T>({.lr = 0.1, .momentum = 0.9, .non_finite = nf}), c, {.H = 4}); });
  f("post_local_sgd", 1,
    [=](auto& c) { return LocalSgd(Nesterov<T>({.lr = 0.1, .non_finite = nf}), c, {.H = 4, .warmup_steps = 8}); });
  f("local_sgd_average", 1, [=](auto& c) {
    return LocalSgd(Adam<T>({.lr = 0.05, .non_finite = nf}), c, {.H = 3, .base_state = OnSync::average});
  });
  f("ar_sgd", 1, [=](auto& c) { return GradientAllReduce(Sgd<T>({.lr = 0.1, .momentum = 0.9, .non_finite = nf}), c); });
  f("ar_adam", 1, [=](auto& c) { return GradientAllReduce(Adam<T>({.lr = 0.05, .non_finite = nf}), c); });
  f("slowmo", 1, [=](auto& c) {
    return SlowMo(Nesterov<T, Cos>({.lr = 0.1, .non_finite = nf}, {.total_steps = 40}), c, {.tau = 6, .beta = 0.6});
  });
  f("slowmo_average", 1, [=](auto& c) {
    return SlowMo(Adam<T>({.lr = 0.05, .non_finite = nf}), c, {.tau = 6, .beta = 0.5, .base_state = OnSync::average});
  });
  f("slowmo_outer_nesterov", 1, [=](auto& c) {
    return SlowMo(Sgd<T>({.lr = 0.1, .momentum = 0.5, .non_finite = nf}), c,
                  {.tau = 3, .beta = 0.7, .base_state = OnSync::keep, .nesterov = true});
  });
  f("bmuf", 1, [=](auto& c) { return bmuf(Sgd<T>({.lr = 0.1, .momentum = 0.5, .non_finite = nf}), c, {.tau = 6}); });
  f("bmuf_nbm", 1, [=](auto& c) { return bmuf(Sgd<T>({.lr = 0.1, .non_finite = nf}), c, {.tau = 6, .nesterov = true}); });
  f("diloco", 1, [=](auto& c) {
    using Inner = AdamW<T, Cos>;
    return SlowMo(Inner({.lr = 0.05, .betas = {0.9, 0.95}, .weight_decay = 0.1, .non_finite = nf}, {.total_steps = 40}),
                  c, {.tau = 6, .alpha = 0.7, .beta = 0.9, .base_state = OnSync::keep, .nesterov = true,
                      .divide_by_lr = false});
  });
  f("diloco_preset", 1, [=](auto& c) { return diloco<T>(c, {.H = 6, .inner_lr = 0.05, .non_finite = nf}); });
  // the outer loop with the federated server optimizers (Reddi et al. 2021) as rules
  f("fedavgm", 1, [=](auto& c) {
    return outer_loop(Sgd<T>({.lr = 0.1, .non_finite = nf}), c, {.tau = 4}, outer::fedavgm<T>({.momentum = 0.8}));
  });
  f("fedadam", 1, [=](auto& c) {
    return outer_loop(Sgd<T>({.lr = 0.1, .momentum = 0.5, .non_finite = nf}), c, {.tau = 6, .base_state = OnSync::reset},
                      outer::FedAdam<T>({.lr = 0.05}));
  });
  f("fedyogi_adam_average", 1, [=](auto& c) {
    return outer_loop(Adam<T>({.lr = 0.05, .non_finite = nf}), c, {.tau = 3, .base_state = OnSync::average},
                      outer::FedYogi<T>({.lr = 0.05}));
  });
  f("fedadagrad_divided", 1, [=](auto& c) {
    return outer_loop(Nesterov<T, Cos>({.lr = 0.1, .non_finite = nf}, {.total_steps = 40}), c,
                      {.tau = 4, .divide_by_lr = true}, outer::FedAdagrad<T>({.lr = 0.05, .momentum = 0.5}));
  });
  // compressed reduce policies with error feedback (slowmo/compress/)
  using compress::Compressed;
  f("slowmo_ef_top_k", 1, [=](auto& c) {
    return SlowMo(Sgd<T>({.lr = 0.1, .non_finite = nf}), c, {.tau = 3, .beta = 0.5},
                  Compressed(compress::TopK<T>({.fraction = 0.25})));
  });
  f("diloco_random_k", 1, [=](auto& c) {
    return outer_loop(AdamW<T>({.lr = 0.05, .non_finite = nf}), c, {.tau = 4},
                      outer::HeavyBall<T>({.lr = 0.7, .momentum = 0.9, .nesterov = true}),
                      Compressed(compress::RandomK<T>({.fraction = 0.5}), {.seed = 7}));
  });
  f("fedadam_sign", 1, [=](auto& c) {
    return outer_loop(Sgd<T>({.lr = 0.1, .non_finite = nf}), c, {.tau = 3}, outer::FedAdam<T>({.lr = 0.05}),
                      Compressed(compress::SignScale<T>()));
  });
  f("slowmo_qsgd_no_ef", 1, [=](auto& c) {
    return outer_loop(Nesterov<T>({.lr = 0.1, .non_finite = nf}), c, {.tau = 4, .base_state = OnSync::reset},
                      outer::HeavyBall<T>({.momentum = 0.6}),
                      Compressed(compress::Qsgd<T>({.levels = 4}), {.error_feedback = false, .seed = 3}));
  });
  f("slowmo_bf16", 1, [=](auto& c) {
    return outer_loop(Sgd<T>({.lr = 0.1, .momentum = 0.5, .non_finite = nf}), c, {.tau = 6},
                      outer::HeavyBall<T>({.momentum = 0.5}), Compressed(compress::LowPrecision<T>()));
  });
  f("sparseloco", 1, [=](auto& c) {
    return sparseloco(AdamW<T>({.lr = 0.05, .non_finite = nf}), c, {.H = 4, .chunk = 8, .k = 2});
  });
  f("ar_sgd_ef_top_k", 1, [=](auto& c) {
    return GradientAllReduce(Sgd<T>({.lr = 0.1, .momentum = 0.9, .non_finite = nf}), c, {},
                             Compressed(compress::TopK<T>({.k = 4})));
  });
  f("slowmo_local_sgd", 1, [=](auto& c) {
    return SlowMo(LocalSgd(Sgd<T>({.lr = 0.1, .non_finite = nf}), c, {.H = 3}), c, {.tau = 6, .beta = 0.5});
  });
  f("slowmo_post_local_sgd_average", 1, [=](auto& c) {
    return SlowMo(LocalSgd(Adam<T>({.lr = 0.05, .non_finite = nf}), c,
                           {.H = 3, .warmup_steps = 3, .base_state = OnSync::average}),
                  c, {.tau = 6, .beta = 0.5, .base_state = OnSync::average});
  });
  f("slowmo_ar_sgd", 1, [=](auto& c) {
    return SlowMo(GradientAllReduce(Sgd<T>({.lr = 0.1, .momentum = 0.9, .non_finite = nf}), c), c,
                  {.tau = 4, .beta = 0.5, .base_state = OnSync::keep});
  });
  f("slowmo_lookahead_adam", 1, [=](auto& c) {
    return SlowMo(Lookahead(Adam<T>({.lr = 0.05, .non_finite = nf}), {.k = 3}), c,
                  {.tau = 6, .beta = 0.5, .base_state = OnSync::keep});
  });
  f("lookahead_local_sgd", 1, [=](auto& c) {
    return Lookahead(LocalSgd(Sgd<T>({.lr = 0.1, .non_finite = nf}), c, {.H = 2}), {.k = 3, .alpha = 0.5});
  });
  f("sgp", 2, [=](auto& c) { return Sgp(Nesterov<T>({.lr = 0.1, .non_finite = nf}), c); });
  f("sgp_ring2", 3, [=](auto& c) { return Sgp(Sgd<T>({.lr = 0.1, .non_finite = nf}), c, Ring(c.size(), 2)); });
  // Out-degrees 1..3 that differ, so the weights move; period 4, so that the run-ahead of the
  // in-process backends (a worker may be rounds ahead of one it sends to) reaches its steady
  // state within the registry's first 12 steps.
  f("sgp_random_directed", 3, [=](auto& c) {
    return Sgp(Sgd<T>({.lr = 0.1, .momentum = 0.5, .non_finite = nf}), c,
               RandomDirectedGraph(c.size(), std::min(3, c.size() - 1), 42, 4));
  });
  f("slowmo_sgp", 2, [=](auto& c) { return SlowMo(Sgp(Sgd<T>({.lr = 0.1, .non_finite = nf}), c), c, {.tau = 6, .beta = 0.5}); });
  f("lookahead_sgp", 2,
    [=](auto& c) { return Lookahead(Sgp(Sgd<T>({.lr = 0.1, .momentum = 0.5, .non_finite = nf}), c), {.k = 4}); });
  f("local_sgd_sgp", 2, [=](auto& c) { return LocalSgd(Sgp(Sgd<T>({.lr = 0.1, .non_finite = nf}), c), c, {.H = 4}); });
  // worker groups (split): a half-size group averages every 3 steps, everyone every 6
  auto levels = [](auto& c, std::int64_t low, std::int64_t top) {
    const int m = c.size(), half = (m + 1) / 2;
    return std::vector<AveragingLevel>{{.period = low, .group_size = half}, {.period = top, .group_size = m}};
  };
  f("hierarchical_local_sgd", 2, [=](auto& c) {
    return HierarchicalLocalSgd(Sgd<T>({.lr = 0.1, .momentum = 0.5, .non_finite = nf}), c,
                                {.levels = levels(c, 3, 6), .warmup_steps = 3, .base_state = OnSync::average});
  });
  f("slowmo_hierarchical_adam", 2, [=](auto& c) {
    return SlowMo(HierarchicalLocalSgd(Adam<T>({.lr = 0.05, .non_finite = nf}), c,
                                       {.levels = levels(c, 2, 4), .base_state = OnSync::reset}),
                  c, {.tau = 4, .beta = 0.5});
  });
  // Streaming DiLoCo: 3 fragments, each synchronised every 6 steps, one step of overlap
  f("streaming_diloco", 1, [=](auto& c) {
    return StreamingDiLoCo(AdamW<T>({.lr = 0.05, .non_finite = nf}), c,
                           {.H = 6, .fragments = 3, .overlap = 1, .alpha = 0.5},
                           outer::HeavyBall<T>({.lr = 0.7, .momentum = 0.9, .nesterov = true}));
  });
  // synchronisation schedules (distributed/period.hpp)
  f("local_sgd_qsr", 1, [=](auto& c) {
    return LocalSgd(Nesterov<T, Cos>({.lr = 0.1, .non_finite = nf}, {.total_steps = 40}), c, {.H = 2},
                    period::Qsr{.alpha = 0.2});
  });
  f("diloco_growing_period", 1, [=](auto& c) {
    return outer_loop(AdamW<T>({.lr = 0.05, .non_finite = nf}), c, {.tau = 2},
                      outer::HeavyBall<T>({.lr = 0.7, .momentum = 0.9, .nesterov = true}), reduce::Mean{},
                      period::Linear{.growth = 1});
  });
  // partial participation (federated): 2 of the workers per round, weighted by rank + 1
  f("fedavgm_partial", 3, [=](auto& c) {
    std::vector<double> weights(std::size_t(c.size()));
    for (std::size_t w = 0; w < weights.size(); ++w) weights[w] = double(w + 1);
    return outer_loop(Sgd<T>({.lr = 0.1, .momentum = 0.5, .non_finite = nf}), c,
                      {.tau = 3, .base_state = OnSync::reset, .participation = {.count = 2, .seed = 5, .weights = weights}},
                      outer::fedavgm<T>({.momentum = 0.8}));
  });
  // client-adaptive step sizes (optim/delta_sgd.hpp): alone, reset per round as its authors
  // run it (sampled clients, FedAdam on the server), and kept across averages (rebase)
  f("delta_sgd", 1, [=](auto&) { return DeltaSgd<T>({.lr = 0.1, .non_finite = nf}); });
  f("fedadam_delta_sgd_partial", 3, [=](auto& c) {
    return outer_loop(DeltaSgd<T>({.lr = 0.1, .non_finite = nf}), c,
                      {.tau = 3, .base_state = OnSync::reset, .participation = {.fraction = 0.5, .seed = 11}},
                      outer::FedAdam<T>({.lr = 0.1}));
  });
  f("local_sgd_delta_sgd", 1, [=](auto& c) {
    return LocalSgd(DeltaSgd<T>({.lr = 0.05, .delta = 0.5, .non_finite = nf}), c, {.H = 4});
  });
  // SAVIC: a scaling shared by the workers, refreshed by LocalSgd every round (optim/savic.hpp)
  f("savic_adam_local_sgd", 1, [=](auto& c) {
    return LocalSgd(Savic<T>({.lr = 0.05, .non_finite = nf}, {.beta = 0.9}), c, {.H = 4});
  });
  f("savic_rmsprop_post_local_average", 1, [=](auto& c) {
    return LocalSgd(Savic<T, savic::RmsProp>({.lr = 0.02, .non_finite = nf}), c,
                    {.H = 3, .warmup_steps = 2, .base_state = OnSync::average});
  });
  f("slowmo_savic_oasis", 1, [=](auto& c) {
    const auto hvp = [](const Vector<T>& x, const Vector<T>& z, Vector<T>& out) {
      out = (T(1.5) + T(0.25) * x.array().square()).matrix().cwiseProduct(z);
    };
    return SlowMo(LocalSgd(Savic<T, savic::Oasis<decltype(hvp)>>({.lr = 0.1, .non_finite = nf}, {.hvp = hvp}), c,
                           {.H = 3}),
                  c, {.tau = 6, .beta = 0.5});
  });
  // gradient modifiers around any base (optim/clip.hpp, optim/fedprox.hpp)
  f("clip_adamw", 1, [=](auto&) { return ClipGradNorm(AdamW<T>({.lr = 0.05, .non_finite = nf}), {.max_norm = 1.0}); });
  f("clip_inf_norm_lookahead_sgd", 1, [=](auto&) {
    return ClipGradNorm(Lookahead(Sgd<T>({.lr = 0.1, .momentum = 0.9, .non_finite = nf}), {.k = 3}),
                        {.max_norm = 2.0, .norm_type = std::numeric_limits<double>::infinity()});
  });
  f("clip_value_adam", 1, [=](auto&) { return ClipGradValue(Adam<T>({.lr = 0.05, .non_finite = nf}), {.threshold = 0.5}); });
  f("fedprox_local_sgd", 1, [=](auto& c) {
    return LocalSgd(FedProx(Sgd<T>({.lr = 0.1, .momentum = 0.5, .non_finite = nf}), {.mu = 0.1}), c, {.H = 4});
  });
  f("diloco_clipped_fedprox", 1, [=](auto& c) {
    return outer_loop(ClipGradNorm(FedProx(AdamW<T>({.lr = 0.05, .non_finite = nf}), {.mu = 0.05}), {.max_norm = 1.0}),
                      c, {.tau = 6}, outer::HeavyBall<T>({.lr = 0.7, .momentum = 0.9, .nesterov = true}));
  });
  f("slowmo_clip_value_local_sgd", 1, [=](auto& c) {
    return SlowMo(LocalSgd(ClipGradValue(Nesterov<T>({.lr = 0.1, .non_finite = nf}), {.threshold = 0.5}), c, {.H = 3}),
                  c, {.tau = 6, .beta = 0.5});
  });
  // asynchronous, on a shared model (see `asynchronous` below)
  f("async_local_sgd", 1, [=](auto& c) {
    return AsyncLocalSgd(Sgd<T>({.lr = 0.1, .momentum = 0.9, .non_finite = nf}), c, {.H = 3},
                         outer::HeavyBall<T>({.lr = 0.7, .momentum = 0.9, .nesterov = true}));
  });
  f("async_dn_dylu_adamw", 1, [=](auto& c) {
    return AsyncLocalSgd(AdamW<T>({.lr = 0.05, .non_finite = nf}), c,
                         {.H = 4,
                          .base_state = OnSync::reset,
                          .dylu = {.enabled = true},
                          .staleness = {.exponent = 0.5, .max_staleness = 4}},
                         outer::DelayedNesterov<T>({.lr = 0.7, .momentum = 0.9, .N = 3, .c = 0.5}));
  });
}

/// An asynchronous composition: its workers never wait for each other, so the order in which
/// their pushes reach the server is the backend's (virtual time on the simulator, real timing
/// on threads and MPI). The checks that compare backends bit for bit, or the workers' counters
/// with each other, leave it out; checkpoints need a drain first.
template <class Opt>
constexpr bool asynchronous = requires(Opt& opt, slowmo::Host::ref<typename Opt::scalar_type> x) { opt.drain(x); };

/// Whether a composition's workers keep counters of their own by design (an asynchronous one's
/// pushes and staleness; with partial participation, bases that step only when sampled).
template <class Opt, class Comm>
bool own_counters(const Opt& opt, const Comm& comm) {
  if constexpr (asynchronous<Opt>)
    return true;
  else if constexpr (requires { opt.participants(0); })
    return std::int64_t(opt.participants(0).size()) < comm.size();
  else
    return false;
}

/// Worker r's gradient of f_r(x) = 1/2 sum_j a_rj (x_j - c_rj)^2, heterogeneous across workers.
template <class T>
void gradient(int r, const slowmo::Vector<T>& x, slowmo::Vector<T>& g) {
  for (Eigen::Index j = 0; j < x.size(); ++j) {
    const double a = 0.5 + 0.25 * double((r + j) % 3), c = std::sin(double(3 * r + j));
    g[j] = T(a * (double(x[j]) - c));
  }
}

/// Worker r's starting point: different on every worker, so that start(x) must align them.
template <class T>
slowmo::Vector<T> initial_point(int r, Eigen::Index d = 13) {
  slowmo::Vector<T> x = slowmo::Vector<T>::LinSpaced(d, T(-1), T(1));
  return x * T(1 + r);
}

/// start, then `steps` steps on worker r's gradient; the final parameters.
template <class T, class Opt>
std::vector<T> train(int r, Opt opt, int steps = 24, Eigen::Index d = 13) {
  slowmo::Vector<T> x = initial_point<T>(r, d), g(d);
  slowmo::start(opt, x);
  for (int t = 0; t < steps; ++t) {
    gradient(r, x, g);
    opt.step(x, g);
  }
  return {x.data(), x.data() + x.size()};
}

/// Runs `make(comm)`'s optimizer on m simulated workers for `steps` steps on the heterogeneous
/// quadratics above, every worker from the same point; x of every worker after every step.
template <class T, class Make>
std::vector<std::vector<slowmo::Vector<T>>> trajectories(int m, int steps, Make make, Eigen::Index d = 9) {
  std::vector<std::vector<slowmo::Vector<T>>> out(static_cast<std::size_t>(m));
  slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& c) {
    auto opt = make(c);
    slowmo::Vector<T> x = slowmo::Vector<T>::LinSpaced(d, T(-2), T(2)), g(d);
    slowmo::start(opt, x);  // every worker starts here already: the broadcast changes nothing
    for (int t = 0; t < steps; ++t) {
      gradient(c.rank(), x, g);
      opt.step(x, g);
      out[std::size_t(c.rank())].push_back(x);
    }
  });
  return out;
}

/// Final parameters of this worker for every synchronous composition that runs on this many
/// workers (what must agree across backends).
template <class T, slowmo::Communicator C>
std::map<std::string, std::vector<T>> run_all(C& comm) {
  std::map<std::string, std::vector<T>> out;
  for_each_composition<T>([&](std::string_view name, int min_workers, auto make) {
    if constexpr (!asynchronous<decltype(make(comm))>)
      if (comm.size() >= min_workers) out[std::string(name)] = train<T>(comm.rank(), make(comm));
  });
  return out;
}

/// Every state entry of an optimizer by path, widened to double (exact for float, double and
/// the counters below 2^53): for comparing whole states bit for bit.
template <class Opt>
std::map<std::string, std::vector<double>> state_of(const Opt& opt) {
  std::map<std::string, std::vector<double>> out;
  opt.visit_state([&](const slowmo::StateKey& key, const auto& ref, slowmo::StateKind) {
    using R = std::remove_cvref_t<decltype(ref)>;
    auto& v = out[key.path()];
    if constexpr (std::is_arithmetic_v<R>)
      v.push_back(double(ref));
    else
      for (Eigen::Index i = 0; i < ref.size(); ++i) v.push_back(double(ref[i]));
  });
  return out;
}

}  // namespace zoo
