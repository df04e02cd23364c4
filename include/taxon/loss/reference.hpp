#pragma once
// The plain LibTorch composition of margin-softmax cross-entropy (normalize, matmul, clamp, filter, margin, scale,
// log-softmax, NLL). It materialises several B×C tensors; it is the baseline for tests and benchmarks.
#include "taxon/core/normalize.hpp"
#include "taxon/loss/margin_math.hpp"
#include "taxon/loss/validate.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace taxon::loss {

// Margin logits z = s·cos [B, C] from cosines (clamped here), with the margin on each row's target column. A label
// of -1 (ignored row) or C and above (a sharded head's row whose class another rank holds) has no target here.
inline at::Tensor margin_logits(const at::Tensor& cosines, const at::Tensor& labels, const MarginParams& p) {
  at::Tensor cos = cosines.clamp(-1.0, 1.0);
  const at::Tensor here = (labels >= 0) & (labels < cosines.size(1));
  const at::Tensor y = at::where(here, labels, at::zeros_like(labels)).unsqueeze(1);
  if (p.filter > 0.0f) {
    at::Tensor keep;
    {
      at::NoGradGuard no_grad;
      const at::Tensor is_target = at::zeros_like(cos, cos.options().dtype(at::kBool)).scatter_(1, y, here.unsqueeze(1));
      keep = ((cos <= p.filter) | is_target).to(cos.scalar_type());
    }
    cos = cos * keep;
  }
  if (cos.size(1) == 0) return cos * p.s;
  const at::Tensor t = cos.gather(1, y);
  at::Tensor target;
  if (!is_angular(p)) {
    target = t - p.m3;
  } else if (p.exact) {
    target = ((at::acos(t) * p.m1 + p.m2).clamp_max(kPi)).cos() - p.m3;
  } else {
    at::Tensor delta;
    {
      at::NoGradGuard no_grad;
      delta = ((at::acos(t) * p.m1 + p.m2).clamp_max(kPi)).cos() - p.m3 - t;
    }
    target = t + delta;  // straight-through: forward value has the margin, gradient is the identity
  }
  target = at::where(here.unsqueeze(1), target, t);
  return cos.scatter(1, y, target) * p.s;
}

// Margin-softmax CE from cosine logits [B, C] (clamped here) and labels [B] (int64, -1 = ignore).
// Mean over all B rows; ignored rows add 0 to the sum and get no gradient.
inline at::Tensor margin_ce_from_cosines(const at::Tensor& cosines, const at::Tensor& labels, const MarginParams& p) {
  const auto B = cosines.size(0);
  const at::Tensor valid = labels >= 0;
  const at::Tensor y = labels.clamp_min(0).unsqueeze(1);
  const at::Tensor z = margin_logits(cosines, labels, p);
  const at::Tensor nll = -at::log_softmax(z, 1).gather(1, y).squeeze(1);
  return (nll * valid.to(nll.scalar_type())).sum() / static_cast<double>(B);
}

// Reference loss from raw embeddings [B, D] and raw class centres [C, D], with labels already checked.
inline at::Tensor reference_margin_softmax_ce(const at::Tensor& embeddings, const at::Tensor& centres,
                                              const ValidLabels& labels, const MarginParams& p) {
  const at::Tensor cos = at::mm(l2_normalize_rows(embeddings), l2_normalize_rows(centres).t());
  return margin_ce_from_cosines(cos, labels.labels, p);
}

// Reference loss from raw embeddings [B, D] and raw class centres [C, D].
inline at::Tensor reference_margin_softmax_ce(const at::Tensor& embeddings, const at::Tensor& centres,
                                              const at::Tensor& labels, const MarginParams& p) {
  const ValidLabels y{validate_inputs(embeddings, centres, labels, centres.size(0))};
  return reference_margin_softmax_ce(embeddings, centres, y, p);
}

}  // namespace taxon::loss
