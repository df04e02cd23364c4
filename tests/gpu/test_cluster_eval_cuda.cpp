// LibTorch k-means and kNN retrieval on CUDA against the CPU runs (moved from tests/unit, where they could only
// WARN-pass without a GPU).
#include "taxon/cluster/cluster.hpp"
#include "taxon/core/seed.hpp"
#include "taxon/eval/eval.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include "support/tensor_compare.hpp"

namespace test_cluster_eval_cuda {

// Points around `classes` random centres with their class labels.
inline at::Tensor clustered(int64_t n, int64_t d, int64_t classes, uint64_t seed, double noise, at::Tensor* labels) {
  auto gen = taxon::make_generator(seed);
  auto centres = at::randn({classes, d}, gen) * 4;
  *labels = at::randint(0, classes, {n}, gen);
  return centres.index_select(0, *labels) + noise * at::randn({n, d}, gen);
}

TEST_CASE("LibTorch k-means on CUDA matches the CPU run", "[cluster][cuda]") {
  using namespace taxon::cluster;
  at::Tensor truth;
  auto x = clustered(1000, 12, 10, 8, 1.0, &truth);
  auto opts = KMeansOptions().k(10).niter(5).backend(KMeansBackend::torch).verbose(false);
  auto cpu = KMeans(opts).fit(x);
  auto gpu = KMeans(opts).fit(x.cuda());
  REQUIRE(gpu.centroids.is_cuda());
  REQUIRE(at::equal(cpu.labels, gpu.labels.cpu()));
  REQUIRE_TENSORS_CLOSE(gpu.centroids.cpu(), cpu.centroids, 1e-4, 1e-4);
}

TEST_CASE("LibTorch kNN on CUDA matches faiss on the CPU", "[eval][cuda]") {
  using namespace taxon::eval;
  at::Tensor labels;
  auto x = clustered(3000, 64, 40, 5, 3.0, &labels);
  auto cpu = evaluate_retrieval(x, labels, RetrievalOptions().backend(KnnBackend::faiss));
  auto gpu = evaluate_retrieval(x.cuda(), labels.cuda(), RetrievalOptions().backend(KnnBackend::torch));
  REQUIRE(gpu.map_at_r == Approx(cpu.map_at_r).epsilon(1e-6));
  REQUIRE(gpu.precision_at_1 == Approx(cpu.precision_at_1).epsilon(1e-6));
}

}  // namespace test_cluster_eval_cuda
