// File formats: .npy and safetensors round trips, interoperability with bytes written by Python, loader errors.
#include "taxon/io/atomic_file.hpp"
#include "taxon/io/json.hpp"
#include "taxon/io/npy.hpp"
#include "taxon/io/safetensors.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>

#include "support/temp_dir.hpp"
#include "support/tensor_compare.hpp"

namespace test_io {

namespace fs = std::filesystem;

struct TempDir : taxon::test::TempDir {
  TempDir() : taxon::test::TempDir("taxon_test_io") {}
};

inline void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_bytes(const fs::path& p) { return taxon::io::read_file(p); }

}  // namespace test_io

TEST_CASE("read_file_into reuses the caller's buffer and names the file on errors", "[io]") {
  test_io::TempDir dir;
  std::string big(200000, 'x'), small = "tiny";
  big[12345] = '\0';  // binary content survives
  test_io::write_bytes(dir.path / "big.bin", big);
  test_io::write_bytes(dir.path / "small.bin", small);
  test_io::write_bytes(dir.path / "empty.bin", "");
  std::string buffer;
  taxon::io::read_file_into(dir.path / "big.bin", buffer);
  CHECK(buffer == big);
  const char* storage = buffer.data();
  taxon::io::read_file_into(dir.path / "small.bin", buffer);
  CHECK(buffer == small);
  CHECK(buffer.data() == storage);  // shrinking keeps the capacity: no allocation per file
  taxon::io::read_file_into(dir.path / "empty.bin", buffer);
  CHECK(buffer.empty());
  CHECK(taxon::io::read_file(dir.path / "big.bin") == big);
  REQUIRE_TAXON_ERROR(taxon::io::read_file_into(dir.path / "missing.bin", buffer), "io.missing-file");
  REQUIRE_TAXON_ERROR(taxon::io::read_file(dir.path / "no_dir" / "x.bin"), "io.missing-file");
  REQUIRE_TAXON_ERROR(taxon::io::read_file(dir.path), "io.cannot-read");
  try {
    taxon::io::read_file(dir.path / "missing.bin");
  } catch (const taxon::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("missing.bin"));
  }
}

TEST_CASE("npy round trip keeps dtype, shape and values", "[io][npy]") {
  test_io::TempDir dir;
  std::vector<at::Tensor> tensors = {
      at::randn({5, 7}),
      at::randn({3, 2, 4}, at::kDouble),
      at::randn({6}).to(at::kHalf),
      at::arange(-5, 7, at::kLong).reshape({3, 4}),
      at::arange(-5, 7, at::kInt),
      at::arange(0, 250, at::kLong).to(at::kByte),
      at::rand({4, 4}) > 0.5,
      at::randn({}),                       // 0-d
      at::empty({0, 3}),                   // empty
      at::randn({4, 6}).t(),               // non-contiguous: written in C order
  };
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto path = dir / ("t" + std::to_string(i) + ".npy");
    taxon::io::save_npy(path, tensors[i]);
    const auto back = taxon::io::load_npy(path);
    INFO("tensor " << i << " dtype " << tensors[i].scalar_type() << " sizes " << tensors[i].sizes());
    REQUIRE(back.scalar_type() == tensors[i].scalar_type());
    REQUIRE(back.sizes() == tensors[i].sizes());
    REQUIRE(at::equal(back, tensors[i]));
    // Header is aligned to 64 bytes as numpy requires for memory mapping.
    const auto bytes = test_io::read_bytes(path);
    const size_t header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    REQUIRE((10 + header_len) % 64 == 0);
    REQUIRE(bytes[10 + header_len - 1] == '\n');
  }
}

TEST_CASE("npy matches bytes written by numpy.save", "[io][npy]") {
  // Produced by: np.save(f, np.arange(6, dtype='<f4').reshape(2, 3)) with numpy 1.24.2: 128-byte header (length field 0x76), then the raw little-endian floats.
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  header += std::string(128 - 10 - header.size() - 1, ' ') + "\n";
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8) + std::string(1, char(header.size())) + std::string(1, '\0') + header;
  const float values[6] = {0, 1, 2, 3, 4, 5};
  bytes.append(reinterpret_cast<const char*>(values), sizeof values);

  test_io::TempDir dir;
  test_io::write_bytes(dir / "numpy.npy", bytes);
  const auto t = taxon::io::load_npy(dir / "numpy.npy");
  REQUIRE(t.scalar_type() == at::kFloat);
  REQUIRE(t.sizes() == at::IntArrayRef({2, 3}));
  REQUIRE(at::equal(t, at::arange(6, at::kFloat).reshape({2, 3})));

  // And our writer produces exactly numpy's bytes.
  taxon::io::save_npy(dir / "ours.npy", at::arange(6, at::kFloat).reshape({2, 3}));
  REQUIRE(test_io::read_bytes(dir / "ours.npy") == bytes);

  // 1-d shape literal is "(n,)" and int64 labels are '<i8'.
  taxon::io::save_npy(dir / "labels.npy", at::arange(3, at::kLong));
  const auto labels = test_io::read_bytes(dir / "labels.npy");
  REQUIRE(labels.find("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }") == 10);
}

TEST_CASE("npy reads format 2.0 and writes 1.0 up to numpy's 64 dimensions", "[io][npy]") {
  test_io::TempDir dir;
  std::string header = "{'descr': '<i4', 'shape': (2,), 'fortran_order': False}";
  header += std::string(128 - 12 - header.size() - 1, ' ') + "\n";
  std::string bytes = std::string("\x93NUMPY\x02\x00", 8);
  bytes += char(header.size());
  bytes += std::string(3, '\0');
  bytes += header;
  const int32_t values[2] = {-7, 9};
  bytes.append(reinterpret_cast<const char*>(values), sizeof values);
  test_io::write_bytes(dir / "v2.npy", bytes);
  const auto t = taxon::io::load_npy(dir / "v2.npy");
  REQUIRE(at::equal(t, at::tensor({-7, 9}, at::kInt)));

  // numpy 2 reads at most 64 dimensions (NPY_MAXDIMS): 64 round-trip, 65 are refused before writing anything.
  std::vector<int64_t> shape(64, 1);
  shape[0] = 3;
  const auto most = at::arange(3, at::kByte).reshape(shape);
  taxon::io::save_npy(dir / "most.npy", most);
  REQUIRE(test_io::read_bytes(dir / "most.npy")[6] == 1);
  const auto back = taxon::io::load_npy(dir / "most.npy");
  REQUIRE(back.sizes() == most.sizes());
  REQUIRE(at::equal(back.flatten(), most.flatten()));
  REQUIRE_TAXON_ERROR(taxon::io::save_npy(dir / "too_many.npy", at::ones(std::vector<int64_t>(65, 1), at::kByte)),
                      "io.bad-argument");
  REQUIRE_FALSE(std::filesystem::exists(dir / "too_many.npy"));
}

TEST_CASE("npy errors name the file", "[io][npy]") {
  test_io::TempDir dir;
  REQUIRE_TAXON_ERROR(taxon::io::load_npy(dir / "nope.npy"), "io.missing-file");

  test_io::write_bytes(dir / "magic.npy", "PK\x03\x04 definitely not numpy");
  REQUIRE_TAXON_ERROR(taxon::io::load_npy(dir / "magic.npy"), "io.bad-npy");
  try {
    taxon::io::load_npy(dir / "magic.npy");
  } catch (const taxon::Error& e) {
    REQUIRE(std::string(e.what()).find("magic.npy") != std::string::npos);
  }

  taxon::io::save_npy(dir / "ok.npy", at::randn({10, 10}));
  auto bytes = test_io::read_bytes(dir / "ok.npy");
  test_io::write_bytes(dir / "trunc.npy", bytes.substr(0, bytes.size() - 4));
  REQUIRE_TAXON_ERROR(taxon::io::load_npy(dir / "trunc.npy"), "io.bad-npy");
  test_io::write_bytes(dir / "trunc_header.npy", bytes.substr(0, 40));
  REQUIRE_TAXON_ERROR(taxon::io::load_npy(dir / "trunc_header.npy"), "io.bad-npy");

  auto fortran = bytes;
  fortran.replace(fortran.find("False"), 5, "True ");
  test_io::write_bytes(dir / "fortran.npy", fortran);
  try {
    taxon::io::load_npy(dir / "fortran.npy");
    FAIL("fortran_order=True accepted");
  } catch (const taxon::Error& e) {
    REQUIRE(e.id() == "io.bad-npy");
    REQUIRE(std::string(e.what()).find("fortran_order") != std::string::npos);
  }

  auto complex = bytes;
  complex.replace(complex.find("<f4"), 3, "<c8");
  test_io::write_bytes(dir / "complex.npy", complex);
  REQUIRE_TAXON_ERROR(taxon::io::load_npy(dir / "complex.npy"), "io.unsupported-dtype");

  auto garbled = bytes;
  garbled.replace(garbled.find("'shape'"), 7, "'shope'");
  test_io::write_bytes(dir / "garbled.npy", garbled);
  REQUIRE_TAXON_ERROR(taxon::io::load_npy(dir / "garbled.npy"), "io.bad-npy");

  auto big_endian = bytes;
  big_endian.replace(big_endian.find("<f4"), 3, ">f4");
  test_io::write_bytes(dir / "be.npy", big_endian);
  REQUIRE_TAXON_ERROR(taxon::io::load_npy(dir / "be.npy"), "io.bad-npy");

  REQUIRE_TAXON_ERROR(taxon::io::save_npy(dir / "c.npy", at::randn({2}).to(at::kBFloat16)), "io.unsupported-dtype");
  REQUIRE_FALSE(std::filesystem::exists(dir / "c.npy"));
}

namespace test_io {

// Builds a safetensors file byte by byte, the way Python's safetensors.torch.save_file lays it out: u64 LE header
// length, compact JSON header padded with spaces to a multiple of 8, then the tensors' bytes.
inline std::string safetensors_bytes(std::string json, const std::string& data) {
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + json + data;
}

inline std::string float_bytes(std::initializer_list<float> values) {
  std::string s;
  for (float v : values) s.append(reinterpret_cast<const char*>(&v), sizeof v);
  return s;
}

}  // namespace test_io

TEST_CASE("safetensors round trip: every dtype, shapes, order and metadata", "[io][safetensors]") {
  test_io::TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"visual.conv1.weight", at::randn({4, 3, 2, 2})},
      {"half", at::randn({3, 5}).to(at::kHalf)},
      {"bf16", at::randn({7}).to(at::kBFloat16)},
      {"double", at::randn({2, 2}, at::kDouble)},
      {"long", at::arange(-3, 9, at::kLong)},
      {"int", at::arange(-3, 3, at::kInt).reshape({2, 3})},
      {"short", at::arange(-3, 3, at::kShort)},
      {"char", at::arange(-3, 3, at::kChar)},
      {"byte", at::arange(0, 200, 7, at::kLong).to(at::kByte)},
      {"bool", at::rand({3, 3}) > 0.5},
      {"scalar", at::scalar_tensor(2.5)},
      {"empty", at::empty({0, 4})},
      {"transposed", at::randn({3, 5}).t()},
  };
  const std::map<std::string, std::string> meta = {{"config", R"({"width": 64})"}, {"format", "pt"}};
  taxon::io::save_safetensors(dir / "m.safetensors", tensors, meta);
  const auto file = taxon::io::load_safetensors(dir / "m.safetensors");
  REQUIRE(file.metadata == meta);
  REQUIRE(file.tensors.size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    INFO("tensor " << tensors[i].first);
    REQUIRE(file.tensors[i].first == tensors[i].first);  // file order = write order
    const auto& got = file.get(tensors[i].first);
    REQUIRE(got.scalar_type() == tensors[i].second.scalar_type());
    REQUIRE(got.sizes() == tensors[i].second.sizes());
    REQUIRE(at::equal(got, tensors[i].second));
  }
  REQUIRE(file.contains("bool"));
  REQUIRE_FALSE(file.contains("nope"));
  REQUIRE_TAXON_ERROR(file.get("nope"), "io.missing-key");

  // Tensors alias a private mapping: writing to them leaves the file unchanged, and they outlive `file`.
  at::Tensor kept = file.get("visual.conv1.weight");
  kept.fill_(0);
  const auto again = taxon::io::load_safetensors(dir / "m.safetensors");
  REQUIRE(at::equal(again.get("visual.conv1.weight"), tensors[0].second));
  REQUIRE(kept.abs().sum().item<float>() == 0.0f);

  // The data section starts 8-byte aligned.
  const auto raw = test_io::read_bytes(dir / "m.safetensors");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= uint64_t(static_cast<unsigned char>(raw[i])) << (8 * i);
  REQUIRE(header_len % 8 == 0);
}

TEST_CASE("safetensors reads the layout Python's safetensors writes", "[io][safetensors]") {
  // Python: save_file({"b": torch.tensor([1., 2.]), "a": torch.tensor([[3., 4., 5.]])}, f, metadata={"format": "pt"})
  // sorts by (alignment desc, name), so "a" comes first in the data section.
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[1,3],"data_offsets":[0,12]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})";
  const std::string bytes = test_io::safetensors_bytes(json, test_io::float_bytes({3, 4, 5, 1, 2}));
  test_io::TempDir dir;
  test_io::write_bytes(dir / "py.safetensors", bytes);
  const auto file = taxon::io::load_safetensors(dir / "py.safetensors");
  REQUIRE(file.metadata.at("format") == "pt");
  REQUIRE(at::equal(file.get("a"), at::tensor({3.f, 4.f, 5.f}).reshape({1, 3})));
  REQUIRE(at::equal(file.get("b"), at::tensor({1.f, 2.f})));

  // Our writer emits a header Python's parser accepts: same keys, same offsets.
  taxon::io::save_safetensors(dir / "ours.safetensors", {{"a", file.get("a")}, {"b", file.get("b")}}, {{"format", "pt"}});
  REQUIRE(test_io::read_bytes(dir / "ours.safetensors") == bytes);
}

TEST_CASE("safetensors loader errors carry ids and name the file", "[io][safetensors]") {
  test_io::TempDir dir;
  REQUIRE_TAXON_ERROR(taxon::io::load_safetensors(dir / "missing.safetensors"), "io.missing-file");

  const std::string good_json = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  const std::string data = test_io::float_bytes({1, 2, 3, 4});
  const auto write = [&](const std::string& name, const std::string& bytes) {
    test_io::write_bytes(dir / name, bytes);
    return dir / name;
  };
  REQUIRE(at::equal(taxon::io::load_safetensors(write("good", test_io::safetensors_bytes(good_json, data))).get("w"),
                    at::arange(1, 5, at::kFloat).reshape({2, 2})));

  const auto full = test_io::safetensors_bytes(good_json, data);
  REQUIRE_TAXON_ERROR(taxon::io::load_safetensors(write("tiny", "abc")), "io.bad-safetensors");
  REQUIRE_TAXON_ERROR(taxon::io::load_safetensors(write("trunc_data", full.substr(0, full.size() - 3))),
                      "io.bad-safetensors");
  REQUIRE_TAXON_ERROR(taxon::io::load_safetensors(write("trunc_header", full.substr(0, 20))), "io.bad-safetensors");
  REQUIRE_TAXON_ERROR(
      taxon::io::load_safetensors(write("bad_json", test_io::safetensors_bytes(R"({"w":{"dtype":"F32",)", data))),
      "io.bad-safetensors");
  REQUIRE_TAXON_ERROR(taxon::io::load_safetensors(write(
                          "dtype", test_io::safetensors_bytes(
                                       R"({"w":{"dtype":"F8_E4M3","shape":[2,2],"data_offsets":[0,16]}})", data))),
                      "io.unsupported-dtype");
  REQUIRE_TAXON_ERROR(
      taxon::io::load_safetensors(write(
          "overlap", test_io::safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                                R"("v":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                                data))),
      "io.bad-safetensors");
  REQUIRE_TAXON_ERROR(
      taxon::io::load_safetensors(write(
          "range", test_io::safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]}})", data))),
      "io.bad-safetensors");
  REQUIRE_TAXON_ERROR(
      taxon::io::load_safetensors(write(
          "mismatch", test_io::safetensors_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", data))),
      "io.bad-safetensors");
  REQUIRE_TAXON_ERROR(
      taxon::io::load_safetensors(write("negative", test_io::safetensors_bytes(
                                                        R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})",
                                                        data))),
      "io.bad-safetensors");
  try {
    taxon::io::load_safetensors(dir / "overlap");
  } catch (const taxon::Error& e) {
    const std::string msg = e.what();
    REQUIRE(msg.find("overlap") != std::string::npos);
    REQUIRE(msg.find("'w'") != std::string::npos);
    REQUIRE(msg.find("'v'") != std::string::npos);
  }

  REQUIRE_TAXON_ERROR(taxon::io::save_safetensors(dir / "dup.safetensors",
                                                  {{"a", at::ones({1})}, {"a", at::ones({1})}}),
                      "io.bad-argument");
  REQUIRE_TAXON_ERROR(taxon::io::save_safetensors(dir / "cplx.safetensors", {{"a", at::ones({1}, at::kComplexFloat)}}),
                      "io.unsupported-dtype");
  REQUIRE_FALSE(std::filesystem::exists(dir / "dup.safetensors"));
}

namespace test_io {
// Restores an unlimited (simulated) disk however a test leaves.
struct SimulatedDisk {
  explicit SimulatedDisk(std::uint64_t bytes) { taxon::io::simulate_disk_full_after(bytes); }
  ~SimulatedDisk() { taxon::io::simulate_disk_full_after(std::nullopt); }
};
inline int temporaries_in(const fs::path& dir) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.path().filename().string().find(".tmp.") != std::string::npos;
  return n;
}
}  // namespace test_io

TEST_CASE("a full disk is io.disk-full and leaves the previous file, no temporary and no torn line", "[io][faults]") {
  test_io::TempDir dir;
  const auto file = dir.path / "out.bin";
  taxon::io::write_text_atomically(file, "previous");
  {
    test_io::SimulatedDisk disk(1000);
    // Through the buffered stream, and a large block written straight through.
    REQUIRE_TAXON_ERROR(taxon::io::write_text_atomically(file, std::string(5000, 'a')), "io.disk-full");
    REQUIRE_TAXON_ERROR(taxon::io::write_atomically(file,
                                                    [](std::ostream& out) {
                                                      for (int i = 0; i < 3000; ++i) out.put('b');
                                                    }),
                        "io.disk-full");
  }
  CHECK(test_io::read_bytes(file) == "previous");
  CHECK(test_io::temporaries_in(dir.path) == 0);
  {
    // A writer that throws its own exception once the stream failed (LibTorch's archive writer does) is still a
    // full disk, not an unexpected error.
    test_io::SimulatedDisk disk(10);
    REQUIRE_TAXON_ERROR(taxon::io::write_atomically(file,
                                                    [](std::ostream& out) {
                                                      out.write(std::string(100000, 'c').data(), 100000);
                                                      if (!out) throw std::runtime_error("writer failed");
                                                    }),
                        "io.disk-full");
  }
  CHECK(test_io::read_bytes(file) == "previous");
  // metrics.jsonl-style appends: a line that does not fit is cut off entirely.
  const auto log = dir.path / "metrics.jsonl";
  taxon::io::append_text(log, "{\"step\": 1}\n");
  {
    test_io::SimulatedDisk disk(5);
    REQUIRE_TAXON_ERROR(taxon::io::append_text(log, "{\"step\": 2, \"loss\": 0.5}\n"), "io.disk-full");
  }
  CHECK(test_io::read_bytes(log) == "{\"step\": 1}\n");
  taxon::io::append_text(log, "{\"step\": 2}\n");
  CHECK(test_io::read_bytes(log) == "{\"step\": 1}\n{\"step\": 2}\n");
  // Unlimited again: writes go through.
  taxon::io::write_text_atomically(file, std::string(5000, 'a'));
  CHECK(std::filesystem::file_size(file) == 5000);
}

TEST_CASE("file_crc32 is zlib's CRC-32 and temporaries of dead processes are removed", "[io][faults]") {
  test_io::TempDir dir;
  test_io::write_bytes(dir.path / "a.txt", "123456789");
  CHECK(taxon::io::file_crc32(dir.path / "a.txt") == 0xCBF43926u);  // the standard CRC-32 check value
  REQUIRE_TAXON_ERROR(taxon::io::file_crc32(dir.path / "absent"), "io.missing-file");
  // A temporary of a process that no longer runs goes; one of this process (being written) and others stay.
  std::filesystem::create_directories(dir.path / ".step-000000010.tmp.999999999.7" / "x");
  std::filesystem::create_directories(dir.path / (".step-000000011.tmp." + std::to_string(::getpid()) + ".1"));
  std::filesystem::create_directories(dir.path / "step-000000009");
  test_io::write_bytes(dir.path / "model.safetensors.tmp.999999999.5", "torn");
  test_io::write_bytes(dir.path / "notes.tmp.txt", "a user's file");
  CHECK(taxon::io::remove_stale_temporaries(dir.path) == 2);
  CHECK_FALSE(std::filesystem::exists(dir.path / "model.safetensors.tmp.999999999.5"));
  CHECK(std::filesystem::exists(dir.path / "notes.tmp.txt"));
  CHECK_FALSE(std::filesystem::exists(dir.path / ".step-000000010.tmp.999999999.7"));
  CHECK(std::filesystem::exists(dir.path / (".step-000000011.tmp." + std::to_string(::getpid()) + ".1")));
  CHECK(std::filesystem::exists(dir.path / "step-000000009"));
}

TEST_CASE("dump_json replaces bytes that are not UTF-8 instead of throwing", "[io][faults]") {
  const nlohmann::json j = {{"csv", std::string("caf\xe9.csv")}, {"ok", "caf\xc3\xa9"}};
  const std::string text = taxon::io::dump_json(j);
  CHECK(text.find("caf\xef\xbf\xbd.csv") != std::string::npos);  // U+FFFD
  CHECK(text.find("caf\xc3\xa9") != std::string::npos);
  CHECK(taxon::io::parse_json(text));
}
