#pragma once
// Exact k-nearest-neighbour search of queries against a gallery, through faiss IndexFlat (CPU) or LibTorch
// matmuls (CPU or CUDA), in query blocks so no nq x ng matrix is ever held whole.
// Order of the k results: nearest first; equal scores in ascending gallery index (the LibTorch backend also
// picks the lowest indices when ties straddle the k-th place; faiss may pick any of them there).
#include "taxon/core/error.hpp"
#include "taxon/core/normalize.hpp"
#include "taxon/core/options.hpp"

#include <ATen/ATen.h>
#include <faiss/IndexFlat.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <tuple>
#include <utility>

namespace taxon::eval {

enum class KnnBackend { faiss, torch };
enum class KnnMetric { inner_product, l2 };

struct KnnOptions {
  TAXON_ARG(KnnBackend, backend) = KnnBackend::faiss;
  // inner_product on L2-normalised vectors is cosine similarity.
  TAXON_ARG(KnnMetric, metric) = KnnMetric::inner_product;
  // Query rows per block; 0 picks a block of at most 2^25 scores (128 MiB of float32).
  TAXON_ARG(int64_t, chunk_size) = 0;
};

struct KnnResult {
  at::Tensor indices;  // [nq, k] int64 gallery rows, nearest first (CPU)
  at::Tensor scores;   // [nq, k] float: inner product (inner_product) or squared Euclidean distance (l2)
};

namespace detail {

inline void check_matrix(const at::Tensor& x, const char* name) {
  TAXON_CHECK(x.defined(), "eval.bad-embeddings", name, " is an undefined tensor");
  TAXON_CHECK(x.dim() == 2 && x.size(0) > 0 && x.size(1) > 0, "eval.bad-embeddings", name,
              " must be a non-empty 2-D [N, D] tensor, got shape ", x.sizes());
  TAXON_CHECK(at::isFloatingType(x.scalar_type()), "eval.bad-embeddings", name,
              " must be floating point, got ", x.scalar_type());
}

inline int64_t auto_chunk(int64_t chunk, int64_t gallery_rows) {
  if (chunk > 0) return chunk;
  return std::max<int64_t>(1, (int64_t{1} << 25) / std::max<int64_t>(1, gallery_rows));
}

// Sorts each row of (key, idx) by key descending, equal keys by index ascending.
inline std::pair<at::Tensor, at::Tensor> order_rows(const at::Tensor& key, const at::Tensor& idx) {
  auto by_index = std::get<1>(idx.sort(1));
  auto k1 = key.gather(1, by_index), i1 = idx.gather(1, by_index);
  auto by_key = std::get<1>(k1.sort(/*stable=*/true, 1, /*descending=*/true));
  return {k1.gather(1, by_key), i1.gather(1, by_key)};
}

// Top-k of each row of key (larger = nearer) where ties at the k-th place go to the lowest column index.
inline std::pair<at::Tensor, at::Tensor> topk_lowest_index(const at::Tensor& key, int64_t k) {
  auto [vals, idx] = key.topk(k, 1, /*largest=*/true, /*sorted=*/true);
  auto kth = vals.narrow(1, k - 1, 1);
  auto tied_rows = ((key >= kth).sum(1) > k).nonzero().flatten();
  if (tied_rows.numel() > 0) {
    // Only rows with ties straddling the k-th place need the exact (and slower) selection.
    auto sub = key.index_select(0, tied_rows);
    auto sub_kth = kth.index_select(0, tied_rows);
    auto gt = sub > sub_kth;
    auto eq = sub == sub_kth;
    auto need = k - gt.sum(1, true);
    auto take = gt | (eq & (eq.cumsum(1) <= need));
    auto sub_idx = take.nonzero().select(1, 1).view({sub.size(0), k});
    idx.index_copy_(0, tied_rows, sub_idx);
    vals.index_copy_(0, tied_rows, sub.gather(1, sub_idx));
  }
  return order_rows(vals, idx);
}

}  // namespace detail

// A searchable gallery. The faiss backend copies the gallery into an IndexFlat; the LibTorch backend keeps it
// on its device (CUDA galleries are searched on the GPU).
class KnnIndex {
 public:
  explicit KnnIndex(const at::Tensor& gallery, KnnOptions options = {}) : options_(std::move(options)) {
    detail::check_matrix(gallery, "gallery");
    dim_ = gallery.size(1);
    rows_ = gallery.size(0);
    if (options_.backend() == KnnBackend::faiss) {
      auto g = gallery.detach().to(at::kCPU, at::kFloat).contiguous();
      faiss_ = std::make_unique<faiss::IndexFlat>(
          dim_, options_.metric() == KnnMetric::l2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT);
      faiss_->add(rows_, g.data_ptr<float>());
    } else {
      gallery_ = gallery.detach().to(at::kFloat).contiguous();
      if (options_.metric() == KnnMetric::l2) sqnorm_ = gallery_.pow(2).sum(1);
    }
  }

  int64_t size() const { return rows_; }
  int64_t dim() const { return dim_; }
  const KnnOptions& options() const { return options_; }

  // k nearest gallery rows for each query. `exclude` ([nq] int64, -1 = none) names one gallery row per query
  // that must not be returned: leave-one-out excludes the query itself by index, never by position.
  KnnResult search(const at::Tensor& queries, int64_t k, const at::Tensor& exclude = {}) const {
    detail::check_matrix(queries, "queries");
    TAXON_CHECK(queries.size(1) == dim_, "eval.dim-mismatch", "queries have ", queries.size(1),
                " dimensions but the gallery has ", dim_);
    const bool excluding = exclude.defined();
    if (excluding)
      TAXON_CHECK(exclude.dim() == 1 && exclude.size(0) == queries.size(0), "eval.bad-exclude",
                  "exclude must be [", queries.size(0), "], got ", exclude.sizes());
    const int64_t available = rows_ - (excluding ? 1 : 0);
    TAXON_CHECK(k >= 1 && k <= available, "eval.bad-k", "k=", k, " must be in [1, ", available,
                "] for a gallery of ", rows_, excluding ? " rows with one excluded per query" : " rows");
    return options_.backend() == KnnBackend::faiss ? search_faiss(queries, k, exclude)
                                                   : search_torch(queries, k, exclude);
  }

 private:
  KnnResult search_faiss(const at::Tensor& queries, int64_t k, const at::Tensor& exclude) const {
    const bool l2 = options_.metric() == KnnMetric::l2;
    const bool excluding = exclude.defined();
    auto q = queries.detach().to(at::kCPU, at::kFloat).contiguous();
    const int64_t nq = q.size(0), kk = k + (excluding ? 1 : 0);
    auto dist = at::empty({nq, kk}, at::kFloat);
    auto lab = at::empty({nq, kk}, at::kLong);
    faiss_->search(nq, q.data_ptr<float>(), kk, dist.data_ptr<float>(), lab.data_ptr<int64_t>());
    if (excluding) {
      auto ex = exclude.to(at::kCPU, at::kLong).contiguous();
      auto out_d = at::empty({nq, k}, at::kFloat);
      auto out_l = at::empty({nq, k}, at::kLong);
      const auto* e = ex.data_ptr<int64_t>();
      const auto* dd = dist.data_ptr<float>();
      const auto* ll = lab.data_ptr<int64_t>();
      auto* od = out_d.data_ptr<float>();
      auto* ol = out_l.data_ptr<int64_t>();
      for (int64_t i = 0; i < nq; ++i) {
        int64_t w = 0;
        for (int64_t j = 0; j < kk && w < k; ++j) {
          if (ll[i * kk + j] == e[i]) continue;
          od[i * k + w] = dd[i * kk + j];
          ol[i * k + w] = ll[i * kk + j];
          ++w;
        }
      }
      dist = out_d;
      lab = out_l;
    }
    auto [key, idx] = detail::order_rows(l2 ? -dist : dist, lab);
    return {idx, l2 ? -key : key};
  }

  KnnResult search_torch(const at::Tensor& queries, int64_t k, const at::Tensor& exclude) const {
    const bool l2 = options_.metric() == KnnMetric::l2;
    auto q_all = queries.detach().to(gallery_.device(), at::kFloat);
    const int64_t nq = q_all.size(0);
    const int64_t chunk = detail::auto_chunk(options_.chunk_size(), rows_);
    auto out_i = at::empty({nq, k}, at::kLong);
    auto out_s = at::empty({nq, k}, at::kFloat);
    auto ex_all = exclude.defined() ? exclude.to(gallery_.device(), at::kLong) : at::Tensor();
    for (int64_t s = 0; s < nq; s += chunk) {
      const int64_t c = std::min(chunk, nq - s);
      auto q = q_all.narrow(0, s, c);
      at::Tensor key;
      if (l2) {
        // Larger key = nearer: 2 q.g - |g|^2 - |q|^2 = -|q - g|^2.
        key = at::addmm(sqnorm_.neg().unsqueeze(0), q, gallery_.t(), 1, 2).sub_(q.pow(2).sum(1, true));
      } else {
        key = at::mm(q, gallery_.t());
      }
      if (ex_all.defined()) {
        auto ex = ex_all.narrow(0, s, c);
        auto rows = (ex >= 0).nonzero().flatten();
        if (rows.numel() > 0)
          key.index_put_({rows, ex.index_select(0, rows)}, -std::numeric_limits<float>::infinity());
      }
      auto [vals, idx] = detail::topk_lowest_index(key, k);
      out_i.narrow(0, s, c).copy_(idx);
      out_s.narrow(0, s, c).copy_(l2 ? vals.neg().clamp_min(0) : vals);
    }
    return {out_i, out_s};
  }

  KnnOptions options_;
  int64_t dim_ = 0, rows_ = 0;
  at::Tensor gallery_, sqnorm_;
  std::unique_ptr<faiss::IndexFlat> faiss_;
};

}  // namespace taxon::eval
