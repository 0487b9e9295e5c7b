// slowmo/core/config.hpp — version and portability macros shared by every layer.
#pragma once

#define SLOWMO_VERSION_MAJOR 0
#define SLOWMO_VERSION_MINOR 1
#define SLOWMO_VERSION_PATCH 0

// Marks the per-element update rules so that the same definition is compiled for the
// CPU loop and for CUDA kernels (one source of truth for the math).
#if defined(__CUDACC__) || defined(__HIPCC__)
#define SLOWMO_HOST_DEVICE __host__ __device__
#else
#define SLOWMO_HOST_DEVICE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SLOWMO_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define SLOWMO_ALWAYS_INLINE inline
#endif
