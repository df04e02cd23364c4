// The fused margin-softmax CE on CUDA (taxon::cuda kernels + cuBLAS chunk GEMMs) against the CPU reference:
// every margin, filtering, C not a multiple of the chunk, ignored rows, bf16 embeddings, bf16 GEMM operands, and
// sampled classes through PartialFC with UniformNegatives.
#include "taxon/loss/loss.hpp"
#include "taxon/pfc/pfc.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include "support/tensor_compare.hpp"

namespace test_loss_cuda {

using namespace taxon::loss;

inline std::vector<std::pair<std::string, MarginParams>> all_margins() {
  return {{"ArcFace straight-through", ArcFace(64, 0.5).params()},
          {"ArcFace exact + filter", ArcFace(ArcFaceOptions(32, 0.3).grad_mode(GradMode::exact).filter(0.2)).params()},
          {"CosFace", CosFace(64, 0.4).params()},
          {"CosFace + filter", CosFace(CosFaceOptions(32, 0.35).filter(0.1)).params()},
          {"SphereFace", SphereFace(32, 1.5).params()},
          {"Combined", Combined(CombinedOptions(32, 1.2, 0.2, 0.1)).params()}};
}

// Loss and both gradients of the fused CUDA loss and of the CPU reference on the same inputs.
struct Pair {
  at::Tensor loss, grad_e, grad_w;
};

inline Pair run_cpu_reference(const at::Tensor& emb, const at::Tensor& w, const at::Tensor& y, const MarginParams& p) {
  auto e = emb.to(at::kFloat).clone().requires_grad_(true), c = w.clone().requires_grad_(true);
  auto loss = reference_margin_softmax_ce(e, c, y, p);
  loss.backward();
  return {loss.detach(), e.grad(), c.grad()};
}

inline Pair run_cuda_fused(const at::Tensor& emb, const at::Tensor& w, const at::Tensor& y, const MarginParams& p,
                           const FusedOptions& options) {
  auto e = emb.cuda().requires_grad_(true), c = w.cuda().requires_grad_(true);
  auto loss = fused_margin_softmax_ce(e, c, y.cuda(), p, options);
  loss.backward();
  REQUIRE(e.grad().scalar_type() == emb.scalar_type());
  return {loss.detach().cpu(), e.grad().cpu().to(at::kFloat), c.grad().cpu()};
}

inline void require_close(const Pair& got, const Pair& ref, double rtol) {
  REQUIRE_TENSORS_CLOSE(got.loss, ref.loss, rtol, 0);
  REQUIRE_TENSORS_CLOSE(got.grad_e, ref.grad_e, rtol, rtol * ref.grad_e.abs().max().item<double>());
  REQUIRE_TENSORS_CLOSE(got.grad_w, ref.grad_w, rtol, rtol * ref.grad_w.abs().max().item<double>());
}

TEST_CASE("fused CUDA margin-softmax CE matches the CPU reference for every margin", "[loss][cuda]") {
  // 70001 classes: neither a multiple of the 4096-class chunk nor of the 256-thread tile; rows 3 and 17 ignored.
  for (const auto& [name, p] : all_margins()) {
    for (std::int64_t C : {1000, 70001}) {
      INFO(name << ", C = " << C);
      at::manual_seed(11);
      auto emb = at::randn({64, 512});
      auto w = at::randn({C, 512}) * 0.01;
      auto y = at::randint(0, C, {64}, at::kLong);
      y[3] = -1;
      y[17] = -1;
      const Pair ref = run_cpu_reference(emb, w, y, p);
      require_close(run_cuda_fused(emb, w, y, p, FusedOptions().chunk_size(4096)), ref, 1e-5);
      // Automatic chunk size, and pure streaming (no cached chunk: every backward chunk recomputed).
      require_close(run_cuda_fused(emb, w, y, p, FusedOptions().cache_bytes(0)), ref, 1e-5);
    }
  }
}

TEST_CASE("fused CUDA CE: filtered classes, a batch of only ignored rows, and a chunk of one class", "[loss][cuda]") {
  // Negatives with cosine > 0.05 are filtered: about a third of them for random 64-d vectors.
  const MarginParams p = ArcFace(ArcFaceOptions(64, 0.5).filter(0.05)).params();
  at::manual_seed(5);
  auto emb = at::randn({32, 64});
  auto w = at::randn({777, 64});
  auto y = at::randint(0, 777, {32}, at::kLong);
  require_close(run_cuda_fused(emb, w, y, p, FusedOptions().chunk_size(100)), run_cpu_reference(emb, w, y, p), 1e-5);
  require_close(run_cuda_fused(emb, w.narrow(0, 0, 1), at::zeros({32}, at::kLong), p, FusedOptions().chunk_size(1)),
                run_cpu_reference(emb, w.narrow(0, 0, 1), at::zeros({32}, at::kLong), p), 1e-5);
  const Pair none = run_cuda_fused(emb, w, at::full({32}, -1, at::kLong), p, FusedOptions());
  REQUIRE(none.loss.item<float>() == 0.0f);
  REQUIRE(none.grad_e.abs().max().item<float>() == 0.0f);
  REQUIRE(none.grad_w.abs().max().item<float>() == 0.0f);
}

TEST_CASE("fused CUDA CE takes bf16 embeddings and returns their gradient in bf16", "[loss][cuda]") {
  const MarginParams p = ArcFace(64, 0.5).params();
  at::manual_seed(7);
  auto emb = at::randn({128, 256}).to(at::kBFloat16);
  auto w = at::randn({5003, 256}) * 0.01;
  auto y = at::randint(0, 5003, {128}, at::kLong);
  y[0] = -1;
  // The reference on the same bf16 values converted to fp32; the fused loss normalises in fp32 as well.
  const Pair ref = run_cpu_reference(emb, w, y, p);
  const Pair got = run_cuda_fused(emb, w, y, p, FusedOptions().chunk_size(1024));
  REQUIRE_TENSORS_CLOSE(got.loss, ref.loss, 1e-5, 0);
  // The embedding gradient is rounded to bf16 on its way out (8-bit mantissa).
  REQUIRE_TENSORS_CLOSE(got.grad_e, ref.grad_e, 1e-2, 1e-2 * ref.grad_e.abs().max().item<double>());
  REQUIRE_TENSORS_CLOSE(got.grad_w, ref.grad_w, 1e-5, 1e-5 * ref.grad_w.abs().max().item<double>());
}

TEST_CASE("fused CUDA CE with bf16 GEMM operands matches the CPU emulation of the same rounding", "[loss][cuda]") {
  const MarginParams p = CosFace(64, 0.4).params();
  at::manual_seed(9);
  auto emb = at::randn({96, 512});
  auto w = at::randn({20011, 512}) * 0.01;
  auto y = at::randint(0, 20011, {96}, at::kLong);
  const auto options = FusedOptions().chunk_size(4096).matmul(MatmulPrecision::bf16);
  auto e_cpu = emb.clone().requires_grad_(true), w_cpu = w.clone().requires_grad_(true);
  auto cpu = fused_margin_softmax_ce(e_cpu, w_cpu, y, p, options);
  cpu.backward();
  const Pair got = run_cuda_fused(emb, w, y, p, options);
  // Same bf16 operands and fp32 accumulation on both sides; only the summation order differs.
  REQUIRE_TENSORS_CLOSE(got.loss, cpu.detach(), 1e-5, 0);
  REQUIRE_TENSORS_CLOSE(got.grad_e, e_cpu.grad(), 1e-3, 1e-3 * e_cpu.grad().abs().max().item<double>());
  REQUIRE_TENSORS_CLOSE(got.grad_w, w_cpu.grad(), 1e-3, 1e-3 * w_cpu.grad().abs().max().item<double>());
  // And it stays within bf16 rounding of the fp32 reference.
  const Pair ref = run_cpu_reference(emb, w, y, p);
  REQUIRE_TENSORS_CLOSE(got.loss, ref.loss, 1e-2, 0);
}

TEST_CASE("PartialFC with UniformNegatives on CUDA (fused) equals the same head on CPU (reference)", "[pfc][cuda]") {
  using taxon::pfc::PartialFC;
  using taxon::pfc::PartialFCOptions;
  using taxon::pfc::UniformNegatives;
  const std::int64_t C = 30011, D = 128, B = 64;
  auto make = [&](Impl impl) {
    return PartialFC<ArcFace, UniformNegatives>(PartialFCOptions(C, D).impl(impl).seed(3).chunk_size(1000),
                                                ArcFace(ArcFaceOptions(64, 0.5).filter(0.1)), UniformNegatives(0.1));
  };
  auto cpu = make(Impl::reference);
  auto gpu = make(Impl::fused);
  gpu->to(at::kCUDA);
  REQUIRE(at::equal(cpu->weight, gpu->weight.cpu()));
  at::manual_seed(4);
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    auto emb = at::randn({B, D});
    auto y = at::randint(0, C, {B}, at::kLong);
    y[5] = -1;
    auto e_cpu = emb.clone().requires_grad_(true), e_gpu = emb.cuda().requires_grad_(true);
    auto l_cpu = cpu->forward(e_cpu, y);
    auto l_gpu = gpu->forward(e_gpu, y.cuda());
    l_cpu.backward();
    l_gpu.backward();
    REQUIRE(at::equal(cpu->last_sample().index, gpu->last_sample().index.cpu()));
    REQUIRE(gpu->last_sample().index.numel() == static_cast<std::int64_t>(0.1 * C));
    REQUIRE_TENSORS_CLOSE(l_gpu.detach().cpu(), l_cpu.detach(), 1e-5, 0);
    REQUIRE_TENSORS_CLOSE(e_gpu.grad().cpu(), e_cpu.grad(), 1e-5, 1e-5 * e_cpu.grad().abs().max().item<double>());
    const auto gw = cpu->weight.grad();
    REQUIRE_TENSORS_CLOSE(gpu->weight.grad().cpu(), gw, 1e-5, 1e-5 * gw.abs().max().item<double>());
    cpu->weight.mutable_grad().zero_();
    gpu->weight.mutable_grad().zero_();
  }
}

}  // namespace test_loss_cuda
