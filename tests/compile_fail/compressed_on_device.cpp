// A compressor (host code) as the reduce policy of an outer loop whose base keeps its
// parameters in device memory: refused at compile time, saying why.
#include <slowmo/comm/single_worker.hpp>
#include <slowmo/compress/compressed.hpp>
#include <slowmo/compress/top_k.hpp>
#include <slowmo/distributed/outer_loop.hpp>
#include <slowmo/optim/sgd.hpp>

// Declared the way slowmo::cuda::Device is (see device_base_host_comm.cpp).
struct DeviceLike : slowmo::Host {
  template <class Comm>
  static constexpr bool communicates_with = requires { requires Comm::accepts_device_memory; };
};

#ifdef SLOWMO_COMPILE_FAIL_CONTROL
using Space = slowmo::Host;
#else
using Space = DeviceLike;
#endif
using Base = slowmo::Sgd<float, slowmo::schedule::Constant, Space>;

static_assert(sizeof(slowmo::OuterLoop<Base, slowmo::SingleWorker, slowmo::outer::HeavyBall<float, Space>,
                                       slowmo::compress::Compressed<slowmo::compress::TopK<float>>>) > 0);

int main() {}
