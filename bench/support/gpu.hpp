#pragma once
// Shared by the GPU benchmarks (bench/gpu_*.cpp): the device they run on, synchronisation, the CUDA caching
// allocator's peak statistics and the device's bf16 matmul rate measured in the same run.
//  - a CUDA device present (and taxon built with TAXON_WITH_CUDA): run there at the sizes the targets name;
//  - none, with TAXON_BENCH_DRY_RUN=1 (scripts/gpu-check --dry-run): the same code on the CPU at tiny sizes, so a
//    mistake surfaces before GPU time is spent; such figures mean nothing and are labelled "dry-run";
//  - none otherwise: each GPU benchmark stops with SkipWithError saying why.
#include "support/context.hpp"

#include "taxon/core/compat.hpp"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#if defined(TAXON_WITH_CUDA)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>

namespace taxon::bench {

inline bool dry_run() {
  const char* env = std::getenv("TAXON_BENCH_DRY_RUN");
  return env != nullptr && std::string(env) == "1";
}

// The device to benchmark on, or std::nullopt after SkipWithError. Labels the benchmark with the device and
// LibTorch version, so every result line says where it was measured.
inline std::optional<at::Device> gpu_bench_device(benchmark::State& state) {
  if (at::hasCUDA()) {
#if defined(TAXON_WITH_CUDA)
    state.SetLabel(std::string(at::cuda::getCurrentDeviceProperties()->name) + ", LibTorch " +
                   compat::torch_version);
    return at::Device(at::kCUDA, 0);
#else
    state.SkipWithError("taxon was built without TAXON_WITH_CUDA: configure with -DTAXON_WITH_CUDA=ON "
                        "(scripts/test-cuda) to benchmark the GPU");
    return std::nullopt;
#endif
  }
  if (dry_run()) {
    state.SetLabel(std::string("dry-run on CPU (tiny sizes, figures meaningless), LibTorch ") + compat::torch_version);
    return at::Device(at::kCPU);
  }
  state.SkipWithError("no CUDA device: GPU benchmark skipped (TAXON_BENCH_DRY_RUN=1 runs it on the CPU at tiny sizes)");
  return std::nullopt;
}

// The size a target names on the GPU, a tiny one for the CPU dry run.
template <typename T>
T gpu_or_tiny(const at::Device& device, T full, T tiny) {
  return device.is_cuda() ? full : tiny;
}

inline void synchronize(const at::Device& device) {
#if defined(TAXON_WITH_CUDA)
  if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
}

// Wall seconds of fn(), the device drained before and after.
template <typename Fn>
double timed(const at::Device& device, Fn&& fn) {
  synchronize(device);
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  synchronize(device);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The CUDA caching allocator's bytes in use and their peak since reset_peak_memory (0 on the CPU).
inline void reset_peak_memory(const at::Device& device) {
#if defined(TAXON_WITH_CUDA)
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
}
inline double allocated_mib(const at::Device& device, bool peak) {
#if defined(TAXON_WITH_CUDA)
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    const auto& aggregate = stats.allocated_bytes[0];  // StatType::AGGREGATE
    return static_cast<double>(peak ? aggregate.peak : aggregate.current) / (1 << 20);
  }
#endif
  return 0.0;
}
// Memory a step needs beyond what was allocated before it (its temporaries and outputs), in MiB.
template <typename Fn>
double extra_peak_mib(const at::Device& device, Fn&& fn) {
  synchronize(device);
  const double before = allocated_mib(device, false);
  reset_peak_memory(device);
  fn();
  synchronize(device);
  return allocated_mib(device, true) - before;
}

// bf16 matmul rate of this device in FLOP/s: n×n×n products with fp32 accumulation (cuBLAS tensor cores on CUDA),
// the mean over `reps` after 3 warm-ups: the ceiling the training-step benchmarks are judged against.
inline double bf16_matmul_rate(const at::Device& device, std::int64_t n, int reps) {
  const auto options = at::TensorOptions().device(device).dtype(at::kBFloat16);
  const at::Tensor a = at::randn({n, n}, options), b = at::randn({n, n}, options);
  at::Tensor c = at::empty({n, n}, options);
  for (int i = 0; i < 3; ++i) at::mm_out(c, a, b);
  const double seconds = timed(device, [&] {
    for (int i = 0; i < reps; ++i) at::mm_out(c, a, b);
  });
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) * reps / seconds;
}

}  // namespace taxon::bench
