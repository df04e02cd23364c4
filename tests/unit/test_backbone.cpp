// ViT backbones: zoo configs and parameter counts, forward vs. an independent per-head reference, JSON configs,
// checkpoint loading (own safetensors, open_clip, UNICOM, OpenAI TorchScript written from C++), loader errors,
// and the embedding API.
#include "taxon/backbone/weights.hpp"
#include "taxon/backbone/embed.hpp"
#include "taxon/backbone/torchscript.hpp"
#include "taxon/backbone/vit.hpp"
#include "taxon/backbone/zoo.hpp"
#include "taxon/io/safetensors.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/csrc/jit/serialization/pickle.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "support/temp_dir.hpp"
#include "support/tensor_compare.hpp"

namespace test_backbone {

namespace fs = std::filesystem;
using taxon::backbone::StateDict;

struct TempDir : taxon::test::TempDir {
  TempDir() : taxon::test::TempDir("taxon_test_backbone") {}
};

inline at::Tensor ln(const at::Tensor& x, const StateDict& sd, const std::string& p, double eps = 1e-5) {
  auto mean = x.mean(-1, true);
  auto var = (x - mean).pow(2).mean(-1, true);
  return (x - mean) / (var + eps).sqrt() * sd.at(p + ".weight") + sd.at(p + ".bias");
}

inline at::Tensor lin(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {}) {
  auto y = at::matmul(x, w.t());
  return b.defined() ? y + b : y;
}

// Multi-head attention written head by head from the fused [q; k; v] projection (independent of the module code).
inline at::Tensor reference_attention(const at::Tensor& x, const at::Tensor& w_in, const at::Tensor& b_in,
                                      const at::Tensor& w_out, const at::Tensor& b_out, int64_t heads) {
  const int64_t width = x.size(-1), hd = width / heads;
  auto qkv = lin(x, w_in, b_in).chunk(3, -1);
  std::vector<at::Tensor> outs;
  for (int64_t h = 0; h < heads; ++h) {
    auto q = qkv[0].narrow(-1, h * hd, hd), k = qkv[1].narrow(-1, h * hd, hd), v = qkv[2].narrow(-1, h * hd, hd);
    auto a = at::softmax(at::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(hd)), -1);
    outs.push_back(at::matmul(a, v));
  }
  return lin(at::cat(outs, -1), w_out, b_out);
}

// CLIP's VisionTransformer.forward (clip/model.py), in float64, from a visual state dict.
inline at::Tensor reference_clip(const StateDict& sd_in, const at::Tensor& images, int64_t patch, int64_t layers,
                                 int64_t heads, bool quick_gelu) {
  StateDict sd;
  for (const auto& [k, v] : sd_in) sd[k] = v.to(at::kDouble);
  auto x = at::conv2d(images.to(at::kDouble), sd.at("conv1.weight"), {}, patch);
  x = x.flatten(2).transpose(1, 2);
  auto cls = sd.at("class_embedding").expand({x.size(0), 1, x.size(2)});
  x = at::cat({cls, x}, 1) + sd.at("positional_embedding");
  x = ln(x, sd, "ln_pre");
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = "transformer.resblocks." + std::to_string(i) + ".";
    auto a = reference_attention(ln(x, sd, p + "ln_1"), sd.at(p + "attn.in_proj_weight"),
                                 sd.at(p + "attn.in_proj_bias"), sd.at(p + "attn.out_proj.weight"),
                                 sd.at(p + "attn.out_proj.bias"), heads);
    if (sd.count(p + "ls_1.gamma")) a = a * sd.at(p + "ls_1.gamma");
    x = x + a;
    auto h = lin(ln(x, sd, p + "ln_2"), sd.at(p + "mlp.c_fc.weight"), sd.at(p + "mlp.c_fc.bias"));
    h = quick_gelu ? h * at::sigmoid(1.702 * h) : 0.5 * h * (1 + at::erf(h / std::sqrt(2.0)));
    h = lin(h, sd.at(p + "mlp.c_proj.weight"), sd.at(p + "mlp.c_proj.bias"));
    if (sd.count(p + "ls_2.gamma")) h = h * sd.at(p + "ls_2.gamma");
    x = x + h;
  }
  return at::matmul(ln(x.select(1, 0), sd, "ln_post"), sd.at("proj"));
}

inline at::Tensor bn_eval(const at::Tensor& x, const StateDict& sd, const std::string& p) {
  return (x - sd.at(p + ".running_mean")) / (sd.at(p + ".running_var") + 2e-5).sqrt() * sd.at(p + ".weight") +
         sd.at(p + ".bias");
}

// UNICOM's VisionTransformer.forward (unicom/vision_transformer.py), eval mode, float64.
inline at::Tensor reference_unicom(const StateDict& sd_in, const at::Tensor& images, int64_t patch, int64_t layers,
                                   int64_t heads) {
  StateDict sd;
  for (const auto& [k, v] : sd_in) sd[k] = v.to(at::kDouble);
  auto x = at::conv2d(images.to(at::kDouble), sd.at("patch_embed.proj.weight"), sd.at("patch_embed.proj.bias"), patch);
  x = x.flatten(2).transpose(1, 2) + sd.at("pos_embed");
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    x = x + reference_attention(ln(x, sd, p + "norm1"), sd.at(p + "attn.qkv.weight"), {},
                                sd.at(p + "attn.proj.weight"), sd.at(p + "attn.proj.bias"), heads);
    auto h = lin(ln(x, sd, p + "norm2"), sd.at(p + "mlp.fc1.weight"), sd.at(p + "mlp.fc1.bias")).clamp(0, 6);
    x = x + lin(h, sd.at(p + "mlp.fc2.weight"), sd.at(p + "mlp.fc2.bias"));
  }
  x = ln(x, sd, "norm").flatten(1);
  x = bn_eval(lin(x, sd.at("feature.0.weight")), sd, "feature.1");
  return bn_eval(lin(x, sd.at("feature.2.weight")), sd, "feature.3");
}

// Random weights for every parameter and buffer, so the test does not depend on the module's initialisation.
inline StateDict random_state(taxon::backbone::VisionTransformer& model, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  StateDict sd;
  for (const auto& [name, t] : taxon::backbone::state_dict(*model)) {
    if (name.find("num_batches_tracked") != std::string::npos) {
      sd[name] = at::full_like(t, 3);
    } else if (name.find("running_var") != std::string::npos) {
      sd[name] = at::rand(t.sizes(), gen) + 0.5;
    } else {
      sd[name] = at::randn(t.sizes(), gen) * 0.2;
    }
  }
  return sd;
}

inline taxon::backbone::VisionTransformerOptions small_clip() {
  return taxon::backbone::VisionTransformerOptions().image_size(32).patch_size(8).width(128).layers(2).heads(2).output_dim(48);
}
inline taxon::backbone::VisionTransformerOptions small_unicom() {
  return small_clip().layout(taxon::backbone::Layout::unicom).activation(taxon::backbone::Activation::relu6);
}

inline StateDict with_prefix(const StateDict& sd, const std::string& prefix) {
  StateDict out;
  for (const auto& [k, v] : sd) out[prefix + k] = v;
  return out;
}

// A TorchScript module tree whose named_parameters() are exactly `dict` (as OpenAI's archives hold them).
inline torch::jit::Module build_jit(const std::string& path, const StateDict& dict) {
  torch::jit::Module m(c10::QualifiedName("__torch__.taxon_test." + path));
  std::map<std::string, StateDict> children;
  for (const auto& [k, v] : dict) {
    const auto dot = k.find('.');
    if (dot == std::string::npos) m.register_parameter(k, v, /*is_buffer=*/false);
    else children[k.substr(0, dot)][k.substr(dot + 1)] = v;
  }
  for (const auto& [name, sub] : children) m.register_module(name, build_jit(path + "_" + name, sub));
  return m;
}

struct Batch {
  at::Tensor images, labels, indices;
};

// A user's own backbone (global-average-pool + linear), to show any module holder plugs into embed().
class PoolNetImpl : public torch::nn::Module {
 public:
  PoolNetImpl() { fc = register_module("fc", torch::nn::Linear(3, 5)); }
  at::Tensor forward(const at::Tensor& x) { return fc->forward(x.mean({2, 3})); }
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(PoolNet);

static_assert(taxon::Backbone<taxon::backbone::VisionTransformer>);
static_assert(taxon::Backbone<PoolNet>);

}  // namespace test_backbone

using namespace taxon::backbone;

TEST_CASE("zoo configs build with the published parameter counts", "[backbone][zoo]") {
  // Counts of the real models' visual towers (CLIP ViT-B/32: 87,849,216 = sum(p.numel() for p in
  // model.visual.parameters()) of the OpenAI model); UNICOM counts follow the layers of deepglint/unicom
  // unicom/unicom/vision_transformer.py.
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"ViT-B/32", 87849216}, {"tiny", 115712}, {"tiny-unicom", 180864}, {"demo32", 816384}, {"demo28", 822912}};
  for (const auto& [name, count] : expected) {
    INFO(name);
    auto model = make_vit(name);
    REQUIRE(parameter_count(*model) == count);
  }
  // Larger towers (fp32 L/14s take GBs and seconds to initialise): count = base + layers * per-block, both measured
  // on one- and two-block builds of the same config.
  const std::vector<std::pair<std::string, int64_t>> large = {
      {"ViT-B/16", 86192640}, {"ViT-L/14", 303966208}, {"ViT-L/14@336px", 304293888}, {"unicom/ViT-B/32", 116723200}};
  for (const auto& [name, count] : large) {
    INFO(name);
    const auto o = zoo_config(name);
    VisionTransformer one(VisionTransformerOptions(o).layers(1));
    VisionTransformer two(VisionTransformerOptions(o).layers(2));
    const int64_t per_block = parameter_count(*two) - parameter_count(*one);
    REQUIRE(parameter_count(*one) + (o.layers() - 1) * per_block == count);
  }
  // UNICOM's big heads (N*dim x dim Linear, up to 604M parameters): the configs match build_model's.
  struct Row {
    const char* name;
    int64_t res, patch, dim, depth, heads, emb;
  };
  for (const Row& r : {Row{"unicom/ViT-B/16", 224, 16, 768, 12, 12, 768}, Row{"unicom/ViT-L/14", 224, 14, 1024, 24, 16, 768},
                       Row{"unicom/ViT-L/14@336px", 336, 14, 1024, 24, 16, 768}}) {
    INFO(r.name);
    const auto o = zoo_config(r.name);
    REQUIRE(o.layout() == Layout::unicom);
    REQUIRE(o.activation() == Activation::relu6);
    REQUIRE(o.image_size() == r.res);
    REQUIRE(o.patch_size() == r.patch);
    REQUIRE(o.width() == r.dim);
    REQUIRE(o.layers() == r.depth);
    REQUIRE(o.heads() == r.heads);
    REQUIRE(o.output_dim() == r.emb);
    REQUIRE(o.drop_path_rate() == 0.1);
  }
  REQUIRE(zoo_names().size() == 12);
  REQUIRE(zoo_config("ViT-L/14@336px").image_size() == 336);
  REQUIRE(zoo_config("unicom/ViT-B/16").output_dim() == 768);
  REQUIRE_TAXON_ERROR(zoo_config("ViT-H/14"), "backbone.unknown-model");
}

TEST_CASE("ViT forward matches an independent reference for both layouts", "[backbone][vit]") {
  using namespace test_backbone;
  const auto images = at::randn({3, 3, 32, 32});
  SECTION("CLIP layout, QuickGELU, LayerScale") {
    VisionTransformer model(small_clip().layer_scale(true));
    const auto sd = random_state(model, 1);
    load_state_dict(*model, sd);
    model->eval();
    const auto out = model->forward(images);
    REQUIRE(out.sizes() == at::IntArrayRef({3, 48}));
    REQUIRE_TENSORS_CLOSE(out, reference_clip(sd, images, 8, 2, 2, true), 1e-4, 1e-4);
  }
  SECTION("CLIP layout, GELU") {
    VisionTransformer model(small_clip().activation(Activation::gelu));
    const auto sd = random_state(model, 2);
    load_state_dict(*model, sd);
    REQUIRE_TENSORS_CLOSE(model->forward(images), reference_clip(sd, images, 8, 2, 2, false), 1e-4, 1e-4);
  }
  SECTION("UNICOM layout in eval mode uses BatchNorm running statistics") {
    VisionTransformer model(small_unicom().drop_path_rate(0.1));
    const auto sd = random_state(model, 3);
    load_state_dict(*model, sd);
    model->eval();
    const auto out = model->forward(images);
    REQUIRE(out.sizes() == at::IntArrayRef({3, 48}));
    REQUIRE_TENSORS_CLOSE(out, reference_unicom(sd, images, 8, 2, 2), 1e-4, 1e-4);
    // Training mode: batch statistics and stochastic depth make the output differ, and gradients flow.
    model->train();
    const auto train_out = model->forward(images);
    REQUIRE_FALSE(at::allclose(train_out, out));
    train_out.sum().backward();
    REQUIRE(model->named_parameters()["blocks.0.attn.qkv.weight"].grad().defined());
  }
  SECTION("fp64 module (dtype follows the parameters)") {
    VisionTransformer model(small_clip());
    const auto sd = random_state(model, 4);
    load_state_dict(*model, sd);
    model->to(at::kDouble);
    REQUIRE(model->forward(images).scalar_type() == at::kDouble);
    REQUIRE_TENSORS_CLOSE(model->forward(images), reference_clip(sd, images, 8, 2, 2, true), 1e-9, 1e-9);
  }
  SECTION("wrong input shape is a clear error") {
    auto model = make_vit("tiny");
    REQUIRE_TAXON_ERROR(model->forward(at::randn({2, 3, 64, 64})), "backbone.bad-input");
    REQUIRE_TAXON_ERROR(model->forward(at::randn({2, 1, 32, 32})), "backbone.bad-input");
  }
}

TEST_CASE("ViT options round-trip through JSON and reject bad configs", "[backbone][vit]") {
  for (const auto& name : zoo_names()) {
    INFO(name);
    const auto o = zoo_config(name);
    const nlohmann::json j = o;
    REQUIRE(j.get<VisionTransformerOptions>() == o);
    REQUIRE(nlohmann::json::parse(j.dump()).get<VisionTransformerOptions>() == o);
  }
  const auto parse = [](const std::string& s) { return nlohmann::json::parse(s).get<VisionTransformerOptions>(); };
  REQUIRE(parse(R"({"width": 256, "heads": 4, "image_size": 64, "patch_size": 16})").width() == 256);
  REQUIRE_TAXON_ERROR(parse(R"({"widht": 256})"), "backbone.bad-config");
  REQUIRE_TAXON_ERROR(parse(R"({"width": 100, "heads": 3})"), "backbone.bad-config");
  REQUIRE_TAXON_ERROR(parse(R"({"image_size": 30, "patch_size": 8})"), "backbone.bad-config");
  REQUIRE_TAXON_ERROR(parse(R"({"activation": "swish"})"), "backbone.bad-config");
  REQUIRE_TAXON_ERROR(parse(R"({"layers": "twelve"})"), "backbone.bad-config");
  REQUIRE_TAXON_ERROR(VisionTransformer(VisionTransformerOptions().image_size(100)), "backbone.bad-config");
}

TEST_CASE("own checkpoint: safetensors with config metadata rebuilds the module alone", "[backbone][checkpoint]") {
  test_backbone::TempDir dir;
  for (const auto& options : {test_backbone::small_clip().layer_scale(true), test_backbone::small_unicom()}) {
    VisionTransformer model(options);
    load_state_dict(*model, test_backbone::random_state(model, 5));
    model->eval();
    save_checkpoint(dir / "vit.safetensors", model, {{"epoch", "3"}});
    const auto file = taxon::io::load_safetensors(dir / "vit.safetensors");
    REQUIRE(file.metadata.at("epoch") == "3");
    REQUIRE(file.metadata.at("taxon.format") == "vit");
    auto back = load_checkpoint(dir / "vit.safetensors");
    back->eval();
    REQUIRE(back->options == options);
    for (const auto& [name, t] : state_dict(*model)) {
      INFO(name);
      REQUIRE(at::equal(state_dict(*back).at(name), t));
    }
    const auto images = at::randn({2, 3, 32, 32});
    REQUIRE(at::equal(back->forward(images), model->forward(images)));
  }
}

TEST_CASE("open_clip-style safetensors (visual.* + text tower, fp16) loads with the inferred config",
          "[backbone][checkpoint]") {
  using namespace test_backbone;
  TempDir dir;
  VisionTransformer reference(small_clip().layer_scale(true).activation(Activation::gelu));
  StateDict sd = random_state(reference, 6);
  for (auto& [k, v] : sd) v = v.to(at::kHalf);  // half-precision checkpoint, cast on load
  load_state_dict(*reference, sd);
  auto full = with_prefix(sd, "visual.");
  full["token_embedding.weight"] = at::randn({10, 16});
  full["text_projection"] = at::randn({16, 48});
  full["logit_scale"] = at::scalar_tensor(4.6);
  taxon::io::save_safetensors(dir / "open_clip_model.safetensors",
                              std::vector<std::pair<std::string, at::Tensor>>(full.begin(), full.end()));
  auto model = load_checkpoint(dir / "open_clip_model.safetensors", InferOptions().activation(Activation::gelu));
  REQUIRE(model->options == reference->options);
  REQUIRE(model->options.layer_scale());
  REQUIRE(model->class_embedding.scalar_type() == at::kFloat);
  const auto images = at::randn({2, 3, 32, 32});
  REQUIRE(at::equal(model->forward(images), reference->forward(images)));
  REQUIRE_TENSORS_CLOSE(model->forward(images), reference_clip(sd, images, 8, 2, 2, false), 1e-4, 1e-4);
}

TEST_CASE("UNICOM-style state dict loads with the inferred config", "[backbone][checkpoint]") {
  using namespace test_backbone;
  TempDir dir;
  VisionTransformer reference(small_unicom());
  StateDict sd = random_state(reference, 7);
  for (auto& [k, v] : sd)
    if (v.is_floating_point()) v = v.to(at::kHalf);  // FP16-ViT-*.pt files are half precision
  load_state_dict(*reference, sd);
  reference->eval();
  const auto inferred = infer_vit_options(sd);
  REQUIRE(inferred.layout() == Layout::unicom);
  REQUIRE(inferred.image_size() == 32);
  REQUIRE(inferred.patch_size() == 8);
  REQUIRE(inferred.width() == 128);
  REQUIRE(inferred.layers() == 2);
  REQUIRE(inferred.heads() == 2);
  REQUIRE(inferred.output_dim() == 48);
  REQUIRE(inferred.activation() == Activation::relu6);
  taxon::io::save_safetensors(dir / "unicom.safetensors", std::vector<std::pair<std::string, at::Tensor>>(sd.begin(), sd.end()));
  auto model = load_checkpoint(dir / "unicom.safetensors");
  model->eval();
  const auto images = at::randn({2, 3, 32, 32});
  REQUIRE(at::equal(model->forward(images), reference->forward(images)));
  REQUIRE_TENSORS_CLOSE(model->forward(images), reference_unicom(sd, images, 8, 2, 2), 1e-4, 1e-4);
  // A DDP-wrapped dict ("module." prefix) loads the same.
  auto ddp = vit_from_state_dict(with_prefix(sd, "module."));
  ddp->eval();
  REQUIRE(at::equal(ddp->forward(images), reference->forward(images)));
}

TEST_CASE("OpenAI CLIP TorchScript archive written from C++ loads and reproduces the forward", "[backbone][checkpoint]") {
  using namespace test_backbone;
  TempDir dir;
  VisionTransformer reference(small_clip());
  StateDict sd = random_state(reference, 8);
  // convert_weights: conv / in_proj / linear / proj weights are fp16 in the released archives.
  for (auto& [k, v] : sd)
    if (k.find("ln_") == std::string::npos && k != "class_embedding" && k != "positional_embedding") v = v.to(at::kHalf);
  load_state_dict(*reference, sd);
  auto full = with_prefix(sd, "visual.");
  full["token_embedding.weight"] = at::randn({10, 16}).to(at::kHalf);
  full["transformer.resblocks.0.attn.in_proj_weight"] = at::randn({48, 16});  // text tower: not counted as visual
  full["logit_scale"] = at::scalar_tensor(4.6);
  build_jit("clip", full).save((dir / "ViT-tiny.pt").string());

  const auto loaded = load_torchscript_state_dict(dir / "ViT-tiny.pt");
  REQUIRE(loaded.count("visual.conv1.weight"));
  REQUIRE(loaded.at("visual.conv1.weight").scalar_type() == at::kHalf);
  auto model = load_openai_clip(dir / "ViT-tiny.pt");
  REQUIRE(model->options == small_clip());  // width 128 -> 2 heads, QuickGELU, 32 px, 2 layers, output 48
  REQUIRE(load_pretrained(dir / "ViT-tiny.pt")->options == small_clip());
  const auto images = at::randn({2, 3, 32, 32});
  REQUIRE(at::equal(model->forward(images), reference->forward(images)));
  REQUIRE_TENSORS_CLOSE(model->forward(images), reference_clip(sd, images, 8, 2, 2, true), 1e-4, 1e-4);

  REQUIRE_TAXON_ERROR(load_openai_clip(dir / "missing.pt"), "io.missing-file");
  taxon::io::write_text_atomically(dir / "garbage.pt", "not a zip archive");
  REQUIRE_TAXON_ERROR(load_openai_clip(dir / "garbage.pt"), "backbone.bad-torchscript");
}

TEST_CASE("torch.save-style .pt state dict (UNICOM FP16-ViT-*.pt) loads through load_pretrained",
          "[backbone][checkpoint]") {
  using namespace test_backbone;
  TempDir dir;
  VisionTransformer reference(small_unicom());
  StateDict sd = random_state(reference, 11);
  c10::Dict<std::string, at::Tensor> dict;
  for (auto& [k, v] : sd) {
    if (v.is_floating_point()) v = v.to(at::kHalf);
    dict.insert(k, v);
  }
  load_state_dict(*reference, sd);
  reference->eval();
  // torch::pickle_save writes the zip format that Python's torch.save writes and torch.load reads.
  c10::impl::GenericDict wrapped(c10::StringType::get(), c10::AnyType::get());
  wrapped.insert("state_dict", dict);
  wrapped.insert("epoch", int64_t{7});
  const auto bytes = torch::jit::pickle_save(wrapped);
  taxon::io::write_text_atomically(dir / "FP16-ViT-tiny.pt", std::string(bytes.begin(), bytes.end()));
  auto model = load_pretrained(dir / "FP16-ViT-tiny.pt");
  model->eval();
  REQUIRE(model->options.layout() == Layout::unicom);
  const auto images = at::randn({2, 3, 32, 32});
  REQUIRE(at::equal(model->forward(images), reference->forward(images)));

  taxon::io::write_text_atomically(dir / "garbage.pt", "not a zip archive");
  REQUIRE_TAXON_ERROR(load_pretrained(dir / "garbage.pt"), "backbone.bad-weights");
  REQUIRE_TAXON_ERROR(load_pretrained(dir / "missing.pt"), "io.missing-file");
  const auto list = torch::jit::pickle_save(c10::IValue(int64_t{3}));
  taxon::io::write_text_atomically(dir / "int.pt", std::string(list.begin(), list.end()));
  REQUIRE_TAXON_ERROR(load_pretrained(dir / "int.pt"), "backbone.bad-weights");
}

TEST_CASE("strict loading lists every problem in one error, non-strict returns them", "[backbone][checkpoint]") {
  using namespace test_backbone;
  VisionTransformer model(small_clip());
  StateDict sd = random_state(model, 9);
  sd.erase("ln_post.weight");
  sd.erase("transformer.resblocks.1.mlp.c_fc.bias");
  sd["extra.weight"] = at::zeros({3});
  sd["proj"] = at::zeros({128, 7});
  try {
    load_state_dict(*model, sd, /*strict=*/true, "ckpt.safetensors");
    FAIL("strict load accepted a mismatching dict");
  } catch (const taxon::Error& e) {
    const std::string msg = e.what();
    INFO(msg);
    REQUIRE(e.id() == "backbone.state-dict-mismatch");
    for (const char* part : {"ckpt.safetensors", "ln_post.weight", "transformer.resblocks.1.mlp.c_fc.bias",
                             "extra.weight", "proj: checkpoint [128, 7] vs module [128, 48]"})
      REQUIRE(msg.find(part) != std::string::npos);
  }
  const auto before = model->proj.clone();
  const auto report = load_state_dict(*model, sd, /*strict=*/false);
  REQUIRE_FALSE(report.ok());
  REQUIRE(report.missing.size() == 2);
  REQUIRE(report.unexpected.size() == 1);
  REQUIRE(report.mismatched.size() == 1);
  REQUIRE(at::equal(model->proj, before));  // mis-shaped: left alone
  REQUIRE(at::equal(model->class_embedding, sd.at("class_embedding")));  // the rest: loaded

  REQUIRE_TAXON_ERROR(infer_vit_options(StateDict{{"foo", at::zeros({1})}}), "backbone.unknown-layout");
  test_backbone::TempDir dir;
  REQUIRE_TAXON_ERROR(load_checkpoint(dir / "none.safetensors"), "io.missing-file");
  // Missing key in a file whose architecture is inferred: one strict error naming the file.
  StateDict partial = random_state(model, 10);
  partial.erase("transformer.resblocks.0.attn.out_proj.weight");
  taxon::io::save_safetensors(dir / "partial.safetensors",
                              std::vector<std::pair<std::string, at::Tensor>>(partial.begin(), partial.end()));
  REQUIRE_TAXON_ERROR(load_checkpoint(dir / "partial.safetensors"), "backbone.state-dict-mismatch");
  // Wrong shape in our own checkpoint.
  save_checkpoint(dir / "own.safetensors", model);
  auto file = taxon::io::load_safetensors(dir / "own.safetensors");
  for (auto& [k, v] : file.tensors)
    if (k == "positional_embedding") v = at::zeros({5, 128});
  taxon::io::save_safetensors(dir / "bad_shape.safetensors", file.tensors, file.metadata);
  REQUIRE_TAXON_ERROR(load_checkpoint(dir / "bad_shape.safetensors"), "backbone.state-dict-mismatch");
  file.metadata["config"] = "{not json";
  taxon::io::save_safetensors(dir / "bad_config.safetensors", file.tensors, file.metadata);
  REQUIRE_TAXON_ERROR(load_checkpoint(dir / "bad_config.safetensors"), "backbone.bad-config");
}

TEST_CASE("embed: batched inference-mode embeddings, normalisation, mode restored", "[backbone][embed]") {
  using namespace test_backbone;
  auto model = make_vit("tiny");
  model->train();
  std::vector<Batch> batches;
  std::vector<at::Tensor> all;
  for (int64_t b : {4, 3, 5}) {
    auto images = at::randn({b, 3, 32, 32});
    all.push_back(images);
    batches.push_back({images, at::zeros({b}, at::kLong), at::arange(b)});
  }
  const auto out = taxon::embed(model, batches, taxon::EmbedOptions().show_progress(false));
  REQUIRE(model->is_training());
  REQUIRE(out.sizes() == at::IntArrayRef({12, 32}));
  REQUIRE(out.scalar_type() == at::kFloat);
  REQUIRE_FALSE(out.is_inference());
  model->eval();
  at::Tensor expected;
  {
    at::NoGradGuard guard;
    expected = model->forward(at::cat(all, 0));
  }
  REQUIRE_TENSORS_CLOSE(out, expected, 1e-5, 1e-5);
  const auto unit = taxon::embed(model, batches, taxon::EmbedOptions().normalize(true).show_progress(false));
  REQUIRE_FALSE(model->is_training());
  REQUIRE_TENSORS_CLOSE(unit.norm(2, {1}), at::ones({12}), 1e-5, 1e-5);
  REQUIRE_TENSORS_CLOSE(unit, expected / expected.norm(2, {1}, true), 1e-5, 1e-5);

  // A single-pass source whose iterator is not a std::input_iterator (non-const operator*), like a loader epoch.
  struct Epoch {
    std::vector<Batch>* batches;
    struct iterator {
      std::vector<Batch>* v;
      size_t i;
      Batch& operator*() { return (*v)[i]; }
      iterator& operator++() {
        ++i;
        return *this;
      }
      bool operator!=(const iterator& o) const { return i != o.i; }
    };
    iterator begin() { return {batches, 0}; }
    iterator end() { return {batches, batches->size()}; }
  };
  const auto from_epoch = taxon::embed(model, Epoch{&batches}, taxon::EmbedOptions().show_progress(false));
  REQUIRE(at::equal(from_epoch, out));

  test_backbone::PoolNet own;
  const auto pooled = taxon::embed(own, std::vector<Batch>{{at::randn({2, 3, 16, 16}), {}, {}}}, taxon::EmbedOptions().show_progress(false));
  REQUIRE(pooled.sizes() == at::IntArrayRef({2, 5}));

  std::vector<Batch> bad = {{at::randn({2, 3, 16, 16}), {}, {}}};
  model->train();
  REQUIRE_TAXON_ERROR(taxon::embed(model, bad, taxon::EmbedOptions().show_progress(false)), "backbone.bad-input");
  REQUIRE(model->is_training());  // restored on error too
  REQUIRE_TAXON_ERROR(taxon::embed(model, std::vector<Batch>{}, taxon::EmbedOptions().show_progress(false)),
                      "backbone.empty-input");
  REQUIRE_TAXON_ERROR(
      taxon::embed(model, batches, taxon::EmbedOptions().device(at::Device(at::kMeta)).show_progress(false)),
      "backbone.device-mismatch");
}
