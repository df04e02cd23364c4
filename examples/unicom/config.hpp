#pragma once
// Every knob of taxon-unicom in one struct, mirrored 1:1 by the command line (CLI11) and by an optional
// JSON config file, so a run directory's config.json reproduces the run.
#include <taxon/core/error.hpp>
#include <taxon/io/atomic_file.hpp>
#include <taxon/io/json.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace unicom {

struct Config {
  // data
  std::string dataset = "fashion-mnist";  // fashion-mnist | csv | folder
  std::string csv, images, path_column = "fileNameAsDelivered";
  std::vector<std::string> ranks;         // "species=scientificName", "genus=@genus(species)", "taxa==Fish"
  std::string group_rank;                 // rank whose values form the per-group rows of the table
  // "RANK=V1,V2" / "RANK!=V1,V2": which images each side keeps (before the limits), e.g. labels of some classes
  // only for a pretraining stage, and evaluation on the classes it never saw (data/rank_filter.hpp).
  std::vector<std::string> train_filter, eval_filter;
  int64_t train_limit = 0, eval_limit = 0;  // 0 = all samples
  int image_size = 28;
  int workers = 2;
  // backbone
  std::string model = "demo28";
  std::string weights;
  // clustering
  int64_t clusters = 0;
  double cluster_ratio = 0.1;
  // Sweeps: one adaptation per value from the same starting model, each in RUN/ratio-<v>/ or RUN/clusters-<v>/
  // (report/sweep.hpp). Empty for a single value, which runs as before in RUN itself.
  std::vector<double> cluster_ratio_sweep;
  std::vector<int64_t> clusters_sweep;
  int kmeans_iters = 20;
  // spherical: k-means on L2-normalised features (inner product); l2: L2 k-means on the features as they are,
  // what the seeds ran (faiss.Kmeans on the un-normalised mean of unit image and text embeddings).
  std::string kmeans_metric = "spherical";
  uint64_t kmeans_seed = 1234;  // faiss's ClusteringParameters::seed; 1234 is faiss.Kmeans' default
  std::string labels_from;  // train on a metadata rank instead of clusters
  // Clustering features: image (= model) embeddings; raw pixels in round 0 (bootstrap from random init); caption
  // text embeddings; or their mean / concatenation, each part L2-normalised (the seeds' joint features).
  std::string cluster_on = "model";
  std::string caption_column;  // CSV column of captions (text/mean/concat)
  std::string vocab;           // CLIP BPE vocabulary (default: bpe_simple_vocab_16e6.txt.gz next to --weights)
  bool zero_shot = true;       // zero-shot accuracy per rank before/after, when the weights have a text tower
  std::vector<std::string> templates;  // zero-shot prompt templates (default: clip, taxonomic and name sets)
  int rounds = 1;
  // training
  int epochs = 3, batch_size = 128, accumulation = 1;
  double lr = 1e-3, lr_pfc_weight = 10.0, weight_decay = 0.05, clip_grad_norm = 5.0;
  double scale = 32, m1 = 1.0, m2 = 0.3, m3 = 0.0, filter = 0.0, sample_rate = 1.0;
  int64_t num_feat = 0;
  std::string schedule = "onecycle";  // onecycle | cosine | constant
  std::string amp = "auto";           // auto (bf16 on CUDA, off on the CPU) | off | bf16 | fp16
  bool augment = true;
  // run
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  std::string run_dir = "runs/unicom";
  std::string resume;
  uint64_t seed = 0;
  int threads = 0;
  double eval_fraction = 0.2;
  bool clean_labels = true;              // the seeds' label cleaning in the evaluation table and retrieval
  std::string recall_definition = "pml";  // pml | unicom: whether Recall@K excludes or misses lone queries
  std::string dedup = "off";     // off | path | content: drop repeated CSV/folder rows (same file, or same bytes)
  int keep_checkpoints = 2;      // per round; >= 2 keeps one to fall back to when the newest is damaged
  std::string checkpoint_every;  // "" (epoch ends only), "N steps" or "M minutes"
  double dist_timeout = 300;     // seconds any collective (and the rendezvous) may wait in a distributed run
  bool restart = false;          // --restart: discard what the run directory holds and start over (not saved)
  std::string progress_every;  // off a terminal, a progress line every "10s" or "5%" (empty: TAXON_PROGRESS_EVERY or 10 s)
  bool model_explicit = false;  // --model given on the command line: --weights must fit it exactly (not saved)

  // Keys missing from a config file keep their defaults (config.json of runs made before an option existed).
  NLOHMANN_DEFINE_TYPE_INTRUSIVE_WITH_DEFAULT(Config, dataset, csv, images, path_column, ranks, group_rank, train_filter, eval_filter, train_limit,
                                 eval_limit, image_size, workers, model, weights, clusters, cluster_ratio,
                                 cluster_ratio_sweep, clusters_sweep, kmeans_iters, labels_from, cluster_on, caption_column, vocab, zero_shot,
                                 templates, rounds, epochs, batch_size, accumulation, lr,
                                 lr_pfc_weight, weight_decay, clip_grad_norm, scale, m1, m2, m3, filter,
                                 sample_rate, num_feat, schedule, amp, augment, device, run_dir, resume, seed,
                                 threads, eval_fraction, kmeans_metric, kmeans_seed, clean_labels,
                                 recall_definition, dedup, keep_checkpoints, checkpoint_every, progress_every,
                                 dist_timeout)
};

// "0.1,0.01,0.001" -> {0.1, 0.01, 0.001}; every item a number, no item twice.
inline std::vector<double> parse_value_list(const std::string& text, const std::string& option) {
  std::vector<double> values;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    char* end = nullptr;
    const double v = item.empty() ? std::nan("") : std::strtod(item.c_str(), &end);
    TAXON_CHECK(end && *end == '\0' && std::isfinite(v), "cli.bad-option", option, " '", text,
                "': expected a number or a comma-separated list of numbers, '", item, "' is not one");
    TAXON_CHECK(std::find(values.begin(), values.end(), v) == values.end(), "cli.bad-option", option, " '", text,
                "' lists ", item, " twice");
    values.push_back(v);
    start = comma + 1;
  }
  return values;
}

// The images (shared with taxon-embed): which dataset, where its files and labels are, how they are read.
inline void add_image_options(CLI::App& app, Config& c, std::vector<std::string> datasets = {"fashion-mnist", "csv", "folder"}) {
  app.add_option("--dataset", c.dataset, "fashion-mnist (Debian's dataset-fashion-mnist), csv, or folder")
      ->check(CLI::IsMember(datasets))->capture_default_str();
  app.add_option("--csv", c.csv, "metadata CSV (with --dataset csv)");
  app.add_option("--images", c.images, "image root directory (csv: paths are relative to it; folder: one sub-folder per class)");
  app.add_option("--path-column", c.path_column, "CSV column holding the image path")->capture_default_str();
  app.add_option("--rank", c.ranks,
                 "rank=COLUMN for a label rank (repeatable); rank=@genus(OTHER) derives the genus from a binomial; "
                 "rank==VALUE sets a constant");
  app.add_option("--image-size", c.image_size, "input resolution fed to the backbone")->capture_default_str();
  app.add_option("--workers", c.workers, "data loader threads")->capture_default_str();
}

// The starting model (shared with taxon-embed).
inline void add_model_options(CLI::App& app, Config& c) {
  app.add_option("--model", c.model, "backbone zoo name; with --weights, the weights must fit it exactly")->capture_default_str();
  app.add_option("--weights", c.weights, "pretrained weights: OpenAI .pt, open_clip/UNICOM safetensors/.pt, or a taxon checkpoint (architecture from the file unless --model is given)");
}

// Where and how it runs (shared with taxon-embed).
inline void add_run_options(CLI::App& app, Config& c) {
  app.add_option("--device", c.device,
                 "auto (the first GPU when there is one, else the CPU), cpu, cuda or cuda:N; cuda fails at once "
                 "when no GPU can be used")->capture_default_str();
  app.add_option("--threads", c.threads, "intra-op threads (0 = TAXON_NUM_THREADS / all cores)")->capture_default_str();
  app.add_option("--dist-timeout", c.dist_timeout,
                 "under torchrun/srun: seconds a rank waits in a collective (rank 0 clusters and evaluates while the "
                 "others wait) before a silent or dead rank is reported")
      ->capture_default_str();
  app.add_option("--progress-every", c.progress_every,
                 "when output is not a terminal (logs, CI, nohup), a progress line with rate and ETA every this many "
                 "seconds (\"10s\") or percent (\"5%\"); default: $TAXON_PROGRESS_EVERY or 10s");
}

inline void add_options(CLI::App& app, Config& c) {
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // later flags override earlier ones
  add_image_options(app, c);
  app.add_option("--group-rank", c.group_rank, "rank whose values get their own table rows (e.g. taxa), plus All");
  app.add_option("--train-filter", c.train_filter,
                 "train only on images whose RANK is one of the values (RANK=V1,V2,...) or none of them "
                 "(RANK!=V1,V2,...); repeatable, all must hold. Selecting reads the images' labels");
  app.add_option("--eval-filter", c.eval_filter,
                 "evaluate only images whose RANK is (RANK=V1,...) or is not (RANK!=V1,...) one of the values; "
                 "repeatable, all must hold (e.g. the classes a pretraining never saw)");
  app.add_option("--train-limit", c.train_limit, "use at most this many training samples (0 = all)")->capture_default_str();
  app.add_option("--eval-limit", c.eval_limit, "use at most this many evaluation samples (0 = all)")->capture_default_str();
  add_model_options(app, c);
  app.add_option_function<std::string>(
         "--clusters",
         [&c](const std::string& text) {
           std::vector<int64_t> counts;
           for (double v : parse_value_list(text, "--clusters")) {
             TAXON_CHECK(v >= 1 && v == std::floor(v) && v < 9.0e15, "cli.bad-option", "--clusters '", text,
                         "': every value must be a whole number >= 1, got ", v);
             counts.push_back(static_cast<int64_t>(v));
           }
           c.clusters = counts.front();
           c.clusters_sweep = counts.size() > 1 ? counts : std::vector<int64_t>{};
           c.cluster_ratio_sweep.clear();  // a number of clusters overrides every ratio
         },
         "number of pseudo-classes (overrides --cluster-ratio); a comma-separated list sweeps: one adaptation per "
         "value from the same starting model, in RUN_DIR/clusters-N/, compared in RUN_DIR/sweep.csv and report.html");
  app.add_option_function<std::string>(
         "--cluster-ratio",
         [&c](const std::string& text) {
           const auto ratios = parse_value_list(text, "--cluster-ratio");
           for (double r : ratios)
             TAXON_CHECK(r > 0 && r <= 1, "cli.bad-option", "--cluster-ratio '", text, "': every ratio must be in (0, 1], got ", r);
           c.cluster_ratio = ratios.front();
           c.cluster_ratio_sweep = ratios.size() > 1 ? ratios : std::vector<double>{};
         },
         "pseudo-classes as a fraction of the training samples; a comma-separated list (0.1,0.01,0.001) sweeps: one "
         "adaptation per ratio from the same starting model, in RUN_DIR/ratio-R/, compared in RUN_DIR/sweep.csv and "
         "report.html")
      ->default_str("0.1");
  app.add_option("--kmeans-iters", c.kmeans_iters, "k-means iterations")->capture_default_str();
  app.add_option("--kmeans-metric", c.kmeans_metric,
                 "spherical: k-means on L2-normalised features; l2: L2 k-means on the features as they are (the "
                 "seeds' faiss.Kmeans on the un-normalised mean of unit image and text embeddings, --cluster-on mean)")
      ->check(CLI::IsMember({"spherical", "l2"}))->capture_default_str();
  app.add_option("--kmeans-seed", c.kmeans_seed, "faiss's k-means seed (subsample and initial centroids), < 2^31; "
                 "1234 is faiss.Kmeans' default")->capture_default_str();
  app.add_option("--cluster-on", c.cluster_on,
                 "features to cluster: image (= model) embeddings; pixels (round 0 only, a better start than a "
                 "random-init model); text (caption embeddings); mean or concat of L2-normalised image and text")
      ->check(CLI::IsMember({"model", "image", "pixels", "text", "mean", "concat"}))->capture_default_str();
  app.add_option("--caption-column", c.caption_column, "CSV column with a caption (any text) per image, for --cluster-on text|mean|concat");
  app.add_option("--vocab", c.vocab, "CLIP BPE vocabulary bpe_simple_vocab_16e6.txt.gz (default: next to --weights)");
  app.add_option("--zero-shot", c.zero_shot, "zero-shot accuracy per rank before and after training when the weights have a text tower")
      ->capture_default_str();
  app.add_option("--template", c.templates, "zero-shot prompt template, repeatable ({} name, {taxonomic}, {RANK}); replaces the default sets");
  app.add_option("--labels-from", c.labels_from, "train on this metadata rank instead of cluster pseudo-labels");
  app.add_option("--rounds", c.rounds, "cluster+train rounds, re-embedding in between (DeepCluster-style)")->capture_default_str();
  app.add_option("--epochs", c.epochs, "epochs per round")->capture_default_str();
  app.add_option("--batch-size", c.batch_size,
                 "micro-batch size over all ranks (under torchrun each of N ranks loads batch-size / N images)")
      ->capture_default_str();
  app.add_option("--accumulation", c.accumulation, "micro-batches per optimizer step")->capture_default_str();
  app.add_option("--lr", c.lr, "backbone peak learning rate")->capture_default_str();
  app.add_option("--lr-pfc-weight", c.lr_pfc_weight, "head learning rate = lr x this")->capture_default_str();
  app.add_option("--weight-decay", c.weight_decay, "AdamW weight decay")->capture_default_str();
  app.add_option("--clip-grad-norm", c.clip_grad_norm, "clip the gradient norm (0 = off)")->capture_default_str();
  app.add_option("--scale", c.scale, "margin softmax scale s")->capture_default_str();
  app.add_option("--m1", c.m1, "multiplicative angular margin (SphereFace)")->capture_default_str();
  app.add_option("--m2", c.m2, "additive angular margin (ArcFace)")->capture_default_str();
  app.add_option("--m3", c.m3, "additive cosine margin (CosFace)")->capture_default_str();
  app.add_option("--filter", c.filter, "inter-class filtering threshold (0 = off)")->capture_default_str();
  app.add_option("--sample-rate", c.sample_rate, "PartialFC class sampling rate")->capture_default_str();
  app.add_option("--num-feat", c.num_feat, "random feature sub-selection size (0 = off)")->capture_default_str();
  app.add_option("--schedule", c.schedule, "onecycle, cosine or constant")
      ->check(CLI::IsMember({"onecycle", "cosine", "constant"}))->capture_default_str();
  app.add_option("--amp", c.amp, "mixed precision: auto (bf16 on CUDA, off on the CPU), off, bf16 (CPU/CUDA) or "
                 "fp16 (CUDA, with loss scaling)")
      ->check(CLI::IsMember({"auto", "off", "bf16", "fp16"}))->capture_default_str();
  app.add_option("--augment", c.augment, "train-time augmentation (random resized crop + flip)")->capture_default_str();
  add_run_options(app, c);
  app.add_option("--run-dir", c.run_dir, "where checkpoints, tables and embeddings go")->capture_default_str();
  app.add_option("--resume", c.resume, "continue the interrupted run in this directory");
  app.add_option("--seed", c.seed, "seed for splits, clustering, sampling and augmentation")->capture_default_str();
  app.add_option("--clean-labels", c.clean_labels,
                 "the seeds' label cleaning in evaluation: strip whitespace from group values, drop rows whose "
                 "first rank (scientific name) is blank")->capture_default_str();
  app.add_option("--recall-definition", c.recall_definition,
                 "pml: queries with no other sample of their label are excluded from Recall@K; unicom: they count "
                 "as misses (UNICOM's get_metric)")->check(CLI::IsMember({"pml", "unicom"}))->capture_default_str();
  app.add_option("--dedup", c.dedup,
                 "drop repeated images before splitting: off (warn only), path (same file) or content (same bytes; "
                 "reads every file once). Duplicates across the train/eval split make retrieval find itself.")
      ->check(CLI::IsMember({"off", "path", "content"}))->capture_default_str();
  app.add_option("--keep-checkpoints", c.keep_checkpoints,
                 "checkpoints kept per round; a damaged newest one falls back to the previous (>= 1)")
      ->capture_default_str();
  app.add_option("--checkpoint-every", c.checkpoint_every,
                 "also checkpoint mid-epoch: 'N steps' (optimizer steps) or 'M minutes'; a crash then loses at most "
                 "that much (resume skips the trained batches without decoding them)");
  app.add_flag("--restart", c.restart,
               "start over: discard the run directory's checkpoints, rounds, baselines and metrics first");
  app.add_option("--eval-fraction", c.eval_fraction,
                 "share of a csv/folder dataset held out for evaluation, never trained on (fashion-mnist has its own "
                 "test set and rejects this option)")
      ->capture_default_str();
}

// --checkpoint-every: "N steps" (or a bare N) and "M minutes" (also "min", "m"); "" is neither (epoch ends only).
struct CheckpointInterval {
  int64_t steps = 0;
  double minutes = 0;
};
inline CheckpointInterval parse_checkpoint_every(const std::string& text) {
  CheckpointInterval every;
  if (text.empty()) return every;
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  unit.erase(0, unit.find_first_not_of(' '));
  const bool steps = unit.empty() || unit == "steps" || unit == "step";
  const bool minutes = unit == "minutes" || unit == "minute" || unit == "min" || unit == "m";
  TAXON_CHECK(used > 0 && value > 0 && (steps || minutes) && (!steps || value == static_cast<double>(static_cast<int64_t>(value))),
              "cli.bad-option", "--checkpoint-every '", text,
              "' must be a positive number of optimizer steps ('500 steps') or minutes ('30 minutes')");
  if (steps) every.steps = static_cast<int64_t>(value);
  else every.minutes = value;
  return every;
}

// config.json's record of what `auto` settings resolved to; not an option.
inline constexpr const char* kResolvedKey = "resolved";

// Options from a JSON file (a run's config.json, or any subset of its keys written by hand) on top of `base`. Bad
// JSON, an unknown key or a value of another type than the option's is cli.bad-config naming the file and key.
inline Config load_config(const std::filesystem::path& file, const Config& base = {}) {
  const auto parsed = taxon::io::parse_json(taxon::io::read_file(file));
  TAXON_CHECK(parsed, "cli.bad-config", file.string(), ": ", parsed.error);
  const nlohmann::json& j = parsed.value;
  TAXON_CHECK(j.is_object(), "cli.bad-config", file.string(), " must hold a JSON object of options, not ",
              j.type_name());
  nlohmann::json merged = base;
  for (const auto& [key, value] : j.items()) {
    if (key == kResolvedKey) continue;  // what the run resolved (device, amp): a record, resolved again on resume
    TAXON_CHECK(merged.contains(key), "cli.bad-config", file.string(), ": unknown option '", key, "'");
    const nlohmann::json& current = merged[key];
    bool same_kind = current.is_number_integer()
                         ? value.is_number_integer() && (!current.is_number_unsigned() || value >= 0)
                         : current.is_number() ? value.is_number() : value.type() == current.type();
    const bool number_list = key == "cluster_ratio_sweep" || key == "clusters_sweep";  // sweeps list numbers
    if (same_kind && current.is_array())
      for (const auto& item : value)
        same_kind = same_kind && (!number_list                ? item.is_string()
                                  : key == "clusters_sweep"   ? item.is_number_integer() && item >= 1
                                                              : item.is_number());
    TAXON_CHECK(same_kind, "cli.bad-config", file.string(), ": option '", key, "' is ", value.dump(), ", not ",
                current.is_number_unsigned() ? "a non-negative integer"
                : current.is_number_integer() ? "an integer"
                : number_list                 ? "a list of numbers"
                : current.is_array()          ? "a list of strings"
                                              : current.type_name());
    merged[key] = value;
  }
  return merged.get<Config>();
}

}  // namespace unicom
