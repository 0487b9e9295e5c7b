// mpi_train: the training loop of examples/compare.cpp for one algorithm, one worker per
// MPI rank, printing the same summary row.
//
//   mpiexec -n 4 mpi_train [ar_sgd|local_sgd|sgp|slowmo_local_sgd|slowmo_sgp|bmuf|diloco|lookahead]
#include <slowmo/mpi.hpp>

#include <cstdio>
#include <map>
#include <string>

#include "common/softmax_training.hpp"

int main(int argc, char** argv) {
  const std::string name = argc > 1 ? argv[1] : "slowmo_local_sgd";
  return slowmo::mpi::run(argc, argv, [&](slowmo::mpi::Comm& comm) {
    using A = example::Algorithms<slowmo::mpi::Comm>;
    const slowmo::problems::LogisticRegression problem(example::softmax_problem(comm.size()));
    const example::Settings settings;
    auto run = [&](auto make) { return example::train(comm, problem, make, settings); };
    example::Trace trace;
    if (name == "ar_sgd") trace = run(A::ar_sgd);
    else if (name == "local_sgd") trace = run(A::local_sgd);
    else if (name == "sgp") trace = run(A::sgp);
    else if (name == "slowmo_local_sgd") trace = run(A::slowmo_local_sgd);
    else if (name == "slowmo_sgp") trace = run(A::slowmo_sgp);
    else if (name == "bmuf") trace = run(A::bmuf);
    else if (name == "diloco") trace = run(A::diloco);
    else if (name == "lookahead") trace = run(A::lookahead);
    else throw slowmo::invalid_option("mpi_train: unknown algorithm '" + name + "'");

    // Evaluate the average model (after training, so that it is not counted as traffic).
    Eigen::VectorXf mean = trace.x.back();
    comm.all_reduce(slowmo::as_span(mean), slowmo::ReduceOp::mean);
    double seconds = comm.now(), megabytes = double(trace.bytes.back()) / 1e6;
    comm.all_reduce(std::span<double>(&megabytes, 1), slowmo::ReduceOp::mean);
    if (comm.rank() == 0) {
      std::printf("%s on %d MPI ranks, %d steps (wall-clock, not simulated)\n", name.c_str(), comm.size(),
                  settings.steps);
      std::printf("%-20s %12s %9s %11s %14s\n", "algorithm", "f(x) - f*", "accuracy", "wall time", "MB per worker");
      std::printf("%-20s %12.4f %8.1f%% %9.3f s %14.2f\n", name.c_str(),
                  problem.excess_loss(slowmo::Vector<float>(mean)), 100 * problem.accuracy(slowmo::Vector<float>(mean)),
                  seconds, megabytes);
    }
  });
}
