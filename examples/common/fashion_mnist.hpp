// The flagship experiment (examples/compare.cpp) and its short configuration in the test
// suite (tests/workloads): an MLP on Fashion-MNIST split across simulated workers with a
// Dirichlet label skew, the algorithms of the comparison as factories of one learning-rate
// multiplier, one training loop for every backend, and the evaluation of the averaged model.
#pragma once

#include <slowmo/problems/fashion_mnist.hpp>
#include <slowmo/problems/split.hpp>
#include <slowmo/problems/mlp.hpp>
#include <slowmo/problems/classification.hpp>
#include <slowmo/slowmo.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace example {

/// The data every run shares: the official training set minus a stratified validation split
/// (for tuning), the official test set (for reporting), and a fixed subset of the training
/// split on which the training loss is tracked (the whole split would cost more than training).
struct Workload {
  std::shared_ptr<const slowmo::problems::Dataset> train;
  slowmo::problems::Dataset validation, test, train_probe;
};

struct WorkloadOptions {
  Eigen::Index validation = 5000;  ///< held out of the 60,000 training images, stratified
  Eigen::Index train_probe = 5000;  ///< training images the training-loss curve is measured on
  Eigen::Index train_limit = 0;    ///< > 0: train on only this many images (the test suite's short run)
  Eigen::Index test_limit = 0;     ///< > 0: evaluate on only this many test images
  std::uint64_t seed = 15;          ///< of the validation split and the probe (not of the runs)
};

inline Workload fashion_mnist_workload(const WorkloadOptions& o = {}) {
  namespace problems = slowmo::problems;
  problems::FashionMnist fm = problems::load_fashion_mnist();
  auto split = problems::holdout(fm.train, o.validation, o.seed);
  Workload w;
  if (o.train_limit > 0 && o.train_limit < split.train.size()) {
    std::vector<Eigen::Index> rows(static_cast<std::size_t>(o.train_limit));
    for (std::size_t k = 0; k < rows.size(); ++k) rows[k] = Eigen::Index(k);  // holdout shuffled already
    split.train = split.train.subset(rows, "fashion-mnist train (first " + std::to_string(o.train_limit) + ")");
  }
  std::vector<Eigen::Index> probe(static_cast<std::size_t>(std::min(o.train_probe, split.train.size())));
  for (std::size_t k = 0; k < probe.size(); ++k)
    probe[k] = Eigen::Index(k * std::size_t(split.train.size()) / probe.size());
  w.train_probe = split.train.subset(probe, "fashion-mnist train probe");
  w.validation = std::move(split.validation);
  if (o.test_limit > 0 && o.test_limit < fm.test.size()) {
    std::vector<Eigen::Index> rows(static_cast<std::size_t>(o.test_limit));
    for (std::size_t k = 0; k < rows.size(); ++k) rows[k] = Eigen::Index(k);
    fm.test = fm.test.subset(rows, "fashion-mnist test (first " + std::to_string(o.test_limit) + ")");
  }
  w.test = std::move(fm.test);
  w.train = std::make_shared<const problems::Dataset>(std::move(split.train));
  return w;
}

/// One run's setting; `seed` draws the worker split, the initial weights and the minibatches.
struct Setting {
  int workers = 16;
  int steps = 600;
  int eval_every = 25;
  int batch = 32;
  double dirichlet_alpha = 0.5;
  std::vector<Eigen::Index> widths = {784, 64, 10};
  double compute_seconds = 1e-3;  ///< charged per step on the simulator (one forward/backward pass)
  std::vector<double> slowdown{};  ///< per worker (the simulator's): 10 makes a 10x straggler; empty: all 1
  std::uint64_t seed = 0;
};

using Problem = slowmo::problems::Classification<slowmo::problems::Mlp>;

inline Problem make_problem(const Workload& w, const Setting& s) {
  slowmo::problems::Mlp model({.widths = s.widths, .activation = slowmo::problems::Activation::relu});
  auto shards = slowmo::problems::split_dirichlet(*w.train, s.workers, s.dirichlet_alpha, s.seed);
  return Problem(std::move(model), w.train, std::move(shards), {.batch = s.batch, .seed = s.seed});
}

/// One worker's record at steps 0, eval_every, 2 eval_every, ...: parameters, clock, bytes sent.
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

/// What train() calls after every step, with the optimizer and the step (1-based): nothing.
struct NoObserver {
  template <class Opt>
  void operator()(const Opt&, int) const {}
};

/// Trains with the optimizer `make(comm)` returns, from the seed's initial weights (worker 0's,
/// broadcast by start); `observe(opt, t)` after every step t. A worker outside its round's
/// sample (partial participation) computes no gradient and is charged no time.
template <class Comm, class Make, class Observe = NoObserver>
Trace train(Comm& comm, const Problem& problem, Make make, const Setting& s, Observe observe = {}) {
  auto opt = make(comm);
  Eigen::VectorXf x = problem.init<float>(s.seed), g = Eigen::VectorXf::Zero(problem.dim());
  slowmo::start(opt, x);
  Trace trace;
  auto record = [&](int t) {
    trace.step.push_back(t);
    trace.time.push_back(comm.now());
    trace.bytes.push_back(bytes_sent(comm));
    trace.x.push_back(x);
  };
  record(0);
  for (int t = 1; t <= s.steps; ++t) {
    bool trains = true;
    if constexpr (requires { opt.participating(); }) trains = opt.participating();
    if (trains) {  // (an idle worker's g is not read: the last one is passed)
      problem.sample_gradient(comm.rank(), t, x, g);
      slowmo::charge_compute(comm, s.compute_seconds);
    }
    opt.step(x, g);
    observe(opt, t);
    if (t % s.eval_every == 0 || t == s.steps) record(t);
  }
  return trace;
}

/// The algorithms, each a factory of a communicator. The base optimizer is SGD with momentum
/// 0.9 (DiLoCo's is AdamW, as the paper has it) at `lr_scale` times its nominal learning rate
/// (SGD 0.1, AdamW 1e-3), with a cosine decay over the run; the outer hyper-parameters are the
/// papers' (SlowMo alpha 1, beta 0.7, tau 12; DiLoCo outer Nesterov lr 0.7, momentum 0.9).
enum class Algorithm { ar_sgd, local_sgd, slowmo_local_sgd, sgp, slowmo_sgp, diloco, slowmo_ef_top_k };

struct AlgorithmInfo {
  Algorithm id;
  const char* name;  ///< for tables and plots
  const char* key;   ///< for files and the command line
};

inline const std::vector<AlgorithmInfo>& algorithms() {
  static const std::vector<AlgorithmInfo> all = {
      {Algorithm::ar_sgd, "AR-SGD", "ar_sgd"},
      {Algorithm::local_sgd, "Local SGD (H 12)", "local_sgd"},
      {Algorithm::slowmo_local_sgd, "SlowMo over Local SGD (tau 12)", "slowmo_local_sgd"},
      {Algorithm::sgp, "SGP (1 peer)", "sgp"},
      {Algorithm::slowmo_sgp, "SlowMo over SGP (tau 12)", "slowmo_sgp"},
      {Algorithm::diloco, "DiLoCo (H 12)", "diloco"},
      {Algorithm::slowmo_ef_top_k, "SlowMo, EF top-1% (tau 12)", "slowmo_ef_top_k"},
  };
  return all;
}

/// Calls f(make) with the factory of algorithm `a`: make(comm) returns the optimizer.
template <class F>
void with_algorithm(Algorithm a, double lr_scale, int steps, F&& f) {
  using T = float;
  using slowmo::schedule::Cosine;
  const Cosine decay{.total_steps = steps, .min_factor = 0.02};
  auto sgd = [=] { return slowmo::Sgd<T, Cosine>({.lr = 0.1 * lr_scale, .momentum = 0.9}, decay); };
  constexpr std::int64_t period = 12;
  switch (a) {
    case Algorithm::ar_sgd:
      return f([=](auto& c) { return slowmo::GradientAllReduce(sgd(), c); });
    case Algorithm::local_sgd:
      return f([=](auto& c) { return slowmo::LocalSgd(sgd(), c, {.H = period}); });
    case Algorithm::slowmo_local_sgd:  // Local SGD with H = tau is SlowMo's base: the same bytes
      return f([=](auto& c) { return slowmo::SlowMo(sgd(), c, {.tau = period, .alpha = 1.0, .beta = 0.7}); });
    case Algorithm::sgp:
      return f([=](auto& c) { return slowmo::Sgp(sgd(), c); });
    case Algorithm::slowmo_sgp:
      return f([=](auto& c) {
        return slowmo::SlowMo(slowmo::Sgp(sgd(), c), c, {.tau = period, .alpha = 1.0, .beta = 0.7});
      });
    case Algorithm::diloco:
      return f([=](auto& c) {
        return slowmo::diloco<T>(c, {.H = period, .inner_lr = 1e-3 * lr_scale, .inner_weight_decay = 0.0}, decay);
      });
    case Algorithm::slowmo_ef_top_k:
      return f([=](auto& c) {
        return slowmo::SlowMo(sgd(), c, {.tau = period, .alpha = 1.0, .beta = 0.7},
                              slowmo::compress::compressed(slowmo::compress::TopK<T>({.fraction = 0.01})));
      });
  }
}

/// The averaged model's numbers at each recorded step.
struct Curve {
  std::vector<int> step;
  std::vector<double> time, mb_per_worker, test_accuracy, train_loss;
  double validation_accuracy = 0;  ///< at the end: what tuning looks at
};

inline Curve evaluate(const Problem& problem, const Workload& w, const std::vector<Trace>& traces) {
  Curve c;
  const auto m = traces.size();
  for (std::size_t e = 0; e < traces[0].step.size(); ++e) {
    Eigen::VectorXf mean = Eigen::VectorXf::Zero(problem.dim());
    double t = 0, mb = 0;
    for (const auto& tr : traces) {
      mean += tr.x[e] / float(m);
      t = std::max(t, tr.time[e]);
      mb += double(tr.bytes[e]) / 1e6 / double(m);
    }
    const slowmo::Vector<float> x(mean);
    c.step.push_back(traces[0].step[e]);
    c.time.push_back(t);
    c.mb_per_worker.push_back(mb);
    c.test_accuracy.push_back(problem.accuracy(x, w.test));
    c.train_loss.push_back(problem.loss(x, w.train_probe));
    if (e + 1 == traces[0].step.size()) c.validation_accuracy = problem.accuracy(x, w.validation);
  }
  return c;
}

/// Every worker's trace of one run on the simulator.
template <class Comm = slowmo::sim::Comm>
std::vector<Trace> simulate(const Problem& problem, const Setting& s, Algorithm a, double lr_scale,
                            const slowmo::sim::Network& network) {
  std::vector<Trace> traces(std::size_t(s.workers));
  with_algorithm(a, lr_scale, s.steps, [&](auto make) {
    slowmo::sim::run({.workers = s.workers, .network = network, .slowdown = s.slowdown},
                     [&](Comm& c) { traces[std::size_t(c.rank())] = train(c, problem, make, s); });
  });
  return traces;
}

/// One run on the simulator, evaluated.
inline Curve run_simulated(const Workload& w, const Setting& s, Algorithm a, double lr_scale,
                           const slowmo::sim::Network& network) {
  const Problem problem = make_problem(w, s);
  return evaluate(problem, w, simulate(problem, s, a, lr_scale, network));
}

/// The algorithm whose key is `key`; throws naming the keys otherwise.
inline const AlgorithmInfo& find_algorithm(const std::string& key) {
  std::string keys;
  for (const auto& a : algorithms()) {
    if (key == a.key) return a;
    keys += keys.empty() ? a.key : std::string(", ") + a.key;
  }
  throw slowmo::invalid_option("unknown algorithm '" + key + "'; the algorithms are " + keys);
}

}  // namespace example
