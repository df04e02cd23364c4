#pragma once
// Callbacks detected at compile time (ensmallen-style): a callback is any object, and each hook below is
// called only if the object has it, checked with a `requires` expression, so an absent hook costs nothing.
//
//   on_train_begin(trainer)                 on_train_end(trainer)
//   on_epoch_begin(trainer, epoch)          on_epoch_end(trainer, epoch)
//   on_step_begin(trainer, step)            on_step_end(trainer, const StepReport&)
//   on_gradients(trainer)                   after backward/unscale/clip, before optimizer.step()
//   evaluate(trainer, epoch) -> Metrics     produces metrics at the end of an epoch (empty map: not due)
//   on_evaluate(trainer, const Metrics&)    sees the merged metrics of all evaluate hooks
//   should_stop(trainer) -> bool            checked after every optimizer step and epoch
#include "taxon/core/error.hpp"
#include "taxon/core/log.hpp"
#include "taxon/core/progress.hpp"
#include "taxon/io/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

namespace taxon::train {

using Metrics = std::map<std::string, double>;

// What a finished optimizer step reports to on_step_end.
struct StepReport {
  int64_t epoch = 0;
  int64_t step = 0;         // optimizer steps done, this one included
  int64_t total_steps = 0;  // optimizer steps in the whole run
  double loss = 0;          // mean loss over the step's micro-batches
  double lr = 0;            // backbone group's lr used by this step
  double head_lr = 0;       // head group's lr used by this step
  double beta1 = 0;
  int64_t images = 0;       // images in this step (all micro-batches)
  double seconds = 0;       // wall time of this step
  double grad_norm = -1;    // total grad norm before clipping, -1 when clipping is off
  double loss_scale = 1;    // fp16 loss scale in effect
  bool skipped = false;     // fp16 step skipped because of inf/NaN gradients
};

namespace hooks {
template <typename C, typename T>
void train_begin(C& c, T& t) {
  if constexpr (requires { c.on_train_begin(t); }) c.on_train_begin(t);
}
template <typename C, typename T>
void train_end(C& c, T& t) {
  if constexpr (requires { c.on_train_end(t); }) c.on_train_end(t);
}
template <typename C, typename T>
void epoch_begin(C& c, T& t, int64_t e) {
  if constexpr (requires { c.on_epoch_begin(t, e); }) c.on_epoch_begin(t, e);
}
template <typename C, typename T>
void epoch_end(C& c, T& t, int64_t e) {
  if constexpr (requires { c.on_epoch_end(t, e); }) c.on_epoch_end(t, e);
}
template <typename C, typename T>
void step_begin(C& c, T& t, int64_t s) {
  if constexpr (requires { c.on_step_begin(t, s); }) c.on_step_begin(t, s);
}
template <typename C, typename T>
void step_end(C& c, T& t, const StepReport& r) {
  if constexpr (requires { c.on_step_end(t, r); }) c.on_step_end(t, r);
}
template <typename C, typename T>
void gradients(C& c, T& t) {
  if constexpr (requires { c.on_gradients(t); }) c.on_gradients(t);
}
template <typename C, typename T>
void evaluate(C& c, T& t, int64_t e, Metrics& merged) {
  if constexpr (requires { { c.evaluate(t, e) } -> std::convertible_to<Metrics>; }) {
    for (auto& [k, v] : Metrics(c.evaluate(t, e))) merged[k] = v;
  }
}
template <typename C, typename T>
void evaluated(C& c, T& t, const Metrics& m) {
  if constexpr (requires { c.on_evaluate(t, m); }) c.on_evaluate(t, m);
}
template <typename C, typename T>
bool should_stop(C& c, T& t) {
  if constexpr (requires { { c.should_stop(t) } -> std::convertible_to<bool>; }) return static_cast<bool>(c.should_stop(t));
  else return false;
}
template <typename C, typename T>
constexpr bool has_evaluate() {
  return requires(C& c, T& t, int64_t e) { { c.evaluate(t, e) } -> std::convertible_to<Metrics>; };
}
}  // namespace hooks

// Progress bar: loss, lr, images/s and ETA through taxon::Progress (redrawn on a terminal, one summary line otherwise).
class ProgressBar {
 public:
  explicit ProgressBar(std::string label = "train") : label_(std::move(label)) {}
  template <typename T>
  void on_train_begin(T& trainer) {
    progress_ = std::make_unique<Progress>(label_, trainer.total_steps(), "step");
    if (trainer.global_step() > 0) progress_->advance(0, "resumed at step " + std::to_string(trainer.global_step()));
    start_ = std::chrono::steady_clock::now();
    images_ = 0;
  }
  template <typename T>
  void on_step_end(T&, const StepReport& r) {
    images_ += r.images;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    char extra[128];
    std::snprintf(extra, sizeof extra, "loss %.4f lr %.3g %.1f img/s", r.loss, r.lr,
                  elapsed > 0 ? static_cast<double>(images_) / elapsed : 0.0);
    last_extra_ = extra;
    if (progress_) progress_->advance(1, last_extra_);
  }
  template <typename T>
  void on_train_end(T&) {
    if (progress_) progress_->finish();
    progress_.reset();
  }
  const std::string& last_line_extra() const { return last_extra_; }

 private:
  std::string label_;
  std::unique_ptr<Progress> progress_;
  std::chrono::steady_clock::time_point start_;
  int64_t images_ = 0;
  std::string last_extra_;
};

// Metrics log: one JSON object per line ("event": "step" | "eval" | "epoch"), each written with a single
// O_APPEND write so lines never interleave or tear. On a resumed run, lines from steps after the checkpoint
// are dropped first (rewritten atomically) so the log reads like one uninterrupted run.
class MetricsLog {
 public:
  // `context` fields go into every line (e.g. {"round": 2} when several Trainers append to one file); a resumed
  // run then truncates only the lines with the same context.
  explicit MetricsLog(std::filesystem::path path, int64_t every_steps = 1, nlohmann::json context = nlohmann::json::object())
      : path_(std::move(path)), every_(every_steps), context_(std::move(context)) {
    TAXON_CHECK(every_steps >= 1, "train.bad-option", "MetricsLog every_steps must be >= 1, got ", every_steps);
    TAXON_CHECK(context_.is_object(), "train.bad-option", "MetricsLog context must be a JSON object, got ", context_.dump());
  }
  const std::filesystem::path& path() const { return path_; }

  template <typename T>
  void on_train_begin(T& trainer) {
    if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path());
    if (trainer.global_step() > 0 && std::filesystem::exists(path_)) truncate_after(trainer.global_step());
  }
  template <typename T>
  void on_step_end(T&, const StepReport& r) {
    if (r.step % every_ != 0 && r.step != r.total_steps) return;
    nlohmann::json j = {{"event", "step"}, {"epoch", r.epoch}, {"step", r.step},       {"loss", r.loss},
                        {"lr", r.lr},       {"head_lr", r.head_lr}, {"beta1", r.beta1}, {"images", r.images},
                        {"seconds", r.seconds}};
    if (r.grad_norm >= 0) j["grad_norm"] = r.grad_norm;
    if (r.skipped) j["skipped"] = true;
    if (r.loss_scale != 1) j["loss_scale"] = r.loss_scale;
    append(j);
  }
  template <typename T>
  void on_evaluate(T& trainer, const Metrics& m) {
    nlohmann::json j = {{"event", "eval"}, {"epoch", trainer.epoch()}, {"step", trainer.global_step()}};
    for (const auto& [k, v] : m) j[k] = v;
    append(j);
  }

  void append(nlohmann::json j) {
    for (const auto& [k, v] : context_.items()) j[k] = v;
    const std::string line = j.dump() + "\n";
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    TAXON_CHECK(fd >= 0, "io.cannot-write", "cannot open ", path_.string(), ": ", std::strerror(errno));
    const ssize_t n = ::write(fd, line.data(), line.size());
    ::close(fd);
    TAXON_CHECK(n == static_cast<ssize_t>(line.size()), "io.cannot-write", "short write to ", path_.string());
  }

 private:
  void truncate_after(int64_t step) {
    std::istringstream in(io::read_file(path_));
    std::string line, kept;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) continue;  // a torn last line from a killed run
      if (same_context(j) && j.contains("step") && j["step"].get<int64_t>() > step) continue;
      kept += line + "\n";
    }
    io::write_text_atomically(path_, kept);
  }
  bool same_context(const nlohmann::json& line) const {
    for (const auto& [k, v] : context_.items())
      if (!line.contains(k) || line.at(k) != v) return false;
    return true;
  }
  std::filesystem::path path_;
  int64_t every_;
  nlohmann::json context_;
};

// Periodic evaluation: calls fn(trainer) every `every_epochs` epochs (and after the last one); the Trainer puts
// the models in eval mode under no-grad around it. fn returns the metrics (e.g. {"recall@1", 71.2}).
template <typename Fn>
class Evaluate {
 public:
  explicit Evaluate(Fn fn, int64_t every_epochs = 1) : fn_(std::move(fn)), every_(every_epochs) {
    TAXON_CHECK(every_epochs >= 1, "train.bad-option", "Evaluate every_epochs must be >= 1, got ", every_epochs);
  }
  template <typename T>
  Metrics evaluate(T& trainer, int64_t epoch) {
    if ((epoch + 1) % every_ != 0 && epoch + 1 != trainer.options().epochs()) return {};
    return Metrics(fn_(trainer));
  }

 private:
  Fn fn_;
  int64_t every_;
};

// Checkpointing: saves a checkpoint every `every_steps` optimizer steps (0: off) and at the end of every
// `every_epochs` epochs (0: off), keeping the newest `keep_last` (0: all).
class Checkpointing {
 public:
  explicit Checkpointing(std::filesystem::path dir, int64_t every_steps = 0, int64_t every_epochs = 1, int keep_last = 2)
      : dir_(std::move(dir)), every_steps_(every_steps), every_epochs_(every_epochs), keep_(keep_last) {
    TAXON_CHECK(every_steps >= 0 && every_epochs >= 0, "train.bad-option",
                "Checkpointing intervals must be >= 0, got every_steps ", every_steps, " every_epochs ", every_epochs);
  }
  template <typename T>
  void on_step_end(T& trainer, const StepReport& r) {
    if (every_steps_ > 0 && r.step % every_steps_ == 0) trainer.save_checkpoint(dir_, keep_);
  }
  template <typename T>
  void on_epoch_end(T& trainer, int64_t epoch) {
    if (every_epochs_ > 0 && (epoch + 1) % every_epochs_ == 0) trainer.save_checkpoint(dir_, keep_);
  }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  int64_t every_steps_, every_epochs_;
  int keep_;
};

// Early stop: watches one metric from the evaluations and stops after `patience` evaluations without improving
// on the best by more than `min_delta`.
class EarlyStop {
 public:
  EarlyStop(std::string metric, int patience, bool maximize = true, double min_delta = 0.0)
      : metric_(std::move(metric)), patience_(patience), maximize_(maximize), min_delta_(min_delta) {
    TAXON_CHECK(patience >= 1, "train.bad-option", "EarlyStop patience must be >= 1, got ", patience);
  }
  template <typename T>
  void on_evaluate(T&, const Metrics& m) {
    auto it = m.find(metric_);
    if (it == m.end()) return;
    const double v = it->second;
    const bool better = !best_ || (maximize_ ? v > *best_ + min_delta_ : v < *best_ - min_delta_);
    if (better) {
      best_ = v;
      bad_ = 0;
    } else if (++bad_ >= patience_) {
      if (!stop_) log::info("early stop: ", metric_, " has not improved on ", *best_, " for ", bad_, " evaluations");
      stop_ = true;
    }
  }
  template <typename T>
  bool should_stop(T&) const { return stop_; }
  std::optional<double> best() const { return best_; }

 private:
  std::string metric_;
  int patience_;
  bool maximize_;
  double min_delta_;
  std::optional<double> best_;
  int bad_ = 0;
  bool stop_ = false;
};

// Stops (at the next step boundary) once `flag` becomes true, e.g. set from a SIGINT handler; pair it with a
// final trainer.save_checkpoint() to make Ctrl-C resumable.
class StopFlag {
 public:
  explicit StopFlag(const volatile std::sig_atomic_t* flag) : flag_(flag) {}
  template <typename T>
  bool should_stop(T&) const { return *flag_ != 0; }

 private:
  const volatile std::sig_atomic_t* flag_;
};

}  // namespace taxon::train
