// File formats: .npy and safetensors round trips, interoperability with bytes written by Python, loader errors.
#include "taxon/io/npy.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "support/tensor_compare.hpp"

namespace test_io {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("taxon_test_io_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path operator/(const std::string& name) const { return path / name; }
};

inline void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_bytes(const fs::path& p) { return taxon::io::read_file(p); }

}  // namespace test_io

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

TEST_CASE("npy reads format 2.0 and writes it for huge headers", "[io][npy]") {
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

  // A 25000-d tensor of size-1 dims gives a header above 64 KiB: version 2.0.
  std::vector<int64_t> shape(25000, 1);
  const auto big = at::ones(shape, at::kByte);
  taxon::io::save_npy(dir / "big.npy", big);
  const auto raw = test_io::read_bytes(dir / "big.npy");
  REQUIRE(raw[6] == 2);
  const auto back = taxon::io::load_npy(dir / "big.npy");
  REQUIRE(back.dim() == 25000);
  REQUIRE(at::equal(back, big));
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
