// taxon-unicom: the UNICOM recipe as one program.
//
//   embed (backbone) -> k-means pseudo-classes -> margin-softmax fine-tuning with PartialFC -> re-embed
//   (repeated --rounds times), with the seeds' taxonomy table, Recall@1 and MAP@R before and after.
//
// Copy this file to start your own trainer. Everything in it is public taxon API; the run directory holds
// config.json, per-round clusters and checkpoints, model.safetensors, centroids.npy, embeddings.npy, labels.npy,
// eval tables (CSV + Markdown), retrieval.json, metrics.jsonl, timings.json and report.html (rewritten after every
// stage and epoch: taxon/report/). `--resume RUN_DIR` continues a stopped run.
//
// `--device auto|cpu|cuda|cuda:N` picks where everything runs. On CUDA the loaders collate uint8 batches (to_chw)
// into pinned memory, the copies are asynchronous and normalisation happens on the GPU; k-means, kNN and the
// taxonomy table run there too, and --amp defaults to bf16. On the CPU the float path is unchanged.
#include <taxon/backbone/torchscript.hpp>  // .pt weights (OpenAI CLIP, UNICOM); not in the umbrella
#include <taxon/taxon.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>

#include "config.hpp"
#include "text_side.hpp"

namespace fs = std::filesystem;
using namespace taxon;
using Dataset = data::AnyDataset;
using UnicomHead = pfc::PartialFC<loss::Combined, pfc::UniformNegatives>;

namespace {

volatile std::sig_atomic_t interrupted = 0;
extern "C" void on_sigint(int) { interrupted = 1; }

// Where the run computes, resolved once from --device and --amp before anything is loaded.
struct Placement {
  DeviceChoice device;
  train::Precision precision = train::Precision::fp32;
  bool cuda() const { return device.is_cuda(); }
};

struct Datasets {
  std::shared_ptr<const Dataset> train, eval;
  data::TransformFn train_transform, eval_transform;
  // On CUDA the transforms end in to_chw() (uint8 batches) and this normalises them on the device; empty on CPU.
  DeviceImageStep device_transform;
  bool small_images = false;  // raw-pixel baseline only makes sense for small images
  std::string group_rank;     // dataset's default for --group-rank
  std::vector<std::string> train_texts;  // --caption-column of each training image (CSV datasets)
};

// The rows of `parent` one side uses: `rows` narrowed by every --train/--eval-filter, then at most `limit` of
// them (a seeded draw; all of them, in order, without a limit).
template <data::Dataset D>
std::vector<int64_t> select_rows(const D& parent, std::vector<int64_t> rows, const std::vector<std::string>& filters,
                                 int64_t limit, uint64_t seed, const char* side) {
  for (const auto& spec : filters) {
    rows = data::filter_rows(parent, data::parse_rank_filter(spec), rows);
    TAXON_CHECK(!rows.empty(), "cli.bad-option", "--", side, "-filter ", spec, " keeps no ", side, " image");
  }
  if (limit <= 0 || limit >= static_cast<int64_t>(rows.size())) return rows;
  const auto n = static_cast<int64_t>(rows.size());
  std::vector<int64_t> kept;
  for (auto k : data::train_test_split(n, 1.0 - static_cast<double>(limit) / n, seed).train)
    kept.push_back(rows[static_cast<size_t>(k)]);
  return kept;
}

std::vector<int64_t> all_rows(int64_t size) {
  std::vector<int64_t> all(static_cast<size_t>(size));
  for (int64_t i = 0; i < size; ++i) all[static_cast<size_t>(i)] = i;
  return all;
}

// `parent` itself when every row is kept (no filter, no limit), else the view of the selected rows.
template <data::Dataset D>
std::shared_ptr<const Dataset> selected(std::shared_ptr<const D> parent, std::vector<int64_t> rows) {
  if (static_cast<int64_t>(rows.size()) == parent->size() && std::is_sorted(rows.begin(), rows.end()))
    return std::make_shared<const Dataset>(parent);
  return std::make_shared<const Dataset>(std::make_shared<const data::Subset<D>>(parent, std::move(rows)));
}

Datasets load_datasets(const unicom::Config& c, const Placement& where) {
  Datasets out;
  const int64_t size = c.image_size;
  if (c.dataset == "fashion-mnist") {
    auto train = std::make_shared<const data::IdxDataset>(data::IdxDataset::fashion_mnist(true));
    auto test = std::make_shared<const data::IdxDataset>(data::IdxDataset::fashion_mnist(false));
    out.train = selected(train, select_rows(*train, all_rows(train->size()), c.train_filter, c.train_limit, c.seed, "train"));
    out.eval = selected(test, select_rows(*test, all_rows(test->size()), c.eval_filter, c.eval_limit, c.seed + 1, "eval"));
    const std::vector<double> mean{0.2860, 0.2860, 0.2860}, stdev{0.3530, 0.3530, 0.3530};  // Fashion-MNIST stats
    if (where.cuda()) {  // grey 28x28 -> uint8 RGB [3,size,size]; normalised on the GPU
      out.eval_transform = data::Compose({data::resize(size, size), data::to_chw(3)});
      out.train_transform = c.augment ? data::Compose({data::random_resized_crop(size, {0.6, 1.0}),
                                                       data::horizontal_flip(), data::to_chw(3)})
                                      : out.eval_transform;
      out.device_transform = data::normalize_on_device(mean, stdev);
    } else {
      out.eval_transform = data::small_image(size, mean, stdev);
      out.train_transform = c.augment ? data::Compose({data::random_resized_crop(size, {0.6, 1.0}),
                                                       data::horizontal_flip(), data::normalize(mean, stdev)})
                                      : data::small_image(size, mean, stdev);
    }
    out.small_images = true;
    if (c.group_rank.empty()) out.group_rank = "group";
    return out;
  }
  std::shared_ptr<const data::ImageFileDataset> all;
  if (c.dataset == "csv") {
    TAXON_CHECK(!c.csv.empty(), "cli.missing-option", "--dataset csv needs --csv FILE");
    TAXON_CHECK(!c.ranks.empty(), "cli.missing-option", "--dataset csv needs at least one --rank RANK=COLUMN");
    std::vector<data::RankSpec> ranks;
    for (const auto& r : c.ranks) ranks.push_back(data::parse_rank_spec(r));
    all = std::make_shared<const data::CsvImageDataset>(data::CsvImageDatasetOptions()
                                                            .sources({{c.csv, c.images.empty() ? fs::path(c.csv).parent_path() : fs::path(c.images), {}}})
                                                            .path_column(c.path_column)
                                                            .ranks(ranks)
                                                            .text_column(c.caption_column)
                                                            .decode_min_side(static_cast<int>(size)));
  } else {
    TAXON_CHECK(!c.images.empty(), "cli.missing-option", "--dataset folder needs --images DIR");
    all = std::make_shared<const data::ImageFolderDataset>(c.images);
  }
  // Held-out images for evaluation; the encoder never trains on them.
  auto split = data::train_test_split(all->size(), c.eval_fraction, c.seed);
  const auto train_rows = select_rows(*all, split.train, c.train_filter, c.train_limit, c.seed, "train");
  if (!c.caption_column.empty())
    for (auto row : train_rows) out.train_texts.push_back(all->text(row));
  out.train = selected(all, train_rows);
  out.eval = selected(all, select_rows(*all, split.test, c.eval_filter, c.eval_limit, c.seed + 1, "eval"));
  if (where.cuda()) {  // clip_eval / clip_train with to_chw() in place of normalize(); normalised on the GPU
    out.eval_transform = data::Compose({data::resize_center_crop(size, size), data::to_chw(3)});
    out.train_transform = c.augment ? data::Compose({data::random_resized_crop(size, {0.5, 1.0}),
                                                     data::horizontal_flip(0.5), data::to_chw(3)})
                                    : out.eval_transform;
    out.device_transform = data::normalize_on_device(data::kClipMean, data::kClipStd);
  } else {
    out.eval_transform = data::clip_eval(size);
    out.train_transform = c.augment ? data::clip_train(size, 0.0, {0.5, 1.0}) : data::clip_eval(size);
  }
  return out;
}

// Without --model the weights' own architecture is used (config metadata, or inferred from shapes); with an
// explicit --model the weights must fit that zoo config exactly, and every mismatched key is reported.
backbone::VisionTransformer load_backbone(const unicom::Config& c) {
  if (c.weights.empty()) return backbone::make_vit(c.model);
  const fs::path w = c.weights;
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

// Training loaders shuffle and drop the last partial batch; embedding loaders keep dataset order and every image.
// For a GPU, batches are collated in pinned memory so their copies to the device are asynchronous.
data::Loader<Dataset> make_loader(std::shared_ptr<const Dataset> d, data::TransformFn t, const unicom::Config& c,
                                  const Placement& where, bool training) {
  return data::Loader<Dataset>(std::move(d), std::move(t),
                               data::LoaderOptions().batch_size(c.batch_size).workers(c.workers).shuffle(training)
                                   .drop_last(training).seed(c.seed).on_error(data::ErrorPolicy::skip)
                                   .pin_memory(where.cuda()));
}

at::Tensor embed_all(backbone::VisionTransformer& model, std::shared_ptr<const Dataset> d, const Datasets& data,
                     const unicom::Config& c, const Placement& where, const std::string& label) {
  const int64_t d_size = d->size();
  auto loader = make_loader(std::move(d), data.eval_transform, c, where, /*training=*/false);
  auto batches = loader.epoch(0);
  return taxon::embed(model, batches,
                      EmbedOptions().label(label).expected_images(d_size).device_transform(data.device_transform));
}

// Flattened preprocessed images: the raw-pixel baseline, and round-0 clustering features from random init.
// uint8 batches (CUDA runs) are normalised here on the CPU, to the same values the float path gives.
at::Tensor pixels(std::shared_ptr<const Dataset> d, const Datasets& data, const unicom::Config& c,
                  const Placement& where) {
  auto loader = make_loader(std::move(d), data.eval_transform, c, where, /*training=*/false);
  std::vector<at::Tensor> rows;
  for (auto& batch : loader.epoch(0))
    rows.push_back((data.device_transform ? data.device_transform(batch.images) : batch.images).flatten(1));
  return at::cat(rows);
}

// The eval set's labels as strings, split into the table's group column and rank columns.
eval::TaxonomyColumns eval_columns(const Dataset& d, const std::string& group_rank) {
  const auto& tax = d.taxonomy();
  eval::TaxonomyColumns cols;
  std::vector<std::vector<std::string>> ranks(tax.num_ranks());
  for (int64_t i = 0; i < d.size(); ++i) {
    const auto ids = d.labels(i);
    for (int64_t r = 0; r < tax.num_ranks(); ++r)
      ranks[r].push_back(ids[r] < 0 ? std::string() : tax.labels(r).name(ids[r]));
  }
  for (int64_t r = 0; r < tax.num_ranks(); ++r) {
    if (tax.ranks()[r] == group_rank) cols.taxa = ranks[r];
    else cols.ranks.emplace_back(tax.ranks()[r], ranks[r]);
  }
  if (cols.taxa.empty()) cols.taxa.assign(static_cast<size_t>(d.size()), "All");
  return cols;
}

struct Report {
  nlohmann::json json = nlohmann::json::object();
  eval::TaxonomyTable table;
};

// The seeds' 4-metric table (raw embeddings, seeded 80/20 split) plus leave-one-out Recall@1 / MAP@R on the
// finest rank, for one set of embeddings.
void evaluate(Report& report, const std::string& name, const at::Tensor& embeddings, const Dataset& d,
              const unicom::Config& c, const Placement& where) {
  const auto cols = eval_columns(d, c.group_rank);
  auto opts = eval::TaxonomyEvalOptions().model(name).seed(c.seed).test_size(0.2).device(where.device.device);
  if (!c.group_rank.empty()) opts.taxa_column_name(c.group_rank);
  else opts.groups({"All"}).include_all(false);  // one group: every row is "All"
  const auto table = eval::TaxonomyEvaluator(opts).evaluate(embeddings, cols);
  report.table.rows.insert(report.table.rows.end(), table.rows.begin(), table.rows.end());

  const auto& [rank, names] = cols.ranks.front();
  const auto encoded = eval::encode_labels(names);
  const auto m = eval::evaluate_retrieval(embeddings, encoded.ids, eval::RetrievalOptions().device(where.device.device));
  report.json[name] = {{"rank", rank},
                       {"precision_at_1", m.precision_at_1},
                       {"recall_at_1", m.recall_at(1)},
                       {"recall_at_5", m.recall_at(5)},
                       {"map_at_r", m.map_at_r},
                       {"r_precision", m.r_precision},
                       {"accuracy_individual_all", table.at("All", rank).accuracy_individual}};
  log::info(name, ": ", rank, " accuracy_individual ", eval::format_percent(table.at("All", rank).accuracy_individual),
            ", Recall@1 ", eval::format_percent(m.recall_at(1)), ", MAP@R ", eval::format_percent(m.map_at_r));
}

// Pseudo-classes against every rank the training images know (the report's purity section).
void record_cluster_quality(const fs::path& dir, const at::Tensor& labels, const Dataset& train) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> known;
  for (const auto& rank : train.taxonomy().ranks()) known.emplace_back(rank, data::rank_labels(train, rank));
  cluster::save_cluster_quality(dir, cluster::measure_cluster_quality(labels, known));
}

// --labels-from ids renumbered 0..K-1 in id order over the classes the training images have, so a --train-filter
// that keeps some classes gives a head of K classes, not one with rows no image trains. Missing labels stay -1.
at::Tensor present_classes(std::vector<int64_t> ids) {
  std::map<int64_t, int64_t> renumber;
  for (auto id : ids)
    if (id >= 0) renumber.emplace(id, 0);
  int64_t next = 0;
  for (auto& [id, compact] : renumber) compact = next++;
  for (auto& id : ids)
    if (id >= 0) id = renumber.at(id);
  return at::tensor(ids, at::kLong);
}

// Training labels for one round: a metadata rank (--labels-from) or k-means pseudo-classes on the embeddings.
at::Tensor round_labels(const fs::path& dir, const at::Tensor& train_embeddings, const Dataset& train,
                        const unicom::Config& c, const Placement& where) {
  if (!c.labels_from.empty()) return present_classes(data::rank_labels(train, c.labels_from));
  if (io::path_exists(dir / "labels.npy")) {  // resumed round
    auto labels = cluster::load_clustering(dir).labels;
    if (!io::path_exists(dir / cluster::ClusterQuality::kFileName)) record_cluster_quality(dir, labels, train);
    return labels;
  }
  auto result = cluster::KMeans(cluster::KMeansOptions()
                                    .k(c.clusters)
                                    .k_fraction(c.clusters > 0 ? 0.0 : c.cluster_ratio)
                                    .niter(c.kmeans_iters)
                                    .spherical(true)
                                    .seed(c.seed)
                                    .device(where.device.device))  // faiss on the CPU, LibTorch on a GPU
                    .fit(l2_normalize_rows(train_embeddings));
  cluster::compact_labels(result);
  cluster::save_clustering(dir, result);
  record_cluster_quality(dir, result.labels, train);
  return result.labels;
}

train::Schedule make_schedule(const unicom::Config& c) {
  if (c.schedule == "cosine") return train::Schedule::cosine_warmup();
  if (c.schedule == "constant") return train::Schedule::constant();
  return train::Schedule::one_cycle();
}

// One cluster+train round; returns false if interrupted (the checkpoint makes it resumable).
bool train_round(backbone::VisionTransformer& model, const fs::path& dir, int round, const at::Tensor& labels,
                 const Datasets& data, const unicom::Config& c, const Placement& where,
                 taxon::report::RunRecorder& recorder) {
  const int64_t num_classes = labels.max().item<int64_t>() + 1;
  const int64_t dim = model->options.output_dim();
  // ArcFace keeps upstream's straight-through gradient; other margin combinations use the exact gradient.
  const bool arcface = c.m1 == 1.0 && c.m3 == 0.0;
  UnicomHead head(pfc::PartialFCOptions(num_classes, dim).num_feat(c.num_feat).seed(c.seed),
            loss::Combined(loss::CombinedOptions(c.scale, c.m1, c.m2, c.m3)
                               .filter(c.filter)
                               .grad_mode(arcface ? loss::GradMode::straight_through : loss::GradMode::exact)),
            pfc::UniformNegatives(c.sample_rate));

  auto options = train::TrainerOptions()
                     .epochs(c.epochs)
                     .lr(c.lr)
                     .lr_pfc_weight(c.lr_pfc_weight)
                     .weight_decay(c.weight_decay)
                     .accumulation(c.accumulation)
                     .clip_grad_norm(c.clip_grad_norm)
                     .precision(where.precision)
                     .device(where.device.device)
                     .device_transform(data.device_transform)
                     .label_name(c.labels_from.empty() ? "cluster" : c.labels_from)
                     .seed(c.seed);
  train::Trainer<backbone::VisionTransformer, UnicomHead> trainer(model, head, options, make_schedule(c));
  if (trainer.resume(dir / "checkpoints")) log::info("resumed ", dir.string(), " at step ", trainer.global_step());

  auto train_set = std::make_shared<const Dataset>(std::make_shared<const data::Relabeled<Dataset>>(data.train, labels));
  auto loader = make_loader(train_set, data.train_transform, c, where, /*training=*/true);
  auto source = [&](int64_t epoch, int64_t skip) { return loader.epoch(epoch, skip); };  // resume skips without decoding

  const auto summary = trainer.fit(source, train::ProgressBar("train " + dir.filename().string()),
                                   train::MetricsLog(fs::path(c.run_dir) / "metrics.jsonl", 10, {{"round", round}}),
                                   train::Checkpointing(dir / "checkpoints", 0, 1, 1), train::StopFlag(&interrupted),
                                   taxon::report::ReportEachEpoch(recorder));
  if (summary.stopped_early) {
    trainer.save_checkpoint(dir / "checkpoints", 1);
    return false;
  }
  trainer.save_outputs(dir);  // model.safetensors (with its config), backbone.pt, centroids.npy
  io::write_text_atomically(dir / "done", "ok\n");
  return true;
}

// The starting point's metrics and table rows, cached in the run directory so a resumed run does not recompute
// them; nullopt when absent, or damaged (then they are computed again).
struct Baselines {
  nlohmann::json metrics;
  std::string table_csv;
  std::string zero_shot_csv;  // empty without a text tower
};
std::optional<Baselines> read_baselines(const fs::path& file) {
  if (!io::path_exists(file)) return std::nullopt;
  const auto parsed = io::parse_json(io::read_file(file));
  const nlohmann::json& j = parsed.value;
  if (parsed && j.is_object() && j.contains("metrics") && j["metrics"].is_object() && j.contains("table") &&
      j["table"].is_string())
    return Baselines{j["metrics"], j["table"].get<std::string>(),
                     j.contains("zero_shot") && j["zero_shot"].is_string() ? j["zero_shot"].get<std::string>() : ""};
  log::warn(file.string(), " is damaged; evaluating the baselines again");
  return std::nullopt;
}

unicom::Config parse(int argc, char** argv) {
  unicom::Config c;
  CLI::App app{"taxon-unicom: embed -> k-means pseudo-classes -> margin-softmax fine-tuning -> evaluate"};
  std::string config_file;
  app.add_option("--config", config_file,
                 "JSON file with any subset of the options below, keys as in a run's config.json (flags override it)");
  unicom::add_options(app, c);
  // Options from a JSON config first, then the command line on top.
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--config") c = unicom::load_config(argv[i + 1]);
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--resume") {
      const fs::path saved = fs::path(argv[i + 1]) / "config.json";
      TAXON_CHECK(io::path_exists(saved), "cli.bad-resume", "--resume ", argv[i + 1], ": no config.json there");
      c = unicom::load_config(saved);
    }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  if (!c.resume.empty()) c.run_dir = c.resume;
  c.model_explicit = app.count("--model") > 0;
  TAXON_CHECK(c.rounds >= 1 && c.epochs >= 1 && c.batch_size >= 1, "cli.bad-option",
              "--rounds, --epochs and --batch-size must be >= 1");
  TAXON_CHECK(!(c.dataset == "fashion-mnist" && app.count("--eval-fraction") > 0), "cli.bad-option",
              "--eval-fraction has no effect with --dataset fashion-mnist, which evaluates on its own 10,000-image "
              "test set; it applies to csv and folder datasets");
  TAXON_CHECK(c.eval_fraction > 0 && c.eval_fraction < 1, "cli.bad-option", "--eval-fraction must be in (0, 1), got ",
              c.eval_fraction);
  return c;
}

// --device and --amp as the run will use them; --device cuda without a usable GPU fails here, before any data
// is read. --amp auto is bf16 on CUDA (as the seeds train) and off on the CPU.
Placement resolve_placement(const unicom::Config& c) {
  Placement where;
  where.device = parse_device(c.device);
  log::info("device: ", where.device.describe());
  const std::string amp = c.amp == "auto" ? (where.cuda() ? "bf16" : "off") : c.amp;
  where.precision = train::precision_from_string(amp);
  TAXON_CHECK(where.precision != train::Precision::fp16 || where.cuda(), "cli.bad-option",
              "--amp fp16 needs a CUDA device but --device ", c.device, " runs on ", where.device.device.str(),
              "; use --amp bf16 or off on the CPU");
  log::info("mixed precision: ", train::to_string(where.precision),
            c.amp == "auto" ? (where.cuda() ? " (--amp auto: bf16 on CUDA)" : " (--amp auto: off on the CPU)") : "");
  return where;
}

int run(unicom::Config c) {
  const Placement where = resolve_placement(c);
  configure_threads(c.threads);
  seed_everything(c.seed);
  const fs::path run_dir = c.run_dir;
  auto config = nlohmann::json(c);
  config[unicom::kResolvedKey] = {{"device", where.device.device.str()},
                        {"device_note", where.device.fallback_reason},
                        {"amp", train::to_string(where.precision)}};
  io::write_text_atomically(run_dir / "config.json", config.dump(2));
  std::signal(SIGINT, on_sigint);
  taxon::report::RunRecorder recorder(run_dir, "load data and model");  // timings.json + report.html at each stage

  const auto data = load_datasets(c, where);
  if (c.group_rank.empty()) c.group_rank = data.group_rank;
  const auto filters = [](const std::vector<std::string>& specs) {
    std::string out;
    for (const auto& f : specs) out += (out.empty() ? " (" : ", ") + f;
    return out.empty() ? out : out + ")";
  };
  log::info("train: ", data.train->size(), " images", filters(c.train_filter), ", eval: ", data.eval->size(), " images",
            filters(c.eval_filter));
  auto model = load_backbone(c);
  if (where.cuda()) model->to(where.device.device);
  auto text_side = unicom::load_text_side(c);
  at::Tensor caption_features;  // the text tower is not trained: caption embeddings serve every round
  if (unicom::needs_text(c)) {
    TAXON_CHECK(c.dataset == "csv" && !c.caption_column.empty(), "cli.missing-option", "--cluster-on ", c.cluster_on,
                " needs --dataset csv with --caption-column COLUMN");
    caption_features = text_side.embed(data.train_texts, "embed captions");
    log::info("clustering on ", c.cluster_on, " of image and caption features (", caption_features.size(1), "-d text)");
  }
  const bool zero_shot = c.zero_shot && text_side.ready();
  Report report;
  const fs::path eval_cache = run_dir / "eval-before.json";

  auto baselines = read_baselines(eval_cache);
  if (!baselines) {  // once per run
    recorder.begin("baseline evaluation");
    if (data.small_images) evaluate(report, "raw-pixels", pixels(data.eval, data, c, where), *data.eval, c, where);
    const auto before = embed_all(model, data.eval, data, c, where, "embed eval");
    evaluate(report, "before", before, *data.eval, c, where);
    const std::string zs =
        zero_shot ? unicom::zero_shot(text_side, "before", before, eval_columns(*data.eval, c.group_rank), c).to_csv() : "";
    baselines = Baselines{report.json, report.table.to_csv(), zs};
    io::write_text_atomically(eval_cache, nlohmann::json{{"metrics", baselines->metrics},
                                                         {"table", baselines->table_csv},
                                                         {"zero_shot", baselines->zero_shot_csv}}.dump(2));
    report.table.write_csv(run_dir / "eval_table.csv");  // the baselines alone until the final evaluation
    io::write_text_atomically(run_dir / "retrieval.json", report.json.dump(2));
  }

  for (int round = 0; round < c.rounds; ++round) {
    const fs::path dir = run_dir / ("round-" + std::to_string(round));
    if (io::path_exists(dir / "done")) {  // finished earlier: continue from its weights
      model = backbone::load_checkpoint(dir / "model.safetensors");
      if (where.cuda()) model->to(where.device.device);
      continue;
    }
    io::ensure_directory(dir);
    recorder.begin("round " + std::to_string(round) + ": " + (c.labels_from.empty() ? "clustering" : "labels"));
    at::Tensor labels;
    if (c.labels_from.empty() && !io::path_exists(dir / "labels.npy"))
      labels = round_labels(dir,
                            round == 0 && c.cluster_on == "pixels"
                                ? pixels(data.train, data, c, where)
                                : unicom::cluster_features(c, c.cluster_on == "text" ? at::Tensor()
                                                              : embed_all(model, data.train, data, c, where, "embed train"),
                                                           caption_features),
                            *data.train, c, where);
    else
      labels = round_labels(dir, at::Tensor(), *data.train, c, where);
    recorder.begin("round " + std::to_string(round) + ": training");
    if (!train_round(model, dir, round, labels, data, c, where, recorder)) {
      recorder.end("interrupted");
      log::warn("interrupted: checkpoint saved; continue with --resume ", run_dir.string());
      return 130;
    }
  }

  // Final outputs where the seeds put them, and the after-training evaluation.
  recorder.begin("final evaluation");
  const fs::path last = run_dir / ("round-" + std::to_string(c.rounds - 1));
  io::copy_file_atomically(last / "model.safetensors", run_dir / "model.safetensors");
  io::copy_file_atomically(last / "centroids.npy", run_dir / "centroids.npy");
  report.json = baselines->metrics;
  report.table = eval::TaxonomyTable{};
  const auto embeddings = embed_all(model, data.eval, data, c, where, "embed eval");
  io::save_npy(run_dir / "embeddings.npy", embeddings);
  std::vector<int64_t> eval_labels;
  for (int64_t i = 0; i < data.eval->size(); ++i) eval_labels.push_back(data.eval->labels(i).front());
  io::save_npy(run_dir / "labels.npy", at::tensor(eval_labels, at::kLong));
  evaluate(report, "after", embeddings, *data.eval, c, where);

  const std::string after_csv = report.table.to_csv();
  const std::string table_csv = baselines->table_csv + after_csv.substr(after_csv.find('\n') + 1);
  io::write_text_atomically(run_dir / "eval_table.csv", table_csv);
  report.table.write_markdown(run_dir / "eval_table_after.md");
  if (zero_shot) {  // zero-shot per rank before and after, and the fine-tuned CLIP (visual trained, text as loaded)
    const auto after = unicom::zero_shot(text_side, "after", embeddings, eval_columns(*data.eval, c.group_rank), c);
    const std::string& before_csv = baselines->zero_shot_csv;
    const std::string csv = before_csv.empty() ? after.to_csv() : before_csv + after.to_csv().substr(after.to_csv().find('\n') + 1);
    io::write_text_atomically(run_dir / "zero_shot.csv", csv);
    after.write_markdown(run_dir / "zero_shot_after.md");
    std::cout << "\nzero-shot (top-1 / top-5 by prompt set, group and rank):\n" << csv;
    text::ClipModel clip;
    clip.visual = model;
    clip.text = text_side.tower;
    clip.logit_scale = text_side.logit_scale;
    text::save_clip_checkpoint(run_dir / "clip.safetensors", clip);
  }
  io::write_text_atomically(run_dir / "retrieval.json", report.json.dump(2));
  std::cout << "\n" << table_csv << "\nretrieval (leave-one-out on the eval set):\n";
  for (auto& [name, m] : report.json.items())
    std::printf("  %-11s accuracy_individual %6.2f%%  Recall@1 %6.2f%%  MAP@R %6.2f%%\n", name.c_str(),
                100 * m["accuracy_individual_all"].get<double>(), 100 * m["recall_at_1"].get<double>(),
                100 * m["map_at_r"].get<double>());
  recorder.end("finished");
  std::cout << "outputs in " << run_dir.string() << "\n";
  std::cout << "report: " << fs::absolute(recorder.report_file()).lexically_normal().string() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const taxon::Error& e) {
    std::cerr << "taxon-unicom: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "taxon-unicom: unexpected error: " << e.what() << "\n";
    return 1;
  }
}
