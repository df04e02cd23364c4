#pragma once
// safetensors (Hugging Face): 8-byte little-endian header length, a JSON header {name: {dtype, shape,
// data_offsets}, "__metadata__": {str: str}}, then the raw little-endian tensor bytes. Files written here load
// with Python's `safetensors.torch.load_file` and vice versa. Reads memory-map the file; tensors alias the
// mapping (copy-on-write, so writing to them never touches the file) and keep it alive.
#include "taxon/core/checked.hpp"
#include "taxon/core/error.hpp"
#include "taxon/io/atomic_file.hpp"
#include "taxon/io/json.hpp"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace taxon::io {

namespace safetensors_detail {

// The reference implementation's MAX_HEADER_SIZE (safetensors/src/tensor.rs).
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

inline std::optional<at::ScalarType> dtype_from_name(const std::string& s) {
  static const std::map<std::string, at::ScalarType> table = {
      {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16}, {"F64", at::kDouble},
      {"I64", at::kLong},  {"I32", at::kInt},   {"I16", at::kShort},     {"I8", at::kChar},
      {"U8", at::kByte},   {"BOOL", at::kBool}};
  auto it = table.find(s);
  if (it == table.end()) return std::nullopt;
  return it->second;
}

inline std::string dtype_name(at::ScalarType t, const std::string& tensor, const std::filesystem::path& path) {
  switch (t) {
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kDouble: return "F64";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    default:
      TAXON_FAIL("io.unsupported-dtype", "cannot write tensor '", tensor, "' to ", path.string(), ": dtype ", t,
                 " has no safetensors equivalent");
  }
}

// A read-only-file, copy-on-write private mapping, unmapped when the last tensor aliasing it dies.
struct Mapping {
  void* data = nullptr;
  size_t size = 0;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  Mapping(void* d, size_t n) : data(d), size(n) {}
  ~Mapping() {
    if (data && size) ::munmap(data, size);
  }
};

inline std::shared_ptr<Mapping> map_file(const std::filesystem::path& path) {
  TAXON_CHECK(std::filesystem::exists(path), "io.missing-file", "file not found: ", path.string());
  const int fd = ::open(path.c_str(), O_RDONLY);
  TAXON_CHECK(fd >= 0, "io.cannot-read", "cannot open ", path.string(), ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    TAXON_FAIL("io.cannot-read", "cannot stat ", path.string(), ": ", std::strerror(err));
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return std::make_shared<Mapping>(nullptr, 0);
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  TAXON_CHECK(p != MAP_FAILED, "io.cannot-read", "cannot memory-map ", path.string(), ": ", std::strerror(err));
  return std::make_shared<Mapping>(p, size);
}

inline std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace safetensors_detail

// The contents of a safetensors file, in file order of the data offsets.
struct SafetensorsFile {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::map<std::string, std::string> metadata;
  std::filesystem::path path;

  bool contains(const std::string& name) const {
    return std::any_of(tensors.begin(), tensors.end(), [&](const auto& kv) { return kv.first == name; });
  }
  // The tensor called `name`; a missing name is an error listing what the file holds.
  at::Tensor get(const std::string& name) const {
    for (const auto& [n, t] : tensors)
      if (n == name) return t;
    std::string known;
    for (size_t i = 0; i < tensors.size() && i < 20; ++i) known += (i ? ", " : "") + tensors[i].first;
    if (tensors.size() > 20) known += ", ...";
    TAXON_FAIL("io.missing-key", path.string(), " has no tensor '", name, "' (", tensors.size(), " tensors: ",
               known, ")");
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors.size());
    for (const auto& kv : tensors) out.push_back(kv.first);
    return out;
  }
  std::map<std::string, at::Tensor> to_map() const { return {tensors.begin(), tensors.end()}; }
};

// Writes tensors (moved to CPU, contiguous) in the given order, plus string metadata, atomically.
inline void save_safetensors(const std::filesystem::path& path,
                             const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::vector<at::Tensor> data;
  data.reserve(tensors.size());
  std::set<std::string> seen;
  size_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    TAXON_CHECK(name != "__metadata__" && !name.empty(), "io.bad-argument", "cannot write ", path.string(),
                ": tensor name '", name, "' is reserved or empty");
    TAXON_CHECK(seen.insert(name).second, "io.bad-argument", "cannot write ", path.string(),
                ": duplicate tensor name '", name, "'");
    TAXON_CHECK(tensor.defined(), "io.bad-argument", "cannot write ", path.string(), ": tensor '", name,
                "' is undefined");
    const std::string dtype = safetensors_detail::dtype_name(tensor.scalar_type(), name, path);
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const size_t nbytes = static_cast<size_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(std::move(t));
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned, as Python does
  const uint64_t n = json.size();
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  write_atomically(path, [&](std::ostream& out) {
    out.write(len, 8);
    out.write(json.data(), static_cast<std::streamsize>(json.size()));
    for (const auto& t : data) {
      const size_t nbytes = static_cast<size_t>(t.numel()) * t.element_size();
      if (nbytes) out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(nbytes));
    }
  });
}

// Memory-maps and validates a safetensors file as the reference implementation does: header length (at most
// 100 MB), JSON, dtypes, overflow-checked shapes vs. byte ranges, and byte ranges that tile the data section exactly.
inline SafetensorsFile load_safetensors(const std::filesystem::path& path) {
  namespace sd = safetensors_detail;
  const std::string name = path.string();
  auto map = sd::map_file(path);
  const auto* base = static_cast<const unsigned char*>(map->data);
  TAXON_CHECK(map->size >= 8, "io.bad-safetensors", name, ": truncated (", map->size,
              " bytes, shorter than the 8-byte header length)");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(base[i]) << (8 * i);
  TAXON_CHECK(header_len <= safetensors_detail::kMaxHeaderBytes, "io.bad-safetensors", name, ": header length ",
              header_len, " exceeds safetensors' limit of ", safetensors_detail::kMaxHeaderBytes, " bytes");
  TAXON_CHECK(header_len <= map->size - 8, "io.bad-safetensors", name, ": truncated or not safetensors: header ",
              "length ", header_len, " exceeds the file size ", map->size);
  const auto parsed =
      parse_json(std::string_view(reinterpret_cast<const char*>(base + 8), static_cast<size_t>(header_len)));
  TAXON_CHECK(parsed, "io.bad-safetensors", name, " header: ", parsed.error);
  const nlohmann::json& header = parsed.value;
  TAXON_CHECK(header.is_object(), "io.bad-safetensors", name, ": header JSON is not an object");
  const size_t data_start = 8 + header_len;
  const size_t data_size = map->size - data_start;

  SafetensorsFile file;
  file.path = path;
  struct Entry {
    std::string name;
    at::ScalarType dtype;
    std::vector<int64_t> shape;
    size_t begin, end;
  };
  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      TAXON_CHECK(value.is_object(), "io.bad-safetensors", name, ": __metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        TAXON_CHECK(mv.is_string(), "io.bad-safetensors", name, ": metadata '", mk, "' is not a string");
        file.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    TAXON_CHECK(value.is_object() && value.contains("dtype") && value.contains("shape") &&
                    value.contains("data_offsets"),
                "io.bad-safetensors", name, ": tensor '", key, "' lacks dtype/shape/data_offsets: ", value.dump());
    Entry e;
    e.name = key;
    TAXON_CHECK(value["dtype"].is_string(), "io.bad-safetensors", name, ": tensor '", key, "' dtype is not a string");
    const auto dtype_str = value["dtype"].get<std::string>();
    const auto dtype = sd::dtype_from_name(dtype_str);
    TAXON_CHECK(dtype.has_value(), "io.unsupported-dtype", name, ": tensor '", key, "' has unsupported dtype '",
                dtype_str, "' (supported: F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL)");
    e.dtype = *dtype;
    const auto& shape = value["shape"];
    const auto& offsets = value["data_offsets"];
    TAXON_CHECK(shape.is_array() && offsets.is_array() && offsets.size() == 2, "io.bad-safetensors", name,
                ": tensor '", key, "' has malformed shape/data_offsets: ", value.dump());
    for (const auto& d : shape) {
      TAXON_CHECK(d.is_number_integer() && (d.is_number_unsigned() || d.get<int64_t>() >= 0) &&
                      d.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                  "io.bad-safetensors", name, ": tensor '", key, "' has a bad dimension in shape ", shape.dump());
      e.shape.push_back(d.get<int64_t>());
    }
    const auto numel = checked_product<int64_t>(e.shape);
    const auto nbytes = numel ? checked_mul<int64_t>(*numel, static_cast<int64_t>(at::elementSize(e.dtype))) : std::nullopt;
    TAXON_CHECK(nbytes.has_value(), "io.bad-safetensors", name, ": tensor '", key, "' shape ", sd::shape_string(e.shape),
                " ", dtype_str, " overflows a 64-bit byte count");
    TAXON_CHECK(offsets[0].is_number_unsigned() && offsets[1].is_number_unsigned(), "io.bad-safetensors", name,
                ": tensor '", key, "' data_offsets ", offsets.dump(), " are not non-negative integers");
    e.begin = offsets[0].get<size_t>();
    e.end = offsets[1].get<size_t>();
    TAXON_CHECK(e.begin <= e.end && e.end <= data_size, "io.bad-safetensors", name, ": tensor '", key,
                "' data_offsets [", e.begin, ", ", e.end, "] fall outside the ", data_size,
                "-byte data section (truncated file?)");
    const auto expected = static_cast<size_t>(*nbytes);
    TAXON_CHECK(e.end - e.begin == expected, "io.bad-safetensors", name, ": tensor '", key, "' of shape ",
                sd::shape_string(e.shape), " ", dtype_str, " needs ", expected, " bytes but data_offsets span ",
                e.end - e.begin);
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // safetensors' own rule: in offset order, each tensor starts where the previous one ends (the first at 0) and
  // the last ends at the end of the file, so no two tensors share a byte and none hides behind an empty one.
  size_t covered = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& cur = entries[i];
    TAXON_CHECK(cur.begin == covered, "io.bad-safetensors", name, ": tensor '", cur.name, "' data_offsets [", cur.begin,
                ", ", cur.end, "] ", i == 0 ? std::string("do not start at 0") : "do not start where tensor '" +
                entries[i - 1].name + "' ends (" + std::to_string(covered) + ")",
                ": safetensors offsets must be contiguous and must not overlap");
    covered = cur.end;
  }
  TAXON_CHECK(covered == data_size, "io.bad-safetensors", name, ": the tensors cover ", covered, " of the ", data_size,
              " bytes after the header (safetensors requires them to cover the data exactly: truncated or padded file?)");
  auto* data = static_cast<unsigned char*>(map->data) + data_start;
  for (const auto& e : entries) {
    const auto options = at::TensorOptions().dtype(e.dtype);
    void* ptr = data + e.begin;
    at::Tensor t;
    if (e.end == e.begin) {
      t = at::empty(e.shape, options);
    } else if (reinterpret_cast<uintptr_t>(ptr) % at::elementSize(e.dtype) == 0) {
      auto keep = map;
      t = at::from_blob(ptr, e.shape, [keep](void*) mutable { keep.reset(); }, options);
    } else {
      // Misaligned for its dtype (legal in the format, rare in practice): copy out.
      t = at::empty(e.shape, options);
      std::memcpy(t.data_ptr(), ptr, e.end - e.begin);
    }
    file.tensors.emplace_back(e.name, std::move(t));
  }
  return file;
}

}  // namespace taxon::io
