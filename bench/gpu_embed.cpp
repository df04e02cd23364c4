// GPU: embedding throughput (bf16 autocast, batch 256) of ViT-B/32 at 224 px and ViT-L/14 at 336 px with taxon's
// Loader feeding it from JPEG files (4,096 synthetic 500×375 photos written here first) on all CPU cores: uint8
// batches (resize + center crop, to_chw) in pinned memory, copied non-blocking and normalised on the device.
// Reports three rates — the loader alone, the GPU alone (device-resident batch), and the two together — and
// loader_bound = 1 when the loader is the slower side (then it, not the GPU, sets the end-to-end rate).
#include "support/gpu.hpp"
#include "support/synthetic_photo.hpp"

#include "taxon/backbone/zoo.hpp"
#include "taxon/data/data.hpp"
#include "taxon/train/amp.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <thread>

namespace bench_gpu_embed {

namespace fs = std::filesystem;
using taxon::bench::gpu_or_tiny;
using taxon::bench::timed;

// Writes `count` JPEGs into root/<class>/ once (class = i mod 16); later calls reuse them.
inline fs::path jpeg_folder(std::int64_t count, std::int64_t h, std::int64_t w) {
  const fs::path root = fs::temp_directory_path() / ("taxon_bench_gpu_embed_" + std::to_string(count) + "_" +
                                                     std::to_string(h) + "x" + std::to_string(w));
  if (fs::exists(root / "complete")) return root;
  for (int c = 0; c < 16; ++c) fs::create_directories(root / ("class" + std::to_string(c)));
  at::parallel_for(0, count, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i)
      taxon::data::write_image(root / ("class" + std::to_string(i % 16)) / ("img" + std::to_string(i) + ".jpg"),
                              taxon::bench::synthetic_photo(h, w, static_cast<std::uint64_t>(i % 16),
                                                            static_cast<std::uint64_t>(i)));
  });
  taxon::io::write_text_atomically(root / "complete", "ok\n");
  return root;
}

void run(benchmark::State& state, const std::string& model_name) {
  const auto device = taxon::bench::gpu_bench_device(state);
  if (!device) return;
  const bool gpu = device->is_cuda();
  auto model = gpu ? taxon::backbone::make_vit(model_name)
                   : taxon::backbone::VisionTransformer(taxon::backbone::VisionTransformerOptions()
                                                            .image_size(32).patch_size(8).width(64).layers(2)
                                                            .heads(4).output_dim(64));
  model->eval();
  model->to(*device);
  const std::int64_t res = model->options.image_size(), batch = gpu_or_tiny<std::int64_t>(*device, 256, 16);
  const fs::path root = gpu ? jpeg_folder(4096, 375, 500) : jpeg_folder(64, 48, 64);
  const taxon::data::ImageFolderDataset dataset(root);
  const int workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const taxon::data::Loader loader(dataset,
                                   taxon::data::Compose{taxon::data::resize_center_crop(res, res), taxon::data::to_chw(3)},
                                   taxon::data::LoaderOptions().batch_size(batch).workers(workers).shuffle(false)
                                       .pin_memory(gpu));
  const std::int64_t n = dataset.size();
  at::Tensor out = at::empty({n, model->options.output_dim()}, at::TensorOptions().device(*device));
  auto embed = [&](const at::Tensor& u8, std::int64_t offset) {
    c10::InferenceMode inference;
    taxon::train::AutocastScope autocast(*device, taxon::train::Precision::bf16);
    const at::Tensor images = taxon::data::normalize_batch(u8.to(*device, /*non_blocking=*/true),
                                                           taxon::data::kClipMean, taxon::data::kClipStd);
    out.narrow(0, offset, u8.size(0)).copy_(model->forward(images));
  };
  // Warm-up: one epoch through everything (page cache, worker buffers, cuDNN/cuBLAS choices).
  std::int64_t offset = 0;
  for (auto& b : loader.epoch(0)) {
    embed(b.images, offset);
    offset += b.size();
  }
  const double loader_s = timed(*device, [&] {
    for (auto& b : loader.epoch(1)) benchmark::DoNotOptimize(b.images.data_ptr());
  });
  const at::Tensor resident = at::randint(0, 256, {batch, 3, res, res}, at::TensorOptions().dtype(at::kByte)).to(*device);
  const int gpu_batches = gpu ? 10 : 2;
  const double gpu_s = timed(*device, [&] {
    for (int i = 0; i < gpu_batches; ++i) embed(resident, 0);
  });
  double e2e_s = 0;
  for (auto _ : state) {
    const double t = timed(*device, [&] {
      std::int64_t at_row = 0;
      for (auto& b : loader.epoch(2)) {
        embed(b.images, at_row);
        at_row += b.size();
      }
    });
    state.SetIterationTime(t);
    e2e_s += t;
  }
  const double loader_rate = static_cast<double>(n) / loader_s;
  const double gpu_rate = static_cast<double>(batch * gpu_batches) / gpu_s;
  state.counters["images"] = static_cast<double>(n);
  state.counters["workers"] = workers;
  state.counters["loader_images_per_s"] = loader_rate;
  state.counters["gpu_images_per_s"] = gpu_rate;
  state.counters["end_to_end_images_per_s"] = static_cast<double>(n) * state.iterations() / e2e_s;
  state.counters["loader_bound"] = loader_rate < gpu_rate ? 1 : 0;
}

void BM_Embed_ViT_B32_224(benchmark::State& state) { run(state, "ViT-B/32"); }
void BM_Embed_ViT_L14_336(benchmark::State& state) { run(state, "ViT-L/14@336px"); }

BENCHMARK(BM_Embed_ViT_B32_224)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
BENCHMARK(BM_Embed_ViT_L14_336)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);

}  // namespace bench_gpu_embed
