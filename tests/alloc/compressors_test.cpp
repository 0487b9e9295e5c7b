// No heap allocation per reduce once a policy has seen a vector of its size, for every
// compressor, proven by counting every call into the C allocator (as tests/alloc does).
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <slowmo/compress.hpp>
#include <slowmo/slowmo.hpp>
#include <span>

#include "alloc/counting_malloc.hpp"

using alloc::allocations;

namespace {

/// On 3 simulated workers: 2 reductions make the state and the scratch, then worker 0 counts
/// the allocations of all workers over 10 more, between barriers.
template <class Make>
long allocations_in_steady_state(Make make, Eigen::Index n = 4096) {
  long counted = -1;
  slowmo::sim::run({.workers = 3}, [&](slowmo::sim::Comm& c) {
    auto policy = make();
    using T = typename decltype(policy)::scalar_type;
    slowmo::Vector<T> v(n);
    auto fill = [&](int t) {
      for (Eigen::Index i = 0; i < n; ++i) v[i] = T(std::sin(0.37 * double(i + 1) * (c.rank() + 1) + t));
    };
    for (int t = 0; t < 2; ++t) {
      fill(t);
      policy.reduce(std::span<T>(v.data(), std::size_t(n)), c, {.round = t});
    }
    c.barrier();
    const long before = allocations.load();
    c.barrier();
    for (int t = 2; t < 12; ++t) {
      fill(t);
      policy.reduce(std::span<T>(v.data(), std::size_t(n)), c, {.round = t});
    }
    c.barrier();
    if (c.rank() == 0) counted = allocations.load() - before;
  });
  return counted;
}

}  // namespace

TEST_CASE_TEMPLATE("Compressed<C>::reduce allocates nothing after the first on a given size", T, float, double) {
  namespace cz = slowmo::compress;
  CHECK(allocations_in_steady_state([] { return cz::compressed(cz::TopK<T>({.fraction = 0.01})); }) == 0);
  CHECK(allocations_in_steady_state([] { return cz::compressed(cz::TopK<T>({.fraction = 0.3})); }) == 0);
  CHECK(allocations_in_steady_state([] { return cz::sparseloco_reduce<T>({.chunk = 1024, .k = 16}); }) == 0);
  CHECK(allocations_in_steady_state([] { return cz::compressed(cz::RandomK<T>({.fraction = 0.05})); }) == 0);
  CHECK(allocations_in_steady_state([] { return cz::compressed(cz::SignScale<T>()); }) == 0);
  CHECK(allocations_in_steady_state([] { return cz::compressed(cz::Qsgd<T>({.bucket = 512})); }) == 0);
  CHECK(allocations_in_steady_state([] { return cz::compressed(cz::LowPrecision<T>()); }) == 0);
  CHECK(allocations_in_steady_state([] { return cz::compressed(cz::PowerSgd<T>({.rank = 4})); }) == 0);
  CHECK(allocations_in_steady_state([] { return cz::compressed(cz::TopK<T>({.k = 5}), {.error_feedback = false}); }) ==
        0);
}
