#pragma once
// taxon-eval --zero-shot: a CLIP checkpoint's text tower classifies the rows at every rank; image features come
// from --embeddings (that checkpoint's image embeddings) or from the images the CSV lists (--images,
// --path-column), embedded here with the checkpoint's visual tower.
#include <taxon/backbone/embed.hpp>
#include <taxon/data/data.hpp>
#include <taxon/text/clip_pt.hpp>
#include <taxon/text/text.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace taxon_eval {

struct ZeroShotArgs {
  std::string weights, vocab, images, path_column = "path", out;
  std::vector<std::string> templates;
  int64_t batch_size = 64;
  int workers = 2;
  bool clean_labels = true;  // --clean-labels, shared with the seeds' table
};

// Image embeddings of the CSV's rows, in row order (a missing image file is an error: rows must stay aligned).
inline at::Tensor embed_csv_images(taxon::backbone::VisionTransformer& visual, const std::string& csv,
                                   const ZeroShotArgs& a) {
  using namespace taxon;
  auto dataset = std::make_shared<const data::CsvImageDataset>(
      data::CsvImageDatasetOptions()
          .sources({{csv, a.images.empty() ? std::filesystem::path(csv).parent_path() : std::filesystem::path(a.images), {}}})
          .path_column(a.path_column)
          .ranks({data::RankSpec::constant("row", "row")})
          .missing_files(data::MissingFilePolicy::reject));
  data::Loader<data::CsvImageDataset> loader(dataset, data::clip_eval(visual->options.image_size()),
                                             data::LoaderOptions().batch_size(a.batch_size).workers(a.workers));
  auto batches = loader.epoch(0);
  return taxon::embed(visual, batches, EmbedOptions().label("embed images").expected_images(dataset->size()));
}

inline taxon::text::ZeroShotTable run_zero_shot(taxon::text::ClipModel& clip, const at::Tensor& images,
                                                const taxon::eval::TaxonomyColumns& columns, const std::string& model,
                                                const ZeroShotArgs& a) {
  using namespace taxon;
  TAXON_CHECK(clip.has_text(), "cli.no-text-tower", "--zero-shot: ", a.weights, " has no text tower");
  const auto tokenizer = text::Tokenizer::from_file(text::find_vocab(a.vocab, a.weights));
  // The All row and the label cleaning as in the seeds' table above it: the group column is classified as `taxa`.
  auto opts = text::ZeroShotOptions().model(model).clean_labels(a.clean_labels);
  if (!a.templates.empty()) opts.prompt_sets({{"custom", a.templates}});
  const text::TextEncoder encode = [&](const std::vector<std::string>& texts) {
    return embed_text(clip.text, tokenizer, texts);
  };
  return text::evaluate_zero_shot(images, columns, encode, opts);
}

}  // namespace taxon_eval
