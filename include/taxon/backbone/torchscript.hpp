#pragma once
// PyTorch .pt files: OpenAI CLIP's released TorchScript archives (clip.load(jit=False) takes their state_dict() and
// runs build_model; same here; read by LibTorch's torch::jit::load) and torch.save'd state dicts such as UNICOM's
// FP16-ViT-*.pt (zip format; read by taxon's restricted reader, io/pickle.hpp, which runs no code from the file).
// Separate header because the jit headers add seconds to every translation unit that includes them.
#include "taxon/backbone/weights.hpp"
#include "taxon/core/error.hpp"
#include "taxon/core/log.hpp"
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

// The tensors of a torch.save'd object, from the wrappers people write: a bare state dict, {"state_dict": ...} or
// {"model": ...} (nested at most a few levels: checkpoints of training scripts, e.g. timm's and open_clip's, keep
// the weights there), then wrapper prefixes on the keys (strip_wrapper_prefixes). Non-tensor entries of the chosen
// dict are skipped and reported. `stripped` lists every step, e.g. {"['state_dict']", "module.", "model."}.
inline UnwrappedStateDict state_dict_from_pickle(const io::PickleValue& value, const std::string& source) {
  TAXON_CHECK(value.is_dict(), "backbone.bad-weights", source, " holds a ", value.kind_name(),
              ", not a dict of tensors (save one with torch.save(model.state_dict(), path))");
  std::vector<std::string> steps;
  const io::PickleValue* dict = &value;
  for (int level = 0; level < 4; ++level) {
    const io::PickleValue* inner = nullptr;
    for (const char* key : {"state_dict", "model"}) {
      const io::PickleValue* v = dict->find(key);
      if (v != nullptr && v->is_dict()) {
        inner = v;
        steps.push_back(std::string("['") + key + "']");
        break;
      }
    }
    if (inner == nullptr) break;
    dict = inner;
  }
  StateDict tensors;
  std::vector<std::string> skipped;
  for (const auto& [k, v] : dict->entries) {
    if (k.is_string() && v.is_tensor()) tensors[k.text] = v.tensor;
    else skipped.push_back(k.is_string() ? k.text : std::string("<") + k.kind_name() + " key>");
  }
  TAXON_CHECK(!tensors.empty(), "backbone.bad-weights", source, " holds no tensors (", dict->entries.size(),
              " entries", steps.empty() ? "" : " under " + c10::Join("", steps), ")");
  UnwrappedStateDict out = strip_wrapper_prefixes(std::move(tensors));
  out.stripped.insert(out.stripped.begin(), steps.begin(), steps.end());
  if (!out.stripped.empty())
    log::info(source, ": took the state dict under ", c10::Join(", ", out.stripped), " (wrappers removed)");
  if (!skipped.empty())
    log::info(source, ": skipped ", skipped.size(), " entries that are not tensors, first '", skipped.front(), "'");
  return out;
}

// A state dict written by Python's torch.save (zip format, torch >= 1.6; e.g. UNICOM's FP16-ViT-B-32.pt, the
// seeds' trained_model_uniclip.pth), read by taxon's restricted unpickler (io/pickle.hpp), fp16 kept as stored.
inline UnwrappedStateDict load_torch_save_state_dict(const std::filesystem::path& path) {
  return state_dict_from_pickle(io::load_torch_save(path, "weights file"), path.string());
}

// Any .pt: a TorchScript archive (OpenAI CLIP, read by LibTorch) or a torch.save'd state dict (UNICOM, fine-tuned
// checkpoints, read by taxon), told apart by their records as torch.load does.
inline StateDict load_pt_state_dict(const std::filesystem::path& path) {
  const io::PtKind kind = io::detect_pt_kind(path);
  if (kind == io::PtKind::torchscript) return load_torchscript_state_dict(path);
  TAXON_CHECK(kind != io::PtKind::unknown, "backbone.bad-weights", path.string(),
              " is neither a TorchScript archive nor a torch.save archive (not a zip file)");
  return load_torch_save_state_dict(path).tensors;
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
