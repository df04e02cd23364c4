#pragma once
// Kept in sync with project(VERSION) in CMakeLists.txt; tests/unit/test_core.cpp checks it.
#define TAXON_VERSION_MAJOR 0
#define TAXON_VERSION_MINOR 1
#define TAXON_VERSION_PATCH 0
#define TAXON_VERSION_STRING "0.1.0"

namespace taxon {
inline constexpr int version_major = TAXON_VERSION_MAJOR;
inline constexpr int version_minor = TAXON_VERSION_MINOR;
inline constexpr int version_patch = TAXON_VERSION_PATCH;
inline constexpr const char* version_string = TAXON_VERSION_STRING;
}  // namespace taxon
