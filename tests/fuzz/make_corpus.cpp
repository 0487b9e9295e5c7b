// Writes a seed corpus for checkpoint_fuzz: valid checkpoints of each of its compositions
// after 0 (not started), 0 (started) and a few steps, prefixed with the harness's mode byte
// (checksum fixed or not, target with or without state of its own).
#include <fstream>
#include <string>

#include "compositions.hpp"

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : ".";
  int files = 0;
  for (unsigned c = 0; c < fuzz::count; ++c)
    for (int steps : {-1, 0, 1, 3, 5}) {  // -1: not even started
      fuzz::with_composition(c, [&](auto opt) {
        using V = slowmo::Vector<typename decltype(opt)::scalar_type>;
        V x = V::LinSpaced(3, -1, 1), g(3);
        if (steps >= 0) slowmo::start(opt, x);
        for (int t = 0; t < steps; ++t) {
          fuzz::gradient(x, g, t);
          opt.step(x, g);
        }
        const auto bytes = slowmo::checkpoint_bytes(opt);
        for (unsigned low : {0u, 1u, 2u, 3u}) {
          const unsigned mode = (c << 2) | low;
          std::ofstream out(dir + "/seed_c" + std::to_string(c) + "_s" + std::to_string(steps + 1) + "_m" +
                                std::to_string(low),
                            std::ios::binary);
          out.put(char(mode));
          out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
          ++files;
        }
      });
    }
  return files > 0 ? 0 : 1;
}
