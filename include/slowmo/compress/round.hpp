// slowmo/compress/round.hpp — what a compressor is told about one reduction: the seed, which
// reduction it is, and who is asking. Randomised compressors draw from (seed, round[, rank])
// only, so that a run, and a run resumed from a checkpoint, are bit-reproducible.
#pragma once

#include <cstdint>

namespace slowmo::compress {

struct Round {
  std::uint64_t seed = 0;  ///< the policy's seed option (CompressedOptions::seed)
  std::int64_t round = 0;  ///< ReduceContext::round: the 0-based index of this reduction
  int rank = 0;            ///< this worker
  int workers = 1;         ///< how many take part
};

}  // namespace slowmo::compress
