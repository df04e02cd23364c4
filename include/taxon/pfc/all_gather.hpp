#pragma once
// The all-gather with gradient that a class-sharded head puts in front of its loss, as upstream's AllGatherFunc
// (deepglint/unicom unicom/partial_fc.py): forward concatenates every rank's rows in rank order; backward sums the
// gradient of the gathered rows over the ranks (each rank's loss only saw its own classes) and keeps this rank's
// rows, multiplied by world_size, because the backbone's gradients are then averaged across ranks (DDP, or
// taxon's data-parallel trainer): the factor makes that average the gradient of the global mean loss
// (deepinsight/insightface issue 1483).
#include "taxon/dist/process_group.hpp"

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

namespace taxon::pfc {

namespace detail {
// Carries the process group from forward to backward through the autograd context.
struct GroupHolder : torch::CustomClassHolder {
  explicit GroupHolder(dist::ProcessGroup g) : group(std::move(g)) {}
  dist::ProcessGroup group;
};
}  // namespace detail

struct AllGatherRows : torch::autograd::Function<AllGatherRows> {
  // local [b, ...] on the group's device; b may differ per rank.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& local, dist::ProcessGroup group) {
    std::vector<std::int64_t> rows;
    at::Tensor all = group.all_gather_uneven(local, &rows);
    const std::int64_t offset = std::accumulate(rows.begin(), rows.begin() + group.rank(), std::int64_t{0});
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["rows"] = local.size(0);
    ctx->saved_data["group"] = c10::IValue::make_capsule(c10::make_intrusive<detail::GroupHolder>(std::move(group)));
    return all;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto holder = c10::static_intrusive_pointer_cast<detail::GroupHolder>(ctx->saved_data["group"].toCapsule());
    dist::ProcessGroup& group = holder->group;
    at::Tensor sum = grads[0].contiguous().clone();  // all_reduce_ works in place; the incoming grad may be shared
    group.all_reduce_(sum);
    const at::Tensor mine = sum.narrow(0, ctx->saved_data["offset"].toInt(), ctx->saved_data["rows"].toInt());
    return {mine * static_cast<double>(group.world_size()), at::Tensor()};
  }
};

// Gathered rows with upstream's gradient; the identity for a single process.
inline at::Tensor all_gather_rows(const at::Tensor& local, const dist::ProcessGroup& group) {
  if (!group.distributed()) return local;
  return AllGatherRows::apply(local, group);
}

}  // namespace taxon::pfc
