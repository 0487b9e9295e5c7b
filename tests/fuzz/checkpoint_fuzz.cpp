// libFuzzer target for the checkpoint reader: any bytes must either load or throw
// checkpoint_error — never crash, hang, read out of bounds, or change the optimizer on failure —
// and a state that loads must be one the optimizer can step: after every successful load the
// harness steps it a few times with parameters of the loaded size and a finite gradient, so
// that sizes inconsistent with each other or a state of another structure (issue 12, items 8
// and 9) show up as an AddressSanitizer report or a size_mismatch.
//
// The first input byte picks the case: bit 0 set, the harness rewrites the trailing checksum so
// that the bytes pass it and the parser behind it gets fuzzed; bit 1 set, the target has state of
// its own (started and stepped at size 3) before the load; bits 2..7, the composition
// (compositions.hpp). Build: cmake --preset fuzz && cmake --build --preset fuzz; seed:
// build/fuzz/tests/fuzz/checkpoint_fuzz_corpus DIR; run: build/fuzz/tests/fuzz/checkpoint_fuzz DIR
#include <cstdint>
#include <cstring>
#include <exception>
#include <vector>

#include "compositions.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const unsigned mode = data[0];
  std::vector<unsigned char> bytes(data + 1, data + size);
  if ((mode & 1) && bytes.size() >= 8) {
    const std::uint64_t sum = slowmo::detail::ckpt::fnv1a(bytes.data(), bytes.size() - 8);
    std::memcpy(bytes.data() + bytes.size() - 8, &sum, 8);
  }
  fuzz::with_composition(mode >> 2, [&](auto opt) {
    using Opt = decltype(opt);
    using V = slowmo::Vector<typename Opt::scalar_type>;
    if (mode & 2) {
      V x = V::LinSpaced(3, -1, 1), g(3);
      slowmo::start(opt, x);
      for (int t = 0; t < 2; ++t) {
        fuzz::gradient(x, g, t);
        opt.step(x, g);
      }
    }
    const std::vector<unsigned char> before = slowmo::checkpoint_bytes(opt);
    try {
      slowmo::restore_checkpoint(opt, bytes, "fuzz");
    } catch (const slowmo::checkpoint_error&) {
      if (slowmo::checkpoint_bytes(opt) != before) __builtin_trap();  // the strong guarantee
      return;
    }
    // Loaded: what it holds is exactly what the file said ...
    if (slowmo::checkpoint_bytes(opt) != bytes) __builtin_trap();
    // ... and it steps. (A checkpoint written before start() holds no state: start it then.)
    const long n = fuzz::state_size(opt);
    V x = V::LinSpaced(n > 0 ? n : 3, -1, 1), g(x.size());
    bool started = false;
    auto start = [&] {
      if (started) return;
      started = true;
      try {
        slowmo::start(opt, x);
      } catch (const slowmo::usage_error&) {  // already stepped
      }
    };
    if (n == 0) start();
    for (int t = 0; t < 5; ++t) {
      fuzz::gradient(x, g, t);
      try {
        opt.step(x, g);
      } catch (const slowmo::size_mismatch&) {
        __builtin_trap();  // the load accepted sizes that do not fit together
      } catch (const slowmo::usage_error&) {
        start();  // e.g. a LocalSgd checkpoint at step 0
      } catch (const std::exception&) {
        // a refused step is fine (e.g. NaN moments in the file made x, hence g, NaN)
      }
    }
    // What it stepped to saves and loads again (unless a counter was loaded at the very limit
    // and has now gone past it).
    Opt again = opt;
    try {
      slowmo::restore_checkpoint(again, slowmo::checkpoint_bytes(opt), "fuzz (saved after the steps)");
    } catch (const slowmo::checkpoint_error& e) {
      if (std::strstr(e.what(), "a counter or step count must be in") == nullptr) __builtin_trap();
    }
  });
  return 0;
}
