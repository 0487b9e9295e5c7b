// slowmo/core/checkpoint.hpp — save and restore an optimizer's complete state, bit-exactly.
//
// Everything an optimizer or combinator visits (core/state.hpp) goes into the checkpoint:
// buffers, counters and scalars, nested optimizers included — base moments and step
// counts, SlowMo's u and x0, Lookahead's slow weights, Sgp's numerator, weight and round,
// LocalSgd's counters, and the step counts that position the learning-rate schedules. A
// run resumed from a checkpoint continues bit for bit as if it had not stopped.
//
// Format (version 2), one file per worker, host byte order:
//   "SLOWMOCK" | u32 version | u32 0x01020304 (byte order) | u32 sizeof(scalar) |
//   u64 n, n bytes of signature | u64 entries | entries | u64 FNV-1a of all preceding bytes
// The signature is "options:<structural options>|entries:<entries>": first every structural
// option the nest visits (visit_structure, core/state.hpp) as "path=type:value" ("amsgrad=b:true",
// "tau=i:12", "optimizer=s:Adam", "schedule=s:slowmo::schedule::Constant"), then every state
// entry with its kind and type ("base/exp_avg:accumulator:vector"), ';'-separated ('\', ';',
// '|', '=' inside names and strings are escaped with '\'). So a checkpoint loads only into an
// optimizer of the same composition *and* the same structural options (Adam's amsgrad, Sgd's
// momentum on/off and nesterov, the schedule's type, SlowMo's tau, LocalSgd's H, ...): those
// decide what the state is and means. Plain hyper-parameters that do not change the state's
// shape or meaning (lr, betas, eps, weight_decay, alpha, beta, ...) are not in the signature
// and may change when a run resumes. An entry is a u64 element count and the elements
// (vectors), or 8 bytes (counters and scalars).
//
// Saving writes a temporary file in the same directory (its name holds the process id and a
// per-process counter, and it is created exclusively, so concurrent saves never share one),
// flushes it to disk, renames it over the target and flushes the directory, so a crash during
// a save never leaves a torn checkpoint in place.
//
// Loading checks everything before touching the optimizer, and on error throws
// checkpoint_error naming the file (and the entry) and leaves the optimizer unchanged:
//  - the file: it opens and is not a directory; size, magic, version, byte order, checksum,
//    scalar type, every entry's bounds, no bytes left over;
//  - the signature: a differing structural option is named with both values; any other
//    difference is a different composition;
//  - the values, as a whole, so that a checkpoint with a valid checksum but inconsistent
//    contents can never make the next step read out of bounds: within one optimizer (entries
//    of the same scope) the buffers are either all empty (not started yet) or all of one size;
//    every non-empty buffer of the nest has the same size n (the parameters'); if the optimizer
//    already has state, n is its size; counters and step counts are in [0, 2^62]; scalars
//    (Sgp's push-sum weight) are finite.
#pragma once

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#define SLOWMO_CHECKPOINT_POSIX 1
#include <fcntl.h>
#include <unistd.h>
#elif defined(_WIN32)
#include <process.h>
#endif

#include "slowmo/core/error.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"

namespace slowmo {

/// A checkpoint could not be written or read; the message names the file and the problem.
class checkpoint_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail::ckpt {

inline constexpr char magic[8] = {'S', 'L', 'O', 'W', 'M', 'O', 'C', 'K'};
inline constexpr std::uint32_t version = 2;  // 2: structural options in the signature
inline constexpr std::uint32_t byte_order = 0x01020304;

inline std::uint64_t fnv1a(const unsigned char* p, std::size_t n) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

inline const char* kind_name(StateKind k) {
  switch (k) {
    case StateKind::accumulator: return "accumulator";
    case StateKind::anchor: return "anchor";
    case StateKind::counter: return "counter";
    case StateKind::progress: return "progress";
  }
  return "?";
}

template <class R>
constexpr bool is_counter = std::is_same_v<std::remove_cvref_t<R>, std::int64_t>;
template <class R>
constexpr bool is_scalar = std::is_floating_point_v<std::remove_cvref_t<R>>;

template <class R>
const char* type_name() {
  if constexpr (is_counter<R>) return "i64";
  else if constexpr (is_scalar<R>) return sizeof(std::remove_cvref_t<R>) == 8 ? "f64" : "f32";
  else return "vector";
}

// Signature text: names and string values are escaped so that the separators stay unambiguous.
inline void append_escaped(std::string& out, std::string_view s) {
  for (const char c : s) {
    if (c == '\\' || c == ';' || c == '|' || c == '=') out += '\\';
    out += c;
  }
}
inline std::string escaped(std::string_view s) {
  std::string out;
  append_escaped(out, s);
  return out;
}

template <class>
inline constexpr bool always_false = false;

/// A structural option's value as signature text: "b:true", "i:12", "f:0.5", "s:Adam".
template <class V>
std::string encode_option(const V& v) {
  using D = std::remove_cvref_t<V>;
  if constexpr (std::is_same_v<D, bool>) {
    return v ? "b:true" : "b:false";
  } else if constexpr (std::is_enum_v<D>) {
    return encode_option(static_cast<std::underlying_type_t<D>>(v));
  } else if constexpr (std::is_integral_v<D>) {
    if constexpr (std::is_signed_v<D>)
      return "i:" + std::to_string(static_cast<long long>(v));
    else
      return "i:" + std::to_string(static_cast<unsigned long long>(v));
  } else if constexpr (std::is_floating_point_v<D>) {
    char buf[64];
    const auto end = std::to_chars(buf, buf + sizeof buf, static_cast<double>(v)).ptr;  // shortest exact form
    return "f:" + std::string(buf, end);
  } else if constexpr (std::is_convertible_v<const V&, std::string_view>) {
    return "s:" + escaped(std::string_view(v));
  } else {
    static_assert(always_false<D>,
                  "slowmo: a structural option (visit_structure) is a bool, an integer, a floating-point number or a "
                  "string");
    return {};
  }
}

/// How an encoded value reads in a message: true, 12, 0.5, "Adam".
inline std::string shown(std::string_view encoded) {
  if (encoded.size() >= 2 && encoded[1] == ':') {
    const std::string_view v = encoded.substr(2);
    return encoded[0] == 's' ? detail::concat('"', v, '"') : std::string(v);
  }
  return std::string(encoded);
}

struct Option {
  std::string path;   // escaped
  std::string value;  // encoded
};

/// The structural options of a nest, in visit order (none for an optimizer without the hook).
template <class Opt>
std::vector<Option> structure_of(const Opt& opt) {
  std::vector<Option> out;
  slowmo::visit_structure(opt, [&](const StateKey& key, const auto& value) {
    out.push_back({escaped(key.path()), encode_option(value)});
  });
  return out;
}

/// Splits s at the separator `sep` where it is not escaped.
inline std::vector<std::string_view> split_unescaped(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  std::size_t begin = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == sep) {
      parts.push_back(s.substr(begin, i - begin));
      begin = i + 1;
    }
  }
  parts.push_back(s.substr(begin));
  return parts;
}

/// The structural options of a signature read from a file (nothing if it is malformed).
inline std::optional<std::vector<Option>> options_of(std::string_view sig) {
  const auto halves = split_unescaped(sig, '|');
  constexpr std::string_view head = "options:";
  if (halves.size() != 2 || halves[0].substr(0, head.size()) != head) return std::nullopt;
  std::vector<Option> out;
  const std::string_view body = halves[0].substr(head.size());
  if (body.empty()) return out;
  for (const std::string_view item : split_unescaped(body, ';')) {
    const auto kv = split_unescaped(item, '=');
    if (kv.size() != 2) return std::nullopt;
    out.push_back({std::string(kv[0]), std::string(kv[1])});
  }
  return out;
}

/// The largest counter a checkpoint may hold: far beyond any run, and far enough from the
/// int64 limit that the steps after a resume never overflow.
inline constexpr std::int64_t max_counter = std::int64_t(1) << 62;

inline int process_id() {
#if defined(SLOWMO_CHECKPOINT_POSIX)
  return static_cast<int>(::getpid());
#elif defined(_WIN32)
  return _getpid();
#else
  return 0;
#endif
}

/// "<path>.tmp.<pid>.<n>", n counting this process's attempts: unique among live processes and
/// threads; the file is then created exclusively, so a stale file of that name is skipped.
inline std::filesystem::path temporary_path(const std::filesystem::path& path) {
  static std::atomic<std::uint64_t> counter{0};
  std::filesystem::path tmp = path;
  tmp += detail::concat(".tmp.", process_id(), ".", counter.fetch_add(1, std::memory_order_relaxed));
  return tmp;
}

inline std::string last_error() { return std::strerror(errno); }

/// Writes bytes to a fresh temporary file next to `path`, flushes it to disk, renames it over
/// `path` and flushes the directory. On failure, removes the temporary file and throws.
inline void write_atomically(const std::filesystem::path& path, const std::vector<unsigned char>& bytes) {
  namespace fs = std::filesystem;
  const std::string where = path.string();
  fs::path tmp;
  auto fail = [&](const std::string& what) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw checkpoint_error(detail::concat(where, ": ", what));
  };
#if defined(SLOWMO_CHECKPOINT_POSIX)
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    tmp = temporary_path(path);
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt == 99))
      throw checkpoint_error(detail::concat(where, ": cannot create the temporary file ", tmp.string(), ": ",
                                            last_error()));
  }
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ::ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = last_error();
      ::close(fd);
      fail(detail::concat("writing ", bytes.size(), " bytes to ", tmp.string(), " failed: ", why));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const std::string why = last_error();
    ::close(fd);
    fail(detail::concat("flushing ", tmp.string(), " to disk failed: ", why));
  }
  if (::close(fd) != 0) fail(detail::concat("closing ", tmp.string(), " failed: ", last_error()));
#else
  std::FILE* f = nullptr;
  for (int attempt = 0; f == nullptr; ++attempt) {
    tmp = temporary_path(path);
    f = std::fopen(tmp.string().c_str(), "wbx");  // exclusive
    if (f == nullptr && attempt == 99)
      throw checkpoint_error(detail::concat(where, ": cannot create the temporary file ", tmp.string()));
  }
  const bool written = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() && std::fflush(f) == 0;
  if (std::fclose(f) != 0 || !written) fail(detail::concat("writing ", bytes.size(), " bytes failed"));
#endif
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fail(detail::concat("cannot rename ", tmp.string(), " into place: ", ec.message()));
#if defined(SLOWMO_CHECKPOINT_POSIX)
  // The rename is durable only once the directory is on disk too.
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const bool synced = dfd >= 0 && (::fsync(dfd) == 0 || errno == EINVAL);  // EINVAL: fs without directory sync
  const std::string why = synced ? std::string() : last_error();
  if (dfd >= 0) ::close(dfd);
  if (!synced)
    throw checkpoint_error(detail::concat(where, ": written, but flushing its directory ", dir.string(),
                                          " to disk failed (", why, "): it may not survive a crash"));
#endif
}

/// The bytes of the file at `path`; checkpoint_error (naming the path) if it cannot be read.
inline std::vector<unsigned char> read_file(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  const std::string where = path.string();
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec) throw checkpoint_error(detail::concat(where, ": cannot open: ", ec.message()));
  if (fs::is_directory(st))
    throw checkpoint_error(detail::concat(where, ": cannot open: it is a directory, not a checkpoint file"));
  std::FILE* f = std::fopen(path.string().c_str(), "rb");
  if (f == nullptr) throw checkpoint_error(detail::concat(where, ": cannot open: ", last_error()));
  std::vector<unsigned char> bytes;
  unsigned char chunk[1 << 14];
  std::size_t n = 0;
  while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) bytes.insert(bytes.end(), chunk, chunk + n);
  const bool failed = std::ferror(f) != 0;
  const std::string why = failed ? last_error() : std::string();
  std::fclose(f);
  if (failed) throw checkpoint_error(detail::concat(where, ": reading failed: ", why));
  return bytes;
}

class Writer {
 public:
  template <class V>
  void put(const V& v) {
    const auto* p = reinterpret_cast<const unsigned char*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(V));
  }
  void put(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    bytes.insert(bytes.end(), p, p + n);
  }
  std::vector<unsigned char> bytes;
};

class Reader {
 public:
  Reader(std::span<const unsigned char> b, const std::string& where) : b_(b), where_(where) {}
  template <class V>
  V get(const char* what) {
    V v;
    std::memcpy(&v, take(sizeof(V), what), sizeof(V));
    return v;
  }
  const unsigned char* take(std::size_t n, const std::string& what) {
    if (n > b_.size() - pos_)
      throw checkpoint_error(slowmo::detail::concat(where_, ": truncated: ", b_.size(), " bytes end inside ", what, " (", n,
                                    " more bytes needed at offset ", pos_, ")"));
    const unsigned char* p = b_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::size_t position() const { return pos_; }
  std::size_t left() const { return b_.size() - pos_; }

 private:
  std::span<const unsigned char> b_;
  std::string where_;
  std::size_t pos_ = 0;
};

}  // namespace detail::ckpt

/// "options:path=type:value;...|entries:path:kind:type;...": the structural options and every
/// state entry, in visit order: what a checkpoint of this optimizer contains and what it can be
/// loaded into.
template <class Opt>
std::string state_signature(const Opt& opt) {
  std::string sig = "options:";
  bool first = true;
  for (const detail::ckpt::Option& o : detail::ckpt::structure_of(opt)) {
    sig += detail::concat(first ? "" : ";", o.path, "=", o.value);
    first = false;
  }
  sig += "|entries:";
  first = true;
  opt.visit_state([&](const StateKey& key, const auto& ref, StateKind kind) {
    using R = decltype(ref);
    sig += detail::concat(first ? "" : ";", detail::ckpt::escaped(key.path()), ":", detail::ckpt::kind_name(kind), ":",
                          detail::ckpt::type_name<R>());
    first = false;
  });
  return sig;
}

/// The checkpoint of `opt` as bytes (what save_checkpoint writes).
template <class Opt>
std::vector<unsigned char> checkpoint_bytes(const Opt& opt) {
  using T = typename Opt::scalar_type;
  // An optimizer whose state is not a checkpoint at every step (an asynchronous one: only
  // after drain) says so by throwing from check_checkpoint(); nothing is written then.
  if constexpr (requires { opt.check_checkpoint(); }) opt.check_checkpoint();
  detail::ckpt::Writer w;
  w.put(detail::ckpt::magic, sizeof detail::ckpt::magic);
  w.put(detail::ckpt::version);
  w.put(detail::ckpt::byte_order);
  w.put(static_cast<std::uint32_t>(sizeof(T)));
  const std::string sig = state_signature(opt);
  w.put(static_cast<std::uint64_t>(sig.size()));
  w.put(sig.data(), sig.size());
  std::uint64_t entries = 0;
  opt.visit_state([&](const StateKey&, const auto&, StateKind) { ++entries; });
  w.put(entries);
  opt.visit_state([&](const StateKey&, const auto& ref, StateKind) {
    using R = decltype(ref);
    if constexpr (detail::ckpt::is_counter<R> || detail::ckpt::is_scalar<R>) {
      w.put(ref);
    } else {
      static_assert(std::is_same_v<std::remove_cvref_t<R>, Vector<std::remove_cvref_t<decltype(*ref.data())>>>,
                    "slowmo: checkpoints hold host (Eigen) vectors; copy device state to the host first");
      w.put(static_cast<std::uint64_t>(ref.size()));
      w.put(ref.data(), static_cast<std::size_t>(ref.size()) * sizeof(*ref.data()));
    }
  });
  w.put(detail::ckpt::fnv1a(w.bytes.data(), w.bytes.size()));
  return std::move(w.bytes);
}

/// Restores `opt` from checkpoint bytes. Validates everything first; on any problem throws
/// checkpoint_error (naming `where`) and leaves `opt` unchanged.
template <class Opt>
void restore_checkpoint(Opt& opt, std::span<const unsigned char> bytes, const std::string& where = "checkpoint") {
  using T = typename Opt::scalar_type;
  namespace ck = detail::ckpt;
  ck::Reader r(bytes, where);
  if (std::memcmp(r.take(sizeof ck::magic, "the magic number"), ck::magic, sizeof ck::magic) != 0)
    throw checkpoint_error(detail::concat(where, ": not a slowmo checkpoint (bad magic number)"));
  if (const auto v = r.get<std::uint32_t>("the format version"); v != ck::version)
    throw checkpoint_error(detail::concat(where, ": format version ", v, "; this build reads version ", ck::version));
  if (r.get<std::uint32_t>("the byte-order mark") != ck::byte_order)
    throw checkpoint_error(detail::concat(where, ": written on a machine of the other byte order"));
  // The checksum covers everything before it: check it before trusting any length field.
  if (bytes.size() < r.position() + sizeof(std::uint64_t))
    throw checkpoint_error(detail::concat(where, ": truncated: ", bytes.size(), " bytes cannot hold a checksum"));
  std::uint64_t stored = 0;
  std::memcpy(&stored, bytes.data() + bytes.size() - sizeof stored, sizeof stored);
  if (stored != ck::fnv1a(bytes.data(), bytes.size() - sizeof stored))
    throw checkpoint_error(detail::concat(where, ": checksum mismatch: the file is corrupted or truncated"));
  if (const auto s = r.get<std::uint32_t>("the scalar size"); s != sizeof(T))
    throw checkpoint_error(detail::concat(where, ": written for ", s == 4 ? "float" : s == 8 ? "double" : "unknown",
                                  " parameters; this optimizer uses ", sizeof(T) == 4 ? "float" : "double"));
  const auto sig_len = r.get<std::uint64_t>("the signature length");
  if (sig_len > r.left()) throw checkpoint_error(detail::concat(where, ": truncated: signature of ", sig_len, " bytes"));
  const std::string sig(reinterpret_cast<const char*>(r.take(std::size_t(sig_len), "the signature")),
                        std::size_t(sig_len));
  if (const std::string expected = state_signature(opt); sig != expected) {
    // Same options in the same places but a different value: name the first one.
    const std::vector<ck::Option> ours = ck::structure_of(opt);
    if (const auto theirs = ck::options_of(sig); theirs && theirs->size() == ours.size()) {
      bool same_paths = true;
      for (std::size_t i = 0; i < ours.size(); ++i) same_paths = same_paths && (*theirs)[i].path == ours[i].path;
      if (same_paths)
        for (std::size_t i = 0; i < ours.size(); ++i)
          if ((*theirs)[i].value != ours[i].value)
            throw checkpoint_error(detail::concat(
                where, ": structural option '", ours[i].path, "' differs: the checkpoint has ",
                ck::shown((*theirs)[i].value), ", this optimizer has ", ck::shown(ours[i].value),
                " (a structural option decides what the state is and means, so it cannot change on resume; plain "
                "hyper-parameters such as lr can)"));
    }
    throw checkpoint_error(detail::concat(where, ": written by a different optimizer composition:\n  checkpoint: ", sig,
                                          "\n  optimizer:  ", expected));
  }
  const auto entries = r.get<std::uint64_t>("the entry count");

  // The size of this optimizer's state (0 if it has none yet).
  std::int64_t current = 0;
  std::as_const(opt).visit_state([&](const StateKey&, const auto& ref, StateKind) {
    using R = decltype(ref);
    if constexpr (!ck::is_counter<R> && !ck::is_scalar<R>)
      if (current == 0) current = static_cast<std::int64_t>(ref.size());
  });

  // Stage every entry (copies); validate them all before anything changes.
  std::vector<Vector<T>> vectors;
  std::vector<std::int64_t> counters;
  std::vector<double> scalars;
  struct Seen {
    std::string path, scope;
    std::uint64_t size;
  };
  std::vector<Seen> buffers;  // the vector entries, in order
  std::uint64_t seen = 0;
  opt.visit_state([&](const StateKey& key, const auto& ref, StateKind) {
    using R = decltype(ref);
    ++seen;
    const std::string what = detail::concat("entry '", key.path(), "'");
    if constexpr (ck::is_counter<R>) {
      const auto c = r.get<std::int64_t>(what.c_str());
      if (c < 0 || c > ck::max_counter)
        throw checkpoint_error(detail::concat(where, ": ", what, " is ", c,
                                              "; a counter or step count must be in [0, 2^62]"));
      counters.push_back(c);
    } else if constexpr (ck::is_scalar<R>) {
      using S = std::remove_cvref_t<R>;
      const auto v = r.get<S>(what.c_str());
      if (!std::isfinite(v))
        throw checkpoint_error(detail::concat(where, ": ", what, " is ", v, "; a scalar entry must be finite"));
      scalars.push_back(double(v));
    } else {
      const auto n = r.get<std::uint64_t>(what.c_str());
      if (n > r.left() / sizeof(T))
        throw checkpoint_error(detail::concat(where, ": truncated: ", what, " claims ", n, " elements"));
      Vector<T> v(static_cast<Eigen::Index>(n));
      if (n > 0) std::memcpy(v.data(), r.take(std::size_t(n) * sizeof(T), what), std::size_t(n) * sizeof(T));
      vectors.push_back(std::move(v));
      buffers.push_back({key.path(), StateKey{"", key.scope}.path(), n});  // scope: "base/base/"
    }
  });
  if (seen != entries)
    throw checkpoint_error(detail::concat(where, ": ", entries, " entries for an optimizer with ", seen));
  if (r.left() != sizeof(std::uint64_t))
    throw checkpoint_error(detail::concat(where, ": ", r.left() - sizeof(std::uint64_t), " unexpected bytes after the entries"));

  // Sizes, against each other and against this optimizer: a step trusts them.
  for (std::size_t i = 0; i < buffers.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (buffers[j].scope == buffers[i].scope) {  // the first buffer of the same optimizer
        if (buffers[j].size != buffers[i].size)
          throw checkpoint_error(detail::concat(
              where, ": entry '", buffers[i].path, "' has ", buffers[i].size, " elements but '", buffers[j].path,
              "' of the same optimizer has ", buffers[j].size,
              " (an optimizer's buffers are either all empty, before its first step, or all of one size)"));
        break;
      }
  const Seen* sized = nullptr;  // the first non-empty buffer
  for (const Seen& b : buffers) {
    if (b.size == 0) continue;
    if (sized == nullptr) {
      sized = &b;
    } else if (b.size != sized->size) {
      throw checkpoint_error(detail::concat(where, ": entry '", b.path, "' has ", b.size, " elements but '", sized->path,
                                            "' has ", sized->size,
                                            " (every state buffer of a nest has the size of the parameters)"));
    }
  }
  if (sized != nullptr && current != 0 && std::int64_t(sized->size) != current)
    throw checkpoint_error(detail::concat(where, ": entry '", sized->path, "' has ", sized->size,
                                          " elements; this optimizer's has ", current, " (a different parameter size)"));

  // Commit: nothing below can fail.
  std::size_t iv = 0, ic = 0, is = 0;
  opt.visit_state([&](const StateKey&, auto& ref, StateKind) {
    using R = decltype(ref);
    if constexpr (ck::is_counter<R>)
      ref = counters[ic++];
    else if constexpr (ck::is_scalar<R>)
      ref = static_cast<std::remove_cvref_t<R>>(scalars[is++]);
    else
      ref.swap(vectors[iv++]);
  });
  // An optimizer with more to restore than its state (an asynchronous one hosts its server
  // again: collectively) does it in on_restored().
  if constexpr (requires { opt.on_restored(); }) opt.on_restored();
}

/// Writes opt's checkpoint to `path` atomically: a temporary file of a name no other process
/// or thread uses, flushed to disk, renamed over `path`; then the directory is flushed.
template <class Opt>
void save_checkpoint(const Opt& opt, const std::filesystem::path& path) {
  detail::ckpt::write_atomically(path, checkpoint_bytes(opt));
}

/// Restores opt from the checkpoint at `path` (strong guarantee: on error opt is unchanged).
/// Every failure, a missing or unreadable file or a directory included, is a checkpoint_error
/// naming the path.
template <class Opt>
void load_checkpoint(Opt& opt, const std::filesystem::path& path) {
  restore_checkpoint(opt, detail::ckpt::read_file(path), path.string());
}

}  // namespace slowmo
