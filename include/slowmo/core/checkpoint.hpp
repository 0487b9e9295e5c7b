// slowmo/core/checkpoint.hpp — save and restore an optimizer's complete state, bit-exactly.
//
// Everything an optimizer or combinator visits (core/state.hpp) goes into the checkpoint:
// buffers, counters and scalars, nested optimizers included — base moments and step
// counts, SlowMo's u and x0, Lookahead's slow weights, Sgp's numerator, weight and round,
// LocalSgd's counters, and the step counts that position the learning-rate schedules. A
// run resumed from a checkpoint continues bit for bit as if it had not stopped.
//
// Format (version 1), one file per worker, host byte order:
//   "SLOWMOCK" | u32 version | u32 0x01020304 (byte order) | u32 sizeof(scalar) |
//   u64 n, n bytes of signature | u64 entries | entries | u64 FNV-1a of all preceding bytes
// The signature names every entry with its kind and type ("base/exp_avg:accumulator:vector;
// ..."), so a checkpoint only loads into an optimizer of the same composition. An entry is a
// u64 element count and the elements (vectors), or 8 bytes (counters and scalars).
//
// Saving writes a temporary file in the same directory, flushes it to disk and renames it
// over the target, so a crash during a save never leaves a torn checkpoint in place.
// Loading checks everything (size, magic, version, checksum, scalar type, signature, every
// entry's bounds and sizes) before touching the optimizer: on error it throws
// checkpoint_error and the optimizer is unchanged.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
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
inline constexpr std::uint32_t version = 1;
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

/// "path:kind:type;..." for every state entry, in visit order: what a checkpoint of this
/// optimizer contains and what it can be loaded into.
template <class Opt>
std::string state_signature(const Opt& opt) {
  std::string sig;
  opt.visit_state([&](const StateKey& key, const auto& ref, StateKind kind) {
    using R = decltype(ref);
    sig += detail::concat(sig.empty() ? "" : ";", key.path(), ":", detail::ckpt::kind_name(kind), ":",
                  detail::ckpt::type_name<R>());
  });
  return sig;
}

/// The checkpoint of `opt` as bytes (what save_checkpoint writes).
template <class Opt>
std::vector<unsigned char> checkpoint_bytes(const Opt& opt) {
  using T = typename Opt::scalar_type;
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
  if (const std::string expected = state_signature(opt); sig != expected)
    throw checkpoint_error(detail::concat(where, ": written by a different optimizer composition:\n  checkpoint: ", sig,
                                  "\n  optimizer:  ", expected));
  const auto entries = r.get<std::uint64_t>("the entry count");

  // Stage every entry (copies), checking sizes against the optimizer's current state.
  std::vector<Vector<T>> vectors;
  std::vector<std::int64_t> counters;
  std::vector<double> scalars;
  std::uint64_t seen = 0;
  opt.visit_state([&](const StateKey& key, const auto& ref, StateKind) {
    using R = decltype(ref);
    ++seen;
    const std::string what = detail::concat("entry '", key.path(), "'");
    if constexpr (ck::is_counter<R>) {
      counters.push_back(r.get<std::int64_t>(what.c_str()));
    } else if constexpr (ck::is_scalar<R>) {
      using S = std::remove_cvref_t<R>;
      scalars.push_back(double(r.get<S>(what.c_str())));
    } else {
      const auto n = r.get<std::uint64_t>(what.c_str());
      if (n > r.left() / sizeof(T))
        throw checkpoint_error(detail::concat(where, ": truncated: ", what, " claims ", n, " elements"));
      if (ref.size() != 0 && std::uint64_t(ref.size()) != n)
        throw checkpoint_error(detail::concat(where, ": ", what, " has ", n, " elements; this optimizer's has ", ref.size(),
                                      " (a different parameter size)"));
      Vector<T> v(static_cast<Eigen::Index>(n));
      if (n > 0) std::memcpy(v.data(), r.take(std::size_t(n) * sizeof(T), what), std::size_t(n) * sizeof(T));
      vectors.push_back(std::move(v));
    }
  });
  if (seen != entries)
    throw checkpoint_error(detail::concat(where, ": ", entries, " entries for an optimizer with ", seen));
  if (r.left() != sizeof(std::uint64_t))
    throw checkpoint_error(detail::concat(where, ": ", r.left() - sizeof(std::uint64_t), " unexpected bytes after the entries"));

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
}

/// Writes opt's checkpoint to `path` atomically (temporary file, flush to disk, rename).
template <class Opt>
void save_checkpoint(const Opt& opt, const std::filesystem::path& path) {
  const std::vector<unsigned char> bytes = checkpoint_bytes(opt);
  std::filesystem::path tmp = path;
  tmp += detail::concat(".tmp.", std::uintptr_t(&opt));
  {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw checkpoint_error(detail::concat(path.string(), ": cannot create ", tmp.string()));
    const bool written = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() && std::fflush(f) == 0;
#if defined(__unix__) || defined(__APPLE__)
    const bool synced = written && ::fsync(::fileno(f)) == 0;
#else
    const bool synced = written;
#endif
    if (std::fclose(f) != 0 || !synced) {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      throw checkpoint_error(detail::concat(path.string(), ": writing ", bytes.size(), " bytes failed"));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw checkpoint_error(detail::concat(path.string(), ": cannot rename the temporary file into place"));
  }
}

/// Restores opt from the checkpoint at `path` (strong guarantee: on error opt is unchanged).
template <class Opt>
void load_checkpoint(Opt& opt, const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw checkpoint_error(detail::concat(path.string(), ": cannot open"));
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  restore_checkpoint(opt, bytes, path.string());
}

}  // namespace slowmo
