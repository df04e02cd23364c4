// Data parallelism across ranks (run by taxon_launch with 2 ranks): weight broadcast, gradient averaging,
// synchronised batch norm. Every rank runs the same tests in the same order.
#include <catch2/catch.hpp>

#include "dist/dist_support.hpp"
#include "support/tensor_compare.hpp"
#include "support/temp_dir.hpp"
#include "taxon/backbone/vit.hpp"
#include "taxon/dist/data_parallel.hpp"
#include "taxon/dist/sync_batch_norm.hpp"
#include "taxon/loss/margin.hpp"
#include "taxon/pfc/partial_fc.hpp"
#include "taxon/pfc/sampler.hpp"
#include "taxon/train/trainer.hpp"

#include <ATen/ATen.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/linear.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace test_data_parallel {
inline taxon::dist::ProcessGroup& two_ranks() {
  auto& group = taxon::test::dist_group();
  REQUIRE(group.world_size() == 2);  // run with taxon_launch 2
  return group;
}

using Head = taxon::pfc::PartialFC<taxon::loss::Combined, taxon::pfc::AllClasses>;

// The whole head on every rank, fed the global batch: every rank computes the same loss and head gradient, and its
// own rows' embedding gradient (×W, as upstream's AllGatherFunc, so the Trainer's average restores it). It isolates
// the Trainer's data parallelism (the sharded PartialFC head is tested with the process group).
class GatheredHeadImpl : public torch::nn::Module {
 public:
  GatheredHeadImpl(Head inner, taxon::dist::ProcessGroup group) : inner(register_module("inner", inner)), group_(group) {}
  at::Tensor forward(const at::Tensor& embeddings, const at::Tensor& labels) {
    const int world = group_.world_size(), rank = group_.rank();
    const int64_t b = embeddings.size(0);
    const at::Tensor all = group_.all_gather(embeddings.detach().contiguous());
    const at::Tensor all_labels = group_.all_gather(labels.contiguous());
    if (embeddings.requires_grad() && world > 1)
      embeddings.register_hook([world](const at::Tensor& g) { return g * static_cast<double>(world); });
    const at::Tensor rows = at::cat({all.narrow(0, 0, rank * b), embeddings, all.narrow(0, (rank + 1) * b, (world - rank - 1) * b)});
    return inner->forward(rows, all_labels);
  }
  at::Tensor centroids() const { return inner->centroids(); }
  int64_t num_classes() const { return inner->num_classes(); }
  at::Generator& generator() { return inner->generator(); }
  Head inner;

 private:
  taxon::dist::ProcessGroup group_;
};
TORCH_MODULE(GatheredHead);

struct Batch {
  at::Tensor images, labels;
};

// 48 images of 8x8 in 6 classes; global batches of 16. A rank of `world` gets rows [16k + r*16/world, ...) of batch k.
struct Data {
  at::Tensor images, labels;
  Data() {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
    images = at::randn({48, 3, 8, 8}, gen);
    labels = at::arange(48, at::kLong).remainder(6);
  }
  std::vector<Batch> epoch(int64_t epoch, int rank, int world) const {
    std::vector<Batch> out;
    const at::Tensor order = at::randperm(48, at::make_generator<at::CPUGeneratorImpl>(100 + epoch), at::kLong);
    const int64_t b = 16 / world;
    for (int64_t k = 0; k < 3; ++k) {
      const at::Tensor rows = order.narrow(0, 16 * k + rank * b, b);
      out.push_back({images.index_select(0, rows), labels.index_select(0, rows)});
    }
    return out;
  }
};

inline taxon::backbone::VisionTransformer vit(uint64_t seed, double drop_path) {
  at::manual_seed(seed);
  return taxon::backbone::VisionTransformer(taxon::backbone::VisionTransformerOptions()
                                                .layout(taxon::backbone::Layout::unicom)
                                                .image_size(8)
                                                .patch_size(4)
                                                .width(16)
                                                .layers(1)
                                                .heads(2)
                                                .output_dim(8)
                                                .activation(taxon::backbone::Activation::relu6)
                                                .drop_path_rate(drop_path));
}

inline Head head() {
  return Head(taxon::pfc::PartialFCOptions(6, 8).seed(5), taxon::loss::Combined(taxon::loss::CombinedOptions(16, 1, 0.2, 0)));
}

using Trainer = taxon::train::Trainer<taxon::backbone::VisionTransformer, GatheredHead>;

// adam_eps 1e-6: the ViT's ln_post bias gets an exactly-zero gradient in theory (the head's batch norm removes any
// shift), i.e. float noise, which AdamW with eps 1e-8 turns into steps of ±lr; real gradients here are >= 1e-4.
inline taxon::train::TrainerOptions options(taxon::dist::ProcessGroup group) {
  return taxon::train::TrainerOptions().epochs(2).lr(1e-3).lr_pfc_weight(5).clip_grad_norm(1.0).adam_eps(1e-6).seed(11)
      .process_group(group);
}

// Losses per step.
struct LossLog {
  static constexpr taxon::train::HookSet hooks{taxon::train::Hook::on_step_end};
  std::vector<double>* losses;
  template <typename T>
  void on_step_end(T&, const taxon::train::StepReport& r) { losses->push_back(r.loss); }
};
// Stops after optimizer step `at`.
struct StopAt {
  static constexpr taxon::train::HookSet hooks{taxon::train::Hook::should_stop};
  int64_t at;
  template <typename T>
  bool should_stop(T& t) const { return t.global_step() == at; }
};

// Every tensor of `module` equal on all ranks, bit for bit.
inline bool same_on_every_rank(torch::nn::Module& module, taxon::dist::ProcessGroup& group) {
  bool same = true;
  for (const auto& p : module.named_parameters(true)) {
    const at::Tensor all = group.all_gather(p.value().detach().unsqueeze(0).contiguous());
    for (int64_t r = 1; r < all.size(0); ++r) same = same && at::equal(all[r], all[0]);
  }
  return same;
}
}  // namespace test_data_parallel

TEST_CASE("broadcast_module_: every rank gets rank 0's parameters and buffers", "[data-parallel]") {
  auto& group = test_data_parallel::two_ranks();
  at::manual_seed(100 + group.rank());  // a different initialisation on every rank
  torch::nn::BatchNorm1d bn(4);
  torch::nn::Linear linear(3, 4);
  {
    at::NoGradGuard no_grad;
    bn->running_mean.fill_(static_cast<float>(group.rank() + 1));
  }
  at::manual_seed(100);
  torch::nn::Linear rank0_linear(3, 4);  // what rank 0 drew
  taxon::dist::broadcast_module_(*linear, group);
  taxon::dist::broadcast_module_(*bn, group);
  REQUIRE(at::equal(linear->weight, rank0_linear->weight));
  REQUIRE(at::equal(linear->bias, rank0_linear->bias));
  REQUIRE(at::equal(bn->running_mean, at::ones({4})));

  // Another architecture on one rank: an error naming it on every rank, nothing copied.
  torch::nn::Linear other(3, group.rank() == 1 ? 5 : 4);
  const at::Tensor before = other->weight.clone();
  REQUIRE_TAXON_ERROR(taxon::dist::broadcast_module_(*other, group), "dist.model-mismatch");
  REQUIRE(at::equal(other->weight, before));
}

TEST_CASE("GradientAverager: the mean of every rank's gradient, in buckets; absent everywhere stays absent", "[data-parallel]") {
  auto& group = test_data_parallel::two_ranks();
  const int r = group.rank();
  std::vector<at::Tensor> params;
  for (int64_t n : {5, 300, 7, 1000, 3}) params.push_back(at::zeros({n}, at::kFloat).requires_grad_());
  at::Tensor unused = at::zeros({4}).requires_grad_();     // no gradient on any rank
  at::Tensor one_sided = at::zeros({6}).requires_grad_();  // a gradient on rank 1 only
  params.push_back(unused);
  params.push_back(one_sided);
  for (size_t i = 0; i + 2 < params.size(); ++i)
    params[i].mutable_grad() = at::arange(params[i].numel(), at::kFloat) * (r + 1) + static_cast<float>(i);
  if (r == 1) one_sided.mutable_grad() = at::full({6}, 4.0f);
  // 2 KB buckets in parameter order: [5, 300, 7] [1000] [3, 6], plus the presence flags.
  taxon::dist::GradientAverager average(params, group, taxon::dist::GradientAveragerOptions().bucket_bytes(2048));
  average();
  REQUIRE(average.last_collectives() == 4);
  for (size_t i = 0; i + 2 < params.size(); ++i) {
    const at::Tensor expected = at::arange(params[i].numel(), at::kFloat) * 1.5f + static_cast<float>(i);  // (1+2)/2
    REQUIRE_TENSORS_CLOSE(params[i].grad(), expected, 0, 0);
  }
  CHECK_FALSE(unused.grad().defined());
  REQUIRE(one_sided.grad().defined());
  REQUIRE_TENSORS_CLOSE(one_sided.grad(), at::full({6}, 2.0f), 0, 0);
  REQUIRE_TAXON_ERROR(taxon::dist::GradientAverager(params, group, taxon::dist::GradientAveragerOptions().bucket_bytes(0)),
                      "dist.bad-option");
}

TEST_CASE("sync_batch_norm: 2 ranks with half a batch each normalise, learn and track like one process", "[data-parallel]") {
  auto& group = test_data_parallel::two_ranks();
  const int r = group.rank();
  at::manual_seed(7);
  const at::Tensor x_all = at::randn({12, 5}) * 3 + 1;
  const at::Tensor w_all = at::randn({12, 5});  // the loss: sum of w * y over the global batch
  torch::nn::BatchNorm1d reference(torch::nn::BatchNorm1dOptions(5).eps(2e-5));
  torch::nn::BatchNorm1d mine(torch::nn::BatchNorm1dOptions(5).eps(2e-5));
  {
    at::NoGradGuard no_grad;
    reference->weight.copy_(at::linspace(0.5, 1.5, 5));
    reference->bias.copy_(at::linspace(-1, 1, 5));
    mine->weight.copy_(reference->weight);
    mine->bias.copy_(reference->bias);
  }
  const at::Tensor x_ref = x_all.clone().requires_grad_();
  const at::Tensor y_ref = reference->forward(x_ref);
  (y_ref * w_all).sum().backward();

  const at::Tensor x = x_all.narrow(0, 6 * r, 6).clone().requires_grad_();
  const at::Tensor y = taxon::dist::sync_batch_norm(x, *mine, group);
  (y * w_all.narrow(0, 6 * r, 6)).sum().backward();
  REQUIRE_TENSORS_CLOSE(y, y_ref.narrow(0, 6 * r, 6).detach(), 1e-5, 1e-5);
  REQUIRE_TENSORS_CLOSE(x.grad(), x_ref.grad().narrow(0, 6 * r, 6), 1e-4, 1e-5);
  at::Tensor weight_grad = mine->weight.grad().clone(), bias_grad = mine->bias.grad().clone();
  group.all_reduce_(weight_grad);  // each rank holds its rows' part
  group.all_reduce_(bias_grad);
  REQUIRE_TENSORS_CLOSE(weight_grad, reference->weight.grad(), 1e-5, 1e-5);
  REQUIRE_TENSORS_CLOSE(bias_grad, reference->bias.grad(), 1e-5, 1e-5);
  REQUIRE_TENSORS_CLOSE(mine->running_mean, reference->running_mean, 1e-6, 1e-6);
  REQUIRE_TENSORS_CLOSE(mine->running_var, reference->running_var, 1e-5, 1e-6);
  REQUIRE(mine->num_batches_tracked.item<int64_t>() == 1);
  // Evaluation mode uses the running statistics, no communication.
  mine->eval();
  reference->eval();
  REQUIRE_TENSORS_CLOSE(taxon::dist::sync_batch_norm(x.detach(), *mine, group),
                        reference->forward(x.detach()), 1e-6, 1e-6);
}

TEST_CASE("Trainer: 2 ranks with half of each batch train the ViT and head as 1 process with the whole batch", "[data-parallel]") {
  using namespace test_data_parallel;
  auto& group = two_ranks();
  const Data data;
  // One process, global batches of 16 (each rank runs it alone).
  std::vector<double> reference_losses;
  auto reference_vit = vit(0, 0.0);
  Trainer reference(reference_vit, GatheredHead(head(), taxon::dist::ProcessGroup::single()),
                    options(taxon::dist::ProcessGroup::single()));
  reference.fit([&](int64_t e) { return data.epoch(e, 0, 1); }, LossLog{&reference_losses});

  // 2 ranks, 8 rows each; rank 1 starts from other weights (the broadcast replaces them with rank 0's).
  std::vector<double> losses;
  auto model = vit(group.rank() == 0 ? 0 : 77, 0.0);
  Trainer trainer(model, GatheredHead(head(), group), options(group));
  trainer.fit([&](int64_t e) { return data.epoch(e, group.rank(), 2); }, LossLog{&losses});

  REQUIRE(losses.size() == 6);
  for (size_t i = 0; i < losses.size(); ++i) REQUIRE(losses[i] == Approx(reference_losses[i]).epsilon(1e-5));
  REQUIRE(same_on_every_rank(*model, group));  // broadcast, averaged gradients, synchronised batch norm
  const auto expected = reference_vit->named_parameters(true);
  for (const auto& p : model->named_parameters(true)) {
    INFO(p.key());
    REQUIRE_TENSORS_CLOSE(p.value(), expected[p.key()], 1e-4, 1e-5);
  }
  const auto expected_buffers = reference_vit->named_buffers(true);
  for (const auto& b : model->named_buffers(true)) {
    INFO(b.key());
    REQUIRE_TENSORS_CLOSE(b.value(), expected_buffers[b.key()], 1e-4, 1e-5);
  }
  REQUIRE_TENSORS_CLOSE(trainer.head()->centroids(), reference.head()->centroids(), 1e-4, 1e-5);
}

TEST_CASE("Trainer: a 2-rank run stopped mid-epoch resumes on 2 ranks bit for bit, and only there", "[data-parallel]") {
  using namespace test_data_parallel;
  auto& group = two_ranks();
  const Data data;
  // A shared directory: the launcher's port names this job.
  const char* port = std::getenv("MASTER_PORT");
  REQUIRE(port != nullptr);
  const auto dir = std::filesystem::temp_directory_path() / (std::string("taxon_dp_resume_") + port);
  if (group.rank() == 0) std::filesystem::remove_all(dir);
  group.barrier();
  auto source = [&](int64_t e) { return data.epoch(e, group.rank(), 2); };
  // drop-path draws from each rank's own generator: the resume must restore every rank's, not rank 0's everywhere
  auto straight_vit = vit(0, 0.2);
  Trainer straight(straight_vit, GatheredHead(head(), group), options(group));
  straight.fit(source);

  auto first_vit = vit(0, 0.2);
  Trainer first(first_vit, GatheredHead(head(), group), options(group));
  const auto summary = first.fit(source, StopAt{4});
  REQUIRE(summary.stopped_early);
  const auto saved = first.save_checkpoint(dir, 2);
  REQUIRE(saved == dir / "step-000000004");
  if (group.rank() == 0)
    for (const char* file : {"head.rank-00001.pt", "optimizer.rank-00001.pt", "rng.rank-00001.pt"})
      REQUIRE(std::filesystem::exists(saved / file));
  group.barrier();

  auto resumed_vit = vit(31, 0.2);  // other weights: all of them must come from the checkpoint
  Trainer resumed(resumed_vit, GatheredHead(head(), group), options(group));
  REQUIRE(resumed.resume(dir));
  REQUIRE(resumed.global_step() == 4);
  resumed.fit(source);
  const auto expected = straight_vit->named_parameters(true);
  for (const auto& p : resumed_vit->named_parameters(true)) {
    INFO(p.key());
    REQUIRE(at::equal(p.value(), expected[p.key()]));
  }
  REQUIRE(at::equal(resumed.head()->centroids(), straight.head()->centroids()));

  // One process cannot take over a 2-rank checkpoint.
  auto alone_vit = vit(0, 0.2);
  Trainer alone(alone_vit, GatheredHead(head(), taxon::dist::ProcessGroup::single()),
                options(taxon::dist::ProcessGroup::single()));
  REQUIRE_TAXON_ERROR(alone.resume(dir), "train.resume-mismatch");
  group.barrier();
  if (group.rank() == 0) std::filesystem::remove_all(dir);
}

TEST_CASE("Trainer: 2 ranks with the class-sharded PartialFC head train as 1 process with the whole batch", "[data-parallel]") {
  using namespace test_data_parallel;
  auto& group = two_ranks();
  const Data data;
  using Sharded = taxon::train::Trainer<taxon::backbone::VisionTransformer, Head>;
  const auto margin = taxon::loss::Combined(taxon::loss::CombinedOptions(16, 1, 0.2, 0));
  Head full(taxon::pfc::PartialFCOptions(6, 8).seed(5), margin);
  const at::Tensor initial = full->centroids().clone();
  auto reference_vit = vit(0, 0.0);
  Sharded reference(reference_vit, full, options(taxon::dist::ProcessGroup::single()));
  reference.fit([&](int64_t e) { return data.epoch(e, 0, 1); });

  Head shard(taxon::pfc::PartialFCOptions(6, 8).seed(5).process_group(group), margin);
  REQUIRE(shard->shard().num_local == 3);
  {
    at::NoGradGuard no_grad;  // the same initial centres as the single process, each rank its classes
    shard->weight.copy_(initial.narrow(0, shard->shard().class_start, 3));
  }
  auto model = vit(group.rank() == 0 ? 0 : 77, 0.0);
  Sharded trainer(model, shard, options(group));
  trainer.fit([&](int64_t e) { return data.epoch(e, group.rank(), 2); });
  REQUIRE(trainer.last_loss() == Approx(reference.last_loss()).epsilon(1e-5));
  const auto expected = reference_vit->named_parameters(true);
  for (const auto& p : model->named_parameters(true)) {
    INFO(p.key());
    REQUIRE_TENSORS_CLOSE(p.value(), expected[p.key()], 1e-4, 1e-5);
  }
  REQUIRE_TENSORS_CLOSE(shard->centroids(), full->centroids().narrow(0, shard->shard().class_start, 3), 1e-4, 1e-5);
}
