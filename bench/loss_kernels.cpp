// Fused vs reference margin-softmax CE, forward+backward, D = 512.
// Counters: logits/s; nongemm_ns_per_logit = (time − GEMM time) / (B·C), where GEMM time is the measured time of
// the GEMMs the implementation executes (reference 3; fused 3 plus the recomputed share of the chunks that its
// cache does not hold, `gemms`), timed at the same shapes on a ≤65536-class slice and scaled by C;
// extra_MiB = peak extra resident memory of one fwd+bwd.
// Peak memory method: drop gradients, malloc_trim, read VmRSS as the baseline, write "5" to /proc/self/clear_refs
// (resets VmHWM to the current RSS), run one untimed fwd+bwd, read VmHWM; extra = VmHWM − baseline − the required
// outputs (∇embeddings B·D and ∇centres C·D floats). Inputs are excluded because they exist before the baseline;
// the fused loss's reusable chunk-cache buffer is released first, so it counts.
// Allocator: default glibc (tensors > 32 MiB are fresh mmaps, so every B×C temporary pays first-touch page
// faults). TAXON_BENCH_RETAIN_HEAP=1 switches glibc to a retaining heap (M_MMAP_MAX=0, no trimming), which acts
// like a caching allocator; extra_MiB is not meaningful in that mode and is reported as −1.
#include "support/context.hpp"

#include "taxon/loss/loss.hpp"

#include <ATen/ATen.h>
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>

namespace bench_loss {

inline bool retain_heap() {
  static const bool on = [] {
    const char* env = std::getenv("TAXON_BENCH_RETAIN_HEAP");
    if (!env || std::string(env) != "1") return false;
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, -1);  // never give freed memory back: later iterations reuse touched pages
    benchmark::AddCustomContext("allocator", "glibc retaining heap (M_MMAP_MAX=0, no trim)");
    return true;
  }();
  return on;
}
inline const bool allocator_context = [] {
  if (!retain_heap()) benchmark::AddCustomContext("allocator", "glibc default");
  return true;
}();

inline double status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(key.size()));
  return 0;
}

inline bool reset_peak() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  return static_cast<bool>(out);
}

inline taxon::loss::MarginParams margin(int id) {
  using namespace taxon::loss;
  switch (id) {
    case 0: return ArcFace(64, 0.5).params();
    case 1: return CosFace(64, 0.4).params();
    case 2: return SphereFace(64, 1.35).params();
    default: return Combined(CombinedOptions(64, 1.0, 0.3, 0.2)).params();
  }
}

inline void fwd_bwd(bool fused, const at::Tensor& emb, const at::Tensor& w, const at::Tensor& y,
                    const taxon::loss::MarginParams& p) {
  at::Tensor loss = fused ? taxon::loss::fused_margin_softmax_ce(emb, w, y, p)
                          : taxon::loss::reference_margin_softmax_ce(emb, w, y, p);
  loss.backward();
}

inline void drop_grads(at::Tensor& emb, at::Tensor& w) {
  emb.mutable_grad() = at::Tensor();
  w.mutable_grad() = at::Tensor();
}

// GEMM passes over B×C×D the implementation runs: the fused backward recomputes the chunks its cache lost.
inline double gemm_passes(bool fused, std::int64_t B, std::int64_t C) {
  if (!fused) return 3.0;
  namespace d = taxon::loss::detail;
  const std::int64_t ck = d::fused_chunk_size(0, B, C), nchunks = (C + ck - 1) / ck;
  const std::int64_t cached = d::fused_slot_count(taxon::loss::FusedOptions().cache_bytes(), B, ck, nchunks);
  return 3.0 + static_cast<double>((nchunks - cached) * ck) / static_cast<double>(C);
}

// Seconds for `count` GEMMs of [B, D]·[D, C] (measured on at most 65536 classes, scaled linearly in C).
inline double gemm_seconds(std::int64_t B, std::int64_t C, std::int64_t D, double count) {
  const std::int64_t c = std::min<std::int64_t>(C, 65536);
  auto a = at::randn({B, D}), b = at::randn({c, D}), out = at::empty({B, c});
  at::mm_out(out, a, b.t());
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    at::mm_out(out, a, b.t());
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best * count * static_cast<double>(C) / static_cast<double>(c);
}

}  // namespace bench_loss

// Args: impl (0 reference, 1 fused), margin (0 arcface, 1 cosface, 2 sphereface, 3 combined), B, C.
static void BM_MarginSoftmaxCE(benchmark::State& state) {
  const bool fused = state.range(0) == 1;
  const auto p = bench_loss::margin(static_cast<int>(state.range(1)));
  const std::int64_t B = state.range(2), C = state.range(3), D = 512;
  const bool retain = bench_loss::retain_heap();
  at::manual_seed(0);
  at::Tensor emb = at::randn({B, D}).requires_grad_(true);
  at::Tensor w = (at::randn({C, D}) * 0.01).requires_grad_(true);
  at::Tensor y = at::randint(0, C, {B}, at::kLong);

  // Process warm-up on a small problem (BLAS work buffers, thread pools), so the measured run below counts only
  // what this implementation allocates.
  {
    at::Tensor e0 = emb.detach().clone().requires_grad_(true);
    at::Tensor w0 = w.detach().narrow(0, 0, std::min<std::int64_t>(C, 8192)).clone().requires_grad_(true);
    bench_loss::fwd_bwd(fused, e0, w0, y.remainder(w0.size(0)), p);
  }
  // Untimed run that measures the peak extra memory (and warms up the full size).
  double extra_mib = -1;
  bench_loss::drop_grads(emb, w);
  taxon::loss::release_fused_workspace();  // its reusable chunk cache counts as this run's extra memory
  if (!retain) malloc_trim(0);
  const double base_kib = bench_loss::status_kib("VmRSS");
  const bool peak_ok = !retain && bench_loss::reset_peak();
  bench_loss::fwd_bwd(fused, emb, w, y, p);
  if (peak_ok) {
    const double outputs_mib = static_cast<double>((B + C) * D) * 4.0 / (1 << 20);
    extra_mib = (bench_loss::status_kib("VmHWM") - base_kib) / 1024.0 - outputs_mib;
  }

  double loop_s = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    bench_loss::drop_grads(emb, w);
    bench_loss::fwd_bwd(fused, emb, w, y, p);
    benchmark::DoNotOptimize(w.grad().data_ptr());
    loop_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double logits = static_cast<double>(B) * static_cast<double>(C);
  const double passes = bench_loss::gemm_passes(fused, B, C);
  const double gemm_s = bench_loss::gemm_seconds(B, C, D, passes);
  state.counters["gemms"] = passes;
  state.counters["logits/s"] =
      benchmark::Counter(logits * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["gemm_ms"] = gemm_s * 1e3;
  const double iter_s = loop_s / static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
  state.counters["nongemm_ns_per_logit"] = (iter_s - gemm_s) / logits * 1e9;
  state.counters["extra_MiB"] = extra_mib;
  state.SetLabel(std::string(fused ? "fused" : "reference") + " B=" + std::to_string(B) + " C=" + std::to_string(C));
}

// Registers fused and reference for every margin, B ∈ {64, 256}, C ∈ {16384, 65536, 262144, 1048576}.
// The reference is not registered at C = 1048576: it needs ≈8 GB for centres, their normalised copy and
// gradients plus 8 B×C buffers, which does not fit next to other work in this machine's 24 GiB.
static void LossArgs(benchmark::internal::Benchmark* b) {
  for (int margin = 0; margin < 4; ++margin)
    for (std::int64_t B : {64, 256})
      for (std::int64_t C : {16384, 65536, 262144, 1048576})
        for (int impl : {0, 1}) {
          if (impl == 0 && C == 1048576) continue;
          b->Args({impl, margin, B, C});
        }
}
BENCHMARK(BM_MarginSoftmaxCE)->Apply(LossArgs)->ArgNames({"fused", "margin", "B", "C"})->Unit(benchmark::kMillisecond)
    ->UseRealTime();
