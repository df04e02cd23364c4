// Time per training step and the Trainer's host overhead: Trainer<ViT, PartialFC> vs a hand-written LibTorch loop
// doing the same work (forward, PartialFC loss, backward, OneCycle lr/beta1 update, AdamW step, zero_grad, loss
// read-back). Both run interleaved in the same benchmark iteration so machine-load drift hits them equally.
// Target: trainer overhead <= 5%.
#include "support/context.hpp"

#include "taxon/backbone/vit.hpp"
#include "taxon/pfc/partial_fc.hpp"
#include "taxon/train/trainer.hpp"

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <time.h>

#include <chrono>
#include <vector>

namespace bench_train_step {

using Clock = std::chrono::steady_clock;
using Pfc = taxon::pfc::PartialFC<taxon::loss::ArcFace>;

struct Batch {
  at::Tensor images;
  at::Tensor labels;
};

constexpr int64_t kBatch = 64;
constexpr int64_t kStepsPerEpoch = 8;
constexpr int64_t kClasses = 1000;

struct MlpImpl : torch::nn::Module {
  MlpImpl(int64_t in, int64_t hidden, int64_t out)
      : fc1(register_module("fc1", torch::nn::Linear(in, hidden))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, out))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2(fc1(x.flatten(1)).relu()); }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Mlp);

inline taxon::backbone::VisionTransformer tiny_vit() {
  return taxon::backbone::VisionTransformer(taxon::backbone::VisionTransformerOptions()
                                                .image_size(32)
                                                .patch_size(8)
                                                .width(128)
                                                .layers(4)
                                                .heads(4)
                                                .output_dim(128));
}
inline Mlp tiny_mlp() { return Mlp(3 * 32 * 32, 256, 128); }
// Almost no compute (a 3072→128 linear map): the step is dominated by fixed per-step costs, host overhead shows.
inline Mlp linear_only() { return Mlp(3 * 32 * 32, 4, 128); }
inline Pfc head(uint64_t seed, int64_t classes) {
  return Pfc(taxon::pfc::PartialFCOptions(classes, 128).seed(seed), taxon::loss::ArcFace(32.0, 0.25));
}

inline std::vector<Batch> make_batches(int64_t classes) {
  auto g = taxon::make_generator(1);
  std::vector<Batch> out;
  for (int64_t i = 0; i < kStepsPerEpoch; ++i)
    out.push_back({at::randn({kBatch, 3, 32, 32}, g), at::randint(classes, {kBatch}, g, at::kLong)});
  return out;
}

// Stops fit() at the end of each epoch so one benchmark iteration = one epoch of kStepsPerEpoch steps.
struct StopAtEpochEnd {
  static constexpr taxon::train::HookSet hooks{taxon::train::Hook::on_epoch_end, taxon::train::Hook::should_stop};
  bool stop = false;
  template <typename T> void on_epoch_end(T&, int64_t) { stop = true; }
  template <typename T> bool should_stop(T&) {
    const bool s = stop;
    stop = false;
    return s;
  }
};

// The same work, by hand.
template <typename B>
struct HandLoop {
  B backbone;
  Pfc pfc;
  std::unique_ptr<torch::optim::AdamW> opt;
  taxon::train::Schedule schedule = taxon::train::Schedule::one_cycle();
  HandLoop(B b, Pfc h, const taxon::train::TrainerOptions& o, int64_t total) : backbone(std::move(b)), pfc(std::move(h)) {
    opt = taxon::train::make_adamw(backbone, pfc, o);
    schedule.start(total, {o.lr(), o.lr() * o.lr_pfc_weight()});
  }
  double epoch(const std::vector<Batch>& batches) {
    double last = 0;
    for (const auto& b : batches) {
      auto loss = pfc->forward(backbone->forward(b.images), b.labels);
      last = loss.template item<double>();
      loss.backward();
      schedule.apply(*opt);
      opt->step();
      opt->zero_grad();
      schedule.step();
    }
    return last;
  }
};

inline double cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

template <typename B>
void run(benchmark::State& state, B (*make)(), int64_t classes = kClasses) {
  const auto batches = make_batches(classes);
  const auto options = taxon::train::TrainerOptions().epochs(100000).lr(1e-4).lr_pfc_weight(10).steps_per_epoch(kStepsPerEpoch);
  const int64_t total = options.epochs() * kStepsPerEpoch;
  taxon::train::Trainer trainer(make(), head(1, classes), options, taxon::train::Schedule::one_cycle());
  HandLoop<B> hand(make(), head(1, classes), options, total);
  StopAtEpochEnd stop;
  // Warm-up: allocator and autograd caches.
  trainer.fit(batches, stop);
  hand.epoch(batches);
  // Wall time and process CPU time per arm; CPU time is the steadier figure on a loaded shared VM (it does not
  // count time spent waiting for a core). The arms alternate order so neither always runs on a warmer cache.
  double wall_trainer = 0, wall_hand = 0, cpu_trainer = 0, cpu_hand = 0;
  int64_t iteration = 0;
  auto time_trainer = [&] {
    const auto w0 = Clock::now();
    const double c0 = cpu_seconds();
    trainer.fit(batches, stop);
    cpu_trainer += cpu_seconds() - c0;
    wall_trainer += std::chrono::duration<double>(Clock::now() - w0).count();
  };
  auto time_hand = [&] {
    const auto w0 = Clock::now();
    const double c0 = cpu_seconds();
    benchmark::DoNotOptimize(hand.epoch(batches));
    cpu_hand += cpu_seconds() - c0;
    wall_hand += std::chrono::duration<double>(Clock::now() - w0).count();
  };
  for (auto _ : state) {
    if (iteration++ % 2 == 0) {
      time_trainer();
      time_hand();
    } else {
      time_hand();
      time_trainer();
    }
  }
  const double steps = static_cast<double>(state.iterations() * kStepsPerEpoch);
  state.counters["trainer_ms_per_step"] = 1e3 * wall_trainer / steps;
  state.counters["hand_ms_per_step"] = 1e3 * wall_hand / steps;
  state.counters["overhead_wall_pct"] = 100.0 * (wall_trainer - wall_hand) / wall_hand;
  state.counters["trainer_cpu_ms_per_step"] = 1e3 * cpu_trainer / steps;
  state.counters["hand_cpu_ms_per_step"] = 1e3 * cpu_hand / steps;
  state.counters["overhead_cpu_pct"] = 100.0 * (cpu_trainer - cpu_hand) / cpu_hand;
  state.counters["overhead_cpu_us_per_step"] = 1e6 * (cpu_trainer - cpu_hand) / steps;
  state.counters["img_per_s"] = steps * kBatch / wall_trainer;
}

}  // namespace bench_train_step

// Tiny ViT (32px, patch 8, width 128, 4 layers, 4 heads, D=128) + PartialFC ArcFace (1000 classes), batch 64.
static void BM_TrainStep_TinyViT_PartialFC(benchmark::State& state) {
  bench_train_step::run(state, &bench_train_step::tiny_vit);
}
// MLP (3072→256→128) + PartialFC: a cheap step, so per-step host overhead is most visible.
static void BM_TrainStep_MLP_PartialFC(benchmark::State& state) {
  bench_train_step::run(state, &bench_train_step::tiny_mlp);
}
// A near-empty model and a 16-class head: the per-step fixed cost, i.e. the Trainer's host overhead in microseconds.
static void BM_TrainStep_HostOverhead(benchmark::State& state) {
  bench_train_step::run(state, &bench_train_step::linear_only, 16);
}
BENCHMARK(BM_TrainStep_TinyViT_PartialFC)->Unit(benchmark::kMillisecond)->MinTime(10.0);
BENCHMARK(BM_TrainStep_MLP_PartialFC)->Unit(benchmark::kMillisecond)->MinTime(5.0);
BENCHMARK(BM_TrainStep_HostOverhead)->Unit(benchmark::kMillisecond)->MinTime(5.0);
