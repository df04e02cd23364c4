#pragma once
// Mixed precision: an RAII autocast scope (bf16 on CPU or CUDA, fp16 on CUDA) and a GradScaler with
// PyTorch's semantics (init 2^16, ×2 after growth_interval clean steps, ×0.5 and skip on inf/NaN grads).
#include "taxon/core/compat.hpp"
#include "taxon/core/error.hpp"
#include "taxon/core/options.hpp"
#include "taxon/train/state_json.hpp"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/optim/optimizer.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <string>

namespace taxon::train {

enum class Precision { fp32, bf16, fp16 };

inline const char* to_string(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::bf16: return "bf16";
    case Precision::fp16: return "fp16";
  }
  return "?";
}

inline Precision precision_from_string(const std::string& s) {
  if (s == "fp32" || s == "none" || s == "off") return Precision::fp32;
  if (s == "bf16" || s == "bfloat16") return Precision::bf16;
  if (s == "fp16" || s == "float16" || s == "half") return Precision::fp16;
  TAXON_FAIL("train.bad-option", "unknown precision '", s, "' (expected fp32, bf16 or fp16)");
}

namespace detail {
inline bool autocast_enabled(at::DeviceType d) {
#if TAXON_AUTOCAST_PER_DEVICE
  return at::autocast::is_autocast_enabled(d);
#else
  return d == at::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}
inline at::ScalarType autocast_dtype(at::DeviceType d) {
#if TAXON_AUTOCAST_PER_DEVICE
  return at::autocast::get_autocast_dtype(d);
#else
  return d == at::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
#endif
}
inline void set_autocast(at::DeviceType d, bool on, at::ScalarType dtype) {
#if TAXON_AUTOCAST_PER_DEVICE
  at::autocast::set_autocast_enabled(d, on);
  at::autocast::set_autocast_dtype(d, dtype);
#else
  if (d == at::kCUDA) {
    at::autocast::set_enabled(on);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(on);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}
}  // namespace detail

// Enables autocast for `device` with the precision's dtype for the lifetime of the object (no-op for fp32);
// restores the previous state and clears the cast cache on leaving the outermost scope, as torch.autocast does.
class AutocastScope {
 public:
  AutocastScope(at::Device device, Precision precision) {
    if (precision == Precision::fp32) return;
    device_ = device.type() == at::kCUDA ? at::kCUDA : at::kCPU;
    TAXON_CHECK(!(precision == Precision::fp16 && device_ != at::kCUDA), "train.amp-unsupported",
                "fp16 autocast needs a CUDA device (on CPU use bf16), got device ", device.str());
    active_ = true;
    prev_on_ = detail::autocast_enabled(device_);
    prev_dtype_ = detail::autocast_dtype(device_);
    detail::set_autocast(device_, true, precision == Precision::bf16 ? at::kBFloat16 : at::kHalf);
    at::autocast::increment_nesting();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;
  ~AutocastScope() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    detail::set_autocast(device_, prev_on_, prev_dtype_);
  }

 private:
  bool active_ = false;
  at::DeviceType device_ = at::kCPU;
  bool prev_on_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

struct GradScalerOptions {
  TAXON_ARG(double, init_scale) = 65536.0;
  TAXON_ARG(double, growth_factor) = 2.0;
  TAXON_ARG(double, backoff_factor) = 0.5;
  // UNICOM uses 200 (PyTorch's default is 2000).
  TAXON_ARG(int64_t, growth_interval) = 200;
};

// Dynamic loss scaling for fp16. Device-agnostic arithmetic (plain tensor ops), so its logic runs on CPU too.
class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions o = {}) : options_(o), scale_(o.init_scale()) {}

  double scale() const { return scale_; }
  at::Tensor scale(const at::Tensor& loss) const { return loss * scale_; }

  // Divides every gradient by the scale; returns true when all of them are finite (the step may proceed).
  bool unscale(torch::optim::Optimizer& optimizer) {
    if (unscaled_) return grads_finite_;
    const double inv = 1.0 / scale_;
    at::Tensor bad;
    for (auto& group : optimizer.param_groups()) {
      for (auto& p : group.params()) {
        if (!p.grad().defined()) continue;
        auto g = p.mutable_grad();
        g.mul_(inv);
        auto nonfinite = g.isfinite().logical_not().any();
        bad = bad.defined() ? bad.logical_or(nonfinite) : nonfinite;
      }
    }
    grads_finite_ = !bad.defined() || !bad.item<bool>();
    unscaled_ = true;
    return grads_finite_;
  }

  // optimizer.step() unless the gradients overflowed; then update the scale. Returns whether it stepped.
  bool step(torch::optim::Optimizer& optimizer) {
    const bool ok = unscale(optimizer);
    if (ok) optimizer.step();
    update(ok);
    return ok;
  }

  nlohmann::json state() const { return {{"scale", scale_}, {"growth_tracker", growth_tracker_}}; }
  // A missing or mistyped field is train.bad-checkpoint naming `where` (the file it came from) and the key.
  void load_state(const nlohmann::json& j, const std::string& where = "grad scaler state") {
    const auto scale = state_field<double>(j, "scale", where);
    const auto growth_tracker = state_field<int64_t>(j, "growth_tracker", where);
    TAXON_CHECK(scale > 0 && std::isfinite(scale), "train.bad-checkpoint", where, ": loss scale ", scale,
                " is not a positive finite number");
    scale_ = scale;
    growth_tracker_ = growth_tracker;
  }

 private:
  void update(bool finite) {
    unscaled_ = false;
    if (!finite) {
      scale_ *= options_.backoff_factor();
      growth_tracker_ = 0;
    } else if (++growth_tracker_ == options_.growth_interval()) {
      scale_ *= options_.growth_factor();
      growth_tracker_ = 0;
    }
  }

  GradScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0;
  bool unscaled_ = false;
  bool grads_finite_ = true;
};

}  // namespace taxon::train
