#pragma once
// The Unicode operations CLIP's tokenizer relies on, matching the Python stack upstream runs on: UTF-8 <-> code
// points (invalid bytes become U+FFFD, as bytes.decode(errors="replace") would), the `regex` module's \p{L},
// \p{N} and \s, str.isspace, str.lower() (incl. U+0130 and the final-sigma rule) and NFC normalisation. The data
// comes from detail/unicode_tables.hpp, generated from Python by scripts/text/gen_unicode_tables.py.
#include "taxon/text/detail/unicode_tables.hpp"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace taxon::text {

using CodePoints = std::u32string;

// Strict UTF-8 decoding: overlong forms, surrogates and truncated sequences become one U+FFFD per maximal invalid
// subpart, as Python's decoder with errors="replace" does.
inline CodePoints decode_utf8(std::string_view s) {
  CodePoints out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char b = p[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    int need = 0;
    char32_t cp = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (b >= 0xC2 && b <= 0xDF) need = 1, cp = b & 0x1F;
    else if (b >= 0xE0 && b <= 0xEF) need = 2, cp = b & 0x0F, lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
    else if (b >= 0xF0 && b <= 0xF4) need = 3, cp = b & 0x07, lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
    else {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    int got = 0;
    for (; got < need && j < n; ++got, ++j) {
      const unsigned char c = p[j];
      if (got == 0 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) break;
      cp = (cp << 6) | (c & 0x3F);
    }
    if (got == need) out.push_back(cp);
    else out.push_back(0xFFFD);
    i = j;
  }
  return out;
}

inline void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

inline std::string encode_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

namespace unicode_detail {

template <typename Range, std::size_t N>
inline const Range* find_range(const Range (&table)[N], char32_t c) {
  auto it = std::upper_bound(std::begin(table), std::end(table), c,
                             [](char32_t v, const Range& r) { return v < r.first; });
  if (it == std::begin(table)) return nullptr;
  --it;
  return c <= it->last ? &*it : nullptr;
}

template <std::size_t N>
inline bool in(const detail::CodeRange (&table)[N], char32_t c) {
  return find_range(table, c) != nullptr;
}

}  // namespace unicode_detail

// The `regex` module's [\p{L}] (letters), [\p{N}] (numbers) and \s; Python's str.isspace.
inline bool is_letter(char32_t c) {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  return unicode_detail::in(detail::kLetters, c);
}
inline bool is_number(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return unicode_detail::in(detail::kNumbers, c);
}
inline bool is_regex_space(char32_t c) { return unicode_detail::in(detail::kRegexSpace, c); }
inline bool is_python_space(char32_t c) { return unicode_detail::in(detail::kPythonSpace, c); }

// Python's str.lower(): one code point to one (or, for U+0130, two); U+03A3 by the final-sigma rule.
inline CodePoints to_lower(std::u32string_view s) {
  using unicode_detail::in;
  CodePoints out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c < 0x80) {
      out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
      continue;
    }
    if (c == 0x3A3) {
      // Final_Sigma: a Cased letter before (skipping Case_Ignorable) and none after.
      std::size_t j = i;
      char32_t prev = 0;
      bool found = false;
      while (j > 0) {
        prev = s[--j];
        if (!in(detail::kCaseIgnorable, prev)) {
          found = true;
          break;
        }
      }
      bool final_sigma = found && in(detail::kCasedNotIgnorable, prev);
      if (final_sigma) {
        std::size_t k = i + 1;
        while (k < s.size() && in(detail::kCaseIgnorable, s[k])) ++k;
        final_sigma = k == s.size() || !in(detail::kCasedNotIgnorable, s[k]);
      }
      out.push_back(final_sigma ? 0x3C2 : 0x3C3);
      continue;
    }
    bool special = false;
    for (const auto& e : detail::kLowerSpecial)
      if (e.code == c) {
        const CodePoints v = decode_utf8(e.value);
        out += v;
        special = true;
      }
    if (special) continue;
    const auto* run = unicode_detail::find_range(detail::kLowerRuns, c);
    if (run && (c - run->first) % run->stride == 0) out.push_back(static_cast<char32_t>(static_cast<std::int64_t>(c) + run->delta));
    else out.push_back(c);
  }
  return out;
}

namespace unicode_detail {

inline constexpr char32_t kHangulBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
inline constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                          kSCount = kLCount * kNCount;

inline std::uint8_t combining_class(char32_t c) {
  if (c < 0x300) return 0;
  const auto* r = find_range(detail::kCombiningClasses, c);
  return r ? r->value : 0;
}

inline const detail::Decomposition* decomposition(char32_t c) {
  auto it = std::lower_bound(std::begin(detail::kDecompositions), std::end(detail::kDecompositions), c,
                             [](const detail::Decomposition& d, char32_t v) { return d.code < v; });
  return it != std::end(detail::kDecompositions) && it->code == c ? &*it : nullptr;
}

inline void decompose(char32_t c, CodePoints& out) {
  if (c >= kHangulBase && c < kHangulBase + kSCount) {
    const char32_t s = c - kHangulBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (c >= 0xC0) {
    if (const auto* d = decomposition(c)) {
      decompose(d->first, out);
      if (d->second) decompose(d->second, out);
      return;
    }
  }
  out.push_back(c);
}

// Primary composite of (a, b), or 0; the pair index is built once from the decomposition table.
inline char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kHangulBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kHangulBase && a < kHangulBase + kSCount && (a - kHangulBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  struct Pair {
    char32_t a, b, c;
  };
  static const auto pairs = [] {
    std::vector<Pair> v;
    for (const auto& d : detail::kDecompositions)
      if (d.composes) v.push_back({d.first, d.second, d.code});
    std::sort(v.begin(), v.end(), [](const Pair& x, const Pair& y) { return x.a != y.a ? x.a < y.a : x.b < y.b; });
    return v;
  }();
  auto it = std::lower_bound(pairs.begin(), pairs.end(), Pair{a, b, 0},
                             [](const Pair& x, const Pair& y) { return x.a != y.a ? x.a < y.a : x.b < y.b; });
  return it != pairs.end() && it->a == a && it->b == b ? it->c : 0;
}

}  // namespace unicode_detail

// Canonical decomposition, canonical ordering, canonical composition (UAX #15), as unicodedata.normalize("NFC").
inline CodePoints nfc(std::u32string_view s) {
  using namespace unicode_detail;
  if (std::all_of(s.begin(), s.end(), [](char32_t c) { return c < 0x300; })) return CodePoints(s);
  CodePoints d;
  d.reserve(s.size() + 8);
  for (char32_t c : s) decompose(c, d);
  // Stable sort of each run of non-starters by combining class.
  for (std::size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + static_cast<std::ptrdiff_t>(i), d.begin() + static_cast<std::ptrdiff_t>(j),
                     [](char32_t x, char32_t y) { return combining_class(x) < combining_class(y); });
    i = j;
  }
  if (d.empty()) return d;
  std::size_t starter = 0, out = 1;
  int last_class = combining_class(d[0]) == 0 ? 0 : 256;  // a leading non-starter blocks composition
  for (std::size_t i = 1; i < d.size(); ++i) {
    const char32_t c = d[i];
    const int cls = combining_class(c);
    const char32_t composite = last_class == 256 ? 0 : compose(d[starter], c);
    if (composite && (last_class < cls || last_class == 0)) {
      d[starter] = composite;
      continue;
    }
    if (cls == 0) starter = out, last_class = 0;
    else last_class = cls;
    d[out++] = c;
  }
  d.resize(out);
  return d;
}

}  // namespace taxon::text
