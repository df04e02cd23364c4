// Every image mode a dataset file can open in, decoded and preprocessed as PIL + torchvision do (CLIP's
// _transform: Resize in the image's own mode, CenterCrop, convert("RGB")), against Pillow 9.4's outputs on the
// committed files in tests/data/pil_modes (written by make_goldens.py there).
#include "taxon/data/decode.hpp"
#include "taxon/data/decode_crop.hpp"
#include "taxon/data/decode_request.hpp"
#include "taxon/data/image_dataset.hpp"
#include "taxon/io/atomic_file.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/temp_dir.hpp"
#include "support/tensor_compare.hpp"

namespace test_data_pil_modes {

namespace fs = std::filesystem;
inline const fs::path kData = fs::path(TAXON_TEST_DATA_DIR) / "pil_modes";

struct Golden {
  std::string file, mode, step;
  at::Tensor rgb;  // [h, w, 3] uint8, what Pillow gives
};

inline std::vector<Golden> goldens() {
  std::ifstream in(kData / "expected.txt");
  REQUIRE(in.good());
  std::vector<Golden> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    Golden g;
    int64_t h = 0, w = 0;
    std::string hex;
    fields >> g.file >> g.mode >> g.step >> h >> w >> hex;
    REQUIRE(hex.size() == static_cast<size_t>(h * w * 3 * 2));
    g.rgb = at::empty({h, w, 3}, at::kByte);
    for (size_t i = 0; i < hex.size() / 2; ++i)
      g.rgb.data_ptr<uint8_t>()[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
    out.push_back(std::move(g));
  }
  return out;
}

// "clip10x10" -> {10, 10}
inline taxon::data::ResizeCenterCrop clip_step(const std::string& step) {
  const auto x = step.find('x');
  return {std::stoll(step.substr(4, x - 4)), std::stoll(step.substr(x + 1))};
}

inline int max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kInt) - b.to(at::kInt)).abs().max().item<int>();
}

}  // namespace test_data_pil_modes

TEST_CASE("every image mode opens, converts and preprocesses as Pillow 9.4 does, plain and fused alike",
          "[data][decode][pil]") {
  using namespace test_data_pil_modes;
  using namespace taxon::data;
  const auto all = goldens();
  std::set<std::string> modes;
  for (const Golden& g : all) {
    INFO(g.file << " (PIL mode " << g.mode << "), step " << g.step);
    const std::string bytes = taxon::io::read_file(kData / g.file);
    const DecodedImage opened = open_image(bytes, g.file);
    CHECK(std::string(pil_mode_name(opened.mode)) == (g.mode == "RGBA" && g.file == "la16.png" ? "LA" : g.mode));
    modes.insert(g.mode);
    if (g.step == "rgb") {  // Image.open(f).convert("RGB"); EXIF orientation not applied (exif_rotated.jpg stays 23x37)
      const at::Tensor rgb = decode_image(bytes, g.file);
      REQUIRE(rgb.sizes() == g.rgb.sizes());
      CHECK(max_diff(rgb, g.rgb) <= 1);
      continue;
    }
    const ResizeCenterCrop rc = clip_step(g.step);
    const at::Tensor plain = resize_center_crop(opened, rc);
    const at::Tensor fused = decode_resize_center_crop(bytes, g.file, rc.resize_to, rc.crop);
    REQUIRE(plain.sizes() == g.rgb.sizes());
    CHECK(max_diff(plain, g.rgb) <= 1);
    CHECK(at::equal(plain, fused));
    // Converting to RGB before the resize (what taxon did) is off by more than the bar in every other mode.
    const int convert_first = max_diff(rc.apply(decode_image(bytes, g.file)), g.rgb);
    UNSCOPED_INFO(g.file << " " << g.step << ": off by " << max_diff(plain, g.rgb) << ", converting to RGB first would be off by "
                         << convert_first);
    if (g.mode != "RGB" && g.mode != "L") CHECK(convert_first > 1);
  }
  CHECK(modes == std::set<std::string>{"1", "CMYK", "I", "L", "LA", "P", "RGB", "RGBA"});
}

TEST_CASE("an image dataset answers a DecodeRequest with PIL's resize in the file's mode", "[data][decode][pil]") {
  using namespace test_data_pil_modes;
  using namespace taxon::data;
  taxon::test::TempDir dir;
  std::map<std::string, at::Tensor> expected;
  for (const Golden& g : goldens())
    if (g.step == "clip14x12") {
      fs::create_directories(dir.path / "cls");
      fs::copy_file(kData / g.file, dir.path / "cls" / g.file);
      expected[g.file] = g.rgb;
    }
  const ImageFolderDataset ds(dir.path);
  REQUIRE(ds.size() == static_cast<int64_t>(expected.size()));
  const DecodeRequest request{ResizeCenterCrop{14, 12}};
  for (int64_t i = 0; i < ds.size(); ++i) {
    const std::string file = ds.path(i).filename().string();
    INFO(file);
    CHECK(max_diff(ds.get(i, request).image, expected.at(file)) <= 1);
    CHECK(at::equal(ds.get(i).image, decode_image(taxon::io::read_file(ds.path(i)), file)));
  }
}

TEST_CASE("CMYK JPEGs: the fused region decode equals the plain decode on a large image", "[data][decode][pil]") {
  using namespace test_data_pil_modes;
  using namespace taxon::data;
  // A smooth CMYK image, written in the Adobe convention by encode_jpeg and read back as PIL holds it.
  const int64_t H = 150, W = 260;
  at::Tensor cmyk = at::empty({H, W, 4}, at::kByte);
  auto a = cmyk.accessor<uint8_t, 3>();
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t c = 0; c < 4; ++c) a[y][x][c] = static_cast<uint8_t>((x * (c + 1) + y * (3 - c) + 17 * c) % 256);
  const std::string bytes = encode_jpeg(cmyk, 95);
  const DecodedImage opened = open_image(bytes, "big.jpg");
  REQUIRE(opened.mode == PilMode::cmyk);
  // Quality 95 round trip: within a few levels of what was written, so the Adobe inversion is applied exactly once.
  CHECK(max_diff(opened.pixels, cmyk) <= 24);
  CHECK((opened.pixels.to(at::kInt) - cmyk.to(at::kInt)).abs().to(at::kFloat).mean().item<float>() < 2.0f);
  for (const ResizeCenterCrop rc : {ResizeCenterCrop{64, 56}, ResizeCenterCrop{100, 90}, ResizeCenterCrop{150, 140}}) {
    INFO("resize " << rc.resize_to << ", crop " << rc.crop);
    const at::Tensor plain = resize_center_crop(opened, rc);
    CHECK(at::equal(plain, decode_resize_center_crop(bytes, "big.jpg", rc.resize_to, rc.crop)));
    CHECK(at::equal(plain, rc.apply(opened.to_rgb())) == (rc.resize_to == H));  // only an unresized crop commutes
  }
  // The decompression-bomb guard holds for CMYK and 16-bit files as for the rest.
  REQUIRE_TAXON_ERROR(open_image(bytes, "big.jpg", 0, H * W - 1), "data.image-too-large");
  REQUIRE_TAXON_ERROR(decode_resize_center_crop(bytes, "big.jpg", 64, 56, H * W - 1), "data.image-too-large");
  const std::string grey16 = taxon::io::read_file(kData / "l16.png");
  REQUIRE_TAXON_ERROR(open_image(grey16, "l16.png", 0, 23 * 37 - 1), "data.image-too-large");
}
