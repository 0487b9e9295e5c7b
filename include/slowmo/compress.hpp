// slowmo/compress.hpp — compressors and the compressed reduce policy with error feedback:
// TopK, RandomK, SignScale, Qsgd, LowPrecision, PowerSgd, Compressed<C>, SparseLoCo's reduction.
#pragma once

#include "slowmo/compress/compressed.hpp"
#include "slowmo/compress/low_precision.hpp"
#include "slowmo/compress/power_sgd.hpp"
#include "slowmo/compress/qsgd.hpp"
#include "slowmo/compress/random_k.hpp"
#include "slowmo/compress/round.hpp"
#include "slowmo/compress/sign.hpp"
#include "slowmo/compress/sparseloco.hpp"
#include "slowmo/compress/top_k.hpp"
