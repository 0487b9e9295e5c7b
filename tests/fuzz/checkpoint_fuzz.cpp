// libFuzzer target for the checkpoint reader: any bytes must either load or throw
// checkpoint_error — never crash, hang, read out of bounds, or change the optimizer on failure.
//
// The first input byte picks a mode: odd, the harness rewrites the trailing checksum so that
// the bytes pass it and the parser behind it gets fuzzed; even, the bytes go in as they are.
// Build: cmake --preset fuzz && cmake --build --preset fuzz; run: build/fuzz/tests/fuzz/checkpoint_fuzz
#include <cstdint>
#include <cstring>
#include <vector>

#include <slowmo/slowmo.hpp>

namespace {

using Opt = slowmo::SlowMo<slowmo::Lookahead<slowmo::Adam<float>>, slowmo::SingleWorker>;

Opt make() {
  static slowmo::SingleWorker solo;
  return Opt(slowmo::Lookahead(slowmo::Adam<float>({.lr = 0.1, .amsgrad = true}), {.k = 2}), solo, {.tau = 4});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::vector<unsigned char> bytes(data + 1, data + size);
  if ((data[0] & 1) && bytes.size() >= 8) {
    const std::uint64_t sum = slowmo::detail::ckpt::fnv1a(bytes.data(), bytes.size() - 8);
    std::memcpy(bytes.data() + bytes.size() - 8, &sum, 8);
  }
  Opt opt = make();
  slowmo::Vector<float> x = slowmo::Vector<float>::Ones(3), g = x;
  opt.step(x, g);
  const auto before = slowmo::checkpoint_bytes(opt);
  try {
    slowmo::restore_checkpoint(opt, bytes, "fuzz");
  } catch (const slowmo::checkpoint_error&) {
    if (slowmo::checkpoint_bytes(opt) != before) __builtin_trap();  // the strong guarantee
  }
  return 0;
}
