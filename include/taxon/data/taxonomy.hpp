#pragma once
// Labels at named taxonomic ranks: per rank a LabelMap (string <-> contiguous id), kept and saved so ids
// produced today can be read back as names by evaluation and by Python tools tomorrow.
#include "taxon/core/error.hpp"
#include "taxon/io/atomic_file.hpp"
#include "taxon/io/json.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace taxon::data {

// Missing label (empty CSV cell, unknown rank): excluded from losses/metrics by convention.
inline constexpr std::int64_t kMissingLabel = -1;

class LabelMap {
 public:
  LabelMap() = default;
  // Ids follow the order of `names` (use for datasets with an official id order, e.g. Fashion-MNIST).
  explicit LabelMap(std::vector<std::string> names) : names_(std::move(names)) {
    for (std::size_t i = 0; i < names_.size(); ++i) {
      const bool inserted = ids_.emplace(names_[i], static_cast<std::int64_t>(i)).second;
      TAXON_CHECK(inserted, "data.duplicate-label", "label '", names_[i], "' appears twice in a label map");
    }
  }
  // Ids in sorted order of the distinct non-empty values, so the mapping does not depend on row order.
  static LabelMap from_values(std::vector<std::string> values) {
    values.erase(std::remove(values.begin(), values.end(), std::string()), values.end());
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    return LabelMap(std::move(values));
  }

  std::int64_t size() const noexcept { return static_cast<std::int64_t>(names_.size()); }
  bool contains(const std::string& name) const { return ids_.count(name) > 0; }
  // Empty name -> kMissingLabel; unknown name is an error naming it.
  std::int64_t id(const std::string& name) const {
    if (name.empty()) return kMissingLabel;
    auto it = ids_.find(name);
    TAXON_CHECK(it != ids_.end(), "data.unknown-label", "label '", name, "' is not in the label map (", size(),
                " labels)");
    return it->second;
  }
  const std::string& name(std::int64_t id) const {
    TAXON_CHECK(id >= 0 && id < size(), "data.label-out-of-range", "label id ", id, " outside [0, ", size(), ")");
    return names_[static_cast<std::size_t>(id)];
  }
  const std::vector<std::string>& names() const noexcept { return names_; }
  bool operator==(const LabelMap& other) const { return names_ == other.names_; }

 private:
  std::vector<std::string> names_;
  std::unordered_map<std::string, std::int64_t> ids_;
};

// The ranks of a dataset (coarse to fine or in any user order) and their label maps.
class Taxonomy {
 public:
  Taxonomy() = default;
  Taxonomy(std::vector<std::string> ranks, std::vector<LabelMap> maps) : ranks_(std::move(ranks)), maps_(std::move(maps)) {
    TAXON_CHECK(ranks_.size() == maps_.size(), "data.bad-taxonomy", ranks_.size(), " rank names but ", maps_.size(),
                " label maps");
  }
  std::int64_t num_ranks() const noexcept { return static_cast<std::int64_t>(ranks_.size()); }
  const std::vector<std::string>& ranks() const noexcept { return ranks_; }
  std::int64_t rank_index(const std::string& rank) const {
    auto it = std::find(ranks_.begin(), ranks_.end(), rank);
    TAXON_CHECK(it != ranks_.end(), "data.unknown-rank", "rank '", rank, "' not in taxonomy (ranks: ", joined(), ")");
    return it - ranks_.begin();
  }
  const LabelMap& labels(std::int64_t rank) const {
    TAXON_CHECK(rank >= 0 && rank < num_ranks(), "data.unknown-rank", "rank index ", rank, " outside [0, ", num_ranks(), ")");
    return maps_[static_cast<std::size_t>(rank)];
  }
  const LabelMap& labels(const std::string& rank) const { return labels(rank_index(rank)); }
  std::int64_t num_classes(const std::string& rank) const { return labels(rank).size(); }
  bool operator==(const Taxonomy& o) const { return ranks_ == o.ranks_ && maps_ == o.maps_; }

  nlohmann::json to_json() const {
    nlohmann::json j;
    j["ranks"] = ranks_;
    nlohmann::json labels = nlohmann::json::object();
    for (std::size_t r = 0; r < ranks_.size(); ++r) labels[ranks_[r]] = maps_[r].names();
    j["labels"] = labels;
    return j;
  }
  static Taxonomy from_json(const nlohmann::json& j) {
    TAXON_CHECK(j.contains("ranks") && j.contains("labels"), "data.bad-taxonomy",
                "taxonomy JSON needs 'ranks' and 'labels'");
    std::vector<std::string> ranks;
    std::vector<LabelMap> maps;
    try {  // a list holding something other than strings
      ranks = j.at("ranks").get<std::vector<std::string>>();
      for (const auto& r : ranks) {
        TAXON_CHECK(j.at("labels").contains(r), "data.bad-taxonomy", "taxonomy JSON has no labels for rank '", r, "'");
        maps.emplace_back(j.at("labels").at(r).get<std::vector<std::string>>());
      }
    } catch (const nlohmann::json::exception& e) {
      TAXON_FAIL("data.bad-taxonomy", "taxonomy JSON 'ranks' and each rank's 'labels' must be lists of strings: ",
                 e.what());
    }
    return Taxonomy(std::move(ranks), std::move(maps));
  }
  // {"ranks": [...], "labels": {"species": ["Abramis brama", ...], ...}}; list position = id.
  void save_json(const std::filesystem::path& path) const { io::write_text_atomically(path, io::dump_json(to_json(), 2)); }
  static Taxonomy load_json(const std::filesystem::path& path) {
    const auto parsed = io::parse_json(io::read_file(path));
    TAXON_CHECK(parsed, "data.bad-taxonomy", "taxonomy JSON ", path.string(), ": ", parsed.error);
    return from_json(parsed.value);
  }
  // Long CSV "rank,id,name" (RFC 4180 quoting), one row per label: readable by pandas.
  void save_csv(const std::filesystem::path& path) const {
    std::ostringstream out;
    out << "rank,id,name\n";
    for (std::size_t r = 0; r < ranks_.size(); ++r)
      for (std::int64_t i = 0; i < maps_[r].size(); ++i) out << quote(ranks_[r]) << ',' << i << ',' << quote(maps_[r].name(i)) << '\n';
    io::write_text_atomically(path, out.str());
  }

  static std::string quote(const std::string& s) {
    if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) {
      if (c == '"') q += '"';
      q += c;
    }
    return q + '"';
  }

 private:
  std::string joined() const {
    std::string s;
    for (const auto& r : ranks_) s += (s.empty() ? "" : ", ") + r;
    return s;
  }
  std::vector<std::string> ranks_;
  std::vector<LabelMap> maps_;
};

// Byte length of the whitespace code point starting at s[i] as Python's str.isspace() defines whitespace
// (ASCII \t\n\v\f\r, \x1c-\x1f and space; U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F,
// U+205F, U+3000 in UTF-8), or 0: the seeds' str.strip() and str.split() use this set.
inline std::size_t python_space_at(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
  const unsigned c0 = b(0);
  if (c0 == ' ' || (c0 >= 0x09 && c0 <= 0x0d) || (c0 >= 0x1c && c0 <= 0x1f)) return 1;
  if (c0 == 0xc2 && (b(1) == 0x85 || b(1) == 0xa0)) return 2;
  if (c0 == 0xe1 && b(1) == 0x9a && b(2) == 0x80) return 3;
  if (c0 == 0xe2 && b(1) == 0x80 && ((b(2) >= 0x80 && b(2) <= 0x8a) || b(2) == 0xa8 || b(2) == 0xa9 || b(2) == 0xaf))
    return 3;
  if (c0 == 0xe2 && b(1) == 0x81 && b(2) == 0x9f) return 3;
  if (c0 == 0xe3 && b(1) == 0x80 && b(2) == 0x80) return 3;
  return 0;
}

// Python's str.strip() with no argument, on UTF-8 text.
inline std::string_view python_strip(std::string_view s) {
  std::size_t b = 0;
  while (b < s.size()) {
    const std::size_t n = python_space_at(s, b);
    if (n == 0) break;
    b += n;
  }
  // The last non-space code point ends the result: scan forward so multi-byte spaces are recognised.
  std::size_t end = b;
  for (std::size_t i = b; i < s.size();) {
    const std::size_t n = python_space_at(s, i);
    if (n == 0) {
      ++i;
      end = i;
    } else {
      i += n;
    }
  }
  return s.substr(b, end - b);
}

// Genus from a binomial/trinomial scientific name: the first whitespace-separated token, as the seeds'
// extract_genus does (`str.split()[0]`, Python's whitespace: "Salmo trutta fario" -> "Salmo"); blank -> ""
// (missing).
inline std::string genus_of(std::string_view scientific_name) {
  std::size_t b = 0;
  while (b < scientific_name.size()) {
    const std::size_t n = python_space_at(scientific_name, b);
    if (n == 0) break;
    b += n;
  }
  std::size_t e = b;
  while (e < scientific_name.size() && python_space_at(scientific_name, e) == 0) ++e;
  return std::string(scientific_name.substr(b, e - b));
}

}  // namespace taxon::data
