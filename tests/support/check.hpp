// Comparison helpers for trajectories computed in T against long double references.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include <slowmo/core/vector.hpp>

namespace check {

/// max_i |a_i - b_i| / max(1, |b_i|)
template <class T, class R>
double max_rel_error(const slowmo::Vector<T>& a, const std::vector<R>& b) {
  double worst = 0;
  for (Eigen::Index i = 0; i < a.size(); ++i) {
    const double bi = static_cast<double>(b[static_cast<size_t>(i)]);
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - bi) / std::max(1.0, std::abs(bi)));
  }
  return worst;
}

/// Error allowed after `steps` steps of a well-conditioned update computed in T: each step
/// adds a few roundings of relative size eps(T) to every coordinate, and on these
/// contracting trajectories they accumulate at most linearly. 8 roundings a step is a
/// generous bound on the operation count of one update (Adam's is the largest, about 8).
template <class T>
double trajectory_tolerance(int steps) {
  return 8.0 * (steps + 1) * static_cast<double>(std::numeric_limits<T>::epsilon());
}

}  // namespace check
