// quickstart: SlowMo over Nesterov SGD on 8 simulated workers, each with its own slice of
// a least-squares problem.
#include <slowmo/problems/least_squares.hpp>
#include <slowmo/slowmo.hpp>

#include <cstdio>

int main() {
  const slowmo::problems::LeastSquares problem(
      {.workers = 8, .dim = 50, .rows_per_worker = 100, .heterogeneity = 0.5, .batch = 16, .seed = 1});

  auto report = slowmo::sim::run({.workers = 8}, [&](slowmo::sim::Comm& comm) {
    using Base = slowmo::Nesterov<double, slowmo::schedule::Cosine>;  // lr decays to 0 over the run
    slowmo::SlowMo opt(Base({.lr = 0.02, .momentum = 0.9}, {.total_steps = 1200}), comm,
                       {.tau = 12, .alpha = 1.0, .beta = 0.6, .base_state = slowmo::OnSync::reset});
    Eigen::VectorXd x = Eigen::VectorXd::Zero(problem.dim()), g(problem.dim());
    opt.start(x);  // before the first gradient: every worker takes worker 0's point
    for (int t = 0; t < 1200; ++t) {
      problem.sample_gradient(comm.rank(), t, x, g);  // a minibatch of this worker's rows
      comm.compute(1e-3);                              // 1 ms of simulated compute
      opt.step(x, g);
      if (comm.rank() == 0 && (t + 1) % 240 == 0)
        std::printf("step %4d  f(x) - f* = %.2e  (virtual time %.3f s)\n", t + 1, problem.excess_loss(x),
                    comm.now());
    }
  });
  std::printf("%.1f kB sent per worker, %.3f s of simulated time\n", report.workers[0].bytes_sent / 1e3,
              report.makespan());
}
