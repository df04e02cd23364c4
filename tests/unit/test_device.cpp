// Device placement on the CPU: parsing --device words, refusing an unusable CUDA device up front in every library
// option that takes one, the automatic k-means / kNN backends (faiss on the CPU, unchanged results), uint8 batches
// normalised by a device step in embed() and the Trainer, and checkpoints that carry a GPU run's generator state.
// The GPU halves of these (real CUDA devices, GPU <-> CPU resume) are in tests/gpu/.
#include "taxon/backbone/embed.hpp"
#include "taxon/cluster/kmeans.hpp"
#include "taxon/core/compat.hpp"
#include "taxon/core/device.hpp"
#include "taxon/core/seed.hpp"
#include "taxon/data/transforms.hpp"
#include "taxon/eval/retrieval.hpp"
#include "taxon/eval/taxonomy.hpp"
#include "taxon/train/train.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/nn/functional/normalization.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include <filesystem>
#include <sstream>

#include "support/temp_dir.hpp"
#include "support/tensor_compare.hpp"

namespace test_device {

using taxon::CudaAvailability;
using taxon::parse_device;

const CudaAvailability no_cuda_build{false, 0};
const CudaAvailability cuda_without_gpu{true, 0};
const CudaAvailability two_gpus{true, 2};

// Log lines (info and up) written while alive, for checking what a call said.
struct CapturedLog {
  std::ostringstream text;
  taxon::log::Level level = taxon::log::threshold();
  CapturedLog() {
    taxon::log::set_sink(text);
    taxon::log::set_level(taxon::log::Level::info);
  }
  ~CapturedLog() {
    taxon::log::set_sink(std::cerr);
    taxon::log::set_level(level);
  }
  std::string str() const { return text.str(); }
};

struct FlatMlpImpl : torch::nn::Module {
  FlatMlpImpl(int64_t in, int64_t hidden, int64_t out, double dropout = 0.0)
      : fc1(register_module("fc1", torch::nn::Linear(in, hidden))),
        drop(register_module("drop", torch::nn::Dropout(dropout))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, out))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2(drop(fc1(x.flatten(1)).relu())); }
  torch::nn::Linear fc1;
  torch::nn::Dropout drop;
  torch::nn::Linear fc2;
};
TORCH_MODULE(FlatMlp);

struct CosineHeadImpl : torch::nn::Module {
  CosineHeadImpl(int64_t classes, int64_t dim) : weight(register_parameter("weight", at::randn({classes, dim}) * 0.1)) {}
  at::Tensor forward(const at::Tensor& e, const at::Tensor& labels) {
    namespace F = torch::nn::functional;
    auto logits = 16.0 * at::mm(F::normalize(e, F::NormalizeFuncOptions().dim(1)),
                                F::normalize(weight, F::NormalizeFuncOptions().dim(1)).t());
    return at::cross_entropy_loss(logits, labels);
  }
  at::Tensor centroids() const { return weight; }
  int64_t num_classes() const { return weight.size(0); }
  at::Tensor weight;
};
TORCH_MODULE(CosineHead);

struct Batch {
  at::Tensor images, labels;
};

const std::vector<double> kMean{0.5, 0.4, 0.3}, kStd{0.25, 0.2, 0.3};

// uint8 [N,3,4,4] images and labels, as to_chw() batches, plus the same images as normalize() float batches.
struct ImageBatches {
  std::vector<Batch> u8, f32;
  ImageBatches(int64_t batches, int64_t batch, int64_t classes, uint64_t seed) {
    auto g = taxon::make_generator(seed);
    const auto normalize = taxon::data::normalize(kMean, kStd);
    for (int64_t b = 0; b < batches; ++b) {
      auto y = at::randint(classes, {batch}, g, at::kLong);
      auto hwc = at::randint(256, {batch, 4, 4, 3}, g, at::kLong).to(at::kByte);
      hwc.select(3, 0).add_((y * 40).to(at::kByte).view({batch, 1, 1}));  // a learnable class signal
      std::vector<at::Tensor> floats;
      taxon::data::Rng rng = taxon::make_engine(0);
      for (int64_t i = 0; i < batch; ++i) floats.push_back(normalize(hwc[i], rng));
      u8.push_back({hwc.permute({0, 3, 1, 2}).contiguous(), y});
      f32.push_back({at::stack(floats), y});
    }
  }
};

std::vector<at::Tensor> parameters_of(FlatMlp& b, CosineHead& h) {
  std::vector<at::Tensor> out;
  for (auto& p : b->parameters()) out.push_back(p.detach().clone());
  for (auto& p : h->parameters()) out.push_back(p.detach().clone());
  return out;
}

TEST_CASE("parse_device: auto, cpu, cuda and cuda:N against what CUDA offers", "[core][device]") {
  // cpu is always there; auto takes the first GPU only when one is usable, and says why not otherwise.
  for (const auto& cuda : {no_cuda_build, cuda_without_gpu, two_gpus}) {
    const auto cpu = parse_device("cpu", cuda);
    CHECK(cpu.device == at::Device(at::kCPU));
    CHECK_FALSE(cpu.fell_back());
    CHECK(cpu.describe() == "cpu");
  }
  const auto fallback = parse_device("auto", no_cuda_build);
  CHECK(fallback.device == at::Device(at::kCPU));
  REQUIRE(fallback.fell_back());
  CHECK(fallback.fallback_reason.find("built without CUDA") != std::string::npos);
  CHECK(fallback.describe().rfind("cpu (asked: auto; falling back to CPU: ", 0) == 0);
  CHECK(parse_device("auto", cuda_without_gpu).fallback_reason.find("no GPU is visible") != std::string::npos);
  const auto gpu = parse_device("auto", two_gpus);
  CHECK(gpu.device == at::Device(at::kCUDA, 0));
  CHECK_FALSE(gpu.fell_back());
  CHECK(gpu.describe() == "cuda:0 (asked: auto)");

  // cuda means cuda:0 (an explicit index, so device comparisons match tensors' devices); cuda:N is checked.
  CHECK(parse_device("cuda", two_gpus).device == at::Device(at::kCUDA, 0));
  CHECK(parse_device("cuda:1", two_gpus).device == at::Device(at::kCUDA, 1));
  CHECK(parse_device("cuda:1", two_gpus).describe() == "cuda:1");
  REQUIRE_TAXON_ERROR(parse_device("cuda:2", two_gpus), "core.no-such-device");

  // Without a usable GPU, cuda never falls back: it fails at once, naming what was asked and why.
  for (const auto& cuda : {no_cuda_build, cuda_without_gpu}) {
    for (const char* spec : {"cuda", "cuda:0", "cuda:3"}) {
      REQUIRE_TAXON_ERROR(parse_device(spec, cuda), "core.no-cuda");
      try {
        parse_device(spec, cuda);
      } catch (const taxon::Error& e) {
        const std::string what = e.what();
        CHECK(what.find(std::string("'") + spec + "'") != std::string::npos);
        CHECK(what.find(cuda.built ? "no GPU is visible" : "built without CUDA") != std::string::npos);
      }
    }
  }
  // Anything else is not a device, whatever CUDA offers.
  for (const char* spec : {"", "gpu", "CUDA", "cuda:", "cuda:-1", "cuda:+1", "cuda:1x", " cuda", "cpu:0", "mps"}) {
    INFO("spec '" << spec << "'");
    REQUIRE_TAXON_ERROR(parse_device(spec, two_gpus), "core.bad-device");
    REQUIRE_TAXON_ERROR(parse_device(spec, no_cuda_build), "core.bad-device");
  }
}

TEST_CASE("parse_device on this machine: cuda works exactly when auto picks a GPU", "[core][device]") {
  const auto here = CudaAvailability::query();
  const auto chosen = parse_device("auto");
  if (here.devices == 0) {
    CHECK(chosen.device.is_cpu());
    CHECK(chosen.fell_back());
    REQUIRE_TAXON_ERROR(parse_device("cuda"), "core.no-cuda");
    REQUIRE_TAXON_ERROR(taxon::require_usable(at::Device(at::kCUDA, 0)), "core.no-cuda");
  } else {
    CHECK(chosen.device == at::Device(at::kCUDA, 0));
    CHECK(parse_device("cuda").device == chosen.device);
    REQUIRE_TAXON_ERROR(parse_device("cuda:" + std::to_string(here.devices)), "core.no-such-device");
  }
  taxon::require_usable(at::Device(at::kCPU));
  taxon::require_usable(at::Device(at::kMeta));  // not CUDA: left to LibTorch (and to the callers' own checks)
  taxon::require_usable(at::Device(at::kCUDA, 1), two_gpus);
  REQUIRE_TAXON_ERROR(taxon::require_usable(at::Device(at::kCUDA, 1), CudaAvailability{true, 1}),
                      "core.no-such-device");
  REQUIRE_TAXON_ERROR(taxon::require_usable(at::Device(at::kCUDA, 0), no_cuda_build), "core.no-cuda");
}

TEST_CASE("batch_to_device leaves a CPU batch untouched on the CPU", "[core][device]") {
  auto batch = at::randint(256, {2, 3, 4, 4}, at::kLong).to(at::kByte);
  auto same = taxon::batch_to_device(batch, at::Device(at::kCPU));
  CHECK(same.data_ptr() == batch.data_ptr());
}

TEST_CASE("library options that take a device refuse an unusable CUDA device before any work", "[core][device]") {
  if (CudaAvailability::query().devices > 0) {
    WARN("a GPU is visible: the refusal paths are exercised on machines without one");
    return;
  }
  const at::Device gpu(at::kCUDA, 0);
  auto x = at::randn({40, 8});
  auto labels = at::arange(40, at::kLong) % 4;
  REQUIRE_TAXON_ERROR(taxon::cluster::KMeans(taxon::cluster::KMeansOptions().k(4).device(gpu).verbose(false)).fit(x),
                      "core.no-cuda");
  REQUIRE_TAXON_ERROR(taxon::eval::KnnIndex(x, taxon::eval::KnnOptions().device(gpu)), "core.no-cuda");
  REQUIRE_TAXON_ERROR(taxon::eval::evaluate_retrieval(x, labels, taxon::eval::RetrievalOptions().device(gpu)),
                      "core.no-cuda");
  REQUIRE_TAXON_ERROR(
      taxon::eval::knn_vote_accuracy(x, labels, taxon::eval::KnnVoteOptions().k(3).device(gpu)), "core.no-cuda");
  std::vector<std::string> names(40);
  for (int i = 0; i < 40; ++i) names[static_cast<size_t>(i)] = c10::str("s", i % 4);
  REQUIRE_TAXON_ERROR(taxon::eval::score_columns(x.narrow(0, 0, 10), x.narrow(0, 10, 30),
                                                 {{std::vector<std::string>(names.begin(), names.begin() + 10),
                                                   std::vector<std::string>(names.begin() + 10, names.end())}},
                                                 taxon::eval::TaxonomyEvalOptions().device(gpu)),
                      "core.no-cuda");
  FlatMlp model(48, 16, 8);
  std::vector<Batch> batches{{at::randn({4, 3, 4, 4}), {}}};
  REQUIRE_TAXON_ERROR(taxon::embed(model, batches, taxon::EmbedOptions().device(gpu).show_progress(false)),
                      "core.no-cuda");
  FlatMlp b(48, 16, 8);
  CosineHead h(4, 8);
  using Trainer = taxon::train::Trainer<FlatMlp, CosineHead>;
  REQUIRE_TAXON_ERROR(Trainer(b, h, taxon::train::TrainerOptions().device(gpu)), "core.no-cuda");
  // Nothing was moved: the modules stay usable on the CPU.
  CHECK(b->parameters()[0].device().is_cpu());
}

TEST_CASE("automatic k-means and kNN backends are faiss on the CPU, with the same results", "[cluster][eval][device]") {
  auto g = taxon::make_generator(5);
  auto x = at::randn({300, 16}, g);
  using taxon::cluster::KMeansBackend;
  using taxon::cluster::KMeansOptions;
  const auto base = KMeansOptions().k(12).niter(6).seed(3).min_points_per_centroid(10).verbose(false);
  CHECK(taxon::cluster::placement(base, x.device()).backend == KMeansBackend::faiss);
  CHECK(taxon::cluster::placement(KMeansOptions(base).backend(KMeansBackend::torch), x.device()).backend ==
        KMeansBackend::torch);
  const auto automatic = taxon::cluster::KMeans(base).fit(x);
  const auto faiss = taxon::cluster::KMeans(KMeansOptions(base).backend(KMeansBackend::faiss)).fit(x);
  CHECK(at::equal(automatic.centroids, faiss.centroids));
  CHECK(at::equal(automatic.labels, faiss.labels));

  using taxon::eval::KnnBackend;
  using taxon::eval::KnnOptions;
  const taxon::eval::KnnIndex index(x, KnnOptions());
  CHECK(index.options().backend() == KnnBackend::faiss);
  const auto a = index.search(x.narrow(0, 0, 50), 5);
  const auto f = taxon::eval::KnnIndex(x, KnnOptions().backend(KnnBackend::faiss)).search(x.narrow(0, 0, 50), 5);
  CHECK(at::equal(a.indices, f.indices));
  CHECK(at::equal(a.scores, f.scores));
  CHECK(taxon::eval::KnnIndex(x, KnnOptions().backend(KnnBackend::torch)).options().backend() == KnnBackend::torch);
  auto labels = at::arange(300, at::kLong) % 7;
  const auto ra = taxon::eval::evaluate_retrieval(x, labels);
  const auto rf = taxon::eval::evaluate_retrieval(x, labels, taxon::eval::RetrievalOptions().backend(KnnBackend::faiss));
  CHECK(ra.map_at_r == rf.map_at_r);
  CHECK(ra.precision_at_1 == rf.precision_at_1);
}

TEST_CASE("normalize_on_device: uint8 to_chw batches become exactly the normalize() floats", "[data][device]") {
  const ImageBatches data(2, 6, 3, 7);
  const auto step = taxon::data::normalize_on_device(kMean, kStd);
  for (size_t i = 0; i < data.u8.size(); ++i) CHECK(at::equal(step(data.u8[i].images), data.f32[i].images));
  REQUIRE_TAXON_ERROR(taxon::data::normalize_on_device({0.5, 0.5, 0.5}, {0.2, 0.0, 0.2}), "data.bad-normalize");
  REQUIRE_TAXON_ERROR(taxon::data::normalize_on_device({0.5}, {0.2, 0.2}), "data.bad-normalize");
}

TEST_CASE("embed: uint8 batches with a device step equal the float batches, and are refused without one",
          "[backbone][embed][device]") {
  const ImageBatches data(3, 5, 3, 11);
  FlatMlp model(48, 16, 8);
  const auto opts = taxon::EmbedOptions().show_progress(false);
  const auto from_float = taxon::embed(model, data.f32, opts);
  const auto from_u8 =
      taxon::embed(model, data.u8, taxon::EmbedOptions(opts).device_transform(taxon::data::normalize_on_device(kMean, kStd)));
  CHECK(at::equal(from_float, from_u8));
  REQUIRE_TAXON_ERROR(taxon::embed(model, data.u8, opts), "backbone.bad-input");
}

TEST_CASE("Trainer: uint8 batches normalised by device_transform train exactly like float batches",
          "[train][device]") {
  const ImageBatches data(6, 8, 4, 13);
  const auto options = taxon::train::TrainerOptions().epochs(2).lr(1e-2).seed(3);
  auto run = [&](const std::vector<Batch>& batches, const taxon::train::TrainerOptions& o) {
    taxon::seed_everything(4);
    FlatMlp b(48, 16, 8);
    CosineHead h(4, 8);
    taxon::train::Trainer trainer(b, h, o);
    trainer.fit(batches);
    return parameters_of(b, h);
  };
  const auto float_run = run(data.f32, options);
  const auto u8_run = run(data.u8, taxon::train::TrainerOptions(options)
                                        .device_transform(taxon::data::normalize_on_device(kMean, kStd))
                                        .device(at::Device(at::kCPU)));
  REQUIRE(float_run.size() == u8_run.size());
  for (size_t i = 0; i < float_run.size(); ++i) CHECK(at::equal(float_run[i], u8_run[i]));

  FlatMlp b(48, 16, 8);
  CosineHead h(4, 8);
  taxon::train::Trainer trainer(b, h, options);
  REQUIRE_TAXON_ERROR(trainer.fit(data.u8), "train.bad-batch");
}

TEST_CASE("Trainer: the device rule (backbone's device, or TrainerOptions::device) and trainer.json records it",
          "[train][device][checkpoint]") {
  const ImageBatches data(4, 8, 4, 17);
  FlatMlp b(48, 16, 8);
  CosineHead h(4, 8);
  taxon::train::Trainer trainer(b, h, taxon::train::TrainerOptions().epochs(1).seed(1));
  CHECK(trainer.device() == at::Device(at::kCPU));
  trainer.fit(data.f32);
  taxon::test::TempDir dir("taxon_test_device_state");
  const auto saved = trainer.save_checkpoint(dir.path);
  const auto state = nlohmann::json::parse(taxon::io::read_file(saved / "trainer.json"));
  CHECK(state.at("trainer").at("device") == "cpu");
}

struct CheckpointAndStopAt {  // saves a checkpoint after optimizer step `at`, then stops
  int64_t at;
  std::filesystem::path dir;
  bool fired = false;
  static constexpr taxon::train::HookSet hooks{taxon::train::Hook::on_step_end, taxon::train::Hook::should_stop};
  void on_step_end(taxon::train::Trainer<FlatMlp, CosineHead>& t, const taxon::train::StepReport& r) {
    if (r.step != at) return;
    t.save_checkpoint(dir);
    fired = true;
  }
  bool should_stop(taxon::train::Trainer<FlatMlp, CosineHead>&) const { return fired; }
};

// A GPU run's rng.pt also holds the CUDA generator ("cuda"); on the CPU that state is not needed and the run
// continues exactly as from a CPU checkpoint.
TEST_CASE("a checkpoint carrying a CUDA generator state resumes on the CPU, bit-exact", "[train][device][resume]") {
  const ImageBatches data(5, 8, 4, 19);
  const auto options = taxon::train::TrainerOptions().epochs(3).lr(5e-3).seed(8);
  auto fresh = [] { return std::make_pair(FlatMlp(48, 16, 8, /*dropout=*/0.3), CosineHead(4, 8)); };
  taxon::seed_everything(1);
  auto [b1, h1] = fresh();
  taxon::train::Trainer full(b1, h1, options);
  full.fit(data.f32);

  taxon::test::TempDir dir("taxon_test_device_resume");
  {
    taxon::seed_everything(1);
    auto [b2, h2] = fresh();
    taxon::train::Trainer part(b2, h2, options);
    CheckpointAndStopAt stop{7, dir.path};
    part.fit(data.f32, stop);
    REQUIRE(stop.fired);
  }
  // Add the entry a GPU run writes: the CUDA generator's state (a CPU byte tensor, like every generator state).
  const auto step_dir = *taxon::train::TrainingCheckpoint::latest(dir.path);
  const auto rng_file = step_dir / "rng.pt";
  {
    const std::string bytes = taxon::io::read_file(rng_file);
    auto states = c10::impl::toTypedDict<std::string, at::Tensor>(
        torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end())).toGenericDict());
    states.insert("cuda", at::arange(16, at::kByte));
    const auto out = torch::pickle_save(states);
    taxon::io::write_atomically(rng_file, [&](std::ostream& o) { o.write(out.data(), static_cast<std::streamsize>(out.size())); });
    // The manifest records each part's size and CRC-32, as the GPU run's save would have.
    auto manifest = nlohmann::json::parse(taxon::io::read_file(step_dir / "trainer.json"));
    manifest["files"]["rng"]["bytes"] = out.size();
    manifest["files"]["rng"]["crc32"] = taxon::io::file_crc32(rng_file);
    taxon::io::write_text_atomically(step_dir / "trainer.json", manifest.dump(2));
  }
  taxon::seed_everything(77);
  auto [b3, h3] = fresh();
  taxon::train::Trainer resumed(b3, h3, options);
  {
    CapturedLog log;
    REQUIRE(resumed.resume(dir.path));
    CHECK(log.str().find("written on a GPU; resuming on cpu without its CUDA generator state") != std::string::npos);
  }
  resumed.fit(data.f32);
  const auto p = parameters_of(b1, h1), q = parameters_of(b3, h3);
  for (size_t i = 0; i < p.size(); ++i) CHECK(at::equal(p[i], q[i]));
  // Optimizer state sits on its parameter's device after the resume.
  for (auto& group : resumed.optimizer().param_groups())
    for (auto& param : group.params()) {
      auto& st = static_cast<torch::optim::AdamWParamState&>(
          taxon::compat::optimizer_param_state(resumed.optimizer().state(), param));
      CHECK(st.exp_avg().device() == param.device());
      CHECK(st.exp_avg_sq().device() == param.device());
    }
}

}  // namespace test_device
