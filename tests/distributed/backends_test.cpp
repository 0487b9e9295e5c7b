// Every algorithm gives bit-identical results on the simulator and on threads, and the
// synchronous ones leave all workers with the same parameters.
#include <doctest/doctest.h>

#include "support/zoo.hpp"

TEST_CASE_TEMPLATE("every algorithm: simulator == threads, bit for bit", T, float, double) {
  for (int m : {2, 3, 5}) {
    CAPTURE(m);
    using Result = std::map<std::string, std::vector<T>>;
    std::vector<Result> sim(static_cast<std::size_t>(m)), thr(static_cast<std::size_t>(m));
    slowmo::sim::run({.workers = m}, [&](auto& c) { sim[std::size_t(c.rank())] = zoo::run_all<T>(c); });
    slowmo::threads::run({.workers = m}, [&](auto& c) { thr[std::size_t(c.rank())] = zoo::run_all<T>(c); });
    for (int r = 0; r < m; ++r) CHECK(sim[std::size_t(r)] == thr[std::size_t(r)]);
    // Algorithms that end on an exact average (48 is a multiple of every period used)
    // leave every worker with the same parameters.
    for (const char* name : {"local_sgd", "post_local_sgd", "ar_sgd", "ar_adam", "slowmo", "slowmo_average", "bmuf",
                             "bmuf_nbm", "diloco", "slowmo_local_sgd", "slowmo_lookahead_adam", "slowmo_sgp"}) {
      CAPTURE(name);
      for (int r = 1; r < m; ++r) CHECK(sim[std::size_t(r)].at(name) == sim[0].at(name));
    }
    // and every algorithm made progress from the start (no NaN, moved)
    for (const auto& [name, x] : sim[0]) {
      CAPTURE(name);
      for (T v : x) CHECK(std::isfinite(double(v)));
    }
  }
}
