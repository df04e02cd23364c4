#pragma once
// The Dataset concept and the in-memory building blocks shared by all datasets: a Sample is one image
// (uint8 [H,W,C]; for EmbeddingDataset a float feature vector) with one label per rank (-1 = missing).
#include "taxon/core/error.hpp"
#include "taxon/data/taxonomy.hpp"

#include <ATen/ATen.h>

#include <concepts>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace taxon::data {

struct Sample {
  at::Tensor image;                  // uint8 [H,W,C] (decoded image) or float [D] (embedding)
  std::vector<std::int64_t> labels;  // one id per rank of the dataset's taxonomy; kMissingLabel when unknown
};

// Collated batch, the Trainer's and embedders' input.
struct Batch {
  at::Tensor images;   // [B,3,H,W] float32, normalised (or the stacked transform outputs)
  at::Tensor labels;   // [B,R] int64, one column per rank, -1 = missing
  at::Tensor indices;  // [B] int64 dataset indices
  std::int64_t size() const { return indices.defined() ? indices.size(0) : 0; }
};

// What the loader, splits and embedders need from a dataset. get() must be safe to call from several threads.
// labels(i) is cheap (no decoding), used by splits and samplers.
template <typename D>
concept Dataset = requires(const D& d, std::int64_t i) {
  { d.size() } -> std::convertible_to<std::int64_t>;
  { d.get(i) } -> std::same_as<Sample>;
  { d.labels(i) } -> std::convertible_to<std::vector<std::int64_t>>;
  { d.taxonomy() } -> std::convertible_to<const Taxonomy&>;
};

struct DecodeRequest;  // decode_request.hpp

// The optional member a Loader looks for: get(i, request) returns get(i) with the request's resize + center crop
// already applied (bit for bit), typically by decoding only what the crop needs (ImageFileDataset does).
template <typename D>
concept AcceptsDecodeRequest = Dataset<D> && requires(const D& d, std::int64_t i, const DecodeRequest& request) {
  { d.get(i, request) } -> std::same_as<Sample>;
};

// All labels of one rank, e.g. for a stratified split: [size()] int64.
template <Dataset D>
std::vector<std::int64_t> rank_labels(const D& dataset, const std::string& rank) {
  const std::int64_t r = dataset.taxonomy().rank_index(rank);
  std::vector<std::int64_t> out(static_cast<size_t>(dataset.size()));
  for (std::int64_t i = 0; i < dataset.size(); ++i) out[static_cast<size_t>(i)] = dataset.labels(i)[static_cast<size_t>(r)];
  return out;
}

inline void check_index(std::int64_t i, std::int64_t size, const char* what) {
  TAXON_CHECK(i >= 0 && i < size, "data.index-out-of-range", what, ": index ", i, " outside [0, ", size, ")");
}

// A view of some indices of another dataset (train/test splits); get(k) is the parent's get(indices[k]).
template <Dataset D>
class Subset {
 public:
  Subset(std::shared_ptr<const D> parent, std::vector<std::int64_t> indices)
      : parent_(std::move(parent)), indices_(std::move(indices)) {
    for (auto i : indices_) check_index(i, parent_->size(), "Subset");
  }
  std::int64_t size() const { return static_cast<std::int64_t>(indices_.size()); }
  Sample get(std::int64_t k) const {
    check_index(k, size(), "Subset");
    return parent_->get(indices_[static_cast<size_t>(k)]);
  }
  // Passes a Loader's request on to the parent, when the parent accepts one.
  Sample get(std::int64_t k, const DecodeRequest& request) const
    requires AcceptsDecodeRequest<D>
  {
    check_index(k, size(), "Subset");
    return parent_->get(indices_[static_cast<size_t>(k)], request);
  }
  std::vector<std::int64_t> labels(std::int64_t k) const {
    check_index(k, size(), "Subset");
    return parent_->labels(indices_[static_cast<size_t>(k)]);
  }
  const Taxonomy& taxonomy() const { return parent_->taxonomy(); }
  // Index into the parent dataset.
  std::int64_t parent_index(std::int64_t k) const { return indices_[static_cast<size_t>(k)]; }
  const std::vector<std::int64_t>& indices() const noexcept { return indices_; }

 private:
  std::shared_ptr<const D> parent_;
  std::vector<std::int64_t> indices_;
};

}  // namespace taxon::data
