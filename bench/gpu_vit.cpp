// GPU: one UNICOM training step of a CLIP ViT under bf16 autocast — forward, PartialFC ArcFace head (fused loss,
// 10,000 classes), backward, AdamW (two groups, as the Trainer makes them) — in images/s and as a fraction of this
// GPU's bf16 matmul rate measured in the same run (8192³ products).
// Judged by: fraction_of_matmul = model TFLOP/s (3 × forward matmul FLOPs per image) / matmul TFLOP/s (target >= 0.30
// for ViT-B/32, batch 256); scripts/gpu-check puts PyTorch's eager and torch.compile rates of timm's
// vit_base_patch32_clip_quickgelu_224 beside it (target: taxon >= 1.0x eager).
// Exercises LibTorch 2.x's scaled_dot_product_attention (flash / memory-efficient kernels; sdpa=1) and, with
// fused_adamw=1, ATen's fused AdamW kernel (taxon::train::FusedAdamW).
// ViT-L/14@336px: the largest of batch 192, 128, 64 that fits (an out-of-memory step is caught and retried smaller).
#include "support/gpu.hpp"
#include "support/vit_flops.hpp"

#include "taxon/backbone/zoo.hpp"
#include "taxon/pfc/partial_fc.hpp"
#include "taxon/train/amp.hpp"
#include "taxon/train/trainer.hpp"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#if defined(TAXON_WITH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <string>
#include <vector>

namespace bench_gpu_vit {

using taxon::bench::gpu_or_tiny;
using taxon::bench::timed;
using Head = taxon::pfc::PartialFC<taxon::loss::ArcFace>;

constexpr std::int64_t kClasses = 10'000;

struct Setup {
  taxon::backbone::VisionTransformer model{nullptr};
  Head head{nullptr};
  std::unique_ptr<torch::optim::AdamW> optimizer;
  at::Tensor images, labels;
};

inline Setup make_setup(const std::string& model_name, const at::Device& device, std::int64_t batch, bool fused_adamw) {
  Setup s;
  s.model = device.is_cuda() ? taxon::backbone::make_vit(model_name)
                             : taxon::backbone::VisionTransformer(taxon::backbone::VisionTransformerOptions()
                                                                      .image_size(32).patch_size(8).width(64)
                                                                      .layers(2).heads(4).output_dim(64));
  const auto& o = s.model->options;
  s.head = Head(taxon::pfc::PartialFCOptions(gpu_or_tiny<std::int64_t>(device, kClasses, 100), o.output_dim()).seed(1),
                taxon::loss::ArcFace(64, 0.5));
  s.model->to(device);
  s.head->to(device);
  s.optimizer = taxon::train::make_adamw(s.model, s.head,
                                         taxon::train::TrainerOptions().lr(1e-4).weight_decay(0.05).fused_adamw(fused_adamw));
  s.images = at::randn({batch, 3, o.image_size(), o.image_size()}, at::TensorOptions().device(device));
  s.labels = at::randint(0, s.head->num_classes(), {batch}, at::TensorOptions().device(device).dtype(at::kLong));
  return s;
}

inline void train_step(Setup& s, const at::Device& device) {
  s.optimizer->zero_grad();
  at::Tensor loss;
  {
    taxon::train::AutocastScope autocast(device, taxon::train::Precision::bf16);
    loss = s.head->forward(s.model->forward(s.images), s.labels);
  }
  loss.backward();
  s.optimizer->step();
}

inline void release_cached_memory() {
#if defined(TAXON_WITH_CUDA)
  c10::cuda::CUDACachingAllocator::emptyCache();
#endif
}

// Times `steps` training steps of the first batch in `batches` that fits on the device.
inline void run(benchmark::State& state, const std::string& model_name, std::vector<std::int64_t> batches,
                bool fused_adamw) {
  const auto device = taxon::bench::gpu_bench_device(state);
  if (!device) return;
  if (!device->is_cuda()) batches = {4};
  Setup s;
  std::int64_t batch = 0;
  for (std::int64_t b : batches) {
    try {
      s = make_setup(model_name, *device, b, fused_adamw);
      train_step(s, *device);  // warm-up, and the out-of-memory probe
      train_step(s, *device);
      taxon::bench::synchronize(*device);
      batch = b;
      break;
    } catch (const c10::OutOfMemoryError&) {
      s = Setup{};
      release_cached_memory();
    }
  }
  if (batch == 0) {
    state.SkipWithError("out of memory at every batch size tried");
    return;
  }
  const double matmul_rate = taxon::bench::bf16_matmul_rate(*device, gpu_or_tiny<std::int64_t>(*device, 8192, 256), 10);
  taxon::bench::reset_peak_memory(*device);
  double seconds = 0;
  for (auto _ : state) {
    const double t = timed(*device, [&] { train_step(s, *device); });
    state.SetIterationTime(t);
    seconds += t;
  }
  const double steps = static_cast<double>(state.iterations());
  const double images_per_s = static_cast<double>(batch) * steps / seconds;
  const double model_rate = 3.0 * taxon::bench::vit_forward_flops(s.model->options) * images_per_s;
  state.counters["batch"] = static_cast<double>(batch);
  state.counters["images_per_s"] = images_per_s;
  state.counters["step_ms"] = 1e3 * seconds / steps;
  state.counters["model_TFLOPs"] = model_rate / 1e12;
  state.counters["matmul_TFLOPs"] = matmul_rate / 1e12;
  state.counters["fraction_of_matmul"] = model_rate / matmul_rate;  // target >= 0.30 (ViT-B/32)
  state.counters["sdpa"] = TAXON_HAS_SDPA;
  state.counters["fused_adamw"] = fused_adamw ? 1 : 0;
  if (device->is_cuda()) state.counters["peak_MiB"] = taxon::bench::allocated_mib(*device, true);
}

void BM_TrainStep_ViT_B32(benchmark::State& state) { run(state, "ViT-B/32", {256}, state.range(0) == 1); }
void BM_TrainStep_ViT_L14_336(benchmark::State& state) {
  run(state, "ViT-L/14@336px", {192, 128, 64}, state.range(0) == 1);
}

BENCHMARK(BM_TrainStep_ViT_B32)->ArgName("fused_adamw")->Arg(0)->Arg(TAXON_HAS_FUSED_ADAMW)->Iterations(20)
    ->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TrainStep_ViT_L14_336)->ArgName("fused_adamw")->Arg(TAXON_HAS_FUSED_ADAMW)->Iterations(5)
    ->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace bench_gpu_vit
