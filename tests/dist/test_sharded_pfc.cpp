// The class-sharded PartialFC across the ranks taxon_launch started (2 and 4 in ctest) against the single-process
// head on the same global batch and the same centres: loss, embedding gradient and each rank's centre-shard
// gradient, for every margin, both implementations, with and without class sampling; and the centroid export.
#include "dist/dist_support.hpp"
#include "support/temp_dir.hpp"
#include "support/tensor_compare.hpp"
#include "taxon/pfc/partial_fc.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace test_sharded_pfc {
using taxon::loss::Impl;
using taxon::pfc::PartialFCOptions;

constexpr std::int64_t num_classes = 37;  // shards of 19/18 (2 ranks) and 10/9/9/9 (4 ranks)
constexpr std::int64_t dim = 16;

// The same global batch and centres on every rank (fixed seed); rank r's rows are its slice, of 3 + r rows, so the
// ranks' batches differ in size. Row 1 is ignored (-1); labels repeat so several rows share a class.
struct Problem {
  at::Tensor embeddings, labels, centres;
  std::vector<std::int64_t> row_start;  // rank r's rows: [row_start[r], row_start[r + 1])

  explicit Problem(int world_size) {
    at::Generator gen = taxon::make_generator(4242, {static_cast<std::uint64_t>(world_size)});
    row_start.push_back(0);
    for (int r = 0; r < world_size; ++r) row_start.push_back(row_start.back() + 3 + r);
    const std::int64_t B = row_start.back();
    embeddings = at::randn({B, dim}, gen);
    labels = at::randint(num_classes, {B}, gen, at::kLong);
    labels[1] = -1;
    labels[2] = labels[0];
    centres = at::randn({num_classes, dim}, gen) * 0.1;
    // Some rows close to their class centre, so the margin's target logits are large and the softmax is peaked.
    for (std::int64_t i = 3; i < B; i += 2) {
      const std::int64_t y = labels[i].item<std::int64_t>();
      embeddings[i] = centres[y] * 10 + embeddings[i] * 0.2;
    }
  }
  at::Tensor rows_of(const at::Tensor& t, int rank) const {
    return t.narrow(0, row_start[rank], row_start[rank + 1] - row_start[rank]);
  }
};

struct Result {
  at::Tensor loss, embedding_grad, centre_grad;
};

// max |actual − expected| ≤ tol · max(1, max |expected|): the error relative to the tensor's scale. Float32 sums in
// another order (the sharded log-sum-exp merges per-rank partial sums) differ by ~1e-6 of the largest entry, while
// single small entries can differ by far more relative to themselves.
#define CHECK_CLOSE_TO_SCALE(actual, expected, tol)                                                            \
  do {                                                                                                         \
    const at::Tensor a_ = (actual).to(at::kDouble), e_ = (expected).to(at::kDouble);                          \
    REQUIRE(a_.sizes() == e_.sizes());                                                                         \
    const double err_ = (a_ - e_).abs().max().item<double>();                                                  \
    const double scale_ = std::max(1.0, e_.abs().max().item<double>());                                       \
    INFO(#actual " vs " #expected ": max abs error " << err_ << ", scale " << scale_);                         \
    CHECK(err_ <= (tol) * scale_);                                                                             \
  } while (false)

template <typename Head>
Result run(Head& head, const at::Tensor& weight, const at::Tensor& embeddings, const at::Tensor& labels) {
  {
    at::NoGradGuard no_grad;
    head->weight.copy_(weight);
  }
  at::Tensor e = embeddings.clone().requires_grad_(true);
  at::Tensor loss = head->forward(e, labels);
  loss.backward();
  return {loss.detach(), e.grad(), head->weight.grad().clone()};
}

// Sharded head vs the single-process head over the same classes: equal loss (and equal on every rank), embedding
// gradient world_size × the single head's slice (upstream's AllGatherFunc scaling), centre gradient equal slice.
// In float64 (reference implementation only) the two agree to rounding of doubles: the algorithm is exact.
template <typename Margin>
void check_equivalence(const Margin& margin, Impl impl, const std::string& what, at::ScalarType dtype = at::kFloat) {
  auto& group = taxon::test::dist_group();
  const int r = group.rank(), w = group.world_size();
  const Problem problem(w);
  INFO(what << (impl == Impl::fused ? " fused" : " reference") << " " << dtype << ", rank " << r << " of " << w);
  const double tol = dtype == at::kDouble ? 1e-12 : 1e-5;

  using Head = taxon::pfc::PartialFC<Margin>;
  Head single(PartialFCOptions(num_classes, dim).impl(impl).chunk_size(4), margin);
  single->to(dtype);
  const Result expected = run(single, problem.centres, problem.embeddings.to(dtype), problem.labels);

  Head sharded(PartialFCOptions(num_classes, dim).impl(impl).chunk_size(4).process_group(group), margin);
  sharded->to(dtype);
  const auto shard = sharded->shard();
  REQUIRE(sharded->options().rank() == r);
  REQUIRE(sharded->weight.size(0) == shard.num_local);
  const Result got = run(sharded, problem.centres.narrow(0, shard.class_start, shard.num_local),
                         problem.rows_of(problem.embeddings.to(dtype), r), problem.rows_of(problem.labels, r));

  CHECK_CLOSE_TO_SCALE(got.loss, expected.loss, tol);
  CHECK(group.all_gather(got.loss.reshape({1})).eq(got.loss).all().item<bool>());  // bit-identical on all ranks
  CHECK_CLOSE_TO_SCALE(got.embedding_grad, problem.rows_of(expected.embedding_grad, r) * w, tol);
  CHECK_CLOSE_TO_SCALE(got.centre_grad, expected.centre_grad.narrow(0, shard.class_start, shard.num_local), tol);
}
}  // namespace test_sharded_pfc

using namespace test_sharded_pfc;

TEST_CASE("sharded PartialFC equals the single-process head for every margin, reference and fused", "[pfc]") {
  REQUIRE(taxon::test::dist_group().distributed());
  for (const Impl impl : {Impl::reference, Impl::fused}) {
    check_equivalence(taxon::loss::ArcFace(64.0, 0.5), impl, "ArcFace");
    check_equivalence(taxon::loss::ArcFace(taxon::loss::ArcFaceOptions(32.0, 0.3).grad_mode(
                          taxon::loss::GradMode::exact)),
                      impl, "ArcFace exact");
    check_equivalence(taxon::loss::CosFace(64.0, 0.4), impl, "CosFace");
    check_equivalence(taxon::loss::SphereFace(30.0, 1.35), impl, "SphereFace");
    check_equivalence(taxon::loss::Combined(taxon::loss::CombinedOptions(64.0, 1.0, 0.3, 0.2)), impl, "Combined");
    check_equivalence(taxon::loss::CosFace(taxon::loss::CosFaceOptions(64.0, 0.4).filter(0.1)), impl,
                      "CosFace with inter-class filtering");
  }
  check_equivalence(taxon::loss::ArcFace(64.0, 0.5), Impl::reference, "ArcFace", at::kDouble);
  check_equivalence(taxon::loss::Combined(taxon::loss::CombinedOptions(64.0, 1.0, 0.3, 0.2)), Impl::reference,
                    "Combined", at::kDouble);
}

TEST_CASE("sharded PartialFC with sampling: each rank keeps its positives, samples int(rate x num_local), and equals "
          "one process over the union of the samples",
          "[pfc]") {
  auto& group = taxon::test::dist_group();
  const int r = group.rank(), w = group.world_size();
  const Problem problem(w);
  for (const Impl impl : {Impl::reference, Impl::fused}) {
    INFO((impl == Impl::fused ? "fused" : "reference") << ", rank " << r << " of " << w);
    using Head = taxon::pfc::PartialFC<taxon::loss::ArcFace, taxon::pfc::UniformNegatives>;
    const taxon::pfc::UniformNegatives sampler(0.5);
    Head sharded(PartialFCOptions(num_classes, dim).impl(impl).chunk_size(3).process_group(group).seed(7),
                 taxon::loss::ArcFace(), sampler);
    const auto shard = sharded->shard();
    const Result got = run(sharded, problem.centres.narrow(0, shard.class_start, shard.num_local),
                           problem.rows_of(problem.embeddings, r), problem.rows_of(problem.labels, r));
    const at::Tensor index = sharded->last_sample().index;
    REQUIRE(index.defined());

    // Upstream semantics, per rank: every class of this shard that labels a row anywhere in the global batch ...
    const at::Tensor y = problem.labels;
    const at::Tensor mine = y.masked_select((y >= shard.class_start) & (y < shard.class_start + shard.num_local));
    const at::Tensor positives = std::get<0>(at::_unique(mine - shard.class_start, /*sorted=*/true));
    CHECK(at::isin(positives, index).all().item<bool>());
    // ... plus uniform negatives up to int(rate · num_local), or only the positives when they exceed that.
    const std::int64_t budget = sampler.num_sample(shard.num_local);
    CHECK(index.numel() == std::max<std::int64_t>(budget, positives.numel()));
    CHECK(std::get<0>(at::sort(index)).equal(index));

    // One process over the union of the ranks' samples (global ids, in class order) gives the same loss and grads.
    const at::Tensor ids = group.all_gather_uneven(index + shard.class_start);
    const at::Tensor union_labels = at::where(y >= 0, at::searchsorted(ids, y.clamp_min(0)), y);
    REQUIRE(ids.index_select(0, union_labels.masked_select(y >= 0)).equal(y.masked_select(y >= 0)));
    taxon::pfc::PartialFC<taxon::loss::ArcFace> single(PartialFCOptions(ids.numel(), dim).impl(impl));
    const Result expected = run(single, problem.centres.index_select(0, ids), problem.embeddings, union_labels);

    CHECK_CLOSE_TO_SCALE(got.loss, expected.loss, 1e-5);
    CHECK_CLOSE_TO_SCALE(got.embedding_grad, problem.rows_of(expected.embedding_grad, r) * w, 1e-5);
    const std::int64_t first = group.all_gather(at::full({1}, index.numel(), at::kLong))
                                   .narrow(0, 0, r)
                                   .sum()
                                   .item<std::int64_t>();  // this rank's samples start here in the union
    CHECK_CLOSE_TO_SCALE(got.centre_grad.index_select(0, index), expected.centre_grad.narrow(0, first, index.numel()),
                         1e-5);
    // Rows not sampled this step get a zero gradient (a dense tensor, as upstream's weight[index] gather).
    at::Tensor unsampled = at::ones({shard.num_local}, at::kBool);
    unsampled.index_fill_(0, index, false);
    CHECK(got.centre_grad.index({unsampled}).abs().sum().item<double>() == 0.0);
  }
}

TEST_CASE("sharded PartialFC exports every centre in class order, loadable by a single-process head", "[pfc]") {
  auto& group = taxon::test::dist_group();
  const Problem problem(group.world_size());
  using Head = taxon::pfc::PartialFC<taxon::loss::CosFace>;
  Head sharded(PartialFCOptions(num_classes, dim).process_group(group));
  const auto shard = sharded->shard();
  {
    at::NoGradGuard no_grad;
    sharded->weight.copy_(problem.centres.narrow(0, shard.class_start, shard.num_local));
  }
  CHECK(sharded->all_centroids().equal(problem.centres));
  // Rank 0 writes; its temp dir is its own, and the others have nothing to write.
  taxon::test::TempDir dir("taxon_dist_export");
  sharded->export_centroids(dir / "centres.safetensors");
  if (group.rank() == 0) {
    Head single(PartialFCOptions(num_classes, dim));
    single->load_centroids(dir / "centres.safetensors");
    CHECK(single->weight.equal(problem.centres));
  } else {
    CHECK_FALSE(std::filesystem::exists(dir / "centres.safetensors"));
  }
}

TEST_CASE("sharded PartialFC options: a process group sets rank and world size, contradicting values are errors",
          "[pfc]") {
  auto& group = taxon::test::dist_group();
  using Head = taxon::pfc::PartialFC<taxon::loss::ArcFace>;
  Head ok(PartialFCOptions(10, 4).rank(group.rank()).world_size(group.world_size()).process_group(group));
  CHECK(ok->shard().num_local == taxon::dist::class_shard(10, group.rank(), group.world_size()).num_local);
  REQUIRE_TAXON_ERROR(Head(PartialFCOptions(10, 4).world_size(group.world_size() + 1).process_group(group)),
                      "pfc.bad-option");
  REQUIRE_TAXON_ERROR(Head(PartialFCOptions(10, 4).world_size(group.world_size())), "pfc.no-process-group");
  // A bad label on one rank fails on every rank (the labels are checked after the gather), not with a hang.
  Head head(PartialFCOptions(10, 4).process_group(group));
  const at::Tensor labels = at::full({2}, group.rank() == 0 ? 10 : 1, at::kLong);
  REQUIRE_TAXON_ERROR(head->forward(at::randn({2, 4}), labels), "loss.label-out-of-range");
  REQUIRE_TAXON_ERROR(head->forward(at::randn({2, group.rank() == 0 ? 5 : 4}), at::zeros({2}, at::kLong)),
                      "dist.shape-mismatch");
}
