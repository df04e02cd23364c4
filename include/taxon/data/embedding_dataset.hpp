#pragma once
// Precomputed features (.npy, [N,D]) with labels, for clustering and evaluation without images. get(i).image
// is the float [D] feature row; no transform is needed (pass an empty TransformFn to the Loader).
#include "taxon/core/error.hpp"
#include "taxon/data/csv.hpp"
#include "taxon/data/dataset.hpp"
#include "taxon/data/taxonomy.hpp"
#include "taxon/io/npy.hpp"

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace taxon::data {

class EmbeddingDataset {
 public:
  // features [N,D] (any floating dtype, kept as float32), labels [N,R] int64 matching the taxonomy's ranks.
  EmbeddingDataset(at::Tensor features, at::Tensor labels, Taxonomy taxonomy)
      : features_(std::move(features)), labels_(std::move(labels)), taxonomy_(std::move(taxonomy)) {
    TAXON_CHECK(features_.dim() == 2 && features_.is_floating_point(), "data.bad-embeddings",
                "features must be a [N,D] floating tensor, got ", features_.sizes(), " ", features_.scalar_type());
    features_ = features_.to(at::kFloat).contiguous();
    if (labels_.dim() == 1) labels_ = labels_.unsqueeze(1);
    TAXON_CHECK(labels_.dim() == 2 && labels_.size(0) == features_.size(0) && labels_.size(1) == taxonomy_.num_ranks(),
                "data.bad-embeddings", "labels ", labels_.sizes(), " do not match ", features_.size(0), " features and ",
                taxonomy_.num_ranks(), " ranks");
    labels_ = labels_.to(at::kLong).contiguous();
    for (std::int64_t r = 0; r < taxonomy_.num_ranks(); ++r) {
      const auto col = labels_.select(1, r);
      const auto n = taxonomy_.labels(r).size();
      TAXON_CHECK(col.numel() == 0 || (col.min().item<std::int64_t>() >= -1 && col.max().item<std::int64_t>() < n),
                  "data.label-out-of-range", "rank '", taxonomy_.ranks()[static_cast<size_t>(r)], "' labels outside [-1, ",
                  n, ")");
    }
  }

  // features.npy [N,D] + labels.npy ([N] or [N,R] integer); names default to the ids ("0", "1", ...).
  static EmbeddingDataset from_npy(const std::filesystem::path& features, const std::filesystem::path& labels,
                                   std::vector<std::string> ranks = {"class"}) {
    at::Tensor f = io::load_npy(features);
    at::Tensor l = io::load_npy(labels);
    TAXON_CHECK(!l.is_floating_point(), "data.bad-embeddings", labels.string(), ": labels must be integers, got ",
                l.scalar_type());
    if (l.dim() == 1) l = l.unsqueeze(1);
    TAXON_CHECK(l.dim() == 2 && l.size(1) == static_cast<std::int64_t>(ranks.size()), "data.bad-embeddings", labels.string(),
                ": shape ", l.sizes(), " for ", ranks.size(), " ranks");
    l = l.to(at::kLong);
    std::vector<LabelMap> maps;
    for (std::int64_t r = 0; r < l.size(1); ++r) {
      const std::int64_t n = l.numel() ? l.select(1, r).max().item<std::int64_t>() + 1 : 0;
      std::vector<std::string> names;
      for (std::int64_t c = 0; c < n; ++c) names.push_back(std::to_string(c));
      maps.emplace_back(std::move(names));
    }
    return EmbeddingDataset(std::move(f), std::move(l), Taxonomy(std::move(ranks), std::move(maps)));
  }

  // features.npy [N,D] + a CSV with one row per feature row; `rank_columns` become the ranks (string labels,
  // ids in sorted order; empty cell = missing).
  static EmbeddingDataset from_csv(const std::filesystem::path& features, const std::filesystem::path& csv,
                                   const std::vector<std::string>& rank_columns) {
    at::Tensor f = io::load_npy(features);
    const CsvTable table = CsvTable::read(csv);
    TAXON_CHECK(f.dim() == 2 && table.num_rows() == f.size(0), "data.bad-embeddings", csv.string(), " has ",
                table.num_rows(), " rows but ", features.string(), " has shape ", f.sizes());
    std::vector<LabelMap> maps;
    at::Tensor l = at::empty({table.num_rows(), static_cast<std::int64_t>(rank_columns.size())}, at::kLong);
    for (size_t r = 0; r < rank_columns.size(); ++r) {
      const std::int64_t col = table.column(rank_columns[r]);
      std::vector<std::string> values;
      for (std::int64_t i = 0; i < table.num_rows(); ++i) values.push_back(table.cell(i, col));
      maps.push_back(LabelMap::from_values(values));
      for (std::int64_t i = 0; i < table.num_rows(); ++i) l[i][static_cast<std::int64_t>(r)] = maps.back().id(values[static_cast<size_t>(i)]);
    }
    return EmbeddingDataset(std::move(f), std::move(l), Taxonomy(rank_columns, std::move(maps)));
  }

  std::int64_t size() const { return features_.size(0); }
  Sample get(std::int64_t i) const {
    check_index(i, size(), "EmbeddingDataset");
    return Sample{features_[i], labels(i)};
  }
  std::vector<std::int64_t> labels(std::int64_t i) const {
    check_index(i, size(), "EmbeddingDataset");
    const std::int64_t* p = labels_.data_ptr<std::int64_t>() + i * labels_.size(1);
    return std::vector<std::int64_t>(p, p + labels_.size(1));
  }
  const Taxonomy& taxonomy() const { return taxonomy_; }
  const at::Tensor& features() const { return features_; }  // [N,D] float32
  const at::Tensor& label_tensor() const { return labels_; }  // [N,R] int64

 private:
  at::Tensor features_, labels_;
  Taxonomy taxonomy_;
};

}  // namespace taxon::data
