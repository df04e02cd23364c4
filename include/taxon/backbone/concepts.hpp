#pragma once
// What the Trainer and the embedders need from an image encoder. Any LibTorch module holder whose forward
// maps float images [B,3,H,W] to embeddings [B,D] qualifies: taxon's ViTs, or a user's own ResNet.
#include <ATen/core/Tensor.h>

#include <concepts>

namespace taxon {

template <typename B>
concept Backbone = requires(B& model, const at::Tensor& images, bool on) {
  { model->forward(images) } -> std::convertible_to<at::Tensor>;
  model->parameters();
  model->named_parameters();
  model->named_buffers();
  model->train(on);
  model->is_training();
};

}  // namespace taxon
