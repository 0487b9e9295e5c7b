// slowmo/compress/compressed.hpp — Compressed<C>: the reduce policy that sends C(p) instead of
// p, with error feedback (Seide et al. 2014; Karimireddy et al. 2019, "Error Feedback Fixes
// SignSGD", Algorithm 2; Stich et al. 2018) and SparseLoCo's decayed form (Sarfi et al. 2025).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "slowmo/compress/detail/common.hpp"
#include "slowmo/compress/round.hpp"
#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/distributed/reduce.hpp"

namespace slowmo::compress {

/// What Compressed<C> asks of a compressor C (besides `reduce`, checked against the
/// communicator where it is called): a scalar type, compress(p, out, round) (what this
/// worker contributes, without communicating) and the state and structure hooks.
template <class C>
concept Compressor = requires {
  typename C::scalar_type;
}
&&Real<typename C::scalar_type>&& requires(C& c, const C& cc, std::span<const typename C::scalar_type> p,
                                           std::span<typename C::scalar_type> out, const Round& round) {
  c.compress(p, out, round);
  c.visit_state(slowmo::detail::AnyStateVisitor{});
  cc.visit_state(slowmo::detail::AnyStateVisitor{});
  cc.visit_structure([](const StateKey&, const auto&) {});
};

/// Options of Compressed.
struct CompressedOptions {
  /// Keep the residual e = p - C(p) and add it to the next vector (Karimireddy et al. 2019);
  /// without it compression errors are lost (fine for unbiased compressors only).
  bool error_feedback = true;
  /// beta in (0, 1]: p = beta e + d. 1 is error feedback as in Karimireddy et al. (p = d + e);
  /// beta < 1 is SparseLoCo's e = beta e + d, which lets the residual play outer momentum.
  double error_decay = 1.0;
  /// The seed of randomised compressors (RandomK's indices, Qsgd's rounding, PowerSgd's Q).
  std::uint64_t seed = 0;
};

/// The reduce policy (distributed/reduce.hpp, ReducePolicy) that compresses: per reduction,
/// with d this worker's vector and e its residual (zero at first),
///   p = d + beta e                     (error feedback; p = d without)
///   v = mean_j C(p_j)                  (compressor.reduce: identical bits on every worker)
///   e = p - C(p)                       (this worker's part that was not sent)
/// e is a Vector<T> of the vector's size, allocated by init(n) (or the first reduce) and visited as the
/// accumulator "residual" (a reset zeroes it; OnSync::average averages it); the compressor's
/// own state (PowerSgd's Q) is visited after it, in the same scope.
///
/// ReduceContext::agreed is ignored: the compression is part of the algorithm, so vectors that
/// already agree are compressed all the same (and the residual keeps what was not sent).
/// Options that depend on the vector's size are checked by the first reduce, before anything
/// changes; a later vector of another size throws size_mismatch naming the residual.
template <Compressor C>
class Compressed {
 public:
  using scalar_type = typename C::scalar_type;
  using compressor_type = C;
  using options_type = CompressedOptions;
  /// Compressors read and write the vectors on the host: a base in device memory is refused
  /// at compile time by the combinators (slowmo::detail::host_only_policy).
  static constexpr bool host_only = true;

  explicit Compressed(C compressor = C{}, CompressedOptions options = {})
      : compressor_(std::move(compressor)), options_(validated(options)) {}

  /// Ready for vectors of n elements (the combinators call it at start and rebase): checks the
  /// compressor's options against n and sizes the residual (zero) and the scratch, so that the
  /// first reduction neither throws for options nor allocates. A residual of that size is kept.
  void init(std::size_t n) {
    if (n == 0) return;
    if constexpr (requires { compressor_.prepare(n); }) compressor_.prepare(n);  // throws before anything changes
    if (options_.error_feedback && std::size_t(residual_.size()) != n) residual_.setZero(Eigen::Index(n));
  }

  template <class Comm>
  void reduce(std::span<scalar_type> v, Comm& comm, const ReduceContext& ctx) {
    using T = scalar_type;
    static_assert(Communicator<Comm>, "slowmo::compress::Compressed: not a Communicator (see check_communicator)");
    static_assert(
        requires(C & c, std::span<T> s, Comm & cm, const Round& r) { c.reduce(s, s, cm, r); },
        "slowmo::compress::Compressed: the compressor has no reduce(p, residual, comm, round)");
    const std::size_t n = v.size();
    if (n == 0)
      throw size_mismatch("slowmo::compress::Compressed::reduce: the vector is empty; pass at least one element");
    if (options_.error_feedback && residual_.size() != 0 && std::size_t(residual_.size()) != n)
      throw size_mismatch(detail::concat("slowmo::compress::Compressed::reduce: the vector has ", n,
                                         " elements but the state 'residual' has ", residual_.size(),
                                         " (made by the first reduce): use one policy per vector"));
    if constexpr (requires { compressor_.prepare(n); }) compressor_.prepare(n);  // throws before anything changes
    const Round round{options_.seed, ctx.round, comm.rank(), comm.size()};
    if (!options_.error_feedback) {
      compressor_.reduce(v, std::span<T>{}, comm, round);
      return;
    }
    if (residual_.size() == 0) residual_.setZero(Eigen::Index(n));
    const T* e = residual_.data();
    if (options_.error_decay == 1.0) {
      for (std::size_t i = 0; i < n; ++i) v[i] += e[i];
    } else {
      const T beta = T(options_.error_decay);
      for (std::size_t i = 0; i < n; ++i) v[i] = beta * e[i] + v[i];
    }
    compressor_.reduce(v, std::span<T>(residual_.data(), n), comm, round);
  }

  const C& compressor() const { return compressor_; }
  C& compressor() { return compressor_; }
  const CompressedOptions& options() const { return options_; }
  /// Empty until the first reduce with error feedback.
  const Vector<scalar_type>& residual() const { return residual_; }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    visit(*this, v, scope);
  }
  /// Structural: the policy, whether there is a residual at all, then the compressor's.
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"reduce", scope}, "Compressed");
    f(StateKey{"error_feedback", scope}, options_.error_feedback);
    compressor_.visit_structure(f, scope);
  }

 private:
  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    if (self.options_.error_feedback) v(StateKey{"residual", scope}, self.residual_, StateKind::accumulator);
    self.compressor_.visit_state(v, scope);
  }

  static CompressedOptions validated(const CompressedOptions& o) {
    detail::require_option(detail::finite(o.error_decay) && o.error_decay > 0 && o.error_decay <= 1, "Compressed",
                           "error_decay", o.error_decay,
                           "must be in (0, 1] (1: error feedback p = d + e; < 1: SparseLoCo's e = beta e + d)");
    return o;
  }

  C compressor_;
  CompressedOptions options_;
  Vector<scalar_type> residual_;
};

/// Compressed(c, options), spelled as a function: `compress::compressed(TopK<float>({.k = 10}))`.
template <Compressor C>
Compressed<C> compressed(C compressor, CompressedOptions options = {}) {
  return Compressed<C>(std::move(compressor), options);
}

}  // namespace slowmo::compress
