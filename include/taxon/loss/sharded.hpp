#pragma once
// Margin-softmax CE over a class-sharded head, as upstream's model-parallel PartialFC_V2 (deepglint/unicom
// unicom/partial_fc.py, DistCrossEntropyFunc): every rank holds all B (gathered) rows and the centres of its own
// classes; the softmax is normalised across ranks by all-reducing the row max and the Σexp, the target logit comes
// from the rank that owns the row's class, and the loss (mean over the B rows) is the same on every rank. The
// gradients stay local: ∂L/∂z = (softmax − onehot)/B on this rank's columns, as upstream's backward.
// The collectives come in as a RowReduce, so this header needs no process group (pfc/partial_fc.hpp passes one).
#include "taxon/core/normalize.hpp"
#include "taxon/loss/fused.hpp"
#include "taxon/loss/margin_math.hpp"
#include "taxon/loss/reference.hpp"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace taxon::loss {

// Labels of a sharded head, per row: -1 = ignored everywhere (adds 0, no gradient), [0, n) = the row's class is this
// rank's centre row, n or more = the class is on another rank (this rank adds softmax terms only).
struct ShardedLabels {
  at::Tensor labels;
};

// Distributed softmax CE from margin logits z [B, n] (the reference path; the fused path merges inside its kernel
// loop). Upstream normalises exp(z − max)/Σ and takes −log(max(p_y, 1e-30)); this is the same value as lse − z_y.
struct ShardedSoftmaxCE : torch::autograd::Function<ShardedSoftmaxCE> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& z, const at::Tensor& labels,
                            const RowReduce& reduce) {
    const std::int64_t B = z.size(0), n = z.size(1);
    at::Tensor m = n > 0 ? std::get<0>(z.max(1)) : at::full({B}, -std::numeric_limits<float>::infinity(), z.options());
    if (reduce) reduce(m, /*max=*/true);
    const at::Tensor e = at::exp(z - m.unsqueeze(1));
    at::Tensor sum = e.sum(1);
    if (reduce) reduce(sum, /*max=*/false);
    const at::Tensor here = (labels >= 0) & (labels < n);
    const at::Tensor y = at::where(here, labels, at::zeros_like(labels)).unsqueeze(1);
    at::Tensor target = n > 0 ? at::where(here, z.gather(1, y).squeeze(1), at::zeros({B}, z.options()))
                              : at::zeros({B}, z.options());
    if (reduce) reduce(target, /*max=*/false);
    const at::Tensor valid = (labels >= 0).to(z.scalar_type());
    const at::Tensor lse = m + at::log(sum);
    ctx->save_for_backward({e / sum.unsqueeze(1), labels});
    return ((lse - target) * valid).sum() / static_cast<double>(std::max<std::int64_t>(B, 1));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& prob = saved[0];
    const at::Tensor& labels = saved[1];
    const std::int64_t B = prob.size(0), n = prob.size(1);
    const at::Tensor valid = (labels >= 0).to(prob.scalar_type()).unsqueeze(1);
    at::Tensor grad = prob * valid;
    if (n > 0) {
      const at::Tensor here = (labels >= 0) & (labels < n);
      const at::Tensor y = at::where(here, labels, at::zeros_like(labels)).unsqueeze(1);
      grad.scatter_add_(1, y, -here.to(prob.scalar_type()).unsqueeze(1));
    }
    grad.mul_(grads[0] / static_cast<double>(std::max<std::int64_t>(B, 1)));
    return {grad, at::Tensor(), at::Tensor()};
  }
};

// The loss of one rank of a sharded head: embeddings [B, D] are all B rows (gathered), centres [n, D] this rank's
// (sampled) class rows. Same value on every rank; gradients for the embeddings (this rank's share, to be summed
// across ranks) and for this rank's centres.
inline at::Tensor sharded_margin_softmax_ce(const at::Tensor& embeddings, const at::Tensor& centres,
                                            const ShardedLabels& labels, const MarginParams& p, Impl impl,
                                            const FusedOptions& options, const RowReduce& reduce) {
  if (impl == Impl::fused) return fused_margin_softmax_ce(embeddings, centres, ValidLabels{labels.labels}, p, options, reduce);
  const at::Tensor cos = at::mm(l2_normalize_rows(embeddings), l2_normalize_rows(centres).t());
  return ShardedSoftmaxCE::apply(margin_logits(cos, labels.labels, p), labels.labels, reduce);
}

}  // namespace taxon::loss
