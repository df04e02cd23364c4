// 00_minimal: the smallest complete taxon training program. A tiny ViT learns an embedding with ArcFace margins
// through a PartialFC head, fed by taxon's multi-threaded Loader and driven by the Trainer (AdamW in two groups,
// OneCycle schedule, checkpoints, resumable); then Recall@1 on held-out images shows what it learnt.
//
//   minimal [--images DIR] [--limit N] [--epochs N] [--run-dir DIR]
//
// Without --images it trains on Fashion-MNIST from Debian's dataset-fashion-mnist package; an image folder has one
// sub-folder of images per class (DIR/<class>/<image>.jpg). Running it again with the same --run-dir resumes.
// Build it against an installed taxon with the CMakeLists.txt next to this file (it needs nothing else).
#include <taxon/taxon.hpp>

#include <charconv>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

using namespace taxon;
namespace fs = std::filesystem;

namespace {

struct Args {
  fs::path images;            // empty: Fashion-MNIST
  std::int64_t limit = 2048;  // training images (0: all)
  std::int64_t epochs = 2;
  fs::path run_dir = "minimal-run";
};

// A whole non-negative number, or an error naming the flag (std::stoll would accept "12abc").
std::int64_t count(const std::string& flag, const std::string& value) {
  std::int64_t n = -1;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  TAXON_CHECK(ec == std::errc() && end == value.data() + value.size() && n >= 0, "cli.bad-option", flag,
              " needs a whole number >= 0, got '", value, "'");
  return n;
}

Args parse_args(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    TAXON_CHECK(i + 1 < argc, "cli.bad-option", flag, " needs a value");
    const std::string value = argv[i + 1];
    if (flag == "--images") args.images = value;
    else if (flag == "--limit") args.limit = count(flag, value);
    else if (flag == "--epochs") args.epochs = count(flag, value);
    else if (flag == "--run-dir") args.run_dir = value;
    else TAXON_FAIL("cli.bad-option", "unknown option ", flag, "; use --images DIR, --limit N, --epochs N, --run-dir DIR");
  }
  return args;
}

// The first `limit` of `indices` (all when limit is 0).
std::vector<std::int64_t> first(std::vector<std::int64_t> indices, std::int64_t limit) {
  if (limit > 0 && limit < static_cast<std::int64_t>(indices.size())) indices.resize(static_cast<std::size_t>(limit));
  return indices;
}

}  // namespace

int main(int argc, char** argv) try {
  const Args args = parse_args(argc, argv);
  configure_threads();

  // A dataset is anything with size(), get(i), labels(i) and taxonomy(); AnyDataset picks one at run time.
  std::shared_ptr<const data::AnyDataset> all;
  data::TransformFn train_transform, eval_transform;
  std::string model;
  if (args.images.empty()) {
    all = std::make_shared<const data::AnyDataset>(
        std::make_shared<const data::IdxDataset>(data::IdxDataset::fashion_mnist(/*train=*/true)));
    const std::vector<double> mean(3, 0.2860), stdev(3, 0.3530);  // Fashion-MNIST pixel statistics
    train_transform = data::small_image(28, mean, stdev, /*flip=*/true);
    eval_transform = data::small_image(28, mean, stdev);
    model = "demo28";  // 28x28 inputs, 7-px patches
  } else {
    all = std::make_shared<const data::AnyDataset>(std::make_shared<const data::ImageFolderDataset>(args.images));
    train_transform = data::clip_train(32, 0.0, {0.5, 1.0});
    eval_transform = data::clip_eval(32);
    model = "tiny";  // 32x32 inputs, 8-px patches
  }
  const std::string rank = all->taxonomy().ranks().front();  // train on the first label column
  const std::int64_t num_classes = all->taxonomy().num_classes(rank);

  // Held-out images are only for the final Recall@1; the encoder never trains on them.
  const data::Split split = data::train_test_split(all->size(), 0.2, /*seed=*/1);
  using Part = data::Subset<data::AnyDataset>;
  auto train_set = std::make_shared<const Part>(all, first(split.train, args.limit));
  auto eval_set = std::make_shared<const Part>(all, first(split.test, 1000));
  data::Loader<Part> loader(train_set, train_transform,
                            data::LoaderOptions().batch_size(64).workers(2).drop_last(true).seed(1));

  auto vit = backbone::make_vit(model);
  // ArcFace (s=32, m=0.25) on PartialFC centres; each step scores the batch's classes plus half of the others.
  pfc::PartialFC<loss::ArcFace, pfc::UniformNegatives> head(
      pfc::PartialFCOptions(num_classes, vit->options.output_dim()), loss::ArcFace(32, 0.25),
      pfc::UniformNegatives(0.5));

  train::Trainer trainer(vit, head,
                         train::TrainerOptions().epochs(args.epochs).steps_per_epoch(loader.batches_per_epoch())
                             .lr(1e-3).lr_pfc_weight(10).label_name(rank).seed(1),
                         train::Schedule::one_cycle(train::OneCycleOptions().pct_start(0.1)));
  if (trainer.resume(args.run_dir / "checkpoints")) std::cout << "resumed at step " << trainer.global_step() << '\n';

  // Recall@1 of held-out images against each other, by their class.
  data::Loader<Part> eval_loader(eval_set, eval_transform, data::LoaderOptions().batch_size(128).shuffle(false));
  const auto recall_at_1 = [&] {
    const at::Tensor embeddings = embed(vit, eval_loader.epoch(0), EmbedOptions().normalize(true).show_progress(false));
    std::vector<std::int64_t> labels;
    for (std::int64_t i = 0; i < eval_set->size(); ++i) labels.push_back(eval_set->labels(i).front());
    return eval::evaluate_retrieval(embeddings, at::tensor(labels)).recall_at(1);
  };
  const double start = recall_at_1();

  // The source gives each epoch's batches; `skip` lets a resumed run leave out what it trained on, undecoded.
  const auto summary = trainer.fit([&](std::int64_t epoch, std::int64_t skip) { return loader.epoch(epoch, skip); },
                                   train::ProgressBar("train"),
                                   train::Checkpointing(args.run_dir / "checkpoints", 0, 1, 1));
  trainer.save_outputs(args.run_dir);  // model.safetensors (with its config), backbone.pt, centroids.npy

  std::cout << "minimal: " << summary.steps << " steps, loss " << summary.last_loss << ", Recall@1 " << start
            << " -> " << recall_at_1() << " on " << eval_set->size() << " held-out images; outputs in "
            << args.run_dir.string() << '\n';
  return 0;
} catch (const std::exception& e) {
  std::cerr << "minimal: " << e.what() << '\n';
  return 1;
}
