#pragma once
// CLIP's text cleaning before BPE (clip/simple_tokenizer.py, open_clip tokenizer.py `_clean_lower`):
//   basic_clean:      ftfy.fix_text(t), then html.unescape twice, then str.strip();
//   whitespace_clean: runs of \s become one space, then str.strip();
//   then str.lower().
//
// What taxon implements of ftfy.fix_text (ftfy 6.3.1 defaults): everything except `fix_encoding`, i.e.
//  - per line segment, the repeat-until-unchanged loop of: unescape_html ("auto": off from the first line that
//    contains '<'), fix_c1_controls (U+0080-U+009F as sloppy Windows-1252), fix_latin_ligatures,
//    fix_character_width (U+3000 and NFKC of U+FF01-U+FFEF), uncurl_quotes, fix_line_breaks,
//    remove_terminal_escapes (ESC [ digits/';' letter), remove_control_chars, NFC;
//  - not `fix_encoding` (mojibake repair with its badness heuristic and the restore_byte_a0 /
//    replace_lossy_sequences / decode_inconsistent_utf8 steps it gates): ftfy only acts there when the text looks
//    like mojibake ("cafÃ©"), which taxon leaves as it is. Text that ftfy does not consider bad is cleaned
//    identically;
//  - fix_surrogates does not apply: input is UTF-8, and invalid UTF-8 becomes U+FFFD when decoded;
//  - remove_terminal_escapes matches ASCII digits only (Python's \d also takes other decimal digits);
//  - segments are lines only (ftfy also cuts lines longer than 1,000,000 code points).
// html.unescape is implemented completely (Python 3.11: HTML5 named references with the longest-prefix rule for
// names without ';', numeric references with the invalid-reference table), except that a decimal reference too
// long for Python's int() (over 4300 digits), which raises in Python, becomes U+FFFD.
#include "taxon/text/unicode.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace taxon::text {

namespace clean_detail {

inline bool is_ascii_digit(char32_t c) { return c >= '0' && c <= '9'; }
inline bool is_ascii_hex(char32_t c) { return is_ascii_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
inline bool is_ascii_alnum(char32_t c) { return is_ascii_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'); }

// An ASCII entity name (without '&' and ';'); nullptr when not an HTML5 name.
inline const detail::Entity* find_entity(const std::string& name) {
  auto it = std::lower_bound(std::begin(detail::kHtml5Entities), std::end(detail::kHtml5Entities), name,
                             [](const detail::Entity& e, const std::string& n) { return std::strcmp(e.name, n.c_str()) < 0; });
  return it != std::end(detail::kHtml5Entities) && name == it->name ? &*it : nullptr;
}

inline void append_entity(CodePoints& out, const detail::Entity& e) {
  out.push_back(e.first);
  if (e.second) out.push_back(e.second);
}

// Python's html._replace_charref for a numeric reference.
inline void append_numeric(CodePoints& out, std::uint64_t num) {
  for (const auto& r : detail::kInvalidCharrefs)
    if (r.code == num) {
      out += decode_utf8(r.value);
      return;
    }
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
    out.push_back(0xFFFD);
    return;
  }
  if (unicode_detail::in(detail::kInvalidCodepoints, static_cast<char32_t>(num))) return;
  out.push_back(static_cast<char32_t>(num));
}

// Accumulates a number, saturating above the code point range (the result is U+FFFD either way).
inline std::uint64_t accumulate(std::uint64_t value, unsigned digit, unsigned base) {
  return value > 0x10FFFFull * 16 ? value : value * base + digit;
}

inline unsigned hex_value(char32_t c) { return is_ascii_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10; }

}  // namespace clean_detail

// Python's html.unescape.
inline CodePoints html_unescape(std::u32string_view s) {
  using namespace clean_detail;
  if (s.find(U'&') == std::u32string_view::npos) return CodePoints(s);
  CodePoints out;
  out.reserve(s.size());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    if (s[i] != U'&') {
      out.push_back(s[i++]);
      continue;
    }
    std::size_t j = i + 1;
    if (j < n && s[j] == U'#') {
      const bool hex = j + 1 < n && (s[j + 1] == U'x' || s[j + 1] == U'X');
      std::size_t k = j + 1 + (hex ? 1 : 0);
      const std::size_t digits_start = k;
      std::uint64_t num = 0;
      while (k < n && (hex ? is_ascii_hex(s[k]) : is_ascii_digit(s[k]))) {
        num = accumulate(num, hex ? hex_value(s[k]) : s[k] - U'0', hex ? 16 : 10);
        ++k;
      }
      if (k == digits_start) {  // "&#" / "&#x" without digits: not a reference
        out.push_back(s[i++]);
        continue;
      }
      if (k < n && s[k] == U';') ++k;
      append_numeric(out, num);
      i = k;
      continue;
    }
    // Named: up to 32 characters other than \t \n \f space < & # ;, then an optional ';'.
    std::size_t k = j;
    while (k < n && k - j < 32) {
      const char32_t c = s[k];
      if (c == U'\t' || c == U'\n' || c == U'\f' || c == U' ' || c == U'<' || c == U'&' || c == U'#' || c == U';') break;
      ++k;
    }
    if (k == j) {
      out.push_back(s[i++]);
      continue;
    }
    const bool semicolon = k < n && s[k] == U';';
    const std::size_t name_end = k;
    if (semicolon) ++k;
    // The reference as Python's group(1): name plus the ';' when present.
    std::string name;
    bool ascii = true;
    for (std::size_t p = j; p < name_end; ++p) {
      if (s[p] >= 0x80) ascii = false;
      name += static_cast<char>(s[p] & 0x7F);
    }
    const detail::Entity* whole = ascii ? find_entity(name) : nullptr;
    if (whole && (whole->flags & (semicolon ? 1 : 2))) {
      append_entity(out, *whole);
      i = k;
      continue;
    }
    // Longest prefix (at least two characters) that is a reference valid without ';'.
    const std::size_t len = name_end - j + (semicolon ? 1 : 0);
    bool replaced = false;
    for (std::size_t x = len - 1; x >= 2; --x) {
      if (x > name_end - j) continue;  // that prefix would include the ';'
      bool prefix_ascii = true;
      for (std::size_t p = j; p < j + x; ++p) prefix_ascii = prefix_ascii && s[p] < 0x80;
      if (!prefix_ascii) continue;
      const detail::Entity* e = find_entity(name.substr(0, x));
      if (e && (e->flags & 2)) {
        append_entity(out, *e);
        out.append(s.substr(j + x, k - (j + x)));
        replaced = true;
        break;
      }
    }
    if (!replaced) out.append(s.substr(i, k - i));
    i = k;
  }
  return out;
}

namespace clean_detail {

inline bool is_control_to_remove(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

// ftfy's LIGATURES table (chardata.py).
inline const char32_t* ligature(char32_t c) {
  switch (c) {
    case 0x132: return U"IJ";
    case 0x133: return U"ij";
    case 0x149: return U"\u02BCn";
    case 0x1F1: return U"DZ";
    case 0x1F2: return U"Dz";
    case 0x1F3: return U"dz";
    case 0x1C4: return U"D\u017D";
    case 0x1C5: return U"D\u017E";
    case 0x1C6: return U"d\u017E";
    case 0x1C7: return U"LJ";
    case 0x1C8: return U"Lj";
    case 0x1C9: return U"lj";
    case 0x1CA: return U"NJ";
    case 0x1CB: return U"Nj";
    case 0x1CC: return U"nj";
    case 0xFB00: return U"ff";
    case 0xFB01: return U"fi";
    case 0xFB02: return U"fl";
    case 0xFB03: return U"ffi";
    case 0xFB04: return U"ffl";
    case 0xFB05: return U"\u017Ft";
    case 0xFB06: return U"st";
    default: return nullptr;
  }
}

// ftfy's unescape_html: "&name;" / "&#...;" with 1-24 ASCII letters or digits, through ftfy's entity table
// (HTML5 names with ';' plus upper-cased variants); numeric ones only when html.unescape leaves no ';'.
inline CodePoints ftfy_unescape(const CodePoints& s) {
  CodePoints out;
  out.reserve(s.size());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    if (s[i] != U'&') {
      out.push_back(s[i++]);
      continue;
    }
    std::size_t j = i + 1;
    const bool numeric = j < n && s[j] == U'#';
    if (numeric) ++j;
    std::size_t k = j;
    while (k < n && k - j < 24 && is_ascii_alnum(s[k])) ++k;
    if (k == j || k >= n || s[k] != U';') {
      out.push_back(s[i++]);
      continue;
    }
    const CodePoints match(s.begin() + static_cast<std::ptrdiff_t>(i), s.begin() + static_cast<std::ptrdiff_t>(k + 1));
    i = k + 1;
    if (numeric) {
      const CodePoints unescaped = html_unescape(match);
      out += unescaped.find(U';') == CodePoints::npos ? unescaped : match;
      continue;
    }
    std::string name;
    for (std::size_t p = j; p < k; ++p) name += static_cast<char>(s[p]);
    if (const auto* e = find_entity(name); e && (e->flags & 1)) {
      append_entity(out, *e);
      continue;
    }
    auto it = std::lower_bound(std::begin(detail::kFtfyUpperEntities), std::end(detail::kFtfyUpperEntities), name,
                               [](const detail::UpperEntity& e, const std::string& v) { return std::strcmp(e.name, v.c_str()) < 0; });
    if (it != std::end(detail::kFtfyUpperEntities) && name == it->name) {
      for (char32_t c : {it->first, it->second, it->third})
        if (c) out.push_back(c);
      continue;
    }
    out += match;
  }
  return out;
}

// One pass of ftfy's fixes after unescape_html (fix_encoding excluded), in ftfy's order.
inline CodePoints ftfy_fix_pass(const CodePoints& in) {
  CodePoints s;
  s.reserve(in.size());
  // fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes: character maps, applied in order.
  for (char32_t c : in) {
    if (c >= 0x80 && c <= 0x9F) c = detail::kC1Windows1252[c - 0x80];
    if (const char32_t* lig = ligature(c)) {
      s += lig;
      continue;
    }
    s.push_back(c);
  }
  CodePoints w;
  w.reserve(s.size());
  for (char32_t c : s) {
    if (c == 0x3000 || (c >= 0xFF01 && c <= 0xFFEF)) {
      bool mapped = false;
      for (const auto& e : detail::kWidthMap)
        if (e.code == c) {
          w += decode_utf8(e.value);
          mapped = true;
          break;
        }
      if (mapped) continue;
    }
    if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) c = U'\'';
    else if (c >= 0x201C && c <= 0x201F) c = U'"';
    w.push_back(c);
  }
  // fix_line_breaks
  s.clear();
  for (std::size_t i = 0; i < w.size(); ++i) {
    const char32_t c = w[i];
    if (c == U'\r') {
      s.push_back(U'\n');
      if (i + 1 < w.size() && w[i + 1] == U'\n') ++i;
    } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
      s.push_back(U'\n');
    } else {
      s.push_back(c);
    }
  }
  // remove_terminal_escapes: ESC '[' (digit | ';')* letter
  w.clear();
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == 0x1B && i + 1 < s.size() && s[i + 1] == U'[') {
      std::size_t k = i + 2;
      while (k < s.size() && (is_ascii_digit(s[k]) || s[k] == U';')) ++k;
      if (k < s.size() && (s[k] | 0x20) >= 'a' && (s[k] | 0x20) <= 'z') {
        i = k;
        continue;
      }
    }
    w.push_back(s[i]);
  }
  // remove_control_chars
  s.clear();
  for (char32_t c : w)
    if (!is_control_to_remove(c)) s.push_back(c);
  return nfc(s);
}

}  // namespace clean_detail

// ftfy.fix_text with the default configuration, minus fix_encoding (see the header comment).
inline CodePoints fix_text(const CodePoints& text) {
  CodePoints out;
  bool unescape = true;  // "auto": off from the first line containing '<' on
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t brk = text.find(U'\n', pos);
    brk = brk == CodePoints::npos ? text.size() : brk + 1;
    CodePoints segment = text.substr(pos, brk - pos);
    if (unescape && segment.find(U'<') != CodePoints::npos) unescape = false;
    while (true) {
      const CodePoints before = segment;
      if (unescape) segment = clean_detail::ftfy_unescape(segment);
      segment = clean_detail::ftfy_fix_pass(segment);
      if (segment == before) break;
    }
    out += segment;
    pos = brk;
  }
  return out;
}

// Python's str.strip() (str.isspace characters).
inline CodePoints strip(std::u32string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && is_python_space(s[b])) ++b;
  while (e > b && is_python_space(s[e - 1])) --e;
  return CodePoints(s.substr(b, e - b));
}

// CLIP's whitespace_clean: regex \s+ -> ' ', then strip().
inline CodePoints whitespace_clean(std::u32string_view s) {
  CodePoints out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    if (is_regex_space(s[i])) {
      while (i < s.size() && is_regex_space(s[i])) ++i;
      out.push_back(U' ');
    } else {
      out.push_back(s[i++]);
    }
  }
  return strip(out);
}

// CLIP's basic_clean: fix_text, html.unescape twice, strip().
inline CodePoints basic_clean(const CodePoints& s) { return strip(html_unescape(html_unescape(fix_text(s)))); }

// The full cleaning the tokenizer applies: whitespace_clean(basic_clean(text)).lower().
inline CodePoints clean_for_clip(std::string_view utf8) { return to_lower(whitespace_clean(basic_clean(decode_utf8(utf8)))); }

}  // namespace taxon::text
