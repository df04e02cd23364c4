// ViT forward throughput on CPU: images/s and the GFLOP/s reached, to read against bench_core_matmul's rate.
// FLOPs count the matrix products (support/vit_flops.hpp; ViT-B/32: 8.82 GFLOP per image). Rates use wall time
// (UseRealTime): the main thread's CPU time undercounts work done on the BLAS/OpenMP threads.
#include "support/context.hpp"
#include "support/vit_flops.hpp"

#include "taxon/backbone/zoo.hpp"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <string>

namespace bench_backbone {

using taxon::bench::vit_forward_flops;

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
  state.counters["GFLOP/s"] = benchmark::Counter(images_done * vit_forward_flops(o) / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/img"] = vit_forward_flops(o) / 1e9;
}

}  // namespace bench_backbone

static void BM_VitForward_tiny(benchmark::State& state) { bench_backbone::forward(state, "tiny"); }
static void BM_VitForward_demo32(benchmark::State& state) { bench_backbone::forward(state, "demo32"); }
static void BM_VitForward_B32(benchmark::State& state) { bench_backbone::forward(state, "ViT-B/32"); }
BENCHMARK(BM_VitForward_tiny)->Arg(8)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_VitForward_demo32)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_VitForward_B32)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);
