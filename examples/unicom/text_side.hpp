#pragma once
// taxon-unicom's use of the text side of CLIP: the text tower of --weights (when it has one) with its tokenizer,
// caption embeddings for clustering, the joint features of --cluster-on, and zero-shot tables.
#include <taxon/cluster/features.hpp>
#include <taxon/core/log.hpp>
#include <taxon/text/clip_pt.hpp>
#include <taxon/text/text.hpp>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "config.hpp"

namespace unicom {

struct TextSide {
  taxon::text::TextTransformer tower{nullptr};
  std::optional<taxon::text::Tokenizer> tokenizer;
  at::Tensor logit_scale;
  bool ready() const { return !tower.is_empty() && tokenizer.has_value(); }

  // `stop_requested`: asked before every batch (Ctrl-C); a stop is text.interrupted.
  at::Tensor embed(const std::vector<std::string>& texts, const std::string& label,
                   std::function<bool()> stop_requested = {}) {
    return taxon::embed_text(tower, *tokenizer, texts, taxon::TextEmbedOptions().show_progress(texts.size() > 256).label(label)
                                                           .stop_requested(std::move(stop_requested)));
  }
};

inline bool needs_text(const Config& c) { return c.cluster_on == "text" || c.cluster_on == "mean" || c.cluster_on == "concat"; }

// The text tower and tokenizer when --weights has a text tower. Clustering on text needs both (errors say what
// is missing); zero-shot alone is skipped with a warning when the vocabulary cannot be found.
inline TextSide load_text_side(const Config& c) {
  TextSide side;
  const bool required = needs_text(c);
  TAXON_CHECK(!required || !c.weights.empty(), "cli.missing-option", "--cluster-on ", c.cluster_on,
              " needs --weights with a CLIP text tower");
  if (c.weights.empty() || (!required && !c.zero_shot)) return side;
  auto clip = taxon::text::load_clip(c.weights);
  TAXON_CHECK(!required || clip.has_text(), "cli.no-text-tower", "--cluster-on ", c.cluster_on, ": ", c.weights,
              " has no text tower");
  if (!clip.has_text()) return side;
  side.tower = clip.text;
  side.logit_scale = clip.logit_scale;
  try {
    side.tokenizer = taxon::text::Tokenizer::from_file(taxon::text::find_vocab(c.vocab, c.weights));
  } catch (const taxon::Error& e) {
    if (required || !c.vocab.empty()) throw;
    taxon::log::warn("zero-shot skipped: ", e.what());
  }
  return side;
}

// Features for k-means in a round: image embeddings, caption embeddings, or their combination.
inline at::Tensor cluster_features(const Config& c, const at::Tensor& image, const at::Tensor& text) {
  if (c.cluster_on == "text") return text;
  if (c.cluster_on == "mean") return taxon::cluster::combine_features({image, text}, taxon::cluster::Combine::mean);
  if (c.cluster_on == "concat") return taxon::cluster::combine_features({image, text}, taxon::cluster::Combine::concat);
  return image;
}

inline taxon::text::ZeroShotTable zero_shot(TextSide& side, const std::string& name, const at::Tensor& images,
                                            const taxon::eval::TaxonomyColumns& cols, const Config& c) {
  auto opts = taxon::text::ZeroShotOptions().model(name).clean_labels(c.clean_labels);
  if (!c.templates.empty()) opts.prompt_sets({{"custom", c.templates}});
  if (!c.group_rank.empty()) opts.taxa_column_name(c.group_rank);
  const taxon::text::TextEncoder encode = [&](const std::vector<std::string>& texts) { return side.embed(texts, "embed prompts"); };
  return taxon::text::evaluate_zero_shot(images, cols, encode, opts);
}

}  // namespace unicom
