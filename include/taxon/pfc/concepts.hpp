#pragma once
// What the Trainer needs from a classification head: a module that turns (embeddings [B,D], labels [B])
// into a scalar loss, owns its class centres, and reports how many classes it holds.
#include <ATen/core/Tensor.h>

#include <concepts>
#include <cstdint>

namespace taxon {

template <typename H>
concept Head = requires(H& head, const at::Tensor& embeddings, const at::Tensor& labels) {
  { head->forward(embeddings, labels) } -> std::convertible_to<at::Tensor>;
  { head->centroids() } -> std::convertible_to<at::Tensor>;
  { head->num_classes() } -> std::convertible_to<std::int64_t>;
  head->parameters();
  head->named_parameters();
};

}  // namespace taxon
