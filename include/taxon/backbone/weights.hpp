#pragma once
// ViT weights files: loading pretrained weights and saving/loading taxon's own model.safetensors. (The training
// checkpoint format, with optimizer and generator state, is train/checkpoint.hpp.)
//  - state dicts in three layouts: OpenAI CLIP / open_clip (`visual.*`, optional LayerScale) and UNICOM
//    (deepglint/unicom unicom/unicom/vision_transformer.py);
//  - the architecture is inferred from tensor shapes the way upstream's build_model does;
//  - strict loading lists every missing, unexpected and mis-shaped key in one error; non-strict returns them;
//  - taxon's own file is a safetensors file whose "config" metadata holds the options JSON.
// OpenAI's TorchScript .pt files are read by taxon/backbone/torchscript.hpp (kept apart: the jit headers are heavy).
#include "taxon/backbone/vit.hpp"
#include "taxon/core/checked.hpp"
#include "taxon/core/error.hpp"
#include "taxon/io/safetensors.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace taxon::backbone {

using StateDict = std::map<std::string, at::Tensor>;

// What a load found wrong; empty lists mean every parameter and buffer was filled.
struct LoadReport {
  std::vector<std::string> missing;     // in the module, not in the checkpoint
  std::vector<std::string> unexpected;  // in the checkpoint, not in the module
  std::vector<std::string> mismatched;  // "name: checkpoint [a, b] vs module [c, d]"
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string describe() const {
    std::string s;
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      s += c10::str("\n  ", v.size(), " ", what, ":");
      for (const auto& k : v) s += "\n    " + k;
    };
    list("missing", missing);
    list("unexpected", unexpected);
    list("mis-shaped", mismatched);
    return s;
  }
};

// Parameters and buffers by dotted name (PyTorch's state_dict()).
inline StateDict state_dict(const torch::nn::Module& module) {
  StateDict out;
  for (const auto& kv : module.named_parameters(/*recurse=*/true)) out[kv.key()] = kv.value();
  for (const auto& kv : module.named_buffers(/*recurse=*/true)) out[kv.key()] = kv.value();
  return out;
}

// Copies `dict` into the module's parameters and buffers, casting dtype (fp16 checkpoints into fp32 modules) and
// device. Strict: any problem throws "backbone.state-dict-mismatch" listing all of them, before anything is copied.
inline LoadReport load_state_dict(torch::nn::Module& module, const StateDict& dict, bool strict = true,
                                  const std::string& source = "state dict") {
  LoadReport report;
  StateDict targets = state_dict(module);
  for (const auto& [name, target] : targets) {
    auto it = dict.find(name);
    if (it == dict.end()) {
      report.missing.push_back(name + " " + c10::str(target.sizes()));
    } else if (it->second.sizes() != target.sizes()) {
      report.mismatched.push_back(c10::str(name, ": checkpoint ", it->second.sizes(), " vs module ", target.sizes()));
    }
  }
  for (const auto& [name, tensor] : dict)
    if (!targets.count(name)) report.unexpected.push_back(name + " " + c10::str(tensor.sizes()));
  TAXON_CHECK(!strict || report.ok(), "backbone.state-dict-mismatch", source,
              " does not match the module:", report.describe());
  at::NoGradGuard guard;
  for (auto& [name, target] : targets) {
    auto it = dict.find(name);
    if (it == dict.end() || it->second.sizes() != target.sizes()) continue;
    target.copy_(it->second);
  }
  return report;
}

// A state dict without the prefixes that wrapping adds to every key, and the prefixes removed, outermost first.
struct UnwrappedStateDict {
  StateDict tensors;
  std::vector<std::string> stripped;
};

// The one place that removes wrapper prefixes (every loader calls it): while every key starts with the same
// "<name>." it is removed. That covers DDP ("module."), a model wrapped in another module (the seeds' and UNICOM's
// WarpModule: "model.") and both ("module.model."). "visual." and "text." are kept: they select a CLIP tower.
// No real model has a single top-level child, so an unwrapped dict is never cut.
inline UnwrappedStateDict strip_wrapper_prefixes(StateDict dict) {
  UnwrappedStateDict out;
  for (int level = 0; level < 8 && !dict.empty(); ++level) {
    const std::string& first = dict.begin()->first;
    const auto dot = first.find('.');
    if (dot == std::string::npos || dot == 0) break;
    const std::string prefix = first.substr(0, dot + 1);
    if (prefix == "visual." || prefix == "text.") break;
    const bool shared = std::all_of(dict.begin(), dict.end(), [&](const auto& kv) {
      return kv.first.size() > prefix.size() && kv.first.compare(0, prefix.size(), prefix) == 0;
    });
    if (!shared) break;
    StateDict inner;
    for (auto& [k, v] : dict) inner.emplace(k.substr(prefix.size()), std::move(v));
    dict = std::move(inner);
    out.stripped.push_back(prefix);
  }
  out.tensors = std::move(dict);
  return out;
}

// The visual tower's entries: keys under "visual." (OpenAI/open_clip full models, text tower dropped) with the
// prefix removed, or the whole dict when it has no such keys (UNICOM, bare visual dicts). Wrapper prefixes (DDP's
// "module.", a wrapping module's "model.") are removed first.
inline StateDict visual_state_dict(const StateDict& dict) {
  const StateDict stripped = strip_wrapper_prefixes(dict).tensors;
  StateDict visual;
  for (const auto& [k, v] : stripped)
    if (k.rfind("visual.", 0) == 0) visual[k.substr(7)] = v;
  return visual.empty() ? stripped : visual;
}

struct InferOptions {
  // CLIP-layout activation: QuickGELU for OpenAI weights and open_clip "-quickgelu" models, GELU for the others.
  TAXON_ARG(std::optional<Activation>, activation);
  // Upstream uses width / 64; override for models trained otherwise.
  TAXON_ARG(std::optional<int64_t>, heads);
};

inline Layout detect_layout(const StateDict& visual, const std::string& source = "state dict") {
  if (visual.count("conv1.weight")) return Layout::clip;
  if (visual.count("patch_embed.proj.weight")) return Layout::unicom;
  TAXON_FAIL("backbone.unknown-layout", source,
             " is neither a CLIP/open_clip visual tower (no 'visual.conv1.weight' or 'conv1.weight') nor a UNICOM "
             "ViT (no 'patch_embed.proj.weight'); ",
             visual.size(), " keys", visual.empty() ? "" : c10::str(", first '", visual.begin()->first, "'"));
}

// The architecture of a visual state dict (prefix already removed), from tensor shapes as build_model does.
inline VisionTransformerOptions infer_vit_options(const StateDict& visual, const InferOptions& infer = {},
                                                  const std::string& source = "state dict") {
  const Layout layout = detect_layout(visual, source);
  const bool clip = layout == Layout::clip;
  auto need = [&](const std::string& key, int64_t dims) -> const at::Tensor& {
    auto it = visual.find(key);
    TAXON_CHECK(it != visual.end(), "backbone.state-dict-mismatch", source, " lacks '", key,
                "', needed to infer the architecture");
    TAXON_CHECK(it->second.dim() == dims, "backbone.state-dict-mismatch", source, ": '", key, "' has shape ",
                it->second.sizes(), ", expected ", dims, " dimensions");
    return it->second;
  };
  const auto& conv = need(clip ? "conv1.weight" : "patch_embed.proj.weight", 4);
  const int64_t width = conv.size(0), patch = conv.size(-1);
  const std::string layer_suffix = clip ? ".attn.in_proj_weight" : ".attn.qkv.weight";
  int64_t layers = 0;
  for (const auto& kv : visual)
    if (kv.first.size() > layer_suffix.size() &&
        kv.first.compare(kv.first.size() - layer_suffix.size(), layer_suffix.size(), layer_suffix) == 0)
      ++layers;
  const auto& pos = need(clip ? "positional_embedding" : "pos_embed", clip ? 2 : 3);
  const int64_t grid_tokens = clip ? pos.size(0) - 1 : pos.size(1);
  const auto grid = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(std::max<int64_t>(grid_tokens, 0)))));
  TAXON_CHECK(checked_mul(grid, grid) == grid_tokens, "backbone.state-dict-mismatch", source, ": positional embedding ",
              pos.sizes(), " does not hold a square grid of tokens");
  // Empty tensors may declare any dimensions, so the image size they imply is checked before it is used.
  const auto image_size = checked_mul(patch, grid);
  TAXON_CHECK(image_size.has_value(), "backbone.state-dict-mismatch", source, ": patch size ", patch, " x grid ", grid,
              " overflows");
  const int64_t output_dim = clip ? need("proj", 2).size(1) : need("feature.2.weight", 2).size(0);
  VisionTransformerOptions o;
  o.layout(layout)
      .image_size(*image_size)
      .patch_size(patch)
      .width(width)
      .layers(layers)
      .heads(infer.heads().value_or(std::max<int64_t>(width / 64, 1)))
      .output_dim(output_dim)
      .activation(clip ? infer.activation().value_or(Activation::quick_gelu) : Activation::relu6)
      .layer_scale(clip && visual.count("transformer.resblocks.0.ls_1.gamma") > 0);
  return o;
}

// Refuses to build `options` unless `dict` holds at least one byte of tensor data (shared storage counted once)
// per value the model would allocate: a small or hostile file cannot make a loader allocate gigabytes before
// strict loading would report the mismatch. A declared architecture (the file's config) that does not fit is a bad
// config; an inferred one, a state dict that does not fit any model.
enum class ArchitectureFrom { config, shapes };
inline void check_dict_can_fill(const VisionTransformerOptions& options, const StateDict& dict, const std::string& source,
                                ArchitectureFrom from) {
  const int64_t need = vit_state_numel(options);
  std::set<const void*> seen;
  int64_t have = 0;
  for (const auto& [name, t] : dict)
    if (t.defined() && t.has_storage() && seen.insert(t.storage().unsafeGetStorageImpl()).second)
      have += static_cast<int64_t>(t.storage().nbytes());
  if (need <= have) return;
  const std::string problem = ": the architecture (" + nlohmann::json(options).dump() + ") has " + std::to_string(need) +
                              " parameter and buffer values but the file holds only " + std::to_string(have) +
                              " bytes of tensor data";
  if (from == ArchitectureFrom::config) TAXON_FAIL("backbone.bad-config", source, problem);
  TAXON_FAIL("backbone.state-dict-mismatch", source, problem);
}

// Builds a ViT from any supported state dict (full CLIP/open_clip model or visual tower, or UNICOM), strictly.
inline VisionTransformer vit_from_state_dict(const StateDict& dict, const InferOptions& infer = {},
                                             const std::string& source = "state dict") {
  const StateDict visual = visual_state_dict(dict);
  const VisionTransformerOptions options = infer_vit_options(visual, infer, source);
  check_dict_can_fill(options, visual, source, ArchitectureFrom::shapes);
  VisionTransformer model(options);
  load_state_dict(*model, visual, /*strict=*/true, source);
  return model;
}

// Our checkpoint: every parameter and buffer plus {"config": options JSON, "taxon.format": "vit"} and any extra
// metadata (e.g. epoch, dataset) the caller adds.
inline void save_checkpoint(const std::filesystem::path& path, const VisionTransformer& model,
                            std::map<std::string, std::string> metadata = {}) {
  metadata["config"] = nlohmann::json(model->options).dump();
  metadata["taxon.format"] = "vit";
  const StateDict dict = state_dict(*model);
  io::save_safetensors(path, std::vector<std::pair<std::string, at::Tensor>>(dict.begin(), dict.end()), metadata);
}

// Rebuilds a ViT from a safetensors file: our own ViT or CLIP checkpoint (config metadata), or an open_clip / UNICOM
// state dict whose architecture is inferred from shapes. Weights are cast to fp32.
inline VisionTransformer load_checkpoint(const std::filesystem::path& path, const InferOptions& infer = {}) {
  const auto file = io::load_safetensors(path);
  const std::string source = path.string();
  StateDict dict(file.tensors.begin(), file.tensors.end());
  auto config = file.metadata.find("config");
  if (config == file.metadata.end()) return vit_from_state_dict(dict, infer, source);
  const std::string where = source + " 'config' metadata";
  const auto parsed = io::parse_json(config->second);
  TAXON_CHECK(parsed, "backbone.bad-config", where, ": ", parsed.error);
  const nlohmann::json& j = parsed.value;
  // taxon's CLIP checkpoint (text/clip.hpp): the visual tower's config and its "visual." keys.
  const auto format = file.metadata.find("taxon.format");
  const bool clip = format != file.metadata.end() && format->second == "clip";
  TAXON_CHECK(!clip || (j.is_object() && j.contains("visual")), "backbone.bad-config", source,
              ": CLIP checkpoint config lacks 'visual'");
  const auto options = vit_options_from_json_value(clip ? j["visual"] : j, where);
  const StateDict weights = clip ? visual_state_dict(dict) : dict;
  check_dict_can_fill(options, weights, source, ArchitectureFrom::config);
  VisionTransformer model(options);
  load_state_dict(*model, weights, /*strict=*/true, source);
  return model;
}

}  // namespace taxon::backbone
