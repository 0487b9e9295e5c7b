// mpi_train: the flagship demo's training (examples/common/fashion_mnist.hpp) for one
// algorithm at its nominal learning rate, one worker per MPI rank, printing the averaged
// model's test accuracy, the wall-clock time and the megabytes each rank sent.
//
//   mpiexec -n 4 mpi_train [ar_sgd|local_sgd|slowmo_local_sgd|sgp|slowmo_sgp|diloco|slowmo_ef_top_k] [steps]
#include <slowmo/mpi.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/fashion_mnist.hpp"

int main(int argc, char** argv) {
  const std::string key = argc > 1 ? argv[1] : "slowmo_local_sgd";
  const int steps = argc > 2 ? std::atoi(argv[2]) : 300;
  return slowmo::mpi::run(argc, argv, [&](slowmo::mpi::Comm& comm) {
    const example::AlgorithmInfo& algorithm = example::find_algorithm(key);
    const example::Workload w = example::fashion_mnist_workload();
    example::Setting s;
    s.workers = comm.size();
    s.steps = steps;
    s.eval_every = steps;
    const example::Problem problem = example::make_problem(w, s);
    example::Trace trace;
    example::with_algorithm(algorithm.id, 1.0, s.steps,
                            [&](auto make) { trace = example::train(comm, problem, make, s); });

    // Evaluate the average model (after training, so that it is not counted as traffic).
    Eigen::VectorXf mean = trace.x.back();
    comm.all_reduce(slowmo::as_span(mean), slowmo::ReduceOp::mean);
    double seconds = comm.now(), megabytes = double(trace.bytes.back()) / 1e6;
    comm.all_reduce(std::span<double>(&megabytes, 1), slowmo::ReduceOp::mean);
    if (comm.rank() == 0) {
      std::printf("%s on %d MPI ranks, Fashion-MNIST MLP, %d steps (wall-clock, not simulated)\n", algorithm.name,
                  comm.size(), s.steps);
      std::printf("%-32s %14s %11s %14s\n", "algorithm", "test accuracy", "wall time", "MB per worker");
      std::printf("%-32s %13.1f%% %9.3f s %14.2f\n", algorithm.name,
                  100 * problem.accuracy(slowmo::Vector<float>(mean), w.test), seconds, megabytes);
    }
  });
}
