#pragma once
// JSON read from files (safetensors headers, checkpoint configs, trainer state, taxonomies) with a nesting limit.
// nlohmann's parser is iterative, but dumping, copying and comparing a value recurse once per level, so a few
// megabytes of '[' would otherwise overflow the stack later. The caller turns a failure into its own error id.
#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace taxon::io {

// Far deeper than any file taxon reads (a safetensors header nests 3 levels, trainer.json 4).
inline constexpr int kMaxJsonDepth = 64;

// The parsed value, or why there is none: `if (!parsed) TAXON_FAIL("area.what", source, ": ", parsed.error)`.
struct ParsedJson {
  nlohmann::json value;
  std::string error;  // empty when `value` holds the document
  explicit operator bool() const { return error.empty(); }
};

inline ParsedJson parse_json(std::string_view text, int max_depth = kMaxJsonDepth) {
  struct TooDeep {};
  try {
    return {nlohmann::json::parse(text.begin(), text.end(),
                                  [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
                                    // `depth` counts the enclosing containers: 0 for the outermost value.
                                    if (depth >= max_depth) throw TooDeep{};
                                    return true;
                                  }),
            {}};
  } catch (const TooDeep&) {
    return {nullptr, "JSON nested deeper than " + std::to_string(max_depth) + " levels"};
  } catch (const nlohmann::json::exception& e) {
    return {nullptr, std::string("not valid JSON: ") + e.what()};
  }
}

// `value` as JSON text for a file taxon writes. Strings that are not valid UTF-8 (a Latin-1 file name or CSV
// value) get U+FFFD in place of each invalid byte instead of nlohmann's type_error.316, so no JSON exception
// escapes an output; the data itself (paths read, labels compared) keeps its bytes.
inline std::string dump_json(const nlohmann::json& value, int indent = -1) {
  return value.dump(indent, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

}  // namespace taxon::io
