// Training, embedding, clustering, retrieval and checkpoints on a CUDA device against the same work on the CPU.
// Every test is tagged [cuda] and REQUIREs a visible GPU: run without one, they fail instead of passing.
// fp32 comparisons switch TF32 off (cuDNN convolutions default to it) so the GPU computes in true fp32.
#include "taxon/backbone/embed.hpp"
#include "taxon/backbone/zoo.hpp"
#include "taxon/cluster/kmeans.hpp"
#include "taxon/core/compat.hpp"
#include "taxon/core/device.hpp"
#include "taxon/core/seed.hpp"
#include "taxon/data/dataset.hpp"
#include "taxon/data/loader.hpp"
#include "taxon/data/transforms.hpp"
#include "taxon/eval/retrieval.hpp"
#include "taxon/eval/taxonomy.hpp"
#include "taxon/loss/margin.hpp"
#include "taxon/pfc/partial_fc.hpp"
#include "taxon/train/train.hpp"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <catch2/catch.hpp>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <vector>

#include "support/temp_dir.hpp"
#include "support/tensor_compare.hpp"

namespace test_gpu_device {

namespace fs = std::filesystem;
using Head = taxon::pfc::PartialFC<taxon::loss::ArcFace, taxon::pfc::UniformNegatives>;
using Vit = taxon::backbone::VisionTransformer;

const at::Device kCpu(at::kCPU);
const at::Device kGpu(at::kCUDA, 0);

// These tests must not pass on a machine where they cannot run.
void require_gpu() {
  const auto cuda = taxon::CudaAvailability::query();
  INFO(cuda.unavailable_reason());
  REQUIRE(cuda.devices > 0);
}

// TF32 off for the test's lifetime (cuDNN convolutions use it by default; cuBLAS matmuls already do not).
struct TrueFp32 {
  bool cudnn = at::globalContext().allowTF32CuDNN(), cublas = at::globalContext().allowTF32CuBLAS();
  TrueFp32() {
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
  }
  ~TrueFp32() {
    at::globalContext().setAllowTF32CuDNN(cudnn);
    at::globalContext().setAllowTF32CuBLAS(cublas);
  }
};

struct Batch {
  at::Tensor images, labels;
};

const std::vector<double> kMean{0.2860, 0.2860, 0.2860}, kStd{0.3530, 0.3530, 0.3530};

// Images built around `prototypes` patterns (class = prototype) with small noise: a random-init ViT maps them
// to well separated clusters, so k-means and kNN have one right answer on both devices. uint8 [N,3,28,28].
at::Tensor prototype_images(int64_t n, int64_t prototypes, uint64_t seed, at::Tensor* classes) {
  auto g = taxon::make_generator(seed);
  auto protos = at::randint(256, {prototypes, 3, 28, 28}, g, at::kLong);
  auto y = at::arange(n, at::kLong) % prototypes;
  auto noise = at::randint(-6, 7, {n, 3, 28, 28}, g, at::kLong);
  if (classes) *classes = y;
  return (protos.index_select(0, y) + noise).clamp(0, 255).to(at::kByte);
}

// Float batches as the CPU path's normalize() would make them (same constants and operation order).
at::Tensor normalized(const at::Tensor& u8) { return taxon::data::normalize_batch(u8, kMean, kStd); }

std::vector<Batch> batches_of(const at::Tensor& images, const at::Tensor& labels, int64_t batch) {
  std::vector<Batch> out;
  for (int64_t s = 0; s + batch <= images.size(0); s += batch)
    out.push_back({images.narrow(0, s, batch), labels.narrow(0, s, batch)});
  return out;
}

std::vector<at::Tensor> parameters_on_cpu(torch::nn::Module& a, torch::nn::Module& b) {
  std::vector<at::Tensor> out;
  for (auto& p : a.parameters()) out.push_back(p.detach().cpu().clone());
  for (auto& p : b.parameters()) out.push_back(p.detach().cpu().clone());
  return out;
}

// ViT demo28 + PartialFC (ArcFace, 1003 classes: not a multiple of any kernel tile, half of them sampled per step),
// built from the same seed, so CPU and GPU runs start from identical weights.
std::pair<Vit, Head> fresh_model(uint64_t seed) {
  taxon::seed_everything(seed);
  auto vit = taxon::backbone::make_vit("demo28");
  Head head(taxon::pfc::PartialFCOptions(1003, vit->options.output_dim()).seed(seed), taxon::loss::ArcFace(32, 0.3),
            taxon::pfc::UniformNegatives(0.5));
  return {vit, head};
}

// Step losses and reports, for comparing runs step by step.
struct StepLog {
  std::vector<taxon::train::StepReport> steps;
  static constexpr taxon::train::HookSet hooks{taxon::train::Hook::on_step_end};
  template <typename T> void on_step_end(T&, const taxon::train::StepReport& r) { steps.push_back(r); }
};

// Stops after `at` optimizer steps with a checkpoint there.
struct StopAt {
  int64_t at;
  fs::path dir;
  bool fired = false;
  static constexpr taxon::train::HookSet hooks{taxon::train::Hook::on_step_end, taxon::train::Hook::should_stop};
  template <typename T> void on_step_end(T& t, const taxon::train::StepReport& r) {
    if (r.step != at) return;
    t.save_checkpoint(dir);
    fired = true;
  }
  template <typename T> bool should_stop(T&) const { return fired; }
};

// The first optimizer step's gradients, on the CPU.
struct FirstGradients {
  std::vector<at::Tensor>* out;
  static constexpr taxon::train::HookSet hooks{taxon::train::Hook::on_gradients};
  template <typename T> void on_gradients(T& t) {
    if (!out->empty()) return;
    for (auto& g : t.optimizer().param_groups())
      for (auto& p : g.params()) out->push_back(p.grad().detach().cpu().clone());
  }
};

// A small MLP with dropout (the ViTs here have none), to see the CUDA generator at work.
struct DropMlpImpl : torch::nn::Module {
  DropMlpImpl()
      : fc1(register_module("fc1", torch::nn::Linear(3 * 28 * 28, 64))),
        drop(register_module("drop", torch::nn::Dropout(0.5))),
        fc2(register_module("fc2", torch::nn::Linear(64, 32))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2(drop(fc1(x.flatten(1)).relu())); }
  torch::nn::Linear fc1;
  torch::nn::Dropout drop;
  torch::nn::Linear fc2;
};
TORCH_MODULE(DropMlp);

// A large adam_eps keeps AdamW's update proportional to the gradient, so fp32 rounding differences between the
// devices stay rounding-sized in the weights (with 1e-8, a near-zero gradient's sign decides a whole lr step).
taxon::train::TrainerOptions step_options() {
  return taxon::train::TrainerOptions().epochs(1).lr(1e-3).adam_eps(1e-3).weight_decay(0.05).seed(5);
}

TEST_CASE("Trainer steps on CUDA equal the same steps on the CPU (fp32, fused CUDA head)", "[cuda][train]") {
  require_gpu();
  TrueFp32 fp32;
  const auto images = normalized(prototype_images(96, 8, 3, nullptr));
  const auto batches = batches_of(images, at::randint(1003, {96}, taxon::make_generator(4), at::kLong), 32);
  auto run = [&](at::Device device, std::vector<at::Tensor>* grads) {
    auto [vit, head] = fresh_model(11);
    taxon::train::Trainer trainer(vit, head, step_options().device(device));
    REQUIRE(trainer.device() == device);
    REQUIRE(vit->parameters()[0].device() == device);
    REQUIRE(head->weight.device() == device);
    FirstGradients capture{grads};
    StepLog log;
    trainer.fit(batches, log, capture);
    return std::make_pair(log, parameters_on_cpu(*vit, *head));
  };
  std::vector<at::Tensor> g_cpu, g_gpu;
  const auto [log_cpu, p_cpu] = run(kCpu, &g_cpu);
  const auto [log_gpu, p_gpu] = run(kGpu, &g_gpu);
  REQUIRE(log_cpu.steps.size() == 3);
  REQUIRE(log_gpu.steps.size() == 3);
  for (size_t s = 0; s < 3; ++s) CHECK(log_gpu.steps[s].loss == Approx(log_cpu.steps[s].loss).epsilon(1e-5));
  REQUIRE(g_cpu.size() == g_gpu.size());
  for (size_t i = 0; i < g_cpu.size(); ++i) {
    INFO("gradient " << i);
    CHECK_TENSORS_CLOSE(g_gpu[i], g_cpu[i], 1e-3, 1e-5 * g_cpu[i].abs().max().item<double>() + 1e-9);
  }
  for (size_t i = 0; i < p_cpu.size(); ++i) {
    INFO("parameter " << i);
    CHECK_TENSORS_CLOSE(p_gpu[i], p_cpu[i], 1e-4, 1e-5);
  }
}

TEST_CASE("bf16 autocast and fp16 with the GradScaler train on CUDA with finite losses close to fp32",
          "[cuda][train][amp]") {
  require_gpu();
  CHECK(taxon::train::GradScalerOptions().growth_interval() == 200);  // UNICOM's value (PyTorch's is 2000)
  const auto images = normalized(prototype_images(192, 8, 6, nullptr));
  const auto batches = batches_of(images, at::randint(1003, {192}, taxon::make_generator(7), at::kLong), 32);
  auto run = [&](taxon::train::Precision precision) {
    auto [vit, head] = fresh_model(12);
    taxon::train::Trainer trainer(vit, head, step_options().device(kGpu).precision(precision));
    StepLog log;
    trainer.fit(batches, log);
    return std::make_pair(log, parameters_on_cpu(*vit, *head));
  };
  const auto [fp32, p32] = run(taxon::train::Precision::fp32);
  const auto [bf16, pbf] = run(taxon::train::Precision::bf16);
  const auto [fp16, p16] = run(taxon::train::Precision::fp16);
  REQUIRE(fp32.steps.size() == 6);
  REQUIRE(bf16.steps.size() == 6);
  REQUIRE(fp16.steps.size() == 6);
  // The first step starts from the same weights: its loss differs only by the forward's precision.
  CHECK(bf16.steps[0].loss == Approx(fp32.steps[0].loss).epsilon(0.03));
  CHECK(fp16.steps[0].loss == Approx(fp32.steps[0].loss).epsilon(0.01));
  CHECK(fp16.steps[0].loss_scale == 65536.0);
  bool fp16_on_track = true;  // no fp16 step skipped yet: its weights follow the fp32 run's
  int stepped = 0;
  for (size_t s = 0; s < 6; ++s) {
    INFO("step " << s << ": fp32 " << fp32.steps[s].loss << ", bf16 " << bf16.steps[s].loss << ", fp16 "
                 << fp16.steps[s].loss << " (scale " << fp16.steps[s].loss_scale << ")");
    CHECK(std::isfinite(bf16.steps[s].loss));
    CHECK(std::isfinite(fp16.steps[s].loss));
    CHECK(bf16.steps[s].loss == Approx(fp32.steps[s].loss).epsilon(0.1));
    if (fp16_on_track) CHECK(fp16.steps[s].loss == Approx(fp32.steps[s].loss).epsilon(0.1));
    // The scaler's rule: an overflow skips the step and halves the scale; growth waits 200 clean steps.
    if (s + 1 < 6)
      CHECK(fp16.steps[s + 1].loss_scale == fp16.steps[s].loss_scale * (fp16.steps[s].skipped ? 0.5 : 1.0));
    fp16_on_track = fp16_on_track && !fp16.steps[s].skipped;
    stepped += fp16.steps[s].skipped ? 0 : 1;
  }
  CHECK(stepped >= 1);  // loss scaling let fp16 steps through
  // Mixed precision still trains the fp32 master weights.
  for (const auto* p : {&pbf, &p16})
    for (size_t i = 0; i < p32.size(); ++i) CHECK(at::isfinite((*p)[i]).all().item<bool>());
}

// A Dataset of in-memory HWC uint8 images (grey, 28x28, like Fashion-MNIST) for the loader test.
class GreyImages {
 public:
  explicit GreyImages(at::Tensor hwc) : hwc_(std::move(hwc)), taxonomy_({"class"}, {taxon::data::LabelMap({"a", "b"})}) {}
  int64_t size() const { return hwc_.size(0); }
  taxon::data::Sample get(int64_t i) const { return {hwc_[i].clone(), labels(i)}; }
  std::vector<int64_t> labels(int64_t i) const { return {i % 2}; }
  const taxon::data::Taxonomy& taxonomy() const { return taxonomy_; }

 private:
  at::Tensor hwc_;
  taxon::data::Taxonomy taxonomy_;
};

TEST_CASE("loader: pinned uint8 batches, copied non-blocking and normalised on the GPU, equal the CPU floats",
          "[cuda][data]") {
  require_gpu();
  auto hwc = at::randint(256, {70, 28, 28, 1}, taxon::make_generator(8), at::kLong).to(at::kByte);
  auto dataset = std::make_shared<const GreyImages>(hwc);
  const auto options = taxon::data::LoaderOptions().batch_size(16).workers(2).shuffle(true).seed(3);
  taxon::data::Loader<GreyImages> gpu_loader(dataset, taxon::data::to_chw(3), taxon::data::LoaderOptions(options).pin_memory(true));
  taxon::data::Loader<GreyImages> cpu_loader(dataset, taxon::data::normalize(kMean, kStd), options);
  const auto step = taxon::data::normalize_on_device(kMean, kStd);
  std::vector<at::Tensor> expected;
  for (auto& b : cpu_loader.epoch(1)) expected.push_back(b.images.clone());
  size_t i = 0;
  for (auto& b : gpu_loader.epoch(1)) {
    REQUIRE(i < expected.size());
    CHECK(b.images.scalar_type() == at::kByte);
    CHECK(b.images.is_pinned());
    CHECK(b.labels.is_pinned());
    const auto on_gpu = taxon::batch_to_device(b.images, kGpu);
    CHECK(on_gpu.device() == kGpu);
    const auto x = step(on_gpu);
    CHECK(x.device() == kGpu);
    CHECK(at::equal(x.cpu(), expected[i]));  // normalize_batch is bit-identical to normalize(), on the GPU too
    ++i;
  }
  CHECK(i == expected.size());

  // The Trainer takes the same pinned uint8 batches with device_transform, as taxon-unicom does on CUDA.
  auto [vit, head] = fresh_model(13);
  taxon::train::Trainer trainer(vit, head, step_options().device(kGpu).device_transform(step));
  const auto summary = trainer.fit([&](int64_t e) { return gpu_loader.epoch(e); }, StepLog{});
  CHECK(summary.steps == 5);
  CHECK(std::isfinite(summary.last_loss));
}

TEST_CASE("embed + k-means + kNN on the GPU equal the CPU results", "[cuda][backbone][cluster][eval]") {
  require_gpu();
  TrueFp32 fp32;
  at::Tensor classes;
  const auto u8 = prototype_images(400, 8, 9, &classes);
  std::vector<Batch> float_batches, pinned_batches;
  for (int64_t s = 0; s < u8.size(0); s += 64) {
    const auto part = u8.narrow(0, s, std::min<int64_t>(64, u8.size(0) - s));
    float_batches.push_back({normalized(part), {}});
    pinned_batches.push_back({part.pin_memory(), {}});
  }
  taxon::seed_everything(21);
  auto vit = taxon::backbone::make_vit("demo28");
  const auto quiet = taxon::EmbedOptions().show_progress(false);
  const auto emb_cpu = taxon::embed(vit, float_batches, quiet);
  vit->to(kGpu);
  const auto emb_gpu = taxon::embed(vit, pinned_batches,
                                    taxon::EmbedOptions(quiet).device_transform(taxon::data::normalize_on_device(kMean, kStd)));
  CHECK(emb_gpu.device() == kCpu);  // embed() gathers on the CPU wherever it ran
  REQUIRE_TENSORS_CLOSE(emb_gpu, emb_cpu, 1e-4, 1e-5);

  // k-means: the automatic backend is LibTorch on GPU features and faiss on CPU ones; an explicit faiss backend
  // moves GPU features to the CPU.
  using taxon::cluster::KMeansBackend;
  using taxon::cluster::KMeansOptions;
  const auto km = KMeansOptions().k(8).niter(10).seed(2).spherical(true).min_points_per_centroid(1).verbose(false);
  CHECK(taxon::cluster::placement(km, kGpu).backend == KMeansBackend::torch);
  CHECK(taxon::cluster::placement(km, kCpu).backend == KMeansBackend::faiss);
  CHECK(taxon::cluster::placement(KMeansOptions(km).backend(KMeansBackend::faiss), kGpu).device == kCpu);
  const auto unit = [](const at::Tensor& x) { return x / x.norm(2, {1}, true); };
  const auto on_cpu = taxon::cluster::KMeans(KMeansOptions(km).backend(KMeansBackend::torch)).fit(unit(emb_cpu));
  const auto on_gpu = taxon::cluster::KMeans(km).fit(unit(emb_gpu).to(kGpu));
  const auto via_device = taxon::cluster::KMeans(KMeansOptions(km).device(kGpu)).fit(unit(emb_gpu));
  CHECK(on_gpu.centroids.device() == kGpu);
  CHECK(via_device.centroids.device() == kGpu);
  CHECK(at::equal(on_gpu.labels, on_cpu.labels));
  CHECK(at::equal(via_device.labels, on_cpu.labels));
  REQUIRE_TENSORS_CLOSE(on_gpu.centroids.cpu(), on_cpu.centroids, 1e-4, 1e-5);

  // kNN retrieval in small query blocks on the GPU against faiss on the CPU.
  using taxon::eval::RetrievalOptions;
  const auto r_cpu = taxon::eval::evaluate_retrieval(emb_cpu, classes);
  const auto r_gpu = taxon::eval::evaluate_retrieval(emb_gpu, classes, RetrievalOptions().device(kGpu).chunk_size(37));
  CHECK(r_gpu.map_at_r == Approx(r_cpu.map_at_r).epsilon(1e-6));
  CHECK(r_gpu.precision_at_1 == Approx(r_cpu.precision_at_1).epsilon(1e-6));
  CHECK(r_gpu.recall_at(5) == Approx(r_cpu.recall_at(5)).epsilon(1e-6));
  const auto v_cpu = taxon::eval::knn_vote_accuracy(emb_cpu, classes, taxon::eval::KnnVoteOptions().k(10));
  const auto v_gpu = taxon::eval::knn_vote_accuracy(emb_gpu.to(kGpu), classes, taxon::eval::KnnVoteOptions().k(10).chunk_size(50));
  CHECK(v_gpu.top1 == Approx(v_cpu.top1).epsilon(1e-6));
  // The seeds' table, its blocks on the GPU.
  std::vector<std::string> names;
  for (int64_t i = 0; i < classes.size(0); ++i) names.push_back(c10::str("c", classes[i].item<int64_t>()));
  taxon::eval::TaxonomyColumns cols;
  cols.taxa.assign(names.size(), "All");
  cols.ranks.emplace_back("species", names);
  const auto opts = taxon::eval::TaxonomyEvalOptions().groups({"All"}).include_all(false).chunk_size(50);
  const auto t_cpu = taxon::eval::TaxonomyEvaluator(opts).evaluate(emb_cpu, cols);
  const auto t_gpu = taxon::eval::TaxonomyEvaluator(taxon::eval::TaxonomyEvalOptions(opts).device(kGpu)).evaluate(emb_gpu, cols);
  CHECK(t_gpu.to_csv() == t_cpu.to_csv());
}

// Trains `steps_before` steps on `first`, checkpoints, resumes the rest on `second`; returns the final weights.
std::vector<at::Tensor> interrupted_run(at::Device first, at::Device second, const std::vector<Batch>& batches,
                                        const fs::path& dir, std::vector<std::string>* optimizer_devices) {
  {
    auto [vit, head] = fresh_model(14);
    taxon::train::Trainer trainer(vit, head, step_options().epochs(2).device(first));
    StopAt stop{3, dir};
    trainer.fit(batches, stop);
    REQUIRE(stop.fired);
  }
  auto [vit, head] = fresh_model(99);  // different weights: all must come from the checkpoint
  taxon::train::Trainer trainer(vit, head, step_options().epochs(2).device(second));
  REQUIRE(trainer.resume(dir));
  for (auto& group : trainer.optimizer().param_groups())
    for (auto& p : group.params()) {
      auto& st = static_cast<torch::optim::AdamWParamState&>(
          taxon::compat::optimizer_param_state(trainer.optimizer().state(), p));
      optimizer_devices->push_back(st.exp_avg().device().str() + "/" + st.exp_avg_sq().device().str());
    }
  trainer.fit(batches);
  CHECK(trainer.global_step() == 6);
  return parameters_on_cpu(*vit, *head);
}

TEST_CASE("a checkpoint saved on the GPU resumes on the CPU and the other way round", "[cuda][train][resume]") {
  require_gpu();
  TrueFp32 fp32;
  const auto images = normalized(prototype_images(96, 8, 15, nullptr));
  const auto batches = batches_of(images, at::randint(1003, {96}, taxon::make_generator(16), at::kLong), 32);
  // Uninterrupted references, one per device.
  auto straight = [&](at::Device device) {
    auto [vit, head] = fresh_model(14);
    taxon::train::Trainer trainer(vit, head, step_options().epochs(2).device(device));
    trainer.fit(batches);
    return parameters_on_cpu(*vit, *head);
  };
  const auto ref_cpu = straight(kCpu), ref_gpu = straight(kGpu);
  for (const auto& [first, second] : {std::pair{kGpu, kCpu}, std::pair{kCpu, kGpu}}) {
    INFO("saved on " << first.str() << ", resumed on " << second.str());
    taxon::test::TempDir dir("taxon_gpu_resume");
    std::vector<std::string> devices;
    const auto got = interrupted_run(first, second, batches, dir.path, &devices);
    REQUIRE(!devices.empty());
    for (const auto& d : devices) CHECK(d == second.str() + "/" + second.str());
    const auto& ref = second.is_cuda() ? ref_gpu : ref_cpu;
    for (size_t i = 0; i < ref.size(); ++i) {
      INFO("parameter " << i);
      CHECK_TENSORS_CLOSE(got[i], ref[i], 1e-4, 1e-5);
    }
  }
}

// Dropout on the GPU draws from the CUDA generator, whose state the checkpoint carries: a GPU run resumed on the
// GPU continues with the same dropout masks (without it they would differ entirely).
TEST_CASE("a GPU checkpoint restores the CUDA generator: resumed dropout matches the uninterrupted run",
          "[cuda][train][resume]") {
  require_gpu();
  TrueFp32 fp32;
  const auto images = normalized(prototype_images(160, 50, 17, nullptr));
  const auto batches = batches_of(images, at::randint(50, {160}, taxon::make_generator(18), at::kLong), 32);
  using MlpHead = taxon::pfc::PartialFC<taxon::loss::ArcFace>;
  auto fresh = [](uint64_t seed) {
    taxon::seed_everything(seed);
    return std::make_pair(DropMlp(), MlpHead(taxon::pfc::PartialFCOptions(50, 32).seed(1), taxon::loss::ArcFace(32, 0.3)));
  };
  const auto options = step_options().epochs(2).device(kGpu);
  auto [b1, h1] = fresh(30);
  taxon::train::Trainer full(b1, h1, options);
  full.fit(batches);
  taxon::test::TempDir dir("taxon_gpu_rng");
  {
    auto [b2, h2] = fresh(30);
    taxon::train::Trainer part(b2, h2, options);
    StopAt stop{7, dir.path};
    part.fit(batches, stop);
    REQUIRE(stop.fired);
  }
  at::rand({1000}, at::TensorOptions().device(kGpu));  // move the CUDA generator on after the checkpoint
  auto [b3, h3] = fresh(31);
  taxon::train::Trainer resumed(b3, h3, options);
  REQUIRE(resumed.resume(dir.path));
  resumed.fit(batches);
  const auto p = parameters_on_cpu(*b1, *h1), q = parameters_on_cpu(*b3, *h3);
  for (size_t i = 0; i < p.size(); ++i) {
    INFO("parameter " << i);
    CHECK_TENSORS_CLOSE(q[i], p[i], 1e-5, 1e-6);
  }
}

}  // namespace test_gpu_device
