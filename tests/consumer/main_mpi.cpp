// Uses the optional MPI component through the installed package (built, not run).
#include <slowmo/mpi.hpp>

int main(int argc, char** argv) {
  return slowmo::mpi::run(argc, argv, [](slowmo::mpi::Comm& comm) {
    std::vector<double> x(3, 1.0);
    comm.all_reduce(std::span<double>(x), slowmo::ReduceOp::mean);
  });
}
