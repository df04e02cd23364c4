#pragma once
// PyTorch .pt files: OpenAI CLIP's released TorchScript archives (clip.load(jit=False) takes their state_dict() and
// runs build_model; same here) and torch.save'd state dicts such as UNICOM's FP16-ViT-*.pt (zip format).
// Separate header because the jit headers add seconds to every translation unit that includes them.
#include "taxon/backbone/weights.hpp"
#include "taxon/core/error.hpp"
#include "taxon/io/pickle.hpp"

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>

#include <filesystem>
#include <string>
#include <vector>

namespace taxon::backbone {

// All parameters and buffers of a TorchScript archive by dotted name (fp16 kept as stored), on the CPU.
inline StateDict load_torchscript_state_dict(const std::filesystem::path& path) {
  io::require_file(path, "TorchScript archive");
  torch::jit::Module module;
  try {
    module = torch::jit::load(path.string(), at::Device(at::kCPU));
  } catch (const c10::Error& e) {
    TAXON_FAIL("backbone.bad-torchscript", path.string(), " is not a readable TorchScript archive: ",
               e.what_without_backtrace());
  }
  StateDict dict;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) dict[p.name] = p.value.detach();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) dict[b.name] = b.value.detach();
  return dict;
}

namespace torchscript_detail {

// Tensors of a (possibly wrapped) pickled dict; {"state_dict": {...}} / {"model": {...}} wrappers are unwrapped
// (at most a few levels: a hostile file could nest them until the recursion overflows the stack), non-tensor
// entries (epoch counters, args) skipped.
inline void collect_tensors(const c10::IValue& value, const std::string& source, StateDict& out, int depth = 0) {
  TAXON_CHECK(value.isGenericDict(), "backbone.bad-weights", source, " does not hold a dict of tensors (found ",
              value.tagKind(), ")");
  TAXON_CHECK(depth < 8, "backbone.bad-weights", source, " wraps its state dict in more than 8 levels");
  for (const auto& kv : value.toGenericDict()) {
    if (!kv.key().isString()) continue;
    const std::string key = kv.key().toStringRef();
    if (kv.value().isTensor()) out[key] = kv.value().toTensor().detach();
    else if ((key == "state_dict" || key == "model") && kv.value().isGenericDict()) collect_tensors(kv.value(), source, out, depth + 1);
  }
}

}  // namespace torchscript_detail

// A state dict written by Python's torch.save (zip format, e.g. UNICOM's FP16-ViT-B-32.pt), fp16 kept as stored.
inline StateDict load_pickled_state_dict(const std::filesystem::path& path) {
  c10::IValue value;
  try {
    value = io::load_pickle(path);
  } catch (const c10::Error& e) {
    TAXON_FAIL("backbone.bad-weights", path.string(), " is not a torch.save archive: ", e.what_without_backtrace());
  }
  StateDict dict;
  torchscript_detail::collect_tensors(value, path.string(), dict);
  TAXON_CHECK(!dict.empty(), "backbone.bad-weights", path.string(), " holds no tensors");
  return dict;
}

// Any .pt: a TorchScript archive (OpenAI CLIP) or a torch.save'd state dict (UNICOM, fine-tuned checkpoints).
inline StateDict load_pt_state_dict(const std::filesystem::path& path) {
  io::require_file(path, "weights file");
  std::string jit_error;
  try {
    return load_torchscript_state_dict(path);
  } catch (const Error& e) {
    jit_error = e.what();
  }
  try {
    return load_pickled_state_dict(path);
  } catch (const Error& e) {
    TAXON_FAIL("backbone.bad-weights", path.string(), " is neither a TorchScript archive nor a torch.save state dict:\n  ",
               jit_error, "\n  ", e.what());
  }
}

// A pretrained ViT from any supported file: our checkpoints and open_clip/UNICOM dicts in .safetensors, OpenAI
// CLIP TorchScript .pt, torch.save'd UNICOM/open_clip .pt/.bin. The architecture comes from the config metadata or
// is inferred from shapes; weights are cast to fp32.
inline VisionTransformer load_pretrained(const std::filesystem::path& path, const InferOptions& infer = {}) {
  if (path.extension() == ".safetensors") return load_checkpoint(path, infer);
  return vit_from_state_dict(load_pt_state_dict(path), infer, path.string());
}

// An OpenAI CLIP .pt (e.g. ViT-B-32.pt) as a fp32 VisionTransformer with the inferred config (QuickGELU).
inline VisionTransformer load_openai_clip(const std::filesystem::path& path, const InferOptions& infer = {}) {
  return vit_from_state_dict(load_torchscript_state_dict(path), infer, path.string());
}

}  // namespace taxon::backbone
