#pragma once
// AnyDataset: a type-erased Dataset, so a program that picks its dataset at run time (idx, CSV, image folder)
// instantiates the loader and Trainer once instead of once per dataset type. It accepts a Loader's DecodeRequest
// whatever it wraps: datasets that accept one answer it, for the others the request is applied to get(i).
#include "taxon/data/dataset.hpp"
#include "taxon/data/decode_request.hpp"

#include <memory>
#include <vector>

namespace taxon::data {

class AnyDataset {
 public:
  template <Dataset D>
    requires(!std::same_as<std::remove_cvref_t<D>, AnyDataset>)
  explicit AnyDataset(std::shared_ptr<const D> dataset) : self_(std::make_shared<Model<D>>(std::move(dataset))) {}

  std::int64_t size() const { return self_->size(); }
  Sample get(std::int64_t i) const { return self_->get(i); }
  Sample get(std::int64_t i, const DecodeRequest& request) const { return self_->get(i, request); }
  std::vector<std::int64_t> labels(std::int64_t i) const { return self_->labels(i); }
  const Taxonomy& taxonomy() const { return self_->taxonomy(); }

 private:
  struct Concept {
    virtual ~Concept() = default;
    virtual std::int64_t size() const = 0;
    virtual Sample get(std::int64_t i) const = 0;
    virtual Sample get(std::int64_t i, const DecodeRequest& request) const = 0;
    virtual std::vector<std::int64_t> labels(std::int64_t i) const = 0;
    virtual const Taxonomy& taxonomy() const = 0;
  };
  template <typename D>
  struct Model final : Concept {
    explicit Model(std::shared_ptr<const D> d) : dataset(std::move(d)) {}
    std::int64_t size() const override { return dataset->size(); }
    Sample get(std::int64_t i) const override { return dataset->get(i); }
    Sample get(std::int64_t i, const DecodeRequest& request) const override {
      return get_requested(*dataset, i, request);
    }
    std::vector<std::int64_t> labels(std::int64_t i) const override { return dataset->labels(i); }
    const Taxonomy& taxonomy() const override { return dataset->taxonomy(); }
    std::shared_ptr<const D> dataset;
  };
  std::shared_ptr<const Concept> self_;
};

static_assert(Dataset<AnyDataset> && AcceptsDecodeRequest<AnyDataset>);

}  // namespace taxon::data
