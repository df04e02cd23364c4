#pragma once
// CLIP's text transformer (clip/model.py CLIP.encode_text; open_clip TextTransformer with its defaults):
//   token_embedding + positional_embedding -> pre-norm residual blocks under a causal mask -> ln_final ->
//   the features at the end-of-text position (argmax of the token ids) -> @ text_projection.
// Parameter names are OpenAI's top-level ones (token_embedding.weight, positional_embedding,
// transformer.resblocks.{i}.*, ln_final.*, text_projection), so checkpoints map 1:1. The residual block is the
// visual tower's (backbone/vit.hpp), given the causal mask.
// Causality makes every position depend only on the ones before it, so the batch runs on the first
// max(end-of-text position) + 1 tokens instead of all 77: the pooled features are the same (up to summation
// order), for a fraction of the work on short prompts.
#include "taxon/backbone/vit.hpp"
#include "taxon/core/error.hpp"
#include "taxon/core/options.hpp"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace taxon::text {

using backbone::Activation;

struct TextTransformerOptions {
  TAXON_ARG(int64_t, vocab_size) = 49408;
  TAXON_ARG(int64_t, context_length) = 77;
  TAXON_ARG(int64_t, width) = 512;
  TAXON_ARG(int64_t, layers) = 12;
  TAXON_ARG(int64_t, heads) = 8;
  TAXON_ARG(int64_t, output_dim) = 512;
  TAXON_ARG(int64_t, mlp_ratio) = 4;
  TAXON_ARG(Activation, activation) = Activation::quick_gelu;
  // open_clip LayerScale (`ls_1.gamma`, `ls_2.gamma`).
  TAXON_ARG(bool, layer_scale) = false;
  TAXON_ARG(double, ln_eps) = 1e-5;

 public:
  bool operator==(const TextTransformerOptions& o) const {
    return vocab_size_ == o.vocab_size_ && context_length_ == o.context_length_ && width_ == o.width_ &&
           layers_ == o.layers_ && heads_ == o.heads_ && output_dim_ == o.output_dim_ && mlp_ratio_ == o.mlp_ratio_ &&
           activation_ == o.activation_ && layer_scale_ == o.layer_scale_ && ln_eps_ == o.ln_eps_;
  }
  void validate() const {
    TAXON_CHECK(vocab_size() > 0 && context_length() > 1, "text.bad-config", "vocab_size ", vocab_size(),
                " and context_length ", context_length(), " must be positive (context_length >= 2)");
    TAXON_CHECK(width() > 0 && heads() > 0 && width() % heads() == 0, "text.bad-config", "width ", width(),
                " must be a positive multiple of heads ", heads());
    TAXON_CHECK(layers() >= 0 && output_dim() > 0 && mlp_ratio() > 0, "text.bad-config",
                "layers/output_dim/mlp_ratio must be positive (layers ", layers(), ", output_dim ", output_dim(),
                ", mlp_ratio ", mlp_ratio(), ")");
    TAXON_CHECK(activation() != Activation::relu6, "text.bad-config", "the text tower uses quick_gelu or gelu");
  }
  // The residual block's options (shared block code with the visual tower).
  backbone::VisionTransformerOptions block_options() const {
    return backbone::VisionTransformerOptions()
        .layout(backbone::Layout::clip)
        .width(width())
        .heads(heads())
        .mlp_ratio(mlp_ratio())
        .activation(activation())
        .layer_scale(layer_scale())
        .ln_eps(ln_eps());
  }
};

inline void to_json(nlohmann::json& j, const TextTransformerOptions& o) {
  j = nlohmann::json{{"vocab_size", o.vocab_size()}, {"context_length", o.context_length()},
                     {"width", o.width()},           {"layers", o.layers()},
                     {"heads", o.heads()},           {"output_dim", o.output_dim()},
                     {"mlp_ratio", o.mlp_ratio()},   {"activation", backbone::to_string(o.activation())},
                     {"layer_scale", o.layer_scale()}, {"ln_eps", o.ln_eps()}};
}

inline void from_json(const nlohmann::json& j, TextTransformerOptions& o) {
  TAXON_CHECK(j.is_object(), "text.bad-config", "text tower config must be a JSON object, got: ", j.dump());
  static const char* known[] = {"vocab_size", "context_length", "width", "layers", "heads", "output_dim",
                                "mlp_ratio", "activation", "layer_scale", "ln_eps"};
  for (const auto& [key, value] : j.items()) {
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    TAXON_CHECK(ok, "text.bad-config", "unknown text tower config key '", key, "' in ", j.dump());
  }
  auto get_int = [&](const char* key, int64_t fallback) {
    if (!j.contains(key)) return fallback;
    TAXON_CHECK(j[key].is_number_integer(), "text.bad-config", "text config '", key, "' must be an integer, got ",
                j[key].dump());
    return j[key].get<int64_t>();
  };
  TextTransformerOptions d;
  if (j.contains("activation")) {
    const auto s = j["activation"].is_string() ? j["activation"].get<std::string>() : j["activation"].dump();
    TAXON_CHECK(s == "quick_gelu" || s == "gelu", "text.bad-config", "text config activation '", s,
                "' is not quick_gelu or gelu");
    d.activation(s == "quick_gelu" ? Activation::quick_gelu : Activation::gelu);
  }
  if (j.contains("layer_scale")) {
    TAXON_CHECK(j["layer_scale"].is_boolean(), "text.bad-config", "text config 'layer_scale' must be a bool");
    d.layer_scale(j["layer_scale"].get<bool>());
  }
  if (j.contains("ln_eps")) {
    TAXON_CHECK(j["ln_eps"].is_number(), "text.bad-config", "text config 'ln_eps' must be a number");
    d.ln_eps(j["ln_eps"].get<double>());
  }
  d.vocab_size(get_int("vocab_size", d.vocab_size()))
      .context_length(get_int("context_length", d.context_length()))
      .width(get_int("width", d.width()))
      .layers(get_int("layers", d.layers()))
      .heads(get_int("heads", d.heads()))
      .output_dim(get_int("output_dim", d.output_dim()))
      .mlp_ratio(get_int("mlp_ratio", d.mlp_ratio()));
  d.validate();
  o = d;
}

class TextTransformerImpl : public torch::nn::Module {
 public:
  explicit TextTransformerImpl(TextTransformerOptions options) : options(std::move(options)) {
    const auto& o = this->options;
    o.validate();
    token_embedding = register_module("token_embedding", torch::nn::Embedding(o.vocab_size(), o.width()));
    positional_embedding = register_parameter("positional_embedding", at::empty({o.context_length(), o.width()}));
    auto transformer = register_module("transformer", std::make_shared<torch::nn::Module>("Transformer"));
    auto blocks = transformer->register_module("resblocks", std::make_shared<torch::nn::Module>("Blocks"));
    for (int64_t i = 0; i < o.layers(); ++i)
      resblocks.push_back(blocks->register_module(std::to_string(i), backbone::ResidualBlock(o.block_options(), 0.0)));
    ln_final = register_module("ln_final", backbone::LayerNormFp32(o.width(), o.ln_eps()));
    text_projection = register_parameter("text_projection", at::empty({o.width(), o.output_dim()}));
    reset_parameters();
  }

  // CLIP's initialize_parameters for the text side; only matters when training from scratch or in tests.
  void reset_parameters() {
    at::NoGradGuard guard;
    const auto& o = options;
    const double w = static_cast<double>(o.width());
    backbone::vit_detail::normal_(token_embedding->weight, 0.02);
    backbone::vit_detail::normal_(positional_embedding, 0.01);
    const double attn_std = 1.0 / std::sqrt(w);
    const double proj_std = attn_std / std::sqrt(2.0 * std::max<int64_t>(o.layers(), 1));
    const double fc_std = 1.0 / std::sqrt(2.0 * w);
    for (auto& b : resblocks) {
      backbone::vit_detail::normal_(b->attn->in_weight, attn_std);
      b->attn->in_bias.zero_();
      backbone::vit_detail::normal_(b->attn->out->weight, proj_std);
      b->attn->out->bias.zero_();
      backbone::vit_detail::normal_(b->mlp->fc->weight, fc_std);
      backbone::vit_detail::normal_(b->mlp->proj->weight, proj_std);
    }
    backbone::vit_detail::normal_(text_projection, attn_std);
  }

  // Token ids [B, L] (L <= context_length, as the tokenizer makes them) -> text features [B, output_dim].
  at::Tensor forward(const at::Tensor& tokens) { return encode(tokens); }

  at::Tensor encode(const at::Tensor& tokens) {
    const auto& o = options;
    TAXON_CHECK(tokens.defined() && tokens.dim() == 2 && tokens.size(1) >= 1 && tokens.size(1) <= o.context_length() &&
                    !at::isFloatingType(tokens.scalar_type()),
                "text.bad-input", "text tower expects integer token ids [B, L] with 1 <= L <= ", o.context_length(),
                ", got ", tokens.defined() ? c10::str(tokens.scalar_type(), " ", tokens.sizes()) : std::string("undefined"));
    const at::Tensor ids = tokens.to(at::kLong).to(token_embedding->weight.device());
    if (ids.numel() > 0) {
      const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
      TAXON_CHECK(lo >= 0 && hi < o.vocab_size(), "text.bad-token", "token ids span [", lo, ", ", hi,
                  "] but the text tower's vocabulary has ", o.vocab_size(), " entries (tokenizer and checkpoint differ?)");
    }
    const at::Tensor eot = ids.argmax(-1);  // first position of the largest id: the end-of-text token
    const int64_t used = ids.size(0) > 0 ? eot.max().item<int64_t>() + 1 : 1;
    const auto dtype = token_embedding->weight.scalar_type();
    at::Tensor x = token_embedding->forward(ids.narrow(1, 0, used)) + positional_embedding.narrow(0, 0, used).to(dtype);
    const at::Tensor mask =
        at::full({used, used}, -std::numeric_limits<float>::infinity(), x.options().dtype(at::kFloat)).triu(1);
    for (auto& block : resblocks) x = block->forward(x, mask);
    const at::Tensor rows = at::arange(x.size(0), ids.options()) * used + eot;
    at::Tensor pooled = x.reshape({x.size(0) * used, x.size(2)}).index_select(0, rows);
    pooled = ln_final->forward(pooled);
    return at::matmul(pooled, text_projection.to(pooled.scalar_type()));
  }

  TextTransformerOptions options;
  torch::nn::Embedding token_embedding{nullptr};
  at::Tensor positional_embedding, text_projection;
  std::vector<backbone::ResidualBlock> resblocks;
  backbone::LayerNormFp32 ln_final{nullptr};
};
TORCH_MODULE(TextTransformer);

}  // namespace taxon::text
