// slowmo/compress/power_sgd.hpp — PowerSgd: rank-r approximation by one step of warm-started
// power iteration (Vogels, Karimireddy, Jaggi 2019, "PowerSGD: Practical Low-Rank Gradient
// Compression for Distributed Optimization", Algorithms 1 and 2).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include "slowmo/compress/detail/common.hpp"
#include "slowmo/compress/round.hpp"
#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"

namespace slowmo::compress {

/// Options of PowerSgd. The vector of n entries is the rows x cols matrix M stored
/// column-major (Eigen's default): M(i, j) = p[i + j rows].
struct PowerSgdOptions {
  std::int64_t rank = 1;  ///< r, the rank of the approximation (PyTorch's default 1); 1 <= r <= min(rows, cols)
  /// The shape: rows x cols = n. Both 0: near-square (rows the largest divisor of n not above
  /// sqrt(n)); one 0: n divided by the other (which must divide n).
  std::int64_t rows = 0;
  std::int64_t cols = 0;
};

/// One round (the paper's Algorithm 1, with the error feedback of Algorithm 2 through the
/// residual): P = M Q; P = mean_j P_j (all_reduce); P = orthonormal columns of P
/// (Gram-Schmidt, in column order; a zero column stays zero); Q_j = M_j^T P; residual_j =
/// M_j - P Q_j^T; Q = mean_j Q_j (all_reduce); decoded = P Q^T, which by linearity is
/// mean_j P Q_j^T, the mean of the workers' contributions. Q (cols x r) is kept as the warm
/// start of the next round; it starts as seeded standard normals (from Round::seed only: the
/// same on every worker) and starts again so whenever it is all zero (a reset zeroes it).
///
/// Bytes: two all_reduce(mean), of rows r and cols r values: 2 (m-1)/m (rows + cols) r
/// sizeof(T) sent per worker, against 2 (m-1)/m rows cols sizeof(T) for the dense mean.
///
/// compress(p, out) has the single-worker meaning: it is reduce() on one worker (so it
/// advances the warm start Q). State: "Q", an accumulator, stored in a Vector<T> of n entries
/// whose first cols r hold Q column-major and the rest zero, because checkpoints require every
/// state buffer of a nest to have the parameters' size (r <= rows makes it fit).
///
/// The products are written as column operations on Eigen vectors (axpy, dot): with r much
/// smaller than rows they are memory-bound, read M once each, and unlike Eigen's blocked GEMM
/// (whose packing buffers go to the heap beyond 128 KiB) allocate nothing.
template <Real T>
class PowerSgd {
 public:
  using scalar_type = T;
  using options_type = PowerSgdOptions;
  using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

  explicit PowerSgd(slowmo::detail::DefaultOptions = {}) : PowerSgd(PowerSgdOptions{}) {}
  explicit PowerSgd(PowerSgdOptions options) : options_(validated(options)) {}

  const PowerSgdOptions& options() const { return options_; }
  std::int64_t rows() const { return rows_; }  ///< the resolved shape (0 before the first use)
  std::int64_t cols() const { return cols_; }
  /// The warm start Q (cols x r), empty before the first use.
  Eigen::Map<const Matrix> q() const { return {q_.data(), Eigen::Index(cols_), Eigen::Index(options_.rank)}; }

  /// Resolves the shape for n, checks it and the rank, and sizes Q and the scratch.
  void prepare(std::size_t n) {
    if (n == n_ && std::size_t(q_.size()) == n) return;
    if (q_.size() != 0 && std::size_t(q_.size()) != n)
      throw size_mismatch(detail::concat("slowmo::compress::PowerSgd: state 'Q' was made for a vector of ", q_.size(),
                                         " elements; this one has ", n, " (use one compressor per vector)"));
    const auto ni = static_cast<std::int64_t>(n);
    std::int64_t rows = options_.rows, cols = options_.cols;
    if (rows == 0 && cols == 0) {
      rows = static_cast<std::int64_t>(std::sqrt(double(n)));
      while (rows > 1 && (rows * rows > ni || ni % rows != 0)) --rows;
      rows = std::max<std::int64_t>(rows, 1);
      cols = ni / rows;
    } else if (rows == 0) {
      detail::require_option(ni % cols == 0, "PowerSgd", "cols", cols,
                             detail::concat("does not divide n = ", n, " (rows = 0 takes rows = n / cols)"));
      rows = ni / cols;
    } else if (cols == 0) {
      detail::require_option(ni % rows == 0, "PowerSgd", "rows", rows,
                             detail::concat("does not divide n = ", n, " (cols = 0 takes cols = n / rows)"));
      cols = ni / rows;
    } else {
      detail::require_option(rows * cols == ni, "PowerSgd", "rows", rows,
                             detail::concat("the shape rows x cols = ", rows, " x ", cols, " = ", rows * cols,
                                            " does not match the vector's n = ", n, " elements"));
    }
    detail::require_option(options_.rank <= std::min(rows, cols), "PowerSgd", "rank", options_.rank,
                           detail::concat("must be <= min(rows, cols) = ", std::min(rows, cols), " for the ", rows,
                                          " x ", cols, " matrix"));
    if (q_.size() == 0) q_.setZero(Eigen::Index(n));  // zero: drawn at the first round
    p_.setZero(Eigen::Index(rows), Eigen::Index(options_.rank));
    qj_.setZero(Eigen::Index(cols), Eigen::Index(options_.rank));
    rows_ = rows;
    cols_ = cols;
    n_ = n;
  }

  void compress(std::span<const T> p, std::span<T> out, const Round& round = {}) {
    detail::check_sizes("PowerSgd", "compress", p.size(), out.size(), "out", false);
    prepare(p.size());
    std::copy(p.begin(), p.end(), out.begin());
    Alone alone;
    run(out, {}, alone, round);
  }

  template <class Comm>
  void reduce(std::span<T> p, std::span<T> residual, Comm& comm, const Round& round = {}) {
    static_assert(Communicator<Comm>, "slowmo::compress::PowerSgd needs a Communicator (all_reduce)");
    detail::check_sizes("PowerSgd", "reduce", p.size(), residual.size(), "residual", true);
    prepare(p.size());
    run(p, residual, comm, round);
  }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    v(StateKey{"Q", scope}, q_, StateKind::accumulator);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    v(StateKey{"Q", scope}, q_, StateKind::accumulator);
  }
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"compressor", scope}, "PowerSgd");
    f(StateKey{"rank", scope}, options_.rank);
    f(StateKey{"rows", scope}, options_.rows);
    f(StateKey{"cols", scope}, options_.cols);
  }

 private:
  struct Alone {  // compress(): the collectives of one worker
    int rank() const { return 0; }
    int size() const { return 1; }
    void all_reduce(std::span<T>, ReduceOp) {}
  };

  static PowerSgdOptions validated(const PowerSgdOptions& o) {
    detail::require_option(o.rank >= 1, "PowerSgd", "rank", o.rank, "must be >= 1 (and <= min(rows, cols))");
    detail::require_option(o.rows >= 0, "PowerSgd", "rows", o.rows, "must be >= 1, or 0 to derive it from n");
    detail::require_option(o.cols >= 0, "PowerSgd", "cols", o.cols, "must be >= 1, or 0 to derive it from n");
    return o;
  }

  template <class Comm>
  void run(std::span<T> p, std::span<T> residual, Comm& comm, const Round& round) {
    const Eigen::Index rows = Eigen::Index(rows_), cols = Eigen::Index(cols_), r = Eigen::Index(options_.rank);
    Eigen::Map<Matrix> m(p.data(), rows, cols);
    Eigen::Map<Matrix> q(q_.data(), cols, r);
    if ((q.array() == T(0)).all()) {  // fresh, or reset: seeded normals, the same on every worker
      const std::uint64_t key = detail::stream_key(round.seed, 0, 0, detail::tag_power_sgd);
      for (Eigen::Index c = 0; c < r; ++c)
        for (Eigen::Index j = 0; j < cols; ++j) {
          const auto i = std::uint64_t(c * cols + j);
          q(j, c) = T(detail::normal(detail::draw(key, 2 * i), detail::draw(key, 2 * i + 1)));
        }
    }
    // P = M Q
    p_.setZero();
    for (Eigen::Index j = 0; j < cols; ++j)
      for (Eigen::Index c = 0; c < r; ++c) p_.col(c) += q(j, c) * m.col(j);
    comm.all_reduce(std::span<T>(p_.data(), std::size_t(rows * r)), ReduceOp::mean);
    // Modified Gram-Schmidt on the (now common) P.
    for (Eigen::Index c = 0; c < r; ++c) {
      for (Eigen::Index d = 0; d < c; ++d) p_.col(c) -= p_.col(d).dot(p_.col(c)) * p_.col(d);
      const T norm = p_.col(c).norm();
      if (norm > T(0)) p_.col(c) /= norm;
    }
    // Q_j = M^T P
    for (Eigen::Index j = 0; j < cols; ++j)
      for (Eigen::Index c = 0; c < r; ++c) qj_(j, c) = m.col(j).dot(p_.col(c));
    if (!residual.empty()) {  // residual = M - P Q_j^T
      Eigen::Map<Matrix> e(residual.data(), rows, cols);
      for (Eigen::Index j = 0; j < cols; ++j) {
        e.col(j) = m.col(j);
        for (Eigen::Index c = 0; c < r; ++c) e.col(j) -= qj_(j, c) * p_.col(c);
      }
    }
    q = qj_;
    comm.all_reduce(std::span<T>(q_.data(), std::size_t(cols * r)), ReduceOp::mean);
    // decoded = P Q^T, over M (no longer needed)
    for (Eigen::Index j = 0; j < cols; ++j) {
      m.col(j).setZero();
      for (Eigen::Index c = 0; c < r; ++c) m.col(j) += q(j, c) * p_.col(c);
    }
  }

  PowerSgdOptions options_;
  std::size_t n_ = 0;
  std::int64_t rows_ = 0, cols_ = 0;
  Vector<T> q_;    // state: Q in its first cols r entries
  Matrix p_, qj_;  // scratch: P, and this worker's M^T P
};

}  // namespace slowmo::compress
