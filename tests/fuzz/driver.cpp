// The libFuzzer entry points of taxon_fuzz: `--harness=NAME` (libFuzzer ignores flags that start with "--") picks
// the harness every input goes to. Without it, or with an unknown name, the program lists the harnesses and fails.
#include "support.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace fuzz_driver {
inline taxon::fuzz::Target selected = nullptr;
}

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  const std::string flag = "--harness=";
  std::string name;
  for (int i = 1; i < *argc; ++i)
    if (std::string((*argv)[i]).rfind(flag, 0) == 0) name = std::string((*argv)[i]).substr(flag.size());
  const auto it = taxon::fuzz::targets().find(name);
  if (it == taxon::fuzz::targets().end()) {
    std::fprintf(stderr, "taxon_fuzz: pass --harness=NAME (got '%s'); harnesses:", name.c_str());
    for (const auto& [known, target] : taxon::fuzz::targets()) std::fprintf(stderr, " %s", known.c_str());
    std::fprintf(stderr, "\n");
    std::exit(2);
  }
  fuzz_driver::selected = it->second;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz_driver::selected(data, size);
  return 0;
}
