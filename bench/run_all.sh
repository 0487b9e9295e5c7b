#!/bin/sh
# Runs every benchmark and writes one JSON file per program into a directory
# (default: build/release/bench-results). Build first:
#   cmake --preset release && cmake --build --preset release
# Run it on a quiet machine: the figures are single-thread bandwidths.
set -eu
cd "$(dirname "$0")/.."
out=${1:-build/release/bench-results}
bin=build/release/bench
mkdir -p "$out"
"$bin/optim_bench" --benchmark_out="$out/optim_bench.json" --benchmark_out_format=json \
  --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
"$bin/comm_bench" --benchmark_out="$out/comm_bench.json" --benchmark_out_format=json
"$bin/mlp_bench" --benchmark_out="$out/mlp_bench.json" --benchmark_out_format=json \
  --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
if [ -x "$bin/mpi_bench" ]; then
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_plm_rsh_agent=false \
    mpiexec -n 4 --oversubscribe "$bin/mpi_bench" --benchmark_out="$out/mpi_bench.json" --benchmark_out_format=json
fi
echo "wrote $out/*.json"
