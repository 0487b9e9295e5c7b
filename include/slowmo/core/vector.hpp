// slowmo/core/vector.hpp — the vector types every optimizer accepts.
//
// Parameters and gradients are contiguous dense column vectors. Taking them as
// Eigen::Ref lets one signature accept a VectorX, a Map over user memory, another Ref,
// or a contiguous segment of a larger vector, without copies.
#pragma once

#include <Eigen/Core>
#include <concepts>
#include <cstdint>
#include <string_view>

#include "slowmo/core/error.hpp"

namespace slowmo {

/// Owning dense column vector of scalar T.
template <class T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// Mutable view of any contiguous dense vector of T (VectorX, Map, Ref, segment).
template <class T>
using VectorRef = Eigen::Ref<Vector<T>>;

/// Read-only view of any contiguous dense vector of T.
template <class T>
using ConstVectorRef = Eigen::Ref<const Vector<T>>;

/// The floating-point types the library is instantiated for.
template <class T>
concept Real = std::same_as<T, float> || std::same_as<T, double>;

namespace detail {

/// Checks that a step's parameter and gradient agree, and that they match the size of
/// the optimizer's state once it exists (`state_size` < 0 means "no state yet").
inline void check_step_sizes(std::string_view owner, Eigen::Index params, Eigen::Index grads,
                             Eigen::Index state_size = -1) {
  if (params == 0)
    throw size_mismatch(concat("slowmo::", owner,
                               "::step: the parameter vector is empty; pass at least one "
                               "parameter"));
  if (grads != params)
    throw size_mismatch(concat("slowmo::", owner, "::step: gradient size ", grads,
                               " does not match parameter size ", params));
  if (state_size >= 0 && state_size != params)
    throw size_mismatch(concat("slowmo::", owner, "::step: parameter size ", params,
                               " differs from the size ", state_size,
                               " this optimizer's state was created with; use one optimizer per "
                               "parameter vector"));
}

}  // namespace detail
}  // namespace slowmo
