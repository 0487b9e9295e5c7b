// slowmo/problems/detail/stream.hpp — sequential draws from one counter-based stream
// (slowmo/problems/random.hpp), for the samplers whose number of draws is not known in
// advance (rejection sampling) and for shuffles; and Gamma variates on top of them.
//
// Nothing here uses the std distributions, whose algorithms are implementation-defined: the
// same seed gives the same split and the same dataset with every standard library.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>
#include <span>
#include <utility>

#include "slowmo/problems/random.hpp"

namespace slowmo::problems::detail {

/// Draws number 0, 1, 2, ... of the stream `key`: uniform01(key, n) for n = 0, 1, ...
class Stream {
 public:
  explicit Stream(std::uint64_t key) : key_(key) {}

  /// Uniform in (0, 1).
  double uniform() { return uniform01(key_, n_++); }

  /// Standard normal (Box-Muller on the next two uniforms).
  double normal() {
    const double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

  /// Uniform integer in [0, n), n >= 1. (u * n can round up to n when u is within 2^-53 of 1:
  /// hence the clamp.)
  std::uint64_t below(std::uint64_t n) {
    const auto k = static_cast<std::uint64_t>(uniform() * static_cast<double>(n));
    return k < n ? k : n - 1;
  }

 private:
  std::uint64_t key_;
  std::uint64_t n_ = 0;
};

/// Fisher-Yates: every order equally likely (up to the 53 bits of each uniform).
template <class T>
void shuffle(std::span<T> v, Stream& s) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[std::size_t(s.below(i))]);
}

/// The logarithm of a Gamma(shape, 1) variate, shape > 0. Marsaglia and Tsang (2000), "A
/// simple method for generating gamma variables", for shape >= 1; for shape < 1 their
/// boost, Gamma(shape) = Gamma(shape + 1) * U^(1 / shape), taken in logarithms because
/// U^(1 / shape) underflows to 0 for small shapes (shape = 1e-3: U^1000), which would make
/// a Dirichlet draw 0 / 0.
inline double log_gamma_variate(double shape, Stream& s) {
  if (shape < 1) {
    const double boosted = log_gamma_variate(shape + 1, s);
    return boosted + std::log(s.uniform()) / shape;
  }
  const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    const double x = s.normal();
    double v = 1 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    const double u = s.uniform(), x2 = x * x;
    if (u < 1 - 0.0331 * x2 * x2 || std::log(u) < 0.5 * x2 + d * (1 - v + std::log(v)))
      return std::log(d) + std::log(v);
  }
}

}  // namespace slowmo::problems::detail
