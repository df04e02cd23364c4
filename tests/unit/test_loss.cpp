// Margin policies and margin-softmax CE: spec worked example, exact gradient vs finite differences, fused vs
// reference over a grid, error ids.
#include "taxon/loss/loss.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "support/cpu_variants.hpp"
#include "support/tensor_compare.hpp"

namespace test_loss {

using taxon::loss::MarginParams;

struct Case {
  const char* name;
  MarginParams p;
};

inline std::vector<Case> margin_cases(float filter) {
  using namespace taxon::loss;
  return {
      {"arcface", ArcFace(ArcFaceOptions(32, 0.3).filter(filter)).params()},
      {"arcface-exact", ArcFace(ArcFaceOptions(32, 0.3).filter(filter).grad_mode(GradMode::exact)).params()},
      {"cosface", CosFace(CosFaceOptions(30, 0.35).filter(filter)).params()},
      {"sphereface", SphereFace(SphereFaceOptions(20, 1.5).filter(filter)).params()},
      {"combined", Combined(CombinedOptions(24, 1.2, 0.2, 0.1).filter(filter)).params()},
  };
}

// Loss and gradients (embeddings, centres) of one implementation on copies of the inputs.
struct Result {
  at::Tensor loss, grad_emb, grad_w;
};

inline Result run(bool fused, const at::Tensor& emb, const at::Tensor& w, const at::Tensor& y, const MarginParams& p,
                  std::int64_t chunk, std::int64_t cache_bytes = taxon::loss::FusedOptions().cache_bytes()) {
  at::Tensor e = emb.detach().clone().requires_grad_(true);
  at::Tensor c = w.detach().clone().requires_grad_(true);
  const auto options = taxon::loss::FusedOptions().chunk_size(chunk).cache_bytes(cache_bytes);
  at::Tensor loss = fused ? taxon::loss::fused_margin_softmax_ce(e, c, y, p, options)
                          : taxon::loss::reference_margin_softmax_ce(e, c, y, p);
  loss.backward();
  return {loss.detach(), e.grad(), c.grad()};
}

// allclose with atol = rtol·max|e|: relative error measured against the tensor's scale, so near-zero entries count.
inline void require_close_rel(const at::Tensor& a, const at::Tensor& e, double rtol) {
  const double scale = e.abs().max().item<double>();
  REQUIRE_TENSORS_CLOSE(a, e, rtol, rtol * scale + 1e-12);
}

using taxon::test::IsaScope;
using taxon::test::runnable_isas;

}  // namespace test_loss

TEST_CASE("spec worked example: ArcFace s=32 m2=0.25 straight-through", "[loss]") {
  auto cos = at::tensor({0.5, 0.1, -0.2}, at::kDouble).view({1, 3}).requires_grad_(true);
  auto y = at::tensor({0}, at::kLong);
  const auto p = taxon::loss::ArcFace(32, 0.25).params();
  CHECK_FALSE(p.exact);
  auto loss = taxon::loss::margin_ce_from_cosines(cos, y, p);
  REQUIRE(loss.item<double>() == Approx(0.0043031).epsilon(1e-4));
  loss.backward();
  auto g = cos.grad().view({3});
  REQUIRE(g[0].item<double>() == Approx(-0.137403).epsilon(1e-4));
  REQUIRE(g[1].item<double>() == Approx(0.137393).epsilon(1e-4));
  REQUIRE(g[2].item<double>() == Approx(9.3e-6).epsilon(1e-2));
  // The margin-modified target value z/s = cos(acos(0.5) + 0.25).
  REQUIRE(taxon::loss::margin_target(p, 0.5) == Approx(0.270198).epsilon(1e-5));
}

TEST_CASE("spec worked example: exact mode has the chain factor sin(θ+m)/sinθ", "[loss]") {
  auto cos = at::tensor({0.5, 0.1, -0.2}, at::kDouble).view({1, 3}).requires_grad_(true);
  auto p = taxon::loss::ArcFace(taxon::loss::ArcFaceOptions(32, 0.25).grad_mode(taxon::loss::GradMode::exact)).params();
  auto loss = taxon::loss::margin_ce_from_cosines(cos, at::tensor({0}, at::kLong), p);
  REQUIRE(loss.item<double>() == Approx(0.0043031).epsilon(1e-4));
  loss.backward();
  REQUIRE(cos.grad()[0][0].item<double>() == Approx(-0.152758).epsilon(1e-4));
  REQUIRE(taxon::loss::margin_target_grad(p, 0.5) == Approx(1.1118).epsilon(1e-4));
}

TEST_CASE("fused loss reproduces the worked example from embeddings and centres", "[loss]") {
  std::vector<float> c = {0.5f, 0.1f, -0.2f};
  auto w = at::zeros({3, 2});
  for (int j = 0; j < 3; ++j) {
    w[j][0] = c[j] * 3.0f;  // unnormalised centres: the kernel normalises them
    w[j][1] = std::sqrt(1.0f - c[j] * c[j]) * 3.0f;
  }
  auto e = at::tensor({2.0f, 0.0f}).view({1, 2});
  auto p = taxon::loss::ArcFace(32, 0.25).params();
  auto loss = taxon::loss::fused_margin_softmax_ce(e, w, at::tensor({0}, at::kLong), p);
  REQUIRE(loss.item<double>() == Approx(0.0043031).epsilon(2e-3));
}

TEST_CASE("exact gradients match central finite differences (double)", "[loss]") {
  using namespace taxon::loss;
  at::manual_seed(3);
  for (const auto& c : test_loss::margin_cases(0.0f)) {
    if (!c.p.exact && is_angular(c.p)) continue;  // straight-through is not a derivative of the forward value
    INFO(c.name);
    auto cos = (at::rand({4, 6}, at::kDouble) * 1.6 - 0.8);
    auto y = at::tensor({0, 5, 2, 3}, at::kLong);
    auto x = cos.clone().requires_grad_(true);
    margin_ce_from_cosines(x, y, c.p).backward();
    auto fd = at::zeros_like(cos);
    const double h = 1e-6;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 6; ++j) {
        auto plus = cos.clone(), minus = cos.clone();
        plus[i][j] += h;
        minus[i][j] -= h;
        fd[i][j] = (margin_ce_from_cosines(plus, y, c.p) - margin_ce_from_cosines(minus, y, c.p)).item<double>() /
                   (2 * h);
      }
    REQUIRE_TENSORS_CLOSE(x.grad(), fd, 1e-5, 1e-8);
    // The scalar derivative used by the kernels agrees with autograd through acos/cos.
    for (double v : {-0.7, 0.0, 0.3, 0.9}) {
      const double d = (margin_target(c.p, v + h) - margin_target(c.p, v - h)) / (2 * h);
      REQUIRE(margin_target_grad(c.p, v) == Approx(d).epsilon(1e-5));
    }
  }
}

TEST_CASE("theta + m is clamped at pi: the target stays at -1 instead of rising", "[loss]") {
  auto p = taxon::loss::ArcFace(taxon::loss::ArcFaceOptions(32, 0.5).grad_mode(taxon::loss::GradMode::exact)).params();
  REQUIRE(taxon::loss::margin_target(p, -0.95) == Approx(-1.0));  // acos(-0.95) + 0.5 > pi
  REQUIRE(taxon::loss::margin_target(p, -0.99) == Approx(-1.0));
  REQUIRE(taxon::loss::margin_target_grad(p, -0.95) == 0.0);
  REQUIRE(taxon::loss::margin_target(p, -0.5) < -0.5);  // below the clamp the margin still lowers the target
}

TEST_CASE("interclass filtering zeroes non-target cosines above the threshold with no gradient", "[loss]") {
  auto cos = at::tensor({0.9, 0.5, 0.1, 0.45}, at::kDouble).view({1, 4}).requires_grad_(true);
  auto p = taxon::loss::CosFace(taxon::loss::CosFaceOptions(10, 0.2).filter(0.4)).params();
  auto loss = taxon::loss::margin_ce_from_cosines(cos, at::tensor({0}, at::kLong), p);
  // Logits: target 10·(0.9−0.2)=7, filtered 0.5 and 0.45 → 0, kept 0.1 → 1.
  const double expect = -7.0 + std::log(std::exp(7.0) + 2 * std::exp(0.0) + std::exp(1.0));
  REQUIRE(loss.item<double>() == Approx(expect).epsilon(1e-6));
  loss.backward();
  REQUIRE(cos.grad()[0][1].item<double>() == 0.0);
  REQUIRE(cos.grad()[0][3].item<double>() == 0.0);
  REQUIRE(cos.grad()[0][2].item<double>() > 0.0);
}

TEST_CASE("ignored rows (-1) add no loss and no gradient but count in the batch mean", "[loss]") {
  at::manual_seed(5);
  auto emb = at::randn({3, 8});
  auto w = at::randn({10, 8});
  auto p = taxon::loss::ArcFace(32, 0.3).params();
  auto full = test_loss::run(false, emb, w, at::tensor({1, -1, 4}, at::kLong), p, 0);
  auto one = test_loss::run(false, emb.index({at::indexing::Slice(0, 1)}), w, at::tensor({1}, at::kLong), p, 0);
  auto three = test_loss::run(false, emb.index({at::indexing::Slice(2, 3)}), w, at::tensor({4}, at::kLong), p, 0);
  REQUIRE(full.loss.item<double>() == Approx((one.loss.item<double>() + three.loss.item<double>()) / 3.0).epsilon(1e-5));
  REQUIRE(full.grad_emb[1].abs().max().item<double>() == 0.0);
  auto fused = test_loss::run(true, emb, w, at::tensor({1, -1, 4}, at::kLong), p, 4);
  test_loss::require_close_rel(fused.loss, full.loss, 1e-5);
  test_loss::require_close_rel(fused.grad_emb, full.grad_emb, 1e-5);
  test_loss::require_close_rel(fused.grad_w, full.grad_w, 1e-5);
}

TEST_CASE("fused equals reference: loss and both gradients over a grid", "[loss]") {
  struct Shape {
    std::int64_t B, C, D, chunk;
  };
  const std::vector<Shape> shapes = {{1, 5, 3, 0}, {7, 37, 16, 8}, {33, 1000, 64, 96}, {16, 300, 32, 300},
                                     {64, 2048, 128, 0}};
  int n = 0;
  for (float filter : {0.0f, 0.15f}) {
    for (const auto& c : test_loss::margin_cases(filter)) {
      for (const auto& s : shapes) {
        at::manual_seed(17 + n++);
        auto emb = at::randn({s.B, s.D});
        auto w = at::randn({s.C, s.D}) * 0.01;
        auto y = at::randint(0, s.C, {s.B}, at::kLong);
        if (s.B > 2) y[1] = -1;
        auto ref = test_loss::run(false, emb, w, y, c.p, s.chunk);
        // Chunk caches: one slot (every other chunk recomputed), two slots, and the default (all chunks kept).
        const std::int64_t chunk = taxon::loss::detail::fused_chunk_size(s.chunk, s.B, s.C);
        const std::int64_t slot_bytes = s.B * chunk * static_cast<std::int64_t>(sizeof(float));
        for (std::int64_t cache : {std::int64_t{0}, 2 * slot_bytes, taxon::loss::FusedOptions().cache_bytes()}) {
          for (auto isa : test_loss::runnable_isas()) {
            INFO(c.name << " filter=" << filter << " B=" << s.B << " C=" << s.C << " D=" << s.D << " chunk="
                        << s.chunk << " cache=" << cache << " isa=" << taxon::cpu::isa_name(isa));
            test_loss::IsaScope scope(isa);
            auto fus = test_loss::run(true, emb, w, y, c.p, s.chunk, cache);
            test_loss::require_close_rel(fus.loss, ref.loss, 1e-5);
            test_loss::require_close_rel(fus.grad_emb, ref.grad_emb, 1e-5);
            test_loss::require_close_rel(fus.grad_w, ref.grad_w, 1e-5);
          }
        }
      }
    }
  }
}

TEST_CASE("fused loss gives the same gradients on a second backward of a retained graph", "[loss]") {
  at::manual_seed(3);
  auto emb = at::randn({9, 16}).requires_grad_(true);
  auto w = (at::randn({50, 16}) * 0.01).requires_grad_(true);
  auto y = at::randint(0, 50, {9}, at::kLong);
  const auto p = taxon::loss::ArcFace(32, 0.3).params();
  // chunk 8 with a 3-chunk cache: backward consumes (overwrites) the cached chunks, so the second pass must recompute.
  auto loss = taxon::loss::fused_margin_softmax_ce(emb, w, y, p,
                                                   taxon::loss::FusedOptions().chunk_size(8).cache_bytes(3 * 9 * 8 * 4));
  loss.backward({}, /*retain_graph=*/true);
  const auto g_emb = emb.grad().clone(), g_w = w.grad().clone();
  loss.backward();
  test_loss::require_close_rel(emb.grad(), 2 * g_emb, 1e-6);
  test_loss::require_close_rel(w.grad(), 2 * g_w, 1e-6);
}

TEST_CASE("CPU loss kernels: the vector exp is within 3 ulp of exp over the range the kernels use", "[loss]") {
  using S = taxon::loss::cpu::baseline::S;
  double worst = 0.0;
  for (int k = 0; k <= 200000; ++k) {
    const float x = -87.0f * static_cast<float>(k) / 200000.0f;
    const double expect = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(S::exp(S::set(x))[0] - expect) / expect);
  }
  INFO("worst relative error " << worst);
  REQUIRE(worst < 3.0 * 5.97e-8);  // 3 ulp of float
  REQUIRE(S::exp(S::set(0.0f))[0] == 1.0f);
  REQUIRE(S::exp(S::set(-100.0f))[0] == 0.0f);
}

TEST_CASE("CPU loss kernels: every SIMD variant matches a double-precision row reduction", "[loss]") {
  using namespace taxon::loss;
  // Logits from −s to s: Σexp(z − max) spans the whole float range, so exp underflow and the scalar tails show.
  const std::int64_t B = 3, n = 77;
  std::vector<float> dots(B * n), inv(n, 1.0f);
  for (std::int64_t i = 0; i < B; ++i)
    for (std::int64_t j = 0; j < n; ++j) dots[i * n + j] = -1.0f + 2.0f * static_cast<float>((j * 37 + i * 11) % n) / (n - 1);
  const std::vector<std::int64_t> labels = {5, -1, 76};
  for (const auto& c : test_loss::margin_cases(0.2f)) {
    MarginParams p = c.p;
    p.s = 64.0f;
    for (auto isa : test_loss::runnable_isas()) {
      INFO(c.name << " isa=" << taxon::cpu::isa_name(isa));
      test_loss::IsaScope scope(isa);
      std::vector<float> mx(B), sum(B), tcos(B, 2.0f);
      const cpu::ChunkView view{inv.data(), labels.data(), n, 0, p};
      cpu::forward_rows(dots.data(), 0, B, view, mx.data(), sum.data(), tcos.data());
      for (std::int64_t i = 0; i < B; ++i) {
        std::vector<double> z(n);
        for (std::int64_t j = 0; j < n; ++j) {
          double cj = std::clamp(static_cast<double>(dots[i * n + j]), -1.0, 1.0);
          if (p.filter > 0 && cj > p.filter && j != labels[i]) cj = 0.0;
          z[j] = p.s * (j == labels[i] ? margin_target(p, cj) : cj);
        }
        const double m = *std::max_element(z.begin(), z.end());
        double expect = 0.0;
        for (double v : z) expect += std::exp(v - m);
        REQUIRE(mx[i] == Approx(m).epsilon(1e-6));
        REQUIRE(sum[i] == Approx(expect).epsilon(2e-6));
        if (labels[i] >= 0) REQUIRE(tcos[i] == Approx(dots[i * n + labels[i]]).epsilon(1e-6));
      }
    }
  }
}

TEST_CASE("loss functions report bad inputs with ids", "[loss]") {
  using namespace taxon::loss;
  auto p = ArcFace(32, 0.3).params();
  auto emb = at::randn({4, 8});
  auto w = at::randn({10, 8});
  REQUIRE_TAXON_ERROR(fused_margin_softmax_ce(emb, w, at::tensor({0, 1, 10, 2}, at::kLong), p),
                      "loss.label-out-of-range");
  REQUIRE_TAXON_ERROR(reference_margin_softmax_ce(emb, w, at::tensor({0, 1, -2, 2}, at::kLong), p),
                      "loss.label-out-of-range");
  REQUIRE_TAXON_ERROR(fused_margin_softmax_ce(emb, at::randn({10, 7}), at::tensor({0, 1, 2, 3}, at::kLong), p),
                      "loss.dim-mismatch");
  auto bad = emb.clone();
  bad[2][3] = std::nanf("");
  REQUIRE_TAXON_ERROR(fused_margin_softmax_ce(bad, w, at::tensor({0, 1, 2, 3}, at::kLong), p),
                      "loss.non-finite-embeddings");
  bad[2][3] = INFINITY;
  REQUIRE_TAXON_ERROR(reference_margin_softmax_ce(bad, w, at::tensor({0, 1, 2, 3}, at::kLong), p),
                      "loss.non-finite-embeddings");
  REQUIRE_TAXON_ERROR(fused_margin_softmax_ce(emb, w, at::tensor({0, 1, 2}, at::kLong), p), "loss.batch-mismatch");
  REQUIRE_TAXON_ERROR(fused_margin_softmax_ce(emb, w, at::tensor({0., 1., 2., 3.}), p), "loss.label-dtype");
  REQUIRE_TAXON_ERROR(fused_margin_softmax_ce(emb.to(at::kDouble), w.to(at::kDouble), at::tensor({0, 1, 2, 3}, at::kLong), p),
                      "loss.bad-dtype");
  REQUIRE_TAXON_ERROR(ArcFace(-1, 0.3), "loss.bad-margin");
  REQUIRE_TAXON_ERROR(CosFace(CosFaceOptions(32, 0.3).filter(1.5)), "loss.bad-margin");
  try {
    fused_margin_softmax_ce(emb, w, at::tensor({0, 1, 12, 2}, at::kLong), p);
  } catch (const taxon::Error& e) {
    const std::string msg = e.what();
    REQUIRE(msg.find("label 12") != std::string::npos);
    REQUIRE(msg.find("C = 10") != std::string::npos);
  }
  try {
    fused_margin_softmax_ce(emb, at::randn({10, 7}), at::tensor({0, 1, 2, 3}, at::kLong), p);
  } catch (const taxon::Error& e) {
    const std::string msg = e.what();
    REQUIRE(msg.find("[4, 8]") != std::string::npos);
    REQUIRE(msg.find("[10, 7]") != std::string::npos);
  }
}
