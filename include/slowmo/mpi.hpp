// slowmo/mpi.hpp — everything in slowmo/slowmo.hpp plus the MPI backend. Link slowmo::mpi.
#pragma once

#include "slowmo/comm/mpi.hpp"
#include "slowmo/slowmo.hpp"
