// slowmo/problems/classification.hpp — a classification problem: a model (Mlp; one
// with no hidden layer is softmax regression) trained on a dataset shared by the workers, each
// worker owning a shard of its samples (problems/split.hpp makes IID and label-skewed shards).
//
// It offers the interface of the convex toy problems (problems::Problem), so every algorithm and
// backend runs it unchanged: f_i(x) is the model's loss (mean cross-entropy + l2/2 |x|^2) on
// worker i's shard and f = (1/m) sum_i f_i. It is non-convex and has no known minimiser, so
// it is not a ConvexProblem.
//
// Threads. The per-worker calls (loss(rank, x), gradient, sample_gradient) use worker `rank`'s
// own scratch, created by its first call and reused, so sample_gradient allocates nothing
// after it: different ranks may be called at the same time from different threads (the
// simulator's and the threads backend's workers), but one rank must not be called from two
// threads at once. The other calls (loss(x), batch_gradient, accuracy, the held-out loss)
// make their own scratch on every call: they allocate, and are safe from any thread.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include "slowmo/core/error.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/problems/dataset.hpp"
#include "slowmo/problems/mlp.hpp"
#include "slowmo/problems/problem.hpp"
#include "slowmo/problems/random.hpp"

namespace slowmo::problems {

struct ClassificationOptions {
  int batch = 32;          ///< samples per stochastic gradient, drawn with replacement from the worker's shard
  std::uint64_t seed = 0;  ///< of the minibatch draws (the initial parameters come from init(seed))
};

template <class Model = Mlp>
class Classification {
 public:
  /// The samples per chunk of the calls that make their own scratch (loss(x), accuracy, ...).
  static constexpr Eigen::Index evaluation_chunk = 512;

  /// `shards[i]` lists worker i's samples (indices into *train; repeats allowed).
  Classification(Model model, std::shared_ptr<const Dataset> train, std::vector<std::vector<Eigen::Index>> shards,
                 ClassificationOptions o = {})
      : model_(std::move(model)),
        train_(std::move(train)),
        shards_(std::move(shards)),
        o_(o),
        scratch_(shards_.size()) {
    using slowmo::detail::concat;
    using slowmo::detail::require_option;
    require_option(train_ != nullptr, "problems::Classification", "train", "nullptr", "must point to a dataset");
    require_option(!shards_.empty(), "problems::Classification", "shards", "{}", "needs at least one worker's shard");
    require_option(o_.batch >= 1, "problems::Classification", "batch", o_.batch, "must be >= 1");
    train_->validate();
    if (train_->features() != model_.inputs())
      throw size_mismatch(concat("slowmo::problems::Classification: ", train_->name, " has ", train_->features(),
                                 " features per sample; the model takes ", model_.inputs()));
    if (Eigen::Index(train_->classes) != model_.classes())
      throw size_mismatch(concat("slowmo::problems::Classification: ", train_->name, " has ", train_->classes,
                                 " classes; the model has ", model_.classes(), " outputs"));
    for (std::size_t i = 0; i < shards_.size(); ++i) {
      require_option(!shards_[i].empty(), "problems::Classification", "shards",
                     concat("shard ", i, " of ", shards_.size(), " is empty"),
                     "every worker needs at least one sample (its loss is a mean over its shard)");
      for (std::size_t k = 0; k < shards_[i].size(); ++k)
        if (shards_[i][k] < 0 || shards_[i][k] >= train_->size())
          throw size_mismatch(concat("slowmo::problems::Classification: sample ", shards_[i][k], " (entry ", k,
                                     " of worker ", i, "'s shard) is out of range [0, ", train_->size(), ") of ",
                                     train_->name));
    }
  }

  int workers() const { return static_cast<int>(shards_.size()); }
  Eigen::Index dim() const { return model_.dim(); }
  const Model& model() const { return model_; }
  const Dataset& train() const { return *train_; }
  const std::vector<Eigen::Index>& shard(int rank) const {
    detail::check_rank("Classification::shard", rank, workers());
    return shards_[std::size_t(rank)];
  }
  const ClassificationOptions& options() const { return o_; }

  /// The model's initial parameters from `seed` (Mlp: Kaiming-uniform).
  template <class T>
  Vector<T> init(std::uint64_t seed) const {
    return model_.template init<T>(seed);
  }

  /// f_i(x): the loss on worker `rank`'s whole shard.
  template <class T>
  double loss(int rank, const Vector<T>& x) const {
    check("Classification::loss", rank, x.size());
    return model_.loss(x, *train_, shards_[std::size_t(rank)], workspace<T>(rank));
  }
  /// f(x) = (1/m) sum_i f_i(x).
  template <class T>
  double loss(const Vector<T>& x) const {
    detail::check_dim("Classification::loss", x.size(), dim());
    Eigen::Index largest = 0;
    for (const auto& s : shards_) largest = std::max(largest, Eigen::Index(s.size()));
    auto ws = model_.template workspace<T>(std::min(largest, evaluation_chunk));
    double f = 0;
    for (const auto& s : shards_) f += model_.loss(x, *train_, s, ws);
    return f / double(workers());
  }
  /// grad f_i(x), exact on worker `rank`'s shard.
  template <class T>
  void gradient(int rank, const Vector<T>& x, Vector<T>& g) const {
    check("Classification::gradient", rank, x.size(), g.size());
    model_.loss_and_gradient(x, *train_, shards_[std::size_t(rank)], workspace<T>(rank), g);
  }
  /// The gradient on `batch` samples of worker `rank`'s shard drawn with replacement: a pure
  /// function of (seed, rank, step) (the draws are batch(rank, step)). Returns the minibatch's
  /// loss. Allocates nothing after this rank's first call.
  template <class T>
  double sample_gradient(int rank, std::int64_t step, const Vector<T>& x, Vector<T>& g) const {
    check("Classification::sample_gradient", rank, x.size(), g.size());
    auto& s = scratch_.v[std::size_t(rank)];
    if (s.batch.empty()) s.batch.resize(std::size_t(o_.batch));
    draw(rank, step, s.batch);
    return model_.loss_and_gradient(x, *train_, s.batch, workspace<T>(rank), g);
  }
  /// The training samples sample_gradient(rank, step, ...) uses.
  std::vector<Eigen::Index> batch(int rank, std::int64_t step) const {
    detail::check_rank("Classification::batch", rank, workers());
    std::vector<Eigen::Index> b(std::size_t(o_.batch));
    draw(rank, step, b);
    return b;
  }
  /// The gradient on explicit training samples (indices into train(), repeats allowed);
  /// returns their loss. batch_gradient of the m workers' batches of one step, concatenated,
  /// is the mean of their sample_gradients: AR-SGD on m workers is SGD on the m batches.
  template <class T>
  double batch_gradient(std::span<const Eigen::Index> samples, const Vector<T>& x, Vector<T>& g) const {
    detail::check_dim("Classification::batch_gradient", x.size(), dim());
    detail::check_dim("Classification::batch_gradient", g.size(), dim());
    auto ws = model_.template workspace<T>(std::clamp(Eigen::Index(samples.size()), Eigen::Index(1), evaluation_chunk));
    return model_.loss_and_gradient(x, *train_, samples, ws, g);
  }

  /// The fraction of a (held-out) dataset's samples the model classifies correctly.
  template <class T>
  double accuracy(const Vector<T>& x, const Dataset& d) const {
    detail::check_dim("Classification::accuracy", x.size(), dim());
    auto ws = model_.template workspace<T>(std::clamp(d.size(), Eigen::Index(1), evaluation_chunk));
    return model_.accuracy(x, d, ws);
  }
  /// The model's loss on every sample of a (held-out) dataset: the same objective as f_i
  /// (mean cross-entropy + l2/2 |x|^2).
  template <class T>
  double loss(const Vector<T>& x, const Dataset& d) const {
    detail::check_dim("Classification::loss", x.size(), dim());
    auto ws = model_.template workspace<T>(std::clamp(d.size(), Eigen::Index(1), evaluation_chunk));
    return model_.loss(x, d, ws);
  }

 private:
  template <class T>
  using Workspace = typename Model::template Workspace<T>;

  struct Scratch {
    std::optional<Workspace<float>> f;
    std::optional<Workspace<double>> d;
    std::vector<Eigen::Index> batch;
  };
  /// One Scratch per worker, sized at construction (never resized, so that workers touch
  /// only their own element); a copy of the problem starts with empty scratch.
  struct ScratchList {
    std::vector<Scratch> v;
    explicit ScratchList(std::size_t n) : v(n) {}
    ScratchList(const ScratchList& o) : v(o.v.size()) {}
    ScratchList(ScratchList&&) noexcept = default;
    ScratchList& operator=(const ScratchList& o) {
      if (this != &o) v = std::vector<Scratch>(o.v.size());
      return *this;
    }
    ScratchList& operator=(ScratchList&&) noexcept = default;
    ~ScratchList() = default;
  };

  template <class T>
  Workspace<T>& workspace(int rank) const {
    auto& s = scratch_.v[std::size_t(rank)];
    auto& w = [&]() -> std::optional<Workspace<T>>& {
      if constexpr (std::is_same_v<T, float>)
        return s.f;
      else
        return s.d;
    }();
    if (!w) w.emplace(model_, Eigen::Index(o_.batch));
    return *w;
  }

  void draw(int rank, std::int64_t step, std::span<Eigen::Index> out) const {
    const auto& shard = shards_[std::size_t(rank)];
    const std::uint64_t key = stream_key(o_.seed, std::uint64_t(rank), std::uint64_t(step));
    const double n = double(shard.size());
    for (std::size_t k = 0; k < out.size(); ++k) {
      // u < 1, but u * n may round up to n: clamp.
      const auto j = std::min(std::size_t(uniform01(key, std::uint64_t(k)) * n), shard.size() - 1);
      out[k] = shard[j];
    }
  }

  void check(const char* owner, int rank, Eigen::Index x_size, Eigen::Index g_size = -1) const {
    detail::check_rank(owner, rank, workers());
    detail::check_dim(owner, x_size, dim());
    if (g_size >= 0) detail::check_dim(owner, g_size, dim());
  }

  Model model_;
  std::shared_ptr<const Dataset> train_;
  std::vector<std::vector<Eigen::Index>> shards_;
  ClassificationOptions o_;
  mutable ScratchList scratch_;
};

}  // namespace slowmo::problems
