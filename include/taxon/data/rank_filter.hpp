#pragma once
// Which samples to keep, by the value of one rank, and the one parser of its command-line form:
//   class=Sandal,Sneaker,Bag      keep the samples whose class is one of these
//   class!=Sandal,Sneaker         keep the samples whose class is none of these (a missing label is none of them)
// Values are label names separated by commas (names may contain spaces and '/', not commas).
#include "taxon/core/error.hpp"
#include "taxon/data/dataset.hpp"
#include "taxon/data/taxonomy.hpp"

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace taxon::data {

struct RankFilter {
  std::string rank;
  bool keep_listed = true;  // false: drop the listed values instead
  std::vector<std::string> values;
  bool operator==(const RankFilter&) const = default;
};

// Parses "RANK=V1,V2,..." or "RANK!=V1,V2,..."; anything else is data.bad-rank-filter naming it.
inline RankFilter parse_rank_filter(std::string_view spec) {
  const auto eq = spec.find('=');
  TAXON_CHECK(eq != std::string_view::npos, "data.bad-rank-filter", "filter '", spec,
              "' is not RANK=VALUE[,VALUE...] or RANK!=VALUE[,VALUE...]");
  RankFilter f;
  f.keep_listed = !(eq > 0 && spec[eq - 1] == '!');
  f.rank = std::string(spec.substr(0, f.keep_listed ? eq : eq - 1));
  TAXON_CHECK(!f.rank.empty(), "data.bad-rank-filter", "filter '", spec, "' names no rank before '=' or '!='");
  std::string_view rest = spec.substr(eq + 1);
  while (true) {
    const auto comma = rest.find(',');
    const std::string_view value = rest.substr(0, comma);
    TAXON_CHECK(!value.empty(), "data.bad-rank-filter", "filter '", spec, "' has an empty value");
    f.values.emplace_back(value);
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  return f;
}

// The command-line form parse_rank_filter reads back.
inline std::string to_string(const RankFilter& f) {
  std::string out = f.rank + (f.keep_listed ? "=" : "!=");
  for (std::size_t i = 0; i < f.values.size(); ++i) out += (i ? "," : "") + f.values[i];
  return out;
}

// The entries of `rows` (indices into `dataset`) that pass `filter`, in their order. An unknown rank is
// data.unknown-rank; a value the rank does not have is data.unknown-label listing the ones it has (a typo would
// otherwise silently keep nothing, or everything).
template <Dataset D>
std::vector<std::int64_t> filter_rows(const D& dataset, const RankFilter& filter, const std::vector<std::int64_t>& rows) {
  const auto& tax = dataset.taxonomy();
  const std::int64_t r = tax.rank_index(filter.rank);
  const LabelMap& labels = tax.labels(r);
  std::set<std::int64_t> listed;
  for (const auto& v : filter.values) {
    if (!labels.contains(v)) {
      std::string known;
      for (const auto& name : labels.names()) known += (known.empty() ? "" : ", ") + name;
      TAXON_CHECK(false, "data.unknown-label", "filter '", to_string(filter), "': rank '", filter.rank,
                  "' has no value '", v, "' (it has: ", known, ")");
    }
    listed.insert(labels.id(v));
  }
  std::vector<std::int64_t> out;
  for (const auto i : rows) {
    const bool in_list = listed.count(dataset.labels(i)[static_cast<std::size_t>(r)]) > 0;
    if (in_list == filter.keep_listed) out.push_back(i);
  }
  return out;
}

}  // namespace taxon::data
