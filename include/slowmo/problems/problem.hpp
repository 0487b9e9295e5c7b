// slowmo/problems/problem.hpp — what every problem offers: per-worker losses and gradients
// (exact and stochastic) and the global objective; the convex toy problems also know their
// exact minimiser (a non-convex one, such as problems::Classification of an MLP, has none).
#pragma once

#include <concepts>
#include <cstdint>

#include "slowmo/core/vector.hpp"

namespace slowmo::problems {

/// The global objective is f(x) = (1/m) sum_i f_i(x) over the m workers.
template <class P>
concept Problem = requires(const P& p, int rank, std::int64_t step, const Vector<double>& x, Vector<double>& g) {
  { p.workers() } -> std::convertible_to<int>;
  { p.dim() } -> std::convertible_to<Eigen::Index>;
  { p.loss(rank, x) } -> std::convertible_to<double>;  // f_i(x)
  { p.loss(x) } -> std::convertible_to<double>;        // f(x)
  p.gradient(rank, x, g);                              // grad f_i(x), exact
  p.sample_gradient(rank, step, x, g);                 // a stochastic gradient of f_i at step `step`
};

/// A Problem whose global minimiser is known (the convex toy problems: in closed form or by
/// Newton's method at construction), so that excess losses f(x) - f(x*) can be measured.
template <class P>
concept ConvexProblem = Problem<P> && requires(const P& p) {
  { p.minimizer() } -> std::convertible_to<Vector<double>>;  // argmin f
};

namespace detail {
inline void check_rank(const char* owner, int rank, int workers) {
  if (rank < 0 || rank >= workers)
    throw slowmo::size_mismatch(slowmo::detail::concat("slowmo::problems::", owner, ": worker ", rank,
                                                       " is out of range [0, ", workers, ")"));
}
inline void check_dim(const char* owner, Eigen::Index got, Eigen::Index dim) {
  if (got != dim)
    throw slowmo::size_mismatch(slowmo::detail::concat("slowmo::problems::", owner, ": vector of size ", got,
                                                       " for a problem of dimension ", dim));
}
}  // namespace detail

}  // namespace slowmo::problems
