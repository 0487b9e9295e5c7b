// The allocation counter of the alloc tests: counting_malloc.cpp interposes malloc and its
// friends (Eigen allocates with malloc, operator new ends in malloc too) and forwards to
// glibc's implementations; a test program links it and reads the count.
#pragma once

#include <atomic>

namespace alloc {
/// Calls into the C allocator so far, by every thread.
extern std::atomic<long> allocations;
}  // namespace alloc
