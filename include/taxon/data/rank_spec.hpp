#pragma once
// How one taxonomic rank's label is read from a metadata CSV row, and the one parser of its command-line form:
//   species=scientificName          the cell of a column
//   genus=@genus(scientificName)    the first whitespace-separated token of a column (the binomial's genus)
//   taxa==Fish                      the same value for every row
#include "taxon/core/error.hpp"
#include "taxon/data/csv.hpp"
#include "taxon/data/taxonomy.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace taxon::data {

struct RankSpec {
  enum class Kind { column, first_token, constant };
  std::string rank;
  Kind kind = Kind::column;
  std::string source;  // column name, or the constant value

  // The cell of `column` (a column missing from the CSV may be supplied as a per-file constant, see CsvSource).
  static RankSpec column(std::string rank, std::string column) { return {std::move(rank), Kind::column, std::move(column)}; }
  // Genus from a binomial: first whitespace token of `column` (as the NFHM/BioCosmos evaluation's extract_genus).
  static RankSpec genus_from(std::string rank, std::string column) {
    return {std::move(rank), Kind::first_token, std::move(column)};
  }
  // The same value for every row of the dataset.
  static RankSpec constant(std::string rank, std::string value) {
    return {std::move(rank), Kind::constant, std::move(value)};
  }
  bool operator==(const RankSpec&) const = default;
};

// Parses "RANK=COLUMN", "RANK=@genus(COLUMN)" or "RANK==VALUE"; anything else is data.bad-rank-spec naming it.
inline RankSpec parse_rank_spec(std::string_view spec) {
  const auto eq = spec.find('=');
  TAXON_CHECK(eq != std::string_view::npos && eq > 0, "data.bad-rank-spec", "rank spec '", spec,
              "' is not RANK=COLUMN, RANK=@genus(COLUMN) or RANK==VALUE");
  const std::string rank(spec.substr(0, eq));
  const std::string_view rest = spec.substr(eq + 1);
  if (!rest.empty() && rest.front() == '=') {
    TAXON_CHECK(rest.size() > 1, "data.bad-rank-spec", "rank spec '", spec, "' gives no value after '=='");
    return RankSpec::constant(rank, std::string(rest.substr(1)));
  }
  TAXON_CHECK(!rest.empty(), "data.bad-rank-spec", "rank spec '", spec, "' names no column after '='");
  if (rest.front() == '@') {
    constexpr std::string_view genus = "@genus(";
    TAXON_CHECK(rest.substr(0, genus.size()) == genus && rest.back() == ')' && rest.size() > genus.size() + 1,
                "data.bad-rank-spec", "rank spec '", spec, "': the only function is @genus(COLUMN)");
    return RankSpec::genus_from(rank, std::string(rest.substr(genus.size(), rest.size() - genus.size() - 1)));
  }
  return RankSpec::column(rank, std::string(rest));
}

// The command-line form parse_rank_spec reads back.
inline std::string to_string(const RankSpec& r) {
  switch (r.kind) {
    case RankSpec::Kind::column: return r.rank + "=" + r.source;
    case RankSpec::Kind::first_token: return r.rank + "=@genus(" + r.source + ")";
    case RankSpec::Kind::constant: return r.rank + "==" + r.source;
  }
  return r.rank;
}

// The rank's value for every row of `table` (a missing column is data.missing-column naming the file).
inline std::vector<std::string> rank_values(const CsvTable& table, const RankSpec& spec) {
  std::vector<std::string> out;
  out.reserve(static_cast<std::size_t>(table.num_rows()));
  if (spec.kind == RankSpec::Kind::constant) {
    out.assign(static_cast<std::size_t>(table.num_rows()), spec.source);
    return out;
  }
  const std::int64_t col = table.column(spec.source);
  for (std::int64_t row = 0; row < table.num_rows(); ++row) {
    const std::string& cell = table.cell(row, col);
    out.push_back(spec.kind == RankSpec::Kind::first_token ? genus_of(cell) : cell);
  }
  return out;
}

}  // namespace taxon::data
