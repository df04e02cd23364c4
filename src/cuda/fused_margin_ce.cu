// The taxon::cuda library's one nvcc translation unit: the kernels of fused_margin_ce.cuh behind the plain C++
// entry points of fused_margin_ce.hpp.
#include "taxon/cuda/fused_margin_ce.cuh"
#include "taxon/cuda/fused_margin_ce.hpp"

namespace taxon::cuda {

cudaError_t fused_ce_chunk_forward(const float* dots, std::int64_t B, std::int64_t n, std::int64_t c0,
                                   const float* inv_norm, const std::int64_t* labels,
                                   const MarginParams& p, float* row_max, float* row_sum,
                                   float* target_cos, cudaStream_t stream) {
  return launch_chunk_forward(dots, B, n, c0, inv_norm, labels, p, row_max, row_sum, target_cos, stream);
}

cudaError_t fused_ce_chunk_backward(float* dots, std::int64_t B, std::int64_t n, std::int64_t c0,
                                    const float* inv_norm, const std::int64_t* labels,
                                    const MarginParams& p, const float* lse, float scale,
                                    cudaStream_t stream) {
  return launch_chunk_backward(dots, B, n, c0, inv_norm, labels, p, lse, scale, stream);
}

cudaError_t fused_ce_normalize_backward(float* grad, const float* w, const float* inv_norm, const float* norm,
                                        std::int64_t n, std::int64_t D, cudaStream_t stream) {
  return launch_normalize_backward(grad, w, inv_norm, norm, n, D, stream);
}

}  // namespace taxon::cuda
