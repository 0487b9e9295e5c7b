// No heap allocation per reduce once a policy has seen a vector of its size, for every
// compressor, proven by counting every call into the C allocator (as tests/alloc does).
#include <doctest/doctest.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <slowmo/compress.hpp>
#include <slowmo/slowmo.hpp>
#include <span>

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace {
std::atomic<long> allocations{0};
void count() { allocations.fetch_add(1, std::memory_order_relaxed); }
}  // namespace

extern "C" {
void* malloc(std::size_t n) {
  count();
  return __libc_malloc(n);
}
void* calloc(std::size_t k, std::size_t n) {
  count();
  return __libc_calloc(k, n);
}
void* realloc(void* p, std::size_t n) {
  count();
  return __libc_realloc(p, n);
}
void* memalign(std::size_t a, std::size_t n) {
  count();
  return __libc_memalign(a, n);
}
void* aligned_alloc(std::size_t a, std::size_t n) {
  count();
  return __libc_memalign(a, n);
}
int posix_memalign(void** out, std::size_t a, std::size_t n) {
  count();
  void* p = __libc_memalign(a, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
void free(void* p) { __libc_free(p); }
}

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
