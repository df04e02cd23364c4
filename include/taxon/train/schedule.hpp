#pragma once
// Learning-rate schedules as runtime objects: OneCycle (PyTorch OneCycleLR, incl. AdamW beta1 cycling),
// cosine with linear warmup, and constant. A schedule maps an optimizer step t to each group's lr and,
// optionally, beta1; its whole state is (kind, parameters, t, total) so it round-trips through a checkpoint.
#include "taxon/core/error.hpp"
#include "taxon/core/options.hpp"
#include "taxon/train/state_json.hpp"

#include <torch/optim/adamw.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <numbers>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace taxon::train {

// PyTorch's _annealing_cos: from `start` (pct 0) to `end` (pct 1) along half a cosine.
inline double cosine_anneal(double start, double end, double pct) {
  const double cos_out = std::cos(std::numbers::pi * pct) + 1.0;
  return end + (start - end) / 2.0 * cos_out;
}

enum class ScheduleKind { one_cycle, cosine_warmup, constant };

inline const char* to_string(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::one_cycle: return "one_cycle";
    case ScheduleKind::cosine_warmup: return "cosine_warmup";
    case ScheduleKind::constant: return "constant";
  }
  return "?";
}

struct OneCycleOptions {
  TAXON_ARG(double, pct_start) = 0.1;
  TAXON_ARG(double, div_factor) = 25.0;
  TAXON_ARG(double, final_div_factor) = 1e4;
  // OneCycleLR's cycle_momentum: drives AdamW's beta1 from max_beta1 (at the start and end) to base_beta1 (at the
  // peak lr); on with PyTorch's bounds for parity. While on, TrainerOptions::beta1 must stay unset (Trainer checks).
  TAXON_ARG(bool, cycle_momentum) = true;
  TAXON_ARG(double, base_beta1) = 0.85;
  TAXON_ARG(double, max_beta1) = 0.95;
};

struct CosineWarmupOptions {
  TAXON_ARG(int64_t, warmup_steps) = 0;
  // lr at the end = min_lr_ratio × peak lr.
  TAXON_ARG(double, min_lr_ratio) = 0.0;
};

struct ConstantOptions {
  TAXON_ARG(int64_t, warmup_steps) = 0;
};

class Schedule {
 public:
  static Schedule one_cycle(OneCycleOptions o = {}) {
    TAXON_CHECK(o.pct_start() > 0 && o.pct_start() < 1, "train.bad-option", "OneCycle pct_start must be in (0,1), got ",
                o.pct_start());
    TAXON_CHECK(o.div_factor() > 0 && o.final_div_factor() > 0, "train.bad-option",
                "OneCycle div_factor and final_div_factor must be > 0, got ", o.div_factor(), " and ",
                o.final_div_factor());
    TAXON_CHECK(o.base_beta1() >= 0 && o.base_beta1() < 1 && o.max_beta1() >= 0 && o.max_beta1() < 1,
                "train.bad-option", "OneCycle base_beta1 and max_beta1 must be in [0,1), got ", o.base_beta1(),
                " and ", o.max_beta1());
    Schedule s(ScheduleKind::one_cycle);
    s.one_cycle_ = o;
    return s;
  }
  static Schedule cosine_warmup(CosineWarmupOptions o = {}) {
    TAXON_CHECK(o.warmup_steps() >= 0 && o.min_lr_ratio() >= 0 && o.min_lr_ratio() <= 1, "train.bad-option",
                "cosine_warmup needs warmup_steps >= 0 and min_lr_ratio in [0,1], got ", o.warmup_steps(), " and ",
                o.min_lr_ratio());
    Schedule s(ScheduleKind::cosine_warmup);
    s.cosine_ = o;
    return s;
  }
  static Schedule constant(ConstantOptions o = {}) {
    TAXON_CHECK(o.warmup_steps() >= 0, "train.bad-option", "constant warmup_steps must be >= 0, got ", o.warmup_steps());
    Schedule s(ScheduleKind::constant);
    s.constant_ = o;
    return s;
  }

  ScheduleKind kind() const { return kind_; }
  // True when apply() overwrites AdamW's beta1 every step (OneCycle with cycle_momentum).
  bool cycles_beta1() const { return kind_ == ScheduleKind::one_cycle && one_cycle_.cycle_momentum(); }
  const OneCycleOptions& one_cycle_options() const { return one_cycle_; }
  int64_t step_count() const { return t_; }
  int64_t total_steps() const { return total_; }

  // Fixes the number of optimizer steps and the peak lr of each parameter group; resets t to 0.
  void start(int64_t total_steps, std::vector<double> peak_lrs) {
    TAXON_CHECK(total_steps > 0, "train.bad-option", "schedule needs total_steps > 0, got ", total_steps);
    total_ = total_steps;
    peak_lrs_ = std::move(peak_lrs);
    t_ = 0;
  }

  // lr of a group whose peak is `peak` at step t (PyTorch OneCycleLR.get_lr arithmetic, operation for operation).
  double lr_at(int64_t t, double peak) const {
    TAXON_CHECK(t >= 0 && t <= total_, "train.schedule-overrun", "schedule step ", t, " outside [0, ", total_,
                "]: the run has more optimizer steps than the schedule was built for");
    switch (kind_) {
      case ScheduleKind::one_cycle: {
        const double initial = peak / one_cycle_.div_factor();
        const double min_lr = initial / one_cycle_.final_div_factor();
        const double p1 = one_cycle_.pct_start() * static_cast<double>(total_) - 1.0;
        const double td = static_cast<double>(t);
        // p1 <= 0 (very short runs) is a ZeroDivisionError in PyTorch; here warm-up is simply skipped.
        if (p1 > 0 && td <= p1) return cosine_anneal(initial, peak, td / p1);
        return cosine_anneal(peak, min_lr, (td - p1) / (static_cast<double>(total_ - 1) - p1));
      }
      case ScheduleKind::cosine_warmup: {
        const int64_t w = cosine_.warmup_steps();
        if (t < w) return peak * static_cast<double>(t + 1) / static_cast<double>(w);
        const int64_t span = std::max<int64_t>(1, total_ - 1 - w);
        const double pct = std::min(1.0, static_cast<double>(t - w) / static_cast<double>(span));
        return cosine_anneal(peak, peak * cosine_.min_lr_ratio(), pct);
      }
      case ScheduleKind::constant: {
        const int64_t w = constant_.warmup_steps();
        if (t < w) return peak * static_cast<double>(t + 1) / static_cast<double>(w);
        return peak;
      }
    }
    return peak;
  }

  // AdamW beta1 at step t when the schedule cycles it, otherwise nullopt (betas left as configured).
  std::optional<double> beta1_at(int64_t t) const {
    if (!cycles_beta1()) return std::nullopt;
    const double p1 = one_cycle_.pct_start() * static_cast<double>(total_) - 1.0;
    const double td = static_cast<double>(t);
    if (p1 > 0 && td <= p1) return cosine_anneal(one_cycle_.max_beta1(), one_cycle_.base_beta1(), td / p1);
    return cosine_anneal(one_cycle_.base_beta1(), one_cycle_.max_beta1(),
                         (td - p1) / (static_cast<double>(total_ - 1) - p1));
  }

  double lr(size_t group) const { return lr_at(t_, peak_lrs_.at(group)); }
  std::optional<double> beta1() const { return beta1_at(t_); }

  // Writes step t's lr (and beta1) into every AdamW group; call before optimizer.step().
  void apply(torch::optim::AdamW& optimizer) const {
    auto& groups = optimizer.param_groups();
    TAXON_CHECK(groups.size() == peak_lrs_.size(), "train.schedule-groups", "schedule has ", peak_lrs_.size(),
                " peak lrs but the optimizer has ", groups.size(), " parameter groups");
    const auto b1 = beta1();
    for (size_t g = 0; g < groups.size(); ++g) {
      auto& o = static_cast<torch::optim::AdamWOptions&>(groups[g].options());
      o.lr(lr_at(t_, peak_lrs_[g]));
      if (b1) o.betas(std::make_tuple(*b1, std::get<1>(o.betas())));
    }
  }

  // Advance to the next optimizer step (PyTorch's scheduler.step()).
  void step() { ++t_; }

  nlohmann::json state() const {
    nlohmann::json j;
    j["kind"] = to_string(kind_);
    j["t"] = t_;
    j["total"] = total_;
    j["peak_lrs"] = peak_lrs_;
    if (kind_ == ScheduleKind::one_cycle) {
      j["pct_start"] = one_cycle_.pct_start();
      j["div_factor"] = one_cycle_.div_factor();
      j["final_div_factor"] = one_cycle_.final_div_factor();
      j["cycle_momentum"] = one_cycle_.cycle_momentum();
      j["base_beta1"] = one_cycle_.base_beta1();
      j["max_beta1"] = one_cycle_.max_beta1();
    } else if (kind_ == ScheduleKind::cosine_warmup) {
      j["warmup_steps"] = cosine_.warmup_steps();
      j["min_lr_ratio"] = cosine_.min_lr_ratio();
    } else {
      j["warmup_steps"] = constant_.warmup_steps();
    }
    return j;
  }

  // Restores a state written by state(); a schedule of another kind or length is an error, not a silent switch.
  // A missing or mistyped field is train.bad-checkpoint naming `where` (the file it came from) and the key.
  void load_state(const nlohmann::json& j, const std::string& where = "schedule state") {
    const auto kind = state_field<std::string>(j, "kind", where);
    TAXON_CHECK(kind == to_string(kind_), "train.resume-mismatch", "checkpoint schedule is ", kind,
                " but this run uses ", to_string(kind_));
    const auto total = state_field<int64_t>(j, "total", where);
    TAXON_CHECK(total_ == 0 || total == total_, "train.resume-mismatch", "checkpoint schedule has ", total,
                " total steps but this run has ", total_, " (epochs, batches per epoch or accumulation changed?)");
    const auto t = state_field<int64_t>(j, "t", where);
    auto peak_lrs = state_field<std::vector<double>>(j, "peak_lrs", where);
    TAXON_CHECK(total >= 0 && t >= 0 && t <= total, "train.bad-checkpoint", where, ": step t = ", t,
                " is outside [0, total = ", total, "]");
    OneCycleOptions one_cycle = one_cycle_;
    CosineWarmupOptions cosine = cosine_;
    ConstantOptions constant = constant_;
    if (kind_ == ScheduleKind::one_cycle) {
      one_cycle.pct_start(state_field<double>(j, "pct_start", where))
          .div_factor(state_field<double>(j, "div_factor", where))
          .final_div_factor(state_field<double>(j, "final_div_factor", where))
          .cycle_momentum(state_field<bool>(j, "cycle_momentum", where))
          .base_beta1(state_field<double>(j, "base_beta1", where))
          .max_beta1(state_field<double>(j, "max_beta1", where));
    } else if (kind_ == ScheduleKind::cosine_warmup) {
      cosine.warmup_steps(state_field<int64_t>(j, "warmup_steps", where))
          .min_lr_ratio(state_field<double>(j, "min_lr_ratio", where));
    } else {
      constant.warmup_steps(state_field<int64_t>(j, "warmup_steps", where));
    }
    // Every field read and checked: only now is anything replaced.
    total_ = total;
    t_ = t;
    peak_lrs_ = std::move(peak_lrs);
    one_cycle_ = one_cycle;
    cosine_ = cosine;
    constant_ = constant;
  }

 private:
  explicit Schedule(ScheduleKind k) : kind_(k) {}
  ScheduleKind kind_;
  OneCycleOptions one_cycle_;
  CosineWarmupOptions cosine_;
  ConstantOptions constant_;
  std::vector<double> peak_lrs_;
  int64_t t_ = 0;
  int64_t total_ = 0;
};

}  // namespace taxon::train
