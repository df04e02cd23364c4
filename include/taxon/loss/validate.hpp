#pragma once
// Input checks of the margin-softmax losses, run once per call: the label-range and finiteness checks each read a
// value back from the device (a host sync), so a caller that checked already (PartialFC) passes its labels on as
// ValidLabels and the loss skips them.
#include "taxon/core/error.hpp"

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace taxon::loss {

inline constexpr std::int64_t kIgnoreLabel = -1;

// Labels the caller guarantees: int64 [B], each in [-1, C) for the centres they go with, for finite embeddings.
struct ValidLabels {
  at::Tensor labels;
};

// Checks embeddings [B, D], centres [C, D] and labels [B] (or upstream's [B, 1]) in [-1, num_classes); returns the
// labels as contiguous int64 [B]. `caller` names the API in the messages (e.g. "PartialFC").
inline at::Tensor validate_inputs(const at::Tensor& embeddings, const at::Tensor& centres, const at::Tensor& labels,
                                  std::int64_t num_classes, const char* caller = "margin_softmax_ce") {
  TAXON_CHECK(embeddings.defined() && embeddings.dim() == 2, "loss.dim-mismatch", caller,
              ": embeddings must be [B, D], got shape ", embeddings.defined() ? embeddings.sizes() : at::IntArrayRef{});
  TAXON_CHECK(centres.dim() == 2 && embeddings.size(1) == centres.size(1), "loss.dim-mismatch", caller,
              ": embedding dim does not match the class centres: embeddings ", embeddings.sizes(), " vs centres ",
              centres.sizes());
  TAXON_CHECK(embeddings.is_floating_point(), "loss.bad-dtype", caller, ": embeddings must be floating point, got ",
              embeddings.scalar_type());
  TAXON_CHECK(!labels.is_floating_point() && !labels.is_complex() && labels.scalar_type() != at::kBool,
              "loss.label-dtype", caller, ": labels must be an integer tensor, got ", labels.scalar_type());
  at::Tensor y = labels.reshape({-1});
  TAXON_CHECK(y.size(0) == embeddings.size(0) && (labels.dim() == 1 || (labels.dim() == 2 && labels.size(1) == 1)),
              "loss.batch-mismatch", caller, ": labels ", labels.sizes(), " do not match embeddings ",
              embeddings.sizes());
  y = y.to(at::kLong).contiguous();
  if (y.numel() > 0) {
    auto bad = (y < kIgnoreLabel) | (y >= num_classes);
    if (bad.any().item<bool>()) {
      const auto idx = bad.nonzero().select(1, 0)[0].item<std::int64_t>();
      TAXON_FAIL("loss.label-out-of-range", caller, ": label ", y[idx].item<std::int64_t>(), " at row ", idx,
                 " is outside [0, ", num_classes, ") (C = ", num_classes, "; -1 means ignore)");
    }
  }
  TAXON_CHECK(embeddings.isfinite().all().item<bool>(), "loss.non-finite-embeddings", caller, ": embeddings ",
              embeddings.sizes(), " contain NaN or Inf (first bad row ",
              (~embeddings.isfinite()).any(1).nonzero().select(1, 0)[0].item<std::int64_t>(), ")");
  return y;
}

}  // namespace taxon::loss
