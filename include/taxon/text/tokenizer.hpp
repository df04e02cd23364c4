#pragma once
// CLIP's byte-level BPE tokenizer, as OpenAI's SimpleTokenizer (clip/simple_tokenizer.py) and open_clip's
// tokenize() (context length 77; longer texts are cut and end with the end-of-text token):
//  - text: clean_for_clip (taxon/text/clean.hpp), then the pre-split of upstream's pattern
//    `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+` (IGNORECASE: the
//    long s 'ſ' counts as 's', the one other case-insensitive match once the text is lower-cased);
//  - each piece's UTF-8 bytes through bytes_to_unicode, the last symbol with "</w>", then merges by rank;
//  - vocabulary: 256 byte symbols, the same with "</w>", one entry per merge line, <|startoftext|>, <|endoftext|>.
// The merges file is the user's bpe_simple_vocab_16e6.txt.gz (gzip or plain): its first line is a header, and
// at most 49152-256-2 lines after it are read, split on '\n' as upstream does (so a short file that ends with a
// newline gets one empty vocabulary entry, shifting the special tokens by one, exactly as in Python).
// open_clip differs only in the spelling of the special tokens inside text (<start_of_text>, <end_of_text>):
// TokenizerOptions::special_tokens picks which literal strings are recognised; the ids are the same.
#include "taxon/core/error.hpp"
#include "taxon/core/options.hpp"
#include "taxon/data/idx_dataset.hpp"
#include "taxon/text/clean.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace taxon::text {

enum class SpecialTokens { openai, open_clip };

struct TokenizerOptions {
  TAXON_ARG(int64_t, context_length) = 77;
  // Which literal spellings of the start/end tokens inside a text become the special ids.
  TAXON_ARG(SpecialTokens, special_tokens) = SpecialTokens::openai;
  // Merge lines read after the header (upstream: 49152 - 256 - 2).
  TAXON_ARG(int64_t, max_merges) = 49152 - 256 - 2;
};

// The file upstream ships inside the `clip` and `open_clip` Python packages.
inline constexpr const char* kVocabFileName = "bpe_simple_vocab_16e6.txt.gz";

class Tokenizer {
 public:
  // Reads a merges file (gzip or plain text). A missing file is "text.missing-vocab" with where to find one.
  static Tokenizer from_file(const std::filesystem::path& path, TokenizerOptions options = {}) {
    TAXON_CHECK(std::filesystem::is_regular_file(path), "text.missing-vocab", "BPE vocabulary not found: ",
                path.string(), ". ", where_to_find_vocab());
    return from_merges(data::detail::read_maybe_gzip(path), options, path.string());
  }

  // From the merges file's text (header line first).
  static Tokenizer from_merges(std::string_view text, TokenizerOptions options = {}, const std::string& source = "merges") {
    TAXON_CHECK(options.context_length() >= 2, "text.bad-option", "context_length ", options.context_length(),
                " must leave room for the start and end tokens");
    Tokenizer t;
    t.options_ = options;
    t.source_ = source;
    // bytes_to_unicode: printable Latin-1 bytes map to themselves, the others to U+0100 onwards, in byte order.
    std::array<bool, 256> printable{};
    std::vector<int> order;
    for (int b = '!'; b <= '~'; ++b) order.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) order.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) order.push_back(b);
    for (int b : order) printable[static_cast<std::size_t>(b)] = true;
    int extra = 0;
    std::array<char32_t, 256> byte_char{};
    for (int b : order) byte_char[static_cast<std::size_t>(b)] = static_cast<char32_t>(b);
    for (int b = 0; b < 256; ++b)
      if (!printable[static_cast<std::size_t>(b)]) {
        order.push_back(b);
        byte_char[static_cast<std::size_t>(b)] = static_cast<char32_t>(256 + extra++);
      }
    t.byte_char_cp_ = byte_char;
    for (int b = 0; b < 256; ++b) t.byte_char_[static_cast<std::size_t>(b)] = encode_utf8(std::u32string(1, byte_char[static_cast<std::size_t>(b)]));
    std::vector<std::string> vocab;
    for (int b : order) vocab.push_back(t.byte_char_[static_cast<std::size_t>(b)]);
    for (int b : order) vocab.push_back(t.byte_char_[static_cast<std::size_t>(b)] + "</w>");

    // Lines 1 .. max_merges after the header; each line's whitespace-separated parts, joined, is a vocab entry.
    std::vector<std::vector<std::string>> merges;
    std::size_t pos = text.find('\n');
    TAXON_CHECK(pos != std::string_view::npos, "text.bad-vocab", source,
                ": no merge lines after the header (is this a CLIP bpe_simple_vocab file?)");
    ++pos;
    while (static_cast<int64_t>(merges.size()) < options.max_merges()) {
      const std::size_t end = text.find('\n', pos);
      const std::string_view line = text.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
      merges.push_back(split_whitespace(line));
      if (end == std::string_view::npos) break;
      pos = end + 1;
    }
    for (const auto& m : merges) {
      std::string joined;
      for (const auto& part : m) joined += part;
      vocab.push_back(joined);
    }
    vocab.push_back("<|startoftext|>");
    vocab.push_back("<|endoftext|>");
    // dict(zip(vocab, range)): a repeated string keeps its last id.
    for (std::size_t i = 0; i < vocab.size(); ++i) t.encoder_[vocab[i]] = static_cast<int64_t>(i);
    t.decoder_.resize(vocab.size());
    for (const auto& [s, id] : t.encoder_) t.decoder_[static_cast<std::size_t>(id)] = s;
    t.sot_ = t.encoder_.at("<|startoftext|>");
    t.eot_ = t.encoder_.at("<|endoftext|>");
    for (int b = 0; b < 256; ++b) {
      t.byte_id_[static_cast<std::size_t>(b)] = t.encoder_.at(t.byte_char_[static_cast<std::size_t>(b)]);
      t.byte_end_id_[static_cast<std::size_t>(b)] = t.encoder_.at(t.byte_char_[static_cast<std::size_t>(b)] + "</w>");
    }
    // Ranks by symbol ids; a pair listed twice keeps its last rank (dict semantics). A merge of symbols that never
    // exist cannot fire and is left out.
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const auto& m = merges[r];
      if (m.size() != 2) continue;
      auto a = t.encoder_.find(m[0]), b = t.encoder_.find(m[1]);
      if (a == t.encoder_.end() || b == t.encoder_.end()) continue;
      t.ranks_[key(a->second, b->second)] = Merge{static_cast<int64_t>(r), t.encoder_.at(m[0] + m[1])};
    }
    return t;
  }

  // Token ids of one text, without the start/end tokens (SimpleTokenizer.encode).
  std::vector<int64_t> encode(std::string_view utf8) const {
    std::vector<int64_t> ids;
    const CodePoints text = clean_for_clip(utf8);
    for (const auto& piece : pre_split(text)) {
      if (piece.special >= 0) {
        ids.push_back(piece.special);
        continue;
      }
      bpe(text.substr(piece.begin, piece.end - piece.begin), ids);
    }
    return ids;
  }

  // [texts, context_length] int64: start, tokens, end, zero padding; too long: cut, the last id set to end.
  at::Tensor tokenize(const std::vector<std::string>& texts, int64_t context_length = 0) const {
    const int64_t ctx = context_length > 0 ? context_length : options_.context_length();
    at::Tensor out = at::zeros({static_cast<int64_t>(texts.size()), ctx}, at::kLong);
    auto acc = out.accessor<int64_t, 2>();
    for (std::size_t i = 0; i < texts.size(); ++i) {
      std::vector<int64_t> ids{sot_};
      const auto body = encode(texts[i]);
      ids.insert(ids.end(), body.begin(), body.end());
      ids.push_back(eot_);
      if (static_cast<int64_t>(ids.size()) > ctx) {
        ids.resize(static_cast<std::size_t>(ctx));
        ids.back() = eot_;
      }
      for (std::size_t j = 0; j < ids.size(); ++j) acc[static_cast<int64_t>(i)][static_cast<int64_t>(j)] = ids[j];
    }
    return out;
  }

  // SimpleTokenizer.decode: symbols back to bytes (invalid UTF-8 replaced), "</w>" -> ' '.
  std::string decode(const std::vector<int64_t>& ids) const {
    std::string symbols;
    for (auto id : ids) {
      TAXON_CHECK(id >= 0 && id < static_cast<int64_t>(decoder_.size()), "text.bad-token", "token id ", id,
                  " outside the vocabulary [0, ", decoder_.size(), ")");
      symbols += decoder_[static_cast<std::size_t>(id)];
    }
    std::string bytes;
    for (char32_t c : decode_utf8(symbols)) {
      const auto it = std::find(byte_char_cp_.begin(), byte_char_cp_.end(), c);
      if (it != byte_char_cp_.end()) bytes += static_cast<char>(it - byte_char_cp_.begin());
    }
    const std::string text = encode_utf8(decode_utf8(bytes));
    std::string out;
    for (std::size_t i = 0; i < text.size();) {
      if (text.compare(i, 4, "</w>") == 0) {
        out += ' ';
        i += 4;
      } else {
        out += text[i++];
      }
    }
    return out;
  }

  // Entries of the vocabulary list (the text tower's token_embedding rows).
  int64_t vocab_size() const noexcept { return static_cast<int64_t>(decoder_.size()); }
  int64_t sot_id() const noexcept { return sot_; }
  int64_t eot_id() const noexcept { return eot_; }
  int64_t context_length() const noexcept { return options_.context_length(); }
  int64_t num_merges() const noexcept { return static_cast<int64_t>(ranks_.size()); }
  const std::string& source() const noexcept { return source_; }

  // Where the vocabulary usually is, for error messages.
  static std::string where_to_find_vocab() {
    return c10::str("taxon does not bundle CLIP's BPE vocabulary; pass --vocab PATH or put ", kVocabFileName,
                    " next to the checkpoint. The file ships inside the Python packages `clip` (openai/CLIP: "
                    "clip/", kVocabFileName, ") and `open_clip` (open_clip_torch: open_clip/", kVocabFileName,
                    "); `python3 -c \"import open_clip, os; print(os.path.dirname(open_clip.__file__))\"` prints "
                    "the folder");
  }

 private:
  struct Piece {
    std::size_t begin, end;
    int64_t special = -1;
  };
  struct Merge {
    int64_t rank, id;
  };

  static uint64_t key(int64_t a, int64_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b); }

  static std::vector<std::string> split_whitespace(std::string_view line) {
    // Python's str.split(): any whitespace (incl. Unicode spaces) separates; none of the byte symbols is one.
    std::vector<std::string> parts;
    const CodePoints cps = decode_utf8(line);
    CodePoints cur;
    for (char32_t c : cps) {
      if (is_python_space(c)) {
        if (!cur.empty()) parts.push_back(encode_utf8(cur)), cur.clear();
      } else {
        cur.push_back(c);
      }
    }
    if (!cur.empty()) parts.push_back(encode_utf8(cur));
    return parts;
  }

  static bool letter_is(char32_t c, char want) {
    return c == static_cast<char32_t>(want) || c == static_cast<char32_t>(want - 32) || (want == 's' && c == 0x17F);
  }

  // Case-insensitive literal at position i (ASCII letters, 'ſ' for 's').
  static bool matches_at(const CodePoints& t, std::size_t i, std::string_view lit) {
    if (i + lit.size() > t.size()) return false;
    for (std::size_t k = 0; k < lit.size(); ++k) {
      const char want = lit[k];
      const char32_t c = t[i + k];
      if (want >= 'a' && want <= 'z' ? !letter_is(c, want) : c != static_cast<char32_t>(want)) return false;
    }
    return true;
  }

  // re.findall(pattern, text): at each position the first alternative that matches; whitespace is skipped.
  std::vector<Piece> pre_split(const CodePoints& t) const {
    static constexpr std::string_view kContractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    const bool openai = options_.special_tokens() == SpecialTokens::openai;
    const std::string_view sot = openai ? "<|startoftext|>" : "<start_of_text>";
    const std::string_view eot = openai ? "<|endoftext|>" : "<end_of_text>";
    std::vector<Piece> pieces;
    std::size_t i = 0;
    const std::size_t n = t.size();
    while (i < n) {
      const char32_t c = t[i];
      if (c == U'<') {
        if (matches_at(t, i, sot) || matches_at(t, i, eot)) {
          const std::size_t len = matches_at(t, i, sot) ? sot.size() : eot.size();
          pieces.push_back({i, i + len, exact_special(t, i, len)});
          i += len;
          continue;
        }
      }
      if (c == U'\'') {
        bool done = false;
        for (auto lit : kContractions)
          if (matches_at(t, i, lit)) {
            pieces.push_back({i, i + lit.size()});
            i += lit.size();
            done = true;
            break;
          }
        if (done) continue;
      }
      if (is_letter(c)) {
        std::size_t j = i + 1;
        while (j < n && is_letter(t[j])) ++j;
        pieces.push_back({i, j});
        i = j;
      } else if (is_number(c)) {
        pieces.push_back({i, i + 1});
        ++i;
      } else if (!is_regex_space(c)) {
        std::size_t j = i + 1;
        while (j < n && !is_regex_space(t[j]) && !is_letter(t[j]) && !is_number(t[j])) ++j;
        pieces.push_back({i, j});
        i = j;
      } else {
        ++i;
      }
    }
    return pieces;
  }

  // The special id when the matched text is exactly the vocabulary's spelling (upstream's BPE cache); otherwise
  // -1 and the piece goes through BPE like any other (e.g. "<|ſtartoftext|>", or open_clip's spellings).
  int64_t exact_special(const CodePoints& t, std::size_t i, std::size_t len) const {
    const std::string s = encode_utf8(std::u32string_view(t).substr(i, len));
    if (options_.special_tokens() == SpecialTokens::openai) {
      if (s == "<|startoftext|>") return sot_;
      if (s == "<|endoftext|>") return eot_;
      return -1;
    }
    if (s == "<start_of_text>") return sot_;
    if (s == "<end_of_text>") return eot_;
    return -1;
  }

  // SimpleTokenizer.bpe on one piece: symbols as vocabulary ids; the lowest-ranked adjacent pair is merged
  // everywhere (left to right, non-overlapping) until no ranked pair is left.
  void bpe(std::u32string_view piece, std::vector<int64_t>& out) const {
    const std::string bytes = encode_utf8(piece);
    std::vector<int64_t> word;
    word.reserve(bytes.size());
    for (std::size_t k = 0; k < bytes.size(); ++k) {
      const auto b = static_cast<unsigned char>(bytes[k]);
      word.push_back(k + 1 == bytes.size() ? byte_end_id_[b] : byte_id_[b]);
    }
    while (word.size() > 1) {
      int64_t best_rank = std::numeric_limits<int64_t>::max();
      int64_t first = -1, second = -1, merged = -1;
      for (std::size_t k = 0; k + 1 < word.size(); ++k) {
        auto it = ranks_.find(key(word[k], word[k + 1]));
        if (it != ranks_.end() && it->second.rank < best_rank) {
          best_rank = it->second.rank;
          first = word[k];
          second = word[k + 1];
          merged = it->second.id;
        }
      }
      if (merged < 0) break;
      std::vector<int64_t> next;
      next.reserve(word.size());
      for (std::size_t k = 0; k < word.size();) {
        if (word[k] == first && k + 1 < word.size() && word[k + 1] == second) {
          next.push_back(merged);
          k += 2;
        } else {
          next.push_back(word[k++]);
        }
      }
      word.swap(next);
    }
    out.insert(out.end(), word.begin(), word.end());
  }

  TokenizerOptions options_;
  std::string source_;
  std::array<std::string, 256> byte_char_;
  std::array<char32_t, 256> byte_char_cp_{};
  std::array<int64_t, 256> byte_id_{}, byte_end_id_{};
  std::unordered_map<std::string, int64_t> encoder_;
  std::vector<std::string> decoder_;
  std::unordered_map<uint64_t, Merge> ranks_;
  int64_t sot_ = 0, eot_ = 0;
};

}  // namespace taxon::text
