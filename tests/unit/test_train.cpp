// Trainer: schedules, AdamW groups, the loop, accumulation, NaN guard, AMP, callbacks, atomic checkpoints and
// bit-exact resume, on a tiny MLP backbone and a normalized-softmax head defined here.
#include "taxon/train/train.hpp"

#include "taxon/backbone/weights.hpp"
#include "taxon/backbone/zoo.hpp"
#include "taxon/core/seed.hpp"
#include "taxon/data/dataset.hpp"
#include "taxon/io/npy.hpp"
#include "taxon/io/safetensors.hpp"
#include "taxon/pfc/partial_fc.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/nn/functional/normalization.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "support/tensor_compare.hpp"

namespace test_train {

namespace fs = std::filesystem;
using taxon::train::Hook;
using taxon::train::HookSet;
using taxon::train::Schedule;
using taxon::train::Trainer;
using taxon::train::TrainerOptions;

struct TinyMlpImpl : torch::nn::Module {
  TinyMlpImpl(int64_t in, int64_t hidden, int64_t out, double dropout = 0.0)
      : fc1(register_module("fc1", torch::nn::Linear(in, hidden))),
        drop(register_module("drop", torch::nn::Dropout(dropout))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, out))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2(drop(fc1(x.flatten(1)).relu())); }
  torch::nn::Linear fc1;
  torch::nn::Dropout drop;
  torch::nn::Linear fc2;
};
TORCH_MODULE(TinyMlp);

// Plain normalized-softmax (cosine, scale s) cross-entropy head: the simplest taxon::Head.
struct CosineHeadImpl : torch::nn::Module {
  CosineHeadImpl(int64_t classes, int64_t dim, double scale = 16.0)
      : weight(register_parameter("weight", at::randn({classes, dim}) * 0.01)), s(scale) {}
  at::Tensor logits(const at::Tensor& e) const {
    namespace F = torch::nn::functional;
    return s * at::mm(F::normalize(e, F::NormalizeFuncOptions().dim(1)),
                      F::normalize(weight, F::NormalizeFuncOptions().dim(1)).t());
  }
  at::Tensor forward(const at::Tensor& e, const at::Tensor& labels) { return at::cross_entropy_loss(logits(e), labels); }
  at::Tensor centroids() const { return weight; }
  int64_t num_classes() const { return weight.size(0); }
  at::Tensor weight;
  double s;
};
TORCH_MODULE(CosineHead);

struct Batch {
  at::Tensor images;
  at::Tensor labels;
};

struct NotAModule {
  int forward(int) { return 0; }
};

// Gaussian blobs: class c has mean 2·e_c (+ noise) in 8 dims; labels [N,2] = (class, class % 2).
struct Blobs {
  at::Tensor x, y;
  Blobs(int64_t n, int64_t classes, uint64_t seed) {
    auto g = taxon::make_generator(seed);
    y = at::randint(classes, {n}, g, at::kLong);
    x = at::randn({n, 8}, g) * 0.7;
    auto means = at::zeros({classes, 8});
    for (int64_t c = 0; c < classes; ++c) means[c][c % 8] = 2.0;
    x += means.index_select(0, y);
  }
  at::Tensor labels2() const { return at::stack({y, y % 2}, 1); }
};

// Per-epoch batch source: order depends only on (seed, epoch), as resume requires.
struct EpochSource {
  at::Tensor x, y;
  int64_t batch;
  uint64_t seed;
  std::vector<Batch> operator()(int64_t epoch) const {
    auto g = taxon::make_generator(seed, {static_cast<uint64_t>(epoch)});
    auto perm = at::randperm(x.size(0), g, at::kLong);
    std::vector<Batch> out;
    for (int64_t i = 0; i + batch <= x.size(0); i += batch) {
      auto idx = perm.slice(0, i, i + batch);
      out.push_back({x.index_select(0, idx), y.index_select(0, idx)});
    }
    return out;
  }
};

inline fs::path temp_dir(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("taxon_test_train_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

inline std::vector<at::Tensor> all_params(TinyMlp& b, CosineHead& h) {
  std::vector<at::Tensor> out;
  for (auto& p : b->parameters()) out.push_back(p.detach().clone());
  for (auto& p : h->parameters()) out.push_back(p.detach().clone());
  return out;
}

inline double accuracy(TinyMlp& b, CosineHead& h, const at::Tensor& x, const at::Tensor& y) {
  torch::NoGradGuard ng;
  b->eval();
  auto pred = h->logits(b->forward(x)).argmax(1);
  b->train();
  return pred.eq(y).to(at::kDouble).mean().item<double>();
}

struct CountingCallback {
  static constexpr HookSet hooks{Hook::on_train_begin, Hook::on_train_end, Hook::on_epoch_begin, Hook::on_epoch_end,
                                  Hook::on_step_begin,  Hook::on_step_end,  Hook::on_gradients};
  int train_begin = 0, train_end = 0, epoch_begin = 0, epoch_end = 0, step_begin = 0, step_end = 0, grads = 0;
  std::vector<double> losses;
  template <typename T> void on_train_begin(T&) { ++train_begin; }
  template <typename T> void on_train_end(T&) { ++train_end; }
  template <typename T> void on_epoch_begin(T&, int64_t) { ++epoch_begin; }
  template <typename T> void on_epoch_end(T&, int64_t) { ++epoch_end; }
  template <typename T> void on_step_begin(T&, int64_t) { ++step_begin; }
  template <typename T> void on_step_end(T&, const taxon::train::StepReport& r) {
    ++step_end;
    losses.push_back(r.loss);
  }
  template <typename T> void on_gradients(T&) { ++grads; }
};

// Stops after `at` optimizer steps and saves a checkpoint there: an interrupted run.
struct InterruptAt {
  static constexpr HookSet hooks{Hook::on_step_end, Hook::should_stop};
  int64_t at;
  fs::path dir;
  bool fired = false;
  template <typename T> void on_step_end(T& t, const taxon::train::StepReport& r) {
    if (r.step == at) {
      t.save_checkpoint(dir);
      fired = true;
    }
  }
  template <typename T> bool should_stop(T&) const { return fired; }
};

// First step's gradients, as the optimizer will see them.
struct GradCapture {
  static constexpr HookSet hooks{Hook::on_gradients};
  std::vector<at::Tensor>* out;
  template <typename T> void on_gradients(T& t) {
    if (!out->empty()) return;
    for (auto& g : t.optimizer().param_groups())
      for (auto& p : g.params()) out->push_back(p.grad().clone());
  }
};

struct NormCheck {
  static constexpr HookSet hooks{Hook::on_gradients, Hook::on_step_end};
  double max_seen = 0;
  std::vector<double> reported;
  template <typename T> void on_gradients(T& t) {
    double sq = 0;
    for (auto& g : t.optimizer().param_groups())
      for (auto& p : g.params()) sq += p.grad().pow(2).sum().template item<double>();
    max_seen = std::max(max_seen, std::sqrt(sq));
  }
  template <typename T> void on_step_end(T&, const taxon::train::StepReport& r) { reported.push_back(r.grad_norm); }
};

// Test cases live in the namespace too: the test target is a unity build, so no using-directives at global scope.

// Wrong plugs are rejected by the concepts (and Trainer's static_asserts say which).
static_assert(taxon::Backbone<TinyMlp>);
static_assert(taxon::Head<CosineHead>);
static_assert(!taxon::Backbone<NotAModule>);
static_assert(!taxon::Backbone<int>);
static_assert(!taxon::Head<TinyMlp>);      // forward takes one tensor, no centroids()
static_assert(!taxon::Backbone<CosineHead>);  // forward needs labels
static_assert(taxon::train::TrainBatch<Batch>);
static_assert(!taxon::train::TrainBatch<NotAModule>);
static_assert(taxon::train::TrainBatch<taxon::data::Batch>);  // the data loader's batches plug in directly

TEST_CASE("OneCycle matches the closed form of PyTorch OneCycleLR incl. beta1 cycling", "[train][schedule]") {
  auto s = Schedule::one_cycle();
  s.start(100, {1e-5, 1e-4});
  CHECK(s.lr_at(0, 1e-5) == Approx(4e-7).epsilon(1e-9));
  CHECK(*s.beta1_at(0) == Approx(0.95).epsilon(1e-12));
  CHECK(s.lr_at(9, 1e-5) == Approx(1e-5).epsilon(1e-12));
  CHECK(*s.beta1_at(9) == Approx(0.85).epsilon(1e-12));
  CHECK(s.lr_at(50, 1e-5) == Approx(5.6959e-6).epsilon(1e-4));
  CHECK(*s.beta1_at(50) == Approx(0.89304).epsilon(1e-5));
  CHECK(s.lr_at(99, 1e-5) == Approx(4e-11).epsilon(1e-6));
  CHECK(*s.beta1_at(99) == Approx(0.95).epsilon(1e-12));
  // Head group scales with its own peak (lr × lr_pfc_weight).
  CHECK(s.lr_at(50, 1e-4) == Approx(5.6959e-5).epsilon(1e-4));
  // Warm-up is monotone up, annealing monotone down.
  for (int t = 1; t <= 9; ++t) CHECK(s.lr_at(t, 1e-5) > s.lr_at(t - 1, 1e-5));
  for (int t = 10; t < 100; ++t) CHECK(s.lr_at(t, 1e-5) < s.lr_at(t - 1, 1e-5));
  REQUIRE_TAXON_ERROR(s.lr_at(101, 1e-5), "train.schedule-overrun");

  auto no_cycle = Schedule::one_cycle(taxon::train::OneCycleOptions().cycle_momentum(false));
  no_cycle.start(100, {1e-5});
  CHECK_FALSE(no_cycle.beta1_at(5).has_value());
  REQUIRE_TAXON_ERROR(Schedule::one_cycle(taxon::train::OneCycleOptions().pct_start(1.5)), "train.bad-option");
}

TEST_CASE("cosine-with-warmup and constant schedules", "[train][schedule]") {
  auto c = Schedule::cosine_warmup(taxon::train::CosineWarmupOptions().warmup_steps(4).min_lr_ratio(0.1));
  c.start(20, {1.0});
  CHECK(c.lr_at(0, 1.0) == Approx(0.25));
  CHECK(c.lr_at(3, 1.0) == Approx(1.0));
  CHECK(c.lr_at(4, 1.0) == Approx(1.0));
  CHECK(c.lr_at(19, 1.0) == Approx(0.1));
  CHECK(c.lr_at(11, 1.0) < c.lr_at(10, 1.0));
  CHECK_FALSE(c.beta1_at(3).has_value());
  auto k = Schedule::constant(taxon::train::ConstantOptions().warmup_steps(2));
  k.start(10, {0.5});
  CHECK(k.lr_at(0, 0.5) == Approx(0.25));
  CHECK(k.lr_at(1, 0.5) == Approx(0.5));
  CHECK(k.lr_at(9, 0.5) == Approx(0.5));
}

TEST_CASE("schedule state round-trips and refuses another kind", "[train][schedule]") {
  auto s = Schedule::one_cycle(taxon::train::OneCycleOptions().pct_start(0.3));
  s.start(50, {1e-3, 1e-2});
  for (int i = 0; i < 17; ++i) s.step();
  auto r = Schedule::one_cycle();
  r.load_state(s.state());
  CHECK(r.step_count() == 17);
  CHECK(r.lr(1) == s.lr(1));
  CHECK(*r.beta1() == *s.beta1());
  auto other = Schedule::constant();
  REQUIRE_TAXON_ERROR(other.load_state(s.state()), "train.resume-mismatch");
}

TEST_CASE("AdamW gets two groups (backbone lr, head lr x lr_pfc_weight) and the schedule drives lr and beta1",
          "[train][optimizer]") {
  TinyMlp b(8, 16, 4);
  CosineHead h(3, 4);
  auto o = TrainerOptions().lr(1e-3).lr_pfc_weight(10).weight_decay(0.05);
  auto opt = taxon::train::make_adamw(b, h, o);
  REQUIRE(opt->param_groups().size() == 2);
  CHECK(opt->param_groups()[0].params().size() == b->parameters().size());
  CHECK(opt->param_groups()[1].params().size() == 1);
  auto& g1 = static_cast<torch::optim::AdamWOptions&>(opt->param_groups()[1].options());
  CHECK(g1.lr() == Approx(1e-2));
  CHECK(g1.weight_decay() == Approx(0.05));
  auto s = Schedule::one_cycle();
  s.start(100, {1e-3, 1e-2});
  s.apply(*opt);
  auto& g0 = static_cast<torch::optim::AdamWOptions&>(opt->param_groups()[0].options());
  CHECK(g0.lr() == Approx(4e-5));
  CHECK(g1.lr() == Approx(4e-4));
  CHECK(std::get<0>(g0.betas()) == Approx(0.95));
  CHECK(std::get<1>(g0.betas()) == Approx(0.999));
}

TEST_CASE("TrainerOptions are validated once with error ids", "[train][options]") {
  TinyMlp b(8, 16, 4);
  CosineHead h(3, 4);
  REQUIRE_TAXON_ERROR(Trainer(b, h, TrainerOptions().epochs(0)), "train.bad-option");
  REQUIRE_TAXON_ERROR(Trainer(b, h, TrainerOptions().lr(-1)), "train.bad-option");
  REQUIRE_TAXON_ERROR(Trainer(b, h, TrainerOptions().accumulation(0)), "train.bad-option");
  REQUIRE_TAXON_ERROR(Trainer(b, h, TrainerOptions().clip_grad_norm(-1)), "train.bad-option");
  REQUIRE_TAXON_ERROR(Trainer(b, h, TrainerOptions().beta1(1.0)), "train.bad-option");
  REQUIRE_TAXON_ERROR(Trainer(b, h, TrainerOptions().precision(taxon::train::Precision::fp16)),
                      "train.amp-unsupported");
  REQUIRE_TAXON_ERROR(taxon::train::precision_from_string("fp8"), "train.bad-option");
}

TEST_CASE("Trainer: loss decreases and accuracy beats chance, callbacks see every hook", "[train]") {
  taxon::seed_everything(1);
  Blobs data(512, 4, 11);
  TinyMlp b(8, 32, 16);
  CosineHead h(4, 16);
  const double acc_before = accuracy(b, h, data.x, data.y);
  Trainer trainer(b, h, TrainerOptions().epochs(4).lr(3e-3).lr_pfc_weight(5).seed(3), Schedule::one_cycle());
  CountingCallback counts;
  auto summary = trainer.fit(EpochSource{data.x, data.y, 32, 5}, counts);
  CHECK(summary.steps == 4 * 16);
  CHECK(trainer.total_steps() == 64);
  CHECK(counts.train_begin == 1);
  CHECK(counts.train_end == 1);
  CHECK(counts.epoch_begin == 4);
  CHECK(counts.epoch_end == 4);
  CHECK(counts.step_begin == 64);
  CHECK(counts.step_end == 64);
  CHECK(counts.grads == 64);
  const double first = (counts.losses[0] + counts.losses[1] + counts.losses[2]) / 3;
  const double last = (counts.losses[61] + counts.losses[62] + counts.losses[63]) / 3;
  INFO("first " << first << " last " << last << " acc before " << acc_before);
  CHECK(last < 0.5 * first);
  const double acc = accuracy(b, h, data.x, data.y);
  CHECK(acc > 0.8);  // chance is 0.25
  CHECK(trainer.schedule().step_count() == 64);
}

TEST_CASE("Trainer takes a label column of BxR labels (clusters or a metadata rank)", "[train]") {
  taxon::seed_everything(2);
  Blobs data(128, 4, 12);
  TinyMlp b(8, 16, 8);
  CosineHead h(2, 8);
  std::vector<Batch> batches;
  auto y2 = data.labels2();
  for (int64_t i = 0; i < 128; i += 32) batches.push_back({data.x.slice(0, i, i + 32), y2.slice(0, i, i + 32)});
  Trainer trainer(b, h, TrainerOptions().epochs(1).label_column(1).label_name("parity"), Schedule::constant());
  auto s = trainer.fit(batches);  // a plain range, reused each epoch
  CHECK(s.steps == 4);
  Trainer bad(b, h, TrainerOptions().epochs(1).label_column(2), Schedule::constant());
  REQUIRE_TAXON_ERROR(bad.fit(batches), "train.label-column");
}

TEST_CASE("accumulation of 2 micro-batches of B/2 equals one step of B", "[train][accumulation]") {
  Blobs data(64, 4, 13);
  auto run = [&](int64_t micro_batch, int64_t accumulation) {
    taxon::seed_everything(7);
    TinyMlp b(8, 16, 8);
    CosineHead h(4, 8);
    std::vector<at::Tensor> grads;
    GradCapture capture{&grads};
    std::vector<Batch> batches;
    for (int64_t i = 0; i + micro_batch <= 64; i += micro_batch)
      batches.push_back({data.x.slice(0, i, i + micro_batch), data.y.slice(0, i, i + micro_batch)});
    Trainer trainer(b, h, TrainerOptions().epochs(1).lr(1e-2).accumulation(accumulation), Schedule::constant());
    auto s = trainer.fit(batches, capture);
    CHECK(s.steps == 64 / (micro_batch * accumulation));
    return std::make_pair(grads, all_params(b, h));
  };
  auto [g_full, p_full] = run(32, 1);  // two steps of 32
  auto [g_acc, p_acc] = run(16, 2);    // two steps of 2×16
  REQUIRE(g_full.size() == g_acc.size());
  for (size_t i = 0; i < g_full.size(); ++i) REQUIRE_TENSORS_CLOSE(g_acc[i], g_full[i], 1e-4, 1e-6);
  for (size_t i = 0; i < p_full.size(); ++i) REQUIRE_TENSORS_CLOSE(p_acc[i], p_full[i], 1e-4, 1e-5);
  // Without dividing the loss (the upstream quirk) the gradient would be twice as large: make sure it is not.
  CHECK(g_acc[0].abs().sum().item<double>() == Approx(g_full[0].abs().sum().item<double>()).epsilon(1e-3));
}

TEST_CASE("gradient clipping bounds the total gradient norm", "[train]") {
  taxon::seed_everything(4);
  Blobs data(64, 4, 14);
  TinyMlp b(8, 16, 8);
  CosineHead h(4, 8);
  NormCheck check;
  Trainer trainer(b, h, TrainerOptions().epochs(1).clip_grad_norm(0.01), Schedule::constant());
  trainer.fit(EpochSource{data.x, data.y, 16, 1}, check);
  CHECK(check.max_seen <= 0.01 * (1 + 1e-5));
  REQUIRE(check.reported.size() == 4);
  CHECK(check.reported[0] > 0.01);  // the unclipped norm was larger, so clipping really acted
}

TEST_CASE("NaN guard stops with the step and loss, and keeps the last good checkpoint", "[train][nan]") {
  taxon::seed_everything(5);
  auto dir = temp_dir("nan");
  Blobs data(96, 4, 15);
  auto x = data.x.clone();
  x[70][0] = std::numeric_limits<float>::quiet_NaN();  // batch 4 of 6 (batch size 16, no shuffling)
  std::vector<Batch> batches;
  for (int64_t i = 0; i < 96; i += 16) batches.push_back({x.slice(0, i, i + 16), data.y.slice(0, i, i + 16)});
  TinyMlp b(8, 16, 8);
  CosineHead h(4, 8);
  Trainer trainer(b, h, TrainerOptions().epochs(1).lr(1e-2), Schedule::constant());
  taxon::train::Checkpointing ckpt(dir, /*every_steps=*/1, /*every_epochs=*/0, /*keep_last=*/0);
  std::string message;
  try {
    trainer.fit(batches, ckpt);
    FAIL("no error");
  } catch (const taxon::Error& e) {
    CHECK(e.id() == "train.non-finite-loss");
    message = e.what();
  }
  INFO(message);
  CHECK(message.find("loss is nan") != std::string::npos);
  CHECK(message.find("optimizer step 5 of 6") != std::string::npos);
  CHECK(message.find("step-000000004") != std::string::npos);
  CHECK(trainer.global_step() == 4);
  // The last good checkpoint is intact and equal to the weights before the bad batch.
  auto latest = taxon::train::TrainingCheckpoint::latest(dir);
  REQUIRE(latest.has_value());
  CHECK(latest->filename() == "step-000000004");
  TinyMlp b2(8, 16, 8);
  CosineHead h2(4, 8);
  Trainer resumed(b2, h2, TrainerOptions().epochs(1).lr(1e-2), Schedule::constant());
  REQUIRE(resumed.resume(dir));
  CHECK(resumed.global_step() == 4);
  CHECK(resumed.batch_in_epoch() == 4);
  auto p = all_params(b, h), q = all_params(b2, h2);
  for (size_t i = 0; i < p.size(); ++i) CHECK(at::equal(p[i], q[i]));
  fs::remove_all(dir);
}

TEST_CASE("resume after an interruption ends bit-exact with the uninterrupted run", "[train][resume]") {
  Blobs data(160, 4, 16);
  const EpochSource source{data.x, data.y, 16, 9};  // 10 batches per epoch
  const auto options = TrainerOptions().epochs(3).lr(5e-3).accumulation(2).clip_grad_norm(1.0).seed(21);
  auto fresh = [] {
    return std::make_pair(TinyMlp(8, 32, 8, /*dropout=*/0.2), CosineHead(4, 8));
  };
  // Uninterrupted.
  taxon::seed_everything(100);
  auto [b1, h1] = fresh();
  Trainer full(b1, h1, options, Schedule::one_cycle());
  full.fit(source);
  // Interrupted mid-epoch 1 (step 7 = 4 micro-batches into the second epoch), then resumed into new objects whose
  // initial weights differ: everything must come from the checkpoint.
  auto dir = temp_dir("resume");
  {
    taxon::seed_everything(100);
    auto [b2, h2] = fresh();
    Trainer part(b2, h2, options, Schedule::one_cycle());
    InterruptAt stop{7, dir};
    auto s = part.fit(source, stop);
    CHECK(s.global_step == 7);
    CHECK(s.stopped_early);
    CHECK(part.epoch() == 1);
    CHECK(part.batch_in_epoch() == 4);
    at::randn({1000});  // disturb the global generator after the checkpoint
  }
  taxon::seed_everything(999);
  auto [b3, h3] = fresh();
  Trainer resumed(b3, h3, options, Schedule::one_cycle());
  REQUIRE(resumed.resume(dir));
  CHECK(resumed.global_step() == 7);
  resumed.fit(source);
  CHECK(resumed.global_step() == full.global_step());
  CHECK(resumed.schedule().step_count() == full.schedule().step_count());
  auto p = all_params(b1, h1), q = all_params(b3, h3);
  for (size_t i = 0; i < p.size(); ++i) {
    INFO("parameter " << i << " " << taxon::test::diff(q[i], p[i]).describe());
    CHECK(at::equal(p[i], q[i]));
  }
  // The optimizer moments are identical too.
  auto& s1 = full.optimizer().state();
  auto& s3 = resumed.optimizer().state();
  REQUIRE(s1.size() == s3.size());
  const auto fp = b1->parameters()[0];
  const auto rp = b3->parameters()[0];
  auto& st1 = static_cast<torch::optim::AdamWParamState&>(taxon::compat::optimizer_param_state(s1, fp));
  auto& st3 = static_cast<torch::optim::AdamWParamState&>(taxon::compat::optimizer_param_state(s3, rp));
  CHECK(st1.step() == st3.step());
  CHECK(at::equal(st1.exp_avg_sq(), st3.exp_avg_sq()));
  // A changed run length is refused rather than silently re-scheduled.
  TinyMlp b4(8, 32, 8, 0.2);
  CosineHead h4(4, 8);
  Trainer longer(b4, h4, TrainerOptions(options).epochs(5), Schedule::one_cycle());
  REQUIRE(longer.resume(dir));
  REQUIRE_TAXON_ERROR(longer.fit(source), "train.resume-mismatch");
  fs::remove_all(dir);
}

TEST_CASE("checkpoints are atomic: a failure during save leaves the previous one loadable", "[train][checkpoint]") {
  auto dir = temp_dir("atomic");
  taxon::seed_everything(6);
  Blobs data(64, 4, 17);
  TinyMlp b(8, 16, 8);
  CosineHead h(4, 8);
  Trainer trainer(b, h, TrainerOptions().epochs(1).lr(1e-2), Schedule::constant());
  trainer.fit(EpochSource{data.x, data.y, 16, 2});
  const auto good = trainer.save_checkpoint(dir);
  CHECK(good.filename() == "step-000000004");
  const auto saved = all_params(b, h);

  // A save that dies half-way (after writing one file): nothing of it remains, `latest` is unchanged.
  REQUIRE_THROWS_AS(taxon::io::write_directory_atomically(dir, "step-000000005",
                                                       [](const fs::path& tmp) {
                                                         std::ofstream(tmp / "backbone.pt") << "partial";
                                                         throw std::runtime_error("disk full");
                                                       }),
                    std::runtime_error);
  CHECK_FALSE(fs::exists(dir / "step-000000005"));
  int leftovers = 0;
  for (const auto& e : fs::directory_iterator(dir)) leftovers += e.path().filename().string().find(".tmp.") != std::string::npos;
  CHECK(leftovers == 0);
  // A process killed mid-save leaves a hidden temporary directory behind; it is never mistaken for a checkpoint.
  fs::create_directories(dir / ".step-000000006.tmp.1.2");
  std::ofstream(dir / ".step-000000006.tmp.1.2" / "trainer.json") << "{";
  REQUIRE(taxon::train::TrainingCheckpoint::latest(dir).value().filename() == "step-000000004");

  TinyMlp b2(8, 16, 8);
  CosineHead h2(4, 8);
  Trainer again(b2, h2, TrainerOptions().epochs(1).lr(1e-2), Schedule::constant());
  REQUIRE(again.resume(dir));
  auto q = all_params(b2, h2);
  for (size_t i = 0; i < saved.size(); ++i) CHECK(at::equal(saved[i], q[i]));

  // A checkpoint of another architecture is rejected with the tensor's name and shapes.
  TinyMlp b3(8, 24, 8);
  CosineHead h3(4, 8);
  Trainer wrong(b3, h3, TrainerOptions().epochs(1), Schedule::constant());
  REQUIRE_TAXON_ERROR(wrong.resume(dir), "train.checkpoint-mismatch");
  // No checkpoint yet: resume says so and the run starts fresh.
  CHECK_FALSE(again.resume(dir / "empty"));

  // keep_last prunes older step directories, never the one `latest` names.
  TinyMlp b4(8, 16, 8);
  CosineHead h4(4, 8);
  Trainer longer(b4, h4, TrainerOptions().epochs(2).lr(1e-2), Schedule::constant());
  longer.fit(EpochSource{data.x, data.y, 16, 2});
  const auto newer = longer.save_checkpoint(dir, /*keep_last=*/1);
  CHECK(newer.filename() == "step-000000008");
  CHECK_FALSE(fs::exists(good));
  CHECK(fs::exists(newer));
  CHECK(taxon::train::TrainingCheckpoint::latest(dir) == newer);
  fs::remove_all(dir);
}

TEST_CASE("callbacks: metrics log, periodic evaluation, early stop", "[train][callbacks]") {
  taxon::seed_everything(8);
  auto dir = temp_dir("callbacks");
  Blobs data(64, 4, 18);
  TinyMlp b(8, 16, 8);
  CosineHead h(4, 8);
  Trainer trainer(b, h, TrainerOptions().epochs(10).lr(1e-2), Schedule::constant());
  int evals = 0;
  bool was_training = true;
  taxon::train::Evaluate eval(
      [&](auto& t) {
        ++evals;
        was_training = t.backbone()->is_training();
        return taxon::train::Metrics{{"recall@1", 50.0}};  // never improves: early stop after patience
      },
      2);
  taxon::train::EarlyStop early("recall@1", 2);
  taxon::train::MetricsLog log(dir / "metrics.jsonl");
  taxon::train::ProgressBar bar;
  auto s = trainer.fit(EpochSource{data.x, data.y, 16, 3}, eval, early, log, bar);
  CHECK(evals == 3);            // epochs 2, 4, 6
  CHECK_FALSE(was_training);    // evaluation runs in eval mode
  CHECK(s.stopped_early);
  CHECK(s.epoch == 6);
  CHECK(early.best().value() == 50.0);
  std::ifstream in(dir / "metrics.jsonl");
  std::string line;
  int steps = 0, eval_lines = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["event"] == "step") ++steps;
    if (j["event"] == "eval") {
      ++eval_lines;
      CHECK(j["recall@1"].get<double>() == 50.0);
    }
  }
  CHECK(steps == 24);
  CHECK(eval_lines == 3);
  CHECK(bar.last_line_extra().find("img/s") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("bf16 autocast on CPU and the GradScaler's skip/backoff/growth", "[train][amp]") {
  const auto a = at::randn({4, 4}), m = at::randn({4, 4});
  {
    taxon::train::AutocastScope scope(at::kCPU, taxon::train::Precision::bf16);
    CHECK(at::mm(a, m).scalar_type() == at::kBFloat16);
  }
  CHECK(at::mm(a, m).scalar_type() == at::kFloat);
  {
    taxon::train::AutocastScope off(at::kCPU, taxon::train::Precision::fp32);
    CHECK(at::mm(a, m).scalar_type() == at::kFloat);
  }
  REQUIRE_TAXON_ERROR(taxon::train::AutocastScope(at::kCPU, taxon::train::Precision::fp16), "train.amp-unsupported");

  // Training under bf16 still learns.
  taxon::seed_everything(9);
  Blobs data(256, 4, 19);
  TinyMlp b(8, 32, 16);
  CosineHead h(4, 16);
  CountingCallback counts;
  Trainer trainer(b, h, TrainerOptions().epochs(3).lr(3e-3).precision(taxon::train::Precision::bf16),
                  Schedule::one_cycle());
  trainer.fit(EpochSource{data.x, data.y, 32, 4}, counts);
  CHECK(counts.losses.back() < 0.7 * counts.losses.front());
  for (const auto& p : b->parameters()) CHECK(p.scalar_type() == at::kFloat);  // master weights stay fp32

  // GradScaler (device-agnostic arithmetic): inf gradients skip the step and halve the scale; clean steps grow it.
  auto w = at::ones({3}).set_requires_grad(true);
  torch::optim::AdamW opt({w}, torch::optim::AdamWOptions(0.1));
  taxon::train::GradScaler scaler(taxon::train::GradScalerOptions().init_scale(8).growth_interval(2));
  scaler.scale(w.sum()).backward();
  CHECK(w.grad()[0].item<double>() == 8.0);
  CHECK(scaler.step(opt));
  CHECK(w.grad()[0].item<double>() == 1.0);  // unscaled before the step
  CHECK(scaler.scale() == 8.0);
  opt.zero_grad();
  (scaler.scale(w.sum()) * std::numeric_limits<float>::infinity()).backward();
  const auto before = w.detach().clone();
  CHECK_FALSE(scaler.step(opt));
  CHECK(at::equal(w.detach(), before));
  CHECK(scaler.scale() == 4.0);
  for (int i = 0; i < 2; ++i) {
    opt.zero_grad();
    scaler.scale(w.sum()).backward();
    CHECK(scaler.step(opt));
  }
  CHECK(scaler.scale() == 8.0);
}

TEST_CASE("final outputs: model.safetensors, backbone.pt and centroids.npy", "[train][outputs]") {
  auto dir = temp_dir("outputs");
  taxon::seed_everything(10);
  TinyMlp b(8, 16, 8);
  CosineHead h(5, 8);
  Trainer trainer(b, h, TrainerOptions().epochs(1), Schedule::constant());
  trainer.save_outputs(dir);
  auto st = taxon::io::load_safetensors(dir / "model.safetensors");
  CHECK(st.tensors.size() == b->named_parameters().size());
  CHECK(at::equal(st.get("fc1.weight"), b->fc1->weight.detach()));
  auto centroids = taxon::io::load_npy(dir / "centroids.npy");
  CHECK(centroids.sizes() == at::IntArrayRef({5, 8}));
  CHECK(at::equal(centroids, h->weight.detach()));
  TinyMlp loaded(8, 16, 8);
  torch::serialize::InputArchive archive;
  archive.load_from((dir / "backbone.pt").string());
  loaded->load(archive);
  CHECK(at::equal(loaded->fc2->weight, b->fc2->weight));
  fs::remove_all(dir);
}

TEST_CASE("final outputs of a ViT record its config, so model.safetensors rebuilds the module alone",
          "[train][outputs]") {
  auto dir = temp_dir("vit_outputs");
  taxon::seed_everything(11);
  auto vit = taxon::backbone::make_vit("tiny");
  CosineHead h(4, vit->options.output_dim());
  Trainer trainer(vit, h, TrainerOptions().epochs(1), Schedule::constant());
  trainer.save_outputs(dir);
  auto rebuilt = taxon::backbone::load_checkpoint(dir / "model.safetensors");
  CHECK(nlohmann::json(rebuilt->options) == nlohmann::json(vit->options));
  vit->eval();
  rebuilt->eval();
  torch::NoGradGuard no_grad;
  auto x = at::randn({2, 3, 32, 32});
  REQUIRE_TENSORS_CLOSE(rebuilt->forward(x), vit->forward(x), 0, 0);
  fs::remove_all(dir);
}

using Pfc = taxon::pfc::PartialFC<taxon::loss::ArcFace, taxon::pfc::UniformNegatives>;
inline Pfc make_pfc(uint64_t seed) {
  return Pfc(taxon::pfc::PartialFCOptions(8, 16).num_feat(12).seed(seed), taxon::loss::ArcFace(16.0, 0.1),
             taxon::pfc::UniformNegatives(0.5));
}

TEST_CASE("Trainer with the real PartialFC head (ArcFace, class sampling, num_feat): learns and resumes bit-exact",
          "[train][pfc]") {
  Blobs data(256, 8, 20);
  const EpochSource source{data.x, data.y, 32, 3};  // 8 batches per epoch
  const auto options = TrainerOptions().epochs(3).lr(3e-3).lr_pfc_weight(5).seed(4);
  taxon::seed_everything(50);
  TinyMlp b1(8, 32, 16, 0.1);
  auto h1 = make_pfc(1);
  Trainer full(b1, h1, options, Schedule::one_cycle());
  CountingCallback counts;
  full.fit(source, counts);
  REQUIRE(counts.losses.size() == 24);
  const double first = (counts.losses[0] + counts.losses[1]) / 2, last = (counts.losses[22] + counts.losses[23]) / 2;
  INFO("first " << first << " last " << last);
  CHECK(last < 0.7 * first);
  {  // nearest-centre accuracy, chance is 1/8
    torch::NoGradGuard ng;
    b1->eval();
    auto e = b1->forward(data.x);
    e = e / e.norm(2, 1, true);
    auto c = h1->centroids();
    c = c / c.norm(2, 1, true);
    const double acc = at::mm(e, c.t()).argmax(1).eq(data.y).to(at::kDouble).mean().item<double>();
    b1->train();
    INFO("accuracy " << acc);
    CHECK(acc > 0.5);
  }
  auto dir = temp_dir("pfc");
  {
    taxon::seed_everything(50);
    TinyMlp b2(8, 32, 16, 0.1);
    auto h2 = make_pfc(1);
    Trainer part(b2, h2, options, Schedule::one_cycle());
    InterruptAt stop{11, dir};
    part.fit(source, stop);
    CHECK(part.global_step() == 11);
  }
  TinyMlp b3(8, 32, 16, 0.1);
  auto h3 = make_pfc(777);  // another sampling seed: its generator state must come from the checkpoint
  Trainer resumed(b3, h3, options, Schedule::one_cycle());
  REQUIRE(resumed.resume(dir));
  resumed.fit(source);
  CHECK(at::equal(h1->weight, h3->weight));
  for (size_t i = 0; i < b1->parameters().size(); ++i) CHECK(at::equal(b1->parameters()[i], b3->parameters()[i]));
  fs::remove_all(dir);
}

struct StopAfter {
  static constexpr HookSet hooks{Hook::should_stop};
  int64_t at;
  template <typename T> bool should_stop(T& t) const { return t.global_step() == at; }
};

TEST_CASE("a second fit() after a stop continues the same run (no schedule restart, no reseed)", "[train][resume]") {
  Blobs data(96, 4, 21);
  const EpochSource source{data.x, data.y, 16, 4};
  const auto options = TrainerOptions().epochs(2).lr(5e-3).seed(8);
  TinyMlp b1(8, 16, 8, 0.2);
  CosineHead h1(4, 8);
  auto b2 = TinyMlp(8, 16, 8, 0.2);
  auto h2 = CosineHead(4, 8);
  {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < b1->parameters().size(); ++i) b2->parameters()[i].copy_(b1->parameters()[i]);
    h2->weight.copy_(h1->weight);
  }
  Trainer full(b1, h1, options, Schedule::one_cycle());
  full.fit(source);
  Trainer twice(b2, h2, options, Schedule::one_cycle());
  auto first = twice.fit(source, StopAfter{3});
  CHECK(first.global_step == 3);
  CHECK(first.stopped_early);
  auto second = twice.fit(source);
  CHECK(second.steps == 9);
  CHECK(twice.schedule().step_count() == 12);
  for (size_t i = 0; i < b1->parameters().size(); ++i) CHECK(at::equal(b1->parameters()[i], b2->parameters()[i]));
  CHECK(at::equal(h1->weight, h2->weight));
}

TEST_CASE("resume restores the run config and the metrics log reads like one run", "[train][resume][callbacks]") {
  auto dir = temp_dir("metrics_resume");
  Blobs data(64, 4, 22);
  const EpochSource source{data.x, data.y, 16, 6};  // 4 steps per epoch
  const auto options = TrainerOptions().epochs(2).lr(1e-2);
  {
    TinyMlp b(8, 16, 8);
    CosineHead h(4, 8);
    Trainer t(b, h, options, Schedule::constant());
    t.set_config({{"dataset", "blobs"}, {"clusters", 4}});
    taxon::train::MetricsLog log(dir / "metrics.jsonl");
    taxon::train::Checkpointing ckpt(dir / "ckpt", /*every_steps=*/3, /*every_epochs=*/0);
    t.fit(source, log, ckpt, StopAfter{5});  // checkpoint at step 3, log written up to step 5, then "killed"
  }
  TinyMlp b(8, 16, 8);
  CosineHead h(4, 8);
  Trainer t(b, h, options, Schedule::constant());
  REQUIRE(t.resume(dir / "ckpt"));
  CHECK(t.global_step() == 3);
  CHECK(t.config().at("dataset") == "blobs");
  taxon::train::MetricsLog log(dir / "metrics.jsonl");
  t.fit(source, log);
  std::ifstream in(dir / "metrics.jsonl");
  std::string line;
  std::vector<int64_t> steps;
  while (std::getline(in, line)) steps.push_back(nlohmann::json::parse(line).at("step").get<int64_t>());
  CHECK(steps == (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  fs::remove_all(dir);
}


// Runs f, which must throw taxon::Error, and returns it; any other exception escapes and fails the test.
template <typename F>
taxon::Error taxon_error_of(F&& f) {
  try {
    f();
  } catch (const taxon::Error& e) {
    return e;
  }
  FAIL("expected a taxon::Error");
  throw std::logic_error("unreachable");
}

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct FirstStep {
  static constexpr HookSet hooks{Hook::on_step_end};
  taxon::train::StepReport report;
  template <typename T> void on_step_end(T&, const taxon::train::StepReport& r) {
    if (r.step == 1) report = r;
  }
};

TEST_CASE("beta1 is never silently overridden by OneCycle's momentum cycling", "[train][schedule][options]") {
  TinyMlp b(8, 16, 4);
  CosineHead h(3, 4);
  // Default OneCycle cycles AdamW's beta1 (PyTorch OneCycleLR cycle_momentum): an explicit beta1 would be ignored.
  const auto e = taxon_error_of([&] { Trainer(b, h, TrainerOptions().beta1(0.5)); });
  CHECK(e.id() == "train.bad-option");
  const std::string msg = e.what();
  CHECK(msg.find("beta1") != std::string::npos);
  CHECK(msg.find("cycle_momentum") != std::string::npos);
  // Upstream parity by default: without beta1 the cycle runs between max_beta1 0.95 and base_beta1 0.85.
  Blobs data(32, 3, 31);
  {
    Trainer t(b, h, TrainerOptions().epochs(1).lr(1e-2));
    FirstStep first;
    t.fit(EpochSource{data.x, data.y, 2, 1}, first);  // 16 steps: the warm-up starts at max_beta1
    CHECK(first.report.beta1 == Approx(0.95));
  }
  // With cycling off, or under a schedule that does not cycle, beta1 is what the optimizer uses.
  for (auto schedule : {Schedule::one_cycle(taxon::train::OneCycleOptions().cycle_momentum(false)), Schedule::constant()}) {
    TinyMlp b2(8, 16, 4);
    CosineHead h2(3, 4);
    Trainer t(b2, h2, TrainerOptions().epochs(1).lr(1e-2).beta1(0.5), schedule);
    t.fit(EpochSource{data.x, data.y, 8, 1});
    auto& g0 = static_cast<torch::optim::AdamWOptions&>(t.optimizer().param_groups()[0].options());
    CHECK(std::get<0>(g0.betas()) == 0.5);
  }
}

TEST_CASE("damaged schedule and scaler states are train.bad-checkpoint errors", "[train][checkpoint]") {
  auto s = Schedule::one_cycle();
  s.start(10, {1e-3, 1e-2});
  auto state = s.state();
  state.erase("max_beta1");
  REQUIRE_TAXON_ERROR(Schedule::one_cycle().load_state(state), "train.bad-checkpoint");
  state = s.state();
  state["t"] = "three";
  REQUIRE_TAXON_ERROR(Schedule::one_cycle().load_state(state), "train.bad-checkpoint");
  REQUIRE_TAXON_ERROR(Schedule::one_cycle().load_state(nlohmann::json::array()), "train.bad-checkpoint");
  taxon::train::GradScaler scaler;
  REQUIRE_TAXON_ERROR(scaler.load_state({{"scale", "big"}, {"growth_tracker", 0}}), "train.bad-checkpoint");
  REQUIRE_TAXON_ERROR(scaler.load_state({{"scale", 2.0}}), "train.bad-checkpoint");
}

TEST_CASE("a damaged checkpoint is a train.bad-checkpoint error naming the file and the key", "[train][checkpoint]") {
  auto dir = temp_dir("damaged");
  Blobs data(64, 4, 23);
  const EpochSource source{data.x, data.y, 16, 7};
  const auto options = TrainerOptions().epochs(1).lr(1e-2);
  fs::path ckpt;
  {
    TinyMlp b(8, 16, 8);
    CosineHead h(4, 8);
    Trainer t(b, h, options);
    t.fit(source);
    ckpt = t.save_checkpoint(dir);
  }
  const std::string original = read_text(ckpt / "trainer.json");
  auto expect_bad = [&](const std::string& file, const std::string& key) {
    INFO("damaged: " << file << " " << key);
    TinyMlp b(8, 16, 8);
    CosineHead h(4, 8);
    Trainer t(b, h, options);
    const auto e = taxon_error_of([&] { t.resume(dir); });
    INFO(e.what());
    CHECK(e.id() == "train.bad-checkpoint");
    CHECK(std::string(e.what()).find(file) != std::string::npos);
    CHECK(std::string(e.what()).find(key) != std::string::npos);
  };
  const std::vector<std::pair<std::string, std::function<void(nlohmann::json&)>>> damages = {
      {"scaler", [](nlohmann::json& j) { j.erase("scaler"); }},
      {"epoch", [](nlohmann::json& j) { j["epoch"] = "three"; }},
      {"'t'", [](nlohmann::json& j) { j["schedule"].erase("t"); }},
      {"growth_tracker", [](nlohmann::json& j) { j["scaler"]["growth_tracker"] = nullptr; }},
      {"accumulation", [](nlohmann::json& j) { j["options"].erase("accumulation"); }},
      {"peak_lrs", [](nlohmann::json& j) { j["schedule"]["peak_lrs"] = "fast"; }},
      {"options", [](nlohmann::json& j) { j["options"] = 3; }},
  };
  for (const auto& [key, damage] : damages) {
    auto j = nlohmann::json::parse(original);
    damage(j.at("trainer"));
    std::ofstream(ckpt / "trainer.json") << j.dump();
    expect_bad("trainer.json", key);
  }
  // The checkpoint's own fields: format and manifest.
  const std::vector<std::pair<std::string, std::function<void(nlohmann::json&)>>> format_damages = {
      {"format", [](nlohmann::json& j) { j["format"] = 99; }},
      {"files", [](nlohmann::json& j) { j.erase("files"); }},
      {"bytes", [](nlohmann::json& j) { j["files"]["head"]["bytes"] = "many"; }},
      {"optimizer", [](nlohmann::json& j) { j["files"].erase("optimizer"); }},
  };
  for (const auto& [key, damage] : format_damages) {
    auto j = nlohmann::json::parse(original);
    damage(j);
    std::ofstream(ckpt / "trainer.json") << j.dump();
    expect_bad("trainer.json", key);
  }
  std::ofstream(ckpt / "trainer.json") << original.substr(0, original.size() / 2);
  expect_bad("trainer.json", "not valid JSON");
  std::ofstream(ckpt / "trainer.json") << original;
  // The binary parts: garbage instead of the optimizer state, a truncated module state.
  const std::string optimizer = read_text(ckpt / "optimizer.pt");
  std::ofstream(ckpt / "optimizer.pt") << std::string(optimizer.size(), 'x');
  expect_bad("optimizer.pt", "optimizer");
  std::ofstream(ckpt / "optimizer.pt") << optimizer;
  const std::string backbone = read_text(ckpt / "backbone.pt");
  std::ofstream(ckpt / "backbone.pt") << backbone.substr(0, backbone.size() / 2);
  expect_bad("backbone.pt", "backbone");
  std::ofstream(ckpt / "backbone.pt") << backbone;
  const std::string rng = read_text(ckpt / "rng.pt");
  std::ofstream(ckpt / "rng.pt") << std::string(rng.size(), '\0');
  expect_bad("rng.pt", "rng");
  std::ofstream(ckpt / "rng.pt") << rng;
  fs::remove(ckpt / "head.pt");
  expect_bad("head.pt", "missing");
  fs::remove_all(dir);
}

TEST_CASE("MetricsLog turns filesystem failures and damaged lines into taxon errors", "[train][callbacks]") {
  auto dir = temp_dir("metrics_errors");
  Blobs data(32, 4, 24);
  const EpochSource source{data.x, data.y, 8, 8};
  std::ofstream(dir / "a-file") << "not a directory";
  {
    TinyMlp b(8, 16, 8);
    CosineHead h(4, 8);
    Trainer t(b, h, TrainerOptions().epochs(1).lr(1e-2));
    taxon::train::MetricsLog log(dir / "a-file" / "metrics.jsonl");
    REQUIRE_TAXON_ERROR(t.fit(source, log), "io.cannot-write");
  }
  {
    TinyMlp b(8, 16, 8);
    CosineHead h(4, 8);
    Trainer t(b, h, TrainerOptions().epochs(2).lr(1e-2));
    t.fit(source, StopAfter{2});
    t.save_checkpoint(dir / "ckpt");
  }
  std::ofstream(dir / "metrics.jsonl") << "{\"event\": \"step\", \"step\": 1}\n{\"event\": \"step\", \"step\": \"two\"}\n";
  TinyMlp b(8, 16, 8);
  CosineHead h(4, 8);
  Trainer t(b, h, TrainerOptions().epochs(2).lr(1e-2));
  REQUIRE(t.resume(dir / "ckpt"));
  taxon::train::MetricsLog log(dir / "metrics.jsonl");
  const auto e = taxon_error_of([&] { t.fit(source, log); });
  CHECK(e.id() == "train.bad-metrics-log");
  CHECK(std::string(e.what()).find("line 2") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("TrainingCheckpoint writes a manifest and still reads format 1 checkpoints", "[train][checkpoint]") {
  auto dir = temp_dir("format1");
  Blobs data(64, 4, 25);
  const EpochSource source{data.x, data.y, 16, 9};
  TinyMlp b(8, 16, 8);
  CosineHead h(4, 8);
  Trainer t(b, h, TrainerOptions().epochs(1).lr(1e-2));
  t.fit(source);
  const auto ckpt = t.save_checkpoint(dir);
  auto doc = nlohmann::json::parse(read_text(ckpt / "trainer.json"));
  CHECK(doc.at("format") == taxon::train::TrainingCheckpoint::kFormat);
  for (const auto& part : taxon::train::TrainingCheckpoint::kParts)
    CHECK(doc.at("files").at(part.part).at("bytes").get<std::uint64_t>() == fs::file_size(ckpt / part.file));
  // Format 1, as taxon wrote it before the manifest: the trainer's state at the top level.
  nlohmann::json v1 = doc.at("trainer");
  v1["format"] = 1;
  std::ofstream(ckpt / "trainer.json") << v1.dump();
  TinyMlp b2(8, 16, 8);
  CosineHead h2(4, 8);
  Trainer resumed(b2, h2, TrainerOptions().epochs(1).lr(1e-2));
  REQUIRE(resumed.resume(dir));
  CHECK(resumed.global_step() == t.global_step());
  const auto saved = all_params(b, h), restored = all_params(b2, h2);
  for (size_t i = 0; i < saved.size(); ++i) CHECK(at::equal(saved[i], restored[i]));
  fs::remove_all(dir);
}

// Callback checks, evaluated at compile time for a stand-in trainer type (the hooks are templates on it).
struct AnyTrainer {};
struct MisspeltHook {
  static constexpr HookSet hooks{Hook::on_step_end};
  template <typename T> void on_step_ned(T&, const taxon::train::StepReport&) {}
};
struct WrongHookParameters {
  static constexpr HookSet hooks{Hook::on_epoch_end};
  template <typename T> void on_epoch_end(T&) {}
};
struct EvaluateReturnsNothing {
  static constexpr HookSet hooks{Hook::evaluate};
  template <typename T> void evaluate(T&, int64_t) {}
};
struct UndeclaredHookMember {
  static constexpr HookSet hooks{};
  template <typename T> void on_evaluated(T&, const taxon::train::Metrics&) {}
};
struct DataMemberNamedLikeHook {
  static constexpr HookSet hooks{};
  bool should_stop = false;
};
struct NonConstShouldStop {
  static constexpr HookSet hooks{Hook::should_stop};
  template <typename T> bool should_stop(T&) { return false; }
};
struct OldHookName {  // written for on_evaluate, which is now on_evaluated
  static constexpr HookSet hooks{Hook::on_evaluated};
  template <typename T> void on_evaluate(T&, const taxon::train::Metrics&) {}
};
struct FinalCallback final {
  static constexpr HookSet hooks{Hook::on_train_begin};
  template <typename T> void on_train_begin(T&) {}
};
struct NoHooksDeclared {
  template <typename T> void on_step_end(T&, const taxon::train::StepReport&) {}
};

TEST_CASE("callback hooks are checked against their declaration at compile time", "[train][callbacks]") {
  using taxon::train::hooks::check;
  STATIC_REQUIRE(check<MisspeltHook, AnyTrainer>().not_callable.contains(Hook::on_step_end));
  STATIC_REQUIRE(check<WrongHookParameters, AnyTrainer>().not_callable.contains(Hook::on_epoch_end));
  STATIC_REQUIRE(check<EvaluateReturnsNothing, AnyTrainer>().not_callable.contains(Hook::evaluate));
  STATIC_REQUIRE(check<UndeclaredHookMember, AnyTrainer>().undeclared.contains(Hook::on_evaluated));
  STATIC_REQUIRE(check<DataMemberNamedLikeHook, AnyTrainer>().undeclared.contains(Hook::should_stop));
  STATIC_REQUIRE(check<NonConstShouldStop, AnyTrainer>().ok());
  STATIC_REQUIRE(check<const NonConstShouldStop, AnyTrainer>().not_callable.contains(Hook::should_stop));
  STATIC_REQUIRE(check<OldHookName, AnyTrainer>().not_callable.contains(Hook::on_evaluated));
  STATIC_REQUIRE(check<FinalCallback, AnyTrainer>().ok());
  STATIC_REQUIRE_FALSE(check<NoHooksDeclared, AnyTrainer>().declares);
  STATIC_REQUIRE(check<NoHooksDeclared, AnyTrainer>().undeclared.empty());  // one error, not one per member
  // Every callback taxon ships, and the ones these tests use, pass.
  STATIC_REQUIRE(check<taxon::train::ProgressBar, AnyTrainer>().ok());
  STATIC_REQUIRE(check<taxon::train::MetricsLog, AnyTrainer>().ok());
  STATIC_REQUIRE(check<taxon::train::Checkpointing, AnyTrainer>().ok());
  STATIC_REQUIRE(check<taxon::train::EarlyStop, AnyTrainer>().ok());
  STATIC_REQUIRE(check<const taxon::train::StopFlag, AnyTrainer>().ok());
  STATIC_REQUIRE(check<taxon::train::Evaluate<taxon::train::Metrics (*)(AnyTrainer&)>, AnyTrainer>().ok());
  STATIC_REQUIRE(check<CountingCallback, AnyTrainer>().ok());
  STATIC_REQUIRE(check<const StopAfter, AnyTrainer>().ok());
}


// ---- faults: full disk, damaged checkpoints, step-0 restarts, time-interval checkpoints --------------------------

struct SimulatedDisk {  // restores an unlimited disk however a test leaves
  explicit SimulatedDisk(std::uint64_t bytes) { taxon::io::simulate_disk_full_after(bytes); }
  ~SimulatedDisk() { taxon::io::simulate_disk_full_after(std::nullopt); }
};
struct CapturedLog {  // log lines of a scope, to check what a fallback says
  std::ostringstream text;
  std::ostream* previous = taxon::log::sink();
  CapturedLog() { taxon::log::set_sink(text); }
  ~CapturedLog() { taxon::log::sink() = previous; }
};

TEST_CASE("a full disk during a checkpoint is io.disk-full and the previous checkpoint stays intact",
          "[train][checkpoint][faults]") {
  auto dir = temp_dir("disk_full");
  Blobs data(64, 4, 31);
  const EpochSource source{data.x, data.y, 16, 3};  // 4 steps per epoch
  TinyMlp b(8, 16, 8);
  CosineHead h(4, 8);
  Trainer t(b, h, TrainerOptions().epochs(2).lr(1e-2), Schedule::constant());
  t.fit(source, StopAfter{4});
  const auto good = t.save_checkpoint(dir, 2);
  t.fit(source);
  // The disk fills up inside optimizer.pt (LibTorch's archive writer, which used to terminate the process).
  const auto budget = fs::file_size(good / "backbone.pt") + fs::file_size(good / "head.pt") + 200;
  {
    SimulatedDisk disk(budget);
    REQUIRE_TAXON_ERROR(t.save_checkpoint(dir, 2), "io.disk-full");
  }
  CHECK(taxon::train::TrainingCheckpoint::latest(dir) == good);
  CHECK_FALSE(fs::exists(dir / "step-000000008"));
  int leftovers = 0;
  for (const auto& e : fs::directory_iterator(dir)) leftovers += e.path().filename().string().find(".tmp.") != std::string::npos;
  CHECK(leftovers == 0);
  // The final outputs too: a full disk leaves no torn model.safetensors / backbone.pt behind.
  {
    SimulatedDisk disk(1000);
    REQUIRE_TAXON_ERROR(t.save_outputs(dir / "final"), "io.disk-full");
  }
  CHECK_FALSE(fs::exists(dir / "final" / "model.safetensors"));
  TinyMlp b2(8, 16, 8);
  CosineHead h2(4, 8);
  Trainer resumed(b2, h2, TrainerOptions().epochs(2).lr(1e-2), Schedule::constant());
  REQUIRE(resumed.resume(dir));
  CHECK(resumed.global_step() == 4);
  fs::remove_all(dir);
}

TEST_CASE("a flipped bit in any checkpoint file is detected and the previous checkpoint is used",
          "[train][checkpoint][faults]") {
  auto dir = temp_dir("bitflip");
  Blobs data(64, 4, 32);
  const EpochSource source{data.x, data.y, 16, 5};  // 4 steps per epoch
  const auto options = TrainerOptions().epochs(2).lr(1e-2);
  {
    TinyMlp b(8, 16, 8);
    CosineHead h(4, 8);
    Trainer t(b, h, options, Schedule::constant());
    t.fit(source, taxon::train::Checkpointing(dir, 0, 1, 2));  // step-4 and step-8
  }
  const auto newest = dir / "step-000000008";
  auto doc = nlohmann::json::parse(read_text(newest / "trainer.json"));
  for (const auto& part : taxon::train::TrainingCheckpoint::kParts)
    CHECK(doc.at("files").at(part.part).at("crc32").get<std::uint32_t>() == taxon::io::file_crc32(newest / part.file));
  auto resumed_step = [&] {
    TinyMlp b(8, 16, 8);
    CosineHead h(4, 8);
    Trainer t(b, h, options, Schedule::constant());
    REQUIRE(t.resume(dir));
    return t.global_step();
  };
  for (const auto& part : taxon::train::TrainingCheckpoint::kParts) {
    INFO("flipped a bit in " << part.file);
    const std::string original = taxon::io::read_file(newest / part.file);
    std::string flipped = original;
    flipped[flipped.size() / 2] ^= 0x10;
    std::ofstream(newest / part.file, std::ios::binary) << flipped;
    CapturedLog log;
    CHECK(resumed_step() == 4);
    CHECK(log.text.str().find(part.file) != std::string::npos);  // says which file is damaged
    CHECK(log.text.str().find("step-000000004") != std::string::npos);  // and which checkpoint it uses instead
    std::ofstream(newest / part.file, std::ios::binary) << original;
  }
  CHECK(resumed_step() == 8);
  // No `latest` pointer but checkpoints present: the newest intact one, and it says so.
  fs::remove(dir / "latest");
  {
    CapturedLog log;
    CHECK(resumed_step() == 8);
    CHECK(log.text.str().find("no 'latest'") != std::string::npos);
  }
  // Nothing intact: an error listing every checkpoint and its damage.
  std::ofstream(newest / "head.pt", std::ios::binary) << "x";
  std::ofstream(dir / "step-000000004" / "rng.pt", std::ios::binary) << "y";
  TinyMlp b(8, 16, 8);
  CosineHead h(4, 8);
  Trainer t(b, h, options, Schedule::constant());
  const auto e = taxon_error_of([&] { t.resume(dir); });
  CHECK(e.id() == "train.bad-checkpoint");
  CHECK(std::string(e.what()).find("head.pt") != std::string::npos);
  CHECK(std::string(e.what()).find("rng.pt") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("a run restarted at step 0 does not repeat its metrics, and a stale checkpoint temporary goes",
          "[train][callbacks][faults]") {
  auto dir = temp_dir("restart0");
  Blobs data(64, 4, 33);
  const EpochSource source{data.x, data.y, 16, 6};  // 4 steps
  // A first attempt killed before its first checkpoint: metrics of steps 1-3 and a half-written checkpoint.
  {
    TinyMlp b(8, 16, 8);
    CosineHead h(4, 8);
    Trainer t(b, h, TrainerOptions().epochs(1).lr(1e-2), Schedule::constant());
    t.fit(source, taxon::train::MetricsLog(dir / "metrics.jsonl", 1, {{"round", 0}}), StopAfter{3});
  }
  fs::create_directories(dir / "ckpt" / ".step-000000004.tmp.999999999.1");
  TinyMlp b(8, 16, 8);
  CosineHead h(4, 8);
  Trainer t(b, h, TrainerOptions().epochs(1).lr(1e-2), Schedule::constant());
  CHECK_FALSE(t.resume(dir / "ckpt"));
  t.fit(source, taxon::train::MetricsLog(dir / "metrics.jsonl", 1, {{"round", 0}}),
        taxon::train::Checkpointing(dir / "ckpt", 0, 1, 2));
  std::ifstream in(dir / "metrics.jsonl");
  std::string line;
  std::vector<int64_t> steps;
  while (std::getline(in, line)) steps.push_back(nlohmann::json::parse(line).at("step").get<int64_t>());
  CHECK(steps == (std::vector<int64_t>{1, 2, 3, 4}));
  CHECK_FALSE(fs::exists(dir / "ckpt" / ".step-000000004.tmp.999999999.1"));
  fs::remove_all(dir);
}

TEST_CASE("Checkpointing by time saves mid-epoch and the run resumes from there bit-exact", "[train][checkpoint][faults]") {
  auto dir = temp_dir("every_minutes");
  Blobs data(96, 4, 34);
  const EpochSource source{data.x, data.y, 16, 7};  // 6 steps per epoch
  const auto options = TrainerOptions().epochs(1).lr(1e-2).seed(3);
  taxon::seed_everything(5);
  TinyMlp b1(8, 16, 8);
  CosineHead h1(4, 8);
  Trainer full(b1, h1, options, Schedule::constant());
  full.fit(source);
  {
    taxon::seed_everything(5);
    TinyMlp b(8, 16, 8);
    CosineHead h(4, 8);
    Trainer t(b, h, options, Schedule::constant());
    // 1e-9 minutes: every step boundary is past the interval; epoch-end checkpoints off.
    t.fit(source, taxon::train::Checkpointing(dir, 0, 0, 0, 1e-9), StopAfter{4});
  }
  CHECK(fs::exists(dir / "step-000000001"));
  CHECK(taxon::train::TrainingCheckpoint::latest(dir) == dir / "step-000000004");
  REQUIRE_TAXON_ERROR(taxon::train::Checkpointing(dir, 0, 1, 2, -1.0), "train.bad-option");
  TinyMlp b2(8, 16, 8);
  CosineHead h2(4, 8);
  Trainer resumed(b2, h2, options, Schedule::constant());
  REQUIRE(resumed.resume(dir));
  CHECK(resumed.batch_in_epoch() == 4);
  resumed.fit(source);
  auto p = all_params(b1, h1), q = all_params(b2, h2);
  for (size_t i = 0; i < p.size(); ++i) CHECK(at::equal(p[i], q[i]));
  fs::remove_all(dir);
}

}  // namespace test_train
