#pragma once
// Input checks shared by the loss functions and PartialFC: ids are "<area>.label-out-of-range",
// "<area>.dim-mismatch", "<area>.batch-mismatch", "<area>.label-dtype", "<area>.non-finite-embeddings".
#include "taxon/core/error.hpp"

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace taxon::loss {

inline constexpr std::int64_t kIgnoreLabel = -1;

// Returns labels as a contiguous int64 [B] tensor (accepts [B] or upstream's [B, 1]).
inline at::Tensor validate_inputs(const std::string& area, const at::Tensor& embeddings, const at::Tensor& centres,
                                  const at::Tensor& labels, std::int64_t num_classes) {
  TAXON_CHECK(embeddings.defined() && embeddings.dim() == 2, (area + ".dim-mismatch").c_str(),
              "embeddings must be [B, D], got shape ", embeddings.sizes());
  TAXON_CHECK(centres.dim() == 2 && embeddings.size(1) == centres.size(1), (area + ".dim-mismatch").c_str(),
              "embedding dim does not match the class centres: embeddings ", embeddings.sizes(), " vs centres ",
              centres.sizes());
  TAXON_CHECK(embeddings.is_floating_point(), (area + ".dtype").c_str(), "embeddings must be floating point, got ",
              embeddings.scalar_type());
  TAXON_CHECK(!labels.is_floating_point() && !labels.is_complex() && labels.scalar_type() != at::kBool,
              (area + ".label-dtype").c_str(), "labels must be an integer tensor, got ", labels.scalar_type());
  at::Tensor y = labels.reshape({-1});
  TAXON_CHECK(y.size(0) == embeddings.size(0) && (labels.dim() == 1 || (labels.dim() == 2 && labels.size(1) == 1)),
              (area + ".batch-mismatch").c_str(), "labels ", labels.sizes(), " do not match embeddings ",
              embeddings.sizes());
  y = y.to(at::kLong).contiguous();
  if (y.numel() > 0) {
    auto bad = (y < kIgnoreLabel) | (y >= num_classes);
    if (bad.any().item<bool>()) {
      const auto idx = bad.nonzero().select(1, 0)[0].item<std::int64_t>();
      TAXON_FAIL((area + ".label-out-of-range").c_str(), "label ", y[idx].item<std::int64_t>(), " at row ", idx,
                 " is outside [0, ", num_classes, ") (C = ", num_classes, "; -1 means ignore)");
    }
  }
  TAXON_CHECK(embeddings.isfinite().all().item<bool>(), (area + ".non-finite-embeddings").c_str(),
              "embeddings ", embeddings.sizes(), " contain NaN or Inf (first bad row ",
              (~embeddings.isfinite()).any(1).nonzero().select(1, 0)[0].item<std::int64_t>(), ")");
  return y;
}

}  // namespace taxon::loss
