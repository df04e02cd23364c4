// taxon-embed: images + a model in, embeddings.npy and a CSV naming each row out -- the step before clustering.
//
//   taxon-embed --dataset folder --images DIR --weights ViT-B-32.pt --output runs/clip/embeddings.npy
//   taxon-embed --dataset csv --csv meta.csv --images DIR --path-column fileNameAsDelivered
//               --rank species=scientificName --rank genus=@genus(scientificName) --model ViT-B/32 --weights w.pt
//
// The images and the model are chosen with taxon-unicom's own options (examples/unicom/config.hpp, inputs.hpp).
// Row i of the CSV (path relative to --images, then one column per rank) names row i of the embeddings, so the pair
// goes straight into `taxon-eval --embeddings E.npy --labels E.csv --rank species=species ...`. Embeddings are raw
// (not L2-normalised), as the seeds' embedding step leaves them; --normalize normalises them. An unreadable image
// stops the run with its path (dropping it would shift every later row). Both files are written atomically.
#include <taxon/taxon.hpp>

#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>
#include <string>

#include "../unicom/config.hpp"
#include "../unicom/inputs.hpp"

namespace fs = std::filesystem;
using namespace taxon;

namespace {

// RFC 4180: a field with a comma, quote or line break is quoted, quotes doubled.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

// One line per image: its path (relative to the image root when inside it) and its label at every rank.
std::string ids_csv(const data::ImageFileDataset& d, const fs::path& root) {
  const auto& tax = d.taxonomy();
  std::string out = "path";
  for (const auto& rank : tax.ranks()) out.append(1, ',').append(csv_field(rank));
  out += '\n';
  for (int64_t i = 0; i < d.size(); ++i) {
    const fs::path& p = d.path(i);
    const fs::path rel = root.empty() ? p : p.lexically_relative(root);
    out += csv_field((rel.empty() || *rel.begin() == ".." ? p : rel).generic_string());
    const auto ids = d.labels(i);
    for (int64_t r = 0; r < tax.num_ranks(); ++r) {
      const int64_t id = ids[static_cast<size_t>(r)];
      out.append(1, ',').append(csv_field(id < 0 ? std::string() : tax.labels(r).name(id)));
    }
    out += '\n';
  }
  return out;
}

int run(int argc, char** argv) {
  unicom::Config c;
  c.dataset = "folder";
  c.batch_size = 64;
  std::string output = "embeddings.npy", ids;
  bool normalize = false;
  CLI::App app{"taxon-embed: embed images (a CSV or a folder) with a model into embeddings.npy + a CSV naming each row"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  unicom::add_image_options(app, c, {"csv", "folder"});
  unicom::add_model_options(app, c);
  unicom::add_run_options(app, c);
  app.add_option("--batch-size", c.batch_size, "images per forward pass")->capture_default_str();
  app.add_option("--output", output, "embeddings file ([N, D] float32 .npy)")->capture_default_str();
  app.add_option("--ids", ids, "CSV naming each row: path, then one column per --rank (default: --output with .csv)");
  app.add_flag("--normalize", normalize, "L2-normalise each embedding (the seeds keep them raw)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  c.model_explicit = app.count("--model") > 0;
  TAXON_CHECK(c.batch_size >= 1, "cli.bad-option", "--batch-size must be >= 1, got ", c.batch_size);
  TAXON_CHECK(fs::path(output).extension() == ".npy", "cli.bad-option", "--output ", output, " must end in .npy");
  if (ids.empty()) ids = fs::path(output).replace_extension(".csv").string();
  TAXON_CHECK(fs::absolute(ids) != fs::absolute(output), "cli.bad-option", "--ids and --output are the same file: ", ids);
  if (!c.progress_every.empty()) set_progress_defaults(parse_progress_every(c.progress_every));

  for (const fs::path& out : {fs::path(output), fs::path(ids)})  // an unwritable place fails now, not after embedding
    if (out.has_parent_path()) io::ensure_directory(out.parent_path());

  const auto device = parse_device(c.device);  // --device cuda without a GPU fails here, before any image is read
  log::info("device: ", device.describe());
  configure_threads(c.threads);

  auto model = unicom::load_backbone(c);
  model->to(device.device);
  const int64_t size = model->options.image_size();  // a ViT's position embeddings fix its input size
  TAXON_CHECK(app.count("--image-size") == 0 || c.image_size == size, "cli.bad-option", "--image-size ", c.image_size,
              " does not fit the model, whose input is ", size, " px; drop --image-size");
  const auto images = unicom::open_image_files(c, static_cast<int>(size));
  log::info("plan: embed ", images->size(), " images (", c.dataset == "csv" ? c.csv : c.images, ") with ",
            c.model_explicit || c.weights.empty() ? c.model : c.weights, " (", backbone::parameter_count(*model),
            " parameters, ", model->options.output_dim(), "-d) at ", size, " px, batches of ", c.batch_size, " on ",
            device.device.str(), "; outputs ", fs::absolute(output).lexically_normal().string(), " and ",
            fs::absolute(ids).lexically_normal().string());

  // CLIP preprocessing; on a GPU the uint8 batches are normalised there (as taxon-unicom does).
  const bool cuda = device.is_cuda();
  data::TransformFn transform = cuda ? data::TransformFn(data::Compose({data::resize_center_crop(size, size), data::to_chw(3)}))
                                     : data::TransformFn(data::clip_eval(size));
  data::Loader<data::ImageFileDataset> loader(images, transform,
                                              data::LoaderOptions().batch_size(c.batch_size).workers(c.workers)
                                                  .shuffle(false).drop_last(false).on_error(data::ErrorPolicy::reject)
                                                  .pin_memory(cuda));
  auto batches = loader.epoch(0);
  auto options = EmbedOptions().label("embed").expected_images(images->size()).normalize(normalize);
  if (cuda) options.device_transform(data::normalize_on_device(data::kClipMean, data::kClipStd));
  const at::Tensor embeddings = taxon::embed(model, batches, options);

  io::save_npy(output, embeddings);
  io::write_text_atomically(ids, ids_csv(*images, c.dataset == "csv" && c.images.empty() ? fs::path(c.csv).parent_path() : fs::path(c.images)));
  log::info("done: embeddings ", fs::absolute(output).lexically_normal().string(), " [", embeddings.size(0), ", ",
            embeddings.size(1), "]");
  log::info("done: row names  ", fs::absolute(ids).lexically_normal().string());
  std::cout << "embeddings: " << fs::absolute(output).lexically_normal().string() << " [" << embeddings.size(0) << ", "
            << embeddings.size(1) << "]\nids: " << fs::absolute(ids).lexically_normal().string() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const taxon::Error& e) {
    std::cerr << "taxon-embed: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "taxon-embed: unexpected error: " << e.what() << "\n";
    return 1;
  }
}
