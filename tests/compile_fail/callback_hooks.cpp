// Must NOT compile: callbacks whose hooks would otherwise be silently never called, passed to Trainer::fit.
// tests/compile_fail/expect_compile_error.cmake builds this file and requires every "expect:" message below.
#include "taxon/train/trainer.hpp"

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <vector>

namespace compile_fail {

using taxon::train::Hook;
using taxon::train::HookSet;
using taxon::train::StepReport;

struct TinyBackboneImpl : torch::nn::Module {
  torch::nn::Linear fc{register_module("fc", torch::nn::Linear(4, 4))};
  at::Tensor forward(const at::Tensor& x) { return fc(x); }
};
TORCH_MODULE(TinyBackbone);

struct TinyHeadImpl : torch::nn::Module {
  at::Tensor weight{register_parameter("weight", at::randn({3, 4}))};
  at::Tensor forward(const at::Tensor& e, const at::Tensor& y) {
    return at::cross_entropy_loss(at::mm(e, weight.t()), y);
  }
  at::Tensor centroids() const { return weight; }
  int64_t num_classes() const { return 3; }
};
TORCH_MODULE(TinyHead);

struct Batch {
  at::Tensor images, labels;
};

// expect: taxon::train callback declares Hook::on_step_end but has no member on_step_end(trainer, const StepReport&)
struct Misspelt {
  static constexpr HookSet hooks{Hook::on_step_end};
  template <typename T> void on_step_ned(T&, const StepReport&) {}
};

// expect: taxon::train callback declares Hook::on_epoch_end but has no member on_epoch_end(trainer, int64_t epoch)
struct WrongParameters {
  static constexpr HookSet hooks{Hook::on_epoch_end};
  template <typename T> void on_epoch_end(T&) {}
};

// expect: taxon::train callback has a member named on_evaluated that is not declared in its `hooks`
struct Undeclared {
  static constexpr HookSet hooks{};
  template <typename T> void on_evaluated(T&, const taxon::train::Metrics&) {}
};

// expect: taxon::train callback does not declare its hooks
struct NoDeclaration {
  template <typename T> void on_step_end(T&, const StepReport&) {}
};

// expect: taxon::train callback declares Hook::should_stop but has no member should_stop(trainer) -> bool
struct NonConstOnConst {
  static constexpr HookSet hooks{Hook::should_stop};
  template <typename T> bool should_stop(T&) { return false; }
};

void train() {
  TinyBackbone backbone;
  TinyHead head;
  taxon::train::Trainer trainer(backbone, head, taxon::train::TrainerOptions());
  std::vector<Batch> batches{{at::randn({2, 4}), at::zeros({2}, at::kLong)}};
  const NonConstOnConst stop;
  trainer.fit(batches, Misspelt{}, WrongParameters{}, Undeclared{}, NoDeclaration{}, stop);
}

}  // namespace compile_fail
