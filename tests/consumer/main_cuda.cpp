// Links against slowmo::cuda from the installed package with the host compiler: the
// host-side CUDA headers compile, and the CUDA runtime and NCCL link. (Kernels need nvcc; the
// CUDA programs of slowmo's own test suite cover them.)
#include <slowmo/cuda/device_vector.hpp>

#include <nccl.h>

#include <cstdio>
#include <string>

int main() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return 1;
  std::string why;
  const int devices = slowmo::cuda::device_count(&why);
  const slowmo::cuda::DeviceVector<float> empty;  // no device needed for an empty one
  std::printf("slowmo::cuda consumer: NCCL %d, %d CUDA device(s)%s\n", version, devices,
              devices == 0 ? (" (" + why + ")").c_str() : "");
  return int(empty.size());
}
