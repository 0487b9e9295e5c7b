// The training loop shared by examples/compare.cpp (simulator) and examples/mpi_train.cpp
// (MPI): heterogeneous softmax regression, minibatch gradients, a fixed compute cost per
// step, and snapshots of this worker's parameters, clock and traffic every `eval_every` steps.
#pragma once

#include <slowmo/problems/logistic.hpp>
#include <slowmo/slowmo.hpp>

#include <cstdint>
#include <vector>

namespace example {

/// 16 workers, 10 classes, 64 features; each worker sees mostly a few classes (Dirichlet 0.3).
inline slowmo::problems::LogisticOptions softmax_problem(int workers) {
  return {.workers = workers,
          .features = 64,
          .classes = 10,
          .samples_per_worker = 400,
          .dirichlet_alpha = 0.3,
          .separation = 0.3,
          .l2 = 1e-3,
          .batch = 32,
          .seed = 2020};
}

struct Settings {
  int steps = 600;
  int eval_every = 20;
  double compute_seconds = 2e-3;  ///< charged per step on the simulator (a forward/backward pass)
};

/// One worker's record: parameters, clock and bytes sent at steps 0, eval_every, 2 eval_every, ...
struct Trace {
  std::vector<int> step;
  std::vector<double> time;
  std::vector<std::uint64_t> bytes;
  std::vector<Eigen::VectorXf> x;
};

template <class Comm>
std::uint64_t bytes_sent(const Comm& comm) {
  if constexpr (requires { comm.bytes_sent(); })
    return comm.bytes_sent();
  else
    return 0;
}

/// Trains with the optimizer make(comm) returns; all workers start from 0.
template <class Comm, class Make>
Trace train(Comm& comm, const slowmo::problems::LogisticRegression& problem, Make make, const Settings& s) {
  auto opt = make(comm);
  Eigen::VectorXf x = Eigen::VectorXf::Zero(problem.dim()), g(problem.dim());
  slowmo::start(opt, x);  // every worker starts from worker 0's point
  Trace trace;
  auto record = [&](int t) {
    trace.step.push_back(t);
    trace.time.push_back(comm.now());
    trace.bytes.push_back(bytes_sent(comm));
    trace.x.push_back(x);
  };
  record(0);
  for (int t = 1; t <= s.steps; ++t) {
    problem.sample_gradient(comm.rank(), t, x, g);
    slowmo::charge_compute(comm, s.compute_seconds);
    opt.step(x, g);
    if (t % s.eval_every == 0) record(t);
  }
  return trace;
}

/// The algorithms of the comparison, each as a factory from a communicator. Learning rates
/// were chosen once for this problem (SGD lr 0.2, momentum 0.9; DiLoCo inner AdamW lr 1e-3;
/// BMUF inner SGD lr 0.1 with its block momentum 1 - 1/m), each with the same cosine decay.
template <class Comm>
struct Algorithms {
  using F = Eigen::VectorXf::Scalar;
  // A cosine decay over the run: the noise floor of a constant lr would hide the differences.
  static constexpr slowmo::schedule::Cosine decay{.total_steps = 600, .min_factor = 0.02};
  static auto sgd() { return slowmo::Sgd<F, slowmo::schedule::Cosine>({.lr = 0.2, .momentum = 0.9}, decay); }
  static auto plain() { return slowmo::Sgd<F, slowmo::schedule::Cosine>({.lr = 0.1}, decay); }

  static auto ar_sgd(Comm& c) { return slowmo::GradientAllReduce(sgd(), c); }
  static auto local_sgd(Comm& c) { return slowmo::LocalSgd(sgd(), c, {.H = 12}); }
  static auto sgp(Comm& c) { return slowmo::Sgp(sgd(), c); }
  static auto slowmo_local_sgd(Comm& c) {
    return slowmo::SlowMo(slowmo::LocalSgd(sgd(), c, {.H = 4}), c, {.tau = 12, .alpha = 1.0, .beta = 0.7});
  }
  static auto slowmo(Comm& c) { return slowmo::SlowMo(sgd(), c, {.tau = 12, .beta = 0.7}); }
  /// The same SlowMo, but each worker sends the top 1% of its pseudo-gradient plus residual
  /// (error feedback): an all-gather of (index, value) pairs instead of a dense all-reduce.
  static auto slowmo_ef_top_k(Comm& c) {
    return slowmo::SlowMo(sgd(), c, {.tau = 12, .beta = 0.7},
                          slowmo::compress::compressed(slowmo::compress::TopK<F>({.fraction = 0.01})));
  }
  /// SparseLoCo's reduction (top-k of a decayed error-feedback accumulator, 2-bit values) with a
  /// momentum-free outer step, over the same SGD; chunks of 650 entries (the model), k = 7 (1%).
  static auto sparseloco(Comm& c) { return slowmo::sparseloco(sgd(), c, {.H = 12, .chunk = 650, .k = 7}); }
  static auto slowmo_sgp(Comm& c) { return slowmo::SlowMo(slowmo::Sgp(sgd(), c), c, {.tau = 12, .beta = 0.7}); }
  static auto bmuf(Comm& c) { return slowmo::bmuf(plain(), c, {.tau = 12, .nesterov = true}); }
  static auto diloco(Comm& c) {  // the same cosine decay of its inner lr, as the DiLoCo paper does
    return slowmo::diloco<F>(c, {.H = 12, .inner_lr = 1e-3, .inner_weight_decay = 0.0}, decay);
  }
  static auto lookahead(Comm& c) {
    return slowmo::GradientAllReduce(slowmo::Lookahead(sgd(), {.k = 5, .alpha = 0.5}), c);
  }
};

}  // namespace example
