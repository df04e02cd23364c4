// FusedAdamW (ATen's _fused_adamw_ kernel) against torch::optim::AdamW: the same update, state and checkpoints;
// and TrainerOptions::fused_adamw is refused with a clear id on a LibTorch without the kernel.
#include "taxon/train/train.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/nn/modules/linear.h>
#include <torch/serialize.h>

#include <memory>
#include <sstream>
#include <vector>

#include "support/tensor_compare.hpp"

namespace test_train_fused_adamw {

// Two groups as the Trainer makes them (different lr), a 2-D, a 1-D and a parameter that never gets a gradient.
struct Params {
  std::vector<at::Tensor> a, b;
  explicit Params(std::uint64_t seed) {
    auto gen = taxon::make_generator(seed);
    a = {at::randn({7, 5}, gen).requires_grad_(true), at::randn({5}, gen).requires_grad_(true)};
    b = {at::randn({3, 5}, gen).requires_grad_(true), at::randn({2}, gen).requires_grad_(true)};
  }
  std::vector<torch::optim::OptimizerParamGroup> groups() const {
    std::vector<torch::optim::OptimizerParamGroup> g;
    g.emplace_back(a, std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-2).betas({0.9, 0.99}).weight_decay(0.1).eps(1e-6)));
    g.emplace_back(b, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(3e-2).weight_decay(0)));
    return g;
  }
  // The same pseudo-random gradients for step t whatever the optimizer; b[1] never gets one.
  void set_grads(int t) {
    auto gen = taxon::make_generator(100 + t);
    for (auto* p : {&a[0], &a[1], &b[0]}) p->mutable_grad() = at::randn(p->sizes(), gen) * (1 + t);
  }
};

#if TAXON_HAS_FUSED_ADAMW

TEST_CASE("FusedAdamW takes the same steps as torch::optim::AdamW", "[train][optimizer]") {
  Params ref(1), fused(1);
  torch::optim::AdamW ref_opt(ref.groups(), torch::optim::AdamWOptions(1e-2));
  taxon::train::FusedAdamW fused_opt(fused.groups(), torch::optim::AdamWOptions(1e-2));
  for (int t = 0; t < 6; ++t) {
    ref.set_grads(t);
    fused.set_grads(t);
    ref_opt.step();
    fused_opt.step();
  }
  for (std::size_t i = 0; i < 2; ++i) {
    REQUIRE_TENSORS_CLOSE(fused.a[i], ref.a[i], 1e-5, 1e-6);
    REQUIRE_TENSORS_CLOSE(fused.b[i], ref.b[i], 1e-5, 1e-6);
  }
  REQUIRE(at::equal(fused.b[1], Params(1).b[1]));  // no gradient, no step (and no weight decay)
  const auto& s = static_cast<torch::optim::AdamWParamState&>(
      taxon::compat::optimizer_param_state(fused_opt.state(), fused.a[0]));
  const auto& r = static_cast<torch::optim::AdamWParamState&>(
      taxon::compat::optimizer_param_state(ref_opt.state(), ref.a[0]));
  REQUIRE(s.step() == 6);
  REQUIRE_TENSORS_CLOSE(s.exp_avg(), r.exp_avg(), 1e-6, 1e-7);
  REQUIRE_TENSORS_CLOSE(s.exp_avg_sq(), r.exp_avg_sq(), 1e-6, 1e-7);
}

TEST_CASE("FusedAdamW state round-trips through torch::save and continues like AdamW", "[train][optimizer]") {
  Params ref(2), fused(2);
  torch::optim::AdamW ref_opt(ref.groups(), torch::optim::AdamWOptions(1e-2));
  taxon::train::FusedAdamW fused_opt(fused.groups(), torch::optim::AdamWOptions(1e-2));
  for (int t = 0; t < 3; ++t) {
    ref.set_grads(t);
    fused.set_grads(t);
    ref_opt.step();
    fused_opt.step();
  }
  std::stringstream buffer;
  {
    torch::serialize::OutputArchive out;
    fused_opt.save(out);
    out.save_to(buffer);
  }
  // A fresh optimizer over the same parameters resumes from the saved step counts (rebuilt step tensors).
  taxon::train::FusedAdamW resumed(fused.groups(), torch::optim::AdamWOptions(1e-2));
  {
    torch::serialize::InputArchive in;
    in.load_from(buffer);
    resumed.load(in);
  }
  for (int t = 3; t < 5; ++t) {
    ref.set_grads(t);
    fused.set_grads(t);
    ref_opt.step();
    resumed.step();
  }
  REQUIRE_TENSORS_CLOSE(fused.a[0], ref.a[0], 1e-5, 1e-6);
  REQUIRE_TENSORS_CLOSE(fused.b[0], ref.b[0], 1e-5, 1e-6);
}

TEST_CASE("TrainerOptions::fused_adamw makes make_adamw return a FusedAdamW", "[train][optimizer]") {
  auto b = torch::nn::Linear(4, 3);
  auto h = torch::nn::Linear(3, 2);
  auto opt = taxon::train::make_adamw(b, h, taxon::train::TrainerOptions().fused_adamw(true));
  REQUIRE(dynamic_cast<taxon::train::FusedAdamW*>(opt.get()) != nullptr);
  REQUIRE(dynamic_cast<taxon::train::FusedAdamW*>(
              taxon::train::make_adamw(b, h, taxon::train::TrainerOptions()).get()) == nullptr);
}

#else

TEST_CASE("TrainerOptions::fused_adamw is refused on a LibTorch without _fused_adamw_", "[train][optimizer]") {
  auto b = torch::nn::Linear(4, 3);
  auto h = torch::nn::Linear(3, 2);
  REQUIRE_TAXON_ERROR(taxon::train::make_adamw(b, h, taxon::train::TrainerOptions().fused_adamw(true)),
                      "train.bad-option");
  REQUIRE(taxon::train::make_adamw(b, h, taxon::train::TrainerOptions()) != nullptr);
}

#endif

}  // namespace test_train_fused_adamw
