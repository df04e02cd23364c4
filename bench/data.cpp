// Decode + CLIP preprocessing throughput (images/s) to 224x224 from 500x375 JPEGs that the benchmark writes
// itself, through the Loader with 1 and 2 workers, next to raw single-thread libjpeg-turbo decode of the same
// files (read + full-size decode only). Target: Loader at 2 workers >= 80% of 2x the raw single-thread decode rate.
// The Loader runs two ways, both bit-identical to PIL's CLIP preprocessing: `fused:1` (the default) lets the
// dataset decode straight to the transform's leading resize + center crop (libjpeg-turbo partial decode of the
// columns the crop reads); `fused:0` (LoaderOptions::fused_decode(false)) decodes every image in full first.
// `u8:1` collates uint8 [B,3,224,224] (to_chw) for normalize_batch on the GPU instead of float32 batches.
// All rates are wall-clock (UseRealTime); on a shared VM compare them only at similar /proc/loadavg (recorded
// in the context block). `cpu_us_per_image` (CPU time of all the process's threads per image) moves much less
// with other load, so it compares two builds on a busy machine. BM_ClipPreprocessOnly shows the preprocessing
// share of the per-image CPU cost.
#include "support/context.hpp"

#include "taxon/data/data.hpp"

#include <ATen/ATen.h>

#include <cstdio>
#include <ctime>
#include <jpeglib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace bench_data {

namespace fs = std::filesystem;
constexpr int kPhotos = 256;    // distinct photos
constexpr int kImages = 1024;  // files: each photo saved 4 times, so an epoch is 32 batches of 32, not 8
constexpr int64_t kHeight = 375, kWidth = 500;

// Photo-like content: smooth colour fields, a few blobs and mild sensor noise (JPEG q90 ~ 60-90 KB each).
inline at::Tensor synthetic_photo(int seed) {
  std::mt19937 gen(static_cast<unsigned>(seed));
  std::normal_distribution<float> noise(0.f, 6.f);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  at::Tensor img = at::empty({kHeight, kWidth, 3}, at::kByte);
  auto a = img.accessor<uint8_t, 3>();
  float cx[4], cy[4], r[4], col[4][3];
  for (int b = 0; b < 4; ++b) {
    cx[b] = u(gen) * kWidth;
    cy[b] = u(gen) * kHeight;
    r[b] = 30 + u(gen) * 90;
    for (int c = 0; c < 3; ++c) col[b][c] = u(gen) * 255;
  }
  const float base[3] = {u(gen) * 255, u(gen) * 255, u(gen) * 255};
  for (int64_t y = 0; y < kHeight; ++y)
    for (int64_t x = 0; x < kWidth; ++x)
      for (int c = 0; c < 3; ++c) {
        float v = base[c] * (0.5f + 0.5f * static_cast<float>(x + y) / (kWidth + kHeight)) +
                  20.f * std::sin(0.05f * static_cast<float>(x) * (c + 1) + 0.03f * static_cast<float>(y));
        for (int b = 0; b < 4; ++b) {
          const float dx = static_cast<float>(x) - cx[b], dy = static_cast<float>(y) - cy[b];
          if (dx * dx + dy * dy < r[b] * r[b]) v = 0.6f * col[b][c] + 0.4f * v;
        }
        v += noise(gen);
        a[y][x][c] = static_cast<uint8_t>(std::clamp(v, 0.f, 255.f));
      }
  return img;
}

struct Fixture {
  fs::path root;
  std::vector<std::string> bytes;  // the files' contents, for the in-memory raw decode
  std::shared_ptr<const taxon::data::ImageFolderDataset> dataset;
  double mean_kb = 0;
  Fixture() {
    std::random_device rd;
    root = fs::temp_directory_path() / ("taxon_bench_data_" + std::to_string(rd()));
    for (int i = 0; i < kPhotos; ++i) {
      bytes.push_back(taxon::data::encode_jpeg(synthetic_photo(i), 90));
      mean_kb += static_cast<double>(bytes.back().size()) / 1024.0 / kPhotos;
    }
    fs::create_directories(root / "photos");
    for (int i = 0; i < kImages; ++i)  // plain writes: a fixture needs no fsync + rename per file
      std::ofstream(root / "photos" / ("img" + std::to_string(i) + ".jpg"), std::ios::binary) << bytes[i % kPhotos];
    dataset = std::make_shared<const taxon::data::ImageFolderDataset>(root);
  }
  ~Fixture() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
};

inline Fixture& fixture() {
  static Fixture f;
  return f;
}

}  // namespace bench_data

namespace bench_data {

// What a plain libjpeg-turbo user writes: read the file, decode every row at full size into a fresh [H,W,3]
// tensor. No error handling beyond libjpeg's default (the files are known good).
inline at::Tensor plain_libjpeg_decode(const std::string& bytes) {
  jpeg_decompress_struct cinfo{};
  jpeg_error_mgr err{};
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  const auto width = static_cast<int64_t>(cinfo.output_width);
  at::Tensor img = at::empty({static_cast<int64_t>(cinfo.output_height), width, 3}, at::kByte);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = img.data_ptr<uint8_t>() + static_cast<int64_t>(cinfo.output_scanline) * width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return img;
}

// CPU seconds used so far by all threads of this process.
inline double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace bench_data

// Raw libjpeg-turbo, the target's reference: read the file and decode it to RGB at full size, one thread.
static void BM_RawJpegDecode(benchmark::State& state) {
  auto& f = bench_data::fixture();
  int i = 0;
  for (auto _ : state) {
    at::Tensor img = bench_data::plain_libjpeg_decode(taxon::io::read_file(f.dataset->path(i++ % bench_data::kImages)));
    benchmark::DoNotOptimize(img.data_ptr());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["jpeg_KiB"] = f.mean_kb;
}
BENCHMARK(BM_RawJpegDecode)->UseRealTime()->MinTime(2.0)->Unit(benchmark::kMillisecond);

// taxon::data::decode_jpeg on the same files: the same libjpeg-turbo calls, plus error handling and rows that
// start at odd addresses (libjpeg-turbo's colour conversion then keeps them in cache instead of streaming them out).
static void BM_TaxonJpegDecode(benchmark::State& state) {
  auto& f = bench_data::fixture();
  int i = 0;
  for (auto _ : state) {
    const auto path = f.dataset->path(i++ % bench_data::kImages);
    at::Tensor img = taxon::data::decode_jpeg(taxon::io::read_file(path), path.string());
    benchmark::DoNotOptimize(img.data_ptr());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TaxonJpegDecode)->UseRealTime()->MinTime(2.0)->Unit(benchmark::kMillisecond);

// CLIP preprocessing alone (PIL-exact resize 500x375 -> 298x224 window 224x224, normalise), one thread.
static void BM_ClipPreprocessOnly(benchmark::State& state) {
  auto& f = bench_data::fixture();
  const at::Tensor img = taxon::data::decode_jpeg(f.bytes[0], "img0");
  const auto t = taxon::data::clip_eval(224);
  taxon::data::Rng rng(0);
  for (auto _ : state) {
    at::Tensor out = t(img, rng);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ClipPreprocessOnly)->UseRealTime()->MinTime(2.0)->Unit(benchmark::kMillisecond);

// The Loader over the same files: read + decode + CLIP eval preprocessing + collate into [32,3,224,224] batches,
// float32 normalised (`u8:0`), or uint8 for normalize_batch on the device (`u8:1`, the CPU side only).
static void BM_LoaderClip224(benchmark::State& state) {
  const int workers = static_cast<int>(state.range(0));
  const bool fused = state.range(1) == 1, u8 = state.range(2) == 1;
  const taxon::data::TransformFn transform =
      u8 ? taxon::data::Compose{taxon::data::resize_center_crop(224, 224), taxon::data::to_chw()}
         : taxon::data::clip_eval(224);
  const taxon::data::Loader<taxon::data::ImageFolderDataset> loader(
      bench_data::fixture().dataset, transform,
      taxon::data::LoaderOptions().batch_size(32).workers(workers).prefetch(2).shuffle(true).seed(1).fused_decode(fused));
  int64_t images = 0, epoch = 0;
  // Warm up: the batch pool grows to workers * prefetch + 1 buffers, and each one's first fill pays its page faults.
  for (; epoch < 2; ++epoch)
    for (auto& batch : loader.epoch(epoch)) benchmark::DoNotOptimize(batch.images.data_ptr());
  const double cpu_start = bench_data::process_cpu_seconds();
  for (auto _ : state) {
    for (auto& batch : loader.epoch(epoch++)) {
      images += batch.size();
      benchmark::DoNotOptimize(batch.images.data_ptr());
    }
  }
  state.SetItemsProcessed(images);
  state.counters["cpu_us_per_image"] = (bench_data::process_cpu_seconds() - cpu_start) * 1e6 / static_cast<double>(images);
}
BENCHMARK(BM_LoaderClip224)->ArgNames({"workers", "fused", "u8"})->ArgsProduct({{1, 2}, {0, 1}, {0, 1}})->UseRealTime()
    ->MinTime(3.0)->Unit(benchmark::kMillisecond);
