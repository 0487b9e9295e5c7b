// slowmo/compress/sparseloco.hpp — the reduce policy of SparseLoCo (Sarfi, Thérien, Lidin,
// Belilovsky 2025, "Communication Efficient LLM Pre-training with SparseLoCo",
// arXiv:2508.15706): chunk-wise top-k of the error-feedback accumulator, values quantised to
// 2 bits, and the decayed accumulator e = beta e + d standing in for outer momentum:
//
//   e = beta e + d;   c = Q(TopK_chunk(e));   e = e - c;   v = mean_j c_j
//
// The outer step that goes with it is plain (momentum-free) SGD on v with the outer lr.
#pragma once

#include <cstdint>

#include "slowmo/compress/compressed.hpp"
#include "slowmo/compress/top_k.hpp"

namespace slowmo::compress {

struct SparseLocoReduceOptions {
  std::int64_t chunk = 4096;     ///< entries per chunk (the paper's 64 x 64 blocks, flattened)
  std::int64_t k = 64;           ///< kept per chunk: 64 / 4096 = 1.56 % density
  int value_bits = 2;            ///< 2-bit values
  double range_in_sigmas = 6.0;  ///< the quantiser's range (tplr's default quantization_range)
  double error_decay = 0.95;     ///< beta
  std::uint64_t seed = 0;        ///< unused by TopK (deterministic); kept for a uniform policy
};

/// Compressed<TopK<T>> configured as SparseLoCo's reduction.
template <Real T>
Compressed<TopK<T>> sparseloco_reduce(const SparseLocoReduceOptions& o = {}) {
  return Compressed<TopK<T>>(
      TopK<T>(
          TopKOptions{.k = o.k, .chunk = o.chunk, .value_bits = o.value_bits, .range_in_sigmas = o.range_in_sigmas}),
      CompressedOptions{.error_feedback = true, .error_decay = o.error_decay, .seed = o.seed});
}

}  // namespace slowmo::compress
