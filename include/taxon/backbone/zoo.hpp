#pragma once
// Named ViT configs: OpenAI CLIP's visual towers (openai/CLIP clip/model.py), UNICOM's four (deepglint/unicom
// unicom/unicom/vision_transformer.py build_model), and small configs for tests and CPU demos. Names are
// case-sensitive: "ViT-B/32", "unicom/ViT-B/32", "tiny", "demo32".
#include "taxon/backbone/vit.hpp"
#include "taxon/core/error.hpp"

#include <string>
#include <vector>

namespace taxon::backbone {

namespace zoo_detail {

struct Entry {
  const char* name;
  VisionTransformerOptions options;
};

inline VisionTransformerOptions sized(Layout layout, int64_t res, int64_t patch, int64_t width, int64_t layers,
                                      int64_t out) {
  return VisionTransformerOptions()
      .layout(layout)
      .image_size(res)
      .patch_size(patch)
      .width(width)
      .layers(layers)
      .heads(width / 64)
      .output_dim(out);
}

inline VisionTransformerOptions clip(int64_t res, int64_t patch, int64_t width, int64_t layers, int64_t out) {
  return sized(Layout::clip, res, patch, width, layers, out).activation(Activation::quick_gelu);
}

inline VisionTransformerOptions unicom(int64_t res, int64_t patch, int64_t width, int64_t layers, int64_t out) {
  return sized(Layout::unicom, res, patch, width, layers, out).activation(Activation::relu6).drop_path_rate(0.1);
}

inline const std::vector<Entry>& entries() {
  static const std::vector<Entry> table = {
      {"ViT-B/32", clip(224, 32, 768, 12, 512)},
      {"ViT-B/16", clip(224, 16, 768, 12, 512)},
      {"ViT-L/14", clip(224, 14, 1024, 24, 768)},
      {"ViT-L/14@336px", clip(336, 14, 1024, 24, 768)},
      {"unicom/ViT-B/32", unicom(224, 32, 768, 12, 512)},
      {"unicom/ViT-B/16", unicom(224, 16, 768, 12, 768)},
      {"unicom/ViT-L/14", unicom(224, 14, 1024, 24, 768)},
      {"unicom/ViT-L/14@336px", unicom(336, 14, 1024, 24, 768)},
      // Unit tests: 32 px, 16 patches, two blocks.
      {"tiny", clip(32, 8, 64, 2, 32).heads(2).activation(Activation::gelu)},
      {"tiny-unicom", unicom(32, 8, 64, 2, 32).heads(2).drop_path_rate(0.0)},
      // CPU demo for 32×32 inputs (e.g. Fashion-MNIST padded to 32 and replicated to 3 channels): ~0.8M params.
      {"demo32", clip(32, 4, 128, 4, 64).heads(4).activation(Activation::gelu)},
      // The 2-core CPU demo on native 28×28 Fashion-MNIST: 7-px patches give 16 tokens, ~4x cheaper than demo32.
      {"demo28", clip(28, 7, 128, 4, 64).heads(4).activation(Activation::gelu)},
  };
  return table;
}

}  // namespace zoo_detail

inline std::vector<std::string> zoo_names() {
  std::vector<std::string> names;
  for (const auto& e : zoo_detail::entries()) names.emplace_back(e.name);
  return names;
}

// The options of a named config; an unknown name is an error listing the known ones.
inline VisionTransformerOptions zoo_config(const std::string& name) {
  for (const auto& e : zoo_detail::entries())
    if (name == e.name) return e.options;
  std::string known;
  for (const auto& n : zoo_names()) known += (known.empty() ? "" : ", ") + n;
  TAXON_FAIL("backbone.unknown-model", "unknown ViT config '", name, "'; known: ", known);
}

inline VisionTransformer make_vit(const std::string& name) { return VisionTransformer(zoo_config(name)); }

}  // namespace taxon::backbone
