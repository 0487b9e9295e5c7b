// slowmo/optim/elementwise.hpp — the skeleton of every element-wise optimizer.
//
// An element-wise optimizer is four things, written as a small "method" type M:
//
//   struct M {
//     using options_type = MOptions;          // a plain aggregate with `lr` and `non_finite`
//     static constexpr const char* name = "M"; // names it in messages and checkpoints
//     static constexpr std::array buffers = {BufferSpec<MOptions>{"exp_avg"}, ...};
//     static void validate(const MOptions& o, OptionCheck check);   // lr is checked for it
//     template <class T> Rule<T> rule(const MOptions& o, double lr, std::int64_t t);
//     // optional:
//     static constexpr CounterSpec<MOptions> counter = {"m_steps"};
//     template <class F> static void structure(const MOptions& o, F&& f);  // f(name, value)
//   };
//
// `rule` turns the options, this step's learning rate (lr times the schedule) and the
// counter t into the per-element rule (optim/rules.hpp), whose call operator takes
// (p, g, buffers...) in the order of `buffers`; a buffer the options leave out (its
// `when` is false) arrives as rules::Absent. Elementwise<M, T, S, Space> adds the rest:
// allocation on the first step (then never again), size checks, the NonFinite policy,
// the schedule, state visiting, the checkpoint signature, and the CPU and CUDA drivers
// (Space::for_each: one pass over memory, SIMD on the CPU, one fused kernel on the GPU).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <utility>

#include "slowmo/core/concepts.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/non_finite.hpp"
#include "slowmo/core/schedule.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/optim/rules.hpp"

namespace slowmo {

/// One state buffer: its entry name, how it behaves on a reset, whether the options call
/// for it (null: always) and its initial value (null: zero; a non-zero one needs the
/// counter). A buffer is either empty (before the first step) or of the parameters' size.
template <class Options>
struct BufferSpec {
  const char* name;
  StateKind kind = StateKind::accumulator;
  bool (*when)(const Options&) = nullptr;
  double (*init)(const Options&) = nullptr;
};

/// The counter: steps since the state was (re)initialised, this one included, skipped
/// steps too (so it stays equal on every worker); `rule` receives it as t (1-based). It
/// exists (and is visited) when `when` holds (null: always). A reset zeroes it, and the
/// next step then refills the buffers that start from a non-zero value.
template <class Options>
struct CounterSpec {
  const char* name;
  bool (*when)(const Options&) = nullptr;
};

/// What `validate` is handed: check(ok, field, value, why) throws invalid_option naming the
/// optimizer, the field and the value unless ok; the helpers state the usual ranges.
struct OptionCheck {
  std::string_view owner;

  template <class V>
  void operator()(bool ok, std::string_view field, const V& value, std::string_view why) const {
    detail::require_option(ok, owner, field, value, why);
  }
  void non_negative(std::string_view field, double v) const {
    (*this)(detail::finite(v) && v >= 0, field, v, "must be finite and >= 0");
  }
  void in_unit_interval(std::string_view field, double v) const {  // [0, 1)
    (*this)(detail::finite(v) && v >= 0 && v < 1, field, v, "must be in [0, 1)");
  }
  void in_closed_unit_interval(std::string_view field, double v) const {  // [0, 1]
    (*this)(detail::finite(v) && v >= 0 && v <= 1, field, v, "must be in [0, 1]");
  }
};

namespace detail {

constexpr std::size_t popcount(std::uint32_t m) { return m == 0 ? 0 : (m & 1u) + popcount(m >> 1); }

template <std::size_t K, class A, class... R>
SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE constexpr auto& nth(A& a, R&... r) {
  if constexpr (K == 0)
    return a;
  else
    return nth<K - 1>(r...);
}

/// The method's rule as the driver calls it, with only the buffers that exist (bit i of
/// Mask set for buffer i); the others are passed to the rule as rules::Absent.
template <class Rule, std::uint32_t Mask, std::size_t N>
struct WithAbsent {
  Rule rule;

  template <class V, class... B>
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE void operator()(V& p, const V& g, B&... present) const {
    call(std::make_index_sequence<N>{}, p, g, present...);
  }

 private:
  template <std::size_t... I, class V, class... B>
  SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE void call(std::index_sequence<I...>, V& p, const V& g,
                                                    B&... present) const {
    rules::Absent none;
    rule(p, g, slot<I>(none, present...)...);
  }
  template <std::size_t I, class... B>
  static SLOWMO_HOST_DEVICE SLOWMO_ALWAYS_INLINE auto& slot(rules::Absent& none, B&... present) {
    if constexpr (((Mask >> I) & 1u) != 0)
      return nth<popcount(Mask & ((1u << I) - 1u))>(present...);
    else
      return none;
  }
};

template <class M>
concept HasCounter = requires { M::counter.name; };
template <class M>
concept HasStructure = requires(const typename M::options_type& o) {
  M::structure(o, [](std::string_view, const auto&) {});
};

}  // namespace detail

/// The element-wise optimizer defined by method M (see the top of this file), on scalars T,
/// with schedule S, in memory space Space. Per step:
///   - sizes checked (x, g and the state agree); the gradient is scanned for NaN/Inf by one
///     reduction in Space (options.non_finite: raise, or skip — counters and schedule still
///     advance; propagate: no scan);
///   - lr = options.lr * schedule(steps), checked before anything changes;
///   - buffers allocated on the first step (the only allocation), refilled after a reset;
///   - the counter advances, and one pass applies M's rule to every element.
template <class M, Real T, Schedule S = schedule::Constant, MemorySpace Space = Host>
class Elementwise {
 public:
  using scalar_type = T;
  using method_type = M;
  using options_type = typename M::options_type;
  using schedule_type = S;
  using space_type = Space;
  using vector_type = typename Space::template vector<T>;
  using ref_type = typename Space::template ref<T>;
  using const_ref_type = typename Space::template const_ref<T>;
  static constexpr const char* name = M::name;
  static constexpr std::size_t buffer_count = M::buffers.size();
  static_assert(buffer_count <= 8, "slowmo::Elementwise: at most 8 state buffers");
  static_assert(HasReduction<Space>,
                "slowmo::Elementwise: this memory space has no `reduce(n, op, p)`: NonFinite::raise and skip scan "
                "every gradient with it, and a space must never ignore them silently; give the space a reduction "
                "(core/space.hpp)");
  static_assert(detail::HasCounter<M> || [] {
    for (const auto& b : M::buffers)
      if (b.init != nullptr) return false;
    return true;
  }(), "slowmo::Elementwise: a buffer with a non-zero initial value needs a counter (the next step refills it "
       "after a reset, which zeroes it)");

  /// Default options: `Opt<T>()`, `Opt<T>{}` and `Opt<T>({})` (see detail::DefaultOptions).
  explicit Elementwise(detail::DefaultOptions = {}) : Elementwise(options_type{}, S{}) {}
  explicit Elementwise(options_type options, S schedule = {})
      : options_(validated(options)), clock_(name, options.lr, std::move(schedule)) {}

  /// One step: updates x in place from the gradient g (same size as x).
  void step(ref_type x, const_ref_type g) {
    detail::check_step_sizes(name, x.size(), g.size(), state_size());
    // The NaN/Inf scan: one reduction in the optimizer's space (host or device).
    if (detail::reject_gradient_in<Space>(options_.non_finite, name, g.data(), g.size(), clock_.steps() + 1)) {
      // A skipped step still counts, for every counter: the schedule stays aligned and
      // the counters (bias corrections) stay equal on every worker, so that
      // OnSync::average never mixes state of different ages.
      if (has_counter()) ++counter_;
      clock_.tick();
      return;
    }
    const double lr = clock_.current();  // checked before anything changes
    const bool initial = has_counter() && counter_ == 0;  // fresh, or reset since
    for (std::size_t i = 0; i < buffer_count; ++i) {
      if (!present(i)) continue;
      const bool fresh = buffers_[i].size() != x.size();
      if (fresh) buffers_[i].setZero(x.size());  // the state's only allocation
      const double v = M::buffers[i].init ? M::buffers[i].init(options_) : 0.0;
      if (v != 0.0 && (fresh || initial)) Space::for_each(x.size(), rules::Fill<T>{T(v)}, buffers_[i].data());
    }
    if (has_counter()) ++counter_;
    apply(method_.template rule<T>(options_, lr, counter_), x.data(), g.data(), x.size());
    clock_.tick();
  }

  /// The learning rate of the last step (before any step: that of the first).
  T last_lr() const { return T(clock_.last_lr()); }
  /// The learning rate the next step will use (checked: throws for a bad schedule value).
  T next_lr() const { return T(clock_.current()); }
  std::int64_t steps() const { return clock_.steps(); }
  const options_type& options() const { return options_; }
  const S& schedule() const { return clock_.schedule(); }
  /// Buffer I of M::buffers: empty until the first step, and for good when the options
  /// leave it out.
  template <std::size_t I>
  const vector_type& buffer() const {
    return buffers_[I];
  }

  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) {
    visit(*this, v, scope);
  }
  template <class V>
  void visit_state(V&& v, const StateScope* scope = nullptr) const {
    visit(*this, v, scope);
  }

  /// Structural: the method, its own structural options (what decides its state) and the
  /// schedule's type (what the step count means).
  template <class F>
  void visit_structure(F&& f, const StateScope* scope = nullptr) const {
    f(StateKey{"optimizer", scope}, name);
    if constexpr (detail::HasStructure<M>)
      M::structure(options_, [&](std::string_view key, const auto& value) { f(StateKey{key, scope}, value); });
    f(StateKey{"schedule", scope}, detail::type_name<S>());
  }

 private:
  bool present(std::size_t i) const { return M::buffers[i].when == nullptr || M::buffers[i].when(options_); }
  bool has_counter() const {
    if constexpr (detail::HasCounter<M>)
      return M::counter.when == nullptr || M::counter.when(options_);
    else
      return false;
  }
  Eigen::Index state_size() const {
    for (std::size_t i = 0; i < buffer_count; ++i)
      if (present(i) && buffers_[i].size() > 0) return buffers_[i].size();
    return -1;
  }
  std::uint32_t mask() const {
    std::uint32_t m = 0;
    for (std::size_t i = 0; i < buffer_count; ++i)
      if (present(i)) m |= 1u << i;
    return m;
  }

  /// The buffers the options always call for: bits every possible mask has.
  static constexpr std::uint32_t always = [] {
    std::uint32_t m = 0;
    for (std::size_t i = 0; i < buffer_count; ++i)
      if (M::buffers[i].when == nullptr) m |= 1u << i;
    return m;
  }();

  /// One instantiation of the driver per set of present buffers that can occur (2^k for k
  /// optional buffers); the run-time mask picks it.
  template <class Rule>
  void apply(const Rule& rule, T* x, const T* g, Eigen::Index n) {
    const std::uint32_t m = mask();
    [&]<std::uint32_t... K>(std::integer_sequence<std::uint32_t, K...>) {
      (void)(run_if<K>(m, rule, x, g, n) || ...);
    }(std::make_integer_sequence<std::uint32_t, (1u << buffer_count)>{});
  }
  template <std::uint32_t K, class Rule>
  bool run_if(std::uint32_t m, const Rule& rule, T* x, const T* g, Eigen::Index n) {
    if constexpr ((K & always) != always) {
      return false;
    } else {
      if (m != K) return false;
      constexpr auto slots = [] {
        std::array<std::size_t, detail::popcount(K)> s{};
        std::size_t j = 0;
        for (std::size_t i = 0; i < buffer_count; ++i)
          if ((K >> i) & 1u) s[j++] = i;
        return s;
      }();
      [&]<std::size_t... J>(std::index_sequence<J...>) {
        Space::for_each(n, detail::WithAbsent<Rule, K, buffer_count>{rule}, x, g, buffers_[slots[J]].data()...);
      }(std::make_index_sequence<slots.size()>{});
      return true;
    }
  }

  // Buffers the options leave out are not visited: an entry is either empty (before the
  // first step) or of the parameters' size, never structurally absent.
  template <class Self, class V>
  static void visit(Self& self, V& v, const StateScope* scope) {
    for (std::size_t i = 0; i < buffer_count; ++i)
      if (self.present(i)) v(StateKey{M::buffers[i].name, scope}, self.buffers_[i], M::buffers[i].kind);
    if constexpr (detail::HasCounter<M>)
      if (self.has_counter()) v(StateKey{M::counter.name, scope}, self.counter_, StateKind::counter);
    v(StateKey{"steps", scope}, self.clock_.steps_ref(), StateKind::progress);
  }

  static options_type validated(const options_type& o) {
    M::validate(o, OptionCheck{name});
    return o;
  }

  options_type options_;
  detail::LrClock<S> clock_;
  M method_{};  // may cache what is a function of (options, t) alone (NAdam's product of mu)
  std::array<vector_type, buffer_count> buffers_{};
  std::int64_t counter_ = 0;
};

}  // namespace slowmo
