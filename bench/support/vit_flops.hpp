#pragma once
// Matrix-product FLOPs (2 per multiply-add) of one ViT forward pass per image: patch embedding, qkv/out projections,
// attention scores and mixing, MLP, head. ViT-B/32 gives the usual 8.82 GFLOP. A training step is ~3x forward.
#include "taxon/backbone/vit.hpp"

namespace taxon::bench {

inline double vit_forward_flops(const taxon::backbone::VisionTransformerOptions& o) {
  const double w = static_cast<double>(o.width()), g2 = static_cast<double>(o.grid() * o.grid());
  const double n = static_cast<double>(o.tokens()), p = static_cast<double>(o.patch_size());
  const double patch = g2 * w * 3 * p * p;
  const double block = n * w * 3 * w + 2 * n * n * w + n * w * w + 2 * n * w * w * static_cast<double>(o.mlp_ratio());
  const double head = o.layout() == taxon::backbone::Layout::clip
                          ? w * static_cast<double>(o.output_dim())
                          : g2 * w * w + w * static_cast<double>(o.output_dim());
  return 2.0 * (patch + static_cast<double>(o.layers()) * block + head);
}

}  // namespace taxon::bench
