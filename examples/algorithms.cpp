// algorithms: the same training loop with every distributed algorithm of the library, on
// 8 simulated workers, printing the final loss and the communication each one needed.
//
// Worker i minimises f_i(x) = 1/2 sum_j a_ij (x_j - c_ij)^2 from noisy gradients (the c_i
// differ: heterogeneous data); the global objective is the mean of the f_i.
#include <slowmo/slowmo.hpp>

#include <cstdio>
#include <functional>
#include <random>
#include <string>

namespace {

constexpr int workers = 8, dim = 1000, steps = 480;

struct Problem {
  Eigen::MatrixXd a, c;  // dim x workers
  Eigen::VectorXd x_star;
  Problem() : a(dim, workers), c(dim, workers) {
    std::mt19937_64 rng(1);
    std::uniform_real_distribution<double> curvature(0.2, 2.0), centre(-1.0, 1.0);
    for (int i = 0; i < workers; ++i)
      for (int j = 0; j < dim; ++j) a(j, i) = curvature(rng), c(j, i) = centre(rng);
    x_star = (a.cwiseProduct(c)).rowwise().sum().cwiseQuotient(a.rowwise().sum());
  }
  double loss(const Eigen::VectorXf& x) const {
    double f = 0;
    for (int i = 0; i < workers; ++i)
      f += 0.5 * (a.col(i).array() * (x.cast<double>() - c.col(i)).array().square()).sum() / workers;
    return f;
  }
};

struct Outcome {
  double excess_loss, seconds;
  std::uint64_t bytes_per_worker;
};

/// The training loop every algorithm shares: noisy local gradients, 1 ms of compute per step.
template <class Make>
Outcome train(const Problem& p, Make make) {
  Eigen::VectorXf final_x;
  const auto report = slowmo::sim::run(
      {.workers = workers, .network = {.latency = 50e-6, .bandwidth = 1.25e9}}, [&](slowmo::sim::Comm& comm) {
        const int r = comm.rank();
        auto opt = make(comm);
        std::mt19937_64 rng(100 + r);
        std::normal_distribution<float> noise(0.0f, 0.1f);
        Eigen::VectorXf x = Eigen::VectorXf::Zero(dim), g(dim);
        slowmo::start(opt, x);
        for (int t = 0; t < steps; ++t) {
          for (int j = 0; j < dim; ++j) g[j] = float(p.a(j, r) * (x[j] - p.c(j, r))) + noise(rng);
          comm.compute(1e-3);
          opt.step(x, g);
        }
        comm.all_reduce(slowmo::as_span(x), slowmo::ReduceOp::mean);  // evaluate the average model
        if (r == 0) final_x = x;
      });
  Eigen::VectorXf star = p.x_star.cast<float>();
  return {p.loss(final_x) - p.loss(star), report.makespan(), report.workers[0].bytes_sent};
}

}  // namespace

int main() {
  using namespace slowmo;
  using C = sim::Comm;
  const Problem p;
  const SgdOptions sgd{.lr = 0.1, .momentum = 0.9};
  std::printf("%d workers, %d parameters, %d steps, network: %s, 1 ms compute per step\n", workers, dim, steps,
              sim::Network{}.describe().c_str());
  std::printf("%-36s %14s %12s %16s\n", "algorithm", "f(x) - f*", "sim. time", "MB sent/worker");
  auto row = [](const char* name, Outcome o) {
    std::printf("%-36s %14.3e %10.3f s %16.2f\n", name, o.excess_loss, o.seconds, o.bytes_per_worker / 1e6);
  };
  row("AR-SGD (gradient all-reduce)", train(p, [&](C& c) { return GradientAllReduce(Sgd<float>(sgd), c); }));
  row("Local SGD, H = 12", train(p, [&](C& c) { return local_sgd(Sgd<float>(sgd), c, 12); }));
  row("post-local SGD, W = 96, H = 12",
      train(p, [&](C& c) { return LocalSgd(Sgd<float>(sgd), c, {.H = 12, .warmup_steps = 96}); }));
  row("SGP (exponential graph, 1 peer)", train(p, [&](C& c) { return Sgp(Sgd<float>(sgd), c); }));
  row("SlowMo over Nesterov, tau = 12", train(p, [&](C& c) {
        return SlowMo(Nesterov<float>({.lr = 0.1}), c, {.tau = 12, .beta = 0.6});
      }));
  row("SlowMo over Local SGD (H 4, tau 12)", train(p, [&](C& c) {
        return SlowMo(LocalSgd(Sgd<float>(sgd), c, {.H = 4}), c, {.tau = 12, .beta = 0.6});
      }));
  row("SlowMo over SGP, tau = 12", train(p, [&](C& c) {
        return SlowMo(Sgp(Sgd<float>(sgd), c), c, {.tau = 12, .beta = 0.6});
      }));
  row("BMUF, tau = 12", train(p, [&](C& c) { return bmuf(Sgd<float>({.lr = 0.1}), c, {.tau = 12}); }));
  row("BMUF with Nesterov block momentum", train(p, [&](C& c) {
        return bmuf(Sgd<float>({.lr = 0.1}), c, {.tau = 12, .nesterov = true});
      }));
  row("DiLoCo, H = 12", train(p, [&](C& c) { return diloco<float>(c, {.H = 12, .inner_lr = 0.05}); }));
  row("SlowMo over Lookahead(Adam)", train(p, [&](C& c) {
        return SlowMo(Lookahead(Adam<float>({.lr = 0.05}), {.k = 4}), c,
                      {.tau = 12, .beta = 0.5, .base_state = OnSync::keep});
      }));
  return 0;
}
