// Compile check (CI, nvcc -std=c++17 -arch=sm_90): instantiates the fused margin-softmax CE kernels and their
// launchers. Running them is covered by the [cuda] test in tests/unit/test_loss_cuda.cpp on a GPU machine.
#include "taxon/cuda/fused_margin_ce.cuh"

namespace taxon_cuda_check {

cudaError_t launch_all(float* logits, float* grad, const float* w, const float* inv_norm, const float* norm,
                       const std::int64_t* labels, float* row_max, float* row_sum, float* target_cos,
                       const float* lse, cudaStream_t stream) {
  taxon::cuda::MarginParams arcface;
  arcface.s = 64.0f;
  arcface.m2 = 0.5f;
  taxon::cuda::MarginParams combined{32.0f, 1.2f, 0.2f, 0.1f, 0.3f, true};
  cudaError_t e = taxon::cuda::launch_chunk_forward(logits, 256, 4096, 0, inv_norm, labels, arcface, row_max,
                                                    row_sum, target_cos, stream);
  if (e != cudaSuccess) return e;
  e = taxon::cuda::launch_chunk_backward(logits, 256, 4096, 0, inv_norm, labels, combined, lse, 1.0f / 256, stream);
  if (e != cudaSuccess) return e;
  return taxon::cuda::launch_normalize_backward(grad, w, inv_norm, norm, 4096, 512, stream);
}

}  // namespace taxon_cuda_check
