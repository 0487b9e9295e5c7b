// Comparison helpers for trajectories computed in T against long double references.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include <slowmo/core/vector.hpp>

#include "support/reference.hpp"

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

/// Runs `opt` (in T) and `reference` (a scalar long-double loop of support/reference.hpp) side by
/// side for `steps` steps on ref::gradient from ref::initial_point, and checks the final points
/// agree within trajectory_tolerance. n = 37 is not a multiple of any SIMD width: both the
/// vector body and the scalar tail run.
template <class T, class Opt, class Ref>
void against_reference(Opt opt, Ref reference, int n = 37, int steps = 40) {
  std::vector<ref::R> xr = ref::initial_point(n);
  slowmo::Vector<T> x(n);
  for (int i = 0; i < n; ++i) x[i] = T(xr[i]);
  for (int t = 0; t < steps; ++t) {
    std::vector<ref::R> gr(n);
    slowmo::Vector<T> g(n);
    for (int i = 0; i < n; ++i) {
      g[i] = T(ref::gradient(i, t, static_cast<ref::R>(x[i])));
      gr[i] = ref::gradient(i, t, xr[i]);
    }
    opt.step(x, g);
    reference.step(xr, gr);
  }
  CHECK(max_rel_error(x, xr) <= trajectory_tolerance<T>(steps));
}

}  // namespace check
