#pragma once
// AdamW whose step() is ATen's fused multi-tensor kernel (at::_fused_adamw_: one launch per parameter group on
// CUDA, one vectorised loop on CPU) instead of torch::optim::AdamW's ~10 ops per parameter. LibTorch's C++ AdamW
// has no fused path (PyTorch's `fused=True` is Python-side); this is the same update with the same state
// (AdamWParamState), so checkpoints, schedules and the GradScaler treat it as a torch::optim::AdamW.
// Available from LibTorch 2.4 (TAXON_HAS_FUSED_ADAMW); taxon::train::make_adamw picks it for
// TrainerOptions::fused_adamw(true) and refuses that option on older LibTorch.
#include "taxon/core/compat.hpp"
#include "taxon/core/error.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/optim/adamw.h>

#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#if TAXON_HAS_FUSED_ADAMW
#include <ATen/ops/_fused_adamw.h>

namespace taxon::train {

class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;

  at::Tensor step(LossClosure closure = nullptr) override {
    at::NoGradGuard no_grad;
    at::Tensor loss;
    if (closure) {
      at::AutoGradMode enable_grad(true);
      loss = closure();
    }
    for (auto& group : param_groups()) {
      const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
      TAXON_CHECK(!o.amsgrad(), "train.bad-option", "fused AdamW does not implement amsgrad");
      std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
      for (auto& p : group.params()) {
        if (!p.grad().defined()) continue;
        TAXON_CHECK(!p.grad().is_sparse(), "train.bad-option", "fused AdamW does not support sparse gradients");
        auto& slot = state_[p.unsafeGetTensorImpl()];
        if (!slot) {
          auto fresh = std::make_unique<torch::optim::AdamWParamState>();
          fresh->step(0);
          fresh->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
          fresh->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
          slot = std::move(fresh);
        }
        auto& state = static_cast<torch::optim::AdamWParamState&>(*slot);
        state.step(state.step() + 1);
        params.push_back(p);
        grads.push_back(p.grad());
        exp_avgs.push_back(state.exp_avg());
        exp_avg_sqs.push_back(state.exp_avg_sq());
        steps.push_back(step_tensor(p, state.step()));
      }
      if (params.empty()) continue;
      const auto [beta1, beta2] = o.betas();
      at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, steps, o.lr(), beta1, beta2,
                        o.weight_decay(), o.eps(), /*amsgrad=*/false, /*maximize=*/false);
    }
    return loss;
  }

 private:
  // The kernel reads each parameter's step count from a float tensor on the parameter's device. Kept across steps
  // (one add on the device instead of a host-to-device copy per parameter) and rebuilt whenever the step count
  // in the optimizer state moved without it (a loaded checkpoint).
  at::Tensor step_tensor(const at::Tensor& p, std::int64_t step) {
    auto& [tensor, count] = steps_[p.unsafeGetTensorImpl()];
    if (tensor.defined() && count == step - 1 && tensor.device() == p.device()) {
      tensor.add_(1);
    } else {
      tensor = at::full({}, static_cast<double>(step), p.options().dtype(at::kFloat));
    }
    count = step;
    return tensor;
  }

  std::unordered_map<void*, std::pair<at::Tensor, std::int64_t>> steps_;
};

}  // namespace taxon::train
#endif
