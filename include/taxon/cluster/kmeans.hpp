#pragma once
// K-means into pseudo-classes (UNICOM's offline step) with two backends sharing one recipe:
//   faiss  - faiss::Clustering (CPU, BLAS) set up as Python's faiss.Kmeans sets it up (faiss/python
//            extra_wrappers.py, faiss 1.7.3): same parameters, IndexFlatL2 or IndexFlatIP (spherical), faiss's
//            own subsample and initial centroids, so the same data, k, niter, seed and metric give the same
//            centroids as `faiss.Kmeans(d, k, niter=..., seed=..., spherical=...).train(x)`;
//   torch  - LibTorch matmul assignment in blocks, on whatever device the features live (CUDA included).
// The default, automatic, picks torch for features on (or KMeansOptions::device set to) a GPU and faiss on the
// CPU: faiss is CPU-only in this build, so GPU embeddings are clustered where they are.
// The torch backend draws its subsample and initial centroids with faiss's rand_perm and faiss's seeds
// (seed for the subsample, seed + 1 + redo * 15486557 for restart `redo`) and repairs empty clusters with
// faiss's split rule, so on the same input both backends give the same centroids up to float rounding and
// assignment ties.
#include "taxon/core/device.hpp"
#include "taxon/core/error.hpp"
#include "taxon/core/normalize.hpp"
#include "taxon/core/log.hpp"
#include "taxon/core/options.hpp"
#include "taxon/core/progress.hpp"
#include "taxon/core/seed.hpp"

#include <ATen/ATen.h>
#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/FaissException.h>
#include <faiss/utils/random.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace taxon::cluster {

// automatic: torch on a CUDA device, faiss on the CPU.
enum class KMeansBackend { faiss, torch, automatic };
// random: K distinct training points (faiss's own init); kmeans_plus_plus: D^2 sampling (O(N K D) extra work,
// far fewer bad local minima on well-separated data).
enum class KMeansInit { random, kmeans_plus_plus };

struct KMeansOptions {
  // Number of clusters; 0 means k_fraction * N (the seeds plan 10% and 1% of the number of classes/images).
  TAXON_ARG(int64_t, k) = 0;
  TAXON_ARG(double, k_fraction) = 0.0;
  TAXON_ARG(int, niter) = 20;
  // Independent restarts (different seeded inits); the best final objective is kept.
  TAXON_ARG(int, nredo) = 1;
  // faiss's ClusteringParameters::seed (faiss.Kmeans' default is 1234): it drives the subsample and the
  // initial centroids exactly as in faiss; faiss seeds are C ints, so it must fit in [0, 2^31).
  TAXON_ARG(uint64_t, seed) = 1234;
  // Inner-product assignment and unit-norm centroids: k-means on the sphere, for L2-normalised features.
  TAXON_ARG(bool, spherical) = false;
  // Train on at most max_points_per_centroid * K points (faiss's subsample; faiss's default is 256).
  TAXON_ARG(int64_t, max_points_per_centroid) = 256;
  // Warn below min_points_per_centroid * K points (faiss's default is 39).
  TAXON_ARG(int64_t, min_points_per_centroid) = 39;
  TAXON_ARG(KMeansBackend, backend) = KMeansBackend::automatic;
  // Where to cluster; defaults to the features' device. An explicit faiss backend runs on the CPU whatever this
  // says (and logs that it moved the features).
  TAXON_ARG(std::optional<at::Device>, device);
  // Points per assignment block for the torch backend; 0: at most 2^25 scores per block.
  TAXON_ARG(int64_t, chunk_size) = 0;
  TAXON_ARG(KMeansInit, init) = KMeansInit::random;
  // [K, D] starting centroids (overrides the seeded pick; nredo must be 1).
  TAXON_ARG(at::Tensor, init_centroids) = {};
  TAXON_ARG(bool, verbose) = true;
  // Asked between iterations (e.g. a Ctrl-C flag; faiss asks it through its InterruptCallback); true ends fit()
  // with cluster.interrupted and no result.
  TAXON_ARG(std::function<bool()>, stop_requested);
};

struct ClusterStats {
  int64_t k = 0;
  int64_t min_size = 0, max_size = 0, empty = 0;
  double median_size = 0;
  std::string describe() const {
    return c10::str("sizes min ", min_size, " / median ", median_size, " / max ", max_size, ", ", empty,
                    " empty of ", k);
  }
};

struct KMeansResult {
  at::Tensor centroids;           // [K, D] float32, on the training device
  at::Tensor labels;              // [N] int64 nearest centroid (pseudo-label) for every input point, CPU
  at::Tensor scores;              // [N] float: inner product (spherical) or squared Euclidean distance, CPU
  ClusterStats stats;             // of `labels`
  std::vector<double> objective;  // per iteration of the kept run: sum of scores over the training points
  int64_t num_train = 0;          // training points after subsampling
  int iterations = 0;
  int nsplit = 0;                 // empty clusters repaired during training (all iterations)
  double seconds = 0;
};

// K from a count or a fraction of N; K > N is an error.
inline int64_t resolve_k(int64_t n, const KMeansOptions& o) {
  int64_t k = o.k();
  if (k <= 0) {
    TAXON_CHECK(o.k_fraction() > 0, "cluster.bad-k", "set KMeansOptions::k (a count) or k_fraction (of N); got k=",
                o.k(), " k_fraction=", o.k_fraction());
    k = std::max<int64_t>(1, static_cast<int64_t>(std::llround(o.k_fraction() * static_cast<double>(n))));
  }
  TAXON_CHECK(k <= n, "cluster.k-too-large", "cannot make K=", k, " clusters from N=", n, " points");
  return k;
}

inline ClusterStats cluster_stats(const at::Tensor& labels, int64_t k) {
  ClusterStats s;
  s.k = k;
  auto sizes = std::get<0>(at::bincount(labels.to(at::kCPU, at::kLong), {}, k).sort());
  auto p = sizes.data_ptr<int64_t>();
  s.min_size = p[0];
  s.max_size = p[k - 1];
  s.median_size = k % 2 ? static_cast<double>(p[k / 2]) : 0.5 * static_cast<double>(p[k / 2 - 1] + p[k / 2]);
  s.empty = (sizes == 0).sum().item<int64_t>();
  return s;
}

// The backend and device k-means runs with for features on `features_device`; an explicit faiss backend asked
// to work on a GPU runs on the CPU instead, and says so.
struct KMeansPlacement {
  KMeansBackend backend;
  at::Device device;
};
inline KMeansPlacement placement(const KMeansOptions& o, at::Device features_device) {
  at::Device device = o.device().value_or(features_device);
  require_usable(device);
  KMeansBackend backend = o.backend();
  if (backend == KMeansBackend::automatic) backend = device.is_cuda() ? KMeansBackend::torch : KMeansBackend::faiss;
  if (backend == KMeansBackend::faiss && !device.is_cpu()) {
    if (o.verbose())
      log::info("kmeans: the faiss backend is CPU-only here; the features are moved from ", device.str(),
                " to the CPU (KMeansBackend::torch or automatic clusters them on the GPU)");
    device = at::Device(at::kCPU);
  }
  return {backend, device};
}

namespace detail {

inline void check_features(const at::Tensor& x) {
  TAXON_CHECK(x.defined() && x.dim() == 2 && x.size(0) > 0 && x.size(1) > 0, "cluster.bad-features",
              "features must be a non-empty [N, D] tensor, got ", x.defined() ? x.sizes() : at::IntArrayRef{});
  TAXON_CHECK(at::isFloatingType(x.scalar_type()), "cluster.bad-features", "features must be floating point, got ",
              x.scalar_type());
}

// Nearest centroid per row by LibTorch matmuls: (labels [n] int64, scores [n] float) on x's device.
inline std::pair<at::Tensor, at::Tensor> assign_torch(const at::Tensor& x, const at::Tensor& centroids,
                                                      bool spherical, int64_t chunk) {
  const int64_t n = x.size(0), k = centroids.size(0);
  if (chunk <= 0) chunk = std::max<int64_t>(1, (int64_t{1} << 25) / k);
  auto labels = at::empty({n}, x.options().dtype(at::kLong));
  auto scores = at::empty({n}, x.options());
  auto c_sq = spherical ? at::Tensor() : centroids.pow(2).sum(1).unsqueeze(0);
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t m = std::min(chunk, n - s);
    auto xs = x.narrow(0, s, m);
    at::Tensor best, val;
    if (spherical) {
      auto ip = at::mm(xs, centroids.t());
      best = ip.argmax(1);
      val = ip.gather(1, best.unsqueeze(1)).squeeze(1);
    } else {
      auto d2 = at::addmm(c_sq, xs, centroids.t(), 1, -2);  // |c|^2 - 2 x.c: |x|^2 added back below
      best = d2.argmin(1);
      val = (d2.gather(1, best.unsqueeze(1)).squeeze(1) + xs.pow(2).sum(1)).clamp_min(0);
    }
    labels.narrow(0, s, m).copy_(best);
    scores.narrow(0, s, m).copy_(val);
  }
  return {labels, scores};
}

inline std::pair<at::Tensor, at::Tensor> assign_faiss(const at::Tensor& x, const at::Tensor& centroids,
                                                      bool spherical) {
  auto c = centroids.to(at::kCPU, at::kFloat).contiguous();
  auto xs = x.to(at::kCPU, at::kFloat).contiguous();
  faiss::IndexFlat index(c.size(1), spherical ? faiss::METRIC_INNER_PRODUCT : faiss::METRIC_L2);
  index.add(c.size(0), c.data_ptr<float>());
  auto labels = at::empty({xs.size(0)}, at::kLong);
  auto scores = at::empty({xs.size(0)}, at::kFloat);
  index.search(xs.size(0), xs.data_ptr<float>(), 1, scores.data_ptr<float>(), labels.data_ptr<int64_t>());
  return {labels, scores};
}

// faiss's split_clusters (Clustering.cpp): each empty cluster takes a copy of a cluster picked with
// probability (size - 1) / (n - k) by an mt19937 seeded 1234, both copies nudged by +-1/1024; sizes are
// floats there (halving is not rounded), and so they are here.
inline int split_empty_clusters(at::Tensor& centroids, std::vector<float>& counts, int64_t n) {
  const auto k = static_cast<int64_t>(counts.size());
  if (std::find(counts.begin(), counts.end(), 0) == counts.end()) return 0;
  auto c = centroids.to(at::kCPU, at::kFloat).contiguous().clone();
  float* p = c.data_ptr<float>();
  const int64_t d = c.size(1);
  const float eps = 1.0f / 1024;
  std::mt19937 rng(1234);
  int nsplit = 0;
  for (int64_t ci = 0; ci < k; ++ci) {
    if (counts[ci] != 0) continue;
    int64_t cj = 0;
    for (;; cj = (cj + 1) % k) {
      const float prob = (counts[cj] - 1.0f) / static_cast<float>(n - k);
      const float r = static_cast<float>(rng()) / static_cast<float>(rng.max());
      if (r < prob) break;
    }
    std::copy(p + cj * d, p + (cj + 1) * d, p + ci * d);
    for (int64_t j = 0; j < d; ++j) {
      p[ci * d + j] *= j % 2 == 0 ? 1 + eps : 1 - eps;
      p[cj * d + j] *= j % 2 == 0 ? 1 - eps : 1 + eps;
    }
    counts[ci] = counts[cj] / 2;
    counts[cj] -= counts[ci];
    ++nsplit;
  }
  centroids = c.to(centroids.device());
  return nsplit;
}

struct RunResult {
  at::Tensor centroids;
  std::vector<double> objective;
  int nsplit = 0;
};

// faiss's seed is a C int; taxon's option is unsigned 64-bit so that it composes with the rest of the library.
inline int faiss_seed(const KMeansOptions& o) {
  TAXON_CHECK(o.seed() <= static_cast<uint64_t>(std::numeric_limits<int>::max()), "cluster.bad-option",
              "the k-means seed is faiss's (a C int): it must be below 2^31, got ", o.seed());
  return static_cast<int>(o.seed());
}

// faiss's max_points_per_centroid (an int; taxon's <= 0 means no cap).
inline int faiss_max_points(const KMeansOptions& o) {
  const int64_t m = o.max_points_per_centroid();
  return m <= 0 || m > std::numeric_limits<int>::max() ? std::numeric_limits<int>::max() : static_cast<int>(m);
}

// faiss::rand_perm(n, seed): the permutation faiss draws its subsample and its initial centroids from.
inline std::vector<int64_t> faiss_permutation(int64_t n, int64_t seed) {
  TAXON_CHECK(n <= std::numeric_limits<int>::max(), "cluster.bad-features", "faiss k-means indexes points with ",
              "C ints: ", n, " points are too many");
  std::vector<int> perm(static_cast<size_t>(n));
  faiss::rand_perm(perm.data(), static_cast<size_t>(n), seed);
  return {perm.begin(), perm.end()};
}

inline void stop_if_requested(const KMeansOptions& o) {
  TAXON_CHECK(!o.stop_requested() || !o.stop_requested()(), "cluster.interrupted",
              "k-means stopped on request (Ctrl-C) before it finished; no clustering was produced");
}

// faiss's process-wide interrupt callback (checked by Clustering::train between iterations) asking `stop`, for the
// lifetime of this object; the callback installed before is put back afterwards.
class FaissInterruptScope {
 public:
  explicit FaissInterruptScope(std::function<bool()> stop) {
    if (!stop) return;
    std::lock_guard<std::mutex> lock(faiss::InterruptCallback::lock);
    previous_ = std::move(faiss::InterruptCallback::instance);
    faiss::InterruptCallback::instance = std::make_unique<Callback>(std::move(stop));
    installed_ = true;
  }
  ~FaissInterruptScope() {
    if (!installed_) return;
    std::lock_guard<std::mutex> lock(faiss::InterruptCallback::lock);
    faiss::InterruptCallback::instance = std::move(previous_);
  }
  FaissInterruptScope(const FaissInterruptScope&) = delete;
  FaissInterruptScope& operator=(const FaissInterruptScope&) = delete;

 private:
  struct Callback final : faiss::InterruptCallback {
    explicit Callback(std::function<bool()> f) : stop(std::move(f)) {}
    bool want_interrupt() override { return stop(); }
    std::function<bool()> stop;
  };
  std::unique_ptr<faiss::InterruptCallback> previous_;
  bool installed_ = false;
};

// One faiss::Clustering::train as faiss.Kmeans runs it, on all of x (faiss subsamples to
// max_points_per_centroid * K itself). init: [K, D] starting centroids, or undefined for faiss's own pick
// (then faiss runs the `nredo` restarts and keeps the best).
inline RunResult run_faiss(const at::Tensor& x, const at::Tensor& init, int64_t k, const KMeansOptions& o, int nredo,
                           int first_redo, Progress& progress) {
  auto xs = x.to(at::kCPU, at::kFloat).contiguous();
  const int64_t n = xs.size(0), d = xs.size(1);
  faiss::ClusteringParameters cp;  // faiss's defaults, then what faiss.Kmeans(d, k, **kwargs) would set
  cp.niter = o.niter();
  cp.nredo = nredo;
  cp.spherical = o.spherical();
  cp.seed = faiss_seed(o);
  cp.max_points_per_centroid = faiss_max_points(o);
  cp.min_points_per_centroid = 0;  // faiss's warning goes to stderr; taxon logs its own (same threshold)
  cp.verbose = false;
  faiss::Clustering clus(static_cast<int>(d), static_cast<int>(k), cp);
  if (init.defined()) {
    auto c = init.to(at::kCPU, at::kFloat).contiguous();
    clus.centroids.assign(c.data_ptr<float>(), c.data_ptr<float>() + k * d);
  }
  std::unique_ptr<faiss::IndexFlat> index;  // faiss.Kmeans: IndexFlatIP when spherical, else IndexFlatL2
  if (o.spherical()) index = std::make_unique<faiss::IndexFlatIP>(d);
  else index = std::make_unique<faiss::IndexFlatL2>(d);
  {
    FaissInterruptScope interruptible(o.stop_requested());
    try {
      clus.train(n, xs.data_ptr<float>(), *index);
    } catch (const faiss::FaissException&) {
      stop_if_requested(o);  // faiss's "computation interrupted" is our stop request
      throw;
    }
  }

  RunResult run;
  run.centroids = at::from_blob(clus.centroids.data(), {k, d}, at::kFloat).clone();
  // With restarts, faiss keeps the statistics of every run up to the best one; the best is the last niter.
  const auto& stats = clus.iteration_stats;
  const size_t kept = std::min(stats.size(), static_cast<size_t>(o.niter()));
  for (size_t i = 0; i < stats.size(); ++i) {
    const auto& st = stats[i];
    const int redo = first_redo + static_cast<int>(i / static_cast<size_t>(o.niter()));
    if (o.verbose())
      log::info("kmeans[faiss] redo ", redo, " iter ", i % static_cast<size_t>(o.niter()) + 1, "/", o.niter(),
                ": objective ", st.obj, ", ", st.time, " s (search ", st.time_search, " s), imbalance ",
                st.imbalance_factor, ", splits ", st.nsplit);
    if (i >= stats.size() - kept) {
      run.objective.push_back(st.obj);
      run.nsplit += st.nsplit;
    }
  }
  progress.advance(static_cast<int64_t>(o.niter()) * nredo, c10::str("obj ", run.objective.empty() ? 0.0 : run.objective.back()));
  return run;
}

inline RunResult run_torch(const at::Tensor& x, at::Tensor centroids, const KMeansOptions& o, int redo,
                           Progress& progress) {
  const int64_t n = x.size(0), k = centroids.size(0);
  RunResult run;
  centroids = centroids.to(x.device(), at::kFloat);
  for (int it = 0; it < o.niter(); ++it) {
    stop_if_requested(o);
    const auto t0 = std::chrono::steady_clock::now();
    auto [labels, scores] = assign_torch(x, centroids, o.spherical(), o.chunk_size());
    const double obj = scores.sum(at::kDouble).item<double>();
    const double t_search = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto counts_t = at::bincount(labels, {}, k);
    auto sums = at::zeros_like(centroids).index_add_(0, labels, x);
    auto nonempty = (counts_t > 0).unsqueeze(1);
    // Empty clusters keep a zero row until split_empty_clusters overwrites it, as in faiss.
    centroids = at::where(nonempty, sums / counts_t.clamp_min(1).unsqueeze(1).to(sums.dtype()), at::zeros_like(sums));
    auto counts_cpu = counts_t.to(at::kCPU, at::kFloat).contiguous();
    std::vector<float> counts(counts_cpu.data_ptr<float>(), counts_cpu.data_ptr<float>() + k);
    const int nsplit = split_empty_clusters(centroids, counts, n);
    if (o.spherical()) centroids = l2_normalize_rows(centroids);
    run.objective.push_back(obj);
    run.nsplit += nsplit;
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (o.verbose())
      log::info("kmeans[torch] redo ", redo, " iter ", it + 1, "/", o.niter(), ": objective ", obj, ", ", t,
                " s (search ", t_search, " s), splits ", nsplit);
    progress.advance(1, c10::str("obj ", obj));
  }
  run.centroids = centroids;
  return run;
}

}  // namespace detail

// faiss's training subsample, as row indices in faiss's order: all rows when N <= max_points_per_centroid * K,
// else the first max_points_per_centroid * K of rand_perm(N, seed).
inline at::Tensor training_rows(int64_t n, int64_t k, const KMeansOptions& o) {
  const int64_t cap = o.max_points_per_centroid() > 0 ? o.max_points_per_centroid() * k : n;
  if (n <= cap) return at::arange(n, at::kLong);
  auto perm = detail::faiss_permutation(n, detail::faiss_seed(o));
  perm.resize(static_cast<size_t>(cap));
  return at::tensor(perm, at::kLong);
}

// The initial centroids of restart `redo` (unit-normalised if spherical). random: faiss's pick, the training
// points at the first K positions of rand_perm(n_train, seed + 1 + redo * 15486557).
inline at::Tensor initial_centroids(const at::Tensor& train, int64_t k, const KMeansOptions& o, int redo = 0) {
  at::Tensor rows;
  if (o.init() == KMeansInit::random) {
    auto perm = detail::faiss_permutation(train.size(0), int64_t{detail::faiss_seed(o)} + 1 + redo * int64_t{15486557});
    perm.resize(static_cast<size_t>(k));
    rows = at::tensor(perm, at::kLong);
  } else {
    auto gen = make_generator(o.seed(), {0x1217, static_cast<uint64_t>(redo)});
    // k-means++: each next centre is a point drawn with probability proportional to its squared distance
    // to the nearest centre chosen so far (sampled on the CPU with the seeded generator).
    auto x = train.to(at::kFloat);
    std::vector<int64_t> chosen{at::randint(x.size(0), {1}, gen, at::kLong).item<int64_t>()};
    auto nearest = (x - x[chosen[0]]).pow(2).sum(1);
    for (int64_t i = 1; i < k; ++i) {
      auto w = nearest.to(at::kCPU, at::kDouble);
      const int64_t next = w.sum().item<double>() > 0 ? at::multinomial(w, 1, false, gen).item<int64_t>()
                                                      : at::randint(x.size(0), {1}, gen, at::kLong).item<int64_t>();
      chosen.push_back(next);
      nearest = at::minimum(nearest, (x - x[next]).pow(2).sum(1));
    }
    rows = at::tensor(chosen, at::kLong);
  }
  auto c = train.index_select(0, rows.to(train.device())).to(at::kFloat);
  return o.spherical() ? l2_normalize_rows(c) : c;
}

// Nearest-centroid pseudo-labels for all rows of x (backend as in the options).
inline std::pair<at::Tensor, at::Tensor> assign(const at::Tensor& x, const at::Tensor& centroids,
                                                const KMeansOptions& o = {}) {
  detail::check_features(x);
  TAXON_CHECK(centroids.dim() == 2 && centroids.size(1) == x.size(1), "cluster.dim-mismatch", "centroids ",
              centroids.sizes(), " do not match features ", x.sizes());
  const auto where = placement(KMeansOptions(o).verbose(false), x.device());
  if (where.backend == KMeansBackend::faiss) return detail::assign_faiss(x, centroids, o.spherical());
  auto [l, s] = detail::assign_torch(x.to(where.device, at::kFloat), centroids.to(where.device, at::kFloat),
                                     o.spherical(), o.chunk_size());
  return {l.to(at::kCPU), s.to(at::kCPU)};
}

class KMeans {
 public:
  explicit KMeans(KMeansOptions options = {}) : options_(std::move(options)) {}
  const KMeansOptions& options() const { return options_; }

  // Clusters x [N, D] (CPU or, for the torch backend, CUDA) and assigns every row its pseudo-label.
  KMeansResult fit(const at::Tensor& x_in) const {
    const auto& o = options_;
    detail::check_features(x_in);
    TAXON_CHECK(o.niter() >= 1 && o.nredo() >= 1, "cluster.bad-option", "niter and nredo must be >= 1, got ",
                o.niter(), " and ", o.nredo());
    const auto t0 = std::chrono::steady_clock::now();
    const auto where = placement(o, x_in.device());
    auto x = x_in.detach().to(where.device, at::kFloat).contiguous();
    const int64_t n = x.size(0), d = x.size(1);
    const int64_t k = resolve_k(n, o);

    const int64_t cap = o.max_points_per_centroid() > 0 ? o.max_points_per_centroid() * k : n;
    const int64_t n_train = std::min(n, cap);
    if (n_train < n)
      log::info("kmeans: subsampling ", n, " points to ", n_train, " for training (faiss's subsample: ",
                "max_points_per_centroid ", o.max_points_per_centroid(), " x K=", k, ", seed ", o.seed(), "); all ", n,
                " are assigned after");
    if (n_train < o.min_points_per_centroid() * k)
      log::warn("kmeans: only ", n_train, " points for K=", k, " (fewer than min_points_per_centroid ",
                o.min_points_per_centroid(), " per cluster); clusters will be small or empty");
    log::info("kmeans[", where.backend == KMeansBackend::faiss ? "faiss" : "torch", "]: N=", n, " D=", d, " K=", k,
              " niter=", o.niter(), " nredo=", o.nredo(), " seed=", o.seed(),
              o.spherical() ? " spherical (inner product)" : " L2", " on ", x.device());

    const bool given = o.init_centroids().defined();
    if (given) {
      TAXON_CHECK(o.init_centroids().dim() == 2 && o.init_centroids().size(0) == k &&
                      o.init_centroids().size(1) == d,
                  "cluster.bad-init", "init_centroids must be [", k, ", ", d, "], got ", o.init_centroids().sizes());
      TAXON_CHECK(o.nredo() == 1, "cluster.bad-init", "init_centroids fixes the start: nredo must be 1, got ",
                  o.nredo());
    }
    detail::faiss_seed(o);  // an out-of-range seed fails before any work
    Progress progress("kmeans", static_cast<int64_t>(o.niter()) * o.nredo(), "iter");
    detail::RunResult best;
    if (where.backend == KMeansBackend::faiss && !given && o.init() == KMeansInit::random) {
      best = detail::run_faiss(x, at::Tensor(), k, o, o.nredo(), 0, progress);  // exactly faiss.Kmeans
    } else if (where.backend == KMeansBackend::torch && !given && o.init() == KMeansInit::random && n_train == k) {
      best.centroids = x.clone();  // faiss's corner case: K points are the centroids, in input order
      best.objective = {0.0};
      progress.advance(static_cast<int64_t>(o.niter()) * o.nredo());
    } else {
      auto rows = training_rows(n, k, o);
      auto train = n_train == n ? x : x.index_select(0, rows.to(x.device()));
      for (int redo = 0; redo < o.nredo(); ++redo) {
        at::Tensor init = given ? o.init_centroids().to(x.device(), at::kFloat) : initial_centroids(train, k, o, redo);
        if (given && o.spherical()) init = l2_normalize_rows(init);
        // faiss takes all of x and draws the same subsample itself.
        auto run = where.backend == KMeansBackend::faiss ? detail::run_faiss(x, init, k, o, 1, redo, progress)
                                                         : detail::run_torch(train, init, o, redo, progress);
        // Inner-product objectives are maximised, squared distances minimised (as faiss's nredo does).
        const bool better = best.objective.empty() ||
                            (o.spherical() ? run.objective.back() > best.objective.back()
                                           : run.objective.back() < best.objective.back());
        if (better) best = std::move(run);
      }
    }
    progress.finish();

    KMeansResult result;
    result.centroids = best.centroids.to(x.device());
    std::tie(result.labels, result.scores) = assign(x, result.centroids, KMeansOptions(o).backend(where.backend));
    result.stats = cluster_stats(result.labels, k);
    result.objective = std::move(best.objective);
    result.num_train = n_train;
    result.iterations = o.niter();
    result.nsplit = best.nsplit;
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log::info("kmeans: ", n, " points -> ", k, " clusters in ", result.seconds, " s; ", result.stats.describe(),
              result.stats.empty > 0 ? " (empty clusters keep their id and no points; compact_labels() drops them)"
                                     : "");
    return result;
  }

 private:
  KMeansOptions options_;
};

// Drops empty clusters: renumbers labels to 0..K'-1 in centroid order and removes their centroids.
inline void compact_labels(KMeansResult& r) {
  const int64_t k = r.centroids.size(0);
  auto sizes = at::bincount(r.labels, {}, k);
  auto keep = (sizes > 0).nonzero().flatten();
  auto remap = at::full({k}, -1, at::kLong);
  remap.index_put_({keep}, at::arange(keep.size(0), at::kLong));
  r.labels = remap.index_select(0, r.labels);
  r.centroids = r.centroids.index_select(0, keep.to(r.centroids.device()));
  r.stats = cluster_stats(r.labels, keep.size(0));
}

}  // namespace taxon::cluster
