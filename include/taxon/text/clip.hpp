#pragma once
// A CLIP model: the visual ViT (backbone/vit.hpp), the text transformer (text_tower.hpp) when the checkpoint has
// one, and logit_scale. Loaded from OpenAI / open_clip state dicts (text keys at the top level, or under "text."
// in open_clip's CustomTextCLIP) and from taxon's own CLIP checkpoint:
//   a safetensors file with OpenAI's key names (visual.*, token_embedding.weight, ..., logit_scale) and metadata
//   {"taxon.format": "clip", "config": {"visual": ViT options, "text": text options}}
// which open_clip / OpenAI code can read back as a state dict. Checkpoints without a text tower give a model with
// text == nullptr; the visual-only loaders in backbone/ keep working on all these files.
// TorchScript .pt files are read in text/clip_pt.hpp (the jit headers are heavy).
#include "taxon/backbone/weights.hpp"
#include "taxon/backbone/vit.hpp"
#include "taxon/core/error.hpp"
#include "taxon/core/normalize.hpp"
#include "taxon/core/options.hpp"
#include "taxon/core/progress.hpp"
#include "taxon/io/json.hpp"
#include "taxon/io/safetensors.hpp"
#include "taxon/text/text_tower.hpp"
#include "taxon/text/tokenizer.hpp"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace taxon::text {

using backbone::StateDict;

struct ClipModel {
  backbone::VisionTransformer visual{nullptr};
  TextTransformer text{nullptr};  // null: the checkpoint has no text tower
  at::Tensor logit_scale;         // log of the logit scale (CLIP: log(1/0.07) at init); undefined if absent

  bool has_text() const { return !text.is_empty(); }
  void to(at::Device device) {
    if (!visual.is_empty()) visual->to(device);
    if (has_text()) text->to(device);
    if (logit_scale.defined()) logit_scale = logit_scale.to(device);
  }
};

struct TextInferOptions {
  // QuickGELU for OpenAI weights and open_clip "-quickgelu" models, GELU for the others (as the visual tower).
  TAXON_ARG(std::optional<Activation>, activation);
  // Upstream uses width / 64.
  TAXON_ARG(std::optional<int64_t>, heads);
};

// The text tower's entries with OpenAI's top-level names, from a full OpenAI / open_clip state dict (wrapper
// prefixes removed by backbone::strip_wrapper_prefixes; open_clip CustomTextCLIP's "text." prefix removed); empty
// when there is no text tower.
inline StateDict text_state_dict(const StateDict& dict) {
  const StateDict stripped = backbone::strip_wrapper_prefixes(dict).tensors;
  const std::string prefix = stripped.count("text.token_embedding.weight") ? "text." : "";
  if (!stripped.count(prefix + "token_embedding.weight")) return {};
  StateDict text;
  for (const auto& [k, v] : stripped) {
    if (k.rfind(prefix, 0) != 0) continue;
    const std::string name = k.substr(prefix.size());
    if (name == "token_embedding.weight" || name == "positional_embedding" || name == "text_projection" ||
        name.rfind("transformer.", 0) == 0 || name.rfind("ln_final.", 0) == 0)
      text[name] = v;
  }
  text.erase("transformer.attn_mask");  // some exports keep the causal mask buffer; taxon builds it per batch
  return text;
}

// The text architecture from tensor shapes, as build_model does.
inline TextTransformerOptions infer_text_options(const StateDict& text, const TextInferOptions& infer = {},
                                                 const std::string& source = "state dict") {
  auto need = [&](const std::string& key, int64_t dims) -> const at::Tensor& {
    auto it = text.find(key);
    TAXON_CHECK(it != text.end(), "text.state-dict-mismatch", source, " lacks '", key,
                "', needed to infer the text tower (", text.size(), " text keys)");
    TAXON_CHECK(it->second.dim() == dims, "text.state-dict-mismatch", source, ": '", key, "' has shape ",
                it->second.sizes(), ", expected ", dims, " dimensions");
    return it->second;
  };
  const auto& embedding = need("token_embedding.weight", 2);
  const auto& pos = need("positional_embedding", 2);
  const auto& proj = need("text_projection", 2);
  const std::string suffix = ".attn.in_proj_weight";
  int64_t layers = 0;
  for (const auto& kv : text)
    if (kv.first.rfind("transformer.resblocks.", 0) == 0 && kv.first.size() > suffix.size() &&
        kv.first.compare(kv.first.size() - suffix.size(), suffix.size(), suffix) == 0)
      ++layers;
  const int64_t width = embedding.size(1);
  TAXON_CHECK(pos.size(1) == width && proj.size(0) == width, "text.state-dict-mismatch", source,
              ": token_embedding ", embedding.sizes(), ", positional_embedding ", pos.sizes(), " and text_projection ",
              proj.sizes(), " disagree on the width");
  return TextTransformerOptions()
      .vocab_size(embedding.size(0))
      .context_length(pos.size(0))
      .width(width)
      .layers(layers)
      .heads(infer.heads().value_or(std::max<int64_t>(width / 64, 1)))
      .output_dim(proj.size(1))
      .activation(infer.activation().value_or(Activation::quick_gelu))
      .layer_scale(text.count("transformer.resblocks.0.ls_1.gamma") > 0);
}

// A text tower from any state dict that has one (strict: every key must fit).
inline TextTransformer text_from_state_dict(const StateDict& dict, const TextInferOptions& infer = {},
                                            const std::string& source = "state dict") {
  const StateDict text = text_state_dict(dict);
  TAXON_CHECK(!text.empty(), "text.no-text-tower", source,
              " has no text tower (no 'token_embedding.weight'); it holds a visual tower only");
  TextTransformer tower(infer_text_options(text, infer, source));
  backbone::load_state_dict(*tower, text, /*strict=*/true, source);
  return tower;
}

struct ClipLoadOptions {
  TAXON_ARG(backbone::InferOptions, visual);
  TAXON_ARG(TextInferOptions, text);
};

namespace clip_detail {
inline at::Tensor logit_scale_of(const StateDict& dict) {
  const StateDict stripped = backbone::strip_wrapper_prefixes(dict).tensors;
  auto it = stripped.find("logit_scale");
  return it == stripped.end() ? at::Tensor() : it->second.detach().to(at::kFloat).reshape({});
}
}  // namespace clip_detail

// Both towers from a state dict; the text tower only when the dict has one. fp16 weights are cast to fp32.
inline ClipModel clip_from_state_dict(const StateDict& dict, const ClipLoadOptions& options = {},
                                      const std::string& source = "state dict") {
  ClipModel m;
  m.visual = backbone::vit_from_state_dict(dict, options.visual(), source);
  if (!text_state_dict(dict).empty()) m.text = text_from_state_dict(dict, options.text(), source);
  m.logit_scale = clip_detail::logit_scale_of(dict);
  return m;
}

// taxon's CLIP checkpoint (see the header comment); without a text tower it is the visual tower under "visual.".
inline void save_clip_checkpoint(const std::filesystem::path& path, const ClipModel& model,
                                 std::map<std::string, std::string> metadata = {}) {
  TAXON_CHECK(!model.visual.is_empty(), "text.bad-model", "save_clip_checkpoint: the model has no visual tower");
  nlohmann::json config{{"visual", nlohmann::json(model.visual->options)}};
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [k, v] : backbone::state_dict(*model.visual)) tensors.emplace_back("visual." + k, v);
  if (model.has_text()) {
    config["text"] = nlohmann::json(model.text->options);
    for (const auto& [k, v] : backbone::state_dict(*model.text)) tensors.emplace_back(k, v);
  }
  if (model.logit_scale.defined()) tensors.emplace_back("logit_scale", model.logit_scale);
  metadata["config"] = config.dump();
  metadata["taxon.format"] = "clip";
  io::save_safetensors(path, tensors, metadata);
}

// A CLIP model from a safetensors file: taxon's CLIP or ViT checkpoint, or an open_clip state dict whose
// architecture is inferred from shapes.
inline ClipModel load_clip_safetensors(const std::filesystem::path& path, const ClipLoadOptions& options = {}) {
  const auto file = io::load_safetensors(path);
  const std::string source = path.string();
  StateDict dict(file.tensors.begin(), file.tensors.end());
  auto format = file.metadata.find("taxon.format");
  if (format == file.metadata.end() || format->second != "clip") {
    if (format != file.metadata.end() && format->second == "vit") {  // taxon's visual-only checkpoint
      ClipModel m;
      m.visual = backbone::load_checkpoint(path, options.visual());
      return m;
    }
    return clip_from_state_dict(dict, options, source);
  }
  const auto config_text = file.metadata.find("config");
  TAXON_CHECK(config_text != file.metadata.end(), "text.bad-config", source,
              ": taxon CLIP checkpoint has no 'config' metadata");
  const auto parsed = io::parse_json(config_text->second);
  TAXON_CHECK(parsed, "text.bad-config", source, " 'config' metadata: ", parsed.error);
  const nlohmann::json& config = parsed.value;
  TAXON_CHECK(config.is_object() && config.contains("visual"), "text.bad-config", source,
              ": taxon CLIP checkpoint config lacks 'visual': ", config.dump());
  ClipModel m;
  m.visual = backbone::VisionTransformer(
      backbone::vit_options_from_json_value(config["visual"], source + " 'config' metadata 'visual'"));
  backbone::load_state_dict(*m.visual, backbone::visual_state_dict(dict), /*strict=*/true, source);
  if (config.contains("text")) {
    m.text = TextTransformer(config["text"].get<TextTransformerOptions>());
    backbone::load_state_dict(*m.text, text_state_dict(dict), /*strict=*/true, source);
  }
  m.logit_scale = clip_detail::logit_scale_of(dict);
  return m;
}

// The BPE vocabulary for a checkpoint: `explicit_path` when given, else bpe_simple_vocab_16e6.txt(.gz) next to
// the checkpoint; otherwise "text.missing-vocab" saying where the file usually is.
inline std::filesystem::path find_vocab(const std::filesystem::path& explicit_path,
                                        const std::filesystem::path& checkpoint = {}) {
  namespace fs = std::filesystem;
  if (!explicit_path.empty()) {
    TAXON_CHECK(fs::is_regular_file(explicit_path), "text.missing-vocab", "--vocab ", explicit_path.string(),
                ": file not found. ", Tokenizer::where_to_find_vocab());
    return explicit_path;
  }
  if (!checkpoint.empty()) {
    const fs::path dir = checkpoint.has_parent_path() ? checkpoint.parent_path() : fs::path(".");
    for (const char* name : {kVocabFileName, "bpe_simple_vocab_16e6.txt"})
      if (fs::is_regular_file(dir / name)) return dir / name;
  }
  TAXON_FAIL("text.missing-vocab", "no BPE vocabulary",
             checkpoint.empty() ? std::string() : c10::str(" next to ", checkpoint.string()), ". ",
             Tokenizer::where_to_find_vocab());
}

}  // namespace taxon::text

namespace taxon {

struct TextEmbedOptions {
  TAXON_ARG(int64_t, batch_size) = 256;
  // L2-normalise each embedding.
  TAXON_ARG(bool, normalize) = false;
  // Where the tokens go; defaults to the tower's device.
  TAXON_ARG(std::optional<at::Device>, device);
  TAXON_ARG(bool, show_progress) = false;
  TAXON_ARG(std::string, label) = "embed text";
  // Asked before every batch (e.g. a Ctrl-C flag); true ends the embedding with text.interrupted.
  TAXON_ARG(std::function<bool()>, stop_requested);
};

// Text features of `texts` ([N, output_dim] float CPU, in order), tokenized and encoded in batches in inference
// mode. The tower's train/eval mode is restored afterwards.
inline at::Tensor embed_text(text::TextTransformer& tower, const text::Tokenizer& tokenizer,
                             const std::vector<std::string>& texts, TextEmbedOptions opts = {}) {
  TAXON_CHECK(!tower.is_empty(), "text.no-text-tower", "embed_text: no text tower");
  TAXON_CHECK(opts.batch_size() >= 1, "text.bad-option", "embed_text: batch_size ", opts.batch_size(), " must be >= 1");
  TAXON_CHECK(tokenizer.context_length() <= tower->options.context_length(), "text.bad-option",
              "tokenizer context length ", tokenizer.context_length(), " exceeds the text tower's ",
              tower->options.context_length());
  const at::Device device = opts.device().value_or(tower->text_projection.device());
  const bool was_training = tower->is_training();
  tower->train(false);
  std::optional<Progress> progress;
  if (opts.show_progress()) progress.emplace(opts.label(), static_cast<int64_t>(texts.size()), "texts");
  std::vector<at::Tensor> outputs;
  {
    c10::InferenceMode guard;
    for (std::size_t begin = 0; begin < texts.size(); begin += static_cast<std::size_t>(opts.batch_size())) {
      if (opts.stop_requested() && opts.stop_requested()()) {
        tower->train(was_training);
        TAXON_FAIL("text.interrupted", opts.label(), ": stopped on request after ", begin, " of ", texts.size(), " texts");
      }
      const std::size_t end = std::min(texts.size(), begin + static_cast<std::size_t>(opts.batch_size()));
      const std::vector<std::string> batch(texts.begin() + static_cast<std::ptrdiff_t>(begin),
                                           texts.begin() + static_cast<std::ptrdiff_t>(end));
      at::Tensor out = tower->forward(tokenizer.tokenize(batch).to(device)).to(at::kFloat);
      if (opts.normalize()) out = l2_normalize_rows(out);
      outputs.push_back(out.to(at::kCPU));
      if (progress) progress->advance(static_cast<int64_t>(end - begin));
    }
  }
  tower->train(was_training);
  if (progress) progress->finish();
  if (outputs.empty()) return at::zeros({0, tower->options.output_dim()});
  return at::cat(outputs, 0).clone();  // out of inference mode
}

}  // namespace taxon
