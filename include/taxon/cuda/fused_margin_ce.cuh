#pragma once
// CUDA kernels for the fused margin-softmax CE (plain CUDA, raw pointers, no LibTorch; C++17 for nvcc).
// The GEMMs (chunk logits, ∂L/∂E, ∂L/∂W) run in cuBLAS through the LibTorch glue; these kernels do the
// per-chunk elementwise work and row reductions so the B×C logits are never materialised:
//   forward:  raw dots (left intact) → per-row chunk max and Σexp(z − max) of the margin logits, target cosine;
//   backward: raw dots → ∂L/∂dot (recomputed logits, softmax from the saved log-sum-exp);
//   normalize_backward: ∂L/∂W_j = G_j − (G_j·w_j)·w_j/‖w_j‖² for the folded centre normalisation.
#include <cuda_runtime.h>

#include <cstdint>

#include "taxon/loss/margin_math.hpp"

namespace taxon::cuda {

using taxon::loss::MarginParams;

inline constexpr int kRowThreads = 256;

__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block-wide reduction (max or sum) for blockDim.x == kRowThreads; every thread gets the result.
template <bool IsMax>
__device__ inline float block_reduce(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = IsMax ? warp_max(v) : warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float r = (lane < kRowThreads / 32) ? shared[lane] : (IsMax ? -INFINITY : 0.0f);
  if (warp == 0) {
    r = IsMax ? warp_max(r) : warp_sum(r);
    if (lane == 0) shared[0] = r;
  }
  __syncthreads();
  r = shared[0];
  __syncthreads();
  return r;
}

__device__ inline float clamp_cos(float x) { return fminf(fmaxf(x, -1.0f), 1.0f); }

// Margin logit of column j (t = target column or −1); the target column is never filtered.
__device__ inline float chunk_logit(const float* row, std::int64_t j, std::int64_t t, const float* inv_norm,
                                    const MarginParams& p) {
  float c = clamp_cos(row[j] * inv_norm[j]);
  if (j == t) return p.s * taxon::loss::margin_target(p, c);
  if (taxon::loss::is_filtered(p, c)) c = 0.0f;
  return p.s * c;
}

// One block per row i of the [B, n] chunk; inv_norm points at the chunk's first class. The raw dots are left
// intact: backward reuses the chunks that are still resident instead of recomputing them.
template <typename T>
__global__ void margin_ce_chunk_forward(const T* __restrict__ logits, std::int64_t n, std::int64_t c0,
                                        const float* __restrict__ inv_norm, const std::int64_t* __restrict__ labels,
                                        MarginParams p, float* __restrict__ row_max, float* __restrict__ row_sum,
                                        float* __restrict__ target_cos) {
  __shared__ float shared[kRowThreads / 32];
  const std::int64_t i = blockIdx.x;
  const float* row = logits + i * n;
  const std::int64_t t = labels[i] >= 0 ? labels[i] - c0 : -1;
  if (threadIdx.x == 0 && t >= 0 && t < n) target_cos[i] = clamp_cos(row[t] * inv_norm[t]);
  float m = -INFINITY;
  for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, chunk_logit(row, j, t, inv_norm, p));
  m = block_reduce<true>(m, shared);
  float s = 0.0f;
  for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) s += __expf(chunk_logit(row, j, t, inv_norm, p) - m);
  s = block_reduce<false>(s, shared);
  if (threadIdx.x == 0) {
    row_max[i] = m;
    row_sum[i] = s;
  }
}

// Elementwise over the [B, n] chunk: raw dot → ∂L/∂dot. scale = grad_output / B; ignored rows get 0.
template <typename T>
__global__ void margin_ce_chunk_backward(float* __restrict__ logits, std::int64_t B, std::int64_t n, std::int64_t c0,
                                         const float* __restrict__ inv_norm, const std::int64_t* __restrict__ labels,
                                         MarginParams p, const float* __restrict__ lse, float scale) {
  const std::int64_t total = B * n;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t i = idx / n, j = idx - i * n;
    const std::int64_t y = labels[i];
    if (y < 0) {
      logits[idx] = 0.0f;
      continue;
    }
    const float raw = logits[idx] * inv_norm[j];
    const bool in_range = raw >= -1.0f && raw <= 1.0f;
    const float c = clamp_cos(raw);
    float g;
    if (j == y - c0) {
      const float prob = __expf(p.s * taxon::loss::margin_target(p, c) - lse[i]);
      g = in_range ? (prob - 1.0f) * scale * p.s * taxon::loss::margin_target_grad(p, c) : 0.0f;
    } else {
      g = (in_range && !taxon::loss::is_filtered(p, c)) ? __expf(p.s * c - lse[i]) * scale * p.s : 0.0f;
    }
    logits[idx] = g * inv_norm[j];
  }
}

// One block per centre row r of grad [n, D]: grad_r −= (grad_r·w_r)·inv_norm_r²·w_r (skipped when ‖w_r‖ < eps).
template <typename T>
__global__ void normalize_rows_backward(float* __restrict__ grad, const float* __restrict__ w,
                                        const float* __restrict__ inv_norm, const float* __restrict__ norm,
                                        std::int64_t D) {
  __shared__ float shared[kRowThreads / 32];
  const std::int64_t r = blockIdx.x;
  if (norm[r] < 1e-12f) return;
  float* g = grad + r * D;
  const float* x = w + r * D;
  float dot = 0.0f;
  for (std::int64_t k = threadIdx.x; k < D; k += blockDim.x) dot += g[k] * x[k];
  dot = block_reduce<false>(dot, shared);
  const float f = dot * inv_norm[r] * inv_norm[r];
  for (std::int64_t k = threadIdx.x; k < D; k += blockDim.x) g[k] -= f * x[k];
}

// Host launchers (stream-ordered; they return the launch error). Kernels are templates (float only) so the
// header can be included by several translation units without duplicate symbols.
inline cudaError_t launch_chunk_forward(const float* logits, std::int64_t B, std::int64_t n, std::int64_t c0,
                                        const float* inv_norm, const std::int64_t* labels, const MarginParams& p,
                                        float* row_max, float* row_sum, float* target_cos, cudaStream_t stream) {
  if (B == 0 || n == 0) return cudaSuccess;
  margin_ce_chunk_forward<float><<<static_cast<unsigned>(B), kRowThreads, 0, stream>>>(logits, n, c0, inv_norm, labels, p,
                                                                               row_max, row_sum, target_cos);
  return cudaGetLastError();
}

inline cudaError_t launch_chunk_backward(float* logits, std::int64_t B, std::int64_t n, std::int64_t c0,
                                         const float* inv_norm, const std::int64_t* labels, const MarginParams& p,
                                         const float* lse, float scale, cudaStream_t stream) {
  const std::int64_t total = B * n;
  if (total == 0) return cudaSuccess;
  const std::int64_t blocks = (total + kRowThreads - 1) / kRowThreads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8);
  margin_ce_chunk_backward<float><<<grid, kRowThreads, 0, stream>>>(logits, B, n, c0, inv_norm, labels, p, lse, scale);
  return cudaGetLastError();
}

inline cudaError_t launch_normalize_backward(float* grad, const float* w, const float* inv_norm, const float* norm,
                                             std::int64_t n, std::int64_t D, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  normalize_rows_backward<float><<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(grad, w, inv_norm, norm, D);
  return cudaGetLastError();
}

}  // namespace taxon::cuda
