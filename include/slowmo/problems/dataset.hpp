// slowmo/problems/dataset.hpp — a labelled classification dataset held in memory: one column of
// features per sample (so a minibatch is a set of contiguous columns), one label per sample.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <stdexcept>

#include "slowmo/core/error.hpp"

namespace slowmo::problems {

/// A dataset file or directory is missing, unreadable or malformed. The message names the
/// path, what is wrong (expected against found) and, where it helps, what to do.
class data_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Dataset {
  Eigen::MatrixXf X;              ///< features x samples: column j is sample j
  std::vector<std::int32_t> y;    ///< y[j] in [0, classes) is sample j's label
  int classes = 0;
  std::string name;               ///< where it came from, for messages ("fashion-mnist train", ...)

  Eigen::Index size() const { return X.cols(); }
  Eigen::Index features() const { return X.rows(); }

  /// The samples listed in `rows`, in that order (repeats allowed).
  Dataset subset(std::span<const Eigen::Index> rows, std::string subset_name = {}) const {
    Dataset s{.X = Eigen::MatrixXf(X.rows(), Eigen::Index(rows.size())),
              .y = std::vector<std::int32_t>(rows.size()),
              .classes = classes,
              .name = subset_name.empty() ? name + " (subset)" : std::move(subset_name)};
    for (std::size_t k = 0; k < rows.size(); ++k) {
      if (rows[k] < 0 || rows[k] >= size())
        throw slowmo::size_mismatch(slowmo::detail::concat("slowmo::problems::Dataset::subset: row ", rows[k],
                                                           " is out of range [0, ", size(), ") of ", name));
      s.X.col(Eigen::Index(k)) = X.col(rows[k]);
      s.y[k] = y[std::size_t(rows[k])];
    }
    return s;
  }

  /// Throws unless the labels are as many as the samples and all in [0, classes).
  void validate() const {
    if (classes < 1)
      throw slowmo::size_mismatch(slowmo::detail::concat("slowmo::problems::Dataset ", name, ": classes = ", classes,
                                                         " (must be >= 1)"));
    if (Eigen::Index(y.size()) != X.cols())
      throw slowmo::size_mismatch(slowmo::detail::concat("slowmo::problems::Dataset ", name, ": ", X.cols(),
                                                         " samples but ", y.size(), " labels"));
    for (std::size_t j = 0; j < y.size(); ++j)
      if (y[j] < 0 || y[j] >= classes)
        throw slowmo::size_mismatch(slowmo::detail::concat("slowmo::problems::Dataset ", name, ": label ", y[j],
                                                           " of sample ", j, " is out of range [0, ", classes,
                                                           ")"));
  }
};

}  // namespace slowmo::problems
