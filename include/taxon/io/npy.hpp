#pragma once
// NumPy .npy files: embeddings, centroids and labels written here open with `numpy.load` and vice versa.
// Reads format 1.0/2.0/3.0 (C order, little-endian); writes 1.0 (at most 64 dimensions, so the header stays far
// below format 1.0's 64 KiB; numpy writes 2.0 only for structured dtypes, which taxon does not use).
#include "taxon/core/checked.hpp"
#include "taxon/core/error.hpp"
#include "taxon/io/atomic_file.hpp"

#include <ATen/ATen.h>

#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace taxon::io {

namespace npy_detail {

inline constexpr char kMagic[] = "\x93NUMPY";
inline constexpr size_t kMagicLen = 6;
// numpy 2's NPY_MAXDIMS (numpy 1 allowed 32).
inline constexpr size_t kMaxDims = 64;

// numpy descr (byte order stripped) <-> ATen dtype.
inline std::optional<at::ScalarType> dtype_from_descr(std::string_view code) {
  if (code == "f4") return at::kFloat;
  if (code == "f2") return at::kHalf;
  if (code == "f8") return at::kDouble;
  if (code == "i8") return at::kLong;
  if (code == "i4") return at::kInt;
  if (code == "i2") return at::kShort;
  if (code == "i1") return at::kChar;
  if (code == "u1") return at::kByte;
  if (code == "b1") return at::kBool;
  return std::nullopt;
}

inline std::string descr_for(at::ScalarType t, const std::filesystem::path& path) {
  switch (t) {
    case at::kFloat: return "<f4";
    case at::kHalf: return "<f2";
    case at::kDouble: return "<f8";
    case at::kLong: return "<i8";
    case at::kInt: return "<i4";
    case at::kShort: return "<i2";
    case at::kChar: return "|i1";
    case at::kByte: return "|u1";
    case at::kBool: return "|b1";
    default:
      TAXON_FAIL("io.unsupported-dtype", "cannot write ", path.string(), ": dtype ", t,
                 " has no .npy equivalent (supported: float32/16/64, int64/32/16/8, uint8, bool)");
  }
}

struct Header {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

// A tiny parser for the Python dict literal numpy writes: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::filesystem::path& path) : s_(text), path_(path) {}

  Header parse() {
    Header h;
    bool have_descr = false, have_order = false, have_shape = false;
    skip_ws();
    expect('{');
    while (true) {
      skip_ws();
      if (peek() == '}') break;
      const std::string key = parse_string();
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr") {
        h.descr = parse_string();
        have_descr = true;
      } else if (key == "fortran_order") {
        h.fortran_order = parse_bool();
        have_order = true;
      } else if (key == "shape") {
        h.shape = parse_shape();
        have_shape = true;
      } else {
        bad("unexpected key '" + key + "'");
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_ws();
      if (peek() == '}') break;
      bad("expected ',' or '}'");
    }
    if (!have_descr || !have_order || !have_shape) bad("header lacks 'descr', 'fortran_order' or 'shape'");
    return h;
  }

 private:
  [[noreturn]] void bad(const std::string& what) const {
    TAXON_FAIL("io.bad-npy", path_.string(), ": malformed .npy header (", what, " at offset ", pos_, "): ",
               std::string(s_));
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  void expect(char c) {
    if (peek() != c) bad(std::string("expected '") + c + "'");
    ++pos_;
  }
  std::string parse_string() {
    const char q = peek();
    if (q != '\'' && q != '"') bad("expected a quoted string");
    ++pos_;
    const size_t end = s_.find(q, pos_);
    if (end == std::string_view::npos) bad("unterminated string");
    std::string out(s_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }
  bool parse_bool() {
    if (s_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (s_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    bad("expected True or False");
  }
  std::vector<int64_t> parse_shape() {
    std::vector<int64_t> dims;
    expect('(');
    while (true) {
      skip_ws();
      if (peek() == ')') {
        ++pos_;
        return dims;
      }
      if (!std::isdigit(static_cast<unsigned char>(peek()))) bad("expected a dimension");
      int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        if (v > (int64_t{1} << 50)) bad("dimension too large");
        v = v * 10 + (s_[pos_++] - '0');
      }
      if (peek() == 'L') ++pos_;  // Python 2 longs
      dims.push_back(v);
      skip_ws();
      if (peek() == ',') ++pos_;
      else if (peek() != ')') bad("expected ',' or ')' in shape");
    }
  }

  std::string_view s_;
  const std::filesystem::path& path_;
  size_t pos_ = 0;
};

inline std::string shape_literal(at::IntArrayRef sizes) {
  std::string s = "(";
  for (size_t i = 0; i < sizes.size(); ++i) {
    s += std::to_string(sizes[i]);
    if (sizes.size() == 1 || i + 1 < sizes.size()) s += ",";
    if (i + 1 < sizes.size()) s += " ";
  }
  return s + ")";
}

}  // namespace npy_detail

// Writes `tensor` (moved to CPU, made C-contiguous) as .npy, atomically.
inline void save_npy(const std::filesystem::path& path, const at::Tensor& tensor) {
  TAXON_CHECK(tensor.defined(), "io.bad-argument", "save_npy(", path.string(), "): tensor is undefined");
  TAXON_CHECK(static_cast<size_t>(tensor.dim()) <= npy_detail::kMaxDims, "io.bad-argument", "save_npy(",
              path.string(), "): ", tensor.dim(), " dimensions, but numpy reads at most ", npy_detail::kMaxDims);
  const std::string descr = npy_detail::descr_for(tensor.scalar_type(), path);
  const at::Tensor data = tensor.detach().to(at::kCPU).contiguous();
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " +
                     npy_detail::shape_literal(data.sizes()) + ", }";
  // Pad with spaces so magic + version + length + header + '\n' is a multiple of 64 (numpy's alignment).
  auto build = [&](size_t len_field) {
    const size_t prefix = npy_detail::kMagicLen + 2 + len_field;
    const size_t unpadded = prefix + dict.size() + 1;
    const size_t padded = (unpadded + 63) / 64 * 64;
    return dict + std::string(padded - unpadded, ' ') + "\n";
  };
  const std::string header = build(2);
  std::string prefix(npy_detail::kMagic, npy_detail::kMagicLen);
  prefix += static_cast<char>(1);
  prefix += static_cast<char>(0);
  const auto len = static_cast<uint16_t>(header.size());
  prefix += static_cast<char>(len & 0xFF);
  prefix += static_cast<char>((len >> 8) & 0xFF);
  const size_t nbytes = static_cast<size_t>(data.numel()) * data.element_size();
  write_atomically(path, [&](std::ostream& out) {
    out.write(prefix.data(), static_cast<std::streamsize>(prefix.size()));
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    if (nbytes) out.write(static_cast<const char*>(data.data_ptr()), static_cast<std::streamsize>(nbytes));
  });
}

// Reads a .npy file into a CPU tensor of the matching dtype.
inline at::Tensor load_npy(const std::filesystem::path& path) {
  const std::string bytes = read_file(path);
  const std::string name = path.string();
  TAXON_CHECK(bytes.size() >= npy_detail::kMagicLen + 4 &&
                  std::memcmp(bytes.data(), npy_detail::kMagic, npy_detail::kMagicLen) == 0,
              "io.bad-npy", name, ": not a .npy file (missing \\x93NUMPY magic, ", bytes.size(), " bytes)");
  const auto major = static_cast<unsigned char>(bytes[6]);
  TAXON_CHECK(major >= 1 && major <= 3, "io.bad-npy", name, ": unsupported .npy format version ", int(major), ".",
              int(static_cast<unsigned char>(bytes[7])));
  const size_t len_field = major == 1 ? 2 : 4;
  TAXON_CHECK(bytes.size() >= 8 + len_field, "io.bad-npy", name, ": truncated .npy header");
  size_t header_len = 0;
  for (size_t i = 0; i < len_field; ++i)
    header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
  const size_t data_offset = 8 + len_field + header_len;
  TAXON_CHECK(bytes.size() >= data_offset, "io.bad-npy", name, ": truncated .npy header (declares ", header_len,
              " bytes, file has ", bytes.size(), ")");
  const std::string_view text(bytes.data() + 8 + len_field, header_len);
  const npy_detail::Header h = npy_detail::HeaderParser(text, path).parse();
  TAXON_CHECK(!h.fortran_order, "io.bad-npy", name,
              ": fortran_order=True is not supported; save a C-contiguous array (numpy.ascontiguousarray)");
  TAXON_CHECK(h.descr.size() >= 2, "io.bad-npy", name, ": bad descr '", h.descr, "'");
  const char order = h.descr[0];
  const std::string code = h.descr.substr(1);
  const auto dtype = npy_detail::dtype_from_descr(code);
  TAXON_CHECK(dtype.has_value(), "io.unsupported-dtype", name, ": .npy dtype '", h.descr,
              "' is not supported (float32/16/64, int64/32/16/8, uint8, bool)");
  const bool single_byte = code == "u1" || code == "i1" || code == "b1";
  TAXON_CHECK(order == '<' || order == '|' || order == '=' || (single_byte && order == '>'), "io.bad-npy", name,
              ": big-endian dtype '", h.descr, "' is not supported");
  // The declared shape is checked against the bytes present before anything is allocated.
  TAXON_CHECK(h.shape.size() <= npy_detail::kMaxDims, "io.bad-npy", name, ": shape has ", h.shape.size(),
              " dimensions, more than numpy's limit of ", npy_detail::kMaxDims);
  const auto numel = checked_product<int64_t>(h.shape);
  const auto nbytes =
      numel ? checked_mul<int64_t>(*numel, static_cast<int64_t>(at::elementSize(*dtype))) : std::nullopt;
  TAXON_CHECK(nbytes.has_value(), "io.bad-npy", name, ": shape ", npy_detail::shape_literal(h.shape), " of ", h.descr,
              " overflows a 64-bit byte count");
  TAXON_CHECK(bytes.size() - data_offset >= static_cast<uint64_t>(*nbytes), "io.bad-npy", name,
              ": truncated data: shape ", npy_detail::shape_literal(h.shape), " of ", h.descr, " needs ", *nbytes,
              " bytes, file has ", bytes.size() - data_offset);
  auto out = at::empty(h.shape, at::TensorOptions().dtype(*dtype));
  if (*nbytes > 0) std::memcpy(out.data_ptr(), bytes.data() + data_offset, static_cast<size_t>(*nbytes));
  return out;
}

}  // namespace taxon::io
