#pragma once
// CPU row kernels of the fused margin-softmax CE. Written once over a GCC/Clang vector type and compiled for
// AVX-512, AVX2+FMA and baseline SSE2; the widest the CPU supports is picked at run time, so consumers need no
// -march flags and a header-only build still runs SIMD exp (std::exp in a loop never vectorises without fast-math).
// Plain C++ with no LibTorch, so an nvcc translation unit can include it (it then uses the baseline width only).
#include "taxon/core/cpu.hpp"
#include "taxon/loss/margin_math.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#if !defined(__GNUC__)
#error "taxon's fused CPU loss kernels need GCC or Clang vector extensions"
#endif

namespace taxon::loss::cpu {

using taxon::cpu::Isa;
using taxon::cpu::active_isa;

// One chunk of the fused loss as the row kernels see it: raw dot products e_i·w_j in a row-major [rows, n] block.
struct ChunkView {
  const float* inv_norm;        // [n] 1 / max(‖w_j‖, 1e-12)
  const std::int64_t* labels;   // [B] global class ids, −1 = ignored
  std::int64_t n;               // classes in this chunk
  std::int64_t c0;              // global id of the chunk's first class
  MarginParams p;
};

}  // namespace taxon::loss::cpu

// One copy of the kernel body per instruction set. Every function in a copy is compiled for its target, so wide
// vectors never cross a function boundary of a narrower ISA (no ABI change, nothing to dispatch per call).
namespace taxon::loss::cpu::baseline {
constexpr int W = 4;
#include "taxon/loss/cpu_kernels.inl"
}  // namespace taxon::loss::cpu::baseline

#if defined(TAXON_SIMD_X86_DISPATCH)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace taxon::loss::cpu::avx2 {
constexpr int W = 8;
#include "taxon/loss/cpu_kernels.inl"
}  // namespace taxon::loss::cpu::avx2
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx2,fma"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx2,fma")
#endif
namespace taxon::loss::cpu::avx512 {
constexpr int W = 16;
#include "taxon/loss/cpu_kernels.inl"
}  // namespace taxon::loss::cpu::avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

namespace taxon::loss::cpu {

#if defined(TAXON_SIMD_X86_DISPATCH)
#define TAXON_CPU_DISPATCH(kernel, ...)                 \
  switch (active_isa()) {                               \
    case Isa::avx512_vnni:                              \
    case Isa::avx512: return avx512::kernel(__VA_ARGS__); \
    case Isa::avx2: return avx2::kernel(__VA_ARGS__);     \
    default: return baseline::kernel(__VA_ARGS__);        \
  }
#else
#define TAXON_CPU_DISPATCH(kernel, ...) return baseline::kernel(__VA_ARGS__);
#endif

inline void forward_rows(const float* dots, std::int64_t r0, std::int64_t r1, const ChunkView& v, float* row_max,
                         float* row_sum, float* target_cos) {
  TAXON_CPU_DISPATCH(forward_rows, dots, r0, r1, v, row_max, row_sum, target_cos)
}

inline void backward_rows(float* dots, std::int64_t r0, std::int64_t r1, const ChunkView& v, const float* lse,
                          float scale) {
  TAXON_CPU_DISPATCH(backward_rows, dots, r0, r1, v, lse, scale)
}

inline void normalize_backward_rows(float* grad, const float* w, const float* inv_norm, const float* norm,
                                    std::int64_t r0, std::int64_t r1, std::int64_t D) {
  TAXON_CPU_DISPATCH(normalize_backward_rows, grad, w, inv_norm, norm, r0, r1, D)
}

#undef TAXON_CPU_DISPATCH

}  // namespace taxon::loss::cpu
