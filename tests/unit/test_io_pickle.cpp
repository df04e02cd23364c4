// torch.save archives read by taxon's restricted reader (io/pickle.hpp), against files Python's torch.save wrote
// (tests/data/pt/make_pt_fixtures.py, python3-torch 1.13) and files LibTorch's torch::pickle_save writes.
#include "taxon/backbone/torchscript.hpp"
#include "taxon/io/pickle.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/serialize.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "support/temp_dir.hpp"
#include "support/tensor_compare.hpp"

namespace test_io_pickle {

namespace fs = std::filesystem;
inline const fs::path kData = fs::path(TAXON_TEST_DATA_DIR) / "pt";

inline const nlohmann::json& goldens() {
  static const nlohmann::json g = [] {
    std::ifstream in(kData / "goldens.json");
    return nlohmann::json::parse(in);
  }();
  return g;
}

inline at::Tensor golden_input() {
  const auto& g = goldens();
  return at::tensor(g["input"].get<std::vector<float>>()).reshape(g["input_shape"].get<std::vector<int64_t>>());
}

inline at::Tensor golden_forward(const std::string& dtype) {
  return at::tensor(goldens()["forward"][dtype].get<std::vector<float>>()).reshape({2, -1});
}

// Python's dtype names ("torch.float16") for the scalar types the reader produces.
inline std::string python_dtype(at::ScalarType t) {
  static const std::map<at::ScalarType, std::string> names = {
      {at::kFloat, "torch.float32"}, {at::kDouble, "torch.float64"}, {at::kHalf, "torch.float16"},
      {at::kBFloat16, "torch.bfloat16"}, {at::kLong, "torch.int64"}, {at::kInt, "torch.int32"},
      {at::kShort, "torch.int16"}, {at::kChar, "torch.int8"}, {at::kByte, "torch.uint8"}, {at::kBool, "torch.bool"}};
  auto it = names.find(t);
  return it == names.end() ? "?" : it->second;
}

inline std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline fs::path write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

inline std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const taxon::Error& e) {
    return e.what();
  }
  return "";
}

// A zip as PyTorch's writer lays it out (stored records under one folder), from (name, bytes) pairs; `alias`
// makes the central directory entry of record i point at record alias[i]'s data instead (overlapping records).
inline std::string make_zip(const std::vector<std::pair<std::string, std::string>>& records,
                            const std::map<size_t, size_t>& alias = {}) {
  auto u16 = [](std::string& o, uint32_t v) { o += char(v & 255); o += char((v >> 8) & 255); };
  auto u32 = [&](std::string& o, uint32_t v) { u16(o, v & 0xffff); u16(o, v >> 16); };
  std::string out, directory;
  std::vector<uint32_t> offsets;
  for (const auto& [name, data] : records) {
    offsets.push_back(static_cast<uint32_t>(out.size()));
    const auto crc = static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
    u32(out, 0x04034b50); u16(out, 20); u16(out, 0); u16(out, 0); u32(out, 0); u32(out, crc);
    u32(out, static_cast<uint32_t>(data.size())); u32(out, static_cast<uint32_t>(data.size()));
    u16(out, static_cast<uint32_t>(name.size())); u16(out, 0);
    out += name + data;
  }
  for (size_t i = 0; i < records.size(); ++i) {
    const size_t from = alias.count(i) ? alias.at(i) : i;
    const std::string& name = records[i].first;
    const auto& data = records[from].second;
    const auto crc = static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
    u32(directory, 0x02014b50); u16(directory, 20); u16(directory, 20); u16(directory, 0); u16(directory, 0);
    u32(directory, 0); u32(directory, crc); u32(directory, static_cast<uint32_t>(data.size()));
    u32(directory, static_cast<uint32_t>(data.size())); u16(directory, static_cast<uint32_t>(name.size()));
    u16(directory, 0); u16(directory, 0); u16(directory, 0); u16(directory, 0); u32(directory, 0); u32(directory, offsets[from]);
    directory += name;
  }
  const auto cd_offset = static_cast<uint32_t>(out.size());
  out += directory;
  u32(out, 0x06054b50); u16(out, 0); u16(out, 0); u16(out, static_cast<uint32_t>(records.size()));
  u16(out, static_cast<uint32_t>(records.size())); u32(out, static_cast<uint32_t>(directory.size())); u32(out, cd_offset);
  u16(out, 0);
  return out;
}

// Pickle pieces as torch.save writes them (protocol 2).
inline std::string pstr(const std::string& text) {
  const auto n = static_cast<uint32_t>(text.size());
  return std::string("X") + char(n & 255) + char((n >> 8) & 255) + char((n >> 16) & 255) + char(n >> 24) + text;
}
inline std::string pint(int v) { return std::string("K") + char(v); }  // 0..255
inline std::string pglobal(const std::string& module, const std::string& name) { return "c" + module + "\n" + name + "\n"; }

// {"w": _rebuild_tensor_v2(float32 storage '0' of `numel`, offset, sizes, strides)}; sizes/strides are pickled tuples.
inline std::string tensor_pickle(const std::string& sizes, const std::string& strides, int offset, int numel) {
  return std::string("\x80\x02}") + pstr("w") + pglobal("torch._utils", "_rebuild_tensor_v2") + "((" + pstr("storage") +
         pglobal("torch", "FloatStorage") + pstr("0") + pstr("cpu") + pint(numel) + "tQ" + pint(offset) + sizes + strides +
         "\x89" + pglobal("collections", "OrderedDict") + ")RtRs.";
}

inline std::string floats(int n) { return std::string(static_cast<size_t>(n) * 4, '\0'); }

}  // namespace test_io_pickle

TEST_CASE("torch.save from Python: OrderedDict state dicts in fp32, fp16, bf16 give Python's forward within 1e-5",
          "[io][pickle][golden]") {
  using namespace test_io_pickle;
  for (const std::string dtype : {"fp32", "fp16", "bf16"}) {
    INFO(dtype);
    const auto file = kData / ("vit_" + dtype + ".pt");
    const auto dict = taxon::backbone::load_torch_save_state_dict(file);
    CHECK(dict.stripped.empty());
    const auto expected = dtype == "fp32" ? at::kFloat : dtype == "fp16" ? at::kHalf : at::kBFloat16;
    CHECK(dict.tensors.at("conv1.weight").scalar_type() == expected);  // kept as stored
    auto model = taxon::backbone::load_pretrained(file);
    model->eval();
    CHECK(model->options.width() == 16);
    CHECK(model->options.layers() == 1);
    const auto out = model->forward(golden_input());
    REQUIRE_TENSORS_CLOSE(out, golden_forward(dtype), 1e-5, 1e-7);
  }
}

TEST_CASE("torch.save from Python: every tensor equals Python's bit for bit, views keep their storage",
          "[io][pickle][golden]") {
  using namespace test_io_pickle;
  const taxon::io::PickleValue root = taxon::io::load_torch_save(kData / "tensors.pt");
  REQUIRE(root.is_dict());
  for (const auto& [name, g] : goldens()["tensors"].items()) {
    INFO(name);
    const auto* v = root.find(name);
    REQUIRE(v != nullptr);
    REQUIRE(v->is_tensor());
    const at::Tensor& t = v->tensor;
    CHECK(python_dtype(t.scalar_type()) == g["dtype"].get<std::string>());
    CHECK(t.sizes().vec() == g["shape"].get<std::vector<int64_t>>());
    const auto values = g["values"];
    const auto flat = t.to(at::kDouble).flatten().contiguous();
    REQUIRE(flat.numel() == static_cast<int64_t>(values.size()));
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double want = values[static_cast<size_t>(i)].is_boolean() ? double(values[static_cast<size_t>(i)].get<bool>())
                                                                      : values[static_cast<size_t>(i)].get<double>();
      CHECK(flat[i].item<double>() == want);
    }
  }
  // The view and the tensor saved twice alias the base's storage, as they did in Python.
  const at::Tensor& base = root.find("base")->tensor;
  const at::Tensor& view = root.find("view")->tensor;
  CHECK(view.storage().unsafeGetStorageImpl() == base.storage().unsafeGetStorageImpl());
  CHECK(root.find("same")->tensor.storage().unsafeGetStorageImpl() == base.storage().unsafeGetStorageImpl());
  CHECK(view.storage_offset() == 6);
  CHECK(view.strides().vec() == std::vector<int64_t>{6, 2});
  // Plain values come through with their Python types.
  const auto* values = root.find("values");
  REQUIRE((values != nullptr && values->is_dict()));
  CHECK(values->find("float")->real == 0.1);
  CHECK(values->find("none")->kind == taxon::io::PickleValue::Kind::none);
  CHECK(values->find("text")->text == "Pseudanthias squamipinnis");
  CHECK(values->find("bytes")->kind == taxon::io::PickleValue::Kind::bytes);
  CHECK(values->find("bytes")->text == std::string("\x00\xff", 2));
  const auto& flags = values->find("flags")->items;
  REQUIRE(flags.size() == 2);
  CHECK((flags[0].boolean && !flags[1].boolean));
  std::vector<int64_t> ints;
  for (const auto& i : values->find("ints")->items) ints.push_back(i.integer);
  CHECK(ints == std::vector<int64_t>{0, 255, 256, 65535, 65536, -1, int64_t{1} << 31, -(int64_t{1} << 40)});
}

TEST_CASE("torch.save wrappers: state_dict, model, DDP module. and WarpModule model. are stripped and reported",
          "[io][pickle]") {
  using namespace test_io_pickle;
  const auto reference = taxon::backbone::load_torch_save_state_dict(kData / "vit_fp16.pt").tensors;
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"wrapped_state_dict.pt", {"['state_dict']"}},
      {"wrapped_model.pt", {"['model']"}},
      {"ddp.pt", {"module."}},
      {"warp.pt", {"model."}},
      {"ddp_warp.pt", {"module.", "model."}},
  };
  for (const auto& [file, stripped] : cases) {
    INFO(file);
    const auto dict = taxon::backbone::load_torch_save_state_dict(kData / file);
    CHECK(dict.stripped == stripped);
    // The visual tower's own keys (warp.pt's are under "visual.", which the ViT loader selects).
    const auto visual = taxon::backbone::visual_state_dict(dict.tensors);
    REQUIRE(visual.size() == reference.size());
    for (const auto& [k, v] : reference) {
      INFO(k);
      REQUIRE(visual.count(k) == 1);
      CHECK(at::equal(visual.at(k), v));
    }
    auto model = taxon::backbone::load_pretrained(kData / file);
    model->eval();
    REQUIRE_TENSORS_CLOSE(model->forward(golden_input()), golden_forward("fp16"), 1e-5, 1e-7);
  }
}

TEST_CASE("torch.save: a global outside the allow-list fails naming it and runs nothing", "[io][pickle]") {
  using namespace test_io_pickle;
  // evil.pt's data.pkl is {"weight": os.system("echo taxon-fixture-pwned")}.
  REQUIRE_TAXON_ERROR(taxon::io::load_torch_save(kData / "evil.pt"), "io.pickle-forbidden-global");
  CHECK_THAT(error_of([] { taxon::io::load_torch_save(kData / "evil.pt"); }), Catch::Contains("'posix.system'"));
  REQUIRE_TAXON_ERROR(taxon::backbone::load_pretrained(kData / "evil.pt"), "io.pickle-forbidden-global");
}

TEST_CASE("torch.save: the pre-1.6 format is refused with how to re-save it", "[io][pickle]") {
  using namespace test_io_pickle;
  REQUIRE_TAXON_ERROR(taxon::io::load_torch_save(kData / "legacy.pt"), "io.legacy-torch-save");
  CHECK_THAT(error_of([] { taxon::io::load_torch_save(kData / "legacy.pt"); }),
             Catch::Contains("_use_new_zipfile_serialization=True"));
  CHECK(taxon::io::detect_pt_kind(kData / "legacy.pt") == taxon::io::PtKind::legacy_torch_save);
  REQUIRE_TAXON_ERROR(taxon::backbone::load_pretrained(kData / "legacy.pt"), "io.legacy-torch-save");
}

TEST_CASE("torch.save: what LibTorch's torch::pickle_save writes (taxon's own checkpoints) reads back", "[io][pickle]") {
  using namespace test_io_pickle;
  taxon::test::TempDir dir("taxon_pickle");
  c10::Dict<std::string, at::Tensor> dict;
  const auto base = at::randn({5, 4});
  dict.insert("w", base);
  dict.insert("h", at::randn({3}).to(at::kHalf));
  dict.insert("rng", at::arange(10).to(at::kByte));
  dict.insert("t", base.t());  // a view of the same storage
  c10::impl::GenericDict outer(c10::StringType::get(), c10::AnyType::get());
  outer.insert("state_dict", dict);
  outer.insert("step", int64_t{12});
  const auto bytes = torch::pickle_save(outer);
  const auto file = write_bytes(dir.path / "libtorch.pt", std::string(bytes.begin(), bytes.end()));
  CHECK(taxon::io::detect_pt_kind(file) == taxon::io::PtKind::torch_save);
  const auto root = taxon::io::load_torch_save(file);
  CHECK(root.find("step")->integer == 12);
  const auto& inner = *root.find("state_dict");
  REQUIRE(inner.entries.size() == 4);
  for (const auto& kv : dict) {
    INFO(kv.key());
    const auto* v = inner.find(kv.key());
    REQUIRE((v != nullptr && v->is_tensor()));
    CHECK(v->tensor.scalar_type() == kv.value().scalar_type());
    CHECK(at::equal(v->tensor, kv.value()));
  }
  CHECK(inner.find("t")->tensor.storage().unsafeGetStorageImpl() ==
        inner.find("w")->tensor.storage().unsafeGetStorageImpl());
}

TEST_CASE("torch.save: truncated or bit-flipped archives raise taxon errors naming the file", "[io][pickle]") {
  using namespace test_io_pickle;
  taxon::test::TempDir dir("taxon_pickle_bad");
  const std::string good = read_bytes(kData / "vit_fp16.pt");
  const auto file = dir.path / "bad.pt";
  auto expect_error = [&](const std::string& bytes) {
    write_bytes(file, bytes);
    const std::string message = error_of([&] { (void)taxon::backbone::load_pretrained(file); });
    INFO(message);
    CHECK(message.find(file.string()) != std::string::npos);
  };
  for (size_t cut = 0; cut < good.size(); cut += 97) expect_error(good.substr(0, cut));
  // A flipped byte anywhere in the records is caught by their CRC-32 or by the structure checks.
  for (size_t at = 0; at < good.size(); at += 131) {
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ 0x5a);
    write_bytes(file, bad);
    try {
      (void)taxon::backbone::load_pretrained(file);
    } catch (const taxon::Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(file.string()) != std::string::npos);
    }
  }
}

TEST_CASE("torch.save: hostile archives are refused with an id before anything large is allocated", "[io][pickle]") {
  using namespace test_io_pickle;
  taxon::test::TempDir dir("taxon_pickle_hostile");
  const auto file = dir.path / "x.pt";
  const std::string sizes = "(" + pint(2) + pint(3) + "t", strides = "(" + pint(3) + pint(1) + "t";
  auto archive = [&](const std::string& pickle, std::vector<std::pair<std::string, std::string>> more = {},
                     const std::map<size_t, size_t>& alias = {}) {
    more.insert(more.begin(), std::make_pair(std::string("a/data.pkl"), pickle));
    return write_bytes(file, make_zip(more, alias));
  };
  // The honest file these variations start from.
  const auto ok = taxon::io::load_torch_save(archive(tensor_pickle(sizes, strides, 0, 6), {{"a/data/0", floats(6)}}));
  CHECK(ok.find("w")->tensor.sizes().vec() == std::vector<int64_t>{2, 3});
  // A view one element past its storage; a storage declaring more than its record holds; no record at all.
  REQUIRE_TAXON_ERROR(taxon::io::load_torch_save(archive(tensor_pickle(sizes, strides, 1, 6), {{"a/data/0", floats(6)}})),
                      "io.bad-pickle");
  REQUIRE_TAXON_ERROR(taxon::io::load_torch_save(archive(tensor_pickle(sizes, strides, 0, 200), {{"a/data/0", floats(6)}})),
                      "io.bad-torch-save");
  REQUIRE_TAXON_ERROR(taxon::io::load_torch_save(archive(tensor_pickle(sizes, strides, 0, 6))), "io.bad-torch-save");
  // Two directory entries sharing one record's bytes: a small file could otherwise declare gigabytes.
  REQUIRE_TAXON_ERROR(taxon::io::load_torch_save(archive(tensor_pickle(sizes, strides, 0, 6),
                                                         {{"a/data/0", floats(6)}, {"a/data/1", floats(6)}}, {{2, 1}})),
                      "io.bad-torch-save");
  // Globals are refused by name whichever opcode names them; nothing is called.
  REQUIRE_TAXON_ERROR(taxon::io::load_torch_save(archive("\x80\x02" + pstr("builtins") + pstr("eval") + "\x93" + pstr("1") +
                                                         "\x85R.")),
                      "io.pickle-forbidden-global");
  CHECK_THAT(error_of([&] { taxon::io::load_torch_save(file); }), Catch::Contains("'builtins.eval'"));
  // Nesting deeper than 64 levels, a list that contains itself, an opcode state dicts never use, a truncated string.
  REQUIRE_TAXON_ERROR(taxon::io::load_torch_save(archive("\x80\x02" + std::string(100, ']') + std::string(99, 'a') + ".")),
                      "io.bad-pickle");
  REQUIRE_TAXON_ERROR(taxon::io::load_torch_save(archive(std::string("]q\x00" "h\x00" "a.", 7))), "io.bad-pickle");
  REQUIRE_TAXON_ERROR(taxon::io::load_torch_save(archive("(i__builtin__\nobject\n.")), "io.bad-pickle");
  REQUIRE_TAXON_ERROR(taxon::io::load_torch_save(archive(std::string("X\xff\xff\xff\x7f", 5))), "io.bad-pickle");
  // torch >= 2.1 records the byte order; big-endian tensors are refused, little-endian ones read.
  CHECK(taxon::io::load_torch_save(archive(tensor_pickle(sizes, strides, 0, 6),
                                           {{"a/data/0", floats(6)}, {"a/byteorder", "little"}}))
            .is_dict());
  REQUIRE_TAXON_ERROR(taxon::io::load_torch_save(archive(tensor_pickle(sizes, strides, 0, 6),
                                                         {{"a/data/0", floats(6)}, {"a/byteorder", "big"}})),
                      "io.bad-torch-save");
}
