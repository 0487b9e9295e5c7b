// slowmo/core/error.hpp — the exceptions the library throws, and the helpers that build
// messages naming what was wrong, the offending value and what to do about it.
#pragma once

#include <charconv>
#include <cstdint>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace slowmo {

/// A hyper-parameter (an option field) has an invalid value. The message names the
/// owner (e.g. "Adam"), the field and the value.
class invalid_option : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// Buffers passed to a call disagree in size (or are empty, or changed size between
/// steps). The message names both sizes.
class size_mismatch : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A call came in the wrong order: a distributed combinator stepped before start(x), or
/// start(x) came after the first step. The message says what to call instead.
class usage_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

namespace detail {

/// Writes floating-point values in their shortest round-trip form (0.1, not
/// 0.10000000000000001), everything else as operator<< does.
template <class Part>
void write_part(std::ostringstream& os, const Part& part) {
  if constexpr (std::is_floating_point_v<Part>) {
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof buf, part);
    os << std::string_view(buf, static_cast<std::size_t>(res.ptr - buf));
  } else {
    os << part;
  }
}

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (write_part(os, parts), ...);
  return os.str();
}

/// Throws invalid_option("slowmo::<owner>: option '<field>' = <value> is invalid: <why>")
/// unless `ok` holds.
template <class Value>
void require_option(bool ok, std::string_view owner, std::string_view field, const Value& value,
                    std::string_view why) {
  if (!ok)
    throw invalid_option(concat("slowmo::", owner, ": option '", field, "' = ", value,
                                " is invalid: ", why));
}

/// The readable name of a type, e.g. "slowmo::schedule::Cosine" (for checkpoint signatures
/// and messages), from the compiler's own spelling of a function signature.
template <class T>
std::string_view type_name() {
#if defined(__clang__) || defined(__GNUC__)
  std::string_view f = __PRETTY_FUNCTION__;  // "... type_name() [with T = X; ...]" or "[T = X]"
  const auto open = f.find("T = ");
  if (open == std::string_view::npos) return f;
  f.remove_prefix(open + 4);
  return f.substr(0, f.find_first_of(";]"));
#else
  return __FUNCSIG__;
#endif
}

template <class T>
bool finite(T v) {
  return std::isfinite(static_cast<double>(v));
}

/// A distributed combinator steps only after start(x): otherwise the first gradient would
/// have been taken at this worker's own point instead of the common one.
inline void require_started(std::string_view owner, bool started) {
  if (!started)
    throw usage_error(concat("slowmo::", owner,
                             "::step: not started: call opt.start(x) once before computing the first gradient, so "
                             "that every worker takes it at the common starting point (worker 0's parameters)"));
}

/// start(x) after the first step would overwrite the progress of a running (or resumed) run.
inline void require_not_stepped(std::string_view owner, std::int64_t steps) {
  if (steps > 0)
    throw usage_error(concat("slowmo::", owner, "::start: called after ", steps,
                             " steps; start once, before the first step (a run resumed with load_checkpoint is "
                             "started already)"));
}


}  // namespace detail
}  // namespace slowmo

namespace slowmo {

/// A communication operation failed: mismatched buffers or roots across workers, a peer
/// out of range, a deadlock the backend detected. The message names the worker(s).
class comm_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Thrown by a backend's run(...) when a worker's function failed: carries the rank of
/// the worker whose failure came first (lowest rank among simultaneous failures), with the
/// original exception nested (std::rethrow_if_nested reaches it).
class worker_error : public std::runtime_error {
 public:
  worker_error(int rank, const std::string& what)
      : std::runtime_error(detail::concat("worker ", rank, " failed: ", what)), rank_(rank) {}
  int rank() const noexcept { return rank_; }

 private:
  int rank_;
};

}  // namespace slowmo
