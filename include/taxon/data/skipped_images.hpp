#pragma once
// The images a run left out because they could not be read: <run dir>/skipped_images.json. This header owns that
// file's format (taxon-unicom writes it, its resume and the run report read it):
//   {"train": [{"row": R, "file": F, "stage": S, "error": E}, ...], "eval": [...]}
// R: the image's position in its set as loaded (before any image was left out), F: its file ("" when the dataset
// has no files), S: the stage that found it, E: the loader's message. Files of runs made before "file" and "stage"
// were recorded lack them; they read as "".
#include "taxon/core/error.hpp"
#include "taxon/io/atomic_file.hpp"
#include "taxon/io/json.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace taxon::data {

struct SkippedImage {
  std::string split;  // "train" or "eval"
  int64_t row = 0;
  std::string file, stage, error;
};

struct SkippedImages {
  static constexpr const char* kFileName = "skipped_images.json";
  static constexpr const char* kSplits[] = {"train", "eval"};

  std::vector<SkippedImage> images;  // train first, then eval, each in the order found

  bool empty() const { return images.empty(); }
  int64_t count(const std::string& split) const {
    int64_t n = 0;
    for (const auto& s : images) n += s.split == split;
    return n;
  }

  nlohmann::json to_json() const {
    nlohmann::json j = nlohmann::json::object();
    for (const char* split : kSplits) j[split] = nlohmann::json::array();
    for (const auto& s : images)
      j[s.split].push_back({{"row", s.row}, {"file", s.file}, {"stage", s.stage}, {"error", s.error}});
    return j;
  }

  static SkippedImages from_json(const nlohmann::json& j, const std::string& source) {
    TAXON_CHECK(j.is_object(), "data.bad-skipped-file", source, " must hold a JSON object, not ", j.type_name());
    SkippedImages out;
    for (const char* split : kSplits) {
      if (!j.contains(split)) continue;
      TAXON_CHECK(j.at(split).is_array(), "data.bad-skipped-file", source, ": '", split, "' is not a list");
      for (const auto& entry : j.at(split)) {
        TAXON_CHECK(entry.is_object() && entry.contains("row") && entry.at("row").is_number_integer() &&
                        entry.at("row").get<int64_t>() >= 0,
                    "data.bad-skipped-file", source, ": entry ", io::dump_json(entry), " of '", split,
                    "' has no non-negative integer 'row'");
        const auto text = [&](const char* key) {
          return entry.contains(key) && entry.at(key).is_string() ? entry.at(key).get<std::string>() : std::string();
        };
        out.images.push_back({split, entry.at("row").get<int64_t>(), text("file"), text("stage"), text("error")});
      }
    }
    return out;
  }

  // The record in `run_dir`; empty when the run has none (no image was skipped).
  static SkippedImages load(const std::filesystem::path& run_dir) {
    const auto file = run_dir / kFileName;
    if (!io::path_exists(file)) return {};
    const auto parsed = io::parse_json(io::read_file(file));
    TAXON_CHECK(parsed, "data.bad-skipped-file", file.string(), ": ", parsed.error);
    return from_json(parsed.value, file.string());
  }

  void save(const std::filesystem::path& run_dir) const {
    io::write_text_atomically(run_dir / kFileName, io::dump_json(to_json(), 2));
  }
};

}  // namespace taxon::data
