#pragma once
// OpenAI CLIP's released .pt files are TorchScript archives; clip.load(jit=False) takes their state_dict() and
// runs build_model. Same here: torch::jit::load, then the `visual.*` tensors into a VisionTransformer.
// Separate header because the jit headers add seconds to every translation unit that includes them.
#include "taxon/backbone/checkpoint.hpp"
#include "taxon/core/error.hpp"

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>

#include <filesystem>
#include <string>

namespace taxon::backbone {

// All parameters and buffers of a TorchScript archive by dotted name (fp16 kept as stored), on the CPU.
inline StateDict load_torchscript_state_dict(const std::filesystem::path& path) {
  TAXON_CHECK(std::filesystem::exists(path), "io.missing-file", "file not found: ", path.string());
  torch::jit::Module module;
  try {
    module = torch::jit::load(path.string(), at::Device(at::kCPU));
  } catch (const c10::Error& e) {
    TAXON_FAIL("io.bad-torchscript", path.string(), " is not a readable TorchScript archive: ",
               e.what_without_backtrace());
  }
  StateDict dict;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) dict[p.name] = p.value.detach();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) dict[b.name] = b.value.detach();
  return dict;
}

// An OpenAI CLIP .pt (e.g. ViT-B-32.pt) as a fp32 VisionTransformer with the inferred config (QuickGELU).
inline VisionTransformer load_openai_clip(const std::filesystem::path& path, const InferOptions& infer = {}) {
  return vit_from_state_dict(load_torchscript_state_dict(path), infer, path.string());
}

}  // namespace taxon::backbone
