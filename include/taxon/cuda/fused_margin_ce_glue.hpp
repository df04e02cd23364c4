#pragma once
// LibTorch glue for the CUDA fused margin-softmax CE kernels; included by taxon/loss/fused.hpp only when
// TAXON_WITH_CUDA is defined (linking taxon::cuda defines it). Plain C++: the kernels themselves are compiled once,
// by nvcc, into the taxon::cuda library, so the including translation unit needs no CUDA compiler.
#include "taxon/core/error.hpp"
#include "taxon/cuda/fused_margin_ce.hpp"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

namespace taxon::cuda {

inline void check_launch(cudaError_t err, const char* what) {
  TAXON_CHECK(err == cudaSuccess, "cuda.launch-failed", what, ": ", cudaGetErrorString(err));
}

inline void chunk_forward(at::Tensor& logits, std::int64_t n, std::int64_t c0, const at::Tensor& inv_norm,
                          const at::Tensor& labels, const MarginParams& p, at::Tensor row_max, at::Tensor row_sum,
                          at::Tensor& target_cos) {
  check_launch(fused_ce_chunk_forward(logits.data_ptr<float>(), logits.size(0), n, c0, inv_norm.data_ptr<float>(),
                                      labels.data_ptr<std::int64_t>(), p, row_max.data_ptr<float>(),
                                      row_sum.data_ptr<float>(), target_cos.data_ptr<float>(),
                                      at::cuda::getCurrentCUDAStream()),
               "margin_ce_chunk_forward");
}

inline void chunk_backward(at::Tensor& logits, std::int64_t n, std::int64_t c0, const at::Tensor& inv_norm,
                           const at::Tensor& labels, const MarginParams& p, const at::Tensor& lse, float scale) {
  check_launch(fused_ce_chunk_backward(logits.data_ptr<float>(), logits.size(0), n, c0, inv_norm.data_ptr<float>(),
                                       labels.data_ptr<std::int64_t>(), p, lse.data_ptr<float>(), scale,
                                       at::cuda::getCurrentCUDAStream()),
               "margin_ce_chunk_backward");
}

inline void normalize_backward(at::Tensor& gw, const at::Tensor& wk, const at::Tensor& inv_norm,
                               const at::Tensor& norm) {
  check_launch(fused_ce_normalize_backward(gw.data_ptr<float>(), wk.data_ptr<float>(), inv_norm.data_ptr<float>(),
                                           norm.data_ptr<float>(), gw.size(0), gw.size(1),
                                           at::cuda::getCurrentCUDAStream()),
               "normalize_rows_backward");
}

}  // namespace taxon::cuda
