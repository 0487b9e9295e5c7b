// slowmo/problems/mlp.hpp — a fully connected network (multi-layer perceptron) with a softmax
// cross-entropy loss: the library's small non-convex model. With no hidden layer it is
// softmax regression.
//
// Parameters are one flat vector, layer after layer: layer l's weights W_l (out x in, stored
// column by column, so a column-major Eigen::Map views them) and then its bias b_l. The layer
// computes a_{l+1} = f(W_l a_l + b_l), with f the activation on every hidden layer and the
// identity on the last (the logits). The loss of a minibatch is the mean cross-entropy of the
// softmax of the logits, plus l2/2 |x|^2 over all parameters.
//
// A pass runs on a minibatch held as a matrix (one column per sample) with one matrix product
// per layer forward and two backward (none for the input's gradient, which nobody needs), in
// the parameter scalar T: float for speed, double for finite-difference tests. The scratch
// lives in a Workspace, so a pass after the first allocates nothing (see "Allocations" below).
//
// Allocations. Eigen's matrix product (GEMM) packs blocks of its operands into buffers that
// it puts on the stack below EIGEN_STACK_ALLOCATION_LIMIT (128 KiB) and on the heap above
// it, on every product: for 784-128-10 at batch 64, `Z.noalias() = W * A` mallocs twice per
// call even into a preallocated Z. Raising the limit is a global macro (every translation
// unit of the program must agree, or the One Definition Rule breaks) and moves up to that much
// onto every caller's stack; Eigen::setCpuCacheSizes changes every product of the program.
// Instead, on Eigen 3.4 the workspace owns the packing buffers and calls Eigen's own GEMM
// (internal::general_matrix_matrix_product, the routine `noalias() = A * B` ends in) with a
// blocking that points at them: the kernel of `noalias() = A * B`, with no allocation and
// nothing on the stack, and one block per product (see GemmBlocking).
// It is single-threaded (as a worker's pass should be: the workers are the parallelism).
// Define SLOWMO_MLP_PUBLIC_GEMM to use the public product instead (correct, but it may then
// allocate per pass); other Eigen versions get the public product, and
// Mlp::allocation_free_passes says which one is compiled.
//
// Reproducibility: a pass is deterministic (the same inputs give the same bits on every
// backend), and with the workspace's GEMM on every machine whose build has the same SIMD width
// (e.g. every x86-64 build without -march flags: SSE2): the products are not split by cache
// size. The public product (SLOWMO_MLP_PUBLIC_GEMM, other Eigen versions) sizes its blocks
// from the processor's caches, so there the last bits may differ between machines.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "slowmo/core/error.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/problems/dataset.hpp"
#include "slowmo/problems/random.hpp"

#if !defined(SLOWMO_MLP_PUBLIC_GEMM) && EIGEN_VERSION_AT_LEAST(3, 4, 0) && !EIGEN_VERSION_AT_LEAST(3, 4, 90)
#define SLOWMO_MLP_PREPACKED_GEMM 1
#else
#define SLOWMO_MLP_PREPACKED_GEMM 0
#endif

namespace slowmo::problems {

/// The activation of every hidden layer.
enum class Activation { relu, tanh };

inline const char* to_string(Activation a) {
  switch (a) {
    case Activation::relu:
      return "relu";
    case Activation::tanh:
      return "tanh";
  }
  return "unknown";
}

struct MlpOptions {
  std::vector<Eigen::Index> widths;          ///< input features, hidden widths..., classes (>= 2 entries)
  Activation activation = Activation::relu;  ///< of every hidden layer
  double l2 = 0;                             ///< adds l2/2 |x|^2 over all parameters, as the convex problems do
};

namespace detail {

/// One product's blocking: the whole product in one block (mc = rows, nc = cols, kc = depth).
/// Eigen's heuristic would size the blocks from the processor's cache sizes, and a depth split
/// into kc-blocks changes the order of each sum; in one block every entry of C is summed over k
/// in order, whatever the machine, so a run gives the same bits on every machine whose compiler
/// picks the same SIMD width. At the sizes of these networks the packed operands still fit in
/// the L2 cache (784 x 128 floats is 392 KiB), and bench/mlp_bench.cpp shows no loss.
struct GemmBlocking {
  Eigen::Index mc = 0, nc = 0, kc = 0;
  Eigen::Index pack_a() const { return mc * kc; }
  Eigen::Index pack_b() const { return kc * nc; }
};

template <class T>
GemmBlocking gemm_blocking(Eigen::Index rows, Eigen::Index cols, Eigen::Index depth) {
  return {.mc = rows, .nc = cols, .kc = depth};
}

#if SLOWMO_MLP_PREPACKED_GEMM
/// Eigen's blocking object, pointed at buffers the caller owns (so that GEMM packs into them
/// instead of allocating its own).
template <class T>
class BorrowedBlocking : public Eigen::internal::level3_blocking<T, T> {
 public:
  BorrowedBlocking(const GemmBlocking& b, T* pack_a, T* pack_b) {
    this->m_mc = b.mc;
    this->m_nc = b.nc;
    this->m_kc = b.kc;
    this->m_blockA = pack_a;
    this->m_blockB = pack_b;
  }
};
#endif

/// C += alpha op(A) op(B) on column-major storage with leading dimensions lda, ldb, ldc;
/// op(A) is rows x depth and op(B) depth x cols (op = transpose where Trans*). `blocking` was
/// sized for a product at least this large in every dimension; pack_a and pack_b hold at
/// least its pack_a() and pack_b() elements.
template <bool TransA, bool TransB, class T>
void gemm(Eigen::Index rows, Eigen::Index cols, Eigen::Index depth, const T* A, Eigen::Index lda, const T* B,
          Eigen::Index ldb, T* C, Eigen::Index ldc, T alpha, [[maybe_unused]] const GemmBlocking& blocking,
          [[maybe_unused]] T* pack_a, [[maybe_unused]] T* pack_b) {
  if (rows == 0 || cols == 0 || depth == 0) return;
#if SLOWMO_MLP_PREPACKED_GEMM
  BorrowedBlocking<T> b(blocking, pack_a, pack_b);
  Eigen::internal::general_matrix_matrix_product<Eigen::Index, T, TransA ? Eigen::RowMajor : Eigen::ColMajor, false, T,
                                                 TransB ? Eigen::RowMajor : Eigen::ColMajor, false, Eigen::ColMajor,
                                                 1>::run(rows, cols, depth, A, lda, B, ldb, C, 1, ldc, alpha, b,
                                                         nullptr);
#else
  using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  using Map = Eigen::Map<const M, 0, Eigen::OuterStride<>>;
  const Map a(A, TransA ? depth : rows, TransA ? rows : depth, Eigen::OuterStride<>(lda));
  const Map bm(B, TransB ? cols : depth, TransB ? depth : cols, Eigen::OuterStride<>(ldb));
  Eigen::Map<M, 0, Eigen::OuterStride<>> c(C, rows, cols, Eigen::OuterStride<>(ldc));
  if constexpr (TransA && TransB)
    c.noalias() += alpha * (a.transpose() * bm.transpose());
  else if constexpr (TransA)
    c.noalias() += alpha * (a.transpose() * bm);
  else if constexpr (TransB)
    c.noalias() += alpha * (a * bm.transpose());
  else
    c.noalias() += alpha * (a * bm);
#endif
}

inline std::string widths_string(const std::vector<Eigen::Index>& w) {
  std::string s = "{";
  for (std::size_t i = 0; i < w.size(); ++i) s += (i ? ", " : "") + std::to_string(w[i]);
  return s + "}";
}

}  // namespace detail

class Mlp {
 public:
  /// True where a pass after a workspace's first allocates nothing (Eigen 3.4's GEMM with the
  /// workspace's packing buffers); false with the public product (SLOWMO_MLP_PUBLIC_GEMM).
  static constexpr bool allocation_free_passes = SLOWMO_MLP_PREPACKED_GEMM != 0;

  /// The scratch of passes over at most `capacity` samples at a time (larger sample sets are
  /// processed in chunks of `capacity`): the minibatch cast to T, every layer's activations,
  /// the deltas and GEMM's packing buffers. Everything is allocated here; a pass allocates
  /// nothing. One workspace serves one thread at a time.
  template <class T>
  class Workspace {
    static_assert(Real<T>, "slowmo::problems::Mlp::Workspace<T>: T must be float or double");

   public:
    Workspace(const Mlp& model, Eigen::Index capacity) : widths_(model.o_.widths), capacity_(capacity) {
      slowmo::detail::require_option(capacity >= 1, "problems::Mlp::Workspace", "capacity", capacity,
                                     "must be >= 1 (samples per chunk)");
      const int L = model.layers();
      const auto& w = widths_;
      input_.resize(w[0] * capacity);
      act_.resize(std::size_t(L) + 1);
      Eigen::Index hidden = 0;
      for (int l = 1; l <= L; ++l) {
        act_[std::size_t(l)].resize(w[std::size_t(l)] * capacity);
        if (l < L) hidden = std::max(hidden, w[std::size_t(l)]);
      }
      for (auto& d : delta_) d.resize(hidden * capacity);
      row_a_.resize(capacity);
      row_b_.resize(capacity);
      labels_.resize(std::size_t(capacity));
      Eigen::Index pack_a = 0, pack_b = 0;
      auto keep = [&](const detail::GemmBlocking& b) {
        pack_a = std::max(pack_a, b.pack_a());
        pack_b = std::max(pack_b, b.pack_b());
        return b;
      };
      for (int l = 0; l < L; ++l) {
        const Eigen::Index in = w[std::size_t(l)], out = w[std::size_t(l) + 1];
        forward_.push_back(keep(detail::gemm_blocking<T>(out, capacity, in)));
        weight_grad_.push_back(keep(detail::gemm_blocking<T>(out, in, capacity)));
        backward_.push_back(l > 0 ? keep(detail::gemm_blocking<T>(in, capacity, out)) : detail::GemmBlocking{});
      }
      if constexpr (allocation_free_passes) {
        pack_a_.resize(pack_a);
        pack_b_.resize(pack_b);
      }
    }

    /// Samples per chunk.
    Eigen::Index capacity() const { return capacity_; }
    /// The widths of the network it was made for.
    const std::vector<Eigen::Index>& widths() const { return widths_; }

   private:
    friend class Mlp;
    std::vector<Eigen::Index> widths_;
    Eigen::Index capacity_;
    Vector<T> input_;             // widths[0] x capacity: the gathered samples, in T
    std::vector<Vector<T>> act_;  // act_[l], l = 1..L: widths[l] x capacity (act_[L]: logits, then deltas)
    Vector<T> delta_[2];          // widest hidden layer x capacity, used in turn going backward
    Eigen::Matrix<T, 1, Eigen::Dynamic> row_a_, row_b_;  // per-sample scratch of the softmax
    std::vector<std::int32_t> labels_;                   // the gathered labels
    std::vector<detail::GemmBlocking> forward_, weight_grad_, backward_;
    Vector<T> pack_a_, pack_b_;  // GEMM's packed blocks
  };

  explicit Mlp(MlpOptions o) : o_(std::move(o)) {
    using slowmo::detail::require_option;
    const auto& w = o_.widths;
    require_option(w.size() >= 2, "problems::Mlp", "widths", detail::widths_string(w),
                   "needs at least 2 entries: the input features, then any hidden widths, then the classes");
    for (std::size_t i = 0; i < w.size(); ++i)
      require_option(w[i] >= 1, "problems::Mlp", "widths", detail::widths_string(w),
                     slowmo::detail::concat("entry ", i, " is ", w[i], "; every width must be >= 1"));
    require_option(w.back() >= 2, "problems::Mlp", "widths", detail::widths_string(w),
                   "the last entry (the classes) must be >= 2 for a softmax");
    require_option(o_.activation == Activation::relu || o_.activation == Activation::tanh, "problems::Mlp", "activation",
                   static_cast<int>(o_.activation), "must be Activation::relu or Activation::tanh");
    require_option(slowmo::detail::finite(o_.l2) && o_.l2 >= 0, "problems::Mlp", "l2", o_.l2, "must be finite and >= 0");
    Eigen::Index offset = 0;
    constexpr Eigen::Index max_dim = Eigen::Index(1) << 40;  // beyond any memory; keeps the sums exact
    for (std::size_t l = 0; l + 1 < w.size(); ++l) {
      require_option(w[l] <= max_dim / w[l + 1] && offset <= max_dim - w[l] * w[l + 1] - w[l + 1], "problems::Mlp",
                     "widths", detail::widths_string(w), "the network has more than 2^40 parameters");
      weights_offset_.push_back(offset);
      offset += w[l + 1] * w[l];
      bias_offset_.push_back(offset);
      offset += w[l + 1];
    }
    dim_ = offset;
  }

  const MlpOptions& options() const { return o_; }
  const std::vector<Eigen::Index>& widths() const { return o_.widths; }
  /// Weight layers (matrix products): widths().size() - 1.
  int layers() const { return static_cast<int>(o_.widths.size()) - 1; }
  Eigen::Index inputs() const { return o_.widths.front(); }
  Eigen::Index classes() const { return o_.widths.back(); }
  /// The number of parameters: sum over layers of out * in + out.
  Eigen::Index dim() const { return dim_; }
  /// Where layer l's weights (out x in, column-major) and its bias start in the flat vector.
  Eigen::Index weights_offset(int l) const { return weights_offset_[check_layer("weights_offset", l)]; }
  Eigen::Index bias_offset(int l) const { return bias_offset_[check_layer("bias_offset", l)]; }

  /// Layer l's weights as an out x in column-major matrix over the flat vector x (any
  /// contiguous vector: Vector, Map, Ref, segment); const when x is.
  template <class V>
  auto weights(V&& x, int l) const {
    const std::size_t k = check_view<V>("weights", x.size(), x.innerStride(), l);
    using S = std::remove_pointer_t<decltype(x.data())>;
    using M = Eigen::Matrix<std::remove_const_t<S>, Eigen::Dynamic, Eigen::Dynamic>;
    return Eigen::Map<std::conditional_t<std::is_const_v<S>, const M, M>>(x.data() + weights_offset_[k],
                                                                          o_.widths[k + 1], o_.widths[k]);
  }
  /// Layer l's bias (out entries) over the flat vector x; const when x is.
  template <class V>
  auto bias(V&& x, int l) const {
    const std::size_t k = check_view<V>("bias", x.size(), x.innerStride(), l);
    using S = std::remove_pointer_t<decltype(x.data())>;
    using Vec = Vector<std::remove_const_t<S>>;
    return Eigen::Map<std::conditional_t<std::is_const_v<S>, const Vec, Vec>>(x.data() + bias_offset_[k],
                                                                              o_.widths[k + 1]);
  }

  /// The bound b of layer l's initial weights, U(-b, b): gain * sqrt(3 / fan_in).
  double init_bound(int l) const {
    const auto k = check_layer("init_bound", l);
    return init_gain() * std::sqrt(3.0 / double(o_.widths[k]));
  }
  /// The gain of the activation (PyTorch's torch.nn.init.calculate_gain): sqrt(2) for ReLU,
  /// 5/3 for tanh.
  double init_gain() const { return o_.activation == Activation::relu ? std::sqrt(2.0) : 5.0 / 3.0; }

  /// Initial parameters from the seed: Kaiming-uniform (He et al. 2015, "Delving deep into
  /// rectifiers", eq. 10 with a uniform law of the same variance): every weight of layer l
  /// ~ U(-b, b), b = gain * sqrt(3 / fan_in), so Var = gain^2 / fan_in; every bias 0. This is
  /// torch.nn.init.kaiming_uniform_(W, nonlinearity = "relu" or "tanh") applied to every layer
  /// (the last one too; He et al. note the first layer's factor is immaterial). It is NOT
  /// PyTorch's nn.Linear default, kaiming_uniform_ with a = sqrt(5), which gives
  /// W ~ U(+-1/sqrt(fan_in)) and b ~ U(+-1/sqrt(fan_in)): a variance 1/(3 fan_in), a sixth of
  /// ReLU's. Weight j (column-major) of layer l is b (2 u - 1), u = uniform01(key_l, j): the
  /// same numbers on every platform and for float and double (up to T's rounding).
  template <class T>
  Vector<T> init(std::uint64_t seed) const {
    static_assert(Real<T>, "slowmo::problems::Mlp::init<T>: T must be float or double");
    Vector<T> x = Vector<T>::Zero(dim_);
    // A stream of its own: not one of the problems' (seed, worker, step) minibatch streams.
    const std::uint64_t base = mix64(seed ^ 0x6d6c702d696e6974ull);  // "mlp-init"
    for (int l = 0; l < layers(); ++l) {
      const std::uint64_t key = stream_key(base, std::uint64_t(l), 0);
      const double b = init_bound(l);
      auto W = weights(x, l);
      for (Eigen::Index j = 0; j < W.size(); ++j)
        W.data()[j] = static_cast<T>(b * (2.0 * uniform01(key, std::uint64_t(j)) - 1.0));
    }
    return x;
  }

  /// A workspace for chunks of up to `capacity` samples.
  template <class T>
  Workspace<T> workspace(Eigen::Index capacity) const {
    return Workspace<T>(*this, capacity);
  }

  /// The mean cross-entropy of the samples `samples` (indices into `data`, repeats allowed) at
  /// x, plus l2/2 |x|^2.
  template <class T>
  double loss(std::type_identity_t<ConstVectorRef<T>> x, const Dataset& data,
              std::span<const Eigen::Index> samples, Workspace<T>& ws) const {
    check_call("loss", x.size(), -1, ws);
    check_samples("loss", data, samples);
    return pass_indexed<T>(x, data, samples, ws, nullptr);
  }
  /// The same loss, and its gradient written into g (nothing is written if it throws).
  template <class T>
  double loss_and_gradient(std::type_identity_t<ConstVectorRef<T>> x, const Dataset& data,
                           std::span<const Eigen::Index> samples, Workspace<T>& ws,
                           std::type_identity_t<VectorRef<T>> g) const {
    check_call("loss_and_gradient", x.size(), g.size(), ws);
    check_samples("loss_and_gradient", data, samples);
    return pass_indexed<T>(x, data, samples, ws, &g);
  }

  /// The mean cross-entropy over every sample of `data`, plus l2/2 |x|^2 (the same objective
  /// as loss(x, data, samples, ws)).
  template <class T>
  double loss(std::type_identity_t<ConstVectorRef<T>> x, const Dataset& data, Workspace<T>& ws) const {
    check_call("loss", x.size(), -1, ws);
    check_dataset("loss", data, true);
    double total = 0;
    for_each_chunk<T>(x, data, ws, [&](Eigen::Index n, const std::int32_t* labels) {
      total += cross_entropy<T>(ws, n, labels, false);
    });
    return total / double(data.size()) + l2_term<T>(x);
  }
  /// The fraction of `data`'s samples whose largest logit is their label's.
  template <class T>
  double accuracy(std::type_identity_t<ConstVectorRef<T>> x, const Dataset& data, Workspace<T>& ws) const {
    check_call("accuracy", x.size(), -1, ws);
    check_dataset("accuracy", data, false);
    Eigen::Index right = 0;
    for_each_chunk<T>(x, data, ws, [&](Eigen::Index n, const std::int32_t* labels) {
      const auto Z = logits(ws, n);
      for (Eigen::Index j = 0; j < n; ++j) {
        Eigen::Index best = 0;
        Z.col(j).maxCoeff(&best);
        right += best == labels[j];
      }
    });
    return double(right) / double(data.size());
  }
  /// The predicted class of every sample of `data` (the first of equal largest logits).
  template <class T>
  void predict(std::type_identity_t<ConstVectorRef<T>> x, const Dataset& data, Workspace<T>& ws,
               std::span<std::int32_t> predicted) const {
    check_call("predict", x.size(), -1, ws);
    check_dataset("predict", data, false);
    if (Eigen::Index(predicted.size()) != data.size())
      throw size_mismatch(slowmo::detail::concat("slowmo::problems::Mlp::predict: room for ", predicted.size(),
                                                 " predictions for the ", data.size(), " samples of ", data.name));
    Eigen::Index start = 0;
    for_each_chunk<T>(x, data, ws, [&](Eigen::Index n, const std::int32_t*) {
      const auto Z = logits(ws, n);
      for (Eigen::Index j = 0; j < n; ++j) {
        Eigen::Index best = 0;
        Z.col(j).maxCoeff(&best);
        predicted[std::size_t(start + j)] = static_cast<std::int32_t>(best);
      }
      start += n;
    });
  }

 private:
  template <class T>
  using MatrixMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>>;
  template <class T>
  using ConstMatrixMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>>;

  std::size_t check_layer(const char* what, int l) const {
    if (l < 0 || l >= layers())
      throw size_mismatch(
          slowmo::detail::concat("slowmo::problems::Mlp::", what, ": layer ", l, " is out of range [0, ", layers(), ")"));
    return std::size_t(l);
  }
  template <class V>
  std::size_t check_view(const char* what, Eigen::Index size, Eigen::Index inner_stride, int l) const {
    static_assert(!(std::is_rvalue_reference_v<V&&> &&
                    std::is_same_v<typename std::remove_cvref_t<V>::PlainObject, std::remove_cvref_t<V>>),
                  "slowmo::problems::Mlp: a view of a temporary vector would dangle; pass a named vector");
    const std::size_t k = check_layer(what, l);
    if (size != dim_ || inner_stride != 1)
      throw size_mismatch(slowmo::detail::concat(
          "slowmo::problems::Mlp::", what, ": a vector of size ", size, inner_stride != 1 ? " with a stride" : "",
          " for a network of dimension ", dim_, " (pass the whole, contiguous parameter vector)"));
    return k;
  }
  template <class T>
  void check_call(const char* what, Eigen::Index x_size, Eigen::Index g_size, const Workspace<T>& ws) const {
    if (x_size != dim_)
      throw size_mismatch(slowmo::detail::concat("slowmo::problems::Mlp::", what, ": parameter vector of size ", x_size,
                                                 " for a network of dimension ", dim_));
    if (g_size >= 0 && g_size != dim_)
      throw size_mismatch(slowmo::detail::concat("slowmo::problems::Mlp::", what, ": gradient vector of size ", g_size,
                                                 " for a network of dimension ", dim_));
    if (ws.widths_ != o_.widths)
      throw size_mismatch(slowmo::detail::concat("slowmo::problems::Mlp::", what, ": a workspace made for widths ",
                                                 detail::widths_string(ws.widths_), " used with a network of widths ",
                                                 detail::widths_string(o_.widths)));
  }
  void check_data_shape(const char* what, const Dataset& data) const {
    if (data.features() != inputs())
      throw size_mismatch(slowmo::detail::concat("slowmo::problems::Mlp::", what, ": ", data.name, " has ",
                                                 data.features(), " features per sample; the network takes ",
                                                 inputs()));
    if (Eigen::Index(data.y.size()) != data.size())
      throw size_mismatch(slowmo::detail::concat("slowmo::problems::Mlp::", what, ": ", data.name, " has ", data.size(),
                                                 " samples but ", data.y.size(), " labels"));
  }
  void check_label(const char* what, const Dataset& data, Eigen::Index sample) const {
    const std::int32_t y = data.y[std::size_t(sample)];
    if (y < 0 || y >= classes())
      throw size_mismatch(slowmo::detail::concat("slowmo::problems::Mlp::", what, ": label ", y, " of sample ", sample,
                                                 " of ", data.name, " is out of range [0, ", classes(),
                                                 ") of the network's classes"));
  }
  void check_samples(const char* what, const Dataset& data, std::span<const Eigen::Index> samples) const {
    check_data_shape(what, data);
    if (samples.empty())
      throw size_mismatch(
          slowmo::detail::concat("slowmo::problems::Mlp::", what, ": no samples (the mean loss of none is undefined)"));
    for (std::size_t k = 0; k < samples.size(); ++k) {
      if (samples[k] < 0 || samples[k] >= data.size())
        throw size_mismatch(slowmo::detail::concat("slowmo::problems::Mlp::", what, ": sample index ", samples[k],
                                                   " (entry ", k, ") is out of range [0, ", data.size(), ") of ",
                                                   data.name));
      check_label(what, data, samples[k]);
    }
  }
  void check_dataset(const char* what, const Dataset& data, bool labels) const {
    check_data_shape(what, data);
    if (data.size() == 0)
      throw size_mismatch(slowmo::detail::concat("slowmo::problems::Mlp::", what, ": ", data.name, " has no samples"));
    if (labels)
      for (Eigen::Index j = 0; j < data.size(); ++j) check_label(what, data, j);
  }

  template <class T>
  double l2_term(const ConstVectorRef<T>& x) const {
    return o_.l2 > 0 ? 0.5 * o_.l2 * x.template cast<double>().squaredNorm() : 0.0;
  }

  template <class T>
  static MatrixMap<T> logits(Workspace<T>& ws, Eigen::Index n) {
    const Eigen::Index c = ws.widths_.back();
    return MatrixMap<T>(ws.act_.back().data(), c, n);
  }

  /// The loss (and gradient) over the listed samples, in chunks of the workspace's capacity.
  template <class T>
  double pass_indexed(const ConstVectorRef<T>& x, const Dataset& data, std::span<const Eigen::Index> samples,
                      Workspace<T>& ws, VectorRef<T>* g) const {
    const Eigen::Index N = Eigen::Index(samples.size()), w0 = inputs();
    if (g) {
      if (o_.l2 > 0)
        g->noalias() = T(o_.l2) * x;
      else
        g->setZero();
    }
    const T alpha = T(1.0 / double(N));
    double total = 0;
    for (Eigen::Index start = 0; start < N; start += ws.capacity_) {
      const Eigen::Index n = std::min(ws.capacity_, N - start);
      MatrixMap<T> in(ws.input_.data(), w0, n);
      for (Eigen::Index k = 0; k < n; ++k) {
        const Eigen::Index s = samples[std::size_t(start + k)];
        in.col(k) = data.X.col(s).template cast<T>();
        ws.labels_[std::size_t(k)] = data.y[std::size_t(s)];
      }
      forward<T>(x, in.data(), n, ws);
      total += cross_entropy<T>(ws, n, ws.labels_.data(), g != nullptr);
      if (g) backward<T>(x, in.data(), n, alpha, ws, g->data());
    }
    return total / double(N) + l2_term<T>(x);
  }

  /// Runs the forward pass over `data` in contiguous chunks and calls f(n, labels) after each.
  /// Float parameters read the dataset's columns in place; double ones a cast copy.
  template <class T, class F>
  void for_each_chunk(const ConstVectorRef<T>& x, const Dataset& data, Workspace<T>& ws, F&& f) const {
    const Eigen::Index N = data.size(), w0 = inputs();
    for (Eigen::Index start = 0; start < N; start += ws.capacity_) {
      const Eigen::Index n = std::min(ws.capacity_, N - start);
      const T* in = nullptr;
      if constexpr (std::is_same_v<T, float>) {
        in = data.X.data() + start * w0;
      } else {
        MatrixMap<T> copy(ws.input_.data(), w0, n);
        copy = data.X.middleCols(start, n).template cast<T>();
        in = copy.data();
      }
      forward<T>(x, in, n, ws);
      f(n, data.y.data() + start);
    }
  }

  /// act_[l+1] = f(W_l act_[l] + b_l) for every layer (the last without f), over n samples.
  template <class T>
  void forward(const ConstVectorRef<T>& x, const T* input, Eigen::Index n, Workspace<T>& ws) const {
    const int L = layers();
    const T* a = input;
    for (int l = 0; l < L; ++l) {
      const auto k = std::size_t(l);
      const Eigen::Index in = o_.widths[k], out = o_.widths[k + 1];
      MatrixMap<T> Z(ws.act_[k + 1].data(), out, n);
      Z.colwise() = bias(x, l);
      gemm<false, false, T>(out, n, in, x.data() + weights_offset_[k], out, a, in, Z.data(), out, T(1), ws.forward_[k],
                            ws);
      if (l + 1 < L) {
        if (o_.activation == Activation::relu)
          Z = Z.cwiseMax(T(0));
        else
          Z.array() = Z.array().tanh();
      }
      a = Z.data();
    }
  }

  /// The sum over the n samples of -log softmax(z)_y, by a stable log-sum-exp: log sum_k
  /// exp(z_k - max z) - (z_y - max z). With `gradient`, the logits are replaced by the
  /// softmax minus the one-hot labels (the unscaled delta of the last layer).
  template <class T>
  double cross_entropy(Workspace<T>& ws, Eigen::Index n, const std::int32_t* labels, bool gradient) const {
    auto Z = logits(ws, n);
    auto top = ws.row_a_.head(n);
    auto zy = ws.row_b_.head(n);
    top.noalias() = Z.colwise().maxCoeff();
    Z.rowwise() -= top;
    for (Eigen::Index j = 0; j < n; ++j) zy[j] = Z(labels[j], j);
    Z.array() = Z.array().exp();
    auto sum = top;  // reuses the row: the max is no longer needed
    sum.noalias() = Z.colwise().sum();
    double total = 0;
    for (Eigen::Index j = 0; j < n; ++j) total += std::log(double(sum[j])) - double(zy[j]);
    if (gradient) {
      Z.array().rowwise() /= sum.array();
      for (Eigen::Index j = 0; j < n; ++j) Z(labels[j], j) -= T(1);
    }
    return total;
  }

  /// g += alpha * (gradient of the summed loss of the n samples), the logits holding the
  /// last layer's delta: dW_l = D_l a_l^T, db_l = D_l 1, D_{l-1} = (W_l^T D_l) .* f'(a_l).
  template <class T>
  void backward(const ConstVectorRef<T>& x, const T* input, Eigen::Index n, T alpha, Workspace<T>& ws, T* g) const {
    const int L = layers();
    const T* D = ws.act_.back().data();
    int turn = 0;
    for (int l = L - 1; l >= 0; --l) {
      const auto k = std::size_t(l);
      const Eigen::Index in = o_.widths[k], out = o_.widths[k + 1];
      const T* a = l == 0 ? input : ws.act_[k].data();
      gemm<false, true, T>(out, in, n, D, out, a, in, g + weights_offset_[k], out, alpha, ws.weight_grad_[k], ws);
      const ConstMatrixMap<T> Dm(D, out, n);
      Eigen::Map<Vector<T>>(g + bias_offset_[k], out).noalias() += alpha * Dm.rowwise().sum();
      if (l == 0) break;
      MatrixMap<T> prev(ws.delta_[turn].data(), in, n);
      prev.setZero();
      gemm<true, false, T>(in, n, out, x.data() + weights_offset_[k], out, D, out, prev.data(), in, T(1),
                           ws.backward_[k], ws);
      const ConstMatrixMap<T> A(a, in, n);
      if (o_.activation == Activation::relu)
        prev.array() = (A.array() > T(0)).select(prev.array(), T(0));  // a = max(z, 0) > 0 exactly where z > 0
      else
        prev.array() *= T(1) - A.array().square();  // tanh' = 1 - tanh^2
      D = prev.data();
      turn ^= 1;
    }
  }

  template <bool TransA, bool TransB, class T>
  static void gemm(Eigen::Index rows, Eigen::Index cols, Eigen::Index depth, const T* A, Eigen::Index lda, const T* B,
                   Eigen::Index ldb, T* C, Eigen::Index ldc, T alpha, const detail::GemmBlocking& b, Workspace<T>& ws) {
    detail::gemm<TransA, TransB, T>(rows, cols, depth, A, lda, B, ldb, C, ldc, alpha, b, ws.pack_a_.data(),
                                    ws.pack_b_.data());
  }

  MlpOptions o_;
  std::vector<Eigen::Index> weights_offset_, bias_offset_;
  Eigen::Index dim_ = 0;
};

}  // namespace slowmo::problems
