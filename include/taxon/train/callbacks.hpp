#pragma once
// Trainer callbacks, resolved at compile time (ensmallen-style, no virtual calls): a callback is any object that
// declares which hooks it implements and has a member for each, e.g.
//
//   struct LogLoss {
//     static constexpr taxon::train::HookSet hooks{taxon::train::Hook::on_step_end};
//     template <typename T> void on_step_end(T& trainer, const taxon::train::StepReport& r) { ... }
//   };
//
//   on_train_begin(trainer)                 on_train_end(trainer)
//   on_epoch_begin(trainer, epoch)          on_epoch_end(trainer, epoch)
//   on_step_begin(trainer, step)            on_step_end(trainer, const StepReport&)
//   on_gradients(trainer)                   after backward/unscale/clip, before optimizer.step()
//   evaluate(trainer, epoch) -> Metrics     produces metrics at the end of an epoch (empty map: not due)
//   on_evaluated(trainer, const Metrics&)   after evaluation, with the merged metrics of all evaluate hooks
//   should_stop(trainer) -> bool            checked after every optimizer step and epoch
//
// Trainer::fit checks every callback when it is compiled, so no hook is silently never called: a declared hook
// without a member callable with its arguments (misspelt name, other parameters, a non-const member on a const
// callback), and a member named like a hook that is not declared, are each one static_assert naming the hook.
// C++ cannot list a class's members: the declaration is what turns a misspelt hook name into an error.
#include "taxon/io/json.hpp"
#include "taxon/core/error.hpp"
#include "taxon/core/log.hpp"
#include "taxon/core/progress.hpp"
#include "taxon/io/atomic_file.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
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

// The hooks, named as the members that implement them.
enum class Hook : std::uint32_t {
  on_train_begin,
  on_train_end,
  on_epoch_begin,
  on_epoch_end,
  on_step_begin,
  on_step_end,
  on_gradients,
  evaluate,
  on_evaluated,
  should_stop,
};
inline constexpr Hook kAllHooks[] = {Hook::on_train_begin, Hook::on_train_end,  Hook::on_epoch_begin,
                                     Hook::on_epoch_end,   Hook::on_step_begin, Hook::on_step_end,
                                     Hook::on_gradients,   Hook::evaluate,      Hook::on_evaluated,
                                     Hook::should_stop};

// The hooks a callback implements: `static constexpr HookSet hooks{Hook::on_step_end, Hook::should_stop};`.
class HookSet {
 public:
  constexpr HookSet() = default;
  constexpr HookSet(std::initializer_list<Hook> hooks) {
    for (const Hook h : hooks) insert(h);
  }
  constexpr void insert(Hook h) { bits_ |= bit(h); }
  constexpr bool contains(Hook h) const { return (bits_ & bit(h)) != 0; }
  constexpr bool empty() const { return bits_ == 0; }

 private:
  static constexpr std::uint32_t bit(Hook h) { return std::uint32_t{1} << static_cast<std::uint32_t>(h); }
  std::uint32_t bits_ = 0;
};

namespace hooks {

template <typename C>
concept declares_hooks = requires {
  { std::remove_cvref_t<C>::hooks } -> std::convertible_to<HookSet>;
};

template <typename C>
constexpr HookSet declared() {
  if constexpr (declares_hooks<C>) return HookSet(std::remove_cvref_t<C>::hooks);
  else return HookSet{};
}

// Whether C (const-qualified when the callback is passed as const) can run hook h of a trainer T.
template <typename C, typename T>
constexpr bool callable(Hook h) {
  switch (h) {
    case Hook::on_train_begin: return requires(C& c, T& t) { c.on_train_begin(t); };
    case Hook::on_train_end: return requires(C& c, T& t) { c.on_train_end(t); };
    case Hook::on_epoch_begin: return requires(C& c, T& t, int64_t e) { c.on_epoch_begin(t, e); };
    case Hook::on_epoch_end: return requires(C& c, T& t, int64_t e) { c.on_epoch_end(t, e); };
    case Hook::on_step_begin: return requires(C& c, T& t, int64_t s) { c.on_step_begin(t, s); };
    case Hook::on_step_end: return requires(C& c, T& t, const StepReport& r) { c.on_step_end(t, r); };
    case Hook::on_gradients: return requires(C& c, T& t) { c.on_gradients(t); };
    case Hook::evaluate:
      return requires(C& c, T& t, int64_t e) { { c.evaluate(t, e) } -> std::convertible_to<Metrics>; };
    case Hook::on_evaluated: return requires(C& c, T& t, const Metrics& m) { c.on_evaluated(t, m); };
    case Hook::should_stop: return requires(C& c, T& t) { { c.should_stop(t) } -> std::convertible_to<bool>; };
  }
  return false;
}

// Whether class C has a member of a hook's name, whatever its kind or signature: the name is looked up in a class
// deriving from both C and a probe with a member of that name, which is ambiguous exactly when C has one too.
// A final class cannot be derived from; for it only the declared hooks are checked.
#define TAXON_DETAIL_HOOK_NAME_PROBE(name)                   \
  struct name##_probe {                                      \
    int name;                                                \
  };                                                         \
  template <typename C>                                      \
  struct name##_mixin : C, name##_probe {};                  \
  template <typename C>                                      \
  constexpr bool has_##name() {                              \
    if constexpr (std::is_class_v<C> && !std::is_final_v<C>) \
      return !requires { &name##_mixin<C>::name; };          \
    else                                                     \
      return false;                                          \
  }
namespace names {
TAXON_DETAIL_HOOK_NAME_PROBE(on_train_begin)
TAXON_DETAIL_HOOK_NAME_PROBE(on_train_end)
TAXON_DETAIL_HOOK_NAME_PROBE(on_epoch_begin)
TAXON_DETAIL_HOOK_NAME_PROBE(on_epoch_end)
TAXON_DETAIL_HOOK_NAME_PROBE(on_step_begin)
TAXON_DETAIL_HOOK_NAME_PROBE(on_step_end)
TAXON_DETAIL_HOOK_NAME_PROBE(on_gradients)
TAXON_DETAIL_HOOK_NAME_PROBE(evaluate)
TAXON_DETAIL_HOOK_NAME_PROBE(on_evaluated)
TAXON_DETAIL_HOOK_NAME_PROBE(should_stop)
}  // namespace names
#undef TAXON_DETAIL_HOOK_NAME_PROBE

template <typename C>
constexpr bool has_member_named(Hook h) {
  using P = std::remove_cvref_t<C>;
  switch (h) {
    case Hook::on_train_begin: return names::has_on_train_begin<P>();
    case Hook::on_train_end: return names::has_on_train_end<P>();
    case Hook::on_epoch_begin: return names::has_on_epoch_begin<P>();
    case Hook::on_epoch_end: return names::has_on_epoch_end<P>();
    case Hook::on_step_begin: return names::has_on_step_begin<P>();
    case Hook::on_step_end: return names::has_on_step_end<P>();
    case Hook::on_gradients: return names::has_on_gradients<P>();
    case Hook::evaluate: return names::has_evaluate<P>();
    case Hook::on_evaluated: return names::has_on_evaluated<P>();
    case Hook::should_stop: return names::has_should_stop<P>();
  }
  return false;
}

// What is wrong with C as a callback of a trainer T; ok() when nothing.
struct CallbackCheck {
  bool declares = false;  // has `static constexpr HookSet hooks`
  HookSet not_callable;   // declared, but no member callable as that hook
  HookSet undeclared;     // a member named like a hook, not declared
  constexpr bool ok() const { return declares && not_callable.empty() && undeclared.empty(); }
};

template <typename C, typename T>
constexpr CallbackCheck check() {
  CallbackCheck out;
  out.declares = declares_hooks<C>;
  if (!out.declares) return out;  // one error for a callback without a declaration, not one per member
  const HookSet d = declared<C>();
  for (const Hook h : kAllHooks) {
    if (d.contains(h) && !callable<C, T>(h)) out.not_callable.insert(h);
    if (!d.contains(h) && has_member_named<C>(h)) out.undeclared.insert(h);
  }
  return out;
}

#define TAXON_DETAIL_REQUIRE_HOOK(name, parameters)                                                               \
  static_assert(!result.not_callable.contains(Hook::name),                                                       \
                "taxon::train callback declares Hook::" #name " but has no member " #name parameters             \
                " callable on it (misspelt name, other parameters, or a non-const member on a const callback?)"); \
  static_assert(!result.undeclared.contains(Hook::name),                                                         \
                "taxon::train callback has a member named " #name " that is not declared in its `hooks`: add "   \
                "Hook::" #name " to them, or rename the member");

// Compile-time check of one callback (C as passed to fit, const-qualified if const) for a trainer T.
template <typename C, typename T>
constexpr void require_valid_callback() {
  constexpr CallbackCheck result = check<C, T>();
  static_assert(result.declares,
                "taxon::train callback does not declare its hooks: add e.g. `static constexpr "
                "taxon::train::HookSet hooks{taxon::train::Hook::on_step_end};` (hooks{} for none)");
  TAXON_DETAIL_REQUIRE_HOOK(on_train_begin, "(trainer)")
  TAXON_DETAIL_REQUIRE_HOOK(on_train_end, "(trainer)")
  TAXON_DETAIL_REQUIRE_HOOK(on_epoch_begin, "(trainer, int64_t epoch)")
  TAXON_DETAIL_REQUIRE_HOOK(on_epoch_end, "(trainer, int64_t epoch)")
  TAXON_DETAIL_REQUIRE_HOOK(on_step_begin, "(trainer, int64_t step)")
  TAXON_DETAIL_REQUIRE_HOOK(on_step_end, "(trainer, const StepReport&)")
  TAXON_DETAIL_REQUIRE_HOOK(on_gradients, "(trainer)")
  TAXON_DETAIL_REQUIRE_HOOK(evaluate, "(trainer, int64_t epoch) -> Metrics")
  TAXON_DETAIL_REQUIRE_HOOK(on_evaluated, "(trainer, const Metrics&)")
  TAXON_DETAIL_REQUIRE_HOOK(should_stop, "(trainer) -> bool")
}
#undef TAXON_DETAIL_REQUIRE_HOOK

// Hook dispatch: a hook runs when declared and callable (require_valid_callback reports the other cases, and this
// keeps a bad callback to that one message).
template <typename C, typename T>
constexpr bool runs(Hook h) {
  return declared<C>().contains(h) && callable<C, T>(h);
}
template <typename C, typename T>
void train_begin(C& c, T& t) {
  if constexpr (runs<C, T>(Hook::on_train_begin)) c.on_train_begin(t);
}
template <typename C, typename T>
void train_end(C& c, T& t) {
  if constexpr (runs<C, T>(Hook::on_train_end)) c.on_train_end(t);
}
template <typename C, typename T>
void epoch_begin(C& c, T& t, int64_t e) {
  if constexpr (runs<C, T>(Hook::on_epoch_begin)) c.on_epoch_begin(t, e);
}
template <typename C, typename T>
void epoch_end(C& c, T& t, int64_t e) {
  if constexpr (runs<C, T>(Hook::on_epoch_end)) c.on_epoch_end(t, e);
}
template <typename C, typename T>
void step_begin(C& c, T& t, int64_t s) {
  if constexpr (runs<C, T>(Hook::on_step_begin)) c.on_step_begin(t, s);
}
template <typename C, typename T>
void step_end(C& c, T& t, const StepReport& r) {
  if constexpr (runs<C, T>(Hook::on_step_end)) c.on_step_end(t, r);
}
template <typename C, typename T>
void gradients(C& c, T& t) {
  if constexpr (runs<C, T>(Hook::on_gradients)) c.on_gradients(t);
}
template <typename C, typename T>
void evaluate(C& c, T& t, int64_t e, Metrics& merged) {
  if constexpr (runs<C, T>(Hook::evaluate)) {
    for (auto& [k, v] : Metrics(c.evaluate(t, e))) merged[k] = v;
  }
}
template <typename C, typename T>
void evaluated(C& c, T& t, const Metrics& m) {
  if constexpr (runs<C, T>(Hook::on_evaluated)) c.on_evaluated(t, m);
}
template <typename C, typename T>
bool should_stop(C& c, T& t) {
  if constexpr (runs<C, T>(Hook::should_stop)) return static_cast<bool>(c.should_stop(t));
  else return false;
}
}  // namespace hooks

// Progress bar: loss, lr, images/s and ETA through taxon::Progress (redrawn on a terminal, one summary line otherwise).
class ProgressBar {
 public:
  static constexpr HookSet hooks{Hook::on_train_begin, Hook::on_step_end, Hook::on_train_end};
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
// O_APPEND write so lines never interleave or tear. When a run starts (resumed, or again from step 0), lines of its
// context from steps after its starting step are dropped first (rewritten atomically) so the log reads like one
// uninterrupted run.
// Whether `trainer`'s process writes the run's shared files: rank 0 of a distributed run, and any single process.
template <typename T>
bool writes_run_files(const T& trainer) {
  if constexpr (requires { { trainer.rank() } -> std::convertible_to<int>; }) return trainer.rank() == 0;
  else return true;
}

class MetricsLog {
 public:
  static constexpr HookSet hooks{Hook::on_train_begin, Hook::on_step_end, Hook::on_evaluated};
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
    writer_ = writes_run_files(trainer);
    if (!writer_) return;  // one log per run: rank 0 writes it
    if (path_.has_parent_path()) io::ensure_directory(path_.parent_path());
    // Also at step 0: a run killed before its first checkpoint restarts from 0 and must not list its steps twice.
    if (io::path_exists(path_)) truncate_after(trainer.global_step());
  }
  template <typename T>
  void on_step_end(T&, const StepReport& r) {
    if (!writer_ || (r.step % every_ != 0 && r.step != r.total_steps)) return;
    nlohmann::json j = {{"event", "step"}, {"epoch", r.epoch}, {"step", r.step},       {"loss", r.loss},
                        {"lr", r.lr},       {"head_lr", r.head_lr}, {"beta1", r.beta1}, {"images", r.images},
                        {"seconds", r.seconds}};
    if (r.grad_norm >= 0) j["grad_norm"] = r.grad_norm;
    if (r.skipped) j["skipped"] = true;
    if (r.loss_scale != 1) j["loss_scale"] = r.loss_scale;
    append(j);
  }
  template <typename T>
  void on_evaluated(T& trainer, const Metrics& m) {
    if (!writer_) return;
    nlohmann::json j = {{"event", "eval"}, {"epoch", trainer.epoch()}, {"step", trainer.global_step()}};
    for (const auto& [k, v] : m) j[k] = v;
    append(j);
  }

  void append(nlohmann::json j) {
    for (const auto& [k, v] : context_.items()) j[k] = v;
    io::append_text(path_, io::dump_json(j) + "\n");
  }

 private:
  // Keeps the lines of steps <= `step`; lines of another context (another round) all stay. A torn last line (a
  // killed run) is dropped; a line whose "step" is not an integer is damage this log cannot place, and an error
  // naming the line.
  void truncate_after(int64_t step) {
    std::istringstream in(io::read_file(path_));
    std::string line, kept;
    for (int64_t number = 1; std::getline(in, line); ++number) {
      if (line.empty()) continue;
      const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) continue;
      if (j.is_object() && j.contains("step")) {
        TAXON_CHECK(j["step"].is_number_integer(), "train.bad-metrics-log", path_.string(), " line ", number,
                    ": \"step\" is ", j["step"].dump(), ", not an integer");
        if (same_context(j) && j["step"].get<int64_t>() > step) continue;
      }
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
  bool writer_ = true;
};

// Periodic evaluation: calls fn(trainer) every `every_epochs` epochs (and after the last one); the Trainer puts
// the models in eval mode under no-grad around it. fn returns the metrics (e.g. {"recall@1", 71.2}).
template <typename Fn>
class Evaluate {
 public:
  static constexpr HookSet hooks{Hook::evaluate};
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

// Checkpointing: saves a checkpoint every `every_steps` optimizer steps (0: off), at the first step boundary after
// every `every_minutes` of training since the last one (0: off; mid-epoch checkpoints of long epochs), and at the end
// of every `every_epochs` epochs (0: off), keeping the newest `keep_last` (0: all).
class Checkpointing {
 public:
  static constexpr HookSet hooks{Hook::on_train_begin, Hook::on_step_end, Hook::on_epoch_end};
  explicit Checkpointing(std::filesystem::path dir, int64_t every_steps = 0, int64_t every_epochs = 1, int keep_last = 2,
                         double every_minutes = 0)
      : dir_(std::move(dir)), every_steps_(every_steps), every_epochs_(every_epochs), keep_(keep_last),
        every_(std::chrono::duration<double>(every_minutes * 60.0)) {
    TAXON_CHECK(every_steps >= 0 && every_epochs >= 0 && every_minutes >= 0 && std::isfinite(every_minutes),
                "train.bad-option", "Checkpointing intervals must be >= 0, got every_steps ", every_steps,
                " every_epochs ", every_epochs, " every_minutes ", every_minutes);
    TAXON_CHECK(keep_last >= 0, "train.bad-option", "Checkpointing keep_last must be >= 0 (0: all), got ", keep_last);
  }
  template <typename T>
  void on_train_begin(T&) {
    last_ = std::chrono::steady_clock::now();
  }
  template <typename T>
  void on_step_end(T& trainer, const StepReport& r) {
    const bool by_steps = every_steps_ > 0 && r.step % every_steps_ == 0;
    bool by_time = every_.count() > 0 && std::chrono::steady_clock::now() - last_ >= every_;
    // Ranks' clocks differ: a checkpoint is collective, so any rank's "time is up" decides for all.
    if constexpr (requires { trainer.any_rank(true); })
      if (every_.count() > 0) by_time = trainer.any_rank(by_time);
    if (by_steps || by_time) save(trainer);
  }
  template <typename T>
  void on_epoch_end(T& trainer, int64_t epoch) {
    if (every_epochs_ > 0 && (epoch + 1) % every_epochs_ == 0) save(trainer);
  }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  template <typename T>
  void save(T& trainer) {
    trainer.save_checkpoint(dir_, keep_);
    last_ = std::chrono::steady_clock::now();
  }
  std::filesystem::path dir_;
  int64_t every_steps_, every_epochs_;
  int keep_;
  std::chrono::duration<double> every_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

// Early stop: watches one metric from the evaluations and stops after `patience` evaluations without improving
// on the best by more than `min_delta`.
class EarlyStop {
 public:
  static constexpr HookSet hooks{Hook::on_evaluated, Hook::should_stop};
  EarlyStop(std::string metric, int patience, bool maximize = true, double min_delta = 0.0)
      : metric_(std::move(metric)), patience_(patience), maximize_(maximize), min_delta_(min_delta) {
    TAXON_CHECK(patience >= 1, "train.bad-option", "EarlyStop patience must be >= 1, got ", patience);
  }
  template <typename T>
  void on_evaluated(T&, const Metrics& m) {
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
  static constexpr HookSet hooks{Hook::should_stop};
  explicit StopFlag(const volatile std::sig_atomic_t* flag) : flag_(flag) {}
  template <typename T>
  bool should_stop(T&) const { return *flag_ != 0; }

 private:
  const volatile std::sig_atomic_t* flag_;
};

}  // namespace taxon::train
