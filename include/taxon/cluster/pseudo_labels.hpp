#pragma once
// Saving and loading a clustering: <dir>/labels.npy ([N] int64 pseudo-labels) and <dir>/centroids.npy
// ([K, D] float32), written atomically; numpy reads them as np.load(...).
#include "taxon/cluster/kmeans.hpp"
#include "taxon/io/npy.hpp"

#include <filesystem>

namespace taxon::cluster {

inline void save_clustering(const std::filesystem::path& dir, const KMeansResult& r) {
  TAXON_CHECK(r.labels.defined() && r.centroids.defined(), "cluster.bad-result",
              "save_clustering(", dir.string(), "): the result has no labels or centroids");
  io::save_npy(dir / "labels.npy", r.labels.to(at::kCPU, at::kLong).contiguous());
  io::save_npy(dir / "centroids.npy", r.centroids.to(at::kCPU, at::kFloat).contiguous());
}

// Labels, centroids and size statistics (objective and timings are not stored).
inline KMeansResult load_clustering(const std::filesystem::path& dir) {
  KMeansResult r;
  r.labels = io::load_npy(dir / "labels.npy");
  r.centroids = io::load_npy(dir / "centroids.npy");
  TAXON_CHECK(r.labels.dim() == 1 && !at::isFloatingType(r.labels.scalar_type()), "cluster.bad-result",
              (dir / "labels.npy").string(), " must hold a 1-D integer array, got ", r.labels.scalar_type(), " ",
              r.labels.sizes());
  TAXON_CHECK(r.centroids.dim() == 2, "cluster.bad-result", (dir / "centroids.npy").string(),
              " must hold a [K, D] array, got ", r.centroids.sizes());
  r.labels = r.labels.to(at::kLong);
  const int64_t k = r.centroids.size(0);
  TAXON_CHECK(r.labels.numel() == 0 || (r.labels.min().item<int64_t>() >= 0 && r.labels.max().item<int64_t>() < k),
              "cluster.bad-result", (dir / "labels.npy").string(), " has labels outside [0, ", k, ")");
  r.stats = cluster_stats(r.labels, k);
  return r;
}

}  // namespace taxon::cluster
