// Catch2 runner for taxon_tests: a fixed intra-op thread count and seed, so every test sees the same
// numerics whatever the machine (override with TAXON_TEST_THREADS).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "support/cuda_guard.hpp"
#include "taxon/core/log.hpp"
#include "taxon/core/seed.hpp"

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <cstdlib>
#include <iostream>

int main(int argc, char* argv[]) {
  int threads = 2;
  if (const char* env = std::getenv("TAXON_TEST_THREADS")) threads = std::max(1, std::atoi(env));
  at::set_num_threads(threads);
  taxon::seed_everything(20241108);
  if (!std::getenv("TAXON_LOG_LEVEL")) taxon::log::set_level(taxon::log::Level::warn);
  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  // [cuda] tests live in taxon_gpu_tests; asking this binary for them must not pass by matching nothing.
  if (taxon::test::selects_cuda_tag(session.configData().testsOrTags)) {
    std::cerr << "[taxon.cuda.wrong-binary] taxon_tests holds no [cuda] tests: they are in taxon_gpu_tests, built "
                 "with -DTAXON_WITH_CUDA=ON (scripts/test-cuda) and run on a machine with a GPU\n";
    return 1;
  }
  return session.run();
}
