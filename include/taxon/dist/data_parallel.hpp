#pragma once
// Data parallelism over a ProcessGroup: the same module on every rank, each rank a slice of the batch.
//
//   dist::broadcast_module_(*backbone, group);               // once: every rank starts from rank 0's weights
//   dist::GradientAverager average(backbone->parameters(), group);
//   ... loss.backward() (every micro-batch of the step) ...
//   average();                                               // once per optimizer step, then optimizer.step()
//
// The averaging runs after the backward, in buckets of at most `bucket_bytes` in parameter order, not from gradient
// hooks during it (why: docs/distributed.md, "Data parallel training"). Sharded parameters (PartialFC's centres) are
// never given to a GradientAverager: their gradients are already this rank's own.
#include "taxon/core/error.hpp"
#include "taxon/core/options.hpp"
#include "taxon/dist/process_group.hpp"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace taxon::dist {

// A fingerprint of the names, shapes and dtypes of a module's parameters and buffers (FNV-1a, 63 bits so it fits an
// int64 tensor).
inline std::int64_t module_structure_hash(const torch::nn::Module& module) {
  std::uint64_t h = 1469598103934665603ULL;
  auto mix = [&](const std::string& s) {
    for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ULL;
    h = (h ^ 0xffu) * 1099511628211ULL;
  };
  auto add = [&](const std::string& name, const at::Tensor& t) {
    mix(name);
    for (auto d : t.sizes()) mix(std::to_string(d));
    mix(std::string(c10::toString(t.scalar_type())));
  };
  for (const auto& p : module.named_parameters(true)) add(p.key(), p.value());
  for (const auto& b : module.named_buffers(true)) add(b.key(), b.value());
  return static_cast<std::int64_t>(h >> 1);
}

// Copies rank `root`'s parameters and buffers into every rank's `module`. The modules must have the same parameter
// and buffer names and shapes on every rank; a rank that differs is dist.model-mismatch naming it, before anything
// is copied.
inline void broadcast_module_(torch::nn::Module& module, ProcessGroup& group, int root = 0) {
  if (!group.distributed()) return;
  const std::int64_t mine = module_structure_hash(module);
  const at::Tensor all = group.all_gather(at::full({1}, mine, at::kLong)).cpu();
  for (int r = 0; r < group.world_size(); ++r) {
    TAXON_CHECK(all[r].item<std::int64_t>() == all[root].item<std::int64_t>(), "dist.model-mismatch", "rank ", r,
                "'s module has other parameter/buffer names, shapes or dtypes than rank ", root,
                "'s (structure hash ", all[r].item<std::int64_t>(), " vs ", all[root].item<std::int64_t>(),
                "); every rank must build the same model");
  }
  at::NoGradGuard no_grad;
  for (auto& p : module.parameters(true)) {
    at::Tensor t = p.detach();
    group.broadcast_(t, root);
  }
  for (auto& b : module.buffers(true)) {
    at::Tensor t = b.detach();
    group.broadcast_(t, root);
  }
}

struct GradientAveragerOptions {
  // Upper bound of one all-reduce's payload; upstream wraps the backbone in DDP with bucket_cap_mb=32.
  TAXON_ARG(std::int64_t, bucket_bytes) = std::int64_t{32} << 20;
};

// Averages the gradients of `params` over the ranks of a group: sum by all-reduce, then ÷ world size. A parameter
// whose gradient is undefined on every rank stays undefined (an optimizer skips it, as in one process); one with a
// gradient on some ranks only is averaged with zeros from the others.
class GradientAverager {
 public:
  GradientAverager(std::vector<at::Tensor> params, ProcessGroup group, GradientAveragerOptions options = {})
      : params_(std::move(params)), group_(std::move(group)), options_(options) {
    TAXON_CHECK(options_.bucket_bytes() > 0, "dist.bad-option", "GradientAverager bucket_bytes must be > 0, got ",
                options_.bucket_bytes());
    for (const auto& p : params_)
      TAXON_CHECK(p.defined(), "dist.bad-option", "GradientAverager got an undefined parameter tensor");
  }

  const ProcessGroup& group() const { return group_; }
  // Number of all-reduce calls of the last average() (buckets plus the one for the gradient-presence flags).
  std::int64_t last_collectives() const { return last_collectives_; }

  void operator()() { average(); }
  void average() {
    last_collectives_ = 0;
    if (!group_.distributed() || params_.empty()) return;
    at::NoGradGuard no_grad;
    const auto device = params_.front().device();
    // Which gradients exist on any rank: decided together, so every rank packs the same buckets.
    at::Tensor present = at::zeros({static_cast<std::int64_t>(params_.size())}, at::TensorOptions(at::kFloat));
    auto* flags = present.data_ptr<float>();
    for (size_t i = 0; i < params_.size(); ++i) flags[i] = params_[i].grad().defined() ? 1.0f : 0.0f;
    present = present.to(device);
    group_.all_reduce_(present, ReduceOp::max);
    ++last_collectives_;
    present = present.cpu();
    flags = present.data_ptr<float>();
    const double inverse = 1.0 / static_cast<double>(group_.world_size());
    std::vector<size_t> bucket;
    std::int64_t bytes = 0;
    auto flush = [&] {
      if (bucket.empty()) return;
      reduce_bucket(bucket, inverse);
      ++last_collectives_;
      bucket.clear();
      bytes = 0;
    };
    for (size_t i = 0; i < params_.size(); ++i) {
      if (flags[i] == 0.0f) continue;
      const auto& p = params_[i];
      const std::int64_t size = p.numel() * static_cast<std::int64_t>(p.element_size());
      const bool fits = !bucket.empty() && params_[bucket.front()].scalar_type() == p.scalar_type() &&
                        params_[bucket.front()].device() == p.device() && bytes + size <= options_.bucket_bytes();
      if (!fits) flush();
      bucket.push_back(i);
      bytes += size;
    }
    flush();
  }

 private:
  void reduce_bucket(const std::vector<size_t>& bucket, double inverse) {
    std::int64_t total = 0;
    for (auto i : bucket) total += params_[i].numel();
    const auto& first = params_[bucket.front()];
    at::Tensor flat = at::empty({total}, first.options().requires_grad(false));
    std::int64_t offset = 0;
    for (auto i : bucket) {
      const auto& p = params_[i];
      at::Tensor slot = flat.narrow(0, offset, p.numel());
      if (p.grad().defined()) slot.copy_(p.grad().reshape({-1}));
      else slot.zero_();
      offset += p.numel();
    }
    group_.all_reduce_(flat, ReduceOp::sum);
    flat.mul_(inverse);
    offset = 0;
    for (auto i : bucket) {
      auto& p = params_[i];
      at::Tensor slot = flat.narrow(0, offset, p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(slot);
      else p.mutable_grad() = slot.clone();
      offset += p.numel();
    }
  }

  std::vector<at::Tensor> params_;
  ProcessGroup group_;
  GradientAveragerOptions options_;
  std::int64_t last_collectives_ = 0;
};

// True on every rank when `flag` is true on any rank (identity for one process): decisions one rank may take alone
// (stop, a checkpoint by wall time) that every rank must follow to stay in step.
inline bool any_rank(ProcessGroup& group, bool flag, at::Device device = at::kCPU) {
  if (!group.distributed()) return flag;
  at::Tensor t = at::full({1}, flag ? 1.0f : 0.0f, at::TensorOptions(at::kFloat)).to(device);
  group.all_reduce_(t, ReduceOp::max);
  return t.cpu().item<float>() != 0.0f;
}

}  // namespace taxon::dist
