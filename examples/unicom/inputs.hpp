#pragma once
// The images and the model as taxon-unicom's options describe them, shared with taxon-embed (examples/embed),
// which takes the same --dataset/--csv/--images/--path-column/--rank and --model/--weights options.
#include <taxon/backbone/torchscript.hpp>  // .pt weights (OpenAI CLIP, UNICOM); not in the umbrella
#include <taxon/taxon.hpp>

#include <filesystem>
#include <memory>
#include <vector>

#include "config.hpp"

namespace unicom {

// Every image of a csv or folder dataset, in file order (before any split). `decode_min_side` lets JPEGs decode at
// a reduced scale that still covers the model's input.
inline std::shared_ptr<const taxon::data::ImageFileDataset> open_image_files(const Config& c, int decode_min_side) {
  namespace fs = std::filesystem;
  using namespace taxon;
  if (c.dataset == "csv") {
    TAXON_CHECK(!c.csv.empty(), "cli.missing-option", "--dataset csv needs --csv FILE");
    TAXON_CHECK(!c.ranks.empty(), "cli.missing-option", "--dataset csv needs at least one --rank RANK=COLUMN");
    std::vector<data::RankSpec> ranks;
    for (const auto& r : c.ranks) ranks.push_back(data::parse_rank_spec(r));
    return std::make_shared<const data::CsvImageDataset>(data::CsvImageDatasetOptions()
                                                             .sources({{c.csv, c.images.empty() ? fs::path(c.csv).parent_path() : fs::path(c.images), {}}})
                                                             .path_column(c.path_column)
                                                             .ranks(ranks)
                                                             .text_column(c.caption_column)
                                                             .decode_min_side(decode_min_side));
  }
  TAXON_CHECK(!c.images.empty(), "cli.missing-option", "--dataset folder needs --images DIR");
  return std::make_shared<const data::ImageFolderDataset>(c.images);
}

// Without --model the weights' own architecture is used (config metadata, or inferred from shapes); with an
// explicit --model the weights must fit that zoo config exactly, and every mismatched key is reported.
inline taxon::backbone::VisionTransformer load_backbone(const Config& c) {
  using namespace taxon;
  if (c.weights.empty()) return backbone::make_vit(c.model);
  const std::filesystem::path w = c.weights;
  const bool pt = w.extension() == ".pt" || w.extension() == ".pth" || w.extension() == ".bin";
  if (!c.model_explicit) return pt ? backbone::load_pretrained(w) : backbone::load_checkpoint(w);
  backbone::StateDict dict;
  if (pt) {
    dict = backbone::load_pt_state_dict(w);
  } else {
    const auto file = io::load_safetensors(w);
    dict.insert(file.tensors.begin(), file.tensors.end());
  }
  auto model = backbone::make_vit(c.model);
  backbone::load_state_dict(*model, backbone::visual_state_dict(dict), /*strict=*/true, w.string());
  return model;
}

}  // namespace unicom
