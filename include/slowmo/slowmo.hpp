// slowmo/slowmo.hpp — everything that needs nothing beyond Eigen.
#pragma once

#include "slowmo/core/concepts.hpp"
#include "slowmo/core/config.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/schedule.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/optim/adam.hpp"
#include "slowmo/optim/lookahead.hpp"
#include "slowmo/optim/sgd.hpp"
