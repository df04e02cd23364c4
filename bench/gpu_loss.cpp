// GPU: the fused margin-softmax head (taxon::cuda row kernels around chunked cuBLAS GEMMs) against the unfused
// LibTorch head (reference_margin_softmax_ce: the full B×C logits and their softmax), ArcFace s=64 m=0.5,
// B=1024, D=512, C=1,048,576, forward + backward, both timed in the same iteration.
// Judged by: speedup = unfused_ms / fused_ms (target >= 3) and memory_ratio = fused_extra_MiB / unfused_extra_MiB
// (target <= 1/20), where "extra" is the CUDA caching allocator's peak during the step beyond the inputs and the
// gradients the step returns (its temporaries).
// fp32: fp32 embeddings, fp32 GEMMs on both sides. bf16: bf16 embeddings; the unfused head under bf16 autocast (what
// torch.autocast gives a PyTorch user), the fused head with bf16 GEMM operands and fp32 accumulation.
// BM_FusedHead_10M (issue 18): C = 10,000,000, which the unfused head cannot hold; time and peak memory per step.
#include "support/gpu.hpp"

#include "taxon/loss/loss.hpp"
#include "taxon/train/amp.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace bench_gpu_loss {

using namespace taxon::loss;
using taxon::bench::extra_peak_mib;
using taxon::bench::gpu_or_tiny;
using taxon::bench::timed;

struct Problem {
  at::Tensor embeddings, centres, labels;
  double gradient_mib = 0;  // the gradients a step returns (∂L/∂E, ∂L/∂W), counted out of "extra"
};

inline Problem make_problem(const at::Device& device, std::int64_t B, std::int64_t D, std::int64_t C,
                            at::ScalarType embedding_type) {
  const auto options = at::TensorOptions().device(device);
  Problem p;
  p.embeddings = at::randn({B, D}, options).to(embedding_type).requires_grad_(true);
  p.centres = (at::randn({C, D}, options) * 0.01).requires_grad_(true);
  p.labels = at::randint(0, C, {B}, options.dtype(at::kLong));
  p.gradient_mib = static_cast<double>(B * D * p.embeddings.element_size() + C * D * 4) / (1 << 20);
  return p;
}

// One forward + backward; the gradients are dropped first so the step allocates them afresh (as the first
// step of a training loop does) and the peak counts them exactly once.
template <typename LossFn>
void step(Problem& p, LossFn&& loss_fn) {
  p.embeddings.mutable_grad() = at::Tensor();
  p.centres.mutable_grad() = at::Tensor();
  at::Tensor loss = loss_fn(p);
  loss.backward();
}

inline void run_fused_vs_unfused(benchmark::State& state, at::ScalarType embedding_type) {
  const auto device = taxon::bench::gpu_bench_device(state);
  if (!device) return;
  const std::int64_t B = gpu_or_tiny<std::int64_t>(*device, 1024, 32), D = gpu_or_tiny<std::int64_t>(*device, 512, 64),
                     C = gpu_or_tiny<std::int64_t>(*device, std::int64_t{1} << 20, 5000);
  const bool bf16 = embedding_type == at::kBFloat16;
  const MarginParams margin = ArcFace(64, 0.5).params();
  const auto options = FusedOptions().matmul(bf16 ? MatmulPrecision::bf16 : MatmulPrecision::fp32);
  auto fused = [&](Problem& p) { return fused_margin_softmax_ce(p.embeddings, p.centres, p.labels, margin, options); };
  auto unfused = [&](Problem& p) {
    taxon::train::AutocastScope autocast(*device, bf16 ? taxon::train::Precision::bf16 : taxon::train::Precision::fp32);
    return reference_margin_softmax_ce(p.embeddings, p.centres, p.labels, margin);
  };
  Problem problem = make_problem(*device, B, D, C, embedding_type);
  step(problem, fused);  // warm-up: cuBLAS handles, workspace, allocator pools
  step(problem, unfused);
  const double fused_extra = extra_peak_mib(*device, [&] { step(problem, fused); }) - problem.gradient_mib;
  const double unfused_extra = extra_peak_mib(*device, [&] { step(problem, unfused); }) - problem.gradient_mib;
  double fused_s = 0, unfused_s = 0;
  for (auto _ : state) {
    const double f = timed(*device, [&] { step(problem, fused); });
    unfused_s += timed(*device, [&] { step(problem, unfused); });
    fused_s += f;
    state.SetIterationTime(f);
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["B"] = static_cast<double>(B);
  state.counters["C"] = static_cast<double>(C);
  state.counters["fused_ms"] = 1e3 * fused_s / n;
  state.counters["unfused_ms"] = 1e3 * unfused_s / n;
  state.counters["speedup"] = unfused_s / fused_s;  // target >= 3
  if (device->is_cuda()) {  // the caching allocator's statistics; nothing comparable on the CPU dry run
    state.counters["fused_extra_MiB"] = fused_extra;
    state.counters["unfused_extra_MiB"] = unfused_extra;
    state.counters["memory_ratio"] = fused_extra / unfused_extra;  // target <= 0.05
  }
}

void BM_FusedVsUnfused_fp32(benchmark::State& state) { run_fused_vs_unfused(state, at::kFloat); }
void BM_FusedVsUnfused_bf16(benchmark::State& state) { run_fused_vs_unfused(state, at::kBFloat16); }

// C = 10M: centres 20 GB and their gradient 20 GB (fp32); only the fused head's chunk buffers come on top.
void BM_FusedHead_10M(benchmark::State& state) {
  const auto device = taxon::bench::gpu_bench_device(state);
  if (!device) return;
  const bool bf16 = state.range(0) == 1;
  const std::int64_t B = gpu_or_tiny<std::int64_t>(*device, 1024, 32), D = gpu_or_tiny<std::int64_t>(*device, 512, 64),
                     C = gpu_or_tiny<std::int64_t>(*device, 10'000'000, 20'000);
  const MarginParams margin = ArcFace(64, 0.5).params();
  const auto options = FusedOptions().matmul(bf16 ? MatmulPrecision::bf16 : MatmulPrecision::fp32);
  auto fused = [&](Problem& p) { return fused_margin_softmax_ce(p.embeddings, p.centres, p.labels, margin, options); };
  Problem problem = make_problem(*device, B, D, C, bf16 ? at::kBFloat16 : at::kFloat);
  step(problem, fused);
  const double extra = extra_peak_mib(*device, [&] { step(problem, fused); }) - problem.gradient_mib;
  taxon::bench::reset_peak_memory(*device);
  for (auto _ : state) state.SetIterationTime(timed(*device, [&] { step(problem, fused); }));
  state.counters["C"] = static_cast<double>(C);
  if (device->is_cuda()) {
    state.counters["extra_MiB"] = extra;
    state.counters["peak_MiB"] = taxon::bench::allocated_mib(*device, true);
  }
}

BENCHMARK(BM_FusedVsUnfused_fp32)->Iterations(3)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FusedVsUnfused_bf16)->Iterations(3)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FusedHead_10M)->ArgName("bf16")->Arg(0)->Arg(1)->Iterations(2)->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace bench_gpu_loss
