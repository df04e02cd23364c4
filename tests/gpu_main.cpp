// Catch2 runner for taxon_gpu_tests (tests/gpu/*.cpp, every test tagged [cuda]): the same thread count and seed as
// taxon_tests, and no test runs without a CUDA device — the binary fails at once instead of skipping or passing.
// First in the unity TU of the GPU tests: LibTorch (and glog's CHECK) before Catch2, whose CHECK must win.
#include "taxon/core/compat.hpp"
#include "taxon/core/log.hpp"
#include "taxon/core/seed.hpp"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/cuda/CUDAContext.h>

#include <cstdlib>
#include <iostream>

#undef CHECK
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "support/cuda_guard.hpp"  // uses Catch2's types

int main(int argc, char* argv[]) {
  int threads = 2;
  if (const char* env = std::getenv("TAXON_TEST_THREADS")) threads = std::max(1, std::atoi(env));
  at::set_num_threads(threads);
  if (!std::getenv("TAXON_LOG_LEVEL")) taxon::log::set_level(taxon::log::Level::warn);
  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  if (!taxon::test::lists_only(session.configData())) {
    if (!at::hasCUDA()) {
      std::cerr << "[taxon.cuda.no-device] taxon_gpu_tests needs a CUDA device, and none is visible to this process "
                   "(LibTorch " << taxon::compat::torch_version << "): its [cuda] tests fail rather than skip without one\n";
      return 1;
    }
    std::cerr << "taxon_gpu_tests: " << at::cuda::getCurrentDeviceProperties()->name << ", LibTorch "
              << taxon::compat::torch_version << "\n";
  }
  taxon::seed_everything(20241108);
  return session.run();
}
