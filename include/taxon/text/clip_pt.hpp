#pragma once
// CLIP models from PyTorch .pt files: OpenAI's TorchScript archives (ViT-B-32.pt, ...) and torch.save'd state dicts
// (open_clip_pytorch_model.bin, fine-tuned .pt). Kept apart from text/clip.hpp because the jit headers are heavy.
#include "taxon/backbone/torchscript.hpp"
#include "taxon/text/clip.hpp"

#include <filesystem>

namespace taxon::text {

// Any supported file: .safetensors (taxon CLIP / ViT checkpoints, open_clip dicts) or .pt/.pth/.bin.
inline ClipModel load_clip(const std::filesystem::path& path, const ClipLoadOptions& options = {}) {
  if (path.extension() == ".safetensors") return load_clip_safetensors(path, options);
  return clip_from_state_dict(backbone::load_pt_state_dict(path), options, path.string());
}

}  // namespace taxon::text
