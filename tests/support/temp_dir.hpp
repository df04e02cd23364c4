#pragma once
// A fresh directory under the system temp dir, removed with everything in it when the test ends.
#include <filesystem>
#include <random>
#include <string>
#include <system_error>

namespace taxon::test {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "taxon_test") {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / (prefix + "_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::filesystem::path operator/(const std::string& name) const { return path / name; }

  std::filesystem::path path;
};

}  // namespace taxon::test
