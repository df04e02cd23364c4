#pragma once
// Embedding a dataset: run any Backbone over a range of batches (each with `.images` [B, 3, H, W]) in inference
// mode and gather the outputs as one [N, D] float CPU tensor, in batch order. On a GPU, feed it uint8 to_chw()
// batches from pinned memory and set device_transform(data::normalize_on_device(mean, std)): the copy is
// asynchronous and normalisation happens on the device.
#include "taxon/backbone/concepts.hpp"
#include "taxon/core/device.hpp"
#include "taxon/core/error.hpp"
#include "taxon/core/normalize.hpp"
#include "taxon/core/options.hpp"
#include "taxon/core/progress.hpp"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <concepts>
#include <functional>
#include <optional>
#include <ranges>
#include <string>
#include <type_traits>
#include <vector>

namespace taxon {

template <typename T>
concept ImageBatch = requires(const T& batch) {
  { batch.images } -> std::convertible_to<at::Tensor>;
};

struct EmbedOptions {
  // L2-normalise each embedding (cosine retrieval, k-means on the sphere).
  TAXON_ARG(bool, normalize) = false;
  // Where the images go; defaults to the device of the model's first parameter. The model must be there.
  TAXON_ARG(std::optional<at::Device>, device);
  // Applied to each batch's images once they are on the device (e.g. data::normalize_on_device for uint8
  // batches); empty: the images go to the model as they are.
  TAXON_ARG(DeviceImageStep, device_transform);
  // Expected number of images for the progress ETA (0 = unknown); progress is off with show_progress(false).
  TAXON_ARG(int64_t, expected_images) = 0;
  TAXON_ARG(bool, show_progress) = true;
  TAXON_ARG(std::string, label) = "embed";
  // Asked before every batch (e.g. a Ctrl-C flag); true ends the embedding with backbone.interrupted.
  TAXON_ARG(std::function<bool()>, stop_requested);
};

// Anything a range-for can walk whose elements have `.images`: containers, views, and single-pass loaders whose
// iterators are not full std::input_iterators (taxon::data's loader epochs).
template <typename R>
concept ImageBatchRange = requires(R& r) {
  r.begin() != r.end();
  { (*r.begin()).images } -> std::convertible_to<at::Tensor>;
} || requires(R& r) {
  std::ranges::begin(r) != std::ranges::end(r);
  { (*std::ranges::begin(r)).images } -> std::convertible_to<at::Tensor>;
};

template <Backbone B, typename BatchRange>
  requires ImageBatchRange<std::remove_reference_t<BatchRange>>
at::Tensor embed(B& model, BatchRange&& batches, EmbedOptions opts = {}) {
  at::Device model_device = at::kCPU;
  for (const auto& p : model->parameters()) {
    model_device = p.device();
    break;
  }
  const at::Device device = opts.device().value_or(model_device);
  require_usable(device);
  TAXON_CHECK(device == model_device || model->parameters().empty(), "backbone.device-mismatch",
              "embed: images are to go to ", device, " but the model's parameters are on ", model_device,
              "; move the model first (model->to(device))");

  // Restore the caller's train/eval mode however we leave.
  struct ModeRestore {
    B& model;
    bool was_training;
    ~ModeRestore() { model->train(was_training); }
  } restore{model, model->is_training()};
  model->train(false);

  std::optional<Progress> progress;
  if (opts.show_progress()) progress.emplace(opts.label(), opts.expected_images(), "img");
  std::vector<at::Tensor> outputs;
  int64_t index = 0;
  {
    c10::InferenceMode guard;
    for (auto&& batch : batches) {
      TAXON_CHECK(!opts.stop_requested() || !opts.stop_requested()(), "backbone.interrupted", opts.label(),
                  ": stopped on request after ", index, " batches");
      const at::Tensor images = batch.images;
      if (images.defined() && images.numel() == 0) continue;  // every sample of the batch was skipped (unreadable)
      TAXON_CHECK(images.defined() && images.dim() == 4, "backbone.bad-input", "embed: batch ", index,
                  " images must be [B, C, H, W], got ", images.defined() ? c10::str(images.sizes()) : "undefined");
      at::Tensor input = batch_to_device(images, device);
      if (opts.device_transform()) input = opts.device_transform()(input);
      TAXON_CHECK(input.scalar_type() != at::kByte, "backbone.bad-input", "embed: batch ", index,
                  " images are uint8 ", input.sizes(), "; normalise them first (EmbedOptions::device_transform("
                  "data::normalize_on_device(mean, std)) for to_chw() batches)");
      at::Tensor out = model->forward(input);
      TAXON_CHECK(out.dim() == 2 && out.size(0) == images.size(0), "backbone.bad-output", "embed: batch ", index,
                  " of ", images.size(0), " images gave output ", out.sizes(), ", expected [", images.size(0),
                  ", D]");
      out = out.to(at::kFloat);
      if (opts.normalize()) out = l2_normalize_rows(out);
      outputs.push_back(out.to(at::kCPU));
      if (progress) progress->advance(images.size(0));
      ++index;
    }
  }
  if (progress) progress->finish();
  TAXON_CHECK(!outputs.empty(), "backbone.empty-input", opts.label(),
              ": no images to embed (the batch range was empty: an empty dataset, or every image was skipped as "
              "missing or unreadable)");
  // Inference tensors cannot be used in autograd later; clone into a normal tensor.
  return at::cat(outputs, 0).clone();
}

}  // namespace taxon
