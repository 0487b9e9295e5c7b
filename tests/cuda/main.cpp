// The doctest main of the CUDA test programs. `--min-devices=N` (N >= 1) marks a run that
// needs N CUDA devices: with fewer it prints "skipped: ..." and exits with 77, which ctest
// reports as Skipped (SKIP_RETURN_CODE), never as a pass. Without it (host-only suites, e.g.
// -ts=host) the tests run whatever the machine has. With SLOWMO_TEST_MPI, `--mpi` runs the
// program as one MPI rank (MPI_Init / MPI_Finalize around everything).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifdef SLOWMO_TEST_MPI
#include <mpi.h>
#endif

namespace {

constexpr int skip_code = 77;

/// CUDA devices visible, 0 when there is no device or no driver (with the reason).
int visible_devices(std::string& why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    why = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    return 0;
  }
  if (n == 0) why = "cudaGetDeviceCount reports 0 devices";
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  int min_devices = 0;
  bool mpi = false;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--min-devices=", 14) == 0)
      min_devices = std::atoi(argv[i] + 14);
    else if (std::strcmp(argv[i], "--mpi") == 0)
      mpi = true;
    else
      args.push_back(argv[i]);
  }
#ifdef SLOWMO_TEST_MPI
  if (mpi) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  }
#else
  if (mpi) {
    std::fprintf(stderr, "--mpi: this test program was built without MPI\n");
    return 2;
  }
#endif
  int rc = 0;
  std::string why;
  const int devices = min_devices > 0 ? visible_devices(why) : 0;
  if (min_devices > 0 && devices < min_devices) {
    if (devices == 0)
      std::printf("skipped: no CUDA device (%s)\n", why.c_str());
    else
      std::printf("skipped: needs %d CUDA devices, found %d\n", min_devices, devices);
    rc = skip_code;
  } else {
    doctest::Context context(int(args.size()), args.data());
    rc = context.run();
  }
#ifdef SLOWMO_TEST_MPI
  if (mpi) MPI_Finalize();
#endif
  return rc;
}
