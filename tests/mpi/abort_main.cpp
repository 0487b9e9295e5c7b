// A rank that fails at step 3 while the others keep calling collectives: the job must end
// promptly (tests/mpi/expect_failure.cmake checks the exit code, the time and the message).
//   mpi_abort throw   rank 1 throws: slowmo::mpi::run prints "slowmo: worker 1 failed: ..." and aborts the job
//   mpi_abort die     rank 1 dies on SIGKILL without a word: mpiexec must notice and end the job
//   mpi_abort model R with a shared model hosted, rank R throws while every rank pulls and pushes
//                     (R = 0: the rank whose thread serves the model): the job is aborted as above
//   mpi_abort funneled  MPI initialised for MPI_THREAD_FUNNELED only (not by run): host_model throws
//                     comm_error on every rank, which prints it and exits 0 (77 where MPI gives more)
#include <slowmo/mpi.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace {
struct SumServer final : slowmo::ModelServer<double> {
  std::vector<double> x = std::vector<double>(10, 0.0);
  std::size_t size() const override { return x.size(); }
  void apply(const slowmo::Arrival&, std::span<const double> d) override {
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += d[i];
  }
  void read(std::span<double> out) const override { std::copy(x.begin(), x.end(), out.begin()); }
};
}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "throw";
  if (mode == "funneled") {
    boost::mpi::environment env(argc, argv, boost::mpi::threading::funneled);
    if (boost::mpi::environment::thread_level() >= boost::mpi::threading::multiple) return 77;
    slowmo::mpi::Comm comm;
    try {
      comm.host_model(std::make_unique<SumServer>());
    } catch (const slowmo::comm_error& e) {
      std::printf("%s\n", e.what());
      return 0;
    }
    std::printf("rank %d: host_model did not throw\n", comm.rank());
    return 1;
  }
  const int failing = argc > 2 ? std::stoi(argv[2]) : 1;
  return slowmo::mpi::run(argc, argv, [&](slowmo::mpi::Comm& comm) {
    std::vector<double> x(10, 1.0);
    if (mode == "model") {
      comm.host_model(std::make_unique<SumServer>());
      const std::vector<double> d(10, 1.0);
      for (int step = 0;; ++step) {
        if (comm.rank() == failing && step == 3) throw std::runtime_error("boom at step 3");
        comm.pull(std::span<double>(x));
        comm.push(std::span<const double>(d));
      }
    }
    for (int step = 0;; ++step) {
      if (comm.rank() == 1 && step == 3) {
        if (mode == "die") std::raise(SIGKILL);
        throw std::runtime_error("boom at step 3");
      }
      comm.all_reduce(std::span<double>(x), slowmo::ReduceOp::mean);
    }
  });
}
