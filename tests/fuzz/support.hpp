#pragma once
// Shared by the libFuzzer harnesses: how a harness is declared (TAXON_FUZZ_TARGET), the input as a file (taxon's
// readers take paths) and the one rule every harness enforces: bad input may only raise taxon::Error; any other
// exception, crash or sanitizer report is a bug.
//
// All harnesses are unity-built into one binary, taxon_fuzz, and `--harness=NAME` picks one (driver.cpp): one
// sanitized LibTorch translation unit instead of one per harness, which is most of the build time.
#include "taxon/core/error.hpp"

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>

namespace taxon::fuzz {

using Target = void (*)(const uint8_t* data, size_t size);

// name -> harness, filled before main() by TAXON_FUZZ_TARGET.
inline std::map<std::string, Target>& targets() {
  static std::map<std::string, Target> all;
  return all;
}

inline bool register_target(const char* name, Target target) {
  targets()[name] = target;
  return true;
}

// A per-process scratch directory, on tmpfs when there is one (a file is rewritten for every input).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path shm = "/dev/shm";
    const auto base = std::filesystem::is_directory(shm) ? shm : std::filesystem::temp_directory_path();
    auto d = base / ("taxon_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

// Writes `bytes` to scratch_dir()/name (replacing it) and returns the path.
inline std::filesystem::path write_input(const std::string& name, std::string_view bytes) {
  const auto path = scratch_dir() / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  return path;
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Runs `body`; a taxon::Error is the expected outcome for hostile input, everything else propagates (and
// libFuzzer reports the uncaught exception as a crash).
template <typename F>
void expect_only_taxon_errors(F&& body) {
  try {
    body();
  } catch (const taxon::Error&) {
  }
}

}  // namespace taxon::fuzz

// Declares harness `name` (the file tests/fuzz/<name>.cpp, seeds in tests/fuzz/corpus/<name>): the body runs one
// input. File-local helpers go in `namespace fuzz_<name>`, where the body is, so that unity-built harnesses never clash.
#define TAXON_FUZZ_TARGET(name)                                          \
  namespace fuzz_##name {                                                \
  void run(const uint8_t* data, size_t size);                            \
  [[maybe_unused]] const bool registered = ::taxon::fuzz::register_target(#name, &run); \
  }                                                                      \
  void fuzz_##name::run(const uint8_t* data, size_t size)
