#pragma once
// Vision Transformers in the two layouts taxon loads weights for (openai/CLIP clip/model.py and mlfoundations/open_clip
// src/open_clip/transformer.py; deepglint/unicom unicom/unicom/vision_transformer.py):
//  - CLIP (OpenAI / open_clip): bias-free conv patch embed, class token, ln_pre, pre-norm blocks with fused
//    in-projection attention, ln_post on the class token, projection matrix. Parameter names are OpenAI's
//    `visual.*` names without the prefix, so checkpoints map 1:1.
//  - UNICOM: conv with bias, no class token / ln_pre, ReLU6 MLP, drop-path, LayerNorm, then all tokens flattened
//    into Linear→BatchNorm→Linear→BatchNorm. Parameter names are UNICOM's.
#include "taxon/core/checked.hpp"
#include "taxon/core/compat.hpp"
#include "taxon/core/error.hpp"
#include "taxon/core/options.hpp"
#include "taxon/io/json.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace taxon::backbone {

enum class Layout { clip, unicom };
enum class Activation { quick_gelu, gelu, relu6 };

inline const char* to_string(Layout l) { return l == Layout::clip ? "clip" : "unicom"; }
inline const char* to_string(Activation a) {
  switch (a) {
    case Activation::quick_gelu: return "quick_gelu";
    case Activation::gelu: return "gelu";
    default: return "relu6";
  }
}

struct VisionTransformerOptions {
  TAXON_ARG(Layout, layout) = Layout::clip;
  TAXON_ARG(int64_t, image_size) = 224;
  TAXON_ARG(int64_t, patch_size) = 32;
  TAXON_ARG(int64_t, width) = 768;
  TAXON_ARG(int64_t, layers) = 12;
  TAXON_ARG(int64_t, heads) = 12;
  TAXON_ARG(int64_t, output_dim) = 512;
  TAXON_ARG(int64_t, mlp_ratio) = 4;
  TAXON_ARG(Activation, activation) = Activation::quick_gelu;
  // open_clip LayerScale (`ls_1.gamma`, `ls_2.gamma`); CLIP layout only.
  TAXON_ARG(bool, layer_scale) = false;
  // Stochastic depth, growing linearly from 0 to this over depth (UNICOM trains with 0.1); training only.
  TAXON_ARG(double, drop_path_rate) = 0.0;
  TAXON_ARG(double, ln_eps) = 1e-5;
  TAXON_ARG(double, bn_eps) = 2e-5;

 public:
  int64_t grid() const { return image_size() / patch_size(); }
  int64_t tokens() const { return grid() * grid() + (layout() == Layout::clip ? 1 : 0); }
  bool operator==(const VisionTransformerOptions& o) const {
    return layout_ == o.layout_ && image_size_ == o.image_size_ && patch_size_ == o.patch_size_ &&
           width_ == o.width_ && layers_ == o.layers_ && heads_ == o.heads_ && output_dim_ == o.output_dim_ &&
           mlp_ratio_ == o.mlp_ratio_ && activation_ == o.activation_ && layer_scale_ == o.layer_scale_ &&
           drop_path_rate_ == o.drop_path_rate_ && ln_eps_ == o.ln_eps_ && bn_eps_ == o.bn_eps_;
  }
  // Bounds far above any published ViT (ViT-22B: width 6144, 48 layers; SAM: 1024 px), low enough that every
  // size derived from them (tokens(), parameter shapes, state_numel()) fits in 64 bits.
  static constexpr int64_t kMaxImageSize = 16384, kMaxWidth = 65536, kMaxLayers = 4096, kMaxOutputDim = 1 << 20,
                           kMaxMlpRatio = 64;

  void validate() const {
    TAXON_CHECK(image_size() > 0 && patch_size() > 0 && image_size() % patch_size() == 0, "backbone.bad-config",
                "image_size ", image_size(), " must be a positive multiple of patch_size ", patch_size());
    TAXON_CHECK(image_size() <= kMaxImageSize && width() <= kMaxWidth && layers() <= kMaxLayers &&
                    output_dim() <= kMaxOutputDim && mlp_ratio() <= kMaxMlpRatio,
                "backbone.bad-config", "ViT size out of bounds: image_size ", image_size(), " (max ", kMaxImageSize,
                "), width ", width(), " (max ", kMaxWidth, "), layers ", layers(), " (max ", kMaxLayers,
                "), output_dim ", output_dim(), " (max ", kMaxOutputDim, "), mlp_ratio ", mlp_ratio(), " (max ",
                kMaxMlpRatio, ")");
    TAXON_CHECK(width() > 0 && heads() > 0 && width() % heads() == 0, "backbone.bad-config", "width ", width(),
                " must be a positive multiple of heads ", heads());
    TAXON_CHECK(layers() >= 0 && output_dim() > 0 && mlp_ratio() > 0, "backbone.bad-config",
                "layers/output_dim/mlp_ratio must be positive (layers ", layers(), ", output_dim ", output_dim(),
                ", mlp_ratio ", mlp_ratio(), ")");
    TAXON_CHECK(!(layer_scale() && layout() == Layout::unicom), "backbone.bad-config",
                "layer_scale is an open_clip (CLIP layout) feature, not available in the UNICOM layout");
    TAXON_CHECK(drop_path_rate() >= 0 && drop_path_rate() < 1, "backbone.bad-config", "drop_path_rate ",
                drop_path_rate(), " must be in [0, 1)");
    TAXON_CHECK(std::isfinite(ln_eps()) && ln_eps() >= 0 && std::isfinite(bn_eps()) && bn_eps() >= 0,
                "backbone.bad-config", "ln_eps ", ln_eps(), " and bn_eps ", bn_eps(), " must be finite and >= 0");
  }
};

// How many values the parameters and buffers of a VisionTransformer with these (validated) options hold, computed
// without building it: loaders compare it with the tensor data a file actually holds before allocating the model.
inline int64_t vit_state_numel(const VisionTransformerOptions& o) {
  o.validate();
  const auto mul = [&](std::initializer_list<int64_t> factors) {
    const auto n = checked_product<int64_t>(factors);
    TAXON_CHECK(n.has_value(), "backbone.bad-config", "ViT parameter count overflows 64 bits");
    return *n;
  };
  int64_t total = 0;
  const auto add = [&](int64_t n) {
    const auto sum = checked_add<int64_t>(total, n);
    TAXON_CHECK(sum.has_value(), "backbone.bad-config", "ViT parameter count overflows 64 bits");
    total = *sum;
  };
  const bool clip = o.layout() == Layout::clip;
  const int64_t w = o.width(), hidden = mul({w, o.mlp_ratio()}), d = o.output_dim(), grid = o.grid();
  add(mul({w, 3, o.patch_size(), o.patch_size()}) + (clip ? 0 : w));  // patch embedding (+ bias in UNICOM)
  add(mul({o.tokens(), w}));                                           // positional embedding
  if (clip) add(w + 2 * w);                                            // class embedding, ln_pre
  const int64_t block = 4 * w                                          // two LayerNorms
                        + mul({3 * w, w}) + (clip ? 3 * w : 0)         // fused in-projection (+ bias in CLIP)
                        + mul({w, w}) + w                              // out projection
                        + mul({hidden, w}) + hidden + mul({w, hidden}) + w  // MLP
                        + (o.layer_scale() ? 2 * w : 0);
  add(mul({block, o.layers()}));
  add(2 * w);  // ln_post / norm
  if (clip) {
    add(mul({w, d}));  // proj
  } else {
    // feature: Linear(grid^2 * w -> w), BatchNorm(w), Linear(w -> d), BatchNorm(d); each BatchNorm holds weight, bias,
    // running mean and variance, and num_batches_tracked.
    add(mul({grid, grid, w, w}));
    add(4 * w + 1);
    add(mul({w, d}));
    add(4 * d + 1);
  }
  return total;
}

// JSON form of the options: how our checkpoints record the architecture so they rebuild alone.
inline void to_json(nlohmann::json& j, const VisionTransformerOptions& o) {
  j = nlohmann::json{{"layout", to_string(o.layout())},
                     {"image_size", o.image_size()},
                     {"patch_size", o.patch_size()},
                     {"width", o.width()},
                     {"layers", o.layers()},
                     {"heads", o.heads()},
                     {"output_dim", o.output_dim()},
                     {"mlp_ratio", o.mlp_ratio()},
                     {"activation", to_string(o.activation())},
                     {"layer_scale", o.layer_scale()},
                     {"drop_path_rate", o.drop_path_rate()},
                     {"ln_eps", o.ln_eps()},
                     {"bn_eps", o.bn_eps()}};
}

inline void from_json(const nlohmann::json& j, VisionTransformerOptions& o) {
  TAXON_CHECK(j.is_object(), "backbone.bad-config", "ViT config must be a JSON object, got: ", j.dump());
  static const char* known[] = {"layout", "image_size", "patch_size", "width", "layers", "heads", "output_dim",
                                "mlp_ratio", "activation", "layer_scale", "drop_path_rate", "ln_eps", "bn_eps"};
  for (const auto& [key, value] : j.items()) {
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    TAXON_CHECK(ok, "backbone.bad-config", "unknown ViT config key '", key, "' in ", j.dump());
  }
  auto get_int = [&](const char* key, int64_t fallback) {
    if (!j.contains(key)) return fallback;
    TAXON_CHECK(j[key].is_number_integer(), "backbone.bad-config", "ViT config '", key, "' must be an integer, got ",
                j[key].dump());
    return j[key].get<int64_t>();
  };
  auto get_double = [&](const char* key, double fallback) {
    if (!j.contains(key)) return fallback;
    TAXON_CHECK(j[key].is_number(), "backbone.bad-config", "ViT config '", key, "' must be a number, got ",
                j[key].dump());
    return j[key].get<double>();
  };
  VisionTransformerOptions d;
  if (j.contains("layout")) {
    const auto s = j["layout"].is_string() ? j["layout"].get<std::string>() : j["layout"].dump();
    TAXON_CHECK(s == "clip" || s == "unicom", "backbone.bad-config", "ViT config layout '", s,
                "' is not clip or unicom");
    d.layout(s == "clip" ? Layout::clip : Layout::unicom);
  }
  if (j.contains("activation")) {
    const auto s = j["activation"].is_string() ? j["activation"].get<std::string>() : j["activation"].dump();
    TAXON_CHECK(s == "quick_gelu" || s == "gelu" || s == "relu6", "backbone.bad-config", "ViT config activation '",
                s, "' is not quick_gelu, gelu or relu6");
    d.activation(s == "quick_gelu" ? Activation::quick_gelu : s == "gelu" ? Activation::gelu : Activation::relu6);
  }
  if (j.contains("layer_scale")) {
    TAXON_CHECK(j["layer_scale"].is_boolean(), "backbone.bad-config", "ViT config 'layer_scale' must be a bool");
    d.layer_scale(j["layer_scale"].get<bool>());
  }
  d.image_size(get_int("image_size", d.image_size()))
      .patch_size(get_int("patch_size", d.patch_size()))
      .width(get_int("width", d.width()))
      .layers(get_int("layers", d.layers()))
      .heads(get_int("heads", d.heads()))
      .output_dim(get_int("output_dim", d.output_dim()))
      .mlp_ratio(get_int("mlp_ratio", d.mlp_ratio()))
      .drop_path_rate(get_double("drop_path_rate", d.drop_path_rate()))
      .ln_eps(get_double("ln_eps", d.ln_eps()))
      .bn_eps(get_double("bn_eps", d.bn_eps()));
  d.validate();
  o = d;
}

// A ViT config from parsed JSON, bounds-checked; `source` names it in errors.
inline VisionTransformerOptions vit_options_from_json_value(const nlohmann::json& j, const std::string& source) {
  try {
    return j.get<VisionTransformerOptions>();
  } catch (const Error& e) {  // from_json and validate raise only backbone.bad-config; add the source to it
    if (e.id() != "backbone.bad-config") throw;
    const std::string what = e.what();
    TAXON_FAIL("backbone.bad-config", source, ": ", what.substr(what.find("] ") + 2));
  }
}

// The same from JSON text, e.g. the "config" metadata of a taxon checkpoint.
inline VisionTransformerOptions vit_options_from_json(std::string_view text, const std::string& source) {
  const auto parsed = io::parse_json(text);
  TAXON_CHECK(parsed, "backbone.bad-config", source, ": ", parsed.error);
  return vit_options_from_json_value(parsed.value, source);
}

namespace vit_detail {

// LayerNorm computed in fp32 and cast back, as CLIP's LayerNorm subclass does (fp16-safe).
inline at::Tensor layer_norm_fp32(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  if (x.scalar_type() == weight.scalar_type() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble))
    return at::layer_norm(x, {x.size(-1)}, weight, bias, eps);
  return at::layer_norm(x.to(at::kFloat), {x.size(-1)}, weight.to(at::kFloat), bias.to(at::kFloat), eps)
      .to(x.scalar_type());
}

inline at::Tensor activate(const at::Tensor& x, Activation a) {
  switch (a) {
    case Activation::quick_gelu: return x * at::sigmoid(1.702 * x);
    case Activation::gelu: return at::gelu(x);
    default: return at::hardtanh(x, 0.0, 6.0);
  }
}

// softmax(q k^T / sqrt(hd) [+ mask]) v on [B, H, L, hd]; `mask` is an additive [L, L] float mask (CLIP's text
// tower: -inf above the diagonal) or undefined.
inline at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask = {}) {
#if TAXON_HAS_SDPA
  if (mask.defined()) return at::scaled_dot_product_attention(q, k, v, mask.to(q.scalar_type()));
  return at::scaled_dot_product_attention(q, k, v);
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  auto scores = at::matmul(q * scale, k.transpose(-2, -1));
  if (mask.defined()) scores = scores + mask.to(scores.scalar_type());
  return at::matmul(at::softmax(scores, -1), v);
#endif
}

inline void normal_(const at::Tensor& t, double std) {
  at::NoGradGuard guard;
  t.normal_(0.0, std);
}
inline void trunc_normal_(const at::Tensor& t, double std) {
  at::NoGradGuard guard;
  t.normal_(0.0, std).clamp_(-2 * std, 2 * std);
}

}  // namespace vit_detail

// A LayerNorm holding `weight` and `bias` (the checkpoint names), applied in fp32.
class LayerNormFp32Impl : public torch::nn::Module {
 public:
  LayerNormFp32Impl(int64_t dim, double eps) : eps_(eps) {
    weight = register_parameter("weight", at::ones({dim}));
    bias = register_parameter("bias", at::zeros({dim}));
  }
  at::Tensor forward(const at::Tensor& x) { return vit_detail::layer_norm_fp32(x, weight, bias, eps_); }
  at::Tensor weight, bias;

 private:
  double eps_;
};
TORCH_MODULE(LayerNormFp32);

// Fused-projection multi-head attention. CLIP names: in_proj_weight, in_proj_bias, out_proj; UNICOM names:
// qkv.weight (no bias), proj. Both order the fused rows [q heads; k heads; v heads].
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(Layout layout, int64_t width, int64_t heads) : heads_(heads) {
    if (layout == Layout::clip) {
      in_weight = register_parameter("in_proj_weight", at::empty({3 * width, width}));
      in_bias = register_parameter("in_proj_bias", at::zeros({3 * width}));
      out = register_module("out_proj", torch::nn::Linear(width, width));
    } else {
      qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(width, 3 * width).bias(false)));
      in_weight = qkv->weight;
      out = register_module("proj", torch::nn::Linear(width, width));
    }
  }

  // x [B, L, W]; attn_mask: optional additive [L, L] mask.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& attn_mask = {}) {
    const int64_t B = x.size(0), L = x.size(1), W = x.size(2);
    const at::Tensor w = qkv ? qkv->weight : in_weight;
    auto fused = at::linear(x, w, in_bias.defined() ? c10::optional<at::Tensor>(in_bias) : c10::nullopt);
    auto parts = fused.view({B, L, 3, heads_, W / heads_}).permute({2, 0, 3, 1, 4});
    auto y = vit_detail::attention(parts[0], parts[1], parts[2], attn_mask);
    return out->forward(y.transpose(1, 2).reshape({B, L, W}));
  }

  torch::nn::Linear qkv{nullptr}, out{nullptr};
  at::Tensor in_weight, in_bias;

 private:
  int64_t heads_;
};
TORCH_MODULE(Attention);

// Two-layer MLP: CLIP names c_fc/c_proj, UNICOM names fc1/fc2.
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(Layout layout, int64_t width, int64_t hidden, Activation act) : act_(act) {
    const bool clip = layout == Layout::clip;
    fc = register_module(clip ? "c_fc" : "fc1", torch::nn::Linear(width, hidden));
    proj = register_module(clip ? "c_proj" : "fc2", torch::nn::Linear(hidden, width));
  }
  at::Tensor forward(const at::Tensor& x) { return proj->forward(vit_detail::activate(fc->forward(x), act_)); }
  torch::nn::Linear fc{nullptr}, proj{nullptr};

 private:
  Activation act_;
};
TORCH_MODULE(Mlp);

// Pre-norm residual block: x += [ls1 *] drop_path(attn(ln1(x))); x += [ls2 *] drop_path(mlp(ln2(x))).
class ResidualBlockImpl : public torch::nn::Module {
 public:
  ResidualBlockImpl(const VisionTransformerOptions& o, double drop_path) : drop_path_(drop_path) {
    const bool clip = o.layout() == Layout::clip;
    ln_1 = register_module(clip ? "ln_1" : "norm1", LayerNormFp32(o.width(), o.ln_eps()));
    attn = register_module("attn", Attention(o.layout(), o.width(), o.heads()));
    ln_2 = register_module(clip ? "ln_2" : "norm2", LayerNormFp32(o.width(), o.ln_eps()));
    mlp = register_module("mlp", Mlp(o.layout(), o.width(), o.width() * o.mlp_ratio(), o.activation()));
    if (o.layer_scale()) {
      auto ls1 = register_module("ls_1", std::make_shared<torch::nn::Module>("LayerScale"));
      auto ls2 = register_module("ls_2", std::make_shared<torch::nn::Module>("LayerScale"));
      gamma_1 = ls1->register_parameter("gamma", at::full({o.width()}, 1e-5));
      gamma_2 = ls2->register_parameter("gamma", at::full({o.width()}, 1e-5));
    }
  }

  // attn_mask: optional additive [L, L] mask (the causal mask of CLIP's text tower).
  at::Tensor forward(at::Tensor x, const at::Tensor& attn_mask = {}) {
    x = x + residual(attn->forward(ln_1->forward(x), attn_mask), gamma_1);
    return x + residual(mlp->forward(ln_2->forward(x)), gamma_2);
  }

  LayerNormFp32 ln_1{nullptr}, ln_2{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
  at::Tensor gamma_1, gamma_2;

 private:
  at::Tensor residual(at::Tensor y, const at::Tensor& gamma) {
    if (gamma.defined()) y = y * gamma;
    if (is_training() && drop_path_ > 0) {
      // Per-sample stochastic depth, rescaled so the expectation is unchanged.
      const double keep = 1.0 - drop_path_;
      auto mask = at::empty({y.size(0), 1, 1}, y.options()).bernoulli_(keep).div_(keep);
      y = y * mask;
    }
    return y;
  }
  double drop_path_;
};
TORCH_MODULE(ResidualBlock);

class VisionTransformerImpl : public torch::nn::Module {
 public:
  explicit VisionTransformerImpl(VisionTransformerOptions options) : options(std::move(options)) {
    const auto& o = this->options;
    o.validate();
    const bool clip = o.layout() == Layout::clip;
    const int64_t w = o.width();
    auto conv = torch::nn::Conv2dOptions(3, w, o.patch_size()).stride(o.patch_size()).bias(!clip);
    patch_embed = torch::nn::Conv2d(conv);
    if (clip) {
      register_module("conv1", patch_embed);
      class_embedding = register_parameter("class_embedding", at::empty({w}));
      positional_embedding = register_parameter("positional_embedding", at::empty({o.tokens(), w}));
      ln_pre = register_module("ln_pre", LayerNormFp32(w, o.ln_eps()));
    } else {
      auto holder = register_module("patch_embed", std::make_shared<torch::nn::Module>("PatchEmbed"));
      holder->register_module("proj", patch_embed);
      positional_embedding = register_parameter("pos_embed", at::empty({1, o.tokens(), w}));
    }
    auto blocks = std::make_shared<torch::nn::Module>("Blocks");
    if (clip) {
      auto transformer = register_module("transformer", std::make_shared<torch::nn::Module>("Transformer"));
      transformer->register_module("resblocks", blocks);
    } else {
      register_module("blocks", blocks);
    }
    for (int64_t i = 0; i < o.layers(); ++i) {
      const double dp = o.layers() > 1 ? o.drop_path_rate() * static_cast<double>(i) / (o.layers() - 1) : 0.0;
      resblocks.push_back(blocks->register_module(std::to_string(i), ResidualBlock(o, dp)));
    }
    if (clip) {
      ln_post = register_module("ln_post", LayerNormFp32(w, o.ln_eps()));
      proj = register_parameter("proj", at::empty({w, o.output_dim()}));
    } else {
      ln_post = register_module("norm", LayerNormFp32(w, o.ln_eps()));
      const int64_t n = o.grid() * o.grid();
      feature = register_module(
          "feature",
          torch::nn::Sequential(
              torch::nn::Linear(torch::nn::LinearOptions(n * w, w).bias(false)),
              torch::nn::BatchNorm1d(torch::nn::BatchNorm1dOptions(w).eps(o.bn_eps())),
              torch::nn::Linear(torch::nn::LinearOptions(w, o.output_dim()).bias(false)),
              torch::nn::BatchNorm1d(torch::nn::BatchNorm1dOptions(o.output_dim()).eps(o.bn_eps()))));
    }
    reset_parameters();
  }

  // CLIP's initialisation (clip/model.py initialize_parameters) for the CLIP layout; trunc_normal(0.02) and zero
  // biases for UNICOM. Only matters when training from scratch.
  void reset_parameters() {
    at::NoGradGuard guard;
    const auto& o = options;
    const double w = static_cast<double>(o.width());
    if (o.layout() == Layout::clip) {
      const double scale = 1.0 / std::sqrt(w);
      vit_detail::normal_(class_embedding, scale);
      vit_detail::normal_(positional_embedding, scale);
      vit_detail::normal_(proj, scale);
      const double proj_std = scale / std::sqrt(2.0 * std::max<int64_t>(o.layers(), 1));
      const double fc_std = 1.0 / std::sqrt(2.0 * w);
      for (auto& b : resblocks) {
        vit_detail::normal_(b->attn->in_weight, scale);
        b->attn->in_bias.zero_();
        vit_detail::normal_(b->attn->out->weight, proj_std);
        b->attn->out->bias.zero_();
        vit_detail::normal_(b->mlp->fc->weight, fc_std);
        vit_detail::normal_(b->mlp->proj->weight, proj_std);
      }
    } else {
      vit_detail::trunc_normal_(positional_embedding, 0.02);
      for (auto& m : modules(/*include_self=*/false)) {
        if (auto* lin = m->as<torch::nn::Linear>()) {
          vit_detail::trunc_normal_(lin->weight, 0.02);
          if (lin->bias.defined()) lin->bias.zero_();
        }
      }
    }
  }

  // Images [B, 3, H, W] (H = W = image_size) → embeddings [B, output_dim].
  at::Tensor forward(const at::Tensor& images) { return encode(images); }

  at::Tensor encode(const at::Tensor& images) {
    const auto& o = options;
    TAXON_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == o.image_size() &&
                    images.size(3) == o.image_size(),
                "backbone.bad-input", "VisionTransformer expects images [B, 3, ", o.image_size(), ", ",
                o.image_size(), "], got ", images.sizes());
    auto x = patch_embed->forward(images.to(patch_embed->weight.scalar_type()));  // [B, w, g, g]
    x = x.flatten(2).transpose(1, 2);                                           // [B, g*g, w]
    if (o.layout() == Layout::clip) {
      auto cls = class_embedding.to(x.scalar_type()).view({1, 1, -1}).expand({x.size(0), 1, x.size(2)});
      x = at::cat({cls, x}, 1) + positional_embedding.to(x.scalar_type());
      x = ln_pre->forward(x);
    } else {
      x = x + positional_embedding.to(x.scalar_type());
    }
    for (auto& block : resblocks) x = block->forward(x);
    if (o.layout() == Layout::clip) {
      auto cls = ln_post->forward(x.select(1, 0));
      return at::matmul(cls, proj.to(cls.scalar_type()));
    }
    x = ln_post->forward(x.to(at::kFloat));
    const at::Tensor flat = x.flatten(1).to(feature[0]->as<torch::nn::Linear>()->weight.scalar_type());
    if (!head_batch_norm) return feature->forward(flat);
    auto h = head_batch_norm(feature[0]->as<torch::nn::Linear>()->forward(flat), *feature[1]->as<torch::nn::BatchNorm1d>());
    return head_batch_norm(feature[2]->as<torch::nn::Linear>()->forward(h), *feature[3]->as<torch::nn::BatchNorm1d>());
  }

  // How the UNICOM head's two BatchNorm1d layers (feature.1, feature.3) are applied; empty: their own forward. A
  // data-parallel Trainer sets dist::sync_batch_norm here, so training statistics span every rank's rows.
  std::function<at::Tensor(const at::Tensor&, torch::nn::BatchNorm1dImpl&)> head_batch_norm;

  VisionTransformerOptions options;
  torch::nn::Conv2d patch_embed{nullptr};
  at::Tensor class_embedding, positional_embedding, proj;
  LayerNormFp32 ln_pre{nullptr}, ln_post{nullptr};
  std::vector<ResidualBlock> resblocks;
  torch::nn::Sequential feature{nullptr};
};
TORCH_MODULE(VisionTransformer);

inline int64_t parameter_count(torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace taxon::backbone
