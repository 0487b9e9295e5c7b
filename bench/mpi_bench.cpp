// mpi_bench: slowmo::mpi::Comm::all_reduce(mean) against raw MPI_Allreduce(MPI_SUM, in place)
// followed by the same scaling loop, 1e3 to 1e7 doubles. Run under mpiexec, e.g.
//   mpiexec -n 4 build/release/bench/mpi_bench
// Only rank 0 reports. Validated mode (the default) adds one small all-reduce per call and
// is measured too.
#include <benchmark/benchmark.h>

#include <mpi.h>

#include <vector>

#include <slowmo/mpi.hpp>

namespace {

/// Reports nothing: the other ranks run the same iterations silently.
struct SilentReporter : benchmark::BenchmarkReporter {
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

void BM_RawAllreduceAndScale(benchmark::State& state) {
  const int n = int(state.range(0));
  int m = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &m);
  std::vector<double> x(std::size_t(n), 1.0);
  for (auto _ : state) {
    MPI_Allreduce(MPI_IN_PLACE, x.data(), n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    for (double& v : x) v /= m;
    benchmark::DoNotOptimize(x.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * n * int64_t(sizeof(double)));
}

template <bool Validate>
void BM_SlowmoAllReduceMean(benchmark::State& state) {
  const int n = int(state.range(0));
  slowmo::mpi::Comm comm({}, {.validate = Validate});
  std::vector<double> x(std::size_t(n), 1.0);
  for (auto _ : state) {
    comm.all_reduce(std::span<double>(x), slowmo::ReduceOp::mean);
    benchmark::DoNotOptimize(x.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * n * int64_t(sizeof(double)));
}

/// Fixed iteration counts: every rank must run exactly the same collectives (an adaptive
/// count could differ between ranks).
void register_sizes(const char* name, void (*fn)(benchmark::State&)) {
  const std::pair<int64_t, int64_t> plan[] = {{1000, 4000}, {10000, 2000}, {100000, 400}, {1000000, 60}, {10000000, 8}};
  for (auto [n, iterations] : plan)
    benchmark::RegisterBenchmark(name, fn)->Arg(n)->Iterations(iterations)->Repetitions(5)->ReportAggregatesOnly(true)
        ->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  register_sizes("raw_MPI_Allreduce_and_scale", BM_RawAllreduceAndScale);
  register_sizes("slowmo_all_reduce_mean", BM_SlowmoAllReduceMean<false>);
  register_sizes("slowmo_all_reduce_mean_validated", BM_SlowmoAllReduceMean<true>);
  benchmark::Initialize(&argc, argv);
  // Every rank runs the same iterations (the collectives need everyone); rank 0 reports.
  if (rank == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    SilentReporter silent;
    benchmark::RunSpecifiedBenchmarks(&silent);
  }
  benchmark::Shutdown();
  MPI_Finalize();
}
