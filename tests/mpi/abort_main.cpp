// A rank that fails at step 3 while the others keep calling collectives: the job must end
// promptly (tests/mpi/expect_failure.cmake checks the exit code, the time and the message).
//   mpi_abort throw   rank 1 throws: slowmo::mpi::run prints "slowmo: worker 1 failed: ..." and aborts the job
//   mpi_abort die     rank 1 dies on SIGKILL without a word: mpiexec must notice and end the job
#include <slowmo/mpi.hpp>

#include <csignal>
#include <stdexcept>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "throw";
  return slowmo::mpi::run(argc, argv, [&](slowmo::mpi::Comm& comm) {
    std::vector<double> x(10, 1.0);
    for (int step = 0;; ++step) {
      if (comm.rank() == 1 && step == 3) {
        if (mode == "die") std::raise(SIGKILL);
        throw std::runtime_error("boom at step 3");
      }
      comm.all_reduce(std::span<double>(x), slowmo::ReduceOp::mean);
    }
  });
}
