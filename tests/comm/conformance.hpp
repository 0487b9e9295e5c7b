// The communicator conformance suite, written once against the Communicator concept and
// run on every backend (simulator, threads, single worker, MPI, NCCL); the all-gathers
// run where the backend is a GatherCommunicator (every test file asserts it is). Each check runs inside one worker and
// throws conformance::failure on a wrong value, naming the worker, the check and the
// index, so that the same code reports through doctest in-process and through the exit
// code under mpiexec. neighbor_sum runs where the backend is a NeighborCommunicator. The shared global model (SharedModelCommunicator) has its own entries:
// host_model_errors<T>(comm) (nothing hosted after it) and shared_model<T>(comm), which hosts
// the model and so runs once per run.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <slowmo/core/communicator.hpp>
#include <slowmo/core/error.hpp>
#include <slowmo/core/shared_model.hpp>

namespace conformance {

struct failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... Parts>
void expect(bool ok, const Parts&... parts) {
  if (!ok) throw failure(slowmo::detail::concat(parts...));
}

/// Lets virtual time pass on the simulator, real time elsewhere.
template <class C>
void wait_seconds(C& comm, double s) {
  if constexpr (requires { comm.advance(s); })
    comm.advance(s);
  else
    std::this_thread::sleep_for(std::chrono::duration<double>(s));
}

inline const std::size_t sizes[] = {0, 1, 7, 1001, 100003};

template <class T, slowmo::Communicator C>
void all_reduce(C& comm) {
  const int m = comm.size(), r = comm.rank();
  for (std::size_t n : sizes) {
    // x_r[i] = (i % 5) + (r - (m - 1) / 2): the sum over workers is m * (i % 5) and the
    // average is (i % 5), both exact in float and double for the sizes used here.
    std::vector<T> x(n);
    auto fill = [&] {
      for (std::size_t i = 0; i < n; ++i) x[i] = T(i % 5) + (T(r) - T(m - 1) / T(2));
    };
    fill();
    comm.all_reduce(std::span<T>(x), slowmo::ReduceOp::sum);
    for (std::size_t i = 0; i < n; ++i)
      expect(x[i] == T(m) * T(i % 5), "worker ", r, ": all_reduce(sum) n = ", n, " index ", i, ": ", x[i],
             " != ", T(m) * T(i % 5));
    fill();
    comm.all_reduce(std::span<T>(x), slowmo::ReduceOp::mean);
    for (std::size_t i = 0; i < n; ++i)
      expect(x[i] == T(i % 5), "worker ", r, ": all_reduce(mean) n = ", n, " index ", i, ": ", x[i], " != ", i % 5);
  }
  // A mean that is not a small integer: the correctly rounded average of 0.1 * (r + 1).
  std::vector<T> y(3, T(0.1) * T(r + 1));
  comm.all_reduce(std::span<T>(y), slowmo::ReduceOp::mean);
  double exact = 0;
  for (int q = 0; q < m; ++q) exact += double(T(0.1) * T(q + 1));
  const double tol = 4.0 * m * double(std::numeric_limits<T>::epsilon()) * exact / m;
  expect(std::abs(double(y[2]) - exact / m) <= tol, "worker ", r, ": all_reduce(mean) of 0.1 (r + 1): ", y[2],
         " vs ", exact / m);
}

template <class T, slowmo::Communicator C>
void broadcast(C& comm) {
  const int m = comm.size(), r = comm.rank();
  for (std::size_t n : sizes)
    for (int root = 0; root < m; root += std::max(1, m / 3)) {
      std::vector<T> x(n);
      for (std::size_t i = 0; i < n; ++i) x[i] = T(1000 * r) + T(i % 101);
      comm.broadcast(std::span<T>(x), root);
      for (std::size_t i = 0; i < n; ++i)
        expect(x[i] == T(1000 * root) + T(i % 101), "worker ", r, ": broadcast from ", root, " n = ", n, " index ", i,
               ": ", x[i]);
    }
}

/// Every worker sends to dest(r) and receives from source(r) in one exchange.
template <class T, slowmo::Communicator C>
void exchange_pattern(C& comm, int dest, int source, const char* pattern) {
  const int r = comm.rank();
  for (std::size_t n : sizes) {
    std::vector<T> out(n), in(n, T(-1));
    for (std::size_t i = 0; i < n; ++i) out[i] = T(r) + T(i % 17) / T(32);
    const double w = comm.exchange(std::span<const T>(out), 0.5 + r, dest, std::span<T>(in), source);
    expect(w == 0.5 + source, "worker ", r, ": exchange (", pattern, ") weight ", w, " from ", source);
    for (std::size_t i = 0; i < n; ++i)
      expect(in[i] == T(source) + T(i % 17) / T(32), "worker ", r, ": exchange (", pattern, ") n = ", n, " index ",
             i, ": ", in[i], " from worker ", source);
  }
}

template <class T, slowmo::Communicator C>
void exchange(C& comm) {
  const int m = comm.size(), r = comm.rank();
  if (m < 2) return;
  exchange_pattern<T>(comm, (r + 1) % m, (r + m - 1) % m, "ring");
  exchange_pattern<T>(comm, (r + m - 1) % m, (r + 1) % m, "reverse ring");
  for (int d = 1; d < m; d *= 2)  // the directed exponential graph's peers
    exchange_pattern<T>(comm, (r + d) % m, (r + m - d) % m, "exponential graph");
  // A permutation without fixed points: pairs (0 1)(2 3)..., the odd one out in a 3-cycle.
  std::vector<int> to(static_cast<std::size_t>(m));
  for (int q = 0; q + 1 < m; q += 2) to[std::size_t(q)] = q + 1, to[std::size_t(q + 1)] = q;
  if (m % 2 == 1) to[std::size_t(m - 1)] = m - 3, to[std::size_t(m - 3)] = m - 2, to[std::size_t(m - 2)] = m - 1;
  if (m == 3) to = {1, 2, 0};
  int from = -1;
  for (int q = 0; q < m; ++q)
    if (to[std::size_t(q)] == r) from = q;
  exchange_pattern<T>(comm, to[std::size_t(r)], from, "pairs");
  // Several rounds in a row with no barrier between: messages must not mix.
  for (int round = 0; round < 5; ++round) {
    T out = T(r * 10 + round), in = T(-1);
    comm.exchange(std::span<const T>(&out, 1), 0.0, (r + 1) % m, std::span<T>(&in, 1), (r + m - 1) % m);
    expect(in == T(((r + m - 1) % m) * 10 + round), "worker ", r, ": exchange round ", round, " got ", in);
  }
}

/// A clock every worker reads on the same scale: the simulator's virtual time; elsewhere the
/// machine's steady clock (shared by the threads and processes of one machine).
template <class C>
double shared_clock(C& comm) {
  if constexpr (requires { comm.advance(0.0); })
    return comm.now();
  else
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// No worker leaves a barrier before the last one arrived: worker r arrives after r * 5 ms
/// (virtual or real); the last worker's arrival time is then broadcast and every worker
/// checks that it left after it.
template <slowmo::Communicator C>
void barrier(C& comm) {
  const int m = comm.size(), r = comm.rank();
  comm.barrier();
  wait_seconds(comm, 0.005 * r);
  double arrival = shared_clock(comm);
  comm.barrier();
  const double left = shared_clock(comm);
  comm.broadcast(std::span<double>(&arrival, 1), m - 1);  // the last to arrive
  expect(left >= arrival, "worker ", r, ": left the barrier at ", left, ", before worker ", m - 1,
         " arrived at ", arrival);
  for (int i = 0; i < 5; ++i) comm.barrier();
}

/// The worker's clock (virtual on the simulator, wall-clock elsewhere) never goes back, and
/// moves on by at least the time the worker waited.
template <slowmo::Communicator C>
void clock(C& comm) {
  const int r = comm.rank();
  const double t0 = comm.now();
  wait_seconds(comm, 0.002);
  const double t1 = comm.now();
  comm.barrier();
  const double t2 = comm.now();
  expect(t1 - t0 >= 0.002 * 0.999, "worker ", r, ": now() moved by ", t1 - t0, " s over a 0.002 s wait");
  expect(t2 >= t1, "worker ", r, ": now() went back across a barrier, from ", t1, " to ", t2);
}

template <slowmo::Communicator C>
void rank_and_size(C& comm) {
  const int m = comm.size(), r = comm.rank();
  expect(m >= 1 && r >= 0 && r < m, "rank ", r, " size ", m);
  std::vector<double> v{1.0, double(r)};
  comm.all_reduce(std::span<double>(v), slowmo::ReduceOp::sum);
  expect(v[0] == m && v[1] == m * (m - 1) / 2.0, "worker ", r, ": ranks are not 0..m-1 exactly once");
}

/// The comm_error f throws, or "" when it throws none.
template <class F>
std::string comm_error_of(F&& f) {
  try {
    f();
  } catch (const slowmo::comm_error& e) {
    return e.what();
  }
  return "";
}

/// What worker r puts at index j of its block: small integers, exact in every element type
/// (uint8 included: below 251), different from worker to worker at every j, never 255.
template <class T>
T gathered_value(int r, std::size_t j) {
  return T((10 * std::size_t(r) + j) % 251);
}
/// What recv holds where nobody wrote.
template <class T>
constexpr T untouched = T(255);

template <class T>
void expect_block(std::span<const T> recv, std::size_t at, int q, std::size_t n, int r, const char* what) {
  for (std::size_t j = 0; j < n; ++j)
    expect(recv[at + j] == gathered_value<T>(q, j), "worker ", r, ": ", what, ": block of worker ", q, " index ", j,
           ": ", double(recv[at + j]), " != ", double(gathered_value<T>(q, j)));
}

/// all_gather: rank r sends n values (10 r + j) % 251; recv holds every block in rank
/// order; in place (send is the worker's own block of recv) too.
template <class T, slowmo::GatherCommunicator C>
void all_gather(C& comm) {
  const int m = comm.size(), r = comm.rank();
  for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(7), std::size_t(1001)}) {
    std::vector<T> send(n), recv(std::size_t(m) * n, untouched<T>);
    for (std::size_t j = 0; j < n; ++j) send[j] = gathered_value<T>(r, j);
    comm.all_gather(std::span<const T>(send), std::span<T>(recv));
    for (int q = 0; q < m; ++q) expect_block<T>(recv, std::size_t(q) * n, q, n, r, "all_gather");

    std::fill(recv.begin(), recv.end(), untouched<T>);
    std::copy(send.begin(), send.end(), recv.begin() + std::ptrdiff_t(std::size_t(r) * n));
    comm.all_gather(std::span<const T>(recv.data() + std::size_t(r) * n, n), std::span<T>(recv));
    for (int q = 0; q < m; ++q) expect_block<T>(recv, std::size_t(q) * n, q, n, r, "all_gather in place");
  }
}

/// all_gather_v: worker r sends scale * (r % 3) * (r + 1) values, so worker 0 (and every
/// third) sends none; recv has 3 spare values at the end, which stay untouched; counts
/// starts out wrong.
template <class T, slowmo::GatherCommunicator C>
void all_gather_v(C& comm) {
  const int m = comm.size(), r = comm.rank();
  auto count = [](int q, std::size_t scale) { return scale * std::size_t(q % 3) * std::size_t(q + 1); };
  for (std::size_t scale : {std::size_t(0), std::size_t(1), std::size_t(97)}) {
    std::size_t total = 0;
    for (int q = 0; q < m; ++q) total += count(q, scale);
    std::vector<T> send(count(r, scale)), recv(total + 3, untouched<T>);
    for (std::size_t j = 0; j < send.size(); ++j) send[j] = gathered_value<T>(r, j);
    std::vector<std::size_t> counts(std::size_t(m), 12345);
    const std::size_t got = comm.all_gather_v(std::span<const T>(send), std::span<T>(recv), std::span(counts));
    expect(got == total, "worker ", r, ": all_gather_v (scale ", scale, ") returned ", got, ", not the total ", total);
    std::size_t at = 0;
    for (int q = 0; q < m; ++q) {
      expect(counts[std::size_t(q)] == count(q, scale), "worker ", r, ": all_gather_v (scale ", scale, ") counts[",
             q, "] = ", counts[std::size_t(q)], ", not ", count(q, scale));
      expect_block<T>(recv, at, q, count(q, scale), r, "all_gather_v");
      at += count(q, scale);
    }
    for (std::size_t i = total; i < recv.size(); ++i)
      expect(recv[i] == untouched<T>, "worker ", r, ": all_gather_v wrote past the total, at ", i);
  }
  // In place: worker r's block already sits at its offset in recv.
  std::size_t offset = 0, total = 0;
  for (int q = 0; q < m; ++q) total += count(q, 5), offset += q < r ? count(q, 5) : 0;
  std::vector<T> recv(total, untouched<T>);
  for (std::size_t j = 0; j < count(r, 5); ++j) recv[offset + j] = gathered_value<T>(r, j);
  std::vector<std::size_t> counts(static_cast<std::size_t>(m));
  comm.all_gather_v(std::span<const T>(recv.data() + offset, count(r, 5)), std::span<T>(recv), std::span(counts));
  for (int q = 0, at = 0; q < m; at += int(count(q, 5)), ++q)
    expect_block<T>(recv, std::size_t(at), q, count(q, 5), r, "all_gather_v in place");
}

/// Sizes that do not fit throw comm_error on every worker, naming the culprit and the
/// sizes, and leave the communicator usable: the backends judge them from everyone's.
template <class T, slowmo::GatherCommunicator C>
void gather_errors(C& comm) {
  const int m = comm.size(), r = comm.rank(), last = m - 1;
  auto names = [&](const std::string& e, const std::string& what) {
    return e.find(what) != std::string::npos;
  };
  std::vector<T> send(4, T(1)), recv(std::size_t(m) * 4);
  std::vector<std::size_t> counts(static_cast<std::size_t>(m));
  std::string e;
  if (m > 1) {  // the last worker sends 5 where the others send 4
    std::vector<T> longer(5, T(1)), recv5(std::size_t(m) * 5);
    e = comm_error_of([&] {
      if (r == last) comm.all_gather(std::span<const T>(longer), std::span<T>(recv5));
      else comm.all_gather(std::span<const T>(send), std::span<T>(recv));
    });
    expect(names(e, "all_gather: the ") && names(e, slowmo::detail::concat(" 0: 4")) &&
               names(e, slowmo::detail::concat(" ", last, ": 5")) && names(e, "all_gather_v takes"),
           "worker ", r, ": all_gather with different send sizes gave '", e, "'");
  }
  // Worker 0's recv is one value short.
  std::vector<T> short_recv(std::size_t(m) * 4 - 1);
  e = comm_error_of([&] {
    comm.all_gather(std::span<const T>(send), r == 0 ? std::span<T>(short_recv) : std::span<T>(recv));
  });
  expect(names(e, slowmo::detail::concat("recv must hold size() * send.size() = ", m * 4)) &&
             names(e, slowmo::detail::concat(" 0: ", m * 4 - 1)),
         "worker ", r, ": all_gather with a short recv on worker 0 gave '", e, "'");
  // all_gather_v: every worker sends 4; the last worker's recv holds one less than the total.
  e = comm_error_of([&] {
    comm.all_gather_v(std::span<const T>(send), r == last ? std::span<T>(short_recv) : std::span<T>(recv),
                      std::span(counts));
  });
  expect(names(e, slowmo::detail::concat("send ", m * 4, " ")) &&
             names(e, slowmo::detail::concat(" ", last, ": ", m * 4 - 1)) && names(e, "must hold the total"),
         "worker ", r, ": all_gather_v with a short recv gave '", e, "'");
  // Worker 0's counts has one entry too many.
  std::vector<std::size_t> long_counts(std::size_t(m) + 1);
  e = comm_error_of([&] {
    comm.all_gather_v(std::span<const T>(send), std::span<T>(recv),
                      r == 0 ? std::span(long_counts) : std::span(counts));
  });
  expect(names(e, slowmo::detail::concat("counts must have one entry per ")) &&
             names(e, slowmo::detail::concat(" 0: ", m + 1)),
         "worker ", r, ": all_gather_v with a long counts gave '", e, "'");
  // Still in step.
  for (std::size_t j = 0; j < send.size(); ++j) send[j] = gathered_value<T>(r, j);
  comm.all_gather(std::span<const T>(send), std::span<T>(recv));
  for (int q = 0; q < m; ++q) expect_block<T>(recv, std::size_t(q) * 4, q, 4, r, "all_gather after errors");
}

// ---- neighbor_sum (NeighborCommunicator) ----------------------------------------------------

/// The test pattern of round `round`: j -> i (i != j) when (i + 2 j + round) % 3 != 0, except
/// that with m >= 3 worker m - 1 sends to nobody and worker 0 hears from nobody; degrees differ.
inline bool neighbor_edge(int j, int i, int m, int round) {
  if (i == j) return false;
  if (m >= 3 && (j == m - 1 || i == 0)) return false;
  return (i + 2 * j + round) % 3 != 0;
}

/// What worker j sends in round `round` at index i: not exactly representable, so that the
/// order of the additions shows in the last bits.
template <class T>
T neighbor_value(int j, int round, std::size_t i) {
  return T(j + 1) * T(0.1) + T(double(i % 13) * 1e-3) + T(round) * T(0.37);
}

/// neighbor_sum over the pattern above, several rounds in a row with no barrier between: the
/// sum received is the sources' buffers added in the order sources lists them (descending rank
/// in even rounds, ascending in odd ones), exactly; the weight is their weights added from 0
/// in the same order; with no sources, in = 0 and the weight 0.
template <class T, slowmo::NeighborCommunicator C>
void neighbor_sum(C& comm) {
  const int m = comm.size(), r = comm.rank();
  for (int round = 0; round < 4; ++round) {
    std::vector<int> dests, sources;
    for (int i = 0; i < m; ++i)
      if (neighbor_edge(r, i, m, round)) dests.push_back(i);
    for (int j = 0; j < m; ++j)
      if (neighbor_edge(j, r, m, round)) sources.push_back(j);
    if (round % 2 == 0) std::reverse(sources.begin(), sources.end());
    if (m >= 3 && r == 0) expect(sources.empty(), "worker 0 has in-peers in the test pattern");
    if (m >= 3 && r == m - 1) expect(dests.empty(), "worker ", m - 1, " has out-peers in the test pattern");
    for (std::size_t n : sizes) {
      if (n > 1001 && round > 0) continue;
      std::vector<T> out(n), in(n, T(-1));
      for (std::size_t i = 0; i < n; ++i) out[i] = neighbor_value<T>(r, round, i);
      const double w = comm.neighbor_sum(std::span<const T>(out), 0.5 + r + round, std::span<const int>(dests),
                                         std::span<T>(in), std::span<const int>(sources));
      double expected_w = 0;
      for (int j : sources) expected_w += 0.5 + j + round;
      expect(w == expected_w, "worker ", r, ": neighbor_sum round ", round, " returned weight ", w, ", not ",
             expected_w);
      for (std::size_t i = 0; i < n; ++i) {
        T sum = sources.empty() ? T(0) : neighbor_value<T>(sources[0], round, i);
        for (std::size_t q = 1; q < sources.size(); ++q) sum = T(sum + neighbor_value<T>(sources[q], round, i));
        expect(in[i] == sum, "worker ", r, ": neighbor_sum round ", round, " n = ", n, " index ", i, ": ", in[i],
               " != ", sum, " (the sum over ", sources.size(), " sources in their order)");
      }
    }
  }
}

/// neighbor_sum's errors: peers out of range, the worker itself or listed twice (on the worker
/// that made them, before anything is sent), and a message of the wrong size (on its
/// receiver, naming both workers and the sizes, between workers 0 and 1 only so that on NCCL,
/// where both ends of the pair throw, nobody else waits); then it still works.
template <class T, slowmo::NeighborCommunicator C>
void neighbor_sum_errors(C& comm) {
  const int m = comm.size(), r = comm.rank();
  std::vector<T> out(3, T(1)), in(3);
  auto call = [&](std::vector<int> dests, std::vector<int> sources, std::size_t n_out = 3) {
    return comm_error_of([&] {
      comm.neighbor_sum(std::span<const T>(out.data(), n_out), 1.0, std::span<const int>(dests), std::span<T>(in),
                        std::span<const int>(sources));
    });
  };
  auto names = [](const std::string& e, const std::string& what) { return e.find(what) != std::string::npos; };
  std::string e = call({m}, {});
  expect(names(e, slowmo::detail::concat("neighbor_sum dests[0] = ", m, " is out of range [0, ", m, ")")), "worker ",
         r, ": a dest out of range gave '", e, "'");
  e = call({}, {-1});
  expect(names(e, "neighbor_sum sources[0] = -1 is out of range"), "worker ", r, ": a source out of range gave '", e,
         "'");
  e = call({r}, {});
  expect(names(e, slowmo::detail::concat("dests[0] = ", r, " is the ")) && names(e, "itself"), "worker ", r,
         ": a dest that is the worker itself gave '", e, "'");
  if (m < 2) return;
  const int peer = (r + 1) % m;
  e = call({peer, peer}, {});
  expect(names(e, slowmo::detail::concat(" ", peer, " twice in its dests")), "worker ", r, ": a dest listed twice gave '",
         e, "'");
  e = call({}, {peer, peer});
  expect(names(e, slowmo::detail::concat(" ", peer, " twice in its sources")), "worker ", r,
         ": a source listed twice gave '", e, "'");
  // Worker 0 sends 2 values to worker 1, which expects 3.
  const bool pair = r < 2;
  e = call(pair ? std::vector<int>{1 - r} : std::vector<int>{}, pair ? std::vector<int>{1 - r} : std::vector<int>{},
           r == 0 ? 2 : 3);
  // (The backend names the two by their ranks, or, the engine on a group from split(), by
  // their workers in the run.)
  if (r == 1)
    expect(names(e, "neighbor_sum") && names(e, " expected 3 ") && (names(e, ", which sent 2") || names(e, ", which sends 2")),
           "worker 1: a message of 2 values where 3 were expected gave '", e, "'");
  // Still in step: a ring.
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = T(10 * r + int(i));
  const int from = (r + m - 1) % m;
  const std::vector<int> to{peer}, src{from};
  const double w = comm.neighbor_sum(std::span<const T>(out), 2.0 * r, std::span<const int>(to), std::span<T>(in),
                                     std::span<const int>(src));
  expect(w == 2.0 * from && in[2] == T(10 * from + 2), "worker ", r, ": neighbor_sum after errors got ", in[2],
         " and weight ", w);
}

template <class T, slowmo::GatherCommunicator C>
void gathers(C& comm) {
  all_gather<T>(comm);
  all_gather_v<T>(comm);
  gather_errors<T>(comm);
}

/// The whole suite.
template <slowmo::Communicator C>
void all(C& comm) {
  rank_and_size(comm);
  all_reduce<float>(comm);
  all_reduce<double>(comm);
  broadcast<float>(comm);
  broadcast<double>(comm);
  exchange<float>(comm);
  exchange<double>(comm);
  clock(comm);
  barrier(comm);
  if constexpr (slowmo::NeighborCommunicator<C>) {
    neighbor_sum<float>(comm);
    neighbor_sum<double>(comm);
    neighbor_sum_errors<float>(comm);
    neighbor_sum_errors<double>(comm);
  }
  if constexpr (slowmo::GatherCommunicator<C>) {
    gathers<float>(comm);
    gathers<double>(comm);
    gathers<std::int32_t>(comm);
    gathers<std::uint8_t>(comm);
  }
}

// ---- non-blocking collectives (NonBlockingCommunicator) ------------------------------------

/// start_all_reduce then wait gives what all_reduce gives; the worker may compute (and talk on
/// another communicator) in between; a request destroyed unwaited has completed; ready()
/// turns true without the worker waiting; misuse throws usage_error; a size mismatch throws
/// comm_error on every worker (at the start or at the wait, as the backend finds it).
template <class T, slowmo::NonBlockingCommunicator C>
void non_blocking(C& comm) {
  const int m = comm.size(), r = comm.rank();
  for (std::size_t n : sizes) {
    std::vector<T> x(n), y(n);
    for (std::size_t i = 0; i < n; ++i) x[i] = y[i] = T(i % 5) + (T(r) - T(m - 1) / T(2));
    auto sum = comm.start_all_reduce(std::span<T>(x), slowmo::ReduceOp::sum);
    expect(sum.pending(), "worker ", r, ": a started all-reduce is pending");
    wait_seconds(comm, 1e-4 * r);  // computation in between, different on every worker
    sum.wait();
    expect(!sum.pending(), "worker ", r, ": pending after wait()");
    for (std::size_t i = 0; i < n; ++i)
      expect(x[i] == T(m) * T(i % 5), "worker ", r, ": start_all_reduce(sum) n = ", n, " index ", i, ": ", x[i]);
    {
      auto mean = comm.start_all_reduce(std::span<T>(y), slowmo::ReduceOp::mean);
    }  // destroyed pending: it waits
    for (std::size_t i = 0; i < n; ++i)
      expect(y[i] == T(i % 5), "worker ", r, ": start_all_reduce(mean) n = ", n, " index ", i, ": ", y[i]);
  }
  // ready() becomes true while the worker keeps computing, without wait().
  std::vector<T> z(64, T(r));
  auto req = comm.start_all_reduce(std::span<T>(z), slowmo::ReduceOp::sum);
  int polls = 0;
  while (!req.ready() && polls < 100000) ++polls, wait_seconds(comm, 1e-4);
  expect(req.ready(), "worker ", r, ": ready() still false after ", polls, " polls");
  req.wait();
  expect(z[63] == T(m * (m - 1) / 2), "worker ", r, ": all-reduce after ready(): ", z[63]);
  // Misuse: a second start, or a blocking collective on this communicator, before the wait.
  {
    std::vector<T> a(3, T(1)), b(3, T(1));
    auto first = comm.start_all_reduce(std::span<T>(a), slowmo::ReduceOp::sum);
    std::string e;
    try {
      auto second = comm.start_all_reduce(std::span<T>(b), slowmo::ReduceOp::sum);
    } catch (const slowmo::usage_error& u) {
      e = u.what();
    }
    if constexpr (requires { comm.advance(0.0); }) {  // the engine's rule (MPI allows several)
      expect(e.find("wait() for it first") != std::string::npos, "worker ", r, ": a second start gave '", e, "'");
      e.clear();
      try {
        comm.all_reduce(std::span<T>(b), slowmo::ReduceOp::sum);
      } catch (const slowmo::usage_error& u) {
        e = u.what();
      }
      expect(e.find("wait() for it first") != std::string::npos, "worker ", r,
             ": a blocking all_reduce before the wait gave '", e, "'");
    }
    first.wait();
    expect(a[0] == T(m), "worker ", r, ": the first all-reduce after the refused calls: ", a[0]);
  }
  rank_and_size(comm);
}

// ---- groups (SplitCommunicator) ------------------------------------------------------------

/// Splits comm by color(r) with key(r) and checks the result against MPI_Comm_split's
/// definition computed here from everyone's (color, key): the members of each color, ranked by
/// (key, old rank). Then a sum over the group names exactly its members, and the whole suite
/// runs on it.
template <slowmo::SplitCommunicator C, class Color, class Key>
C split_checked(C& comm, Color color, Key key, const char* what) {
  const int m = comm.size(), r = comm.rank();
  C sub = comm.split(color(r), key(r));
  std::vector<int> members;  // old ranks of my color, by (key, old rank)
  for (int q = 0; q < m; ++q)
    if (color(q) == color(r)) members.push_back(q);
  std::stable_sort(members.begin(), members.end(), [&](int a, int b) { return key(a) < key(b); });
  const int want_rank = int(std::find(members.begin(), members.end(), r) - members.begin());
  expect(sub.size() == int(members.size()) && sub.rank() == want_rank, "worker ", r, ": split (", what, ") gave rank ",
         sub.rank(), " of ", sub.size(), "; MPI_Comm_split gives rank ", want_rank, " of ", members.size());
  // Every member contributes (old rank + 1) * 2^(new rank): the sum pins both sets and orders.
  std::vector<double> v{double(r + 1) * std::ldexp(1.0, sub.rank())};
  sub.all_reduce(std::span<double>(v), slowmo::ReduceOp::sum);
  double want = 0;
  for (std::size_t k = 0; k < members.size(); ++k) want += double(members[k] + 1) * std::ldexp(1.0, int(k));
  expect(v[0] == want, "worker ", r, ": all_reduce over its group (", what, ") gave ", v[0], ", not ", want);
  return sub;
}

/// Groups of different sizes (halves; r % 3 with the order reversed by key; a worker alone; a
/// group split again), each running the whole suite, while the parent communicator keeps
/// working between them; then the misuse every backend must report on every worker.
template <slowmo::SplitCommunicator C>
void groups(C& comm) {
  const int m = comm.size(), r = comm.rank();
  {
    C half = split_checked(comm, [m](int q) { return q < m / 2 ? 0 : 1; }, [](int q) { return q; }, "halves");
    rank_and_size(comm);  // the parent goes on, and its collectives never meet the group's
    all(half);
  }
  {
    C thirds = split_checked(comm, [](int q) { return q % 3; }, [](int q) { return -q; }, "r % 3, reversed");
    all(thirds);
    // Split again: the ranks of a group, by parity of the group rank.
    const int tr = thirds.rank();
    C again = thirds.split(tr % 2, 0);
    expect(again.size() == (thirds.size() + 1 - tr % 2) / 2 && again.rank() == tr / 2, "worker ", r,
           ": splitting its group again gave rank ", again.rank(), " of ", again.size());
    all(again);
  }
  {
    C alone = split_checked(comm, [](int q) { return q == 0 ? 0 : 1; }, [](int) { return 0; }, "worker 0 alone");
    all(alone);
    C last = split_checked(comm, [m](int q) { return q < m - 1 ? 0 : 1; }, [](int) { return 0; }, "m - 1 and 1");
    all(last);
  }
  // The shared model stays on the communicator the run started with.
  if constexpr (slowmo::SharedModelCommunicator<C>) {
    C sub = comm.split(0, r);
    std::vector<double> x(2);
    std::string e;
    try {
      (void)sub.pull(std::span<double>(x));
    } catch (const slowmo::usage_error& u) {
      e = u.what();
    }
    expect(e.find("pull on a communicator from split()") != std::string::npos, "worker ", r,
           ": pull on a communicator from split() gave '", e, "'");
  }
  // A negative color fails every worker of the split, naming the worker and its color, and
  // leaves the communicator usable.
  const std::string e = comm_error_of([&] { (void)comm.split(r == m - 1 ? -1 : 0, 0); });
  expect(e.find("split") != std::string::npos && e.find("color -1") != std::string::npos &&
             e.find(slowmo::detail::concat(m - 1)) != std::string::npos,
         "worker ", r, ": a split with color -1 on worker ", m - 1, " gave '", e, "'");
  rank_and_size(comm);
}

// ---- the shared global model -------------------------------------------------------------

/// The checks' server: x += d, so that with integer-valued pushes the model is exact in
/// float and double whatever the order of arrival; it starts at version `version`, and refuses
/// (throws, leaving x as it was) a push whose d[0] is -1000, for the checks of a failing server.
template <class T>
class SumServer final : public slowmo::ModelServer<T> {
 public:
  explicit SumServer(std::vector<T> x0, std::int64_t version = 0) : x_(std::move(x0)), version_(version) {}
  std::size_t size() const override { return x_.size(); }
  void apply(const slowmo::Arrival&, std::span<const T> d) override {
    if (!d.empty() && d[0] == T(-1000)) throw std::domain_error("refused: d[0] = -1000");
    for (std::size_t i = 0; i < x_.size(); ++i) x_[i] += d[i];
  }
  void read(std::span<T> out) const override { std::copy(x_.begin(), x_.end(), out.begin()); }
  std::int64_t initial_version() const override { return version_; }

 private:
  std::vector<T> x_;
  std::int64_t version_;
};

/// The message of the exception of type E that f throws, or "" when it throws none.
template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

/// host_model's mismatches, each a comm_error on every worker naming the culprits and their
/// servers as "<rank>: <size> <type>" (a longer model on the last worker, float against double
/// on worker 0, a null server on the last worker); nothing is hosted after them, so
/// shared_model<T> may follow in the same run.
template <class T, slowmo::SharedModelCommunicator C>
void host_model_errors(C& comm) {
  using Other = std::conditional_t<std::is_same_v<T, float>, double, float>;
  const int m = comm.size(), r = comm.rank(), last = m - 1;
  constexpr std::size_t n = 7;
  auto has = [](const std::string& e, const std::string& what) { return e.find(what) != std::string::npos; };
  auto initial = [](std::size_t size) { return std::vector<T>(size, T(1)); };
  std::string e;
  // host_model's mismatches fail on every worker, naming the culprit.
  if (m > 1) {
    e = error_of<slowmo::comm_error>([&] {
      comm.host_model(std::make_unique<SumServer<T>>(initial(r == last ? n + 1 : n)));
    });
    expect(has(e, "host_model") && has(e, slowmo::detail::concat(" ", last, ": ", n + 1)) &&
               has(e, slowmo::detail::concat(" 0: ", n)),
           "worker ", r, ": host_model with a longer model on worker ", last, " gave '", e, "'");
    e = error_of<slowmo::comm_error>([&] {
      if (r == 0) comm.host_model(std::make_unique<SumServer<Other>>(std::vector<Other>(n)));
      else comm.host_model(std::make_unique<SumServer<T>>(initial(n)));
    });
    const char* tname = std::is_same_v<T, float> ? "float" : "double";
    const char* oname = std::is_same_v<T, float> ? "double" : "float";
    expect(has(e, "host_model") && has(e, slowmo::detail::concat(" 0: ", n, " ", oname)) &&
               has(e, slowmo::detail::concat(" 1: ", n, " ", tname)),
           "worker ", r, ": host_model of ", oname, " on worker 0 gave '", e, "'");
  }
  e = error_of<slowmo::comm_error>([&] {
    comm.host_model(r == last ? std::unique_ptr<slowmo::ModelServer<T>>() : std::make_unique<SumServer<T>>(initial(n)));
  });
  expect(has(e, "host_model") && has(e, "null") && has(e, slowmo::detail::concat(" ", last)), "worker ", r,
         ": host_model with a null server on worker ", last, " gave '", e, "'");
}

/// The shared model (it hosts two models, the second in place of the first): misuse before
/// and after host_model (on the worker that made it); the second model, which starts at
/// version v0 = 5, must be pulled before a push and continues from v0; then `rounds` rounds of pull and push by every worker in which every 4th round pushes twice
/// without pulling. Worker q's
/// push of round k is (100 (q + 1) + k) (i % 3 + 1), the model starts at i - 3: every value
/// is a small integer, exact in float and double, so after the run the model is
/// x0 + the sum of every push, whatever the order of arrival. Checked from the workers'
/// own records, gathered by all-reduce: the versions 1..m*rounds are each produced by exactly
/// one push (v0 + 1..v0 + m*rounds); each push's staleness is the number of versions produced by other workers
/// between its worker's last pull and itself; a pull reads x0 + the pushes of versions up to
/// the one it returns; a pull right after a worker's push sees at least that push's version.
template <class T, slowmo::SharedModelCommunicator C>
void shared_model(C& comm, int rounds = 12) {
  using Other = std::conditional_t<std::is_same_v<T, float>, double, float>;
  const int m = comm.size(), r = comm.rank();
  constexpr std::size_t n = 7;
  auto has = [](const std::string& e, const std::string& what) { return e.find(what) != std::string::npos; };
  auto x0 = [](std::size_t i) { return T(double(i) - 3.0); };
  auto delta = [](int q, int k, std::size_t i) { return T(double(100 * (q + 1) + k) * double(i % 3 + 1)); };
  std::vector<T> x(n), d(n), longer(n + 1);
  std::vector<Other> other(n);
  auto initial = [&](std::size_t size) {
    std::vector<T> v(size);
    for (std::size_t i = 0; i < size; ++i) v[i] = x0(i);
    return v;
  };
  const std::string me = slowmo::detail::concat(" ", r);

  // Before host_model: usage errors on the worker that made them.
  std::string e = error_of<slowmo::usage_error>([&] { comm.pull(std::span<T>(x)); });
  expect(has(e, "before host_model") && has(e, me), "worker ", r, ": pull before host_model gave '", e, "'");
  e = error_of<slowmo::usage_error>([&] { comm.push(std::span<const T>(d)); });
  expect(has(e, "before host_model") && has(e, me), "worker ", r, ": push before host_model gave '", e, "'");

  // A first model, pulled and pushed once by everyone; then the second replaces it.
  comm.host_model(std::make_unique<SumServer<T>>(std::vector<T>(n, T(1000))));
  comm.pull(std::span<T>(x));
  comm.push(std::span<const T>(x));
  constexpr std::int64_t v0 = 5;
  comm.host_model(std::make_unique<SumServer<T>>(initial(n), v0));

  // Misuse after host_model: on the worker that made it, the model unchanged.
  e = error_of<slowmo::usage_error>([&] { comm.push(std::span<const T>(d)); });
  expect(has(e, "first pull") && has(e, me), "worker ", r, ": push before the first pull gave '", e, "'");
  e = error_of<slowmo::comm_error>([&] { comm.pull(std::span<T>(longer)); });
  expect(has(e, slowmo::detail::concat(n + 1)) && has(e, slowmo::detail::concat(n)) && has(e, me), "worker ", r,
         ": a pull of ", n + 1, " values gave '", e, "'");
  e = error_of<slowmo::comm_error>([&] { comm.pull(std::span<Other>(other)); });
  expect(has(e, "float") && has(e, "double") && has(e, me), "worker ", r, ": a pull of the other type gave '", e,
         "'");
  const slowmo::Pulled first = comm.pull(std::span<T>(x));
  expect(first.version == v0, "worker ", r, ": the first pull read version ", first.version, ", not ", v0);
  for (std::size_t i = 0; i < n; ++i)
    expect(x[i] == x0(i), "worker ", r, ": the first pull read ", x[i], " at index ", i, ", not ", x0(i));
  comm.barrier();  // nobody pushes before everyone has read the initial model
  expect(comm.departed().empty(), "worker ", r, ": departed() lists ", comm.departed().size(),
         " workers while every worker is in the run");
  e = error_of<slowmo::comm_error>([&] { comm.push(std::span<const T>(longer)); });
  expect(has(e, slowmo::detail::concat(n + 1)) && has(e, me), "worker ", r, ": a push of ", n + 1, " values gave '",
         e, "'");
  e = error_of<slowmo::comm_error>([&] { comm.push(std::span<const Other>(other)); });
  expect(has(e, "float") && has(e, "double") && has(e, me), "worker ", r, ": a push of the other type gave '", e,
         "'");

  // The rounds, recording what every pull and push returned.
  struct PushRecord {
    std::int64_t version, staleness, pulled;  // pulled: the version of the worker's last pull
  };
  struct PullRecord {
    std::int64_t version;
    T x0;
  };
  std::vector<PushRecord> pushes;
  std::vector<PullRecord> pulls{{first.version, x[0]}};
  std::int64_t last_pull = first.version, last_push = 0;
  for (int k = 0; k < rounds; ++k) {
    if (k % 4 != 3) {
      const slowmo::Pulled p = comm.pull(std::span<T>(x));
      expect(p.version >= last_push && p.version >= last_pull, "worker ", r, ": round ", k, ": pulled version ",
             p.version, " after its own push produced ", last_push, " and its last pull read ", last_pull);
      last_pull = p.version;
      pulls.push_back({p.version, x[0]});
    }
    wait_seconds(comm, 1e-4 * double((r + k) % 3));
    for (std::size_t i = 0; i < n; ++i) d[i] = delta(r, k, i);
    const slowmo::Pushed q = comm.push(std::span<const T>(d));
    expect(q.version > last_push && q.version > last_pull && q.staleness >= 0, "worker ", r, ": round ", k,
           ": push produced version ", q.version, " with staleness ", q.staleness, " after version ", last_push,
           " and a pull of ", last_pull);
    last_push = q.version;
    pushes.push_back({q.version, q.staleness, last_pull});
  }
  comm.barrier();  // every push has been applied: each returned after it was

  const std::int64_t total = std::int64_t(m) * rounds;
  const slowmo::Pulled end = comm.pull(std::span<T>(x));
  expect(end.version == v0 + total, "worker ", r, ": after every push the version is ", end.version, ", not ",
         v0 + total);
  for (std::size_t i = 0; i < n; ++i) {
    double sum = double(x0(i));
    for (int q = 0; q < m; ++q)
      for (int k = 0; k < rounds; ++k) sum += double(delta(q, k, i));
    expect(double(x[i]) == sum, "worker ", r, ": the final model at index ", i, " is ", x[i], ", not x0 + every push = ",
           sum);
  }
  // Who produced each version, and the first value of its push, gathered from everyone.
  std::vector<double> owner(std::size_t(total), 0.0), count(std::size_t(total), 0.0), step(std::size_t(total), 0.0);
  for (std::size_t j = 0; j < pushes.size(); ++j) {
    const auto v = std::size_t(pushes[j].version - 1 - v0);
    expect(pushes[j].version > v0 && pushes[j].version <= v0 + total, "worker ", r, ": push version ",
           pushes[j].version, " out of [", v0 + 1, ", ", v0 + total, "]");
    owner[v] += r + 1;
    count[v] += 1;
    step[v] += double(delta(r, int(j), 0));
  }
  comm.all_reduce(std::span<double>(owner), slowmo::ReduceOp::sum);
  comm.all_reduce(std::span<double>(count), slowmo::ReduceOp::sum);
  comm.all_reduce(std::span<double>(step), slowmo::ReduceOp::sum);
  for (std::size_t v = 0; v < count.size(); ++v)
    expect(count[v] == 1, "worker ", r, ": version ", std::int64_t(v) + 1 + v0, " was produced by ", count[v],
           " pushes, not 1");
  for (const PushRecord& p : pushes) {
    std::int64_t others = 0;  // versions produced by other workers between its last pull and itself
    for (std::int64_t v = p.pulled + 1; v < p.version; ++v) others += owner[std::size_t(v - 1 - v0)] != r + 1;
    expect(p.staleness == others, "worker ", r, ": the push of version ", p.version, " after a pull of ", p.pulled,
           " has staleness ", p.staleness, ", but other workers produced ", others, " versions in between");
  }
  for (const PullRecord& p : pulls) {
    double expected = double(x0(0));
    for (std::int64_t v = v0 + 1; v <= p.version; ++v) expected += step[std::size_t(v - 1 - v0)];
    expect(double(p.x0) == expected, "worker ", r, ": a pull of version ", p.version, " read ", p.x0,
           " at index 0, not x0 + the pushes up to it = ", expected);
  }
}

/// The fixed SPMD program for cross-backend comparisons: local steps of gradient descent
/// on a worker-specific quadratic, an average every 5 steps, a gossip exchange every 7,
/// a broadcast from a rotating root every 50. Returns the final parameters.
template <slowmo::Communicator C>
std::vector<double> spmd_program(C& comm, int steps = 300, std::size_t d = 257) {
  const int m = comm.size(), r = comm.rank();
  std::vector<double> x(d), in(d);
  for (std::size_t i = 0; i < d; ++i) x[i] = std::sin(double(i + 1) * (r + 1));
  for (int t = 1; t <= steps; ++t) {
    for (std::size_t i = 0; i < d; ++i) {
      const double c = std::cos(double(i) + r), a = 0.5 + 0.1 * ((i + std::size_t(r)) % 4);
      x[i] -= 0.1 * a * (x[i] - c);
    }
    if (t % 5 == 0) comm.all_reduce(std::span<double>(x), slowmo::ReduceOp::mean);
    if (t % 7 == 0 && m > 1) {
      comm.exchange(std::span<const double>(x), 1.0, (r + 1) % m, std::span<double>(in), (r + m - 1) % m);
      for (std::size_t i = 0; i < d; ++i) x[i] = 0.5 * (x[i] + in[i]);
    }
    if (t % 50 == 0) comm.broadcast(std::span<double>(x), (t / 50) % m);
  }
  return x;
}

}  // namespace conformance
