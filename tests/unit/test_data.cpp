// Data pipeline: CSV parsing, taxonomy labels, datasets (CSV, folders, idx, embeddings), decoding of good and
// corrupt files, the multi-threaded loader (determinism, coverage, sharding, errors) and split helpers.
#include "taxon/data/any_dataset.hpp"
#include "taxon/data/data.hpp"
#include "taxon/data/relabel.hpp"
#include "taxon/io/npy.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/CPUAllocator.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>

#include "support/temp_dir.hpp"
#include "support/tensor_compare.hpp"

// LibTorch's logging header (reached through ATen's CPUGeneratorImpl.h) replaces Catch's CHECK with glog's,
// which aborts instead of reporting; restore Catch's.
#undef CHECK
#define CHECK(...) INTERNAL_CATCH_TEST("CHECK", Catch::ResultDisposition::ContinueOnFailure, __VA_ARGS__)

namespace test_data {

namespace fs = std::filesystem;

struct TempDir : taxon::test::TempDir {
  TempDir() : taxon::test::TempDir("taxon_test_data") {}
};

inline void write_bytes(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Smooth colour gradient (compresses well, survives JPEG nearly unchanged) with a per-image offset.
inline at::Tensor gradient(int64_t h, int64_t w, int64_t offset = 0) {
  at::Tensor img = at::empty({h, w, 3}, at::kByte);
  auto a = img.accessor<uint8_t, 3>();
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      a[y][x][0] = static_cast<uint8_t>((x * 255) / std::max<int64_t>(w - 1, 1));
      a[y][x][1] = static_cast<uint8_t>((y * 255) / std::max<int64_t>(h - 1, 1));
      a[y][x][2] = static_cast<uint8_t>((offset * 37 + (x + y) * 2) % 256);
    }
  return img;
}

// In-memory dataset for loader tests; index `fail_at` throws `error` (a std::runtime_error unless taxon).
class SyntheticDataset {
 public:
  explicit SyntheticDataset(int64_t n, int64_t fail_at = -1, bool taxon_error = false)
      : n_(n), fail_at_(fail_at), taxon_error_(taxon_error),
        taxonomy_({"fine", "coarse"}, {taxon::data::LabelMap({"a", "b", "c", "d", "e"}), taxon::data::LabelMap({"x", "y"})}) {}
  int64_t size() const { return n_; }
  taxon::data::Sample get(int64_t i) const {
    gets.fetch_add(1);
    if (i == fail_at_) {
      if (taxon_error_) TAXON_FAIL("data.corrupt-image", "synthetic sample ", i, " is corrupt");
      throw std::runtime_error("boom at sample " + std::to_string(i));
    }
    return {gradient(12 + i % 3, 14, i), labels(i)};
  }
  std::vector<int64_t> labels(int64_t i) const { return {i % 5, (i % 5) < 2 ? 0 : 1}; }
  const taxon::data::Taxonomy& taxonomy() const { return taxonomy_; }
  mutable std::atomic<int64_t> gets{0};  // samples read so far

 private:
  int64_t n_, fail_at_;
  bool taxon_error_;
  taxon::data::Taxonomy taxonomy_;
};
static_assert(taxon::data::Dataset<SyntheticDataset>);
static_assert(taxon::data::Dataset<taxon::data::IdxDataset>);
static_assert(taxon::data::Dataset<taxon::data::CsvImageDataset>);
static_assert(taxon::data::Dataset<taxon::data::ImageFolderDataset>);
static_assert(taxon::data::Dataset<taxon::data::EmbeddingDataset>);
static_assert(taxon::data::Dataset<taxon::data::Subset<taxon::data::IdxDataset>>);

template <typename L>
std::vector<taxon::data::Batch> collect(const L& loader, int64_t epoch) {
  std::vector<taxon::data::Batch> out;
  for (auto& b : loader.epoch(epoch)) out.push_back(b);
  return out;
}

inline std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

}  // namespace test_data

TEST_CASE("CSV: BOM, CRLF, quoted commas/quotes/newlines, empty cells, short rows", "[data][csv]") {
  using taxon::data::CsvTable;
  const std::string text =
      "\xEF\xBB\xBFpath,scientificName,note\r\n"
      "a.jpg,\"Salmo trutta\",\"has, comma\"\r\n"
      "b.jpg,\"Esox \"\"pike\"\" lucius\",\"two\nlines\"\r\n"
      "c.jpg,,\r\n"
      "d.jpg,Perca fluviatilis\r\n";
  const CsvTable t = CsvTable::parse(text, "meta.csv");
  REQUIRE((t.header() == std::vector<std::string>{"path", "scientificName", "note"}));
  REQUIRE(t.num_rows() == 4);
  CHECK(t.cell(0, "note") == "has, comma");
  CHECK(t.cell(1, "scientificName") == "Esox \"pike\" lucius");
  CHECK(t.cell(1, "note") == "two\nlines");
  CHECK(t.cell(2, "scientificName").empty());
  CHECK(t.cell(3, "scientificName") == "Perca fluviatilis");
  CHECK(t.cell(3, "note").empty());
  // LF-only files without a trailing newline parse the same.
  CHECK(CsvTable::parse("a,b\n1,2", "x").cell(0, "b") == "2");

  REQUIRE_TAXON_ERROR(t.column("species"), "data.missing-column");
  const std::string msg = test_data::error_message([&] { (void)t.column("species"); });
  CHECK(msg.find("'species'") != std::string::npos);
  CHECK(msg.find("meta.csv") != std::string::npos);
  REQUIRE_TAXON_ERROR(CsvTable::parse("a,b\n\"open,2\n", "bad.csv"), "data.bad-csv");
  REQUIRE_TAXON_ERROR(CsvTable::parse("a,b\n1,2,3\n", "bad.csv"), "data.bad-csv");
  REQUIRE_TAXON_ERROR(CsvTable::parse("", "empty.csv"), "data.bad-csv");
}

TEST_CASE("taxonomy: sorted label ids, genus from binomial, JSON/CSV save and reload", "[data][taxonomy]") {
  using namespace taxon::data;
  CHECK(genus_of("Salmo trutta fario") == "Salmo");
  CHECK(genus_of("  Esox\tlucius") == "Esox");
  CHECK(genus_of("   ").empty());
  const LabelMap m = LabelMap::from_values({"Salmo trutta", "Esox lucius", "", "Salmo trutta", "Abramis brama"});
  REQUIRE(m.size() == 3);
  CHECK(m.id("Abramis brama") == 0);
  CHECK(m.id("Salmo trutta") == 2);
  CHECK(m.id("") == kMissingLabel);
  CHECK(m.name(1) == "Esox lucius");
  REQUIRE_TAXON_ERROR(m.id("Homo sapiens"), "data.unknown-label");
  REQUIRE_TAXON_ERROR(LabelMap({"a", "a"}), "data.duplicate-label");

  const Taxonomy tax({"species", "genus"}, {m, LabelMap::from_values({"Salmo", "Esox, \"the pike\"", "Abramis"})});
  test_data::TempDir dir;
  tax.save_json(dir.path / "taxonomy.json");
  CHECK(Taxonomy::load_json(dir.path / "taxonomy.json") == tax);
  tax.save_csv(dir.path / "taxonomy.csv");
  const CsvTable t = CsvTable::read(dir.path / "taxonomy.csv");
  REQUIRE(t.num_rows() == 6);
  CHECK(t.cell(4, "name") == "Esox, \"the pike\"");
  CHECK(t.cell(4, "rank") == "genus");
  CHECK(t.cell(4, "id") == "1");
  REQUIRE_TAXON_ERROR(tax.rank_index("order"), "data.unknown-rank");
}

TEST_CASE("CsvImageDataset: VLM4Bio columns, per-file taxa constant, derived genus, missing files", "[data][csv]") {
  using namespace taxon::data;
  test_data::TempDir dir;
  const auto fish = dir.path / "Fish", bird = dir.path / "Bird";
  write_image(fish / "images" / "INHS_FISH_1.png", test_data::gradient(8, 10, 1));
  write_image(fish / "images" / "INHS_FISH_2.jpg", test_data::gradient(8, 10, 2));
  write_image(fish / "images" / "INHS_FISH_4.png", test_data::gradient(8, 10, 4));
  write_image(bird / "images" / "Ivory_Gull_0117.png", test_data::gradient(6, 6, 5));
  test_data::write_bytes(fish / "metadata" / "metadata_10k.csv",
                         "\xEF\xBB\xBF" "fileNameAsDelivered,scientificName,extra\r\n"
                         "INHS_FISH_1.png,Salmo trutta,\"a, b\"\r\n"
                         "INHS_FISH_2.jpg,Salmo salar,\r\n"
                         "INHS_FISH_3.png,Esox lucius,\r\n"
                         "INHS_FISH_4.png,\" \",\r\n");
  test_data::write_bytes(bird / "metadata" / "bird_metadata_10k.csv",
                         "fileNameAsDelivered,scientificName\nIvory_Gull_0117.png,Pagophila eburnea\n");
  const std::vector<Vlm4BioSource> sources{{"Fish", fish / "metadata" / "metadata_10k.csv", fish / "images"},
                                           {"Bird", bird / "metadata" / "bird_metadata_10k.csv", bird / "images"}};
  const CsvImageDataset ds(vlm4bio_options(sources));
  REQUIRE(ds.size() == 4);
  CHECK(ds.missing_count() == 1);
  REQUIRE(ds.missing_examples().size() == 1);
  CHECK(ds.missing_examples()[0].find("INHS_FISH_3.png") != std::string::npos);
  const Taxonomy& tax = ds.taxonomy();
  REQUIRE((tax.ranks() == std::vector<std::string>{"species", "genus", "taxa"}));
  CHECK((tax.labels("species").names() == std::vector<std::string>{"Pagophila eburnea", "Salmo salar", "Salmo trutta"}));
  CHECK((tax.labels("genus").names() == std::vector<std::string>{"Pagophila", "Salmo"}));
  CHECK((tax.labels("taxa").names() == std::vector<std::string>{"Bird", "Fish"}));
  CHECK((ds.labels(0) == std::vector<int64_t>{2, 1, 1}));
  CHECK((ds.labels(1) == std::vector<int64_t>{1, 1, 1}));
  CHECK((ds.labels(2) == std::vector<int64_t>{kMissingLabel, kMissingLabel, 1}));  // blank scientificName
  CHECK((ds.labels(3) == std::vector<int64_t>{0, 0, 0}));
  const Sample s = ds.get(0);
  CHECK(at::equal(s.image, test_data::gradient(8, 10, 1)));  // PNG is lossless
  CHECK(ds.get(1).image.sizes() == at::IntArrayRef({8, 10, 3}));

  auto reject = vlm4bio_options(sources);
  reject.missing_files(MissingFilePolicy::reject);
  REQUIRE_TAXON_ERROR(CsvImageDataset{reject}, "data.missing-images");
  CHECK(test_data::error_message([&] { CsvImageDataset{reject}; }).find("INHS_FISH_3.png") != std::string::npos);

  // The seeds' renamed column does not exist in the delivered CSV: the error names it.
  auto renamed = vlm4bio_options(sources);
  renamed.path_column("image_name");
  REQUIRE_TAXON_ERROR(CsvImageDataset{renamed}, "data.missing-column");
  CHECK(test_data::error_message([&] { CsvImageDataset{renamed}; }).find("'image_name'") != std::string::npos);

  // Generic options: constant rank, stripped labels, path column with sub-folders.
  CsvImageDatasetOptions generic;
  generic.add_source(fish / "metadata" / "metadata_10k.csv", fish / "images")
      .path_column("fileNameAsDelivered")
      .ranks({RankSpec::constant("kingdom", "Animalia"), RankSpec::column("species", "scientificName")})
      .strip_labels(true);
  const CsvImageDataset g(generic);
  CHECK((g.taxonomy().labels("kingdom").names() == std::vector<std::string>{"Animalia"}));
  CHECK((g.labels(0) == std::vector<int64_t>{0, 1}));
}

TEST_CASE("ImageFolderDataset: nested folders become ranks, other files are ignored", "[data]") {
  using namespace taxon::data;
  test_data::TempDir dir;
  write_image(dir.path / "Salmo" / "trutta" / "1.png", test_data::gradient(5, 7, 1));
  write_image(dir.path / "Salmo" / "salar" / "2.jpg", test_data::gradient(5, 7, 2));
  write_image(dir.path / "Esox" / "lucius" / "3.PNG", test_data::gradient(5, 7, 3));
  test_data::write_bytes(dir.path / "Esox" / "lucius" / "notes.txt", "not an image");
  test_data::write_bytes(dir.path / "Esox" / "stray.png", "wrong depth");
  const ImageFolderDataset ds(dir.path, ImageFolderDatasetOptions().ranks({"genus", "species"}));
  REQUIRE(ds.size() == 3);
  CHECK((ds.taxonomy().labels("genus").names() == std::vector<std::string>{"Esox", "Salmo"}));
  CHECK((ds.labels(0) == std::vector<int64_t>{0, 0}));  // Esox/lucius sorts first
  CHECK((ds.labels(1) == std::vector<int64_t>{1, 1}));  // Salmo/salar
  CHECK(at::equal(ds.get(2).image, test_data::gradient(5, 7, 1)));
  REQUIRE_TAXON_ERROR(ImageFolderDataset(dir.path / "nope"), "io.missing-file");
}

TEST_CASE("Fashion-MNIST from Debian's dataset-fashion-mnist: counts, first label, image 0 checksum", "[data][idx]") {
  using namespace taxon::data;
  const auto train = IdxDataset::fashion_mnist(true);
  const auto test = IdxDataset::fashion_mnist(false);
  REQUIRE(train.size() == 60000);
  REQUIRE(test.size() == 10000);
  // First training label is 9 (Ankle boot, group footwear); first test label is 9 too.
  CHECK((train.labels(0) == std::vector<int64_t>{9, 3}));
  CHECK(train.taxonomy().labels("class").name(9) == "Ankle boot");
  CHECK(train.taxonomy().labels("group").name(3) == "footwear");
  CHECK((train.taxonomy().labels("group").names() ==
        std::vector<std::string>{"tops", "bottoms", "dresses", "footwear", "bags"}));
  CHECK(test.labels(0)[0] == 9);
  CHECK(test.labels(1)[0] == 2);
  // Pixel sum of training image 0 is 76247. Cross-checked independently while writing this test with
  //   d = gzip.open('.../train-images-idx3-ubyte.gz').read(); sum(d[16:16 + 784])
  // (python3 gzip/struct, not this code).
  const Sample s = train.get(0);
  REQUIRE(s.image.sizes() == at::IntArrayRef({28, 28, 3}));
  CHECK(s.image.select(2, 0).to(at::kLong).sum().item<int64_t>() == 76247);
  CHECK(at::equal(s.image.select(2, 0), s.image.select(2, 2)));
  const auto grey = IdxDataset::fashion_mnist(true, "/usr/share/datasets/fashion-mnist", /*rgb=*/false);
  CHECK(grey.get(0).image.sizes() == at::IntArrayRef({28, 28, 1}));
  // Classes are balanced: 6000 per class in train.
  CHECK(at::bincount(train.class_labels()).eq(6000).all().item<bool>());

  // Plain (non-gzip) idx files and corrupt ones.
  test_data::TempDir dir;
  std::string images("\0\0\x08\x03\0\0\0\x02\0\0\0\x02\0\0\0\x02\x01\x02\x03\x04\x05\x06\x07\x08", 24);
  std::string labels("\0\0\x08\x01\0\0\0\x02\x01\x00", 10);
  test_data::write_bytes(dir.path / "img", images);
  test_data::write_bytes(dir.path / "lab", labels);
  const IdxDataset tiny(dir.path / "img", dir.path / "lab", IdxDatasetOptions().rgb(false));
  REQUIRE(tiny.size() == 2);
  CHECK(tiny.get(1).image.flatten().to(at::kLong).sum().item<int64_t>() == 5 + 6 + 7 + 8);
  CHECK((tiny.labels(0) == std::vector<int64_t>{1}));
  test_data::write_bytes(dir.path / "short", images.substr(0, 20));
  REQUIRE_TAXON_ERROR(IdxDataset(dir.path / "short", dir.path / "lab"), "data.corrupt-file");
}

TEST_CASE("decoding: JPEG/PNG round trips, grey to RGB, scaled JPEG decode", "[data][decode]") {
  using namespace taxon::data;
  const at::Tensor img = test_data::gradient(48, 64, 3);
  const at::Tensor png = decode_image(encode_png(img), "x.png");
  CHECK(at::equal(png, img));
  const at::Tensor jpg = decode_image(encode_jpeg(img, 95), "x.jpg");
  REQUIRE(jpg.sizes() == img.sizes());
  CHECK((jpg.to(at::kFloat) - img.to(at::kFloat)).abs().mean().item<float>() < 3.0f);

  const at::Tensor grey = img.select(2, 1).unsqueeze(2).contiguous();
  const at::Tensor grey_png = decode_image(encode_png(grey), "g.png");
  REQUIRE(grey_png.sizes() == at::IntArrayRef({48, 64, 3}));
  CHECK(at::equal(grey_png.select(2, 0), grey.squeeze(2)));
  CHECK(at::equal(grey_png.select(2, 2), grey.squeeze(2)));
  const at::Tensor grey_jpg = decode_image(encode_jpeg(grey), "g.jpg");
  REQUIRE(grey_jpg.sizes() == at::IntArrayRef({48, 64, 3}));
  CHECK(at::equal(grey_jpg.select(2, 0), grey_jpg.select(2, 1)));

  // Scaled decode keeps the shorter side >= min_side: 48/4 = 12 >= 12, 48/8 = 6 < 12.
  CHECK(decode_jpeg(encode_jpeg(img), "s.jpg", 12).sizes() == at::IntArrayRef({12, 16, 3}));
  CHECK(decode_jpeg(encode_jpeg(img), "s.jpg", 13).sizes() == at::IntArrayRef({24, 32, 3}));
  CHECK(decode_jpeg(encode_jpeg(img), "s.jpg", 100).sizes() == at::IntArrayRef({48, 64, 3}));
}

namespace test_data {
// Noisy photo-like content, so JPEG blocks differ and chroma upsampling has real neighbours.
inline at::Tensor textured(int64_t h, int64_t w, int seed) {
  at::Tensor img = (test_data::gradient(h, w, seed).to(at::kInt) +
                    at::randint(0, 40, {h, w, 3}, at::make_generator<at::CPUGeneratorImpl>(seed), at::kInt))
                       .clamp(0, 255)
                       .to(at::kByte);
  return img;
}
}  // namespace test_data

TEST_CASE("decoding: a region decode is bit-identical to the full decode inside the region", "[data][decode]") {
  using namespace taxon::data;
  struct Case {
    int64_t h, w;
    bool grey;
    Box box;
  };
  const std::vector<Case> cases = {{375, 500, false, {0, 62, 375, 380}},  {375, 500, false, {40, 0, 100, 33}},
                                   {123, 457, false, {17, 201, 90, 256}}, {500, 375, false, {75, 0, 350, 375}},
                                   {64, 80, true, {5, 7, 50, 60}},        {333, 257, false, {332, 256, 1, 1}}};
  int n = 0;
  for (const auto& c : cases) {
    at::Tensor img = test_data::textured(c.h, c.w, 11 + n++);
    if (c.grey) img = img.select(2, 0).unsqueeze(2).contiguous();
    const std::string bytes = encode_jpeg(img, 90);
    const at::Tensor full = decode_image(bytes, "full.jpg");
    const DecodedRegion region = decode_region(bytes, "part.jpg", [&](int64_t H, int64_t W) {
      CHECK(H == c.h);
      CHECK(W == c.w);
      return c.box;
    });
    INFO(c.h << "x" << c.w << " box " << c.box.top << "," << c.box.left << " " << c.box.height << "x" << c.box.width);
    REQUIRE(region.top <= c.box.top);
    REQUIRE(region.left <= c.box.left);
    REQUIRE(region.top + region.pixels.size(0) >= c.box.top + c.box.height);
    REQUIRE(region.left + region.pixels.size(1) >= c.box.left + c.box.width);
    const at::Tensor got = region.pixels.slice(0, c.box.top - region.top, c.box.top - region.top + c.box.height)
                               .slice(1, c.box.left - region.left, c.box.left - region.left + c.box.width);
    CHECK(at::equal(got, full.slice(0, c.box.top, c.box.top + c.box.height).slice(1, c.box.left, c.box.left + c.box.width)));
  }
  // A file truncated below the region still fails: the rows after it are entropy-decoded.
  const std::string bytes = encode_jpeg(test_data::textured(200, 100, 3), 90);
  REQUIRE_TAXON_ERROR(decode_region(bytes.substr(0, bytes.size() * 2 / 3), "cut.jpg",
                                    [](int64_t, int64_t) { return Box{0, 0, 10, 10}; }),
                      "data.corrupt-image");
}

TEST_CASE("decoding: decode_resize_center_crop equals resize_center_crop of the full decode", "[data][decode]") {
  using namespace taxon::data;
  Rng rng(0);
  const int64_t shapes[][2] = {{375, 500}, {500, 375}, {224, 224}, {240, 320}, {231, 997}, {300, 300}};
  int n = 0;
  for (const auto& hw : shapes) {
    const at::Tensor img = test_data::textured(hw[0], hw[1], 40 + n++);
    for (const std::string& bytes : {encode_jpeg(img, 90), encode_png(img)}) {
      INFO(hw[0] << "x" << hw[1] << (bytes == encode_png(img) ? " png" : " jpeg"));
      const at::Tensor expect = resize_center_crop(224, 224)(decode_image(bytes, "full"), rng);
      CHECK(at::equal(decode_resize_center_crop(bytes, "fused", 224, 224), expect));
      const at::Tensor timm = resize_center_crop(256, 224)(decode_image(bytes, "full"), rng);
      CHECK(at::equal(decode_resize_center_crop(bytes, "fused", 256, 224), timm));
    }
  }
  REQUIRE_TAXON_ERROR(decode_resize_center_crop(encode_jpeg(test_data::textured(100, 120, 1)), "tiny.jpg", 64, 80),
                      "data.bad-box");
}

TEST_CASE("decoding: per-thread buffers are reused only once released, rows start at odd addresses", "[data][decode]") {
  using namespace taxon::data;
  const std::string a = encode_jpeg(test_data::textured(120, 160, 1), 90), b = encode_jpeg(test_data::textured(120, 160, 2), 90);
  const at::Tensor expect_a = decode_jpeg(a, "a.jpg").clone(), expect_b = decode_jpeg(b, "b.jpg").clone();
  // libjpeg-turbo streams 16-byte-aligned rows past the cache; an odd start keeps them cached for the resize.
  CHECK(reinterpret_cast<std::uintptr_t>(decode_jpeg(a, "a.jpg").data_ptr()) % 2 == 1);

  const void* first = nullptr;
  {
    const at::Tensor img = decode_jpeg(a, "a.jpg");
    first = img.data_ptr();
  }
  const at::Tensor kept = decode_jpeg(a, "a.jpg");  // the released buffer comes back
  CHECK(kept.data_ptr() == first);
  const at::Tensor view = kept.slice(0, 10, 20);  // a view keeps the buffer busy too
  const at::Tensor second = decode_jpeg(b, "b.jpg");
  const at::Tensor third = decode_jpeg(b, "b.jpg");
  CHECK(second.data_ptr() != kept.data_ptr());
  CHECK(third.data_ptr() != kept.data_ptr());
  CHECK(third.data_ptr() != second.data_ptr());
  CHECK(at::equal(kept, expect_a));  // nothing overwrote an image still in use
  CHECK(at::equal(view, expect_a.slice(0, 10, 20)));
  CHECK(at::equal(second, expect_b));
  CHECK(at::equal(third, expect_b));

  // The resize output is recycled the same way.
  Rng rng(0);
  const auto crop = resize_center_crop(64, 64);
  const at::Tensor r1 = crop(expect_a, rng).clone();
  const at::Tensor held = crop(expect_a, rng);
  const at::Tensor other = crop(expect_b, rng);
  CHECK(held.data_ptr() != other.data_ptr());
  CHECK(at::equal(held, r1));
}

TEST_CASE("decoding: truncated, random and empty files give an error naming the file", "[data][decode]") {
  using namespace taxon::data;
  test_data::TempDir dir;
  const at::Tensor img = test_data::gradient(40, 50, 1);
  const std::string jpg = encode_jpeg(img), png = encode_png(img);
  std::mt19937 gen(5);
  std::string noise(3000, '\0');
  for (auto& c : noise) c = static_cast<char>(gen());
  std::string noisy_jpeg = jpg.substr(0, 200) + noise;  // valid header, garbage entropy data
  const std::vector<std::pair<std::string, std::string>> files{
      {"truncated.jpg", jpg.substr(0, jpg.size() / 2)}, {"truncated.png", png.substr(0, png.size() / 2)},
      {"header_only.jpg", jpg.substr(0, 20)},          {"random.jpg", noise},
      {"empty.png", ""},                                {"png_magic_then_noise.png", png.substr(0, 8) + noise}};
  for (const auto& [name, bytes] : files) {
    test_data::write_bytes(dir.path / name, bytes);
    INFO(name);
    REQUIRE_TAXON_ERROR(read_image(dir.path / name), "data.corrupt-image");
    CHECK(test_data::error_message([&] { read_image(dir.path / name); }).find(name) != std::string::npos);
  }
  // Garbage after a valid header must not crash or hang; it either decodes to the header's size or errors.
  std::string outcome;
  try {
    outcome = decode_image(noisy_jpeg, "noisy.jpg").sizes() == at::IntArrayRef({40, 50, 3}) ? "decoded" : "wrong size";
  } catch (const taxon::Error& e) {
    outcome = e.id();
  }
  CHECK((outcome == "decoded" || outcome == "data.corrupt-image"));
  REQUIRE_TAXON_ERROR(read_image(dir.path / "absent.jpg"), "io.missing-file");
}

TEST_CASE("loader: corrupt files are skipped and counted, or surface with the file name", "[data][loader]") {
  using namespace taxon::data;
  test_data::TempDir dir;
  for (int i = 0; i < 6; ++i) write_image(dir.path / "cls" / ("good" + std::to_string(i) + ".jpg"), test_data::gradient(20, 24, i));
  test_data::write_bytes(dir.path / "cls" / "bad_empty.jpg", "");
  test_data::write_bytes(dir.path / "cls" / "bad_trunc.png", encode_png(test_data::gradient(20, 24)).substr(0, 60));
  const auto ds = std::make_shared<const ImageFolderDataset>(dir.path);
  REQUIRE(ds->size() == 8);
  const Compose t{resize(16, 16), normalize(kClipMean, kClipStd)};
  const Loader<ImageFolderDataset> skip(ds, t, LoaderOptions().batch_size(3).workers(2).on_error(ErrorPolicy::skip));
  int64_t seen = 0;
  for (auto& b : skip.epoch(0)) {
    seen += b.size();
    CHECK(b.images.size(0) == b.labels.size(0));
  }
  CHECK(seen == 6);
  CHECK(skip.skipped() == 2);
  REQUIRE(skip.skipped_examples().size() == 2);

  const Loader<ImageFolderDataset> reject(ds, t, LoaderOptions().batch_size(3).workers(2));
  const std::string msg = test_data::error_message([&] { (void)test_data::collect(reject, 0); });
  CHECK(msg.find("[taxon.data.corrupt-image]") != std::string::npos);
  CHECK(msg.find("bad_") != std::string::npos);
}

TEST_CASE("loader: uint8 batches normalised afterwards equal float batches, fused decode or not", "[data][loader]") {
  using namespace taxon::data;
  test_data::TempDir dir;
  for (int i = 0; i < 5; ++i)
    write_image(dir.path / "cls" / ("img" + std::to_string(i) + ".jpg"), test_data::textured(60 + 7 * i, 90 - 5 * i, i));
  const auto full = std::make_shared<const ImageFolderDataset>(dir.path);
  const auto fused = std::make_shared<const ImageFolderDataset>(dir.path, ImageFolderDatasetOptions().decode_resize_crop({48, 48}));
  const auto opts = LoaderOptions().batch_size(2).workers(2).seed(3);
  const Loader<ImageFolderDataset> floats(full, clip_eval(48), opts);
  const Loader<ImageFolderDataset> bytes(fused, Compose{resize_center_crop(48, 48), to_chw()}, opts);
  const auto f = test_data::collect(floats, 0), b = test_data::collect(bytes, 0);
  REQUIRE(f.size() == 3);
  REQUIRE(b.size() == f.size());
  for (size_t k = 0; k < f.size(); ++k) {
    REQUIRE(b[k].images.scalar_type() == at::kByte);
    REQUIRE(b[k].images.sizes() == at::IntArrayRef({f[k].images.size(0), 3, 48, 48}));
    CHECK(at::equal(normalize_batch(b[k].images, kClipMean, kClipStd), f[k].images));
    CHECK(at::equal(b[k].indices, f[k].indices));
  }
}

TEST_CASE("split_leading_crop finds resize_center_crop at the head of a transform", "[data][transforms]") {
  using namespace taxon::data;
  Rng rng(0);
  const at::Tensor img = test_data::textured(30, 40, 1);
  const LeadingCrop clip = split_leading_crop(clip_eval(16));
  REQUIRE(clip.crop);
  CHECK(clip.crop->resize_to == 16);
  CHECK(clip.crop->crop == 16);
  REQUIRE(clip.rest);
  const at::Tensor cropped = resize_center_crop(16, 16)(img, rng);
  CHECK(at::equal(clip.rest(cropped, rng), clip_eval(16)(img, rng)));  // the rest is what follows the crop
  const LeadingCrop timm = split_leading_crop(timm_eval(16));
  REQUIRE(timm.crop);
  CHECK(timm.crop->resize_to == 18);  // floor(16 / (224 / 256))
  const LeadingCrop alone = split_leading_crop(resize_center_crop(20, 12));
  REQUIRE(alone.crop);
  CHECK(!alone.rest);
  const LeadingCrop nested = split_leading_crop(Compose{Compose{resize_center_crop(20, 12), to_chw()}, horizontal_flip(1.0)});
  REQUIRE(nested.crop);
  CHECK(nested.crop->crop == 12);
  CHECK(nested.rest.target<Compose>()->size() == 2);
  CHECK(!split_leading_crop(clip_train(16)).crop);
  CHECK(!split_leading_crop(Compose{normalize(kClipMean, kClipStd), resize_center_crop(20, 12)}).crop);
  CHECK(!split_leading_crop([](const at::Tensor& t, Rng& r) { return resize_center_crop(16, 16)(t, r); }).crop);
  CHECK(!split_leading_crop(TransformFn()).crop);
}

TEST_CASE("loader: fused decode of a leading resize_center_crop gives the same batches as decoding in full", "[data][loader]") {
  using namespace taxon::data;
  test_data::TempDir dir;
  for (int i = 0; i < 7; ++i) {
    const at::Tensor img = test_data::textured(60 + 9 * i, 95 - 6 * i, i);
    write_image(dir.path / "cls" / ("img" + std::to_string(i) + (i == 3 ? ".png" : ".jpg")), img);
  }
  const auto ds = std::make_shared<const ImageFolderDataset>(dir.path);
  const DecodeRequest request{ResizeCenterCrop{48, 40}};

  // get(i, request) is get(i) with the request's crop applied, bit for bit, and leaves nothing behind.
  for (const int64_t i : {0, 3}) {  // a JPEG (decoded to the crop) and the PNG (decoded whole)
    const Sample s = ds->get(i, request);
    CHECK(s.image.sizes() == at::IntArrayRef({40, 40, 3}));
    CHECK(at::equal(s.image, request.apply(ds->get(i).image)));
    CHECK(s.labels == ds->labels(i));
  }
  CHECK(ds->get(1).image.size(0) == 60 + 9);  // a plain get still decodes in full
  // A dataset that decodes at a reduced scale (or to a crop of its own) crops what its get(i) returns.
  auto scaled = ImageFolderDataset(dir.path);
  scaled.set_decode_min_side(16);
  REQUIRE(scaled.get(0).image.size(0) == 30);  // 60x95 at 1/2 scale
  CHECK(at::equal(scaled.get(0, request).image, request.apply(scaled.get(0).image)));
  CHECK_FALSE(at::equal(scaled.get(0, request).image, ds->get(0, request).image));
  const ImageFolderDataset precropped(dir.path, ImageFolderDatasetOptions().decode_resize_crop({50, 44}));
  REQUIRE(precropped.get(2).image.size(0) == 44);
  CHECK(at::equal(precropped.get(2, request).image, request.apply(precropped.get(2).image)));

  // Wrappers pass the request on to the dataset they wrap, so the crop is applied exactly once.
  static_assert(AcceptsDecodeRequest<ImageFolderDataset> && AcceptsDecodeRequest<Subset<ImageFolderDataset>> &&
                AcceptsDecodeRequest<Relabeled<ImageFolderDataset>> && AcceptsDecodeRequest<AnyDataset>);
  const auto sub = std::make_shared<const Subset<ImageFolderDataset>>(ds, std::vector<int64_t>{6, 0, 3, 5, 1});
  CHECK(at::equal(sub->get(1, request).image, ds->get(0, request).image));
  const AnyDataset any(ds);
  CHECK(at::equal(any.get(4, request).image, ds->get(4, request).image));
  const Relabeled<ImageFolderDataset> relabeled(ds, at::arange(10, 17));
  const Sample r = relabeled.get(5, request);
  CHECK(at::equal(r.image, ds->get(5, request).image));
  CHECK(r.labels == std::vector<int64_t>{15});

  // The Loader asks only when fused_decode is on and the transform starts with the crop, and then never calls get(i).
  struct Probe {
    std::shared_ptr<const ImageFolderDataset> inner;
    mutable std::atomic<int> plain{0}, requested{0};
    mutable std::atomic<int64_t> resize_to{0}, crop{0};
    int64_t size() const { return inner->size(); }
    Sample get(int64_t i) const {
      ++plain;
      return inner->get(i);
    }
    Sample get(int64_t i, const DecodeRequest& req) const {
      ++requested;
      resize_to = req.resize_crop.resize_to;
      crop = req.resize_crop.crop;
      return inner->get(i, req);
    }
    std::vector<int64_t> labels(int64_t i) const { return inner->labels(i); }
    const Taxonomy& taxonomy() const { return inner->taxonomy(); }
  };
  static_assert(AcceptsDecodeRequest<Probe>);
  const auto probe = std::make_shared<const Probe>(ds);
  (void)test_data::collect(Loader<Probe>(probe, clip_eval(40), LoaderOptions().workers(2).fused_decode(false)), 0);
  (void)test_data::collect(Loader<Probe>(probe, clip_train(40), LoaderOptions().workers(2)), 0);
  (void)test_data::collect(Loader<Probe>(probe, Compose{horizontal_flip(1.0), resize_center_crop(40, 40)}, LoaderOptions().workers(2)), 0);
  CHECK(probe->requested == 0);
  CHECK(probe->plain == 21);
  (void)test_data::collect(Loader<Probe>(probe, clip_eval(40), LoaderOptions().workers(2)), 0);
  CHECK(probe->requested == 7);
  CHECK(probe->plain == 21);
  CHECK(probe->resize_to == 40);
  (void)test_data::collect(Loader<Probe>(probe, timm_eval(40), LoaderOptions().workers(0)), 0);
  CHECK(probe->requested == 14);
  CHECK(probe->resize_to == 45);  // floor(40 / (224 / 256))
  CHECK(probe->crop == 40);

  const auto any_ds = std::make_shared<const AnyDataset>(ds);
  for (const TransformFn& t : {TransformFn(clip_eval(40)), TransformFn(timm_eval(40)), resize_center_crop(50, 36)}) {
    const auto opts = LoaderOptions().batch_size(3).workers(2).seed(5);
    const auto fused = test_data::collect(Loader<ImageFolderDataset>(ds, t, opts), 0);
    const auto full = test_data::collect(Loader<ImageFolderDataset>(ds, t, LoaderOptions(opts).fused_decode(false)), 0);
    REQUIRE(fused.size() == full.size());
    for (size_t k = 0; k < fused.size(); ++k) CHECK(at::equal(fused[k].images, full[k].images));
    const auto any_fused = test_data::collect(Loader<AnyDataset>(any_ds, t, opts), 0);
    REQUIRE(any_fused.size() == full.size());
    for (size_t k = 0; k < any_fused.size(); ++k) CHECK(at::equal(any_fused[k].images, full[k].images));
    const auto sub_fused = test_data::collect(Loader<Subset<ImageFolderDataset>>(sub, t, LoaderOptions(opts).workers(0)), 0);
    const auto sub_full = test_data::collect(Loader<Subset<ImageFolderDataset>>(sub, t, LoaderOptions(opts).fused_decode(false)), 0);
    REQUIRE(sub_fused.size() == 2);
    for (size_t k = 0; k < sub_fused.size(); ++k) CHECK(at::equal(sub_fused[k].images, sub_full[k].images));
  }
}

TEST_CASE("loader: a dataset without get(i, DecodeRequest) is read with get(i) and the whole transform, for every transform", "[data][loader]") {
  using namespace taxon::data;
  static_assert(!AcceptsDecodeRequest<test_data::SyntheticDataset>);
  static_assert(!AcceptsDecodeRequest<Subset<test_data::SyntheticDataset>>);
  static_assert(!AcceptsDecodeRequest<Relabeled<test_data::SyntheticDataset>>);
  static_assert(!AcceptsDecodeRequest<IdxDataset> && !AcceptsDecodeRequest<EmbeddingDataset>);
  const auto ds = std::make_shared<const test_data::SyntheticDataset>(11);  // 12..14 x 14 images
  const auto any = std::make_shared<const AnyDataset>(ds);  // accepts a request: applies it to get(i)
  const std::vector<std::pair<std::string, TransformFn>> transforms{
      {"clip_eval", clip_eval(10)},
      {"timm_eval", timm_eval(10)},
      {"clip_train", clip_train(10, 0.3)},
      {"small_image", small_image(10, kClipMean, kClipStd, true)},
      {"resize_center_crop", resize_center_crop(12, 10)},
      {"crop + to_chw", Compose{resize_center_crop(12, 10), to_chw()}},
      {"crop + flip + normalize", Compose{resize_center_crop(12, 10), horizontal_flip(1.0), normalize(kImageNetMean, kImageNetStd)}},
      {"resize + normalize", Compose{resize(10, 10), normalize(kImageNetMean, kImageNetStd)}},
      {"shortest + center_crop", Compose{resize_shortest(11), center_crop(10, 10), to_chw(3)}},
      {"random crop + jitter", Compose{random_resized_crop(10), color_jitter(0.4, 0.4, 0.4), to_chw()}},
      {"user step last", Compose{resize_center_crop(12, 10), [](const at::Tensor& t, Rng& r) { return t.flip({0}) + uniform_int(r, 0, 3); }}},
  };
  const auto opts = LoaderOptions().batch_size(4).workers(2).seed(9);
  for (const auto& [name, t] : transforms) {
    INFO(name);
    const auto batches = test_data::collect(Loader<test_data::SyntheticDataset>(ds, t, opts), 1);
    const auto via_any = test_data::collect(Loader<AnyDataset>(any, t, opts), 1);
    REQUIRE(batches.size() == 3);
    REQUIRE(via_any.size() == 3);
    for (size_t b = 0; b < batches.size(); ++b) {
      std::vector<at::Tensor> expected;
      for (int64_t k = 0; k < batches[b].size(); ++k) {
        const int64_t idx = batches[b].indices[k].item<int64_t>();
        Rng rng = taxon::make_engine(9, {1, static_cast<uint64_t>(idx)});
        expected.push_back(t(ds->get(idx).image, rng));
      }
      CHECK(at::equal(batches[b].images, at::stack(expected)));
      CHECK(at::equal(via_any[b].images, batches[b].images));
    }
  }
}

namespace test_data {

// Counts CPU allocations of exactly `watched` bytes, passing every allocation on to the allocator it replaced.
// Both forms of allocate() are defined (and no `override`): LibTorch 1.13 declares it const, 2.x does not.
class CountingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const {
    if (n == watched.load()) hits.fetch_add(1);
    return inner.load()->allocate(n);
  }
  c10::DataPtr allocate(size_t n) { return std::as_const(*this).allocate(n); }
  c10::DeleterFnPtr raw_deleter() const { return inner.load()->raw_deleter(); }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }

  std::atomic<size_t> watched{0};
  mutable std::atomic<int> hits{0};
  std::atomic<c10::Allocator*> inner{nullptr};
};

// Installs the counting allocator for one scope. The allocator itself is never destroyed: storages allocated
// meanwhile keep a pointer to it.
class CountCpuAllocations {
 public:
  explicit CountCpuAllocations(size_t watched) : previous_(c10::GetCPUAllocator()) {
    counter().watched = watched;
    counter().hits = 0;
    counter().inner = previous_;
    c10::SetCPUAllocator(&counter(), kPriority);
  }
  ~CountCpuAllocations() { c10::SetCPUAllocator(previous_, kPriority); }
  CountCpuAllocations(const CountCpuAllocations&) = delete;
  CountCpuAllocations& operator=(const CountCpuAllocations&) = delete;
  int hits() const { return counter().hits.load(); }

 private:
  static constexpr uint8_t kPriority = 255;  // above any allocator registered at start-up, so the swap takes effect
  static CountingCpuAllocator& counter() {
    static auto* const allocator = new CountingCpuAllocator();
    return *allocator;
  }
  c10::Allocator* previous_;
};

}  // namespace test_data

TEST_CASE("loader: the transform's last step writes straight into the batch, one output tensor per batch", "[data][loader]") {
  using namespace taxon::data;
  const auto ds = std::make_shared<const test_data::SyntheticDataset>(11);  // 3 batches of 4, 4, 3
  const auto opts = LoaderOptions().batch_size(4).workers(2).seed(3);
  const size_t image_bytes = 3 * 10 * 10 * sizeof(float);  // one normalized 10x10 sample
  const auto norm = normalize(kClipMean, kClipStd);
  const TransformFn in_place = Compose{resize_center_crop(12, 10), norm};
  // The same values through a last step of the user's, which cannot write into a slot: normalize allocates.
  const TransformFn copied = Compose{resize_center_crop(12, 10), norm, [](const at::Tensor& t, Rng&) { return t; }};

  int in_place_outputs = 0, copied_outputs = 0;
  std::vector<Batch> a, b;
  {
    const test_data::CountCpuAllocations counter(image_bytes);
    a = test_data::collect(Loader<test_data::SyntheticDataset>(ds, in_place, opts), 0);
    in_place_outputs = counter.hits();
  }
  {
    const test_data::CountCpuAllocations counter(image_bytes);
    b = test_data::collect(Loader<test_data::SyntheticDataset>(ds, copied, opts), 0);
    copied_outputs = counter.hits();
  }
  CHECK(copied_outputs == 11);   // the counter sees every per-sample output
  CHECK(in_place_outputs == 3);  // only each batch's first sample (it fixes the batch's shape) gets its own tensor
  REQUIRE(a.size() == 3);
  REQUIRE(b.size() == 3);
  for (size_t k = 0; k < a.size(); ++k) CHECK(at::equal(a[k].images, b[k].images));
}

TEST_CASE("loader: identical batches with 0, 1 and 4 workers, each index once per epoch", "[data][loader]") {
  using namespace taxon::data;
  const auto ds = std::make_shared<const test_data::SyntheticDataset>(50);
  const Compose train = clip_train(8, 0.3);
  const auto opts = LoaderOptions().batch_size(7).seed(11);
  const Loader<test_data::SyntheticDataset> l0(ds, train, LoaderOptions(opts).workers(0));
  const Loader<test_data::SyntheticDataset> l1(ds, train, LoaderOptions(opts).workers(1));
  const Loader<test_data::SyntheticDataset> l4(ds, train, LoaderOptions(opts).workers(4).prefetch(1));
  const auto b0 = test_data::collect(l0, 2), b1 = test_data::collect(l1, 2), b4 = test_data::collect(l4, 2);
  REQUIRE(b1.size() == 8);
  REQUIRE(l1.batches_per_epoch() == 8);
  REQUIRE(b4.size() == b1.size());
  REQUIRE(b0.size() == b1.size());
  std::vector<int64_t> all;
  for (size_t i = 0; i < b1.size(); ++i) {
    CHECK(at::equal(b1[i].indices, b4[i].indices));
    CHECK(at::equal(b1[i].labels, b4[i].labels));
    CHECK(at::equal(b1[i].images, b4[i].images));
    CHECK(at::equal(b0[i].images, b4[i].images));
    for (int64_t k = 0; k < b1[i].size(); ++k) all.push_back(b1[i].indices[k].item<int64_t>());
  }
  REQUIRE(b1[0].images.sizes() == at::IntArrayRef({7, 3, 8, 8}));
  REQUIRE(b1[0].images.scalar_type() == at::kFloat);
  REQUIRE(b1[0].labels.sizes() == at::IntArrayRef({7, 2}));
  CHECK(b1[0].labels[0][0].item<int64_t>() == b1[0].indices[0].item<int64_t>() % 5);
  CHECK(b1.back().size() == 1);  // 50 = 7 * 7 + 1
  std::vector<int64_t> sorted = all;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> expected(50);
  std::iota(expected.begin(), expected.end(), 0);
  CHECK(sorted == expected);
  CHECK(all != expected);  // shuffled

  // A different epoch gives a different order and different augmentations; drop_last drops the tail.
  const auto e3 = test_data::collect(l4, 3);
  CHECK_FALSE(at::equal(e3[0].indices, b4[0].indices));
  // Batch buffers are recycled only when nobody holds them: kept batches and kept views stay intact.
  for (size_t i = 0; i < b4.size(); ++i) CHECK(at::equal(b4[i].images, b1[i].images));
  at::Tensor kept_view;
  for (auto& b : l4.epoch(2)) {
    if (!kept_view.defined()) kept_view = b.images[0];
  }
  for (int e = 4; e < 6; ++e) (void)test_data::collect(l4, e);
  CHECK(at::equal(kept_view, b1[0].images[0]));
  const Loader<test_data::SyntheticDataset> dl(ds, train, LoaderOptions(opts).workers(2).drop_last(true));
  const auto bd = test_data::collect(dl, 2);
  CHECK(bd.size() == 7);
  CHECK(at::equal(bd[6].indices, b1[6].indices));
  // Two epochs alive at once: the second runs on its own threads while the first holds the persistent workers.
  {
    auto first = l4.epoch(2);
    auto second = l4.epoch(3);
    std::vector<Batch> from_first, from_second;
    for (auto& b : second) from_second.push_back(b);
    for (auto& b : first) from_first.push_back(b);
    CHECK(at::equal(from_second[0].images, e3[0].images));
    CHECK(from_first.size() == b4.size());
  }
  CHECK(at::equal(test_data::collect(l4, 2)[1].images, test_data::collect(l1, 2)[1].images));  // the pool is free again
  // pin_memory is honoured only with CUDA; it must not break CPU-only runs.
  const Loader<test_data::SyntheticDataset> pinned(ds, train, LoaderOptions(opts).workers(2).pin_memory(true));
  CHECK(at::equal(test_data::collect(pinned, 2)[3].images, b1[3].images));
}

TEST_CASE("loader: epoch(e, skip) yields the epoch's remaining batches without reading the skipped ones", "[data][loader]") {
  using namespace taxon::data;
  for (int workers : {0, 2}) {
    INFO("workers " << workers);
    const auto ds = std::make_shared<const test_data::SyntheticDataset>(50);
    const Loader<test_data::SyntheticDataset> loader(ds, clip_train(8), LoaderOptions().batch_size(7).seed(3).workers(workers));
    const auto full = test_data::collect(loader, 4);
    ds->gets = 0;
    std::vector<Batch> tail;
    auto range = loader.epoch(4, 5);
    CHECK(range.size() == 3);
    for (auto& b : range) tail.push_back(b);
    REQUIRE(tail.size() == 3);
    for (size_t i = 0; i < tail.size(); ++i) {
      CHECK(at::equal(tail[i].indices, full[i + 5].indices));
      CHECK(at::equal(tail[i].images, full[i + 5].images));
    }
    CHECK(ds->gets.load() == 7 + 7 + 1);  // only the three remaining batches were read
    CHECK(loader.epoch(4, 99).size() == 0);
    REQUIRE_TAXON_ERROR(loader.epoch(4, -1), "data.bad-option");
  }
}

TEST_CASE("loader: shards of 2 ranks partition the epoch", "[data][loader]") {
  using namespace taxon::data;
  for (int64_t n : {50, 51}) {
    const auto ds = std::make_shared<const test_data::SyntheticDataset>(n);
    std::vector<int64_t> r0, r1;
    for (int rank : {0, 1}) {
      const Loader<test_data::SyntheticDataset> l(ds, Compose{resize(4, 4)},
                                                  LoaderOptions().batch_size(8).workers(2).seed(5).rank(rank).world_size(2));
      for (auto& b : l.epoch(1))
        for (int64_t k = 0; k < b.size(); ++k) (rank == 0 ? r0 : r1).push_back(b.indices[k].item<int64_t>());
    }
    INFO("n = " << n);
    CHECK(r0.size() == r1.size());  // equal shards keep distributed ranks in lock step
    std::set<int64_t> s0(r0.begin(), r0.end()), s1(r1.begin(), r1.end()), both;
    std::set<int64_t> all(s0);
    all.insert(s1.begin(), s1.end());
    CHECK(all.size() == static_cast<size_t>(n));
    std::set_intersection(s0.begin(), s0.end(), s1.begin(), s1.end(), std::inserter(both, both.begin()));
    if (n % 2 == 0) {
      CHECK(both.empty());  // an exact partition
      CHECK(r0.size() + r1.size() == static_cast<size_t>(n));
    } else {
      CHECK(both.size() == 1);  // one sample repeated to pad (DistributedSampler semantics)
    }
  }
  REQUIRE_TAXON_ERROR(epoch_order(10, 0, LoaderOptions().rank(2).world_size(2)), "data.bad-shard");
}

// What data-parallel training relies on: a rank's order depends only on (seed, epoch, N, rank), each rank's shard is
// its stride of the 1-rank epoch permutation, and with drop_last the ranks' batch k together hold exactly the samples
// of batch k of a 1-rank run with an N-times larger batch, each with the same augmentation.
TEST_CASE("loader: an N-rank epoch is the 1-rank epoch's permutation cut in strides, global batches equal", "[data][loader][dist]") {
  using namespace taxon::data;
  for (int64_t n : {48, 53}) {
    const auto ds = std::make_shared<const test_data::SyntheticDataset>(n);
    for (int64_t world : {1, 2, 3, 4}) {
      const int64_t b = 4;
      INFO("n " << n << ", world size " << world);
      const auto one = LoaderOptions().batch_size(b * world).seed(9).drop_last(true).workers(0);
      const Loader<test_data::SyntheticDataset> single(ds, clip_train(8, 0.3), one);
      const auto full = epoch_order(n, 2, one);
      CHECK(full == epoch_order(n, 2, LoaderOptions(one).workers(3)));  // not a function of the workers
      CHECK(full != epoch_order(n, 3, one));
      CHECK(full != epoch_order(n, 2, LoaderOptions(one).seed(10)));
      const auto single_batches = test_data::collect(single, 2);
      std::vector<std::vector<Batch>> per_rank;
      for (int rank = 0; rank < world; ++rank) {
        const auto opts = LoaderOptions(one).batch_size(b).rank(rank).world_size(static_cast<int>(world)).workers(rank % 2 * 2);
        const auto shard = epoch_order(n, 2, opts);
        CHECK(shard == epoch_order(n, 2, opts));
        std::vector<int64_t> stride;  // the 1-rank permutation (cut to a multiple of N), every N-th from `rank`
        for (int64_t i = rank; i < n / world * world; i += world) stride.push_back(full[static_cast<size_t>(i)]);
        CHECK(shard == stride);
        per_rank.push_back(test_data::collect(Loader<test_data::SyntheticDataset>(ds, clip_train(8, 0.3), opts), 2));
      }
      for (const auto& r : per_rank) REQUIRE(r.size() == single_batches.size());
      REQUIRE(single_batches.size() == static_cast<size_t>(n / (b * world)));
      for (size_t k = 0; k < single_batches.size(); ++k) {
        std::map<int64_t, at::Tensor> merged;
        for (const auto& r : per_rank)
          for (int64_t i = 0; i < r[k].size(); ++i) merged.emplace(r[k].indices[i].item<int64_t>(), r[k].images[i]);
        const Batch& s = single_batches[k];
        REQUIRE(merged.size() == static_cast<size_t>(s.size()));
        for (int64_t i = 0; i < s.size(); ++i) {
          const auto it = merged.find(s.indices[i].item<int64_t>());
          REQUIRE(it != merged.end());
          CHECK(at::equal(it->second, s.images[i]));  // same sample, same augmentation
        }
      }
    }
  }
}

TEST_CASE("loader: an exception inside a worker surfaces in the caller, early exit joins cleanly", "[data][loader]") {
  using namespace taxon::data;
  const auto bad = std::make_shared<const test_data::SyntheticDataset>(40, /*fail_at=*/13);
  for (int workers : {0, 1, 3}) {
    const Loader<test_data::SyntheticDataset> l(bad, Compose{resize(4, 4)}, LoaderOptions().batch_size(4).workers(workers));
    INFO("workers = " << workers);
    CHECK(test_data::error_message([&] { (void)test_data::collect(l, 0); }) == "boom at sample 13");
  }
  const auto bad_taxon = std::make_shared<const test_data::SyntheticDataset>(40, 13, /*taxon_error=*/true);
  const Loader<test_data::SyntheticDataset> lt(bad_taxon, Compose{resize(4, 4)}, LoaderOptions().batch_size(4).workers(2));
  REQUIRE_TAXON_ERROR(test_data::collect(lt, 0), "data.corrupt-image");

  const auto ds = std::make_shared<const test_data::SyntheticDataset>(200);
  const Loader<test_data::SyntheticDataset> l(ds, Compose{resize(4, 4)}, LoaderOptions().batch_size(2).workers(4));
  int seen = 0;
  for (auto& b : l.epoch(0)) {
    (void)b;
    if (++seen == 2) break;  // workers are stopped and joined by the range's destructor
  }
  CHECK(seen == 2);
  // Ragged transform outputs are a clear error, not a crash.
  const Loader<test_data::SyntheticDataset> ragged(ds, TransformFn{}, LoaderOptions().batch_size(4).workers(1));
  REQUIRE_TAXON_ERROR(test_data::collect(ragged, 0), "data.ragged-batch");
}

TEST_CASE("Fashion-MNIST loader at 32 px produces normalised Bx3x32x32 batches", "[data][idx][loader]") {
  using namespace taxon::data;
  const auto full = std::make_shared<const IdxDataset>(IdxDataset::fashion_mnist(false));
  std::vector<int64_t> first(100);
  std::iota(first.begin(), first.end(), 0);
  const auto sub = std::make_shared<const Subset<IdxDataset>>(full, first);
  const Loader<Subset<IdxDataset>> loader(sub, small_image(32, {0.2860, 0.2860, 0.2860}, {0.3530, 0.3530, 0.3530}),
                                          LoaderOptions().batch_size(32).workers(2).shuffle(false));
  auto batches = test_data::collect(loader, 0);
  REQUIRE(batches.size() == 4);
  REQUIRE(batches[0].images.sizes() == at::IntArrayRef({32, 3, 32, 32}));
  CHECK(batches[0].labels[0][0].item<int64_t>() == 9);
  CHECK(batches[3].size() == 4);
  const double mean = batches[0].images.mean().item<double>();
  CHECK(std::abs(mean) < 0.5);  // roughly centred by the dataset statistics
}

TEST_CASE("splits: seeded overall split and a correct stratified split", "[data][split]") {
  using namespace taxon::data;
  const Split s = train_test_split(100, 0.2, 1);
  CHECK(s.test.size() == 20);
  CHECK(s.train.size() == 80);
  CHECK(train_test_split(100, 0.2, 1).test == s.test);
  CHECK(train_test_split(100, 0.2, 2).test != s.test);
  REQUIRE_TAXON_ERROR(train_test_split(10, 1.5, 0), "data.bad-split");

  // Class sizes 1, 2, 3, 5, 40 and some missing labels.
  std::vector<int64_t> labels;
  for (auto [c, n] : std::vector<std::pair<int64_t, int>>{{0, 1}, {1, 2}, {2, 3}, {3, 5}, {4, 40}})
    for (int i = 0; i < n; ++i) labels.push_back(c);
  labels.push_back(-1);
  std::shuffle(labels.begin(), labels.end(), std::mt19937(3));
  for (double frac : {0.1, 0.2, 0.5}) {
    const Split st = stratified_split(labels, frac, 7);
    INFO("test fraction " << frac);
    std::map<int64_t, int> test_count, train_count;
    for (auto i : st.test) ++test_count[labels[static_cast<size_t>(i)]];
    for (auto i : st.train) ++train_count[labels[static_cast<size_t>(i)]];
    for (int64_t c = 1; c <= 4; ++c) {  // every class with >= 2 samples is on both sides
      CHECK(test_count[c] >= 1);
      CHECK(train_count[c] >= 1);
    }
    CHECK(test_count.count(0) == 0);  // the singleton stays in the gallery
    CHECK(train_count[0] == 1);
    CHECK(test_count.count(-1) == 0);
    CHECK(st.test.size() + st.train.size() == labels.size());
    std::vector<int64_t> both;
    std::set_intersection(st.test.begin(), st.test.end(), st.train.begin(), st.train.end(), std::back_inserter(both));
    CHECK(both.empty());
    CHECK(test_count[4] == static_cast<int>(std::llround(frac * 40)));
  }
  CHECK(stratified_split(labels, 0.2, 7).test == stratified_split(labels, 0.2, 7).test);
  const Split dropped = stratified_split(labels, 0.2, 7, Singletons::drop);
  CHECK(dropped.test.size() + dropped.train.size() == labels.size() - 2);

  // On a dataset rank, with the halves as Subsets.
  const auto ds = std::make_shared<const test_data::SyntheticDataset>(30);
  const Split by_rank = stratified_split(*ds, "fine", 0.2, 3);
  const auto [train, test] = split_dataset(ds, by_rank);
  CHECK(train.size() + test.size() == 30);
  std::set<int64_t> test_classes;
  for (int64_t i = 0; i < test.size(); ++i) test_classes.insert(test.labels(i)[0]);
  CHECK(test_classes.size() == 5);
}

TEST_CASE("EmbeddingDataset from .npy features with npy or CSV labels", "[data][embedding]") {
  using namespace taxon::data;
  test_data::TempDir dir;
  const at::Tensor features = at::randn({6, 4});
  taxon::io::save_npy(dir.path / "f.npy", features);
  taxon::io::save_npy(dir.path / "l.npy", at::tensor({0, 1, 2, 0, 1, 2}, at::kLong));
  const auto ds = EmbeddingDataset::from_npy(dir.path / "f.npy", dir.path / "l.npy");
  REQUIRE(ds.size() == 6);
  CHECK((ds.labels(4) == std::vector<int64_t>{1}));
  REQUIRE_TENSORS_CLOSE(ds.get(3).image, features[3], 0, 0);
  test_data::write_bytes(dir.path / "meta.csv", "species,genus\nSalmo trutta,Salmo\nEsox lucius,Esox\n,\n"
                                                "Salmo salar,Salmo\nEsox lucius,Esox\nSalmo trutta,Salmo\n");
  const auto dc = EmbeddingDataset::from_csv(dir.path / "f.npy", dir.path / "meta.csv", {"species", "genus"});
  CHECK((dc.labels(0) == std::vector<int64_t>{2, 1}));
  CHECK((dc.labels(2) == std::vector<int64_t>{kMissingLabel, kMissingLabel}));
  const Loader<EmbeddingDataset> loader(std::make_shared<const EmbeddingDataset>(dc), TransformFn{},
                                        LoaderOptions().batch_size(4).workers(1).shuffle(false));
  const auto batches = test_data::collect(loader, 0);
  REQUIRE(batches.size() == 2);
  REQUIRE_TENSORS_CLOSE(batches[0].images, features.slice(0, 0, 4), 0, 0);
  REQUIRE_TAXON_ERROR(EmbeddingDataset(features, at::zeros({5}, at::kLong), Taxonomy({"c"}, {LabelMap({"a"})})),
                      "data.bad-embeddings");
}

TEST_CASE("rank specs: one parser for RANK=COLUMN, RANK=@genus(COLUMN), RANK==VALUE", "[data][csv]") {
  using taxon::data::parse_rank_spec;
  using taxon::data::RankSpec;
  CHECK(parse_rank_spec("species=scientificName") == RankSpec::column("species", "scientificName"));
  CHECK(parse_rank_spec("genus=@genus(scientificName)") == RankSpec::genus_from("genus", "scientificName"));
  CHECK(parse_rank_spec("taxa==Fish") == RankSpec::constant("taxa", "Fish"));
  CHECK(parse_rank_spec("taxa==a=b") == RankSpec::constant("taxa", "a=b"));  // only the first '=' separates
  for (const char* spec : {"species=scientificName", "genus=@genus(scientificName)", "taxa==Fish"})
    CHECK(to_string(parse_rank_spec(spec)) == spec);
  for (const char* bad : {"species", "=scientificName", "species=", "taxa==", "genus=@genus()", "genus=@genus(x",
                          "family=@family(scientificName)"}) {
    INFO(bad);
    REQUIRE_TAXON_ERROR(parse_rank_spec(bad), "data.bad-rank-spec");
  }
  const auto table = taxon::data::CsvTable::parse("path,scientificName\na.jpg,Salmo trutta fario\nb.jpg,  Danio rerio\n");
  CHECK(rank_values(table, parse_rank_spec("species=scientificName")) ==
        std::vector<std::string>{"Salmo trutta fario", "  Danio rerio"});
  CHECK(rank_values(table, parse_rank_spec("genus=@genus(scientificName)")) == std::vector<std::string>{"Salmo", "Danio"});
  CHECK(rank_values(table, parse_rank_spec("taxa==Fish")) == std::vector<std::string>{"Fish", "Fish"});
  REQUIRE_TAXON_ERROR(rank_values(table, parse_rank_spec("species=species")), "data.missing-column");
}

TEST_CASE("rank filters: RANK=V1,V2 keeps the listed values, RANK!=V1,V2 the others, unknown names are errors",
          "[data][filter]") {
  using namespace taxon::data;
  CHECK(parse_rank_filter("class=Ankle boot,T-shirt/top") == RankFilter{"class", true, {"Ankle boot", "T-shirt/top"}});
  CHECK(parse_rank_filter("class!=Bag") == RankFilter{"class", false, {"Bag"}});
  for (const char* spec : {"class=Ankle boot,T-shirt/top", "class!=Bag", "a=b=c"}) CHECK(to_string(parse_rank_filter(spec)) == spec);
  for (const char* bad : {"class", "=Bag", "!=Bag", "class=", "class!=", "class=Bag,", "class=,Bag", "class=Bag,,Coat"}) {
    INFO(bad);
    REQUIRE_TAXON_ERROR(parse_rank_filter(bad), "data.bad-rank-filter");
  }
  // Labels a b c a (missing) b over one rank; rows are kept in the order given.
  const EmbeddingDataset d(at::zeros({6, 2}), at::tensor(std::vector<int64_t>{0, 1, 2, 0, -1, 1}, at::kLong),
                           Taxonomy({"class"}, {LabelMap({"a", "b", "c"})}));
  const std::vector<int64_t> rows{5, 4, 3, 2, 1, 0};
  CHECK(filter_rows(d, parse_rank_filter("class=a,c"), rows) == std::vector<int64_t>{3, 2, 0});
  CHECK(filter_rows(d, parse_rank_filter("class!=a,c"), rows) == std::vector<int64_t>{5, 4, 1});  // -1 is neither
  CHECK(filter_rows(d, parse_rank_filter("class=b"), {0, 2, 3}).empty());
  REQUIRE_TAXON_ERROR(filter_rows(d, parse_rank_filter("class=a,Tshirt"), rows), "data.unknown-label");
  REQUIRE_TAXON_ERROR(filter_rows(d, parse_rank_filter("genus=a"), rows), "data.unknown-rank");
  // Fashion-MNIST's test set: 1,000 images per class, by the names its taxonomy gives.
  const auto test = IdxDataset::fashion_mnist(false);
  std::vector<int64_t> all(static_cast<size_t>(test.size()));
  std::iota(all.begin(), all.end(), 0);
  const auto seen = filter_rows(test, parse_rank_filter("class=T-shirt/top,Trouser,Pullover,Dress,Coat"), all);
  const auto unseen = filter_rows(test, parse_rank_filter("class!=T-shirt/top,Trouser,Pullover,Dress,Coat"), all);
  CHECK(seen.size() == 5000);
  CHECK(unseen.size() == 5000);
  for (auto i : unseen) CHECK(test.labels(i)[0] >= 5);
  CHECK(filter_rows(test, parse_rank_filter("group=footwear"), all).size() == 3000);
}
