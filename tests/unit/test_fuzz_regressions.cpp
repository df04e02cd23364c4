// Every input the fuzz harnesses (tests/fuzz) found, or an attacker would try, that made a reader misbehave: each
// test writes the hostile file and requires a taxon::Error with an id, raised before anything large is allocated
// (an AllocationGuard refuses and records CPU tensor allocations). Undefined behaviour ones (UBSan) fail in the
// sanitized build (scripts/test-sanitized).
#include "taxon/backbone/weights.hpp"
#include "taxon/backbone/torchscript.hpp"
#include "taxon/data/decode.hpp"
#include "taxon/data/decode_crop.hpp"
#include "taxon/data/idx_dataset.hpp"
#include "taxon/data/image_dataset.hpp"
#include "taxon/data/taxonomy.hpp"
#include "taxon/io/json.hpp"
#include "taxon/io/npy.hpp"
#include "taxon/io/safetensors.hpp"
#include "taxon/backbone/zoo.hpp"
#include "taxon/pfc/partial_fc.hpp"
#include "taxon/train/train.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/csrc/jit/serialization/pickle.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "support/allocation_guard.hpp"
#include "support/gzip.hpp"
#include "support/temp_dir.hpp"
#include "support/tensor_compare.hpp"

namespace test_fuzz_regressions {

namespace fs = std::filesystem;

// Far below what the hostile headers declare (gigabytes), far above what the honest parts of the files need.
constexpr std::size_t kAllocationCap = std::size_t{64} << 20;

inline fs::path write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return p;
}

inline std::string be32(uint32_t v) {
  std::string s;
  for (int shift = 24; shift >= 0; shift -= 8) s += static_cast<char>((v >> shift) & 0xFF);
  return s;
}

inline std::string idx_header(const std::vector<uint32_t>& dims) {
  std::string s("\0\0\x08", 3);
  s += static_cast<char>(dims.size());
  for (auto d : dims) s += be32(d);
  return s;
}

using taxon::test::gzip;

// A .npy file whose header declares `shape_literal` of `descr` followed by `payload`.
inline std::string npy_bytes(const std::string& descr, const std::string& shape_literal, const std::string& payload) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape_literal + ", }";
  const size_t unpadded = 10 + dict.size() + 1;
  dict += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  std::string s = "\x93NUMPY\x01";
  s += '\0';
  s += static_cast<char>(dict.size() & 0xFF);
  s += static_cast<char>(dict.size() >> 8);
  return s + dict + payload;
}

// u64 LE header length, the JSON header (padded to 8 bytes, as Python's safetensors does), the data.
inline std::string safetensors_bytes(std::string json, const std::string& data) {
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((uint64_t{json.size()} >> (8 * i)) & 0xFF);
  return out + json + data;
}

inline at::Tensor gradient_image(int64_t h, int64_t w) {
  return at::arange(h * w * 3, at::kLong).remainder(251).to(at::kByte).reshape({h, w, 3});
}

// A real JPEG whose baseline frame header (SOF0) is rewritten to declare width x height.
inline std::string jpeg_declaring(uint16_t width, uint16_t height) {
  std::string jpeg = taxon::data::encode_jpeg(gradient_image(16, 16));
  const auto sof = jpeg.find("\xFF\xC0");
  REQUIRE(sof != std::string::npos);
  jpeg[sof + 5] = static_cast<char>(height >> 8);
  jpeg[sof + 6] = static_cast<char>(height & 0xFF);
  jpeg[sof + 7] = static_cast<char>(width >> 8);
  jpeg[sof + 8] = static_cast<char>(width & 0xFF);
  return jpeg;
}

// A real PNG whose IHDR is rewritten to declare width x height (with its CRC fixed, so libpng accepts the header).
inline std::string png_declaring(uint32_t width, uint32_t height) {
  std::string png = taxon::data::encode_png(gradient_image(4, 4));
  REQUIRE(png.compare(12, 4, "IHDR") == 0);
  png.replace(16, 4, be32(width));
  png.replace(20, 4, be32(height));
  const auto crc = crc32(0, reinterpret_cast<const Bytef*>(png.data() + 12), 17);
  png.replace(29, 4, be32(static_cast<uint32_t>(crc)));
  return png;
}

inline std::string tiny_clip_config() {
  return nlohmann::json(taxon::backbone::VisionTransformerOptions().image_size(8).patch_size(4).width(8).layers(1).heads(2).output_dim(4))
      .dump();
}

}  // namespace test_fuzz_regressions

using test_fuzz_regressions::kAllocationCap;
using test_fuzz_regressions::write_file;

TEST_CASE("idx: an empty dimension or payload reads as an empty tensor (was memcpy to a null buffer)", "[fuzz-regression][data]") {
  taxon::test::TempDir dir("taxon_fuzz_idx");
  namespace t = test_fuzz_regressions;
  const auto empty_images = write_file(dir / "images", t::idx_header({0, 28, 28}));
  const auto empty_labels = write_file(dir / "labels", t::idx_header({0}));
  const at::Tensor images = taxon::data::detail::read_idx_u8(empty_images);
  CHECK(images.sizes() == at::IntArrayRef({0, 28, 28}));
  const taxon::data::IdxDataset dataset(empty_images, empty_labels);
  CHECK(dataset.size() == 0);
  CHECK(taxon::data::detail::read_idx_u8(write_file(dir / "zero_width", t::idx_header({5, 0}))).numel() == 0);
  // Header only, no dimension at all, or a payload shorter than declared.
  REQUIRE_TAXON_ERROR(taxon::data::detail::read_idx_u8(write_file(dir / "nodims", std::string("\0\0\x08\0", 4))),
                      "data.corrupt-file");
  REQUIRE_TAXON_ERROR(taxon::data::detail::read_idx_u8(write_file(dir / "short", t::idx_header({3}) + "ab")),
                      "data.corrupt-file");
}

TEST_CASE("idx: dimensions whose product wraps around 64 bits are an error, not a huge tensor", "[fuzz-regression][data]") {
  taxon::test::TempDir dir("taxon_fuzz_idx");
  // 65536^4 = 2^64 wraps to 0, which equals the (empty) payload: the old reader then asked for 2^64 elements.
  const auto path = write_file(dir / "wrap", test_fuzz_regressions::idx_header({65536, 65536, 65536, 65536}));
  taxon::test::AllocationGuard guard(kAllocationCap);
  REQUIRE_TAXON_ERROR(taxon::data::detail::read_idx_u8(path), "data.corrupt-file");
  CHECK(guard.largest() < kAllocationCap);
}

TEST_CASE("idx: gzip data that inflates past the declared size stops early", "[fuzz-regression][data]") {
  taxon::test::TempDir dir("taxon_fuzz_idx");
  namespace t = test_fuzz_regressions;
  // Declares 4 bytes, carries 8 MiB of zeros (8 KiB compressed): a gzip bomb in miniature.
  const auto path = write_file(dir / "bomb.gz", t::gzip(t::idx_header({4}) + std::string(8 << 20, '\0')));
  CHECK(std::filesystem::file_size(path) < 64 * 1024);
  try {
    taxon::data::detail::read_idx_u8(path);
    FAIL("accepted");
  } catch (const taxon::Error& e) {
    CHECK(e.id() == "data.corrupt-file");
    CHECK(std::string(e.what()).find("inflates to more than the 12 bytes") != std::string::npos);
  }
  // The same file without the excess still reads.
  const auto ok = write_file(dir / "ok.gz", t::gzip(t::idx_header({4}) + "abcd"));
  CHECK(taxon::data::detail::read_idx_u8(ok).sum().item<int64_t>() == 'a' + 'b' + 'c' + 'd');
}

TEST_CASE("npy: a header declaring 16 GB in a tiny file fails before allocating", "[fuzz-regression][io]") {
  taxon::test::TempDir dir("taxon_fuzz_npy");
  namespace t = test_fuzz_regressions;
  const auto path = write_file(dir / "huge.npy", t::npy_bytes("<f4", "(4000000000,)", "abcd"));
  taxon::test::AllocationGuard guard(kAllocationCap);
  try {
    taxon::io::load_npy(path);
    FAIL("accepted");
  } catch (const taxon::Error& e) {
    CHECK(e.id() == "io.bad-npy");
    CHECK(std::string(e.what()).find("needs 16000000000 bytes, file has 4") != std::string::npos);
  }
  CHECK(guard.largest() < kAllocationCap);
  // A shape whose byte count overflows 64 bits, and one with more dimensions than numpy allows.
  REQUIRE_TAXON_ERROR(taxon::io::load_npy(write_file(dir / "overflow.npy", t::npy_bytes("<f8", "(1099511627776, 1099511627776)", ""))),
                      "io.bad-npy");
  REQUIRE_TAXON_ERROR(taxon::io::load_npy(write_file(dir / "strides.npy", t::npy_bytes("<f4", "(0, 4294967296, 4294967296)", ""))),
                      "io.bad-npy");
  std::string many = "(";
  for (int i = 0; i < 65; ++i) many += "1,";
  REQUIRE_TAXON_ERROR(taxon::io::load_npy(write_file(dir / "dims.npy", t::npy_bytes("|u1", many + ")", "x"))), "io.bad-npy");
  CHECK(guard.largest() < kAllocationCap);
}

TEST_CASE("safetensors: overlapping offsets hidden behind an empty tensor are rejected", "[fuzz-regression][io]") {
  taxon::test::TempDir dir("taxon_fuzz_st");
  namespace t = test_fuzz_regressions;
  const std::string data(24, '\x01');
  // 'a' [0,16) and 'b' [8,24) share 8 bytes; the empty 'e' sorted between them hid the overlap from the old check.
  const auto path = write_file(
      dir / "hidden.safetensors",
      t::safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                           R"("e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]},)"
                           R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                           data));
  try {
    taxon::io::load_safetensors(path);
    FAIL("accepted");
  } catch (const taxon::Error& e) {
    CHECK(e.id() == "io.bad-safetensors");
    CHECK(std::string(e.what()).find("overlap") != std::string::npos);
  }
  // safetensors' rule in full: the first tensor starts at 0, no gaps, and the last one ends at the end of the file.
  REQUIRE_TAXON_ERROR(taxon::io::load_safetensors(write_file(
                          dir / "gap.safetensors", t::safetensors_bytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
                                                                        std::string(8, 'x')))),
                      "io.bad-safetensors");
  REQUIRE_TAXON_ERROR(taxon::io::load_safetensors(write_file(
                          dir / "trailing.safetensors",
                          t::safetensors_bytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", std::string(9, 'x')))),
                      "io.bad-safetensors");
  // Empty tensors anywhere in a contiguous layout stay legal.
  const auto ok = taxon::io::load_safetensors(write_file(
      dir / "ok.safetensors",
      t::safetensors_bytes(R"({"e0":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]},)"
                           R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                           R"("e1":{"dtype":"F32","shape":[0],"data_offsets":[2,2]},)"
                           R"("b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})",
                           "xyz")));
  CHECK(ok.tensors.size() == 4);
  CHECK(ok.get("e0").sizes() == at::IntArrayRef({0, 5}));
}

TEST_CASE("safetensors: a shape whose size overflows 64 bits is corrupt, even next to a zero", "[fuzz-regression][io]") {
  taxon::test::TempDir dir("taxon_fuzz_st");
  namespace t = test_fuzz_regressions;
  taxon::test::AllocationGuard guard(kAllocationCap);
  // 2^62 * 4 elements wraps to 0 bytes, which matched the empty range: the old reader then built that tensor.
  REQUIRE_TAXON_ERROR(taxon::io::load_safetensors(write_file(
                          dir / "wrap.safetensors",
                          t::safetensors_bytes(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})", ""))),
                      "io.bad-safetensors");
  REQUIRE_TAXON_ERROR(taxon::io::load_safetensors(write_file(
                          dir / "wrap0.safetensors",
                          t::safetensors_bytes(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})", ""))),
                      "io.bad-safetensors");
  CHECK(guard.largest() < kAllocationCap);
}

TEST_CASE("safetensors: a header longer than the format's 100 MB limit is refused unread", "[fuzz-regression][io]") {
  taxon::test::TempDir dir("taxon_fuzz_st");
  const auto path = dir / "big_header.safetensors";
  std::string len(8, '\0');
  const uint64_t n = 100'000'008;
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  write_file(path, len + "{");
  std::filesystem::resize_file(path, n + 16);  // sparse: the file is long enough, the header is never read
  try {
    taxon::io::load_safetensors(path);
    FAIL("accepted");
  } catch (const taxon::Error& e) {
    CHECK(e.id() == "io.bad-safetensors");
    CHECK(std::string(e.what()).find("exceeds safetensors' limit of 100000000 bytes") != std::string::npos);
  }
}

TEST_CASE("json: nesting deeper than 64 levels is an error, not a stack overflow later", "[fuzz-regression][io]") {
  taxon::test::TempDir dir("taxon_fuzz_json");
  namespace t = test_fuzz_regressions;
  // A million '[': parsed fine (nlohmann's parser is iterative), then dumped into an error message recursively.
  const std::string deep = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  try {
    taxon::io::load_safetensors(write_file(dir / "deep.safetensors", t::safetensors_bytes(R"({"w":)" + deep + "}", "")));
    FAIL("accepted");
  } catch (const taxon::Error& e) {
    CHECK(e.id() == "io.bad-safetensors");
    CHECK(std::string(e.what()).find("nested deeper than 64 levels") != std::string::npos);
  }
  REQUIRE_TAXON_ERROR(taxon::backbone::vit_options_from_json(R"({"width": )" + deep + "}", "config"), "backbone.bad-config");
  REQUIRE_TAXON_ERROR(taxon::data::Taxonomy::load_json(write_file(dir / "taxonomy.json", deep)), "data.bad-taxonomy");
  // Exactly the limit still parses.
  const std::string at_limit = std::string(64, '[') + std::string(64, ']');
  const auto parsed = taxon::io::parse_json(at_limit);
  CHECK((parsed && parsed.value.is_array()));
  const auto too_deep = taxon::io::parse_json("[" + at_limit + "]");
  CHECK(!too_deep);
  CHECK(too_deep.error == "JSON nested deeper than 64 levels");
  const auto broken = taxon::io::parse_json("{\"a\": tru");
  CHECK(!broken);
  CHECK(broken.error.rfind("not valid JSON: ", 0) == 0);
}

TEST_CASE("images: the default pixel limit is Pillow's decompression-bomb error threshold", "[fuzz-regression][data]") {
  // PIL.Image.MAX_IMAGE_PIXELS warns; twice it raises DecompressionBombError, which is where taxon refuses.
  STATIC_REQUIRE(taxon::data::kPillowMaxImagePixels == 89'478'485);
  STATIC_REQUIRE(taxon::data::kDefaultMaxImagePixels == 178'956'970);
}

TEST_CASE("images: a JPEG declaring 65500x65500 is refused before decoding, in every decode path", "[fuzz-regression][data]") {
  namespace t = test_fuzz_regressions;
  const std::string jpeg = t::jpeg_declaring(65500, 65500);
  taxon::test::AllocationGuard guard(kAllocationCap);
  REQUIRE_TAXON_ERROR(taxon::data::decode_image(jpeg, "bomb.jpg"), "data.image-too-large");
  REQUIRE_TAXON_ERROR(taxon::data::decode_image(jpeg, "bomb.jpg", /*min_side=*/224), "data.image-too-large");
  REQUIRE_TAXON_ERROR(taxon::data::decode_resize_center_crop(jpeg, "bomb.jpg", 224, 224), "data.image-too-large");
  REQUIRE_TAXON_ERROR(taxon::data::decode_region(jpeg, "bomb.jpg", [](int64_t h, int64_t w) { return taxon::data::Box{0, 0, h, w}; }),
                      "data.image-too-large");
  CHECK(guard.largest() < kAllocationCap);
  try {
    taxon::data::decode_image(jpeg, "bomb.jpg");
  } catch (const taxon::Error& e) {
    CHECK(std::string(e.what()).find("bomb.jpg: JPEG declares 65500x65500 = 4290250000 pixels, more than the limit of 178956970") !=
          std::string::npos);
  }
}

TEST_CASE("images: a PNG declaring 46000x46000 is refused before decoding", "[fuzz-regression][data]") {
  namespace t = test_fuzz_regressions;
  const std::string png = t::png_declaring(46000, 46000);
  taxon::test::AllocationGuard guard(kAllocationCap);
  REQUIRE_TAXON_ERROR(taxon::data::decode_image(png, "bomb.png"), "data.image-too-large");
  REQUIRE_TAXON_ERROR(taxon::data::decode_resize_center_crop(png, "bomb.png", 224, 224), "data.image-too-large");
  CHECK(guard.largest() < kAllocationCap);
}

TEST_CASE("images: max_pixels is inclusive, configurable per call and per dataset", "[fuzz-regression][data]") {
  namespace t = test_fuzz_regressions;
  const std::string jpeg = taxon::data::encode_jpeg(t::gradient_image(12, 16));
  const std::string png = taxon::data::encode_png(t::gradient_image(12, 16));
  for (const auto* bytes : {&jpeg, &png}) {
    CHECK(taxon::data::decode_image(*bytes, "img", 0, 192).sizes() == at::IntArrayRef({12, 16, 3}));
    REQUIRE_TAXON_ERROR(taxon::data::decode_image(*bytes, "img", 0, 191), "data.image-too-large");
    REQUIRE_TAXON_ERROR(taxon::data::decode_resize_center_crop(*bytes, "img", 8, 8, 191), "data.image-too-large");
    CHECK(taxon::data::decode_resize_center_crop(*bytes, "img", 8, 8, 192).sizes() == at::IntArrayRef({8, 8, 3}));
    REQUIRE_TAXON_ERROR(taxon::data::decode_image(*bytes, "img", 0, 0), "data.bad-option");
  }
  taxon::test::TempDir dir("taxon_fuzz_img");
  std::filesystem::create_directories(dir / "Esox");
  write_file(dir / "Esox" / "a.jpg", jpeg);
  using taxon::data::ImageFolderDataset;
  using taxon::data::ImageFolderDatasetOptions;
  CHECK(ImageFolderDataset(dir.path).max_image_pixels() == taxon::data::kDefaultMaxImagePixels);
  CHECK(ImageFolderDataset(dir.path).get(0).image.sizes() == at::IntArrayRef({12, 16, 3}));
  REQUIRE_TAXON_ERROR(ImageFolderDataset(dir.path, ImageFolderDatasetOptions().max_image_pixels(100)).get(0), "data.image-too-large");
  REQUIRE_TAXON_ERROR(
      ImageFolderDataset(dir.path, ImageFolderDatasetOptions().max_image_pixels(100).decode_resize_crop({8, 8})).get(0),
      "data.image-too-large");
  REQUIRE_TAXON_ERROR(ImageFolderDataset(dir.path, ImageFolderDatasetOptions().max_image_pixels(0)), "data.bad-option");
}

TEST_CASE("vit config: an absurd image size or width is a config error, not an overflow or an allocation", "[fuzz-regression][backbone]") {
  using taxon::backbone::vit_options_from_json;
  // tokens() = (2^62)^2 + 1 overflowed int64 (undefined behaviour) before the model allocated anything.
  REQUIRE_TAXON_ERROR(vit_options_from_json(R"({"image_size": 4611686018427387904, "patch_size": 1})", "config"),
                      "backbone.bad-config");
  REQUIRE_TAXON_ERROR(vit_options_from_json(R"({"width": 3000000000, "heads": 1})", "config"), "backbone.bad-config");
  REQUIRE_TAXON_ERROR(vit_options_from_json(R"({"ln_eps": -1})", "config"), "backbone.bad-config");
  try {
    vit_options_from_json(R"({"layers": 100000})", "model.safetensors 'config' metadata");
    FAIL("accepted");
  } catch (const taxon::Error& e) {
    CHECK(std::string(e.what()).find("model.safetensors 'config' metadata: ViT size out of bounds") != std::string::npos);
  }
  // The bounds leave every published ViT alone (ViT-bigG/14 at 336 px here).
  const auto big = vit_options_from_json(R"({"image_size": 336, "patch_size": 14, "width": 1664, "layers": 48, "heads": 16,
                                             "output_dim": 1280, "mlp_ratio": 4})", "config");
  CHECK(big.tokens() == 577);
}

TEST_CASE("vit_state_numel counts exactly what the module allocates", "[fuzz-regression][backbone]") {
  using taxon::backbone::Layout;
  using taxon::backbone::VisionTransformerOptions;
  for (const auto& o : {VisionTransformerOptions().image_size(16).patch_size(4).width(16).layers(2).heads(2).output_dim(8),
                        VisionTransformerOptions().image_size(16).patch_size(4).width(16).layers(2).heads(2).output_dim(8).layer_scale(true),
                        VisionTransformerOptions().layout(Layout::unicom).image_size(12).patch_size(3).width(8).layers(3).heads(2).output_dim(5).mlp_ratio(2)}) {
    taxon::backbone::VisionTransformer model(o);
    int64_t numel = 0;
    for (const auto& [name, t] : taxon::backbone::state_dict(*model)) numel += t.numel();
    CHECK(taxon::backbone::vit_state_numel(o) == numel);
  }
}

TEST_CASE("checkpoints: a config or inferred architecture larger than the file's data is refused before building", "[fuzz-regression][backbone]") {
  taxon::test::TempDir dir("taxon_fuzz_ckpt");
  namespace t = test_fuzz_regressions;
  taxon::test::AllocationGuard guard(kAllocationCap);
  // A 4-byte tensor and a config declaring width 40000 (in_proj alone: 19 GB).
  const auto wide = dir / "wide.safetensors";
  taxon::io::save_safetensors(wide, {{"conv1.weight", at::zeros({1})}},
                              {{"config", R"({"width": 40000, "heads": 1, "layers": 1})"}, {"taxon.format", "vit"}});
  try {
    taxon::backbone::load_checkpoint(wide);
    FAIL("accepted");
  } catch (const taxon::Error& e) {
    CHECK(e.id() == "backbone.bad-config");
    CHECK(std::string(e.what()).find("but the file holds only 4 bytes of tensor data") != std::string::npos);
  }
  // No config: 2000 empty tensors named like attention blocks make the inferred UNICOM ViT 2000 layers deep.
  std::vector<std::pair<std::string, at::Tensor>> tensors = {{"patch_embed.proj.weight", at::zeros({768, 3, 1, 1}, at::kHalf)},
                                                             {"pos_embed", at::zeros({1, 1, 768}, at::kHalf)},
                                                             {"feature.2.weight", at::zeros({1, 768}, at::kHalf)}};
  for (int i = 0; i < 2000; ++i) tensors.emplace_back("blocks." + std::to_string(i) + ".attn.qkv.weight", at::empty({0}));
  const auto deep = dir / "deep.safetensors";
  taxon::io::save_safetensors(deep, tensors);
  REQUIRE_TAXON_ERROR(taxon::backbone::load_checkpoint(deep), "backbone.state-dict-mismatch");
  // torch.save keeps views, so a file of a few bytes can declare any shape: a patch of 2^62 pixels times a grid of 2
  // overflowed the inferred image size, a positional embedding of 2^63 - 1 tokens overflowed grid * grid.
  const auto pt = [&](const std::string& name, const at::Tensor& conv, const at::Tensor& pos) {
    c10::Dict<std::string, at::Tensor> dict;
    dict.insert("conv1.weight", conv);
    dict.insert("positional_embedding", pos);
    dict.insert("proj", at::zeros({1, 4}));
    const std::vector<char> pickled = torch::jit::pickle_save(dict);
    return write_file(dir / name, std::string(pickled.begin(), pickled.end()));
  };
  const auto one = at::zeros({1, 1, 1, 1});
  REQUIRE_TAXON_ERROR(taxon::backbone::load_pretrained(pt("patch.pt", one.expand({1, 1, 1, int64_t{1} << 62}),
                                                          at::zeros({1, 1}).expand({5, 1}))),
                      "backbone.state-dict-mismatch");
  REQUIRE_TAXON_ERROR(taxon::backbone::load_pretrained(
                          pt("grid.pt", one, at::zeros({1, 1}).expand({std::numeric_limits<int64_t>::max(), 1}))),
                      "backbone.state-dict-mismatch");
  CHECK(guard.largest() < kAllocationCap);
  // An honest checkpoint still loads.
  taxon::backbone::VisionTransformer model(taxon::backbone::vit_options_from_json(t::tiny_clip_config(), "config"));
  taxon::backbone::save_checkpoint(dir / "ok.safetensors", model);
  CHECK(taxon::backbone::load_checkpoint(dir / "ok.safetensors")->options == model->options);
}

TEST_CASE("taxonomy JSON: ranks or labels that are not strings are a taxonomy error", "[fuzz-regression][data]") {
  taxon::test::TempDir dir("taxon_fuzz_tax");
  REQUIRE_TAXON_ERROR(taxon::data::Taxonomy::load_json(write_file(dir / "a.json", R"({"ranks": [1], "labels": {}})")),
                      "data.bad-taxonomy");
  REQUIRE_TAXON_ERROR(
      taxon::data::Taxonomy::load_json(write_file(dir / "b.json", R"({"ranks": ["species"], "labels": {"species": [null]}})")),
      "data.bad-taxonomy");
  REQUIRE_TAXON_ERROR(taxon::data::Taxonomy::load_json(write_file(dir / "c.json", R"({"ranks": "species", "labels": []})")),
                      "data.bad-taxonomy");
}

TEST_CASE("trainer.json: nesting deeper than 64 levels is a checkpoint error", "[fuzz-regression][train]") {
  // Missing and mistyped fields are covered by test_train ("trainer.json" damage); this is the nesting limit.
  taxon::test::TempDir dir("taxon_fuzz_trainer");
  auto make = [] {
    auto backbone = taxon::backbone::VisionTransformer(taxon::backbone::zoo_config("demo28").layers(1));
    auto head = taxon::pfc::PartialFC<taxon::loss::ArcFace>(taxon::pfc::PartialFCOptions(4, 64));
    return taxon::train::Trainer(backbone, head, taxon::train::TrainerOptions().epochs(2).steps_per_epoch(3));
  };
  auto trainer = make();
  const auto checkpoint = trainer.save_checkpoint(dir.path);
  CHECK(make().resume(checkpoint));
  write_file(checkpoint / "trainer.json", std::string(65, '[') + std::string(65, ']'));
  try {
    make().resume(checkpoint);
    FAIL("accepted");
  } catch (const taxon::Error& e) {
    CHECK(e.id() == "train.bad-checkpoint");
    CHECK(std::string(e.what()).find("nested deeper than 64 levels") != std::string::npos);
  }
}

// Found by the pt_archive harness: 8 bytes changed in the committed open_clip seed made LibTorch's Unpickler throw a
// std:: exception (not c10::Error), which escaped load_pretrained as an id-less error. taxon's own reader now reads
// the file; the damage is caught by the zip's CRC-32.
TEST_CASE("pt archive: a damaged pickle on which LibTorch's Unpickler threw a std:: exception is a taxon error",
          "[fuzz-regression][backbone]") {
  namespace t = test_fuzz_regressions;
  const std::string seed = taxon::io::read_file(std::filesystem::path(TAXON_SOURCE_DIR) / "tests/fuzz/corpus/pt_archive/open_clip_state_dict.pt");
  REQUIRE(seed.size() == 8425);
  std::string bytes = seed;
  const std::pair<std::size_t, unsigned char> changes[] = {{8, 17},     {3601, 91},  {5447, 253}, {5448, 151},
                                                           {5449, 251}, {5450, 161}, {6060, 48},  {6061, 53}};
  for (const auto& [offset, value] : changes) bytes[offset] = static_cast<char>(value);
  taxon::test::TempDir dir("taxon_fuzz_pt");
  const auto path = t::write_file(dir.path / "damaged.pt", bytes);
  REQUIRE_TAXON_ERROR(taxon::backbone::load_pretrained(path), "io.bad-torch-save");
  // The undamaged seed still loads.
  CHECK_NOTHROW(taxon::backbone::load_pretrained(t::write_file(dir.path / "seed.pt", seed)));
}

// Found by the pt_archive harness on taxon's own torch.save reader: a storage record marked compressed declared a
// 4 GB uncompressed size, which the reader allocated before noticing it could not read compressed records (only a
// stored record's size is bounded by the file).
TEST_CASE("pt archive: a compressed storage record declaring 4 GB is refused before allocating",
          "[fuzz-regression][io]") {
  namespace t = test_fuzz_regressions;
  std::string bytes = taxon::io::read_file(std::filesystem::path(TAXON_SOURCE_DIR) / "tests/data/pt/vit_fp16.pt");
  // The central directory entry of data/0 (the name's second occurrence; the first is its local header).
  const std::string name = "vit_fp16/data/0";
  const auto cd_name = bytes.find(name, bytes.find(name) + 1);
  REQUIRE(cd_name != std::string::npos);
  const auto entry = cd_name - 46;
  REQUIRE(bytes.compare(entry, 4, "PK\x01\x02") == 0);
  bytes[entry + 10] = 8;                                 // method: deflate
  for (int i = 0; i < 4; ++i) bytes[entry + 24 + i] = static_cast<char>(0xfe);  // uncompressed size ~4.27e9
  taxon::test::TempDir dir("taxon_fuzz_pt_deflate");
  const auto path = t::write_file(dir.path / "deflate.pt", bytes);
  taxon::test::AllocationGuard guard(t::kAllocationCap);
  REQUIRE_TAXON_ERROR(taxon::backbone::load_pretrained(path), "io.bad-torch-save");
  CHECK(guard.largest() < t::kAllocationCap);
}
