// ViT forward throughput on CPU: images/s and the GFLOP/s reached, to read against bench_core_matmul's rate.
// FLOPs count the matrix products (2 per multiply-add): patch embedding, qkv/out projections, attention
// scores and mixing, MLP, head. For ViT-B/32 this gives the usual 8.82 GFLOP per image. Rates use wall time
// (UseRealTime): the main thread's CPU time undercounts work done on the BLAS/OpenMP threads.
#include "support/context.hpp"

#include "taxon/backbone/zoo.hpp"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <string>

namespace bench_backbone {

inline double forward_flops(const taxon::backbone::VisionTransformerOptions& o) {
  const double w = static_cast<double>(o.width()), g2 = static_cast<double>(o.grid() * o.grid());
  const double n = static_cast<double>(o.tokens()), p = static_cast<double>(o.patch_size());
  const double patch = g2 * w * 3 * p * p;
  const double block = n * w * 3 * w + 2 * n * n * w + n * w * w + 2 * n * w * w * static_cast<double>(o.mlp_ratio());
  const double head = o.layout() == taxon::backbone::Layout::clip
                          ? w * static_cast<double>(o.output_dim())
                          : g2 * w * w + w * static_cast<double>(o.output_dim());
  return 2.0 * (patch + static_cast<double>(o.layers()) * block + head);
}

inline void forward(benchmark::State& state, const std::string& name) {
  const int64_t batch = state.range(0);
  auto model = taxon::backbone::make_vit(name);
  model->eval();
  const auto& o = model->options;
  const auto images = at::randn({batch, 3, o.image_size(), o.image_size()});
  c10::InferenceMode guard;
  benchmark::DoNotOptimize(model->forward(images));  // warm-up: first-touch allocations
  for (auto _ : state) {
    auto out = model->forward(images);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  const double images_done = static_cast<double>(batch) * static_cast<double>(state.iterations());
  state.counters["images/s"] = benchmark::Counter(images_done, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(images_done * forward_flops(o) / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/img"] = forward_flops(o) / 1e9;
}

}  // namespace bench_backbone

static void BM_VitForward_tiny(benchmark::State& state) { bench_backbone::forward(state, "tiny"); }
static void BM_VitForward_demo32(benchmark::State& state) { bench_backbone::forward(state, "demo32"); }
static void BM_VitForward_B32(benchmark::State& state) { bench_backbone::forward(state, "ViT-B/32"); }
BENCHMARK(BM_VitForward_tiny)->Arg(8)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_VitForward_demo32)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_VitForward_B32)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);
