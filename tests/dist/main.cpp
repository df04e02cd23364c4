// taxon_dist_tests: the Catch2 tests that need several processes, each rank one copy of this program started by
// taxon_launch (every rank runs the same tests in the same order, so their collectives pair up).
//   taxon_launch 2 -- taxon_dist_tests "[collectives]"
// `--failure-scenario NAME` instead runs one of the failure drills below, outside Catch2, as a real program would.
// First in the unity TU of the tests: LibTorch (and glog's CHECK) before Catch2, whose CHECK must win.
#include "dist/dist_support.hpp"
#include "taxon/core/log.hpp"
#include "taxon/core/seed.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#undef CHECK
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

namespace {
// Drills for the failure tests (tests/dist/expect_peer_failure.cmake checks their output):
//   kill-rank R:  rank R kills itself with SIGKILL after a few collectives.
//   raise-rank R: rank R reports a failure (as a program's top-level catch would) and exits with status 1.
// Every other rank keeps calling collectives; the first one that fails must throw dist.peer-failed naming R within
// the timeout. The survivor prints "survivor-ok rank S" and exits 3 when it did, "survivor-wrong" and 4 otherwise.
int run_failure_scenario(const std::string& name, int victim) {
  using clock = std::chrono::steady_clock;
  auto& group = taxon::test::dist_group();
  const auto timeout = group.timeout();
  for (int step = 0; step < 3; ++step) {
    at::Tensor t = at::ones({16});
    group.all_reduce_(t);
  }
  if (group.rank() == victim) {
    if (name == "kill-rank") std::raise(SIGKILL);
    group.report_failure("[taxon.train.simulated] rank " + std::to_string(victim) + " hit a simulated NaN loss");
    return 1;
  }
  auto started = clock::now();
  try {
    for (int step = 0; step < 1000; ++step) {
      started = clock::now();
      at::Tensor t = at::ones({16});
      group.all_reduce_(t);
    }
    std::cerr << "survivor-wrong rank " << group.rank() << ": no collective failed\n";
    return 4;
  } catch (const taxon::Error& e) {
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started);
    const std::string text = e.what();
    const std::string named = "] rank " + std::to_string(victim) + " ";
    const bool ok = e.id() == "dist.peer-failed" && text.find(named) != std::string::npos && waited <= timeout;
    std::cerr << (ok ? "survivor-ok" : "survivor-wrong") << " rank " << group.rank() << " after " << waited.count()
              << " ms (timeout " << timeout.count() << " ms): " << text << "\n";
    return ok ? 3 : 4;
  }
}
}  // namespace

int main(int argc, char* argv[]) {
  at::set_num_threads(1);  // several ranks share the machine's cores
  taxon::seed_everything(20241108);
  if (!std::getenv("TAXON_LOG_LEVEL")) taxon::log::set_level(taxon::log::Level::warn);
  if (argc == 4 && std::strcmp(argv[1], "--failure-scenario") == 0) {
    try {
      return run_failure_scenario(argv[2], std::atoi(argv[3]));
    } catch (const std::exception& e) {
      std::cerr << "survivor-wrong: " << e.what() << "\n";
      return 5;
    }
  }
  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  return session.run();
}
