#pragma once
// Shared by the libFuzzer harnesses: the input as a file (taxon's readers take paths) and the one rule every
// harness enforces: bad input may only raise taxon::Error; any other exception, crash or sanitizer report is a bug.
#include "taxon/core/error.hpp"

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace taxon::fuzz {

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
