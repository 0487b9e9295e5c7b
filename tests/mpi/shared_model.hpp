// The shared global model on MPI (slowmo::mpi::Comm as a SharedModelCommunicator), under
// mpiexec: a sum server (x += d) whose final model must be the initial one plus every push
// exactly (small integers, exact in float and double); versions unique and consecutive over
// all ranks; the staleness identities; every pull's parameters equal to the initial model plus
// exactly the pushes of lower version; errors on the rank that made them, with the model as it
// was; departures and a clean stop of the server thread. Every check hosts its model on a
// fresh Comm over the same ranks and departs it at the end.
#pragma once

#include <slowmo/mpi.hpp>
#include <slowmo/slowmo.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "comm/conformance.hpp"

namespace mpi_model {

using conformance::error_of;
using conformance::expect;

using conformance::SumServer;  // x += d, refusing a push whose d[0] is -1000

template <class T>
T initial(std::size_t i) {
  return T(i);
}
template <class T>
std::vector<T> initial_model(std::size_t n) {
  std::vector<T> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = initial<T>(i);
  return x;
}
/// Rank r's j-th push, at index i: a small integer, exact in float and double.
template <class T>
T pushed_value(int r, int j, std::size_t i) {
  return T(100 * (r + 1) + 10 * j + int(i % 3));
}

inline bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// Runs body(c) on a fresh Comm over comm's ranks with a SumServer<T> of n values hosted, and
/// departs at the end (on the way out of a failure too, so that rank 0's server stops).
template <class T, class F>
void with_model(slowmo::mpi::Comm& comm, std::size_t n, F&& body) {
  slowmo::mpi::Comm c(comm.native());
  c.host_model(std::make_unique<SumServer<T>>(initial_model<T>(n)));
  try {
    body(c);
  } catch (...) {
    c.depart();
    throw;
  }
  c.depart();
}

/// Every rank pulls and pushes `rounds(r)` times (a second push after every odd round's
/// pull), sleeping `pause(r, j)` seconds between, while the others do the same: the server
/// serves them in arrival order. Checks every number against what the others did.
template <class T>
void traffic(slowmo::mpi::Comm& comm, int (*rounds)(int), double (*pause)(int, int)) {
  constexpr std::size_t n = 7;
  with_model<T>(comm, n, [&](slowmo::mpi::Comm& c) {
    const int m = c.size(), r = c.rank();
    // A wrong value is noted, not thrown, so that every rank still makes every collective
    // below; the first one is thrown at the end.
    std::string failed;
    auto expect = [&failed](bool ok, const auto&... parts) {
      if (!ok && failed.empty()) failed = slowmo::detail::concat(parts...);
    };
    expect(c.departed().empty(), "rank ", r, ": departed() before anyone left: ", c.departed().size(), " ranks");
    struct Pull {
      std::int64_t version;
      std::vector<T> x;
    };
    std::vector<Pull> pulls;
    std::vector<double> mine;  // per push: (version, rank, j), for everyone
    std::vector<T> x(n), d(n);
    std::int64_t last_pull = -1, own = 0;
    int j = 0;
    for (int round = 0; round < rounds(r); ++round) {
      const std::uint64_t received = c.bytes_received();
      const slowmo::Pulled p = c.pull(std::span<T>(x));
      expect(c.bytes_received() - received == n * sizeof(T), "rank ", r, ": a pull received ",
             c.bytes_received() - received, " bytes");
      expect(p.version >= last_pull, "rank ", r, ": pulled version ", p.version, " after ", last_pull);
      last_pull = p.version, own = 0;
      pulls.push_back({p.version, x});
      for (int k = 0; k < (round % 2 == 1 ? 2 : 1); ++k, ++j) {
        std::this_thread::sleep_for(std::chrono::duration<double>(pause(r, round)));
        for (std::size_t i = 0; i < n; ++i) d[i] = pushed_value<T>(r, j, i);
        const std::uint64_t sent = c.bytes_sent(), messages = c.messages_sent();
        const slowmo::Pushed q = c.push(std::span<const T>(d));
        expect(c.bytes_sent() - sent == n * sizeof(T) && c.messages_sent() - messages == 1, "rank ", r,
               ": a push sent ", c.bytes_sent() - sent, " bytes in ", c.messages_sent() - messages, " messages");
        // Between this rank's last pull and this push the server applied version - 1 -
        // last_pull updates, own of them this rank's.
        expect(q.version >= last_pull + own + 1, "rank ", r, ": push version ", q.version, " after pulling ",
               last_pull, " and pushing ", own, " since");
        expect(q.staleness == q.version - 1 - last_pull - own, "rank ", r, ": push version ", q.version,
               " staleness ", q.staleness, " after pulling version ", last_pull, " and pushing ", own, " since");
        mine.insert(mine.end(), {double(q.version), double(r), double(j), double(q.staleness), double(last_pull)});
        ++own;
      }
    }
    // Everyone's pushes, in one all_gather_v on the user's communicator beside the model's.
    std::vector<std::size_t> counts(static_cast<std::size_t>(m));
    int total = 0;
    for (int q = 0; q < m; ++q)
      for (int round = 0; round < rounds(q); ++round) total += round % 2 == 1 ? 2 : 1;
    std::vector<double> all(5 * std::size_t(total));
    c.all_gather_v(std::span<const double>(mine), std::span<double>(all), std::span(counts));
    // by_version[v - 1] = (rank, j) of the push that produced version v: each exactly once.
    std::vector<std::pair<int, int>> by_version(std::size_t(total), {-1, -1});
    for (std::size_t k = 0; k < all.size(); k += 5) {
      const auto v = std::int64_t(all[k]);
      expect(v >= 1 && v <= total, "rank ", r, ": a push produced version ", v, " of ", total);
      if (v < 1 || v > total) continue;
      expect(by_version[std::size_t(v - 1)].first == -1, "rank ", r, ": version ", v, " produced twice");
      by_version[std::size_t(v - 1)] = {int(all[k + 1]), int(all[k + 2])};
    }
    // Staleness = the pushes by others with a version between the pusher's last pull and its push.
    for (std::size_t k = 0; k < all.size(); k += 5) {
      const auto v = std::int64_t(all[k]), pulled = std::int64_t(all[k + 4]), staleness = std::int64_t(all[k + 3]);
      const int q = int(all[k + 1]);
      std::int64_t others = 0;
      for (std::int64_t u = std::max<std::int64_t>(pulled + 1, 1); u < std::min<std::int64_t>(v, total + 1); ++u)
        others += by_version[std::size_t(u - 1)].first != q;
      expect(staleness == others, "rank ", r, ": rank ", q, "'s push of version ", v, " has staleness ", staleness,
             ", but ", others, " pushes by others came after its pull of version ", pulled);
    }
    // Every pull read the initial model plus exactly the pushes of version <= its own.
    auto model_at = [&](std::int64_t version) {
      std::vector<T> y = initial_model<T>(n);
      for (std::int64_t u = 1; u <= std::min<std::int64_t>(version, total); ++u)
        for (std::size_t i = 0; i < n; ++i)
          y[i] += pushed_value<T>(by_version[std::size_t(u - 1)].first, by_version[std::size_t(u - 1)].second, i);
      return y;
    };
    for (const Pull& p : pulls)
      expect(p.x == model_at(p.version), "rank ", r, ": the pull of version ", p.version,
             " is not the initial model plus the pushes up to it");
    c.barrier();  // everyone has pushed: the final model holds every push
    const slowmo::Pulled last = c.pull(std::span<T>(x));
    expect(last.version == total, "rank ", r, ": final version ", last.version, ", not ", total);
    expect(x == model_at(total), "rank ", r, ": the final model is not the initial one plus every push");
    c.barrier();
    conformance::expect(failed.empty(), failed);
  });
}

inline int twelve(int) { return 12; }
inline int r_plus_one(int r) { return r + 1; }
inline double no_pause(int, int) { return 0; }
/// Rank r waits 0.2 ms, 1 ms or 3 ms between pushes, in a rank-dependent pattern.
inline double uneven_pause(int r, int round) {
  const double steps[] = {2e-4, 1e-3, 3e-3};
  return steps[(r * 7 + round) % 3];
}

/// Misuse throws on the rank that made it, naming it, and leaves the model as it was.
inline void errors(slowmo::mpi::Comm& comm) {
  constexpr std::size_t n = 7;
  const int m = comm.size(), r = comm.rank();
  const std::string me = slowmo::detail::concat("rank ", r, ":");
  std::vector<double> x(n, 42.0), d(n, 1.0);
  {  // before host_model
    slowmo::mpi::Comm c(comm.native());
    std::string e = error_of<slowmo::usage_error>([&] { c.pull(std::span<double>(x)); });
    expect(has(e, me) && has(e, "pull before host_model"), "rank ", r, ": pull before host_model gave '", e, "'");
    e = error_of<slowmo::usage_error>([&] { c.push(std::span<const double>(d)); });
    expect(has(e, me) && has(e, "push before host_model"), "rank ", r, ": push before host_model gave '", e, "'");
    expect(c.departed().empty(), "rank ", r, ": departed() before host_model is not empty");
    c.depart();  // nothing to leave: no-op
    // Servers that differ, and a null one: every rank throws, naming the culprits; nothing is
    // hosted (conformance::host_model_errors checks the same, named as on every backend).
    e = error_of<slowmo::comm_error>([&] {
      c.host_model(std::make_unique<SumServer<double>>(initial_model<double>(r == m - 1 ? n + 1 : n)));
    });
    expect(has(e, me) && has(e, slowmo::detail::concat("servers differ (rank 0: ", n, " double")) &&
               has(e, slowmo::detail::concat("rank ", m - 1, ": ", n + 1, " double")),
           "rank ", r, ": host_model with different sizes gave '", e, "'");
    e = error_of<slowmo::comm_error>([&] {
      if (r == m - 1) c.host_model(std::make_unique<SumServer<float>>(initial_model<float>(n)));
      else c.host_model(std::make_unique<SumServer<double>>(initial_model<double>(n)));
    });
    expect(has(e, me) && has(e, slowmo::detail::concat("rank ", m - 1, ": ", n, " float")), "rank ", r,
           ": host_model with float and double gave '", e, "'");
    e = error_of<slowmo::comm_error>([&] {
      c.host_model(r == 0 ? std::unique_ptr<slowmo::ModelServer<double>>()
                          : std::make_unique<SumServer<double>>(initial_model<double>(n)));
    });
    expect(has(e, me) && has(e, "rank 0 passed no server"), "rank ", r, ": host_model with a null server gave '", e,
           "'");
    e = error_of<slowmo::usage_error>([&] { c.pull(std::span<double>(x)); });
    expect(has(e, "before host_model"), "rank ", r, ": a failed host_model hosted something: '", e, "'");
  }
  with_model<double>(comm, n, [&](slowmo::mpi::Comm& c) {
    // Hosting again replaces the model (every rank leaves the first, whose server stops): the
    // new one starts at its own version, v0, and must be pulled before a push.
    c.pull(std::span<double>(x));
    c.push(std::span<const double>(x));
    constexpr std::int64_t v0 = 3;
    c.host_model(std::make_unique<SumServer<double>>(initial_model<double>(n), v0));
    // A push before this rank's first pull.
    std::string e = error_of<slowmo::usage_error>([&] { c.push(std::span<const double>(d)); });
    expect(has(e, me) && has(e, "push before this rank's first pull"), "rank ", r,
           ": push before the first pull gave '", e, "'");
    // Wrong sizes and types: the server answers no, this rank throws, x is untouched.
    std::vector<double> short_x(n - 1, 42.0);
    std::vector<float> fx(n, 42.0f);
    e = error_of<slowmo::comm_error>([&] { c.pull(std::span<double>(short_x)); });
    expect(has(e, me) && has(e, slowmo::detail::concat("pull of ", n - 1, " double values, but the shared model holds ",
                                                       n, " double values")),
           "rank ", r, ": a short pull gave '", e, "'");
    expect(std::all_of(short_x.begin(), short_x.end(), [](double v) { return v == 42.0; }), "rank ", r,
           ": a refused pull wrote into x");
    e = error_of<slowmo::comm_error>([&] { c.pull(std::span<float>(fx)); });
    expect(has(e, me) && has(e, slowmo::detail::concat("pull of ", n, " float values, but the shared model holds ", n,
                                                       " double values")),
           "rank ", r, ": a float pull gave '", e, "'");
    expect(std::all_of(fx.begin(), fx.end(), [](float v) { return v == 42.0f; }), "rank ", r,
           ": a refused pull wrote into x");
    const slowmo::Pulled p = c.pull(std::span<double>(x));
    expect(p.version == v0 && x == initial_model<double>(n), "rank ", r, ": first pull: version ", p.version);
    const std::uint64_t sent = c.bytes_sent(), messages = c.messages_sent();
    std::vector<double> long_d(n + 1, 1.0);
    std::vector<float> fd(n, 1.0f);
    e = error_of<slowmo::comm_error>([&] { c.push(std::span<const double>(long_d)); });
    expect(has(e, me) && has(e, slowmo::detail::concat("push of ", n + 1, " double values, but the shared model holds ",
                                                       n, " double values")),
           "rank ", r, ": a long push gave '", e, "'");
    e = error_of<slowmo::comm_error>([&] { c.push(std::span<const float>(fd)); });
    expect(has(e, me) && has(e, "push of 7 float values"), "rank ", r, ": a float push gave '", e, "'");
    // The ModelServer refuses (throws): this rank gets its message, no update is counted.
    std::vector<double> refused(n, 1.0);
    refused[0] = -1000;
    e = error_of<slowmo::comm_error>([&] { c.push(std::span<const double>(refused)); });
    expect(has(e, me) && has(e, "the model server (on rank 0) failed: refused: d[0] = -1000"), "rank ", r,
           ": a push the server refuses gave '", e, "'");
    expect(c.bytes_sent() == sent && c.messages_sent() == messages, "rank ", r,
           ": refused pushes counted as traffic");
    c.barrier();  // everyone has made every mistake: the model is as it was
    x.assign(n, 42.0);
    const slowmo::Pulled q = c.pull(std::span<double>(x));
    expect(q.version == v0 && x == initial_model<double>(n), "rank ", r, ": after the refused calls: version ",
           q.version, ", x[0] = ", x[0]);
    c.barrier();  // everyone has seen it so
    // One push each: version m, exactly the sum.
    for (std::size_t i = 0; i < n; ++i) d[i] = pushed_value<double>(r, 0, i);
    c.push(std::span<const double>(d));
    c.barrier();
    const slowmo::Pulled after = c.pull(std::span<double>(x));
    std::vector<double> expected = initial_model<double>(n);
    for (int s = 0; s < m; ++s)
      for (std::size_t i = 0; i < n; ++i) expected[i] += pushed_value<double>(s, 0, i);
    expect(after.version == v0 + m && x == expected, "rank ", r, ": after one push each: version ", after.version);
    c.barrier();
  });
}

/// Ranks 1, 2, ... depart one after the other; everyone sees them go in that order; rank 0's
/// depart() waits for all and stops the server; calls after departing fail on their rank.
inline void departures(slowmo::mpi::Comm& comm) {
  const int m = comm.size(), r = comm.rank();
  slowmo::mpi::Comm c(comm.native());
  c.host_model(std::make_unique<SumServer<float>>(initial_model<float>(3)));
  std::vector<float> x(3);
  c.pull(std::span<float>(x));
  auto first = [](int k) {
    std::vector<int> v;
    for (int q = 1; q <= k; ++q) v.push_back(q);
    return v;
  };
  for (int q = 1; q < m; ++q) {
    comm.barrier();
    if (r == q) {
      c.depart();
      c.depart();  // twice: nothing more happens
    }
    comm.barrier();
    const std::vector<int> gone = c.departed();
    // Those still in ask the server; those gone have the list as it was when they left.
    const std::vector<int> want = first(r >= 1 && r <= q ? r : q);
    expect(gone == want, "rank ", r, ": after rank ", q, " departed, departed() lists ", gone.size(), " ranks");
  }
  if (r != 0) {
    const std::string e = error_of<slowmo::usage_error>([&] { c.pull(std::span<float>(x)); });
    expect(has(e, slowmo::detail::concat("rank ", r, ": pull after this rank departed")), "rank ", r,
           ": pull after departing gave '", e, "'");
  } else {
    const slowmo::Pulled p = c.pull(std::span<float>(x));  // the server still serves the last rank in
    expect(p.version == 0 && x == initial_model<float>(3), "rank 0: pull after the others departed");
    c.depart();  // everyone else has left: the server stops, the thread is joined
    std::vector<int> all = first(m - 1);
    all.push_back(0);
    expect(c.departed() == all, "rank 0: after everyone departed, departed() lists ", c.departed().size(), " ranks");
  }
  comm.barrier();
}

/// AsyncLocalSgd (Delayed Nesterov on the server) on MPI ranks: rank r minimises
/// (r + 1) |x - c|^2 / 2, so every rank's minimiser, and hence the global model's fixed point
/// whatever the order and rates of the pushes, is c. Every rank makes 60 pushes, drains and
/// saves its checkpoint (rank 0's holds the server); a fresh optimizer on the same Comm loads
/// it (hosting the server again, in place of the first) and goes on to 150 pushes. Once all
/// have (a barrier), the global model is near c. Real timing decides the order and the
/// staleness, so the bound is loose: the last pushes, made while the others have stopped, are
/// fresh, and they settle the model.
inline void async_local_sgd(slowmo::mpi::Comm& comm) {
  const int m = comm.size(), r = comm.rank();
  const std::string file = "slowmo_mpi_async_" + std::to_string(::getpid()) + ".ckpt";
  slowmo::mpi::Comm c(comm.native());
  try {
    auto make = [&] {
      return slowmo::AsyncLocalSgd(slowmo::Sgd<double>({.lr = 0.1}), c, {.H = 4},
                                   slowmo::outer::DelayedNesterov<double>({.lr = 0.5, .momentum = 0.9, .N = 2}));
    };
    Eigen::VectorXd x = Eigen::VectorXd::LinSpaced(5, -1, 1), g(5);
    const Eigen::VectorXd target = Eigen::VectorXd::Constant(5, 0.25);
    {
      auto opt = make();
      slowmo::start(opt, x);
      while (opt.pushes() < 60) {
        g = double(r + 1) * (x - target);
        opt.step(x, g);
      }
      opt.drain(x);  // the round just ended: nothing left to push
      expect(opt.last_pull().version == 60 * m, "rank ", r, ": after the drain the version is ",
             opt.last_pull().version, ", not ", 60 * m);
      slowmo::save_checkpoint(opt, file);
    }
    auto opt = make();
    slowmo::load_checkpoint(opt, file);
    std::remove(file.c_str());
    // (the server continues from 60 m; the others may push before this rank's first pull)
    expect(opt.last_pull().version >= 60 * m && opt.pushes() == 60, "rank ", r, ": resumed at version ",
           opt.last_pull().version, " with ", opt.pushes(), " pushes");
    while (opt.pushes() < 150) {
      g = double(r + 1) * (x - target);
      opt.step(x, g);
    }
    c.barrier();
    const slowmo::Pulled end = c.pull(std::span<double>(x.data(), std::size_t(x.size())));
    expect(end.version == 150 * m, "rank ", r, ": after everyone's 150 pushes the version is ", end.version);
    expect((x - target).cwiseAbs().maxCoeff() < 1e-3, "rank ", r, ": AsyncLocalSgd's final global model is ",
           (x - target).cwiseAbs().maxCoeff(), " from the common minimiser");
  } catch (...) {
    c.depart();
    throw;
  }
  c.depart();
}

}  // namespace mpi_model
