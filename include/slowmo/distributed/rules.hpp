// slowmo/distributed/rules.hpp — per-element rules of the distributed combinators, shared by the
// CPU driver and the CUDA kernels like those of optim/rules.hpp.
#pragma once

#include "slowmo/core/config.hpp"

namespace slowmo::rules {

/// Push-sum, first half: the share a worker keeps of its numerator, which is also what it
/// sends to each of its k out-peers: share = num / (k + 1).
template <class T>
struct PushSumShare {
  T inv_parts;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& share, const V& num) const {
    share = num * V(inv_parts);
  }
};

/// Push-sum, second half, after the messages arrived: num = kept share + received, and the
/// de-biased model z = num / w.
template <class T>
struct PushSumCombine {
  T weight;

  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& num, V& z, const V& kept, const V& received) const {
    num = kept + received;
    z = num / V(weight);
  }
};

/// Push-sum with k > 1 out-peers: the messages from the other in-peers add up,
/// received = received + extra.
struct AddTo {
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& received, const V& extra) const {
    received = received + extra;
  }
};

}  // namespace slowmo::rules
