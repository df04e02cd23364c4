// Catch2 runner for taxon_tests: a fixed intra-op thread count and seed, so every test sees the same
// numerics whatever the machine (override with TAXON_TEST_THREADS).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "taxon/core/log.hpp"
#include "taxon/core/seed.hpp"

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <cstdlib>

int main(int argc, char* argv[]) {
  int threads = 2;
  if (const char* env = std::getenv("TAXON_TEST_THREADS")) threads = std::max(1, std::atoi(env));
  at::set_num_threads(threads);
  taxon::seed_everything(20241108);
  if (!std::getenv("TAXON_LOG_LEVEL")) taxon::log::set_level(taxon::log::Level::warn);
  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  // Without a GPU, a plain run skips [cuda] tests, as ctest does (name them explicitly to force them).
  if (session.configData().testsOrTags.empty() && !at::hasCUDA()) session.configData().testsOrTags = {"~[cuda]"};
  return session.run();
}
