#pragma once
// Trainer<Backbone, Head>: the UNICOM fine-tuning loop made generic, correct and resumable.
//
//   backbone → embeddings → head(embeddings, labels) → loss → backward → AdamW(two groups) + schedule
//
// Differences from upstream deepglint/unicom unicom/retrieval.py, on purpose:
// - Gradient accumulation: upstream steps when `global_step % gradient_acc == 0` *before* incrementing (so the
//   first step follows a single micro-batch) and never divides the loss. Here the optimizer steps after every
//   complete group of `accumulation` micro-batches, each micro-batch loss divided by `accumulation`, so
//   2 micro-batches of B/2 give the gradient of one batch of B. A partial group at the end of an epoch steps with
//   its gradient rescaled to the mean over the micro-batches it had.
// - The schedule advances once per optimizer step (upstream: per micro-batch) and is built for exactly the number
//   of optimizer steps the run makes (upstream's `N // bs + 1` never reaches the final lr).
//
// Usage: examples/00_minimal/main.cpp is a complete program (ViT backbone, ArcFace PartialFC head, Loader,
// OneCycle, checkpoints, resume) that builds against the installed package.
//
// On a GPU: TrainerOptions().device(taxon::parse_device("cuda").device).precision(Precision::bf16), a loader with
// pin_memory(true) whose transform ends in to_chw(), and .device_transform(data::normalize_on_device(mean, std)):
// model, head, optimizer state and batches then live on the GPU, uint8 batches are copied asynchronously and
// normalised there. A checkpoint written on a GPU resumes on the CPU and the other way round.
#include "taxon/backbone/concepts.hpp"
#include "taxon/core/device.hpp"
#include "taxon/core/error.hpp"
#include "taxon/core/log.hpp"
#include "taxon/core/options.hpp"
#include "taxon/core/seed.hpp"
#include "taxon/dist/data_parallel.hpp"
#include "taxon/dist/process_group.hpp"
#include "taxon/dist/sync_batch_norm.hpp"
#include "taxon/io/atomic_file.hpp"
#include "taxon/io/npy.hpp"
#include "taxon/io/safetensors.hpp"
#include "taxon/pfc/concepts.hpp"
#include "taxon/train/amp.hpp"
#include "taxon/train/callbacks.hpp"
#include "taxon/train/checkpoint.hpp"
#include "taxon/train/fused_adamw.hpp"
#include "taxon/train/schedule.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <concepts>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace taxon::train {

// Anything with `.images` and `.labels` tensors, e.g. taxon::data::Batch. labels: [B] or [B,R] (R label columns:
// cluster pseudo-labels and/or metadata ranks; TrainerOptions::label_column picks one).
template <typename T>
concept TrainBatch = requires(const T& b) {
  { b.images } -> std::convertible_to<at::Tensor>;
  { b.labels } -> std::convertible_to<at::Tensor>;
};

// PyTorch's AdamW default beta1, used when TrainerOptions::beta1 is unset.
inline constexpr double kAdamWBeta1 = 0.9;

struct TrainerOptions {
  TAXON_ARG(int64_t, epochs) = 1;
  // Peak lr of the backbone group; the head group gets lr × lr_pfc_weight (retrieval.py defaults).
  TAXON_ARG(double, lr) = 1e-4;
  TAXON_ARG(double, lr_pfc_weight) = 5.0;
  // AdamW; weight decay applies to every parameter, norms, biases and the head's centres included, as upstream.
  TAXON_ARG(double, weight_decay) = 0.0;
  // AdamW's beta1; unset = PyTorch's 0.9. A schedule that cycles beta1 (OneCycle's cycle_momentum, on by default as
  // in PyTorch) sets it every step, so an explicit beta1 together with such a schedule is rejected, not ignored.
  TAXON_ARG(std::optional<double>, beta1);
  TAXON_ARG(double, beta2) = 0.999;
  TAXON_ARG(double, adam_eps) = 1e-8;
  // AdamW as ATen's fused multi-tensor kernel (taxon::train::FusedAdamW, LibTorch >= 2.4); same update and state.
  TAXON_ARG(bool, fused_adamw) = false;
  // Micro-batches per optimizer step.
  TAXON_ARG(int64_t, accumulation) = 1;
  // Max total L2 norm of all gradients (backbone and head); 0 = no clipping (upstream has none).
  TAXON_ARG(double, clip_grad_norm) = 0.0;
  TAXON_ARG(Precision, precision) = Precision::fp32;
  TAXON_ARG(GradScalerOptions, grad_scaler) = {};
  // Which column of [B,R] labels is the training target: the pseudo-label (cluster) column for UNICOM, or a
  // metadata rank column (e.g. species) for supervised ArcFace/CosFace training. Must be 0 for [B] labels.
  TAXON_ARG(int64_t, label_column) = 0;
  TAXON_ARG(std::string, label_name) = "cluster";
  // Batches per epoch; 0 = take it from the batch range's size (the range must then be sized).
  TAXON_ARG(int64_t, steps_per_epoch) = 0;
  // Seeds LibTorch's default generators when a fresh (not resumed) run starts.
  TAXON_ARG(uint64_t, seed) = 0;
  // Where backbone, head, optimizer state and batches live; unset: the device of the backbone's parameters. The
  // constructor moves backbone and head there.
  TAXON_ARG(std::optional<at::Device>, device);
  // Applied to each batch's images once on the device, e.g. data::normalize_on_device(mean, std) for uint8
  // to_chw() batches; empty: the images go to the backbone as they are.
  TAXON_ARG(DeviceImageStep, device_transform);
  // The ranks training this model together (docs/distributed.md, "Data parallel training"): the backbone starts
  // from rank 0's weights and its gradients are averaged every optimizer step; the head shards itself. Every rank
  // calls fit(), save_checkpoint(), resume() and save_outputs() alike: they communicate.
  TAXON_ARG(dist::ProcessGroup, process_group) = dist::ProcessGroup::single();
  // Bucket size of the gradient all-reduce.
  TAXON_ARG(dist::GradientAveragerOptions, gradient_averaging) = {};
  // In a distributed run, the backbone's head batch norms (a taxon ViT's feature.1/feature.3) normalise with the
  // statistics of the global batch, as upstream's SyncBatchNorm; false: each rank's own rows.
  TAXON_ARG(bool, sync_batch_norm) = true;

 public:
  void validate() const {
    TAXON_CHECK(epochs_ >= 1, "train.bad-option", "epochs must be >= 1, got ", epochs_);
    TAXON_CHECK(lr_ > 0 && std::isfinite(lr_), "train.bad-option", "lr must be > 0, got ", lr_);
    TAXON_CHECK(lr_pfc_weight_ > 0, "train.bad-option", "lr_pfc_weight must be > 0, got ", lr_pfc_weight_);
    TAXON_CHECK(weight_decay_ >= 0, "train.bad-option", "weight_decay must be >= 0, got ", weight_decay_);
    TAXON_CHECK(beta1_.value_or(kAdamWBeta1) >= 0 && beta1_.value_or(kAdamWBeta1) < 1 && beta2_ >= 0 && beta2_ < 1,
                "train.bad-option", "AdamW betas must be in [0,1), got (", beta1_.value_or(kAdamWBeta1), ", ", beta2_,
                ")");
    TAXON_CHECK(adam_eps_ > 0, "train.bad-option", "adam_eps must be > 0, got ", adam_eps_);
    TAXON_CHECK(accumulation_ >= 1, "train.bad-option", "accumulation must be >= 1, got ", accumulation_);
    TAXON_CHECK(clip_grad_norm_ >= 0, "train.bad-option", "clip_grad_norm must be >= 0 (0 = off), got ",
                clip_grad_norm_);
    TAXON_CHECK(label_column_ >= 0, "train.bad-option", "label_column must be >= 0, got ", label_column_);
    TAXON_CHECK(steps_per_epoch_ >= 0, "train.bad-option", "steps_per_epoch must be >= 0, got ", steps_per_epoch_);
    TAXON_CHECK(grad_scaler_.init_scale() > 0 && grad_scaler_.growth_interval() >= 1, "train.bad-option",
                "grad_scaler needs init_scale > 0 and growth_interval >= 1");
  }

  nlohmann::json to_json() const {
    return {{"epochs", epochs_},
            {"lr", lr_},
            {"lr_pfc_weight", lr_pfc_weight_},
            {"weight_decay", weight_decay_},
            {"beta1", beta1_ ? nlohmann::json(*beta1_) : nlohmann::json(nullptr)},
            {"beta2", beta2_},
            {"adam_eps", adam_eps_},
            {"fused_adamw", fused_adamw_},
            {"accumulation", accumulation_},
            {"clip_grad_norm", clip_grad_norm_},
            {"precision", to_string(precision_)},
            {"label_column", label_column_},
            {"label_name", label_name_},
            {"steps_per_epoch", steps_per_epoch_},
            {"seed", seed_},
            {"world_size", process_group_.world_size()}};
  }
};

// AdamW with UNICOM's two groups: [backbone @ lr] + [head @ lr × lr_pfc_weight].
template <typename B, typename H>
std::unique_ptr<torch::optim::AdamW> make_adamw(B& backbone, H& head, const TrainerOptions& o) {
  const auto betas = std::make_tuple(o.beta1().value_or(kAdamWBeta1), o.beta2());
  auto group_options = [&](double lr) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(lr).betas(betas).eps(o.adam_eps()).weight_decay(o.weight_decay()));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(backbone->parameters(), group_options(o.lr()));
  groups.emplace_back(head->parameters(), group_options(o.lr() * o.lr_pfc_weight()));
#if TAXON_HAS_FUSED_ADAMW
  if (o.fused_adamw()) return std::make_unique<FusedAdamW>(std::move(groups), *group_options(o.lr()));
#else
  TAXON_CHECK(!o.fused_adamw(), "train.bad-option", "fused_adamw needs LibTorch >= 2.4 (at::_fused_adamw_), this is ",
              compat::torch_version);
#endif
  return std::make_unique<torch::optim::AdamW>(std::move(groups), *group_options(o.lr()));
}

struct TrainSummary {
  int64_t steps = 0;       // optimizer steps done in this fit() call
  int64_t global_step = 0; // optimizer steps done in total
  int64_t epoch = 0;       // epochs completed
  double last_loss = 0;
  bool stopped_early = false;
};

template <typename B, typename H>
class Trainer {
  static_assert(Backbone<B>, "taxon::train::Trainer: the first template argument must satisfy taxon::Backbone "
                             "(a module holder with forward(images [B,3,H,W]) -> embeddings [B,D])");
  static_assert(Head<H>, "taxon::train::Trainer: the second template argument must satisfy taxon::Head "
                         "(a module holder with forward(embeddings, labels) -> loss, centroids(), num_classes())");

 public:
  Trainer(B backbone, H head, TrainerOptions options, Schedule schedule = Schedule::one_cycle())
      : backbone_(std::move(backbone)), head_(std::move(head)), options_(std::move(options)),
        schedule_(std::move(schedule)), scaler_(options_.grad_scaler()) {
    options_.validate();
    if (options_.beta1() && schedule_.cycles_beta1()) {
      const auto& cycle = schedule_.one_cycle_options();
      TAXON_FAIL("train.bad-option", "TrainerOptions::beta1 = ", *options_.beta1(),
                 " would have no effect: OneCycleOptions::cycle_momentum (on by default, as in PyTorch's OneCycleLR) "
                 "sets AdamW's beta1 every step, from max_beta1 ", cycle.max_beta1(), " to base_beta1 ",
                 cycle.base_beta1(), " and back. For a fixed beta1 use OneCycleOptions().cycle_momentum(false); to "
                 "change the cycle set base_beta1/max_beta1 and leave beta1 unset.");
    }
    for (const auto& p : backbone_->parameters()) {
      device_ = p.device();
      break;
    }
    if (options_.device()) device_ = *options_.device();
    require_usable(device_);
    place_on(*backbone_, device_);
    place_on(*head_, device_);
    group_ = options_.process_group();
    if constexpr (requires { { head_->options().world_size() } -> std::convertible_to<int64_t>; }) {
      TAXON_CHECK(head_->options().world_size() == group_.world_size() &&
                      head_->options().rank() == group_.rank(),
                  "train.bad-option", "the head is sharded for rank ", head_->options().rank(), " of ",
                  head_->options().world_size(), " but the trainer's process group is rank ", group_.rank(), " of ",
                  group_.world_size());
    }
    dist::broadcast_module_(*backbone_, group_);  // every rank starts from rank 0's backbone
    if constexpr (requires { backbone_->head_batch_norm; }) {
      if (group_.distributed() && options_.sync_batch_norm())
        backbone_->head_batch_norm = [group = group_](const at::Tensor& x, torch::nn::BatchNorm1dImpl& bn) mutable {
          return dist::sync_batch_norm(x, bn, group);
        };
    }
    averager_.emplace(backbone_->parameters(), group_, options_.gradient_averaging());
    optimizer_ = make_adamw(backbone_, head_, options_);
    if (options_.precision() == Precision::fp16) {
      TAXON_CHECK(device_.is_cuda(), "train.amp-unsupported",
                  "precision fp16 (with loss scaling) needs the backbone on a CUDA device; it is on ", device_.str(),
                  " (use bf16 on CPU)");
    }
  }

  // ---- running ----------------------------------------------------------------------------------------------

  // Trains until options().epochs() are done or a callback asks to stop. `source` is either a range of batches
  // (reused every epoch), a callable `source(epoch)` returning the epoch's range, or `source(epoch, skip)`
  // returning it with the first `skip` batches left out (resume without decoding them). The epoch's batch order
  // must depend only on the epoch (e.g. derive_seed(seed, {epoch})) for resume to be exact.
  template <typename Source, typename... Callbacks>
  TrainSummary fit(Source&& source, Callbacks&&... callbacks) {
    (hooks::require_valid_callback<std::remove_reference_t<Callbacks>, Trainer>(), ...);
    steps_per_epoch_ = options_.steps_per_epoch() > 0 ? options_.steps_per_epoch() : infer_steps(source);
    const int64_t total = total_optimizer_steps();
    if (!started_) {
      schedule_.start(total, {options_.lr(), options_.lr() * options_.lr_pfc_weight()});
      seed_everything(rank_seed());
      started_ = true;
    } else {  // resumed from a checkpoint, or a second fit() after a stop: continue from the current state
      TAXON_CHECK(schedule_.total_steps() == total, "train.resume-mismatch", "the schedule was built for ",
                  schedule_.total_steps(), " optimizer steps but this run has ", total, " (epochs ", options_.epochs(),
                  " × ceil(", steps_per_epoch_, " batches / accumulation ", options_.accumulation(), "))");
    }
    backbone_->train(true);
    head_->train(true);
    stop_ = false;
    TrainSummary summary;
    const int64_t start_step = global_step_;
    (hooks::train_begin(callbacks, *this), ...);
    while (epoch_ < options_.epochs() && !stop_) {
      if (batch_in_epoch_ == 0) (hooks::epoch_begin(callbacks, *this, epoch_), ...);
      run_epoch(source, callbacks...);
      if (stop_ && batch_in_epoch_ != 0) break;  // stopped mid-epoch: resumable from here
      end_epoch(callbacks...);
    }
    (hooks::train_end(callbacks, *this), ...);
    summary.steps = global_step_ - start_step;
    summary.global_step = global_step_;
    summary.epoch = epoch_;
    summary.last_loss = last_loss_;
    summary.stopped_early = stop_ && epoch_ < options_.epochs();
    return summary;
  }

  void request_stop() { stop_ = true; }

  // ---- ranks ------------------------------------------------------------------------------------------------

  const dist::ProcessGroup& process_group() const { return group_; }
  int rank() const { return group_.rank(); }
  int world_size() const { return group_.world_size(); }
  // `flag` from any rank, on every rank (collective when distributed): for callbacks deciding on local facts such as
  // the wall clock.
  bool any_rank(bool flag) { return dist::any_rank(group_, flag, device_); }
  // What this rank seeds LibTorch's generators with: the seed on rank 0 (so one process is unchanged), an
  // independent stream on every other rank (dropout masks differ across ranks as across the rows of one batch).
  uint64_t rank_seed() const {
    return group_.rank() == 0 ? options_.seed()
                              : derive_seed(options_.seed(), {0x52414e4bULL /* "RANK" */, static_cast<uint64_t>(group_.rank())});
  }

  // ---- checkpoints ------------------------------------------------------------------------------------------

  // Saves a checkpoint of this step under `root` (layout and atomicity: TrainingCheckpoint) and keeps the newest
  // `keep_last` (0: all). Call at a step boundary (any callback hook).
  std::filesystem::path save_checkpoint(const std::filesystem::path& root, int keep_last = 0) {
    TAXON_CHECK(micro_ == 0, "train.checkpoint-mid-step",
                "save_checkpoint called in the middle of an accumulation group (", micro_, " of ",
                options_.accumulation(), " micro-batches); call it from a step or epoch hook");
    const CheckpointParts parts = checkpoint_parts();
    if (!group_.distributed()) {
      last_checkpoint_ = TrainingCheckpoint::save(root, global_step_, parts, rng_states(), state_json(), keep_last);
      return *last_checkpoint_;
    }
    // Rank 0 writes once, with every other rank's own state gathered from it.
    const std::vector<RankFiles> others = gather_rank_files(parts);
    if (group_.rank() == 0)
      last_checkpoint_ = TrainingCheckpoint::save(root, global_step_, parts, rng_states(), state_json(), keep_last, others);
    else
      last_checkpoint_ = root / TrainingCheckpoint::directory_name(global_step_);
    group_.barrier();  // every rank returns once the checkpoint is complete
    return *last_checkpoint_;
  }

  // Loads `path` (a checkpoint directory, or a root whose `latest` names one). Returns false when `path` holds
  // no checkpoint yet (a fresh run), so `trainer.resume(dir); trainer.fit(...)` works for both cases. Everything
  // is read and checked before the trainer changes; a damaged file is train.bad-checkpoint naming it.
  bool resume(const std::filesystem::path& path) {
    const auto checkpoint = TrainingCheckpoint::open(path);
    if (!checkpoint) return false;
    const auto& state = checkpoint->state();
    const std::string where = checkpoint->state_file().string();
    const auto& saved = state_value(state, "options", where);
    const auto current = options_.to_json();
    for (const char* key : {"accumulation", "label_column"}) {
      const auto value = state_field<int64_t>(saved, key, where + " 'options'");
      TAXON_CHECK(value == current.at(key).get<int64_t>(), "train.resume-mismatch", "checkpoint ",
                  checkpoint->dir().string(), " was trained with ", key, "=", value, " but this run has ",
                  current.at(key).dump());
    }
    const auto epoch = state_field<int64_t>(state, "epoch", where);
    const auto batch_in_epoch = state_field<int64_t>(state, "batch_in_epoch", where);
    const auto global_step = state_field<int64_t>(state, "global_step", where);
    TAXON_CHECK(epoch >= 0 && batch_in_epoch >= 0 && global_step >= 0, "train.bad-checkpoint", where,
                ": negative epoch, batch_in_epoch or global_step");
    Schedule schedule = schedule_;
    schedule.load_state(state_value(state, "schedule", where), where + " 'schedule'");
    GradScaler scaler = scaler_;
    scaler.load_state(state_value(state, "scaler", where), where + " 'scaler'");
    // Informational fields, read leniently (a null last_loss is what JSON makes of a NaN).
    const auto& last_loss_json = state.contains("last_loss") ? state["last_loss"] : nlohmann::json();
    const auto& threads_json = state.contains("threads") ? state["threads"] : nlohmann::json();
    const double last_loss = last_loss_json.is_number() ? last_loss_json.get<double>() : 0.0;
    const int threads = threads_json.is_number_integer() ? threads_json.get<int>() : 0;
    TAXON_CHECK(checkpoint->ranks() == group_.world_size(), "train.resume-mismatch", "checkpoint ",
                checkpoint->dir().string(), " was written by ", checkpoint->ranks(), " rank(s) but this run has ",
                group_.world_size(), "; resume on as many ranks (the exports model.safetensors and centroids.npy load "
                "anywhere)");
    const GeneratorStates generators = checkpoint->generators(group_.rank());

    checkpoint->restore(checkpoint_parts(), device_, group_.rank());
    set_rng_states(generators, checkpoint->dir());
    schedule_ = std::move(schedule);
    scaler_ = std::move(scaler);
    epoch_ = epoch;
    batch_in_epoch_ = batch_in_epoch;
    global_step_ = global_step;
    last_loss_ = last_loss;
    if (state.contains("config")) config_ = state.at("config");
    last_checkpoint_ = checkpoint->dir();
    started_ = true;
    if (threads != at::get_num_threads()) {
      log::warn("resuming with ", at::get_num_threads(), " threads; the checkpoint was written with ", threads,
                " (results will not be bit-identical to an uninterrupted run)");
    }
    log::info("resumed from ", checkpoint->dir().string(), " at epoch ", epoch_, ", batch ", batch_in_epoch_,
              ", step ", global_step_);
    return true;
  }

  // Final outputs as the seeds produce them: dir/model.safetensors and dir/backbone.pt (torch::save of the
  // backbone module, loadable with torch::load), and the head's class centres as dir/centroids.npy. In a
  // distributed run every rank calls it: the centres are gathered in class order and rank 0 writes.
  void save_outputs(const std::filesystem::path& dir) const {
    dist::ProcessGroup group = group_;
    at::Tensor centres = head_->centroids().detach();
    bool sharded = false;  // a head sharded by class holds a slice of the centres on each rank
    if constexpr (requires { { head_->options().world_size() } -> std::convertible_to<int64_t>; })
      sharded = head_->options().world_size() > 1;
    if (sharded) centres = group.all_gather_uneven(centres.contiguous());
    if (group.rank() != 0) return;
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& p : backbone_->named_parameters(true)) tensors.emplace_back(p.key(), p.value().detach());
    for (const auto& b : backbone_->named_buffers(true)) tensors.emplace_back(b.key(), b.value().detach());
    std::map<std::string, std::string> metadata{
        {"format", "pt"}, {"producer", "taxon"}, {"global_step", std::to_string(global_step_)}};
    // A backbone with JSON-serialisable options (taxon's ViTs) records them, so the file rebuilds its module alone.
    if constexpr (requires { nlohmann::json(backbone_->options); }) {
      metadata["config"] = nlohmann::json(backbone_->options).dump();
      metadata["taxon.format"] = "vit";
    }
    io::save_safetensors(dir / "model.safetensors", tensors, metadata);
    io::write_atomically(dir / "backbone.pt", [&](std::ostream& out) {
      torch::serialize::OutputArchive archive;
      backbone_->save(archive);
      save_archive(archive, out);
    });
    io::save_npy(dir / "centroids.npy", centres.to(at::kCPU, at::kFloat).contiguous());
  }

  // Free-form run configuration (e.g. the CLI flags) saved in every checkpoint; restored by resume().
  void set_config(nlohmann::json config) { config_ = std::move(config); }
  const nlohmann::json& config() const { return config_; }

  // ---- state ------------------------------------------------------------------------------------------------

  B& backbone() { return backbone_; }
  H& head() { return head_; }
  torch::optim::AdamW& optimizer() { return *optimizer_; }
  const Schedule& schedule() const { return schedule_; }
  const TrainerOptions& options() const { return options_; }
  const GradScaler& grad_scaler() const { return scaler_; }
  at::Device device() const { return device_; }
  int64_t epoch() const { return epoch_; }
  int64_t batch_in_epoch() const { return batch_in_epoch_; }
  int64_t global_step() const { return global_step_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  int64_t total_steps() const { return total_optimizer_steps(); }
  double last_loss() const { return last_loss_; }
  const std::optional<std::filesystem::path>& last_checkpoint() const { return last_checkpoint_; }

  // The trainer's own state, saved in every checkpoint's trainer.json.
  nlohmann::json state_json() const {
    return {{"epoch", epoch_},
            {"batch_in_epoch", batch_in_epoch_},
            {"global_step", global_step_},
            {"steps_per_epoch", steps_per_epoch_},
            {"last_loss", last_loss_},
            {"schedule", schedule_.state()},
            {"scaler", scaler_.state()},
            {"threads", at::get_num_threads()},
            {"torch", TORCH_VERSION},
            {"device", device_.str()},
            {"options", options_.to_json()},
            {"config", config_}};
  }

 private:
  // Moves a module only when something is elsewhere, so a module already in place is left untouched.
  static void place_on(torch::nn::Module& module, at::Device device) {
    bool elsewhere = false;
    for (const auto& p : module.parameters()) elsewhere = elsewhere || p.device() != device;
    for (const auto& b : module.buffers()) elsewhere = elsewhere || b.device() != device;
    if (elsewhere) module.to(device);
  }

  int64_t total_optimizer_steps() const {
    const int64_t per_epoch = (steps_per_epoch_ + options_.accumulation() - 1) / options_.accumulation();
    return options_.epochs() * per_epoch;
  }

  CheckpointParts checkpoint_parts() { return {*backbone_, *head_, *optimizer_}; }

  // Whether each rank holds a slice of the head's parameters (a class-sharded PartialFC).
  bool head_sharded() const {
    if constexpr (requires { { head_->options().world_size() } -> std::convertible_to<int64_t>; })
      return head_->options().world_size() > 1;
    else
      return false;
  }

  // clip_grad_norm_ over the whole model when the head is sharded: the norm of the (identical) backbone gradients
  // and of every rank's head shard together, so every rank clips by the coefficient one process would use.
  double clip_global_grad_norm() {
    torch::NoGradGuard no_grad;
    auto squares = [](const std::vector<at::Tensor>& params) {
      std::vector<at::Tensor> norms;
      for (const auto& p : params)
        if (p.grad().defined()) norms.push_back(p.grad().norm(2).to(at::kDouble));
      return norms.empty() ? at::zeros({1}, at::kDouble) : at::stack(norms).pow(2).sum().reshape({1});
    };
    at::Tensor head_sq = squares(head_->parameters()).to(device_);
    group_.all_reduce_(head_sq, dist::ReduceOp::sum);
    const at::Tensor backbone_sq = squares(backbone_->parameters());
    const double total = std::sqrt(backbone_sq.item<double>() + head_sq.cpu().item<double>());
    const double coefficient = options_.clip_grad_norm() / (total + 1e-6);
    if (coefficient < 1)
      for (auto& group : optimizer_->param_groups())
        for (auto& p : group.params())
          if (p.grad().defined()) p.mutable_grad().mul_(coefficient);
    return total;
  }

  // Every rank's own checkpoint files (head shard, optimizer, generators), on rank 0; empty on the others.
  std::vector<RankFiles> gather_rank_files(const CheckpointParts& parts) {
    const RankFiles mine = TrainingCheckpoint::rank_files(group_.rank(), parts, rng_states());
    const std::string joined = mine.head + mine.optimizer + mine.rng;
    at::Tensor bytes = at::empty({static_cast<int64_t>(joined.size())}, at::kByte);
    std::memcpy(bytes.data_ptr(), joined.data(), joined.size());
    const at::Tensor sizes = at::tensor(std::vector<int64_t>{static_cast<int64_t>(mine.head.size()),
                                                             static_cast<int64_t>(mine.optimizer.size()),
                                                             static_cast<int64_t>(mine.rng.size())}, at::kLong);
    const at::Tensor all_sizes = group_.all_gather(sizes.to(device_)).cpu();
    const at::Tensor all_bytes = group_.all_gather_uneven(bytes.to(device_)).cpu().contiguous();
    if (group_.rank() != 0) return {};
    std::vector<RankFiles> out;
    const auto* data = static_cast<const char*>(all_bytes.data_ptr());
    const auto* n = all_sizes.data_ptr<int64_t>();
    int64_t offset = 0;
    for (int r = 0; r < group_.world_size(); ++r) {
      RankFiles f;
      f.rank = r;
      for (auto* part : {&f.head, &f.optimizer, &f.rng}) {
        part->assign(data + offset, static_cast<size_t>(*n));
        offset += *n++;
      }
      if (r > 0) out.push_back(std::move(f));  // rank 0's own are the plain files
    }
    TAXON_CHECK(offset == all_bytes.numel(), "train.bad-checkpoint", "gathered ", all_bytes.numel(),
                " bytes of rank state but the ranks announced ", offset);
    return out;
  }

  // Generators: LibTorch's default CPU one, plus the head's/backbone's own when they expose `generator()`
  // (PartialFC draws its class samples and feature subsets from its own stream).
  GeneratorStates rng_states() {
    GeneratorStates states;
    states.insert("cpu", cpu_rng_state());
    if constexpr (requires { { head_->generator() } -> std::convertible_to<at::Generator>; })
      states.insert("head", generator_state(head_->generator()));
    if constexpr (requires { { backbone_->generator() } -> std::convertible_to<at::Generator>; })
      states.insert("backbone", generator_state(backbone_->generator()));
    // Dropout on a GPU draws from the device's default generator.
    if (device_.is_cuda()) states.insert("cuda", generator_state(at::globalContext().defaultGenerator(device_)));
    return states;
  }
  void set_rng_states(const GeneratorStates& states, const std::filesystem::path& dir) {
    auto get = [&](const std::string& key) {
      auto it = states.find(key);
      TAXON_CHECK(it != states.end(), "train.checkpoint-mismatch", dir.string(), " has no '", key,
                  "' generator state");
      return it->value();
    };
    // Look everything up first, so a missing state changes no generator.
    const at::Tensor cpu = get("cpu");
    at::Tensor head, backbone;
    if constexpr (requires { { head_->generator() } -> std::convertible_to<at::Generator>; })
      head = get("head");
    if constexpr (requires { { backbone_->generator() } -> std::convertible_to<at::Generator>; })
      backbone = get("backbone");
    // The CUDA generator state is optional: a GPU checkpoint resumes on the CPU, and a CPU one on a GPU.
    const bool saved_cuda = states.contains("cuda");
    const at::Tensor cuda = device_.is_cuda() && saved_cuda ? get("cuda") : at::Tensor();
    if (device_.is_cuda() && !saved_cuda) {
      log::warn(dir.string(), " holds no CUDA generator state (written on the CPU): ", device_.str(),
                " draws (dropout) continue from this process's seed, not bit-identical to an uninterrupted run");
    } else if (!device_.is_cuda() && saved_cuda) {
      log::info(dir.string(), " was written on a GPU; resuming on ", device_.str(), " without its CUDA generator state");
    }
    try {
      set_cpu_rng_state(cpu);
      if constexpr (requires { { head_->generator() } -> std::convertible_to<at::Generator>; })
        set_generator_state(head_->generator(), head);
      if constexpr (requires { { backbone_->generator() } -> std::convertible_to<at::Generator>; })
        set_generator_state(backbone_->generator(), backbone);
      if (cuda.defined()) set_generator_state(at::globalContext().defaultGenerator(device_), cuda);
    } catch (const c10::Error& e) {
      TAXON_FAIL("train.bad-checkpoint", dir.string(), ": a saved generator state does not fit its generator: ",
                 e.what_without_backtrace());
    }
  }

  template <typename Source>
  auto epoch_range(Source& source, int64_t epoch, int64_t skip, bool& skipped_by_source) {
    if constexpr (std::invocable<Source&, int64_t, int64_t>) {
      skipped_by_source = true;
      return source(epoch, skip);
    } else if constexpr (std::invocable<Source&, int64_t>) {
      skipped_by_source = false;
      return source(epoch);
    } else {
      static_assert(std::ranges::range<Source&>,
                    "Trainer::fit: the batch source must be a range of batches or a callable epoch -> range");
      skipped_by_source = false;
      return std::ranges::ref_view(source);
    }
  }

  template <typename Source>
  int64_t infer_steps(Source& source) {
    bool ignored = false;
    auto&& range = epoch_range(source, 0, 0, ignored);
    using R = std::remove_cvref_t<decltype(range)>;
    if constexpr (std::ranges::sized_range<R>) {
      const auto n = static_cast<int64_t>(std::ranges::size(range));
      TAXON_CHECK(n > 0, "train.empty-epoch", "the batch source yields no batches for epoch 0");
      return n;
    } else {
      TAXON_FAIL("train.unknown-steps",
                 "the batch source has no size; set TrainerOptions::steps_per_epoch to the number of batches per epoch");
    }
  }

  at::Tensor select_labels(const at::Tensor& labels) const {
    at::Tensor y;
    if (labels.dim() == 1) {
      TAXON_CHECK(options_.label_column() == 0, "train.label-column", "labels are [B] (", labels.sizes(),
                  ") but label_column is ", options_.label_column());
      y = labels;
    } else {
      TAXON_CHECK(labels.dim() == 2 && options_.label_column() < labels.size(1), "train.label-column",
                  "label_column ", options_.label_column(), " (", options_.label_name(),
                  ") does not exist in labels of shape ", labels.sizes());
      y = labels.select(1, options_.label_column());
    }
    return y.to(device_, at::kLong, /*non_blocking=*/device_.is_cuda() && y.is_pinned());
  }

  template <typename Batch>
  double forward_backward(const Batch& batch) {
    static_assert(TrainBatch<Batch>, "Trainer::fit: each batch needs .images and .labels tensors");
    // The batch (and so the loader's pinned buffer) stays referenced until loss.item() below has synchronised.
    at::Tensor images = batch_to_device(at::Tensor(batch.images), device_);
    if (options_.device_transform()) images = options_.device_transform()(images);
    TAXON_CHECK(images.scalar_type() != at::kByte, "train.bad-batch", "batch ", batch_in_epoch_, " of epoch ", epoch_,
                " has uint8 images ", images.sizes(), "; normalise them first "
                "(TrainerOptions::device_transform(data::normalize_on_device(mean, std)) for to_chw() batches)");
    const at::Tensor labels = select_labels(at::Tensor(batch.labels));
    at::Tensor embeddings;
    {
      AutocastScope autocast(device_, options_.precision());
      embeddings = backbone_->forward(images);
    }
    // The head runs in fp32, as UNICOM's PartialFC (fp16=False) does.
    if (embeddings.scalar_type() != at::kFloat) embeddings = embeddings.to(at::kFloat);
    at::Tensor loss = head_->forward(embeddings, labels);
    const double value = loss.item<double>();
    if (!std::isfinite(value)) non_finite_loss(value);
    if (options_.accumulation() > 1) loss = loss / static_cast<double>(options_.accumulation());
    if (options_.precision() == Precision::fp16) loss = scaler_.scale(loss);
    loss.backward();
    images_in_step_ += images.size(0);
    return value;
  }

  [[noreturn]] void non_finite_loss(double value) {
    optimizer_->zero_grad();
    micro_ = 0;
    TAXON_FAIL("train.non-finite-loss", "loss is ", value, " at epoch ", epoch_, ", batch ", batch_in_epoch_,
               " (optimizer step ", global_step_ + 1, " of ", total_optimizer_steps(), ", lr ", schedule_.lr(0),
               "); stopped without updating the weights. Last good checkpoint: ",
               last_checkpoint_ ? last_checkpoint_->string() : std::string("none saved"),
               ". Lower the lr, enable clip_grad_norm or check the inputs for NaN.");
  }

  template <typename... Callbacks>
  void optimizer_step(Callbacks&... callbacks) {
    averager_->average();  // the backbone's gradient of the global batch on every rank
    if (micro_ < options_.accumulation()) {  // partial group at epoch end: mean over the micro-batches it had
      const double rescale = static_cast<double>(options_.accumulation()) / static_cast<double>(micro_);
      torch::NoGradGuard no_grad;
      for (auto& group : optimizer_->param_groups())
        for (auto& p : group.params())
          if (p.grad().defined()) p.mutable_grad().mul_(rescale);
    }
    schedule_.apply(*optimizer_);
    StepReport r;
    r.epoch = epoch_;
    r.lr = schedule_.lr(0);
    r.head_lr = schedule_.lr(1);
    r.beta1 = std::get<0>(static_cast<torch::optim::AdamWOptions&>(optimizer_->param_groups()[0].options()).betas());
    r.loss_scale = options_.precision() == Precision::fp16 ? scaler_.scale() : 1.0;
    bool finite = true;
    if (options_.precision() == Precision::fp16) finite = scaler_.unscale(*optimizer_);
    if (options_.clip_grad_norm() > 0 && finite) {
      std::vector<at::Tensor> params;
      for (auto& group : optimizer_->param_groups())
        for (auto& p : group.params()) params.push_back(p);
      r.grad_norm = group_.distributed() && head_sharded() ? clip_global_grad_norm()
                                                           : torch::nn::utils::clip_grad_norm_(params, options_.clip_grad_norm());
    }
    (hooks::gradients(callbacks, *this), ...);
    if (options_.precision() == Precision::fp16) r.skipped = !scaler_.step(*optimizer_);
    else optimizer_->step();
    optimizer_->zero_grad();
    schedule_.step();
    ++global_step_;
    r.step = global_step_;
    r.total_steps = total_optimizer_steps();
    r.loss = loss_sum_ / static_cast<double>(micro_);
    r.images = images_in_step_ * group_.world_size();  // the global batch (every rank holds an equal shard)
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start_).count();
    last_loss_ = r.loss;
    micro_ = 0;
    loss_sum_ = 0;
    images_in_step_ = 0;
    (hooks::step_end(callbacks, *this, r), ...);
    if ((hooks::should_stop(callbacks, *this) || ...)) stop_ = true;
    stop_ = any_rank(stop_);  // a rank that stops alone would leave the others waiting in the next collective
  }

  template <typename Source, typename... Callbacks>
  void run_epoch(Source& source, Callbacks&... callbacks) {
    bool skipped_by_source = false;
    const int64_t skip = batch_in_epoch_;
    auto&& range = epoch_range(source, epoch_, skip, skipped_by_source);
    int64_t index = skipped_by_source ? skip : 0;
    for (auto&& batch : range) {
      if (index < skip) {  // resume mid-epoch: the source replays the epoch, we drop what was already trained on
        ++index;
        continue;
      }
      if (micro_ == 0) {
        (hooks::step_begin(callbacks, *this, global_step_), ...);
        step_start_ = std::chrono::steady_clock::now();
      }
      loss_sum_ += forward_backward(batch);
      ++micro_;
      batch_in_epoch_ = ++index;
      if (micro_ == options_.accumulation()) {
        optimizer_step(callbacks...);
        if (stop_) return;
      }
    }
    if (micro_ > 0) optimizer_step(callbacks...);
    TAXON_CHECK(index > 0 || skip > 0, "train.empty-epoch", "the batch source yielded no batches for epoch ", epoch_);
  }

  template <typename... Callbacks>
  void end_epoch(Callbacks&... callbacks) {
    const int64_t finished = epoch_;
    epoch_ = finished + 1;
    batch_in_epoch_ = 0;
    if constexpr ((hooks::runs<Callbacks, Trainer>(Hook::evaluate) || ...)) {
      Metrics metrics;
      {
        backbone_->train(false);
        head_->train(false);
        torch::NoGradGuard no_grad;
        (hooks::evaluate(callbacks, *this, finished, metrics), ...);
      }
      backbone_->train(true);
      head_->train(true);
      if (!metrics.empty()) (hooks::evaluated(callbacks, *this, metrics), ...);
    }
    (hooks::epoch_end(callbacks, *this, finished), ...);
    if ((hooks::should_stop(callbacks, *this) || ...)) stop_ = true;
    stop_ = any_rank(stop_);
  }

  B backbone_;
  H head_;
  TrainerOptions options_;
  dist::ProcessGroup group_ = dist::ProcessGroup::single();
  std::optional<dist::GradientAverager> averager_;
  Schedule schedule_;
  GradScaler scaler_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  at::Device device_ = at::kCPU;
  int64_t epoch_ = 0;
  int64_t batch_in_epoch_ = 0;  // batches of epoch_ already trained on
  int64_t global_step_ = 0;     // optimizer steps done
  int64_t steps_per_epoch_ = 0; // batches per epoch
  int64_t micro_ = 0;
  int64_t images_in_step_ = 0;
  double loss_sum_ = 0;
  double last_loss_ = 0;
  bool stop_ = false;
  bool started_ = false;  // schedule built and generators seeded (fresh start or resume)
  std::chrono::steady_clock::time_point step_start_;
  std::optional<std::filesystem::path> last_checkpoint_;
  nlohmann::json config_ = nlohmann::json::object();
};

}  // namespace taxon::train
