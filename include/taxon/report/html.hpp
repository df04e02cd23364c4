#pragma once
// HTML building blocks for the run report: escaping (every string from a run directory is user data: taxa names,
// paths, config values), number formatting that prints "n/a" for NaN, and tables.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace taxon::report {

// Text and attribute values: escapes the five characters HTML gives meaning to.
inline std::string escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// A fraction as "12.34%", NaN as "n/a".
inline std::string percent(double fraction, int decimals = 2) {
  if (!std::isfinite(fraction)) return "n/a";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f%%", decimals, 100.0 * fraction);
  return buf;
}

// Fixed decimals, NaN as "n/a".
inline std::string fixed(double v, int decimals = 3) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// Up to `digits` significant digits without trailing zeros ("0.001", "1.5e-05", "12345"), NaN as "n/a".
inline std::string number(double v, int digits = 4) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

// Whole numbers with thin-space thousands separators: 20 000 reads faster than 20000 in a table.
inline std::string count(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += "\u2009";
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

// Seconds as "0.8 s", "42 s", "3 min 05 s", "1 h 02 min".
inline std::string duration(double seconds) {
  if (!std::isfinite(seconds)) return "n/a";
  char buf[64];
  if (seconds < 10) std::snprintf(buf, sizeof buf, "%.1f s", seconds);
  else if (seconds < 60) std::snprintf(buf, sizeof buf, "%.0f s", seconds);
  else if (seconds < 3600) std::snprintf(buf, sizeof buf, "%d min %02d s", static_cast<int>(seconds) / 60, static_cast<int>(seconds) % 60);
  else std::snprintf(buf, sizeof buf, "%d h %02d min", static_cast<int>(seconds) / 3600, static_cast<int>(seconds) % 3600 / 60);
  return buf;
}

// One table cell: `html` is already escaped markup; `numeric` right-aligns it.
struct Cell {
  std::string html;
  bool numeric = false;
  std::string css_class;  // extra classes, e.g. "up", "down", "best"
  std::string title;      // hover text (plain, escaped on output)

  static Cell text(std::string_view s) { return {escape(s), false, {}, {}}; }
  static Cell num(std::string s, std::string css = {}) { return {escape(s), true, std::move(css), {}}; }
};

struct HeaderCell {
  std::string text;
  int colspan = 1;
  bool numeric = false;
};

// A table with optional grouped header rows (each a list of possibly spanning cells) above the last header row.
struct Table {
  std::vector<std::vector<HeaderCell>> header_rows;
  std::vector<std::vector<Cell>> rows;
  std::string css_class;
  std::string caption;  // plain text under the table

  std::string html() const {
    std::string out = "<div class=\"table-wrap\"><table" + (css_class.empty() ? std::string() : " class=\"" + escape(css_class) + "\"") + ">";
    if (!header_rows.empty()) {
      out += "<thead>";
      for (const auto& hr : header_rows) {
        out += "<tr>";
        for (const auto& h : hr) {
          out += "<th";
          if (h.colspan > 1) out += " colspan=\"" + std::to_string(h.colspan) + "\"";
          if (h.numeric) out += " class=\"num\"";
          out += " scope=\"col\">" + escape(h.text) + "</th>";
        }
        out += "</tr>";
      }
      out += "</thead>";
    }
    out += "<tbody>";
    for (const auto& r : rows) {
      out += "<tr>";
      for (const auto& c : r) {
        std::string cls = c.numeric ? "num" : "";
        if (!c.css_class.empty()) cls += (cls.empty() ? "" : " ") + c.css_class;
        out += "<td";
        if (!cls.empty()) out += " class=\"" + escape(cls) + "\"";
        if (!c.title.empty()) out += " title=\"" + escape(c.title) + "\"";
        out += ">" + c.html + "</td>";
      }
      out += "</tr>";
    }
    out += "</tbody></table>";
    if (!caption.empty()) out += "<p class=\"caption\">" + escape(caption) + "</p>";
    return out + "</div>";
  }
};

}  // namespace taxon::report
