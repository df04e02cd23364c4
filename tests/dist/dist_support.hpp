#pragma once
// Shared by the multi-process tests: the one process group of this rank (from taxon_launch's environment).
#include "taxon/dist/process_group.hpp"

#include <chrono>
#include <cstdlib>

namespace taxon::test {
// Collective timeout of the tests: TAXON_TEST_DIST_TIMEOUT_MS, default 30 s (a wrong test fails, never hangs).
inline std::chrono::milliseconds dist_test_timeout() {
  const char* v = std::getenv("TAXON_TEST_DIST_TIMEOUT_MS");
  return std::chrono::milliseconds(v != nullptr ? std::atol(v) : 30000);
}

inline dist::ProcessGroup& dist_group() {
  static dist::ProcessGroup group =
      dist::ProcessGroup::from_environment(dist::ProcessGroupOptions().timeout(dist_test_timeout()));
  return group;
}
}  // namespace taxon::test
