// docs/errors.md lists every error id taxon raises, and nothing else. The ids are found in the sources: the string
// literals in the id argument of every TAXON_CHECK (second), TAXON_FAIL and taxon::Error (first) under include/ and
// examples/. The convention is checked too: <area>.<what>, <area> the include/taxon folder that raises it (cli in
// the examples), <what> kebab-case, "bad-option" singular.
#include "taxon/core/error.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace test_error_ids {

namespace fs = std::filesystem;

inline std::string read_source(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Index just past the string or character literal that starts at text[i].
inline std::size_t skip_literal(const std::string& text, std::size_t i) {
  const char quote = text[i];
  for (++i; i < text.size() && text[i] != quote; ++i)
    if (text[i] == '\\') ++i;
  return i + 1;
}

// The text with every comment replaced by spaces (newlines kept), literals untouched.
inline std::string blank_comments(const std::string& text) {
  std::string out = text;
  for (std::size_t i = 0; i < out.size();) {
    if (out[i] == '"' || out[i] == '\'') {
      i = skip_literal(out, i);
    } else if (out.compare(i, 2, "//") == 0) {
      for (; i < out.size() && out[i] != '\n'; ++i) out[i] = ' ';
    } else if (out.compare(i, 2, "/*") == 0) {
      const std::size_t end = out.find("*/", i + 2);
      const std::size_t stop = end == std::string::npos ? out.size() : end + 2;
      for (; i < stop; ++i)
        if (out[i] != '\n') out[i] = ' ';
    } else {
      ++i;
    }
  }
  return out;
}

// The text with the contents of string and character literals replaced by spaces (same offsets), for finding
// calls without matching text inside messages.
inline std::string blank_literals(const std::string& text) {
  std::string out = text;
  for (std::size_t i = 0; i < out.size();) {
    if (out[i] != '"' && out[i] != '\'') {
      ++i;
      continue;
    }
    const std::size_t end = std::min(skip_literal(out, i), out.size());
    for (std::size_t k = i + 1; k + 1 < end; ++k)
      if (out[k] != '\n') out[k] = ' ';
    i = end;
  }
  return out;
}

// The top-level arguments of the call whose '(' is at text[open].
inline std::vector<std::string> call_arguments(const std::string& text, std::size_t open) {
  std::vector<std::string> args(1);
  int depth = 0;
  for (std::size_t i = open + 1; i < text.size();) {
    const char c = text[i];
    if (c == '"' || c == '\'') {
      const std::size_t end = skip_literal(text, i);
      args.back() += text.substr(i, end - i);
      i = end;
      continue;
    }
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') {
      if (depth == 0) return args;
      --depth;
    }
    if (c == ',' && depth == 0) args.emplace_back();
    else args.back() += c;
    ++i;
  }
  return args;
}

struct Raise {
  std::string id;
  std::string where;  // file:line
};

struct Scan {
  std::vector<Raise> raises;
  std::vector<std::string> problems;
};

inline Scan scan_sources(const fs::path& root) {
  Scan scan;
  const std::regex call(R"((^|[^A-Za-z0-9_])(TAXON_CHECK|TAXON_FAIL|Error)\s*\()");
  const std::regex literal(R"re("((?:[^"\\]|\\.)*)")re");
  const std::regex id_form(R"(^([a-z]+)\.([a-z0-9]+(-[a-z0-9]+)*)$)");
  for (const char* top : {"include", "examples"}) {
    for (const auto& entry : fs::recursive_directory_iterator(root / top)) {
      const auto ext = entry.path().extension().string();
      if (!entry.is_regular_file() || (ext != ".hpp" && ext != ".cpp" && ext != ".cuh" && ext != ".inl")) continue;
      const auto rel = fs::relative(entry.path(), root);
      if (rel == fs::path("include/taxon/core/error.hpp")) continue;  // defines the mechanism, raises nothing
      std::vector<std::string> parts;
      for (const auto& p : rel) parts.push_back(p.string());
      const std::string area = parts[0] == "examples" ? "cli" : parts.size() > 3 ? parts[2] : "";
      const std::string text = blank_comments(read_source(entry.path()));
      const std::string code = blank_literals(text);
      for (auto it = std::sregex_iterator(code.begin(), code.end(), call); it != std::sregex_iterator(); ++it) {
        const auto& m = *it;
        const std::size_t open = static_cast<std::size_t>(m.position(0) + m.length(0)) - 1;
        const std::size_t line_start = text.rfind('\n', open) + 1;
        if (text.compare(line_start, 7, "#define") == 0) continue;
        const auto before = text.begin() + static_cast<std::ptrdiff_t>(open);
        const int line = 1 + static_cast<int>(std::count(text.begin(), before, '\n'));
        const std::string where = rel.string() + ":" + std::to_string(line);
        const auto args = call_arguments(text, open);
        const std::size_t index = m[2] == "TAXON_CHECK" ? 1 : 0;
        if (args.size() <= index) {
          scan.problems.push_back(where + ": cannot find the id argument");
          continue;
        }
        const std::string& id_arg = args[index];
        bool any = false;
        for (auto l = std::sregex_iterator(id_arg.begin(), id_arg.end(), literal); l != std::sregex_iterator(); ++l) {
          any = true;
          const std::string id = (*l)[1];
          std::smatch parts_of_id;
          if (!std::regex_match(id, parts_of_id, id_form)) {
            scan.problems.push_back(where + ": id '" + id + "' is not <area>.<kebab-case-what>");
          } else if (parts_of_id[1] != area) {
            const std::string place = area == "cli" ? "an example" : "include/taxon/" + area;
            scan.problems.push_back(where + ": id '" + id + "' is raised in " + place + ", so its area must be '" +
                                    area + "'");
          } else if (parts_of_id[2].str().find("bad-options") != std::string::npos) {
            scan.problems.push_back(where + ": id '" + id + "': invalid options are <area>.bad-option (singular)");
          }
          scan.raises.push_back({id, where});
        }
        if (!any)
          scan.problems.push_back(where + ": the id is not a string literal (" + id_arg +
                                  "); write it out so it can be found");
      }
    }
  }
  return scan;
}

// id -> meaning, from the table rows of docs/errors.md whose first cell is an id.
inline std::map<std::string, std::string> documented_ids(const fs::path& file, std::vector<std::string>& problems) {
  std::map<std::string, std::string> out;
  std::istringstream in(read_source(file));
  const std::regex row(R"(^\|\s*`?([a-z]+\.[a-z0-9-]+)`?\s*\|([^|]*)\|)");
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    std::smatch m;
    if (!std::regex_search(line, m, row)) continue;
    const std::string meaning = std::regex_replace(m[2].str(), std::regex(R"(^\s+|\s+$)"), "");
    if (meaning.empty())
      problems.push_back("docs/errors.md:" + std::to_string(number) + ": " + m[1].str() + " has no meaning");
    if (!out.emplace(m[1].str(), meaning).second)
      problems.push_back("docs/errors.md:" + std::to_string(number) + ": " + m[1].str() + " is listed twice");
  }
  return out;
}

}  // namespace test_error_ids

TEST_CASE("every error id raised under include/ and examples/ is in docs/errors.md, and only those", "[core][errors]") {
  using namespace test_error_ids;
  const fs::path root = TAXON_SOURCE_DIR;
  Scan scan = scan_sources(root);
  REQUIRE(scan.raises.size() > 100);  // the scan sees the sources (not an empty directory)
  const auto docs = documented_ids(root / "docs" / "errors.md", scan.problems);
  std::set<std::string> raised;
  for (const auto& r : scan.raises) {
    raised.insert(r.id);
    if (!docs.count(r.id)) scan.problems.push_back(r.where + ": " + r.id + " is not in docs/errors.md");
  }
  for (const auto& [id, meaning] : docs)
    if (!raised.count(id)) scan.problems.push_back("docs/errors.md lists " + id + ", which nothing raises any more");
  std::string report;
  for (const auto& p : scan.problems) report += "\n  " + p;
  INFO("problems:" << report);
  CHECK(scan.problems.empty());
}

TEST_CASE("the error-id scan reads ids the way they are written", "[core][errors]") {
  using namespace test_error_ids;
  const std::string text = blank_comments(
      "// TAXON_FAIL(\"core.in-comment\", 1)\n"
      "TAXON_CHECK(s == \"a,b\" && f(x, y), \"core.second-argument\", \"msg, with comma\");\n"
      "/* TAXON_CHECK(x, \"core.in-block\") */ TAXON_FAIL(flag ? \"core.one\" : \"core.two\", ')');\n");
  CHECK(text.find("core.in-comment") == std::string::npos);
  CHECK(text.find("core.in-block") == std::string::npos);
  const auto check_args = call_arguments(text, text.find("TAXON_CHECK(") + 11);
  REQUIRE(check_args.size() == 3);
  CHECK(check_args[1] == " \"core.second-argument\"");
  const auto fail_args = call_arguments(text, text.find("TAXON_FAIL(") + 10);
  REQUIRE(fail_args.size() == 2);
  CHECK(fail_args[0] == "flag ? \"core.one\" : \"core.two\"");
  const std::string code = blank_literals("TAXON_FAIL(\"x.y\", \"TAXON_CHECK(a, b)\", 'c');");
  CHECK(code == "TAXON_FAIL(\"   \", \"                 \", ' ');");
}
