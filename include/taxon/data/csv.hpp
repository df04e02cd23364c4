#pragma once
// RFC 4180 CSV: quoted fields with embedded commas, quotes ("") and newlines; CRLF or LF line ends; a UTF-8
// BOM is dropped. Small and strict: an unterminated quote is an error naming the file and line.
#include "taxon/core/error.hpp"
#include "taxon/io/atomic_file.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace taxon::data {

class CsvTable {
 public:
  CsvTable() = default;
  CsvTable(std::vector<std::string> header, std::vector<std::vector<std::string>> rows, std::string source)
      : header_(std::move(header)), rows_(std::move(rows)), source_(std::move(source)) {
    for (std::size_t i = 0; i < header_.size(); ++i) index_.emplace(header_[i], static_cast<std::int64_t>(i));
  }

  // Parses text; `source` names the file in errors.
  static CsvTable parse(std::string_view text, const std::string& source = "<csv>") {
    if (text.size() >= 3 && static_cast<unsigned char>(text[0]) == 0xEF && static_cast<unsigned char>(text[1]) == 0xBB &&
        static_cast<unsigned char>(text[2]) == 0xBF)
      text.remove_prefix(3);
    std::vector<std::vector<std::string>> records;
    std::vector<std::string> record;
    std::string field;
    std::size_t i = 0, line = 1;
    bool any = false;  // current record has content (so a trailing newline does not make an empty record)
    const auto end_record = [&] {
      record.push_back(std::move(field));
      field.clear();
      if (!(record.size() == 1 && record[0].empty() && !any)) records.push_back(std::move(record));
      record.clear();
      any = false;
    };
    while (i < text.size()) {
      const char c = text[i];
      if (c == '"' && field.empty()) {
        // Quoted field: runs to the closing quote; "" is a literal quote.
        any = true;
        const std::size_t open_line = line;
        ++i;
        bool closed = false;
        while (i < text.size()) {
          if (text[i] == '"') {
            if (i + 1 < text.size() && text[i + 1] == '"') {
              field += '"';
              i += 2;
            } else {
              ++i;
              closed = true;
              break;
            }
          } else {
            if (text[i] == '\n') ++line;
            field += text[i++];
          }
        }
        TAXON_CHECK(closed, "data.bad-csv", source, ": unterminated quoted field starting on line ", open_line);
        // Anything between the closing quote and the delimiter is kept verbatim (lenient, like pandas).
        while (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r') field += text[i++];
        continue;
      }
      if (c == ',') {
        any = true;
        record.push_back(std::move(field));
        field.clear();
        ++i;
      } else if (c == '\r' || c == '\n') {
        end_record();
        if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
        ++i;
        ++line;
      } else {
        any = true;
        field += c;
        ++i;
      }
    }
    if (any || !field.empty()) end_record();
    TAXON_CHECK(!records.empty(), "data.bad-csv", source, ": empty CSV (no header row)");
    std::vector<std::string> header = std::move(records.front());
    records.erase(records.begin());
    for (std::size_t r = 0; r < records.size(); ++r) {
      // Short rows are padded with empty cells; long rows are an error (a stray delimiter shifts columns).
      TAXON_CHECK(records[r].size() <= header.size(), "data.bad-csv", source, ": row ", r + 1, " has ",
                  records[r].size(), " fields but the header has ", header.size());
      records[r].resize(header.size());
    }
    return CsvTable(std::move(header), std::move(records), source);
  }

  static CsvTable read(const std::filesystem::path& path) { return parse(io::read_file(path), path.string()); }

  const std::vector<std::string>& header() const noexcept { return header_; }
  std::int64_t num_rows() const noexcept { return static_cast<std::int64_t>(rows_.size()); }
  const std::string& source() const noexcept { return source_; }
  bool has_column(const std::string& name) const { return index_.count(name) > 0; }
  std::int64_t column(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) {
      std::string cols;
      for (const auto& h : header_) cols += (cols.empty() ? "" : ", ") + h;
      TAXON_FAIL("data.missing-column", source_, ": no column '", name, "' (columns: ", cols, ")");
    }
    return it->second;
  }
  const std::string& cell(std::int64_t row, std::int64_t col) const {
    return rows_[static_cast<std::size_t>(row)][static_cast<std::size_t>(col)];
  }
  const std::string& cell(std::int64_t row, const std::string& col) const { return cell(row, column(col)); }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
  std::string source_;
  std::unordered_map<std::string, std::int64_t> index_;
};

}  // namespace taxon::data
