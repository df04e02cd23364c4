#pragma once
// Plain C++ entry points of the fused margin-softmax CE kernels (defined in src/cuda/fused_margin_ce.cu, compiled
// once by nvcc into the taxon::cuda library): any C++ compiler can include this, no `__global__` or `<<<>>>` here.
// Pointers are device pointers; every call is ordered on `stream` and returns the launch error.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "taxon/loss/margin_math.hpp"

namespace taxon::cuda {

using taxon::loss::MarginParams;

// Per-row chunk max and Σexp(z − max) of the margin logits of a [B, n] chunk of raw dots (classes c0..c0+n−1),
// and the target cosine of rows whose label falls in the chunk. The dots are left intact.
cudaError_t fused_ce_chunk_forward(const float* dots, std::int64_t B, std::int64_t n, std::int64_t c0,
                                   const float* inv_norm, const std::int64_t* labels,
                                   const MarginParams& p, float* row_max, float* row_sum,
                                   float* target_cos, cudaStream_t stream);

// In place over the [B, n] chunk: raw dot → ∂L/∂dot (scale = grad_output / B; ignored rows get 0).
cudaError_t fused_ce_chunk_backward(float* dots, std::int64_t B, std::int64_t n, std::int64_t c0,
                                    const float* inv_norm, const std::int64_t* labels,
                                    const MarginParams& p, const float* lse, float scale,
                                    cudaStream_t stream);

// ∂L/∂W_r −= (∂L/∂W_r·w_r)·w_r/‖w_r‖² over n centre rows of width D (the folded centre normalisation).
cudaError_t fused_ce_normalize_backward(float* grad, const float* w, const float* inv_norm, const float* norm,
                                        std::int64_t n, std::int64_t D, cudaStream_t stream);

}  // namespace taxon::cuda
