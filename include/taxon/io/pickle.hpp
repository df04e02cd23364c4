#pragma once
// torch.save archives (what Python's torch.save since 1.6 and LibTorch's torch::pickle_save write), read by taxon's
// own restricted reader, never by a general unpickler: a zip whose `<name>/data.pkl` pickles the saved object and
// whose `<name>/data/<key>` records hold the tensor storages.
//
// Like PyTorch's `torch.load(weights_only=True)` (pytorch/pytorch torch/_weights_only_unpickler.py), the unpickler
// knows only the opcodes state dicts use and resolves globals from a fixed list: collections.OrderedDict,
// torch._utils._rebuild_tensor_v2 / _rebuild_parameter, the storage types of the dtypes taxon reads, _codecs.encode
// (bytes) and the identity helpers LibTorch's pickler writes (torch.jit._pickle.restore_type_tag, build_*list). Any other global
// (a class, os.system, ...) is refused by name before anything is called; nothing in the file is ever executed.
// Every size the file declares is checked against the bytes present before allocating.
#include "taxon/core/checked.hpp"
#include "taxon/core/error.hpp"
#include "taxon/io/atomic_file.hpp"

#include <ATen/ATen.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace taxon::io {

// The unpickled object: None, bool, int, float, str, bytes, list, tuple, dict (OrderedDict included, in insertion
// order) or tensor. Tensors that viewed one storage in Python share one storage here.
struct PickleValue {
  enum class Kind { none, boolean, integer, real, string, bytes, list, tuple, dict, tensor };
  Kind kind = Kind::none;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;
  std::string text;  // string or bytes
  at::Tensor tensor;
  std::vector<PickleValue> items;                            // list, tuple
  std::vector<std::pair<PickleValue, PickleValue>> entries;  // dict

  bool is_dict() const { return kind == Kind::dict; }
  bool is_string() const { return kind == Kind::string; }
  bool is_tensor() const { return kind == Kind::tensor; }
  // The value stored under string key `key` of a dict, or nullptr.
  const PickleValue* find(std::string_view key) const {
    for (const auto& [k, v] : entries)
      if (k.kind == Kind::string && k.text == key) return &v;
    return nullptr;
  }
  const char* kind_name() const {
    static constexpr const char* names[] = {"None", "bool", "int", "float", "str", "bytes", "list", "tuple", "dict", "tensor"};
    return names[static_cast<int>(kind)];
  }
};

namespace pickle_detail {

// The zip container of a torch.save archive. PyTorch writes every record uncompressed ("stored"), under one top-level
// folder; zip64 records appear past 4 GB. Reads are bounded by the file size; CRC-32s are checked.
class ZipArchive {
 public:
  struct Record {
    uint64_t data_offset = 0;
    uint64_t size = 0;
    uint32_t crc = 0;
    bool stored = true;  // uncompressed; TorchScript archives deflate their code/ records, which are never read here
  };

  ZipArchive(const std::filesystem::path& path) : path_(path), in_(path, std::ios::binary) {
    TAXON_CHECK(in_.good(), "io.cannot-read", "cannot open ", path.string());
    file_size_ = io::file_size(path);
    read_directory();
  }

  bool has(const std::string& name) const { return records_.count(name) > 0; }
  const Record* find(const std::string& name) const {
    auto it = records_.find(name);
    return it == records_.end() ? nullptr : &it->second;
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& kv : records_) out.push_back(kv.first);
    return out;
  }
  uint64_t file_size() const { return file_size_; }

  // Reads `record` into `out` (which must hold record.size bytes) and checks its CRC-32.
  // Callers check this before allocating record.size bytes: only a stored record's size is bounded by the file.
  void require_stored(const std::string& name, const Record& record) const {
    if (!record.stored)
      bad(c10::str("record '", name, "' is compressed; torch.save writes its records uncompressed, so the file was "
                   "repacked or damaged"));
  }

  void read(const std::string& name, const Record& record, void* out) {
    require_stored(name, record);
    read_at(record.data_offset, out, record.size, name.c_str());
    // torch 2.x can write archives without CRCs (torch.serialization.set_crc32_options(False)); those record 0.
    if (record.crc == 0) return;
    uLong crc = crc32(0L, Z_NULL, 0);
    const auto* p = static_cast<const Bytef*>(out);
    for (uint64_t left = record.size; left > 0;) {
      const auto n = static_cast<uInt>(std::min<uint64_t>(left, uint64_t{1} << 30));
      crc = crc32(crc, p, n);
      p += n;
      left -= n;
    }
    TAXON_CHECK(crc == record.crc, "io.bad-torch-save", path_.string(), ": record '", name,
                "' fails its CRC-32 check (damaged or truncated file)");
  }

  std::string read_string(const std::string& name) {
    const Record* r = find(name);
    TAXON_CHECK(r != nullptr, "io.bad-torch-save", path_.string(), " has no record '", name, "'");
    require_stored(name, *r);
    std::string out(r->size, '\0');
    read(name, *r, out.data());
    return out;
  }

 private:
  [[noreturn]] void bad(const std::string& what) const {
    TAXON_FAIL("io.bad-torch-save", path_.string(), " is not a valid torch.save zip archive: ", what);
  }

  void read_at(uint64_t offset, void* out, uint64_t n, const char* what) {
    const auto end = checked_add(offset, n);
    if (!end || *end > file_size_) bad(c10::str(what, " lies past the end of the file"));
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(static_cast<char*>(out), static_cast<std::streamsize>(n));
    TAXON_CHECK(in_.good() || n == 0, "io.cannot-read", "read of ", path_.string(), " failed at offset ", offset);
  }

  static uint64_t le(const unsigned char* p, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
  }

  void read_directory() {
    constexpr uint64_t kEocd = 22, kMaxComment = 65535;
    if (file_size_ < kEocd) bad("shorter than a zip end record");
    const uint64_t tail_size = std::min<uint64_t>(file_size_, kEocd + kMaxComment);
    std::vector<unsigned char> tail(tail_size);
    read_at(file_size_ - tail_size, tail.data(), tail_size, "the end record");
    std::optional<uint64_t> eocd_in_tail;
    for (uint64_t i = tail_size - kEocd + 1; i-- > 0;)
      if (le(&tail[i], 4) == 0x06054b50) {
        eocd_in_tail = i;
        break;
      }
    if (!eocd_in_tail) bad("no end of central directory record");
    const unsigned char* e = &tail[*eocd_in_tail];
    const uint64_t eocd_offset = file_size_ - tail_size + *eocd_in_tail;
    uint64_t entries = le(e + 10, 2), cd_size = le(e + 12, 4), cd_offset = le(e + 16, 4);
    if (entries == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
      // zip64: a locator right before the end record points to the zip64 end record.
      if (eocd_offset < 20) bad("zip64 locator missing");
      unsigned char loc[20];
      read_at(eocd_offset - 20, loc, 20, "the zip64 locator");
      if (le(loc, 4) != 0x07064b50) bad("zip64 locator missing");
      unsigned char z[56];
      read_at(le(loc + 8, 8), z, 56, "the zip64 end record");
      if (le(z, 4) != 0x06064b50) bad("bad zip64 end record");
      entries = le(z + 32, 8);
      cd_size = le(z + 40, 8);
      cd_offset = le(z + 48, 8);
    }
    constexpr uint64_t kEntry = 46;
    const auto cd_end = checked_add(cd_offset, cd_size);
    if (!cd_end || *cd_end > eocd_offset) bad("central directory lies outside the file");
    if (entries > cd_size / kEntry) bad(c10::str(entries, " entries cannot fit a ", cd_size, "-byte directory"));
    std::vector<unsigned char> cd(cd_size);
    read_at(cd_offset, cd.data(), cd_size, "the central directory");
    uint64_t pos = 0;
    std::string prefix;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [data start, data end) of every record
    for (uint64_t n = 0; n < entries; ++n) {
      if (cd_size - pos < kEntry || le(&cd[pos], 4) != 0x02014b50) bad(c10::str("directory entry ", n, " is damaged"));
      const unsigned char* h = &cd[pos];
      const uint64_t method = le(h + 10, 2), name_len = le(h + 28, 2), extra_len = le(h + 30, 2),
                     comment_len = le(h + 32, 2);
      uint64_t comp = le(h + 20, 4), size = le(h + 24, 4), local = le(h + 42, 4);
      const uint32_t crc = static_cast<uint32_t>(le(h + 16, 4));
      if (cd_size - pos - kEntry < name_len + extra_len + comment_len) bad(c10::str("directory entry ", n, " is truncated"));
      std::string name(reinterpret_cast<const char*>(h + kEntry), name_len);
      // zip64 extended information: the 64-bit values of the fields saturated above, in this order.
      for (uint64_t x = 0; x + 4 <= extra_len;) {
        const unsigned char* f = h + kEntry + name_len + x;
        const uint64_t id = le(f, 2), len = le(f + 2, 2);
        if (x + 4 + len > extra_len) bad(c10::str("extra field of '", name, "' is truncated"));
        if (id == 0x0001) {
          uint64_t at = 4;
          for (uint64_t* field : {&size, &comp, &local}) {
            if (*field != 0xFFFFFFFF) continue;
            if (at + 8 > 4 + len) bad(c10::str("zip64 field of '", name, "' is truncated"));
            *field = le(f + at, 8);
            at += 8;
          }
        }
        x += 4 + len;
      }
      pos += kEntry + name_len + extra_len + comment_len;
      // Every record lies under one folder (the archive's name: "archive" or the file stem), as PyTorch's reader requires.
      const auto slash = name.find('/');
      if (slash == std::string::npos || slash == 0) bad(c10::str("record '", name, "' is not inside the archive folder"));
      if (n == 0) prefix = name.substr(0, slash + 1);
      if (name.compare(0, prefix.size(), prefix) != 0)
        bad(c10::str("record '", name, "' is outside the archive folder '", prefix, "'"));
      unsigned char lh[30];
      read_at(local, lh, 30, "a local file header");
      if (le(lh, 4) != 0x04034b50) bad(c10::str("local header of '", name, "' is damaged"));
      Record r;
      r.size = size;
      r.crc = crc;
      r.stored = method == 0 && comp == size;
      const auto data = checked_add(local, 30 + le(lh + 26, 2) + le(lh + 28, 2));
      const auto data_end = data ? checked_add(*data, comp) : std::nullopt;
      if (!data_end || *data_end > file_size_) bad(c10::str("record '", name, "' (", comp, " bytes) runs past the end of the file"));
      r.data_offset = *data;
      if (!records_.emplace(name.substr(prefix.size()), r).second) bad(c10::str("record '", name, "' appears twice"));
      ranges.emplace_back(r.data_offset, *data_end);
    }
    // Records never share bytes in a file PyTorch wrote; overlapping ones would let a small file declare gigabytes.
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i)
      if (ranges[i].first < ranges[i - 1].second) bad("two records overlap");
  }

  std::filesystem::path path_;
  std::ifstream in_;
  uint64_t file_size_ = 0;
  std::map<std::string, Record> records_;
};

enum class Global {
  ordered_dict,
  rebuild_tensor_v2,
  rebuild_parameter,
  restore_type_tag,  // torch.jit._pickle helpers LibTorch writes around typed containers: they return their argument
  build_list,
  codecs_encode,     // _codecs.encode(str, "latin1"): how protocol 2 pickles bytes (torch 2.x's weights_only allows it)
  storage,           // a storage type; the node's dtype says which
};

// The storage types a persistent id may name: the legacy torch.<Type>Storage names that torch.save writes for typed
// storages (torch.cuda.* for old CUDA files; torch.load maps every name containing "Storage" this way) and the
// untyped storage class of torch >= 1.11 (bytes).
inline std::optional<at::ScalarType> storage_dtype(std::string_view module, std::string_view name) {
  if (module != "torch" && module != "torch.cuda" && module != "torch.storage") return std::nullopt;
  static const std::pair<const char*, at::ScalarType> kTypes[] = {
      {"FloatStorage", at::kFloat},       {"DoubleStorage", at::kDouble}, {"HalfStorage", at::kHalf},
      {"BFloat16Storage", at::kBFloat16}, {"LongStorage", at::kLong},     {"IntStorage", at::kInt},
      {"ShortStorage", at::kShort},       {"CharStorage", at::kChar},     {"ByteStorage", at::kByte},
      {"BoolStorage", at::kBool},         {"UntypedStorage", at::kByte},  {"_UntypedStorage", at::kByte}};
  for (const auto& [n, t] : kTypes)
    if (name == n) return t;
  return std::nullopt;
}

class Unpickler {
 public:
  // Limits far above what a state dict needs (a few objects per tensor, nesting of a few levels), low enough that
  // a hostile pickle cannot exhaust memory or the stack.
  static constexpr size_t kMaxObjects = size_t{1} << 22;
  static constexpr size_t kMaxMarks = 100000;
  static constexpr int kMaxDepth = 64;

  Unpickler(std::string_view data, ZipArchive& zip, const std::filesystem::path& path)
      : data_(data), zip_(zip), path_(path) {}

  PickleValue load() {
    for (;;) {
      const size_t at = pos_;
      const auto op = static_cast<unsigned char>(take(1, "opcode")[0]);
      if (op == '.') {  // STOP
        check(!stack_.empty(), at, "STOP with an empty stack");
        size_t budget = 2 * nodes_.size() + 1024;
        return convert(stack_.back(), 0, budget);
      }
      step(op, at);
    }
  }

 private:
  enum class Kind { none, boolean, integer, real, string, bytes, list, tuple, dict, tensor, global, storage };
  struct Node {
    Kind kind = Kind::none;
    int64_t integer = 0;  // also the Global of a global node
    double real = 0;
    at::ScalarType dtype = at::kByte;  // storage and storage-type globals
    std::string text;
    std::vector<uint32_t> children;    // list/tuple items; dict keys and values alternating
    at::Tensor tensor;                 // tensor; storage bytes
  };

  [[noreturn]] void fail(size_t at, const std::string& what) const {
    TAXON_FAIL("io.bad-pickle", path_.string(), ": data.pkl is damaged at byte ", at, ": ", what);
  }
  void check(bool ok, size_t at, const char* what) const {
    if (!ok) [[unlikely]] fail(at, what);
  }

  std::string_view take(uint64_t n, const char* what) {
    if (n > data_.size() - pos_) fail(pos_, c10::str(what, " of ", n, " bytes runs past the end (", data_.size() - pos_, " left)"));
    const auto out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  uint64_t take_le(int bytes, const char* what) {
    const auto s = take(bytes, what);
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[i]);
    return v;
  }
  std::string take_line(const char* what) {
    const auto end = data_.find('\n', pos_);
    if (end == std::string_view::npos) fail(pos_, c10::str(what, " has no end of line"));
    std::string out(data_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }

  uint32_t add(Node node) {
    check(nodes_.size() < kMaxObjects, pos_, "more objects than any state dict holds");
    nodes_.push_back(std::move(node));
    return static_cast<uint32_t>(nodes_.size() - 1);
  }
  void push(Node node) { stack_.push_back(add(std::move(node))); }
  uint32_t pop(size_t at) {
    check(stack_.size() > mark_floor(), at, "stack underflow");
    const uint32_t v = stack_.back();
    stack_.pop_back();
    return v;
  }
  uint32_t top(size_t at) const {
    check(stack_.size() > mark_floor(), at, "stack underflow");
    return stack_.back();
  }
  size_t mark_floor() const { return marks_.empty() ? 0 : marks_.back(); }
  std::vector<uint32_t> pop_mark(size_t at) {
    check(!marks_.empty(), at, "no MARK to pop to");
    std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  Node& node(uint32_t i) { return nodes_[i]; }

  void push_int(int64_t v) {
    Node n;
    n.kind = Kind::integer;
    n.integer = v;
    push(std::move(n));
  }
  void push_text(Kind kind, std::string_view s) {
    Node n;
    n.kind = kind;
    n.text = std::string(s);
    push(std::move(n));
  }
  void push_container(Kind kind, std::vector<uint32_t> children = {}) {
    Node n;
    n.kind = kind;
    n.children = std::move(children);
    push(std::move(n));
  }

  int64_t as_int(uint32_t i, size_t at, const char* what) {
    const Node& n = node(i);
    if (n.kind == Kind::boolean || n.kind == Kind::integer) return n.integer;
    fail(at, c10::str(what, " is not an int"));
  }

  void dict_set(uint32_t dict, uint32_t key, uint32_t value, size_t at) {
    check(node(dict).kind == Kind::dict, at, "SETITEM(S) on something that is not a dict");
    const Kind k = node(key).kind;
    check(k != Kind::list && k != Kind::dict, at, "unhashable dict key");
    node(dict).children.push_back(key);
    node(dict).children.push_back(value);
  }

  void resolve_global(const std::string& module, const std::string& name, size_t at) {
    Node n;
    n.kind = Kind::global;
    const std::string full = module + "." + name;
    if (full == "collections.OrderedDict") n.integer = static_cast<int>(Global::ordered_dict);
    else if (full == "torch._utils._rebuild_tensor_v2") n.integer = static_cast<int>(Global::rebuild_tensor_v2);
    else if (full == "torch._utils._rebuild_parameter") n.integer = static_cast<int>(Global::rebuild_parameter);
    else if (full == "torch.jit._pickle.restore_type_tag") n.integer = static_cast<int>(Global::restore_type_tag);
    else if (module == "torch.jit._pickle" && (name == "build_intlist" || name == "build_doublelist" ||
                                               name == "build_boollist" || name == "build_tensorlist"))
      n.integer = static_cast<int>(Global::build_list);
    else if (full == "_codecs.encode") n.integer = static_cast<int>(Global::codecs_encode);
    else if (const auto dtype = storage_dtype(module, name)) {
      n.integer = static_cast<int>(Global::storage);
      n.dtype = *dtype;
    } else {
      const bool storage = name.find("Storage") != std::string::npos;
      TAXON_FAIL("io.pickle-forbidden-global", path_.string(), " needs global '", full, "' (data.pkl byte ", at, "); ",
                 storage ? "taxon reads tensors of float32/64, float16, bfloat16, int8/16/32/64, uint8 and bool only"
                 : name == "_rebuild_tensor_v3"
                     ? "torch 2.x writes it for dtypes taxon does not read (uint16/32/64, float8)"
                     : "taxon's restricted reader loads dicts, lists, tuples, numbers, strings and tensors only and "
                       "never runs code from a file; save a state dict (torch.save(model.state_dict(), path))");
    }
    push(std::move(n));
  }

  uint32_t reduce(uint32_t func, uint32_t args_index, size_t at) {
    check(node(func).kind == Kind::global, at, "REDUCE of something that is not a global");
    check(node(args_index).kind == Kind::tuple, at, "REDUCE arguments are not a tuple");
    const std::vector<uint32_t> args = node(args_index).children;
    switch (static_cast<Global>(node(func).integer)) {
      case Global::ordered_dict: {
        check(args.empty(), at, "OrderedDict with constructor arguments");
        Node n;
        n.kind = Kind::dict;
        return add(std::move(n));
      }
      case Global::restore_type_tag:
        check(args.size() == 2, at, "restore_type_tag takes 2 arguments");
        return args[0];
      case Global::build_list:
        check(args.size() == 1 && node(args[0]).kind == Kind::list, at, "build_*list takes one list");
        return args[0];
      case Global::rebuild_parameter:
        check(args.size() == 3 && node(args[0]).kind == Kind::tensor, at, "_rebuild_parameter takes (tensor, bool, hooks)");
        return args[0];
      case Global::rebuild_tensor_v2: return rebuild_tensor(args, at);
      case Global::codecs_encode: return latin1_bytes(args, at);
      case Global::storage: break;
    }
    fail(at, "a storage type is not callable");
  }

  // _codecs.encode(text, "latin1"): the UTF-8 of code points below 256 back to one byte each.
  uint32_t latin1_bytes(const std::vector<uint32_t>& args, size_t at) {
    check(args.size() == 2 && node(args[0]).kind == Kind::string && node(args[1]).kind == Kind::string, at,
          "_codecs.encode takes (str, str)");
    check(node(args[1]).text == "latin1" || node(args[1]).text == "latin-1", at, "_codecs.encode with another codec");
    const std::string& in = node(args[0]).text;
    Node n;
    n.kind = Kind::bytes;
    for (size_t i = 0; i < in.size(); ++i) {
      const auto c = static_cast<unsigned char>(in[i]);
      if (c < 0x80) {
        n.text += static_cast<char>(c);
      } else {
        check((c == 0xC2 || c == 0xC3) && i + 1 < in.size() && (static_cast<unsigned char>(in[i + 1]) & 0xC0) == 0x80, at,
              "_codecs.encode of a character outside latin-1");
        n.text += static_cast<char>(((c & 0x03) << 6) | (static_cast<unsigned char>(in[++i]) & 0x3F));
      }
    }
    return add(std::move(n));
  }

  // torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  uint32_t rebuild_tensor(const std::vector<uint32_t>& args, size_t at) {
    check(args.size() == 6 || args.size() == 7, at, "_rebuild_tensor_v2 takes 6 or 7 arguments");
    const Node& storage = node(args[0]);
    check(storage.kind == Kind::storage, at, "_rebuild_tensor_v2's first argument is not a storage");
    const int64_t offset = as_int(args[1], at, "storage offset");
    check(node(args[2]).kind == Kind::tuple && node(args[3]).kind == Kind::tuple, at, "size and stride are not tuples");
    std::vector<int64_t> sizes, strides;
    for (uint32_t i : node(args[2]).children) sizes.push_back(as_int(i, at, "a size"));
    for (uint32_t i : node(args[3]).children) strides.push_back(as_int(i, at, "a stride"));
    check(sizes.size() == strides.size(), at, "size and stride differ in length");
    check(sizes.size() <= 64, at, "more than 64 dimensions");
    check(offset >= 0, at, "negative storage offset");
    const int64_t item = static_cast<int64_t>(c10::elementSize(storage.dtype));
    const int64_t storage_numel = static_cast<int64_t>(storage.tensor.numel()) / item;
    // The last element the view reaches must lie inside the storage (an empty view reaches nothing).
    bool empty = false;
    std::optional<int64_t> last = offset;
    for (size_t d = 0; d < sizes.size(); ++d) {
      check(sizes[d] >= 0 && strides[d] >= 0, at, "negative size or stride");
      if (sizes[d] == 0) empty = true;
      const auto reach = checked_mul<int64_t>(std::max<int64_t>(sizes[d] - 1, 0), strides[d]);
      last = reach && last ? checked_add(*last, *reach) : std::nullopt;
    }
    check(checked_product<int64_t>(sizes).has_value(), at, "the shape's element count overflows");
    if (!empty && !(last.has_value() && *last < storage_numel))
      fail(at, c10::str("a tensor view reaches element ", last ? std::to_string(*last) : std::string("> 2^63"),
                        " of a storage of ", storage_numel, " elements"));
    const Node& grad = node(args[4]);
    check(grad.kind == Kind::boolean, at, "requires_grad is not a bool");
    check(node(args[5]).kind == Kind::dict, at, "backward hooks are not a dict");
    check(node(args[5]).children.empty(), at, "a tensor with backward hooks");
    if (args.size() == 7) check(node(args[6]).kind == Kind::dict || node(args[6]).kind == Kind::none, at, "metadata is not a dict");
    at::Tensor t = at::empty({0}, at::TensorOptions().dtype(storage.dtype));
    t.set_(storage.tensor.storage(), empty ? 0 : offset, sizes, strides);
    Node n;
    n.kind = Kind::tensor;
    n.tensor = std::move(t);
    return add(std::move(n));
  }

  // BINPERSID: ('storage', storage type, key, location, numel) -> the bytes of data/<key>, loaded once per key.
  uint32_t persistent_load(uint32_t pid, size_t at) {
    const Node& id = node(pid);
    check(id.kind == Kind::tuple && id.children.size() == 5, at, "persistent id is not a 5-tuple");
    const Node& tag = node(id.children[0]);
    check((tag.kind == Kind::string || tag.kind == Kind::bytes) && tag.text == "storage", at,
          "persistent id is not a storage");
    const Node& type = node(id.children[1]);
    check(type.kind == Kind::global && static_cast<Global>(type.integer) == Global::storage, at,
          "persistent id does not name a storage type");
    check(node(id.children[2]).kind == Kind::string || node(id.children[2]).kind == Kind::bytes, at,
          "storage key is not a string");
    const std::string key = node(id.children[2]).text;  // a copy: add() below may move the nodes
    const Node& location = node(id.children[3]);
    check(location.kind == Kind::string || location.kind == Kind::bytes, at, "storage location is not a string");
    const int64_t numel = as_int(id.children[4], at, "storage size");
    const at::ScalarType dtype = type.dtype;
    check(numel >= 0, at, "negative storage size");
    auto cached = storages_.find(key);
    if (cached != storages_.end()) {
      check(node(cached->second).dtype == dtype, at, "one storage read with two dtypes");
      return cached->second;
    }
    const std::string record = "data/" + key;
    const ZipArchive::Record* r = zip_.find(record);
    TAXON_CHECK(r != nullptr, "io.bad-torch-save", path_.string(), " lacks record '", record, "' for a storage");
    const auto nbytes = checked_mul<int64_t>(numel, static_cast<int64_t>(c10::elementSize(dtype)));
    TAXON_CHECK(nbytes && static_cast<uint64_t>(*nbytes) <= r->size, "io.bad-torch-save", path_.string(), ": storage '",
                key, "' declares ", numel, " elements of ", dtype, " but its record holds ", r->size, " bytes");
    zip_.require_stored(record, *r);
    at::Tensor bytes = at::empty({static_cast<int64_t>(r->size)}, at::kByte);
    zip_.read(record, *r, bytes.data_ptr());
    Node n;
    n.kind = Kind::storage;
    n.dtype = dtype;
    // The storage is exactly numel elements, as in Python (torch.save writes records of exactly that size).
    n.tensor = static_cast<uint64_t>(*nbytes) == r->size ? bytes : bytes.narrow(0, 0, *nbytes).clone();
    const uint32_t index = add(std::move(n));
    storages_.emplace(key, index);
    return index;
  }

  void step(unsigned char op, size_t at) {
    switch (op) {
      case 0x80: take(1, "protocol"); break;                 // PROTO
      case 0x95: take_le(8, "frame length"); break;          // FRAME: a hint, the bytes follow inline
      case '(':                                              // MARK
        check(marks_.size() < kMaxMarks, at, "MARKs nested too deeply");
        marks_.push_back(stack_.size());
        break;
      case '0': pop(at); break;                              // POP
      case '1': pop_mark(at); break;                         // POP_MARK
      case 'N': push(Node{}); break;                         // NONE
      case 0x88:
      case 0x89: {                                           // NEWTRUE, NEWFALSE
        Node n;
        n.kind = Kind::boolean;
        n.integer = op == 0x88;
        push(std::move(n));
        break;
      }
      case 'J': push_int(static_cast<int32_t>(take_le(4, "BININT"))); break;
      case 'K': push_int(static_cast<int64_t>(take_le(1, "BININT1"))); break;
      case 'M': push_int(static_cast<int64_t>(take_le(2, "BININT2"))); break;
      case 0x8a: {                                           // LONG1: little-endian two's complement
        const auto n = take_le(1, "LONG1 length");
        check(n <= 8, at, "an integer wider than 64 bits");
        const auto s = take(n, "LONG1");
        uint64_t v = 0;
        for (size_t i = n; i-- > 0;) v = (v << 8) | static_cast<unsigned char>(s[i]);
        if (n > 0 && n < 8 && (static_cast<unsigned char>(s[n - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * n);
        push_int(static_cast<int64_t>(v));
        break;
      }
      case 'G': {                                            // BINFLOAT: big-endian double
        const auto s = take(8, "BINFLOAT");
        uint64_t bits = 0;
        for (char c : s) bits = (bits << 8) | static_cast<unsigned char>(c);
        Node n;
        n.kind = Kind::real;
        std::memcpy(&n.real, &bits, 8);
        push(std::move(n));
        break;
      }
      case 'X': push_text(Kind::string, take(take_le(4, "BINUNICODE length"), "BINUNICODE")); break;
      case 0x8c: push_text(Kind::string, take(take_le(1, "SHORT_BINUNICODE length"), "SHORT_BINUNICODE")); break;
      case 0x8d: push_text(Kind::string, take(take_le(8, "BINUNICODE8 length"), "BINUNICODE8")); break;
      case 'U': push_text(Kind::string, take(take_le(1, "SHORT_BINSTRING length"), "SHORT_BINSTRING")); break;
      case 'T': push_text(Kind::string, take(take_le(4, "BINSTRING length"), "BINSTRING")); break;
      case 'C': push_text(Kind::bytes, take(take_le(1, "SHORT_BINBYTES length"), "SHORT_BINBYTES")); break;
      case 'B': push_text(Kind::bytes, take(take_le(4, "BINBYTES length"), "BINBYTES")); break;
      case 0x8e: push_text(Kind::bytes, take(take_le(8, "BINBYTES8 length"), "BINBYTES8")); break;
      case ']': push_container(Kind::list); break;           // EMPTY_LIST
      case ')': push_container(Kind::tuple); break;          // EMPTY_TUPLE
      case '}': push_container(Kind::dict); break;           // EMPTY_DICT
      case 'l': push_container(Kind::list, pop_mark(at)); break;   // LIST
      case 't': push_container(Kind::tuple, pop_mark(at)); break;  // TUPLE
      case 0x85:
      case 0x86:
      case 0x87: {                                           // TUPLE1..3
        const size_t n = op - 0x84u;
        check(stack_.size() >= mark_floor() + n, at, "stack underflow");
        std::vector<uint32_t> items(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
        stack_.resize(stack_.size() - n);
        push_container(Kind::tuple, std::move(items));
        break;
      }
      case 'd': {                                            // DICT
        const auto items = pop_mark(at);
        check(items.size() % 2 == 0, at, "DICT with an odd number of items");
        push_container(Kind::dict);
        for (size_t i = 0; i < items.size(); i += 2) dict_set(stack_.back(), items[i], items[i + 1], at);
        break;
      }
      case 's': {                                            // SETITEM
        const uint32_t value = pop(at), key = pop(at);
        dict_set(top(at), key, value, at);
        break;
      }
      case 'u': {                                            // SETITEMS
        const auto items = pop_mark(at);
        check(items.size() % 2 == 0, at, "SETITEMS with an odd number of items");
        const uint32_t dict = top(at);
        for (size_t i = 0; i < items.size(); i += 2) dict_set(dict, items[i], items[i + 1], at);
        break;
      }
      case 'a': {                                            // APPEND
        const uint32_t item = pop(at);
        check(node(top(at)).kind == Kind::list, at, "APPEND to something that is not a list");
        node(top(at)).children.push_back(item);
        break;
      }
      case 'e': {                                            // APPENDS
        const auto items = pop_mark(at);
        check(node(top(at)).kind == Kind::list, at, "APPENDS to something that is not a list");
        auto& list = node(top(at)).children;
        list.insert(list.end(), items.begin(), items.end());
        break;
      }
      case 'q': memo_[take_le(1, "BINPUT index")] = top(at); break;
      case 'r': memo_[take_le(4, "LONG_BINPUT index")] = top(at); break;
      case 0x94: memo_[memo_.size()] = top(at); break;       // MEMOIZE
      case 'h':
      case 'j': {                                            // BINGET, LONG_BINGET
        const auto index = take_le(op == 'h' ? 1 : 4, "memo index");
        auto it = memo_.find(index);
        check(it != memo_.end(), at, "memo index never stored");
        stack_.push_back(it->second);
        check(stack_.size() < kMaxObjects, at, "stack larger than any state dict needs");
        break;
      }
      case 'c': {                                            // GLOBAL
        const std::string module = take_line("GLOBAL module");
        const std::string name = take_line("GLOBAL name");
        resolve_global(module, name, at);
        break;
      }
      case 0x93: {                                           // STACK_GLOBAL
        const uint32_t name = pop(at), module = pop(at);
        check(node(name).kind == Kind::string && node(module).kind == Kind::string, at, "STACK_GLOBAL of non-strings");
        resolve_global(node(module).text, node(name).text, at);
        break;
      }
      case 'R': {                                            // REDUCE
        const uint32_t args = pop(at), func = pop(at);
        stack_.push_back(reduce(func, args, at));
        break;
      }
      case 'b': {                                            // BUILD: only OrderedDict's attribute state (_metadata)
        const uint32_t state = pop(at);
        check(node(top(at)).kind == Kind::dict, at, "BUILD of something other than an OrderedDict");
        check(node(state).kind == Kind::dict || node(state).kind == Kind::none, at, "BUILD state is not a dict");
        break;
      }
      case 'Q': {                                            // BINPERSID
        const uint32_t pid = pop(at);
        stack_.push_back(persistent_load(pid, at));
        break;
      }
      default: fail(at, c10::str("opcode 0x", "0123456789abcdef"[op >> 4], "0123456789abcdef"[op & 15],
                                 " is not one a state dict uses"));
    }
  }

  // The node graph (memo references can share and even cycle) as a tree; `budget` bounds the copies sharing makes.
  PickleValue convert(uint32_t i, int depth, size_t& budget) {
    TAXON_CHECK(depth <= kMaxDepth, "io.bad-pickle", path_.string(), ": data.pkl nests containers more than ", kMaxDepth,
                " levels deep");
    TAXON_CHECK(budget-- > 0, "io.bad-pickle", path_.string(), ": data.pkl shares objects far more than a state dict does");
    const Node& n = nodes_[i];
    PickleValue v;
    switch (n.kind) {
      case Kind::none: break;
      case Kind::boolean: v.kind = PickleValue::Kind::boolean; v.boolean = n.integer != 0; break;
      case Kind::integer: v.kind = PickleValue::Kind::integer; v.integer = n.integer; break;
      case Kind::real: v.kind = PickleValue::Kind::real; v.real = n.real; break;
      case Kind::string: v.kind = PickleValue::Kind::string; v.text = n.text; break;
      case Kind::bytes: v.kind = PickleValue::Kind::bytes; v.text = n.text; break;
      case Kind::tensor: v.kind = PickleValue::Kind::tensor; v.tensor = n.tensor; break;
      case Kind::storage:  // a bare storage: its elements as a 1-d tensor
        v.kind = PickleValue::Kind::tensor;
        v.tensor = at::empty({0}, at::TensorOptions().dtype(n.dtype))
                       .set_(n.tensor.storage(), 0, {n.tensor.numel() / static_cast<int64_t>(c10::elementSize(n.dtype))}, {1});
        break;
      case Kind::list:
      case Kind::tuple:
        v.kind = n.kind == Kind::list ? PickleValue::Kind::list : PickleValue::Kind::tuple;
        for (uint32_t c : n.children) v.items.push_back(convert(c, depth + 1, budget));
        break;
      case Kind::dict: {
        v.kind = PickleValue::Kind::dict;
        std::map<std::string, size_t> string_keys;  // a key set twice keeps its first place and its last value
        for (size_t c = 0; c + 1 < n.children.size(); c += 2) {
          PickleValue key = convert(n.children[c], depth + 1, budget);
          PickleValue value = convert(n.children[c + 1], depth + 1, budget);
          if (key.kind == PickleValue::Kind::string) {
            auto [it, fresh] = string_keys.emplace(key.text, v.entries.size());
            if (!fresh) {
              v.entries[it->second].second = std::move(value);
              continue;
            }
          }
          v.entries.emplace_back(std::move(key), std::move(value));
        }
        break;
      }
      case Kind::global:
        TAXON_FAIL("io.bad-pickle", path_.string(), ": data.pkl holds a bare class or function, not a value");
    }
    return v;
  }

  std::string_view data_;
  ZipArchive& zip_;
  const std::filesystem::path& path_;
  size_t pos_ = 0;
  std::vector<Node> nodes_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, uint32_t> memo_;
  std::map<std::string, uint32_t> storages_;
};

// The first bytes of a torch.save file from before PyTorch 1.6: a pickle (protocol 2) of the magic number
// 0x1950a86a20f9469cfc6c (pytorch/pytorch torch/serialization.py MAGIC_NUMBER).
inline bool is_legacy_torch_save(std::string_view head) {
  static constexpr unsigned char kMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  return head.size() >= sizeof(kMagic) && std::memcmp(head.data(), kMagic, sizeof(kMagic)) == 0;
}

}  // namespace pickle_detail

// What a .pt file is, from its first bytes and zip records: TorchScript archives hold constants.pkl (as
// torch.load's own check, torch/serialization.py _is_torchscript_zip), torch.save archives data.pkl.
enum class PtKind { torch_save, torchscript, legacy_torch_save, unknown };
inline PtKind detect_pt_kind(const std::filesystem::path& path) {
  require_file(path, "PyTorch file");
  std::string head(16, '\0');
  {
    std::ifstream in(path, std::ios::binary);
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
  }
  if (pickle_detail::is_legacy_torch_save(head)) return PtKind::legacy_torch_save;
  if (head.rfind("PK", 0) != 0) return PtKind::unknown;
  try {
    if (pickle_detail::ZipArchive(path).has("constants.pkl")) return PtKind::torchscript;
  } catch (const Error&) {  // a damaged zip: load_torch_save reports what is wrong with it
  }
  return PtKind::torch_save;
}

// Reads a torch.save archive with the restricted unpickler. Errors: io.missing-file; io.legacy-torch-save (the
// pre-1.6 format); io.bad-torch-save (the zip or a storage record); io.bad-pickle (data.pkl); io.pickle-forbidden-global
// (anything but state-dict contents). `what` names the file's role in the messages.
inline PickleValue load_torch_save(const std::filesystem::path& path, std::string_view what = "torch.save archive") {
  require_file(path, what);
  std::string head(16, '\0');
  {
    std::ifstream in(path, std::ios::binary);
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
  }
  TAXON_CHECK(!pickle_detail::is_legacy_torch_save(head), "io.legacy-torch-save", what, " ", path.string(),
              " was written by torch.save before PyTorch 1.6 (the legacy format, which taxon does not read); re-save it "
              "with PyTorch >= 1.6: torch.save(torch.load(path), new_path), or pass _use_new_zipfile_serialization=True");
  pickle_detail::ZipArchive zip(path);
  TAXON_CHECK(!zip.has("constants.pkl"), "io.bad-torch-save", what, " ", path.string(),
              " is a TorchScript archive (torch.jit.save), not a torch.save archive");
  if (const auto* order = zip.find("byteorder")) {  // written by torch >= 2.1
    TAXON_CHECK(order->size <= 16, "io.bad-torch-save", path.string(), ": 'byteorder' record of ", order->size, " bytes");
    const std::string byteorder = zip.read_string("byteorder");
    TAXON_CHECK(byteorder == "little", "io.bad-torch-save", path.string(), " stores its tensors in '", byteorder,
                "' byte order; taxon reads little-endian archives");
  }
  const std::string pickle = zip.read_string("data.pkl");
  return pickle_detail::Unpickler(pickle, zip, path).load();
}

}  // namespace taxon::io
