// PartialFC head: shard arithmetic, samplers, Head concept, fused vs reference with sampling and feature
// sub-selection, variable batch sizes, errors, centroid save/load.
#include "taxon/dist/shard.hpp"
#include "taxon/pfc/pfc.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <set>

#include "support/tensor_compare.hpp"

namespace test_pfc {


inline std::filesystem::path temp_dir() {
  auto dir = std::filesystem::temp_directory_path() / ("taxon_test_pfc_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace test_pfc

TEST_CASE("class shards tile 0..C-1 as spec 2.1", "[pfc]") {
  for (std::int64_t C : {1, 7, 10, 1000003}) {
    for (std::int64_t W : {1, 2, 3, 8}) {
      std::int64_t next = 0;
      for (std::int64_t r = 0; r < W; ++r) {
        const auto s = taxon::dist::class_shard(C, r, W);
        REQUIRE(s.class_start == next);
        REQUIRE(s.num_local == C / W + (r < C % W ? 1 : 0));
        next += s.num_local;
      }
      REQUIRE(next == C);
    }
  }
  const auto s = taxon::dist::class_shard(10, 1, 3);  // [4, 7)
  REQUIRE(s.class_start == 4);
  REQUIRE(s.num_local == 3);
  auto local = taxon::dist::localize_labels(at::tensor({3, 4, 6, 7, -1}, at::kLong), s);
  REQUIRE(at::equal(local, at::tensor({-1, 0, 2, -1, -1}, at::kLong)));
  REQUIRE_TAXON_ERROR(taxon::dist::class_shard(10, 3, 3), "dist.bad-rank");
}

TEST_CASE("UniformNegatives: positives kept, count, sorted, remapped, seeded", "[pfc]") {
  const taxon::pfc::UniformNegatives sampler(0.1);
  const std::int64_t C = 1000;
  auto labels = at::tensor({5, 999, 5, 0, 412, -1, 77}, at::kLong);
  auto g1 = taxon::make_generator(1);
  auto s1 = sampler.sample(labels, C, g1);
  REQUIRE(s1.index.numel() == sampler.num_sample(C));
  REQUIRE(sampler.num_sample(C) == 100);
  REQUIRE(at::equal(s1.index, std::get<0>(at::sort(s1.index))));
  REQUIRE(std::get<0>(at::_unique(s1.index)).numel() == s1.index.numel());
  for (std::int64_t i = 0; i < labels.numel(); ++i) {
    const auto y = labels[i].item<std::int64_t>();
    const auto r = s1.labels[i].item<std::int64_t>();
    if (y < 0) {
      REQUIRE(r == -1);
    } else {
      REQUIRE(s1.index[r].item<std::int64_t>() == y);  // the remapped label points at its own centre
    }
  }
  auto g1b = taxon::make_generator(1);
  REQUIRE(at::equal(sampler.sample(labels, C, g1b).index, s1.index));
  auto g2 = taxon::make_generator(2);
  REQUIRE_FALSE(at::equal(sampler.sample(labels, C, g2).index, s1.index));
  // More positives than the budget: just the positives.
  auto many = at::arange(0, 40, at::kLong);
  auto g3 = taxon::make_generator(3);
  auto s3 = taxon::pfc::UniformNegatives(0.02).sample(many, 1000, g3);
  REQUIRE(at::equal(s3.index, many));
  REQUIRE(at::equal(s3.labels, many));
  REQUIRE_TAXON_ERROR(taxon::pfc::UniformNegatives(0.0), "pfc.bad-sample-rate");
}

TEST_CASE("PartialFC is a Head with N(0, 0.01^2) centres", "[pfc]") {
  STATIC_REQUIRE(taxon::Head<taxon::pfc::PartialFC<taxon::loss::ArcFace>>);
  STATIC_REQUIRE(taxon::Head<taxon::pfc::PartialFC<taxon::loss::CosFace, taxon::pfc::UniformNegatives>>);
  taxon::pfc::PartialFC<taxon::loss::ArcFace> head(taxon::pfc::PartialFCOptions(4000, 64), taxon::loss::ArcFace(32, 0.25));
  REQUIRE(head->num_classes() == 4000);
  REQUIRE(head->centroids().sizes() == at::IntArrayRef({4000, 64}));
  REQUIRE(head->parameters().size() == 1);
  const double std = head->centroids().std().item<double>();
  REQUIRE(std == Approx(0.01).epsilon(0.02));
  REQUIRE(std::abs(head->centroids().mean().item<double>()) < 1e-3);
}

TEST_CASE("PartialFC fused and reference agree with sampling and feature sub-selection", "[pfc]") {
  using taxon::loss::Impl;
  for (bool sampled : {false, true}) {
    for (std::int64_t num_feat : {0, 24}) {
      INFO("sampled=" << sampled << " num_feat=" << num_feat);
      auto opts = taxon::pfc::PartialFCOptions(500, 32).num_feat(num_feat).seed(9).chunk_size(64);
      taxon::pfc::PartialFC<taxon::loss::ArcFace, taxon::pfc::UniformNegatives> ref(taxon::pfc::PartialFCOptions(opts).impl(Impl::reference), taxon::loss::ArcFace(32, 0.3),
                                               taxon::pfc::UniformNegatives(sampled ? 0.2 : 1.0));
      taxon::pfc::PartialFC<taxon::loss::ArcFace, taxon::pfc::UniformNegatives> fus(taxon::pfc::PartialFCOptions(opts).impl(Impl::fused), taxon::loss::ArcFace(32, 0.3),
                                               taxon::pfc::UniformNegatives(sampled ? 0.2 : 1.0));
      REQUIRE(at::equal(ref->centroids(), fus->centroids()));  // same seed, same init
      at::manual_seed(4);
      auto emb = at::randn({20, 32});
      auto y = at::randint(0, 500, {20}, at::kLong);
      auto e1 = emb.clone().requires_grad_(true), e2 = emb.clone().requires_grad_(true);
      auto l1 = ref->forward(e1, y);
      auto l2 = fus->forward(e2, y);
      REQUIRE(at::equal(ref->last_sample().index, fus->last_sample().index));
      l1.backward();
      l2.backward();
      REQUIRE_TENSORS_CLOSE(l2, l1, 1e-5, 0);
      const double ge = e1.grad().abs().max().item<double>(), gw = ref->weight.grad().abs().max().item<double>();
      REQUIRE_TENSORS_CLOSE(e2.grad(), e1.grad(), 1e-5, 1e-5 * ge);
      REQUIRE_TENSORS_CLOSE(fus->weight.grad(), ref->weight.grad(), 1e-5, 1e-5 * gw);
      if (sampled) {
        // Unsampled centres get exactly zero gradient.
        auto mask = at::ones({500}, at::kBool).index_fill_(0, ref->last_sample().index, false);
        REQUIRE(fus->weight.grad().index({mask}).abs().max().item<double>() == 0.0);
        REQUIRE(ref->last_sample().index.numel() == 100);
      }
    }
  }
}

TEST_CASE("PartialFC with all classes equals the plain loss on the whole centre matrix", "[pfc]") {
  taxon::pfc::PartialFC<taxon::loss::CosFace> head(taxon::pfc::PartialFCOptions(300, 16), taxon::loss::CosFace(30, 0.35));
  at::manual_seed(8);
  auto emb = at::randn({9, 16});
  auto y = at::randint(0, 300, {9}, at::kLong);
  auto expected = taxon::loss::reference_margin_softmax_ce(emb, head->centroids(), y, taxon::loss::CosFace(30, 0.35).params());
  REQUIRE_TENSORS_CLOSE(head->forward(emb, y), expected, 1e-5, 0);
}

TEST_CASE("PartialFC accepts a smaller last batch and Bx1 labels", "[pfc]") {
  taxon::pfc::PartialFC<taxon::loss::ArcFace, taxon::pfc::UniformNegatives> head(taxon::pfc::PartialFCOptions(200, 8).seed(1), taxon::loss::ArcFace(32, 0.3), taxon::pfc::UniformNegatives(0.5));
  at::manual_seed(2);
  for (std::int64_t B : {16, 16, 5, 1}) {
    auto emb = at::randn({B, 8}).requires_grad_(true);
    auto loss = head->forward(emb, at::randint(0, 200, {B, 1}, at::kLong));
    loss.backward();
    REQUIRE(std::isfinite(loss.item<double>()));
    REQUIRE(emb.grad().sizes() == emb.sizes());
  }
}

TEST_CASE("PartialFC bad inputs produce their error ids", "[pfc]") {
  taxon::pfc::PartialFC<taxon::loss::ArcFace> head(taxon::pfc::PartialFCOptions(10, 8), taxon::loss::ArcFace(32, 0.3));
  auto emb = at::randn({3, 8});
  REQUIRE_TAXON_ERROR(head->forward(emb, at::tensor({0, 10, 1}, at::kLong)), "loss.label-out-of-range");
  REQUIRE_TAXON_ERROR(head->forward(emb, at::tensor({0, -5, 1}, at::kLong)), "loss.label-out-of-range");
  REQUIRE_TAXON_ERROR(head->forward(at::randn({3, 9}), at::tensor({0, 1, 2}, at::kLong)), "loss.dim-mismatch");
  auto bad = emb.clone();
  bad[1][1] = std::nanf("");
  REQUIRE_TAXON_ERROR(head->forward(bad, at::tensor({0, 1, 2}, at::kLong)), "loss.non-finite-embeddings");
  REQUIRE_TAXON_ERROR(head->forward(emb, at::tensor({0, 1}, at::kLong)), "loss.batch-mismatch");
  REQUIRE_TAXON_ERROR(taxon::pfc::PartialFC<taxon::loss::ArcFace>(taxon::pfc::PartialFCOptions(0, 8)), "pfc.bad-option");
  REQUIRE_TAXON_ERROR(taxon::pfc::PartialFC<taxon::loss::ArcFace>(taxon::pfc::PartialFCOptions(10, 8).num_feat(-1)), "pfc.bad-option");
  // num_feat >= D selects every feature, as upstream: identical to num_feat 0.
  taxon::pfc::PartialFC<taxon::loss::ArcFace> all(taxon::pfc::PartialFCOptions(10, 8).num_feat(9), taxon::loss::ArcFace(32, 0.3));
  taxon::pfc::PartialFC<taxon::loss::ArcFace> none(taxon::pfc::PartialFCOptions(10, 8), taxon::loss::ArcFace(32, 0.3));
  REQUIRE_TENSORS_CLOSE(all->forward(emb, at::tensor({0, 1, 2}, at::kLong)), none->forward(emb, at::tensor({0, 1, 2}, at::kLong)), 0, 0);
  try {
    head->forward(emb, at::tensor({0, 10, 1}, at::kLong));
  } catch (const taxon::Error& e) {
    const std::string msg = e.what();
    REQUIRE(msg.find("label 10") != std::string::npos);
    REQUIRE(msg.find("C = 10") != std::string::npos);
  }
}

TEST_CASE("PartialFC centroids round-trip through .npy and safetensors", "[pfc]") {
  const auto dir = test_pfc::temp_dir();
  taxon::pfc::PartialFC<taxon::loss::ArcFace> a(taxon::pfc::PartialFCOptions(50, 12).seed(1), taxon::loss::ArcFace(32, 0.3));
  taxon::pfc::PartialFC<taxon::loss::ArcFace> b(taxon::pfc::PartialFCOptions(50, 12).seed(2), taxon::loss::ArcFace(32, 0.3));
  REQUIRE_FALSE(at::equal(a->centroids(), b->centroids()));
  a->save_centroids(dir / "c.npy");
  b->load_centroids(dir / "c.npy");
  REQUIRE(at::equal(a->centroids(), b->centroids()));
  taxon::pfc::PartialFC<taxon::loss::ArcFace> c(taxon::pfc::PartialFCOptions(50, 12).seed(3), taxon::loss::ArcFace(32, 0.3));
  a->save_centroids(dir / "c.safetensors");
  c->load_centroids(dir / "c.safetensors");
  REQUIRE(at::equal(a->centroids(), c->centroids()));
  REQUIRE(taxon::io::load_safetensors(dir / "c.safetensors").metadata.at("num_classes") == "50");
  taxon::pfc::PartialFC<taxon::loss::ArcFace> wrong(taxon::pfc::PartialFCOptions(51, 12), taxon::loss::ArcFace(32, 0.3));
  REQUIRE_TAXON_ERROR(wrong->load_centroids(dir / "c.npy"), "pfc.centroid-shape");
  REQUIRE_TAXON_ERROR(wrong->load_centroids(dir / "c.safetensors"), "pfc.centroid-shape");
  std::filesystem::remove_all(dir);
}

namespace test_pfc {
// A sampler outside taxon whose labels point past its sample: PartialFC trusts only its own samplers' labels.
struct OffByOneSampler {
  static constexpr std::string_view name = "off-by-one";
  std::int64_t num_sample(std::int64_t num_local) const { return num_local; }
  taxon::pfc::ClassSample sample(const at::Tensor& local_labels, std::int64_t num_local, at::Generator&) const {
    return {at::Tensor(), at::full_like(local_labels, num_local)};
  }
};
}  // namespace test_pfc

TEST_CASE("PartialFC checks a custom sampler's labels before the loss reads them", "[pfc]") {
  taxon::pfc::PartialFC<taxon::loss::ArcFace, test_pfc::OffByOneSampler> head(taxon::pfc::PartialFCOptions(10, 8),
                                                                     taxon::loss::ArcFace(32, 0.3));
  REQUIRE_TAXON_ERROR(head->forward(at::randn({3, 8}), at::tensor({0, 1, 2}, at::kLong)), "loss.label-out-of-range");
}

TEST_CASE("PartialFC refuses world_size > 1 until a process group is given", "[pfc]") {
  // Without collectives each rank would compute a softmax over its own class shard only: silently wrong.
  using Head = taxon::pfc::PartialFC<taxon::loss::ArcFace>;
  REQUIRE_TAXON_ERROR(Head(taxon::pfc::PartialFCOptions(10, 8).world_size(2)), "pfc.no-process-group");
  REQUIRE_TAXON_ERROR(Head(taxon::pfc::PartialFCOptions(10, 8).rank(1).world_size(4)), "pfc.no-process-group");
  REQUIRE_TAXON_ERROR(Head(taxon::pfc::PartialFCOptions(10, 8).rank(2).world_size(2)), "dist.bad-rank");
  Head single(taxon::pfc::PartialFCOptions(10, 8).world_size(1));
  CHECK(single->shard().num_local == 10);
}
