// A rank that throws at step 3 while the others keep calling collectives: the job must end
// promptly with a message naming the rank (tests/mpi/expect_failure.cmake checks it).
#include <slowmo/mpi.hpp>

#include <stdexcept>
#include <vector>

int main(int argc, char** argv) {
  return slowmo::mpi::run(argc, argv, [](slowmo::mpi::Comm& comm) {
    std::vector<double> x(10, 1.0);
    for (int step = 0;; ++step) {
      if (comm.rank() == 1 && step == 3) throw std::runtime_error("boom at step 3");
      comm.all_reduce(std::span<double>(x), slowmo::ReduceOp::mean);
    }
  });
}
