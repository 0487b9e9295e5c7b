// Under mpiexec: the communicator conformance suite on MPI, the cross-backend program
// against the simulator (within 1e-12 relative: MPI may add in another order), the
// validated mode's errors and the shared global model (mpi/shared_model.hpp). Exit code 0 on
// success; failures are printed by rank.
#include <slowmo/mpi.hpp>

#include <cmath>
#include <cstdio>
#include <string>

#include <unistd.h>

#include "comm/conformance.hpp"
#include "mpi/shared_model.hpp"
#include "support/zoo.hpp"

namespace {

using conformance::expect;

template <class F>
std::string comm_error_of(F&& f) {
  try {
    f();
  } catch (const slowmo::comm_error& e) {
    return e.what();
  }
  return "";
}

void cross_backend(slowmo::mpi::Comm& comm) {
  const int m = comm.size(), r = comm.rank();
  const std::vector<double> mine = conformance::spmd_program(comm);
  std::vector<double> reference;
  slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& c) {
    auto x = conformance::spmd_program(c);
    if (c.rank() == r) reference = x;
  });
  for (std::size_t i = 0; i < mine.size(); ++i)
    expect(std::abs(mine[i] - reference[i]) <= 1e-12 * std::max(1.0, std::abs(reference[i])), "rank ", r,
           ": cross-backend index ", i, ": mpi ", mine[i], " vs simulator ", reference[i]);
}

/// Every distributed algorithm on MPI against the simulator (double, 1e-12 relative).
void algorithms(slowmo::mpi::Comm& comm) {
  const int m = comm.size(), r = comm.rank();
  const auto mine = zoo::run_all<double>(comm);
  std::map<std::string, std::vector<double>> reference;
  slowmo::sim::run({.workers = m}, [&](slowmo::sim::Comm& c) {
    auto all = zoo::run_all<double>(c);
    if (c.rank() == r) reference = all;
  });
  expect(mine.size() == reference.size() && mine.size() >= 11, "rank ", r, ": ran ", mine.size(), " algorithms");
  for (const auto& [name, x] : reference)
    for (std::size_t i = 0; i < x.size(); ++i)
      expect(std::abs(mine.at(name)[i] - x[i]) <= 1e-12 * std::max(1.0, std::abs(x[i])), "rank ", r, ": ", name,
             " index ", i, ": mpi ", mine.at(name)[i], " vs simulator ", x[i]);
}

/// SlowMo stopped at steps inside and at the end of an outer round, checkpointed per rank,
/// resumed with a fresh optimizer: bit-identical to the uninterrupted run (same MPI, same
/// reduction order within one job).
void resume(slowmo::mpi::Comm& comm) {
  const int r = comm.rank();
  const std::string file = "slowmo_mpi_resume_" + std::to_string(::getpid()) + ".ckpt";
  auto make = [&] { return slowmo::SlowMo(slowmo::Nesterov<double>({.lr = 0.1}), comm, {.tau = 4, .beta = 0.6}); };
  auto train = [&](int stop) {
    slowmo::Vector<double> x = slowmo::Vector<double>::LinSpaced(7, -1, 1), g(7);
    auto opt = make();
    slowmo::start(opt, x);
    for (int t = 0; t < 14; ++t) {
      if (t == stop) {
        slowmo::save_checkpoint(opt, file);
        auto fresh = make();
        slowmo::load_checkpoint(fresh, file);
        opt = fresh;
      }
      zoo::gradient(r, x, g);
      opt.step(x, g);
    }
    std::remove(file.c_str());
    return x;
  };
  const auto uninterrupted = train(-1);
  for (int stop : {3, 4, 9}) expect(train(stop) == uninterrupted, "rank ", r, ": resume at step ", stop, " differs");
}

void validated_errors(slowmo::mpi::Comm& comm) {
  const int m = comm.size(), r = comm.rank();
  // Different lengths in one all_reduce: every rank throws, and the job goes on.
  std::vector<float> x(r == m - 1 ? 5 : 4);
  std::string e = comm_error_of([&] { comm.all_reduce(std::span<float>(x), slowmo::ReduceOp::sum); });
  expect(e.find("mismatched collective") != std::string::npos && e.find("count over [4, 5]") != std::string::npos,
         "rank ", r, ": all_reduce length mismatch gave '", e, "'");
  // A mismatched root.
  std::vector<double> y(3);
  e = comm_error_of([&] { comm.broadcast(std::span<double>(y), r == 0 ? 1 : 0); });
  expect(e.find("root over [0, 1]") != std::string::npos, "rank ", r, ": root mismatch gave '", e, "'");
  // barrier against all_reduce
  e = comm_error_of([&] {
    if (r == 0)
      comm.barrier();
    else
      comm.all_reduce(std::span<double>(y), slowmo::ReduceOp::mean);
  });
  expect(e.find("barrier") != std::string::npos, "rank ", r, ": kind mismatch gave '", e, "'");
  // Peers out of range and self-exchange fail locally.
  e = comm_error_of([&] { comm.exchange(std::span<const double>(y), 1.0, m, std::span<double>(y), 0); });
  expect(e.find("out of range") != std::string::npos, "rank ", r, ": peer out of range gave '", e, "'");
  e = comm_error_of([&] { comm.exchange(std::span<const double>(y), 1.0, r, std::span<double>(y), r); });
  expect(e.find("cannot exchange with itself") != std::string::npos, "rank ", r, ": self exchange gave '", e, "'");
  // A message of the wrong size: the receiver throws, the message is drained.
  std::vector<double> out(r == 0 ? 3 : 4), in(4);
  e = comm_error_of([&] {
    comm.exchange(std::span<const double>(out), 1.0, (r + 1) % m, std::span<double>(in), (r + m - 1) % m);
  });
  if (r == 1 % m) expect(e.find("expected 4 values from rank 0, which sent 3") != std::string::npos, "rank ", r,
                         ": wrong message size gave '", e, "'");
  // all_gather against all_reduce, and float against int32 in all_gather_v: every rank
  // throws (the sizes are judged by the conformance suite's gather_errors).
  std::vector<double> all(std::size_t(m) * 3);
  e = comm_error_of([&] {
    if (r == 0)
      comm.all_gather(std::span<const double>(y), std::span<double>(all));
    else
      comm.all_reduce(std::span<double>(y), slowmo::ReduceOp::sum);
  });
  expect(e.find("mismatched collective") != std::string::npos && e.find("all_gather") != std::string::npos &&
             e.find("all_reduce(sum)") != std::string::npos,
         "rank ", r, ": all_gather against all_reduce gave '", e, "'");
  std::vector<float> f(3), fall(std::size_t(m) * 3);
  std::vector<std::int32_t> i(3), iall(std::size_t(m) * 3);
  std::vector<std::size_t> counts(static_cast<std::size_t>(m));
  e = comm_error_of([&] {
    if (r == m - 1)
      comm.all_gather_v(std::span<const std::int32_t>(i), std::span<std::int32_t>(iall), std::span(counts));
    else
      comm.all_gather_v(std::span<const float>(f), std::span<float>(fall), std::span(counts));
  });
  expect(e.find("mismatched collective") != std::string::npos &&
             e.find(r == m - 1 ? "all_gather_v of int32" : "all_gather_v of float") != std::string::npos,
         "rank ", r, ": all_gather_v of int32 against float gave '", e, "'");
  // Unvalidated, all_gather_v still exchanges the sizes (it needs the counts): a short
  // recv throws on every rank.
  slowmo::mpi::Comm fast(comm.native(), {.validate = false});
  e = comm_error_of([&] {
    std::vector<float> small(r == 0 ? std::size_t(m) * 3 - 1 : std::size_t(m) * 3);
    fast.all_gather_v(std::span<const float>(f), std::span<float>(small), std::span(counts));
  });
  expect(e.find("slowmo::mpi: all_gather_v: the ranks send ") != std::string::npos &&
             e.find(slowmo::detail::concat("rank 0: ", m * 3 - 1)) != std::string::npos,
         "rank ", r, ": unvalidated all_gather_v with a short recv gave '", e, "'");
  for (std::size_t j = 0; j < f.size(); ++j) f[j] = float(10 * r + int(j));
  fast.all_gather(std::span<const float>(f), std::span<float>(fall));
  for (int q = 0; q < m; ++q)
    expect(fall[std::size_t(q) * 3 + 2] == float(10 * q + 2), "rank ", r, ": unvalidated all_gather block ", q);
  // After all that, the communicator still works.
  conformance::rank_and_size(comm);
}

}  // namespace

static_assert(slowmo::Communicator<slowmo::mpi::Comm>);
static_assert(slowmo::check_gather_communicator<slowmo::mpi::Comm>());
static_assert(slowmo::check_split_communicator<slowmo::mpi::Comm>());
static_assert(slowmo::check_non_blocking_communicator<slowmo::mpi::Comm>());
static_assert(slowmo::check_shared_model_communicator<slowmo::mpi::Comm>());

int main(int argc, char** argv) {
  return slowmo::mpi::run(argc, argv, [](slowmo::mpi::Comm& comm) {
    int failed = 0;
    auto section = [&](const char* name, auto&& f) {
      try {
        f();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s FAILED: %s\n", comm.rank(), name, e.what());
        failed = 1;
      }
    };
    section("conformance", [&] { conformance::all(comm); });
    section("groups", [&] { conformance::groups(comm); });
    section("non-blocking", [&] {
      conformance::non_blocking<float>(comm);
      conformance::non_blocking<double>(comm);
      slowmo::mpi::Comm half = comm.split(comm.rank() % 2, 0);
      conformance::non_blocking<double>(half);
    });
    section("cross-backend", [&] { cross_backend(comm); });
    section("algorithms", [&] { algorithms(comm); });
    section("resume", [&] { resume(comm); });
    section("validated errors", [&] { validated_errors(comm); });
    // The shared model: the suite's checks on a fresh Comm, departed at
    // the end; then MPI's own (mpi/shared_model.hpp).
    section("shared model: conformance (double)", [&] {
      slowmo::mpi::Comm c(comm.native());
      conformance::host_model_errors<double>(c);
      try {
        conformance::shared_model<double>(c);
      } catch (...) {
        c.depart();
        throw;
      }
      c.depart();
    });
    section("shared model: errors", [&] { mpi_model::errors(comm); });
    section("shared model: departures", [&] { mpi_model::departures(comm); });
    section("shared model: traffic", [&] { mpi_model::traffic<double>(comm, mpi_model::twelve, mpi_model::no_pause); });
    // Rank r makes r + 1 rounds (a pull, then one push or two), with uneven pauses between
    // pushes: the server interleaves them.
    section("shared model: uneven rates",
            [&] { mpi_model::traffic<double>(comm, mpi_model::r_plus_one, mpi_model::uneven_pause); });
    section("shared model: AsyncLocalSgd", [&] { mpi_model::async_local_sgd(comm); });
    // Last, on the run's own communicator, never departed here: slowmo::mpi::run must stop the
    // server when this function returns (rank 0 waits for every rank), or the job hangs.
    section("shared model: conformance (float), left to run()", [&] {
      conformance::host_model_errors<float>(comm);
      conformance::shared_model<float>(comm);
    });
    // Everyone learns whether anyone failed.
    double any = failed;
    comm.all_reduce(std::span<double>(&any, 1), slowmo::ReduceOp::sum);
    if (comm.rank() == 0)
      std::printf("mpi conformance on %d ranks: %s\n", comm.size(), any == 0 ? "passed" : "FAILED");
    return any == 0 ? 0 : 1;
  });
}
