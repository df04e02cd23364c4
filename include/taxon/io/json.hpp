#pragma once
// JSON read from files (safetensors headers, checkpoint configs, trainer state, taxonomies): a syntax error becomes a
// taxon::Error with the caller's id, and nesting is limited. nlohmann's parser is iterative, but dumping, copying and
// comparing a value recurse once per level, so a few megabytes of '[' would otherwise overflow the stack later.
#include "taxon/core/error.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace taxon::io {

// Far deeper than any file taxon reads (a safetensors header nests 3 levels, trainer.json 4).
inline constexpr int kMaxJsonDepth = 64;

inline nlohmann::json parse_json(std::string_view text, const std::string& source, const char* error_id,
                                 int max_depth = kMaxJsonDepth) {
  try {
    return nlohmann::json::parse(text.begin(), text.end(),
                                 [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
                                   // `depth` counts the enclosing containers: 0 for the outermost value.
                                   TAXON_CHECK(depth < max_depth, error_id, source, ": JSON nested deeper than ",
                                               max_depth, " levels");
                                   return true;
                                 });
  } catch (const nlohmann::json::exception& e) {
    TAXON_FAIL(error_id, source, ": not valid JSON: ", e.what());
  }
}

}  // namespace taxon::io
