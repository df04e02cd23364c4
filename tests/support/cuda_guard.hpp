#pragma once
// How the two Catch2 runners refuse to let a [cuda] test pass without a GPU: the CPU binary (taxon_tests) holds
// no [cuda] tests and rejects a filter that asks for them; the GPU binary (taxon_gpu_tests) refuses to run any test
// when no CUDA device is present (listing still works, so ctest can discover its tests on a CPU machine).
#include <catch2/catch.hpp>

#include <string>
#include <vector>

namespace taxon::test {

// True when a command-line test spec selects the [cuda] tag (a negated "~[cuda]" or "exclude:[cuda]" does not).
inline bool selects_cuda_tag(const std::vector<std::string>& specs) {
  for (const std::string& spec : specs) {
    for (std::size_t at = spec.find("[cuda]"); at != std::string::npos; at = spec.find("[cuda]", at + 1)) {
      const bool negated = (at >= 1 && spec[at - 1] == '~') || (at >= 8 && spec.compare(at - 8, 8, "exclude:") == 0);
      if (!negated) return true;
    }
  }
  return false;
}

// A run that only lists or explains (what ctest's test discovery and --help do) needs no device.
inline bool lists_only(const Catch::ConfigData& c) {
  return c.listTests || c.listTags || c.listReporters || c.listTestNamesOnly || c.showHelp;
}

}  // namespace taxon::test
