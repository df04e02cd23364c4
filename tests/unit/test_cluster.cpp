// K-means pseudo-labels: blob recovery, determinism, faiss/LibTorch parity (incl. empty-cluster repair),
// K selection, subsampling and logging, size statistics, feature combination, .npy round trip.
#include "taxon/cluster/cluster.hpp"
#include "taxon/io/npy.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>

#include "support/tensor_compare.hpp"

namespace test_cluster {

using namespace taxon::cluster;

inline at::Tensor blobs(int64_t per_blob, int64_t blobs, int64_t d, double noise, uint64_t seed, at::Tensor* truth) {
  auto gen = taxon::make_generator(seed);
  auto centres = at::randn({blobs, d}, gen) * 10;
  *truth = at::arange(blobs, at::kLong).repeat_interleave(per_blob);
  return centres.index_select(0, *truth) + noise * at::randn({blobs * per_blob, d}, gen);
}

// Fraction of points whose cluster's majority true label is their own, and the same with roles swapped.
inline std::pair<double, double> purity(const at::Tensor& labels, const at::Tensor& truth) {
  std::map<std::pair<int64_t, int64_t>, int64_t> joint;
  std::map<int64_t, int64_t> best_by_cluster, best_by_truth;
  for (int64_t i = 0; i < labels.size(0); ++i) ++joint[{labels[i].item<int64_t>(), truth[i].item<int64_t>()}];
  for (const auto& [key, count] : joint) {
    best_by_cluster[key.first] = std::max(best_by_cluster[key.first], count);
    best_by_truth[key.second] = std::max(best_by_truth[key.second], count);
  }
  double a = 0, b = 0;
  for (const auto& [c, v] : best_by_cluster) a += static_cast<double>(v);
  for (const auto& [t, v] : best_by_truth) b += static_cast<double>(v);
  return {a / static_cast<double>(labels.size(0)), b / static_cast<double>(labels.size(0))};
}

struct CaptureLog {
  std::ostringstream out;
  taxon::log::Level saved = taxon::log::threshold();
  CaptureLog() {
    taxon::log::set_sink(out);
    taxon::log::set_level(taxon::log::Level::info);
  }
  ~CaptureLog() {
    taxon::log::set_sink(std::cerr);
    taxon::log::set_level(saved);
  }
};

// The test cases live in the namespace too: its using-directives must not leak into the unity build.

TEST_CASE("k-means recovers well-separated blobs with purity 1.0 on both backends", "[cluster]") {
  // Random init (faiss's) often starts two centroids in one blob and Lloyd cannot undo it; k-means++ does not.
  at::Tensor truth;
  auto x = blobs(60, 6, 16, 0.5, 3, &truth);
  for (auto backend : {KMeansBackend::faiss, KMeansBackend::torch}) {
    for (bool spherical : {false, true}) {
      auto input = spherical ? x / x.norm(2, {1}, true) : x;
      auto r = KMeans(KMeansOptions().k(6).niter(10).nredo(2).seed(9).spherical(spherical).backend(backend)
                          .init(KMeansInit::kmeans_plus_plus).verbose(false))
                   .fit(input);
      auto [p, inverse] = purity(r.labels, truth);
      INFO("backend " << static_cast<int>(backend) << " spherical " << spherical);
      REQUIRE(p == 1.0);
      REQUIRE(inverse == 1.0);
      REQUIRE(r.labels.size(0) == 360);
      REQUIRE(r.centroids.sizes() == at::IntArrayRef({6, 16}));
      REQUIRE(r.stats.min_size == 60);
      REQUIRE(r.stats.max_size == 60);
      REQUIRE(r.stats.empty == 0);
      if (spherical) REQUIRE_TENSORS_CLOSE(r.centroids.norm(2, {1}), at::ones({6}), 1e-5, 1e-5);
      // Lloyd's objective never gets worse.
      for (size_t i = 1; i < r.objective.size(); ++i) {
        if (spherical) REQUIRE(r.objective[i] >= r.objective[i - 1] - 1e-3 * std::abs(r.objective[i - 1]));
        else REQUIRE(r.objective[i] <= r.objective[i - 1] * (1 + 1e-5));
      }
    }
  }
}

TEST_CASE("k-means is deterministic for a seed", "[cluster]") {
  at::Tensor truth;
  auto x = blobs(50, 8, 8, 6.0, 5, &truth);  // overlapping blobs: the result depends on the init
  for (auto backend : {KMeansBackend::faiss, KMeansBackend::torch}) {
    auto opts = KMeansOptions().k(8).niter(5).seed(17).backend(backend).verbose(false);
    auto a = KMeans(opts).fit(x), b = KMeans(opts).fit(x);
    REQUIRE(at::equal(a.labels, b.labels));
    REQUIRE(at::equal(a.centroids, b.centroids));
    auto c = KMeans(KMeansOptions(opts).seed(18)).fit(x);
    REQUIRE(!at::equal(c.centroids, a.centroids));
  }
  // The seeded init is shared by both backends.
  auto opts = KMeansOptions().k(8).seed(17);
  REQUIRE(at::equal(initial_centroids(x, 8, opts), initial_centroids(x, 8, opts)));
  REQUIRE(!at::equal(initial_centroids(x, 8, opts, 0), initial_centroids(x, 8, opts, 1)));
  auto pp = KMeansOptions(opts).init(KMeansInit::kmeans_plus_plus);
  REQUIRE(at::equal(initial_centroids(x, 8, pp), initial_centroids(x, 8, pp)));
  REQUIRE(std::get<0>(at::unique_dim(initial_centroids(x, 8, pp), 0)).size(0) == 8);
}

TEST_CASE("faiss and LibTorch k-means agree from the same init, including empty-cluster repair", "[cluster]") {
  at::Tensor truth;
  auto x = blobs(100, 10, 12, 4.0, 8, &truth);
  for (bool spherical : {false, true}) {
    auto input = spherical ? x / x.norm(2, {1}, true) : x;
    auto base = KMeansOptions().k(10).niter(6).seed(4).spherical(spherical).verbose(false);
    auto init = initial_centroids(input, 10, base);
    // Two starting centroids far from every point: no point picks them, so both backends must split clusters.
    init[3].fill_(spherical ? 0.0f : 1e4f);
    init[7].fill_(spherical ? 0.0f : -1e4f);
    if (spherical) {
      init[3][0] = -1;  // valid unit vectors that still attract few or no points
      init[7][1] = -1;
    }
    const auto init_copy = init.clone();
    auto f = KMeans(KMeansOptions(base).backend(KMeansBackend::faiss).init_centroids(init)).fit(input);
    REQUIRE(at::equal(init, init_copy));  // the caller's init is not modified
    auto t = KMeans(KMeansOptions(base).backend(KMeansBackend::torch).init_centroids(init)).fit(input);
    if (!spherical) REQUIRE(f.nsplit >= 2);
    REQUIRE(f.nsplit == t.nsplit);
    REQUIRE(at::equal(f.labels, t.labels));
    REQUIRE_TENSORS_CLOSE(t.centroids, f.centroids, 1e-4, 1e-4);
    REQUIRE(f.objective.size() == t.objective.size());
    for (size_t i = 0; i < f.objective.size(); ++i) REQUIRE(t.objective[i] == Approx(f.objective[i]).epsilon(1e-4));
    // Assignment alone agrees too.
    auto [lf, sf] = assign(input, f.centroids, KMeansOptions(base).backend(KMeansBackend::faiss));
    auto [lt, st] = assign(input, f.centroids, KMeansOptions(base).backend(KMeansBackend::torch).chunk_size(33));
    REQUIRE(at::equal(lf, lt));
    REQUIRE_TENSORS_CLOSE(st, sf, 1e-4, 1e-2);
  }
}

// Python faiss.Kmeans 1.7.3 on tests/data/kmeans/features.npy (tests/data/kmeans/make_golden.py).
struct FaissGolden {
  std::string name;
  KMeansOptions options;
  bool normalise;
};

inline std::vector<FaissGolden> faiss_goldens() {
  return {{"l2_seeds", KMeansOptions().k(10).niter(20), false},  // the seeds' faiss.Kmeans(d, k, niter=20)
          {"l2_seed7_subsample", KMeansOptions().k(8).niter(12).seed(7).max_points_per_centroid(40), false},
          {"spherical_seed3", KMeansOptions().k(12).niter(15).seed(3).spherical(true), true},
          {"l2_nredo3", KMeansOptions().k(9).niter(8).seed(11).nredo(3), false}};
}

inline std::filesystem::path kmeans_data(const std::string& file) {
  return std::filesystem::path(TAXON_TEST_DATA_DIR) / "kmeans" / file;
}

TEST_CASE("the faiss backend gives Python faiss.Kmeans' centroids and assignments for the same seed", "[cluster]") {
  const auto x = taxon::io::load_npy(kmeans_data("features.npy"));
  REQUIRE(KMeansOptions().seed() == 1234);  // faiss.Kmeans' default seed
  for (const auto& g : faiss_goldens()) {
    INFO(g.name);
    const auto input = g.normalise ? x / x.norm(2, {1}, true) : x;
    const auto centroids = taxon::io::load_npy(kmeans_data("centroids_" + g.name + ".npy"));
    const auto labels = taxon::io::load_npy(kmeans_data("labels_" + g.name + ".npy"));
    auto f = KMeans(KMeansOptions(g.options).backend(KMeansBackend::faiss).verbose(false)).fit(input);
    REQUIRE_TENSORS_CLOSE(f.centroids, centroids, 1e-5, 1e-5);
    REQUIRE(at::equal(f.labels, labels));
    // The LibTorch backend draws the same subsample and initial centroids (faiss's rand_perm and seeds).
    auto t = KMeans(KMeansOptions(g.options).backend(KMeansBackend::torch).verbose(false)).fit(input);
    REQUIRE_TENSORS_CLOSE(t.centroids, centroids, 1e-4, 1e-4);
    REQUIRE(at::equal(t.labels, labels));
  }
  // The seed is what picks them: another seed, other centroids.
  const auto g = faiss_goldens().front();
  auto other = KMeans(KMeansOptions(g.options).seed(1235).backend(KMeansBackend::faiss).verbose(false)).fit(x);
  REQUIRE(!at::allclose(other.centroids, taxon::io::load_npy(kmeans_data("centroids_" + g.name + ".npy")), 1e-3, 1e-3));
  REQUIRE_TAXON_ERROR(KMeans(KMeansOptions(g.options).seed(uint64_t{1} << 31)).fit(x), "cluster.bad-option");
}

TEST_CASE("choosing K: count, fraction of N, and K > N is an error", "[cluster]") {
  REQUIRE(resolve_k(1000, KMeansOptions().k(50)) == 50);
  REQUIRE(resolve_k(1000, KMeansOptions().k_fraction(0.1)) == 100);
  REQUIRE(resolve_k(1000, KMeansOptions().k_fraction(0.01)) == 10);
  REQUIRE(resolve_k(10, KMeansOptions().k_fraction(0.001)) == 1);
  REQUIRE_TAXON_ERROR(resolve_k(10, KMeansOptions().k(11)), "cluster.k-too-large");
  REQUIRE_TAXON_ERROR(resolve_k(10, KMeansOptions()), "cluster.bad-k");
  REQUIRE_TAXON_ERROR(KMeans(KMeansOptions().k(6).verbose(false)).fit(at::randn({5, 3})), "cluster.k-too-large");
  REQUIRE_TAXON_ERROR(KMeans(KMeansOptions().k(2)).fit(at::randn({5})), "cluster.bad-features");
  REQUIRE_TAXON_ERROR(KMeans(KMeansOptions().k(2).init_centroids(at::zeros({3, 3}))).fit(at::randn({5, 3})),
                      "cluster.bad-init");
}

TEST_CASE("k-means subsamples explicitly, assigns all N, and logs every iteration", "[cluster]") {
  at::Tensor truth;
  auto x = blobs(500, 4, 8, 0.5, 2, &truth);
  CaptureLog capture;
  auto r = KMeans(KMeansOptions().k(4).niter(3).nredo(4).max_points_per_centroid(100).seed(1)).fit(x);
  const std::string log = capture.out.str();
  REQUIRE(r.num_train == 400);
  REQUIRE(r.labels.size(0) == 2000);
  REQUIRE(r.iterations == 3);
  REQUIRE(r.objective.size() == 3);
  REQUIRE(log.find("subsampling 2000 points to 400") != std::string::npos);
  REQUIRE(log.find("iter 3/3: objective") != std::string::npos);
  REQUIRE(log.find("0 empty of 4") != std::string::npos);
  REQUIRE(purity(r.labels, truth).first == 1.0);
  REQUIRE(training_rows(2000, 4, KMeansOptions().max_points_per_centroid(100)).size(0) == 400);
  REQUIRE(training_rows(300, 4, KMeansOptions().max_points_per_centroid(100)).size(0) == 300);

  KMeans(KMeansOptions().k(4).niter(1).min_points_per_centroid(39)).fit(x.narrow(0, 0, 100));
  REQUIRE(capture.out.str().find("fewer than min_points_per_centroid") != std::string::npos);
}

TEST_CASE("cluster size statistics and compacting empty clusters", "[cluster]") {
  auto labels = at::tensor({0L, 0L, 0L, 1L, 3L, 3L});
  auto s = cluster_stats(labels, 4);
  REQUIRE(s.min_size == 0);
  REQUIRE(s.max_size == 3);
  REQUIRE(s.median_size == 1.5);
  REQUIRE(s.empty == 1);
  KMeansResult r;
  r.labels = labels;
  r.centroids = at::arange(8, at::kFloat).view({4, 2});
  compact_labels(r);
  REQUIRE(at::equal(r.labels, at::tensor({0L, 0L, 0L, 1L, 2L, 2L})));
  REQUIRE(at::equal(r.centroids, at::tensor({0.f, 1.f, 2.f, 3.f, 6.f, 7.f}).view({3, 2})));
  REQUIRE(r.stats.empty == 0);
}

TEST_CASE("feature combination: mean or concat of L2-normalised sets, from .npy", "[cluster]") {
  auto img = at::tensor({3.f, 4.f, 0.f, 2.f}).view({2, 2});
  auto txt = at::tensor({1.f, 0.f, 0.f, -5.f}).view({2, 2});
  auto mean = combine_features({img, txt});
  REQUIRE_TENSORS_CLOSE(mean, at::tensor({0.8f, 0.4f, 0.f, 0.f}).view({2, 2}), 1e-6, 1e-6);
  auto concat = combine_features({img, txt}, Combine::concat);
  REQUIRE_TENSORS_CLOSE(concat, at::tensor({0.6f, 0.8f, 1.f, 0.f, 0.f, 1.f, 0.f, -1.f}).view({2, 4}), 1e-6, 1e-6);
  auto renorm = combine_features({img, txt}, Combine::concat, true);
  REQUIRE_TENSORS_CLOSE(renorm.norm(2, {1}), at::ones({2}), 1e-6, 1e-6);
  REQUIRE_TAXON_ERROR(combine_features({img, at::randn({3, 2})}), "cluster.feature-mismatch");
  REQUIRE_TAXON_ERROR(combine_features({img, at::randn({2, 3})}), "cluster.feature-mismatch");
  REQUIRE(combine_features({img, at::randn({2, 3})}, Combine::concat).size(1) == 5);

  auto dir = std::filesystem::temp_directory_path() / ("taxon_cluster_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  taxon::io::save_npy(dir / "img.npy", img);
  taxon::io::save_npy(dir / "txt.npy", txt);
  REQUIRE_TENSORS_CLOSE(load_features({dir / "img.npy", dir / "txt.npy"}), mean, 0, 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("pseudo-labels and centroids round-trip through .npy", "[cluster]") {
  at::Tensor truth;
  auto x = blobs(20, 3, 4, 0.5, 6, &truth);
  auto r = KMeans(KMeansOptions().k(3).niter(4).verbose(false)).fit(x);
  auto dir = std::filesystem::temp_directory_path() / ("taxon_pseudo_" + std::to_string(::getpid()));
  save_clustering(dir, r);
  auto back = load_clustering(dir);
  REQUIRE(at::equal(back.labels, r.labels));
  REQUIRE(at::equal(back.centroids, r.centroids));
  REQUIRE(back.stats.max_size == r.stats.max_size);
  taxon::io::save_npy(dir / "labels.npy", at::tensor({0L, 5L}));
  REQUIRE_TAXON_ERROR(load_clustering(dir), "cluster.bad-result");
  std::filesystem::remove_all(dir);
}

// Stands in for a callback someone else installed in faiss: k-means must put it back.
struct OtherInterruptCallback final : faiss::InterruptCallback {
  bool want_interrupt() override { return false; }
};

TEST_CASE("a stop request ends k-means between iterations on both backends and restores faiss's callback", "[cluster]") {
  at::Tensor truth;
  auto x = blobs(40, 4, 8, 1.0, 11, &truth);
  {
    std::lock_guard<std::mutex> lock(faiss::InterruptCallback::lock);
    faiss::InterruptCallback::instance = std::make_unique<OtherInterruptCallback>();
  }
  const auto* other = faiss::InterruptCallback::instance.get();
  for (auto backend : {KMeansBackend::faiss, KMeansBackend::torch}) {
    INFO("backend " << static_cast<int>(backend));
    int asked = 0;  // the third question comes in an early iteration of 50
    const auto options = KMeansOptions().k(4).niter(50).seed(3).backend(backend).verbose(false)
                             .stop_requested([&] { return ++asked >= 3; });
    REQUIRE_TAXON_ERROR(KMeans(options).fit(x), "cluster.interrupted");
    // Stopped at once, not after the remaining iterations (faiss also asks inside its search, and taxon asks once
    // more to tell a stop from another faiss error).
    CHECK(asked <= (backend == KMeansBackend::torch ? 3 : 4));
    CHECK(faiss::InterruptCallback::instance.get() == other);
    // Never asked to stop: the same result as without a callback, and the other callback still in place.
    const auto plain = KMeans(KMeansOptions(options).niter(5).stop_requested(nullptr)).fit(x);
    const auto asked_never = KMeans(KMeansOptions(options).niter(5).stop_requested([] { return false; })).fit(x);
    CHECK(at::equal(plain.labels, asked_never.labels));
    CHECK(at::equal(plain.centroids, asked_never.centroids));
    CHECK(faiss::InterruptCallback::instance.get() == other);
  }
  faiss::InterruptCallback::clear_instance();
}

}  // namespace test_cluster
