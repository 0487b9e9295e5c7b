// slowmo/problems/random.hpp — counter-based random numbers for the toy problems.
//
// A problem's noise is a pure function of (seed, worker, step, index): results do not
// depend on the order in which workers or threads draw, so a run is reproducible on every
// backend and a stochastic gradient can be recomputed exactly (e.g. by a test).
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>

namespace slowmo::problems {

/// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
constexpr std::uint64_t mix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// A key for one stream of numbers: (seed, worker, step).
constexpr std::uint64_t stream_key(std::uint64_t seed, std::uint64_t worker, std::uint64_t step) {
  return mix64(mix64(mix64(seed) ^ worker) ^ step);
}

/// Uniform in (0, 1), from the 53 high bits of a hash of (key, index).
inline double uniform01(std::uint64_t key, std::uint64_t index) {
  const std::uint64_t h = mix64(key ^ mix64(index));
  return (static_cast<double>(h >> 11) + 0.5) * 0x1.0p-53;
}

/// Standard normal number `index` of stream `key` (Box-Muller on two uniforms).
inline double normal(std::uint64_t key, std::uint64_t index) {
  const double u1 = uniform01(key, 2 * index), u2 = uniform01(key, 2 * index + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

}  // namespace slowmo::problems
