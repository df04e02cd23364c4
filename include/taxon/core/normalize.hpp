#pragma once
// L2 row normalisation: the one definition that embeddings, class centres, k-means centroids, clustering features
// and kNN search all use, so they agree to the bit.
#include <ATen/ATen.h>

namespace taxon {

// Each row of x [N, D] divided by its L2 norm, as PyTorch's F.normalize(x, dim=1, eps=1e-12): the norm is clamped
// to at least 1e-12, so an all-zero row stays zero (as sklearn.preprocessing.normalize leaves it) instead of NaN.
inline at::Tensor l2_normalize_rows(const at::Tensor& x) {
  return x / x.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
}

}  // namespace taxon
