#pragma once
// Relabeled<D>: a dataset whose images come from another dataset and whose labels are replaced by one new
// rank (e.g. k-means pseudo-labels "cluster"), so clusters feed the loader and Trainer like metadata ranks.
#include "taxon/core/error.hpp"
#include "taxon/data/dataset.hpp"

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

namespace taxon::data {

template <Dataset D>
class Relabeled {
 public:
  // labels: [size] int64 in [0, num_classes) (or -1 = missing), one per sample of `parent`.
  Relabeled(std::shared_ptr<const D> parent, const at::Tensor& labels, std::string rank = "cluster")
      : parent_(std::move(parent)) {
    TAXON_CHECK(labels.dim() == 1 && labels.size(0) == parent_->size(), "data.label-mismatch", "labels for rank '",
                rank, "' have shape ", labels.sizes(), " but the dataset has ", parent_->size(), " samples");
    auto l = labels.to(at::kLong).contiguous();
    labels_.assign(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel());
    const int64_t k = labels_.empty() ? 0 : l.max().item<int64_t>() + 1;
    TAXON_CHECK(labels_.empty() || l.min().item<int64_t>() >= kMissingLabel, "data.label-mismatch", "rank '", rank,
                "' has a label below -1");
    std::vector<std::string> names;
    names.reserve(static_cast<size_t>(k));
    for (int64_t c = 0; c < k; ++c) names.push_back(std::to_string(c));
    taxonomy_ = Taxonomy({std::move(rank)}, {LabelMap(std::move(names))});
  }

  std::int64_t size() const { return parent_->size(); }
  Sample get(std::int64_t i) const {
    Sample s = parent_->get(i);
    s.labels = labels(i);
    return s;
  }
  // Passes a Loader's request on to the parent, when the parent accepts one.
  Sample get(std::int64_t i, const DecodeRequest& request) const
    requires AcceptsDecodeRequest<D>
  {
    Sample s = parent_->get(i, request);
    s.labels = labels(i);
    return s;
  }
  std::vector<std::int64_t> labels(std::int64_t i) const {
    check_index(i, size(), "Relabeled");
    return {labels_[static_cast<size_t>(i)]};
  }
  const Taxonomy& taxonomy() const { return taxonomy_; }

 private:
  std::shared_ptr<const D> parent_;
  std::vector<std::int64_t> labels_;
  Taxonomy taxonomy_;
};

}  // namespace taxon::data
