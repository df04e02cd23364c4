#pragma once
// Batch norm whose training statistics span every rank's rows (upstream converts the UNICOM head's BatchNorm1d with
// SyncBatchNorm.convert_sync_batchnorm): a W-rank step with b rows per rank normalises as one process with W·b rows.
//
//   vit->head_batch_norm = [group](const at::Tensor& x, torch::nn::BatchNorm1dImpl& bn) mutable {
//     return taxon::dist::sync_batch_norm(x, bn, group);
//   };
//
// Mean and variance are two all-reduces (sum and count, then the sum of squared deviations: the two-pass formula
// one process uses, not E[x²] − E[x]²). Their backward is an all-reduce of the incoming gradients (a sum is its own
// adjoint), registered as a gradient hook, so autograd gives every rank its rows' exact gradient.
#include "taxon/core/error.hpp"
#include "taxon/dist/process_group.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/modules/batchnorm.h>

namespace taxon::dist {

// Sum of `t` over the ranks, differentiable: the gradient reaching `t` is the sum of every rank's gradient of the
// result. Every rank must call it, and run the backward through it, in the same order.
inline at::Tensor all_reduce_sum_differentiable(const at::Tensor& t, ProcessGroup group) {
  at::Tensor reduced = t.detach().clone();
  group.all_reduce_(reduced, ReduceOp::sum);
  if (!t.requires_grad() || !at::GradMode::is_enabled()) return reduced;
  t.register_hook([group](const at::Tensor& grad) {
    at::Tensor g = grad.clone();
    ProcessGroup handle = group;  // hooks are called const; the handle shares the group's state
    handle.all_reduce_(g, ReduceOp::sum);
    return g;
  });
  return reduced + (t - t.detach());  // the value of `reduced` exactly, the gradient of `t`
}

// `bn` applied to x [N, C] in training mode with the statistics of every rank's rows; the running statistics are
// updated as BatchNorm1d does (momentum, unbiased variance) with the global ones, identically on every rank. In
// evaluation mode, or with one process, it is bn.forward(x).
inline at::Tensor sync_batch_norm(const at::Tensor& x, torch::nn::BatchNorm1dImpl& bn, ProcessGroup& group) {
  if (!group.distributed() || !bn.is_training()) return bn.forward(x);
  const auto& o = bn.options;
  TAXON_CHECK(x.dim() == 2 && x.size(1) == o.num_features(), "dist.bad-input", "sync_batch_norm expects [N, ",
              o.num_features(), "], got ", x.sizes());
  at::Tensor count = at::full({1}, static_cast<double>(x.size(0)), x.options().requires_grad(false));
  group.all_reduce_(count, ReduceOp::sum);
  const double n = count.item<double>();
  TAXON_CHECK(n > 1, "dist.bad-input", "sync_batch_norm needs more than 1 row over all ranks, got ", n);
  const at::Tensor mean = all_reduce_sum_differentiable(x.sum(0), group) / n;
  const at::Tensor centred = x - mean;
  const at::Tensor var = all_reduce_sum_differentiable((centred * centred).sum(0), group) / n;  // biased
  at::Tensor y = centred * at::rsqrt(var + o.eps());
  if (o.affine()) y = y * bn.weight + bn.bias;
  if (o.track_running_stats()) {
    at::NoGradGuard no_grad;
    bn.num_batches_tracked.add_(1);
    const double momentum = o.momentum().value_or(1.0 / static_cast<double>(bn.num_batches_tracked.item<int64_t>()));
    bn.running_mean.mul_(1 - momentum).add_(mean.detach() * momentum);
    bn.running_var.mul_(1 - momentum).add_(var.detach() * (n / (n - 1)) * momentum);
  }
  return y;
}

}  // namespace taxon::dist
