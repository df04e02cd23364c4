// taxon-unicom: the UNICOM recipe as one program.
//
//   embed (backbone) -> k-means pseudo-classes -> margin-softmax fine-tuning with PartialFC -> re-embed
//   (repeated --rounds times), with the seeds' taxonomy table, Recall@1 and MAP@R before and after.
//
// Copy this file to start your own trainer. Everything in it is public taxon API; the run directory holds
// config.json, per-round clusters and checkpoints, model.safetensors, centroids.npy, embeddings.npy, labels.npy,
// eval tables (CSV + Markdown), retrieval.json, metrics.jsonl, timings.json and report.html (rewritten after every
// stage and epoch: taxon/report/). `--resume RUN_DIR` continues a stopped run. `--cluster-ratio 0.1,0.01,0.001` (or
// `--clusters` with a list) sweeps: one such run directory per value under RUN_DIR, compared in sweep.csv and
// RUN_DIR/report.html (taxon/report/sweep.hpp).
//
// `--device auto|cpu|cuda|cuda:N` picks where everything runs. On CUDA the loaders collate uint8 batches (to_chw)
// into pinned memory, the copies are asynchronous and normalisation happens on the GPU; k-means, kNN and the
// taxonomy table run there too, and --amp defaults to bf16. On the CPU the float path is unchanged.
//
// Under `torchrun --no-python --nproc-per-node N taxon-unicom ...` (or srun) the same command runs as N ranks
// (docs/distributed.md, "Distributed pipeline"): each rank embeds its slice of a set (gathered in dataset order),
// rank 0 clusters (labels broadcast) and evaluates, training is data parallel with PartialFC sharded by class, and
// only rank 0 writes the run directory.
#include <taxon/taxon.hpp>
#include <taxon/dist/process_group.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <set>

#include "config.hpp"
#include "inputs.hpp"
#include "text_side.hpp"

namespace fs = std::filesystem;
using namespace taxon;
using Dataset = data::AnyDataset;
using UnicomHead = pfc::PartialFC<loss::Combined, pfc::UniformNegatives>;

namespace {

volatile std::sig_atomic_t interrupted = 0;
extern "C" void on_sigint(int) { interrupted = 1; }

// Ctrl-C between or inside the stages that do not checkpoint (embedding, clustering, evaluation): their work is
// redone on --resume, so the run just stops; main() turns this into exit 130.
struct Interrupted {
  std::string stage;
};
void stop_if_interrupted(const std::string& stage) {
  if (interrupted) throw Interrupted{stage};
}

// While alive, an Interrupted leaving the run closes the stage it stopped in timings.json and marks the run
// "interrupted" there and in the report (else both would say "running" until the next resume).
class MarkInterruptedRun {
 public:
  explicit MarkInterruptedRun(taxon::report::RunRecorder& recorder)
      : recorder_(recorder), exceptions_(std::uncaught_exceptions()) {}
  ~MarkInterruptedRun() {
    if (interrupted && std::uncaught_exceptions() > exceptions_) recorder_.end("interrupted");
  }
  MarkInterruptedRun(const MarkInterruptedRun&) = delete;
  MarkInterruptedRun& operator=(const MarkInterruptedRun&) = delete;

 private:
  taxon::report::RunRecorder& recorder_;
  int exceptions_;
};

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
  int64_t missing_images = 0;            // rows/files left out because their image file does not exist
  // Positions in the sets as loaded of the images still used: unreadable ones found while embedding are dropped
  // from train/eval (and recorded in skipped_images.json) so embeddings, labels, clusters and tables line up.
  std::vector<int64_t> train_rows, eval_rows;
  // The image file of each position as loaded (empty for datasets without files): named in skipped_images.json.
  std::vector<std::string> train_files, eval_files;
};

enum class Split { train, eval };
constexpr const char* kSkippedFile = data::SkippedImages::kFileName;

const char* split_name(Split split) { return split == Split::train ? "train" : "eval"; }

// Narrows one set (and its positions as loaded, and the training captions) to the images not in `gone`.
void leave_out(Datasets& data, Split split, const std::set<int64_t>& gone) {
  auto& set = split == Split::train ? data.train : data.eval;
  auto& rows = split == Split::train ? data.train_rows : data.eval_rows;
  const bool texts = split == Split::train && !data.train_texts.empty();
  std::vector<int64_t> kept, kept_rows;
  std::vector<std::string> kept_texts;
  for (int64_t i = 0; i < set->size(); ++i) {
    if (gone.count(i)) continue;
    kept.push_back(i);
    kept_rows.push_back(rows[static_cast<size_t>(i)]);
    if (texts) kept_texts.push_back(data.train_texts[static_cast<size_t>(i)]);
  }
  set = std::make_shared<const Dataset>(std::make_shared<const data::Subset<Dataset>>(set, kept));
  rows = std::move(kept_rows);
  if (texts) data.train_texts = std::move(kept_texts);
}

// Leaves `skipped` (positions in the current set, with the loader's message) out of that set from now on, records
// them (position in the set as loaded, file, the stage that found them) in run_dir/skipped_images.json and says so
// in the log.
void drop_skipped(Datasets& data, Split split, const std::vector<std::pair<int64_t, std::string>>& skipped,
                  const std::string& stage, const fs::path& run_dir, bool writes = true) {
  if (skipped.empty()) return;
  if (!writes) {  // another rank records them; this one leaves the same images out
    std::set<int64_t> gone;
    for (const auto& [index, message] : skipped) gone.insert(index);
    leave_out(data, split, gone);
    return;
  }
  const auto& set = split == Split::train ? data.train : data.eval;
  const auto& rows = split == Split::train ? data.train_rows : data.eval_rows;
  const auto& files = split == Split::train ? data.train_files : data.eval_files;
  const char* name = split_name(split);
  std::set<int64_t> gone;
  for (const auto& [index, message] : skipped) gone.insert(index);
  auto record = data::SkippedImages::load(run_dir);
  std::string examples;
  for (const auto& [index, message] : skipped) {
    const int64_t row = rows[static_cast<size_t>(index)];
    record.images.push_back({name, row, files.empty() ? std::string() : files[static_cast<size_t>(row)], stage, message});
    if (examples.size() < 400) examples += "\n  " + message;
  }
  record.save(run_dir);
  log::warn(name, " set: ", skipped.size(), " of ", set->size(), " images are unreadable and left out of embedding, ",
            "labels, clustering and evaluation from now on (all listed in ", (run_dir / kSkippedFile).string(), "):",
            examples);
  leave_out(data, split, gone);
}

// A resumed run leaves out at once the images an earlier attempt found unreadable, so saved labels still line up.
void apply_recorded_skips(Datasets& data, const fs::path& run_dir) {
  const fs::path file = run_dir / kSkippedFile;
  data::SkippedImages recorded;
  try {
    recorded = data::SkippedImages::load(run_dir);
  } catch (const taxon::Error& e) {
    TAXON_FAIL("cli.bad-resume", e.what(), "; delete ", file.string(),
               " to find the unreadable images again, or start over with --restart");
  }
  for (const auto split : {Split::train, Split::eval}) {
    const char* name = split_name(split);
    const auto& rows = split == Split::train ? data.train_rows : data.eval_rows;
    std::set<int64_t> gone;  // positions in the set as loaded; nothing dropped yet in this process, so also current
    for (const auto& s : recorded.images) {
      if (s.split != name) continue;
      TAXON_CHECK(s.row < static_cast<int64_t>(rows.size()), "cli.bad-resume", file.string(), ": row ", s.row,
                  " of '", name, "' is not a row of this run's ", name, " set (", rows.size(),
                  " images); delete the file or start over with --restart");
      gone.insert(s.row);
    }
    if (gone.empty()) continue;
    leave_out(data, split, gone);
    log::info(name, " set: leaving out the ", gone.size(), " unreadable images recorded in ", file.string());
  }
}

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

// Rows of `all` to use: every row, or with --dedup the first of each group of rows naming the same file (path) or
// holding the same bytes (content: size + CRC-32). Repeats are always counted and reported: a repeat that lands on
// both sides of the train/eval split lets retrieval find the image itself.
std::vector<int64_t> unique_rows(const data::ImageFileDataset& all, const unicom::Config& c) {
  std::map<std::string, int64_t> first_path;
  std::map<std::pair<std::uint64_t, std::uint32_t>, int64_t> first_content;
  std::vector<int64_t> rows;
  int64_t same_path = 0, same_content = 0;
  std::string example;
  for (int64_t i = 0; i < all.size(); ++i) {
    const auto& path = all.path(i);
    const auto key = path.lexically_normal().string();
    if (!first_path.emplace(key, i).second) {
      ++same_path;
      if (example.empty()) example = path.string();
      if (c.dedup != "off") continue;
    } else if (c.dedup == "content") {
      if (!first_content.emplace(std::make_pair(io::file_size(path), io::file_crc32(path)), i).second) {
        ++same_content;
        if (example.empty()) example = path.string();
        continue;
      }
    }
    rows.push_back(i);
  }
  if (same_path > 0 || same_content > 0) {
    if (c.dedup == "off")
      log::warn(same_path, " of ", all.size(), " rows repeat an image path (e.g. ", example,
                "); repeats split across train and eval inflate retrieval scores. --dedup path (or content) drops them");
    else
      log::warn("--dedup ", c.dedup, ": dropped ", same_path + same_content, " repeated rows of ", all.size(), " (",
                same_path, " same path, ", same_content, " same content; e.g. ", example, ")");
  }
  return rows;
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
  const auto all = unicom::open_image_files(c, static_cast<int>(size));
  out.missing_images = all->missing_count();
  const auto rows = unique_rows(*all, c);
  // Held-out images for evaluation; the encoder never trains on them.
  auto split = data::train_test_split(static_cast<int64_t>(rows.size()), c.eval_fraction, c.seed);
  for (auto* part : {&split.train, &split.test})
    for (auto& k : *part) k = rows[static_cast<size_t>(k)];
  const auto train_rows = select_rows(*all, split.train, c.train_filter, c.train_limit, c.seed, "train");
  if (!c.caption_column.empty())
    for (auto row : train_rows) out.train_texts.push_back(all->text(row));
  const auto eval_rows = select_rows(*all, split.test, c.eval_filter, c.eval_limit, c.seed + 1, "eval");
  for (auto row : train_rows) out.train_files.push_back(all->path(row).string());
  for (auto row : eval_rows) out.eval_files.push_back(all->path(row).string());
  out.train = selected(all, train_rows);
  out.eval = selected(all, eval_rows);
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

// Empty sets and single-class label ranks fail here, saying what was empty and why, not later in embed or k-means.
void check_not_empty(const Datasets& data, const unicom::Config& c) {
  const std::string source = c.dataset == "csv" ? "the CSV " + c.csv : c.dataset == "folder" ? "the folder " + c.images
                                                                                               : std::string("fashion-mnist");
  const int64_t total = data.train->size() + data.eval->size();
  TAXON_CHECK(total > 0 || data.missing_images == 0, "cli.empty-dataset", source, ": all ", data.missing_images,
              " rows name a missing image file (see the warning above; check --images and --path-column)");
  TAXON_CHECK(total > 0, "cli.empty-dataset", source,
              c.dataset == "csv" ? " has a header but no data rows" : " holds no images", "; nothing to train on");
  TAXON_CHECK(data.train->size() > 0, "cli.empty-dataset", "the training set is empty: ", source, " has ", total,
              " images and --eval-fraction ", c.eval_fraction, " holds them all out for evaluation");
  TAXON_CHECK(data.eval->size() > 0, "cli.empty-dataset", "the evaluation set is empty: ", source, " has ", total,
              " images, too few for --eval-fraction ", c.eval_fraction, " to hold one out");
  if (!c.labels_from.empty()) {
    const auto labels = data::rank_labels(*data.train, c.labels_from);
    std::set<int64_t> classes(labels.begin(), labels.end());
    classes.erase(-1);
    TAXON_CHECK(classes.size() >= 2, "cli.empty-dataset", "--labels-from ", c.labels_from, ": the ",
                data.train->size(), " training images have ", classes.size(),
                " class(es) in that rank; margin-softmax training needs at least 2 to tell apart");
  }
}

// Training loaders shuffle and drop the last partial batch; embedding loaders keep dataset order and every image.
// For a GPU, batches are collated in pinned memory so their copies to the device are asynchronous.
// A training loader of a distributed run reads this rank's slice of each epoch, batch_size / N images per batch.
data::Loader<Dataset> make_loader(std::shared_ptr<const Dataset> d, data::TransformFn t, const unicom::Config& c,
                                  const Placement& where, bool training,
                                  const dist::ProcessGroup& group = dist::ProcessGroup::single()) {
  const int ranks = training ? group.world_size() : 1;
  return data::Loader<Dataset>(std::move(d), std::move(t),
                               data::LoaderOptions().batch_size(c.batch_size / ranks).workers(c.workers).shuffle(training)
                                   .drop_last(training).seed(c.seed).on_error(data::ErrorPolicy::skip)
                                   .pin_memory(where.cuda()).rank(training ? group.rank() : 0).world_size(ranks));
}

// Rank 0's `t` on every rank, through `device` (NCCL groups communicate CUDA tensors only); identity for one process.
at::Tensor from_rank0(dist::ProcessGroup& group, const at::Tensor& t, at::Device device) {
  if (!group.distributed()) return t;
  at::Tensor moved = t.to(device).contiguous();
  group.broadcast_(moved, 0);
  return moved.to(t.device());
}
// Rank 0's decision on every rank: decisions taken from files only rank 0 writes.
bool rank0_says(dist::ProcessGroup& group, bool value, at::Device device) {
  return from_rank0(group, at::full({1}, value ? 1 : 0, at::kLong), device).item<int64_t>() != 0;
}

// Embeddings of the train or eval set; unreadable images are dropped from that set (drop_skipped), so the rows
// line up with it afterwards.
// In a distributed run rank r embeds the contiguous slice class_shard(n, r, N) of the set (upstream's extract_feat
// split) and the slices are gathered in rank order, i.e. dataset order; unreadable images any rank found are left
// out on every rank.
at::Tensor embed_all(backbone::VisionTransformer& model, Datasets& data, Split split, const unicom::Config& c,
                     const Placement& where, const std::string& label, dist::ProcessGroup& group) {
  auto d = split == Split::train ? data.train : data.eval;
  const auto slice = dist::class_shard(d->size(), group.rank(), group.world_size());
  if (group.distributed()) {
    std::vector<int64_t> rows(static_cast<size_t>(slice.num_local));
    std::iota(rows.begin(), rows.end(), slice.class_start);
    d = std::make_shared<const Dataset>(std::make_shared<const data::Subset<Dataset>>(d, std::move(rows)));
  }
  const int64_t d_size = d->size();
  auto loader = make_loader(std::move(d), data.eval_transform, c, where, /*training=*/false);
  at::Tensor embeddings;
  try {
    auto batches = loader.epoch(0);
    embeddings = taxon::embed(model, batches, EmbedOptions().label(label).expected_images(d_size)
                                                  .device_transform(data.device_transform)
                                                  .stop_requested([] { return interrupted != 0; }));
  } catch (const taxon::Error& e) {
    if (e.id() == "backbone.interrupted") throw Interrupted{label};
    throw;
  }
  auto skipped = loader.skipped_samples();
  if (group.distributed()) {
    embeddings = group.all_gather_uneven(embeddings.contiguous());
    std::vector<int64_t> mine;
    for (auto& [index, message] : skipped) mine.push_back(index += slice.class_start);
    const at::Tensor all = group.all_gather_uneven(at::tensor(mine, at::kLong).to(embeddings.device())).cpu();
    std::map<int64_t, std::string> merged(skipped.begin(), skipped.end());
    for (int64_t i = 0; i < all.numel(); ++i)
      merged.emplace(all[i].item<int64_t>(), "unreadable (found by another rank; its log has the error)");
    skipped.assign(merged.begin(), merged.end());
  }
  drop_skipped(data, split, skipped, label, c.run_dir, group.rank() == 0);
  return embeddings;
}

// Flattened preprocessed images: the raw-pixel baseline, and round-0 clustering features from random init.
// uint8 batches (CUDA runs) are normalised here on the CPU, to the same values the float path gives.
at::Tensor pixels(Datasets& data, Split split, const unicom::Config& c, const Placement& where, bool writes = true) {
  auto loader = make_loader(split == Split::train ? data.train : data.eval, data.eval_transform, c, where,
                            /*training=*/false);
  std::vector<at::Tensor> rows;
  for (auto& batch : loader.epoch(0)) {
    stop_if_interrupted("pixel features");
    if (batch.images.numel() == 0) continue;  // every image of the batch was unreadable
    rows.push_back((data.device_transform ? data.device_transform(batch.images) : batch.images).flatten(1));
  }
  TAXON_CHECK(!rows.empty(), "cli.empty-dataset", "pixel features: every image was skipped as missing or unreadable");
  drop_skipped(data, split, loader.skipped_samples(), "pixel features", c.run_dir, writes);
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
  auto opts = eval::TaxonomyEvalOptions().model(name).seed(c.seed).test_size(0.2).clean_labels(c.clean_labels)
                  .device(where.device.device);
  if (!c.group_rank.empty()) opts.taxa_column_name(c.group_rank);
  else opts.groups({"All"}).include_all(false);  // one group: every row is "All"
  const auto table = eval::TaxonomyEvaluator(opts).evaluate(embeddings, cols);
  report.table.rows.insert(report.table.rows.end(), table.rows.begin(), table.rows.end());
  stop_if_interrupted("evaluation (" + name + ")");

  // Leave-one-out retrieval over the rows the table kept (the same label cleaning).
  eval::TaxonomyColumns kept_cols;
  eval::LabelCleaning cleaning;
  at::Tensor kept_embeddings = embeddings;
  if (c.clean_labels) {
    const auto kept = eval::clean_taxonomy_columns(cols, kept_cols, cleaning);
    kept_embeddings = embeddings.index_select(0, at::tensor(kept, at::kLong).to(embeddings.device()));
  }
  const auto& [rank, names] = (c.clean_labels ? kept_cols : cols).ranks.front();
  const auto encoded = eval::encode_labels(names);
  const auto definition = eval::recall_definition_from_string(c.recall_definition);
  const auto m = eval::evaluate_retrieval(kept_embeddings, encoded.ids,
                                          eval::RetrievalOptions().device(where.device.device).recall_definition(definition)
                                              .progress_label("retrieval " + name));
  report.json[name] = {{"rank", rank},
                       {"precision_at_1", m.precision_at_1},
                       {"recall_at_1", m.recall_at(1)},
                       {"recall_at_5", m.recall_at(5)},
                       {"map_at_r", m.map_at_r},
                       {"r_precision", m.r_precision},
                       {"recall_definition", eval::to_string(definition)},
                       {"lone_queries", m.num_lone},
                       {"label_cleaning", {{"applied", table.cleaning.applied}, {"rows_in", table.cleaning.rows_in},
                                           {"rows_dropped", table.cleaning.rows_dropped},
                                           {"taxa_rewritten", table.cleaning.taxa_rewritten}}},
                       {"accuracy_individual_all", table.at("All", rank).accuracy_individual}};
  log::info(name, ": ", rank, " accuracy_individual ", eval::format_percent(table.at("All", rank).accuracy_individual),
            ", Recall@1 ", eval::format_percent(m.recall_at(1)), " (", eval::to_string(definition), " definition: ",
            eval::describe(definition), "; ", m.num_lone, " such queries), MAP@R ", eval::format_percent(m.map_at_r));
}

// Pseudo-classes against every rank the training images know (the report's purity section).
void record_cluster_quality(const fs::path& dir, const at::Tensor& labels, const Dataset& train) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> known;
  for (const auto& rank : train.taxonomy().ranks()) known.emplace_back(rank, data::rank_labels(train, rank));
  cluster::save_cluster_quality(dir, cluster::measure_cluster_quality(labels, known));
}

// A round clustered before taxon measured purity (no cluster_quality.json): measured now from its saved labels,
// when they still line up with the training set.
void backfill_cluster_quality(const fs::path& dir, const at::Tensor& labels, const Dataset& train) {
  if (io::path_exists(dir / cluster::ClusterQuality::kFileName)) return;
  if (labels.size(0) != train.size()) {
    log::warn(dir.string(), ": no ", cluster::ClusterQuality::kFileName, " and its labels.npy has ", labels.size(0),
              " labels for ", train.size(), " training images; the report shows no purity for this round");
    return;
  }
  record_cluster_quality(dir, labels, train);
  log::info(dir.string(), ": measured the purity of its saved pseudo-classes (", cluster::ClusterQuality::kFileName,
            " was missing)");
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
    backfill_cluster_quality(dir, labels, train);
    return labels;
  }
  const bool spherical = c.kmeans_metric != "l2";
  if (!spherical) log::info("k-means: L2 on the features as they are (--kmeans-metric l2, the seeds' faiss.Kmeans)");
  cluster::KMeansResult result;
  try {
    result = cluster::KMeans(cluster::KMeansOptions()
                                 .k(c.clusters)
                                 .k_fraction(c.clusters > 0 ? 0.0 : c.cluster_ratio)
                                 .niter(c.kmeans_iters)
                                 .spherical(spherical)
                                 .seed(c.kmeans_seed)
                                 .device(where.device.device)  // faiss on the CPU, LibTorch on a GPU
                                 .stop_requested([] { return interrupted != 0; }))
                 .fit(spherical ? l2_normalize_rows(train_embeddings) : train_embeddings);
  } catch (const taxon::Error& e) {
    if (e.id() == "cluster.interrupted") throw Interrupted{dir.filename().string() + " clustering (k-means)"};
    throw;
  }
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
                 taxon::report::RunRecorder& recorder, dist::ProcessGroup& group) {
  const int64_t num_classes = labels.max().item<int64_t>() + 1;
  const int64_t dim = model->options.output_dim();
  // ArcFace keeps upstream's straight-through gradient; other margin combinations use the exact gradient.
  const bool arcface = c.m1 == 1.0 && c.m3 == 0.0;
  // Under a launcher the centres are sharded by class across the ranks (upstream's model-parallel PartialFC_V2).
  const auto make_head = [&](const dist::ProcessGroup& ranks) {
    return UnicomHead(pfc::PartialFCOptions(num_classes, dim).num_feat(c.num_feat).seed(c.seed).process_group(ranks),
                      loss::Combined(loss::CombinedOptions(c.scale, c.m1, c.m2, c.m3)
                                         .filter(c.filter)
                                         .grad_mode(arcface ? loss::GradMode::straight_through : loss::GradMode::exact)),
                      pfc::UniformNegatives(c.sample_rate));
  };
  UnicomHead head = make_head(group);
  // Each rank's shard draws its initial centres from its own stream (upstream). Up to 2^28 values the ranks take
  // their rows of what one process draws instead, so the same command trains the same model on any number of ranks
  // (a transient [classes, dim] tensor per rank; beyond that size the ranks keep upstream's per-shard draws).
  if (group.distributed() && num_classes * dim <= (int64_t{1} << 28)) {
    const UnicomHead one = make_head(dist::ProcessGroup::single());
    at::NoGradGuard no_grad;
    head->weight.copy_(one->weight.narrow(0, head->shard().class_start, head->shard().num_local));
  }

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
                     .seed(c.seed)
                     .process_group(group);
  train::Trainer<backbone::VisionTransformer, UnicomHead> trainer(model, head, options, make_schedule(c));
  try {
    if (trainer.resume(dir / "checkpoints")) log::info("resumed ", dir.string(), " at step ", trainer.global_step());
  } catch (const taxon::Error& e) {
    if (e.id() == "train.bad-checkpoint")
      log::error("cannot resume ", dir.string(), "; to start the run over instead, add --restart");
    throw;
  }

  auto train_set = std::make_shared<const Dataset>(std::make_shared<const data::Relabeled<Dataset>>(data.train, labels));
  auto loader = make_loader(train_set, data.train_transform, c, where, /*training=*/true, group);
  auto source = [&](int64_t epoch, int64_t skip) { return loader.epoch(epoch, skip); };  // resume skips without decoding

  const auto every = unicom::parse_checkpoint_every(c.checkpoint_every);
  const auto summary = trainer.fit(source, train::ProgressBar("train " + dir.filename().string()),
                                   train::MetricsLog(fs::path(c.run_dir) / "metrics.jsonl", 10, {{"round", round}}),
                                   train::Checkpointing(dir / "checkpoints", every.steps, 1, c.keep_checkpoints,
                                                        every.minutes),
                                   train::StopFlag(&interrupted),
                                   taxon::report::ReportEachEpoch(recorder));
  if (summary.stopped_early) {
    trainer.save_checkpoint(dir / "checkpoints", c.keep_checkpoints);
    return false;
  }
  trainer.save_outputs(dir);  // model.safetensors (with its config), backbone.pt, centroids.npy
  if (group.rank() == 0) io::write_text_atomically(dir / "done", "ok\n");
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

// What the runs of a sweep share: every value starts from the same model, so round 0 clusters the same features;
// they are computed once (embedding the training images is the expensive part) and kept here.
struct SharedStart {
  at::Tensor round0_features;  // undefined until the first value computes them
};

// The log says up front what the run will do: data sizes, model, stages, clustering and optimizer steps.
void log_plan(const unicom::Config& c, const Datasets& data, backbone::VisionTransformer& model, const Placement& where,
              bool baselines_cached) {
  const int64_t n = data.train->size();
  const int64_t batches = n / c.batch_size;  // training loaders drop the last partial batch
  const int64_t steps = (batches + c.accumulation - 1) / c.accumulation;
  std::string labels = "true labels '" + c.labels_from + "'";
  if (c.labels_from.empty()) {
    const int64_t k = c.clusters > 0 ? c.clusters : std::max<int64_t>(1, std::llround(c.cluster_ratio * static_cast<double>(n)));
    labels = "k-means into " + std::to_string(k) + " pseudo-classes" +
             (c.clusters > 0 ? std::string() : " (ratio " + report::sweep_value_text(c.cluster_ratio) + ")") + " on " +
             (c.cluster_on == "pixels" ? "raw pixels in round 0, " : "") + c.cluster_on + " features, " +
             std::to_string(c.kmeans_iters) + " iterations";
  }
  log::info("plan: ", c.dataset, " dataset, ", n, " training and ", data.eval->size(), " evaluation images; model ",
            c.model_explicit || c.weights.empty() ? c.model : "from " + c.weights, " (",
            backbone::parameter_count(*model), " parameters) at ", c.image_size, " px on ", where.device.device.str());
  log::info("plan: 1. baseline evaluation", baselines_cached ? " (recorded earlier: reused)" : "",
            data.small_images ? " of raw pixels and the starting model" : " of the starting model");
  log::info("plan: 2. ", c.rounds, " round(s) of: embed ", n, " training images, ", labels, ", then ", c.epochs,
            " epoch(s) x ", steps, " optimizer steps (batch ", c.batch_size, ", accumulation ", c.accumulation, ")");
  log::info("plan: 3. final evaluation of ", data.eval->size(), " images; outputs and report.html in ",
            fs::absolute(c.run_dir).lexically_normal().string());
}

// The log ends with where everything is.
void log_outputs(const fs::path& run_dir, const fs::path& report_file) {
  const auto at = [&](const std::string& name) { return fs::absolute(run_dir / name).lexically_normal().string(); };
  log::info("done: run directory ", fs::absolute(run_dir).lexically_normal().string());
  log::info("done: report       ", fs::absolute(report_file).lexically_normal().string());
  log::info("done: model        ", at("model.safetensors"), " (centroids ", at("centroids.npy"), ")");
  log::info("done: metrics      ", at("eval_table.csv"), ", ", at("retrieval.json"), ", training log ", at("metrics.jsonl"));
  log::info("done: embeddings   ", at("embeddings.npy"), " (labels ", at("labels.npy"), ")");
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
  TAXON_CHECK(c.train_limit >= 0, "cli.bad-option", "--train-limit must be >= 0 (0 = all), got ", c.train_limit);
  TAXON_CHECK(c.eval_limit >= 0, "cli.bad-option", "--eval-limit must be >= 0 (0 = all), got ", c.eval_limit);
  TAXON_CHECK(c.threads >= 0, "cli.bad-option", "--threads must be >= 0 (0 = TAXON_NUM_THREADS / all cores), got ",
              c.threads);
  TAXON_CHECK(c.workers >= 0, "cli.bad-option", "--workers must be >= 0, got ", c.workers);
  TAXON_CHECK(c.keep_checkpoints >= 1, "cli.bad-option", "--keep-checkpoints must be >= 1, got ", c.keep_checkpoints);
  unicom::parse_checkpoint_every(c.checkpoint_every);  // checked before any work
  TAXON_CHECK(!(c.restart && !c.resume.empty()), "cli.bad-option",
              "--restart and --resume contradict each other: --restart discards what --resume would continue");
  TAXON_CHECK(!(c.dataset == "fashion-mnist" && app.count("--eval-fraction") > 0), "cli.bad-option",
              "--eval-fraction has no effect with --dataset fashion-mnist, which evaluates on its own 10,000-image "
              "test set; it applies to csv and folder datasets");
  TAXON_CHECK(c.eval_fraction > 0 && c.eval_fraction < 1, "cli.bad-option", "--eval-fraction must be in (0, 1), got ",
              c.eval_fraction);
  TAXON_CHECK(c.kmeans_seed < (uint64_t{1} << 31), "cli.bad-option", "--kmeans-seed is faiss's seed (a C int): it must "
              "be below 2^31, got ", c.kmeans_seed);
  TAXON_CHECK(c.cluster_ratio_sweep.empty() || c.clusters == 0, "cli.bad-option", "--cluster-ratio lists ",
              c.cluster_ratio_sweep.size(), " ratios to sweep, but --clusters ", c.clusters,
              " overrides any ratio; drop --clusters (or give --clusters a list)");
  TAXON_CHECK(c.cluster_ratio_sweep.empty() || c.clusters_sweep.empty(), "cli.bad-option", "sweep one of --cluster-ratio and --clusters, not both");
  TAXON_CHECK((c.cluster_ratio_sweep.empty() && c.clusters_sweep.empty()) || c.labels_from.empty(), "cli.bad-option",
              "a --cluster-ratio/--clusters sweep compares pseudo-class counts, but --labels-from ", c.labels_from,
              " trains on true labels; drop one of them");
  if (!c.progress_every.empty()) set_progress_defaults(parse_progress_every(c.progress_every));
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

// The rows of `features` (one per entry of `rows`) for `wanted`, a subset of `rows` in the same order; an undefined
// tensor stays undefined.
at::Tensor rows_of(const at::Tensor& features, const std::vector<int64_t>& rows, const std::vector<int64_t>& wanted) {
  if (!features.defined() || rows == wanted) return features;
  std::map<int64_t, int64_t> position;
  for (size_t i = 0; i < rows.size(); ++i) position[rows[i]] = static_cast<int64_t>(i);
  std::vector<int64_t> select;
  for (auto r : wanted) select.push_back(position.at(r));
  return features.index_select(0, at::tensor(select, at::kLong));
}

// --restart: what a run directory holds of an earlier run (rounds with their checkpoints, cached baselines, metrics)
// goes, so the run starts over; config.json, the report and timings are rewritten anyway.
void discard_run_state(const fs::path& run_dir) {
  if (!io::path_exists(run_dir)) return;
  int removed = 0;
  for (const auto& name : io::subdirectory_names(run_dir))
    if (name.rfind("round-", 0) == 0) removed += io::remove_path(run_dir / name);
  for (const char* file : {"eval-before.json", "metrics.jsonl", kSkippedFile}) removed += io::remove_path(run_dir / file);
  log::info("--restart: discarded ", removed, " entries of the earlier run in ", run_dir.string());
}

int run_single(unicom::Config c, dist::ProcessGroup& group, SharedStart* shared = nullptr) {
  const Placement where = resolve_placement(c);
  configure_threads(c.threads);
  seed_everything(c.seed);
  const fs::path run_dir = c.run_dir;
  const bool writer = group.rank() == 0;  // the one process that writes the run directory
  if (c.restart && writer) discard_run_state(run_dir);
  if (io::path_exists(run_dir) && writer) {  // temporaries of an attempt killed mid-write (kill -9, power loss)
    int stale = io::remove_stale_temporaries(run_dir);
    for (const auto& name : io::subdirectory_names(run_dir))
      if (name.rfind("round-", 0) == 0) {
        stale += io::remove_stale_temporaries(run_dir / name);
        if (io::path_exists(run_dir / name / "checkpoints")) stale += io::remove_stale_temporaries(run_dir / name / "checkpoints");
      }
    if (stale > 0) log::info("removed ", stale, " temporary files of an earlier attempt that was killed mid-write");
  }
  auto config = nlohmann::json(c);
  config[unicom::kResolvedKey] = {{"device", where.device.device.str()},
                        {"device_note", where.device.fallback_reason},
                        {"amp", train::to_string(where.precision)}};
  if (writer) io::write_text_atomically(run_dir / "config.json", io::dump_json(config, 2));
  if (group.distributed()) group.barrier();  // the others read the run directory once rank 0 has cleaned it
  std::signal(SIGINT, on_sigint);
  // timings.json + report.html at each stage
  taxon::report::RunRecorder recorder(run_dir, "load data and model", {}, writer);
  MarkInterruptedRun mark_interrupted(recorder);

  auto data = load_datasets(c, where);
  check_not_empty(data, c);
  for (int64_t i = 0; i < data.train->size(); ++i) data.train_rows.push_back(i);
  for (int64_t i = 0; i < data.eval->size(); ++i) data.eval_rows.push_back(i);
  apply_recorded_skips(data, run_dir);
  if (c.group_rank.empty()) c.group_rank = data.group_rank;
  const auto filters = [](const std::vector<std::string>& specs) {
    std::string out;
    for (const auto& f : specs) out += (out.empty() ? " (" : ", ") + f;
    return out.empty() ? out : out + ")";
  };
  log::info("train: ", data.train->size(), " images", filters(c.train_filter), ", eval: ", data.eval->size(), " images",
            filters(c.eval_filter));
  auto model = unicom::load_backbone(c);
  if (where.cuda()) model->to(where.device.device);
  auto text_side = unicom::load_text_side(c);
  at::Tensor caption_features;
  std::vector<int64_t> caption_rows;  // data.train_rows when the captions were embedded  // the text tower is not trained: caption embeddings serve every round
  if (unicom::needs_text(c)) {
    TAXON_CHECK(c.dataset == "csv" && !c.caption_column.empty(), "cli.missing-option", "--cluster-on ", c.cluster_on,
                " needs --dataset csv with --caption-column COLUMN");
    try {
      caption_features = text_side.embed(data.train_texts, "embed captions", [] { return interrupted != 0; });
    } catch (const taxon::Error& e) {
      if (e.id() == "text.interrupted") throw Interrupted{"embed captions"};
      throw;
    }
    caption_rows = data.train_rows;
    log::info("clustering on ", c.cluster_on, " of image and caption features (", caption_features.size(1), "-d text)");
  }
  const bool zero_shot = c.zero_shot && text_side.ready();
  Report report;
  const fs::path eval_cache = run_dir / "eval-before.json";

  auto baselines = writer ? read_baselines(eval_cache) : std::nullopt;
  log_plan(c, data, model, where, baselines.has_value());
  if (!rank0_says(group, baselines.has_value(), where.device.device)) {  // once per run
    recorder.begin("baseline evaluation");
    // Every rank computes the features (either step may leave unreadable images out of the set); rank 0 evaluates.
    const at::Tensor raw = data.small_images ? pixels(data, Split::eval, c, where, writer) : at::Tensor();
    const auto before = embed_all(model, data, Split::eval, c, where, "embed eval", group);
    stop_if_interrupted("baseline evaluation");
    if (writer) {
      if (raw.defined()) evaluate(report, "raw-pixels", raw, *data.eval, c, where);
      evaluate(report, "before", before, *data.eval, c, where);
      const std::string zs =
          zero_shot ? unicom::zero_shot(text_side, "before", before, eval_columns(*data.eval, c.group_rank), c).to_csv() : "";
      baselines = Baselines{report.json, report.table.to_csv(), zs};
      io::write_text_atomically(eval_cache, io::dump_json(nlohmann::json{{"metrics", baselines->metrics},
                                                           {"table", baselines->table_csv},
                                                           {"zero_shot", baselines->zero_shot_csv}}, 2));
      report.table.write_csv(run_dir / "eval_table.csv");  // the baselines alone until the final evaluation
      io::write_text_atomically(run_dir / "retrieval.json", io::dump_json(report.json, 2));
    }
  }

  for (int round = 0; round < c.rounds; ++round) {
    const fs::path dir = run_dir / ("round-" + std::to_string(round));
    if (rank0_says(group, io::path_exists(dir / "done"), where.device.device)) {  // finished earlier: continue from its weights
      if (writer && c.labels_from.empty() && io::path_exists(dir / "labels.npy"))
        backfill_cluster_quality(dir, cluster::load_clustering(dir).labels, *data.train);
      model = backbone::load_checkpoint(dir / "model.safetensors");
      if (where.cuda()) model->to(where.device.device);
      continue;
    }
    if (writer) io::ensure_directory(dir);
    recorder.begin("round " + std::to_string(round) + ": " + (c.labels_from.empty() ? "clustering" : "labels"));
    // Labels come from rank 0 (k-means there, or its labels.npy of an interrupted attempt) and are broadcast.
    const auto labels_on_rank0 = [&](const at::Tensor& features) {
      const at::Tensor labels = writer ? round_labels(dir, features, *data.train, c, where).to(at::kCPU, at::kLong)
                                       : at::empty({data.train->size()}, at::kLong);
      return from_rank0(group, labels, where.device.device);
    };
    at::Tensor labels;
    if (rank0_says(group, c.labels_from.empty() && !io::path_exists(dir / "labels.npy"), where.device.device)) {
      // Features first: embedding may drop unreadable images from data.train, which the labels must then match.
      const auto features = [&]() -> at::Tensor {
        if (round == 0 && c.cluster_on == "pixels") return pixels(data, Split::train, c, where, writer);
        const at::Tensor image =
            c.cluster_on == "text" ? at::Tensor() : embed_all(model, data, Split::train, c, where, "embed train", group);
        return unicom::cluster_features(c, image, rows_of(caption_features, caption_rows, data.train_rows));
      };
      // A sweep: the starting model's features are computed by the first value only, unless that value's embedding
      // skipped unreadable images (then the rows differ, and this value embeds again, skipping the same images).
      const bool reuse = round == 0 && shared && shared->round0_features.defined() &&
                         shared->round0_features.size(0) == data.train->size();
      if (reuse) {
        log::info("round 0: clustering the starting model's features computed for an earlier value of the sweep");
        labels = labels_on_rank0(shared->round0_features);
      } else {
        const at::Tensor f = features();
        if (round == 0 && shared && !shared->round0_features.defined()) shared->round0_features = f;
        labels = labels_on_rank0(f);
      }
    } else
      labels = labels_on_rank0(at::Tensor());
    stop_if_interrupted("round " + std::to_string(round) + " clustering");
    recorder.begin("round " + std::to_string(round) + ": training");
    if (!train_round(model, dir, round, labels, data, c, where, recorder, group)) {
      recorder.end("interrupted");
      log::warn("interrupted: checkpoint saved; continue with --resume ", run_dir.string());
      return 130;
    }
  }

  // Final outputs where the seeds put them, and the after-training evaluation.
  recorder.begin("final evaluation");
  const fs::path last = run_dir / ("round-" + std::to_string(c.rounds - 1));
  const auto embeddings = embed_all(model, data, Split::eval, c, where, "embed eval", group);
  stop_if_interrupted("final evaluation");
  if (!writer) {
    log::info("rank ", group.rank(), ": done; rank 0 evaluates and writes the outputs");
    return 0;
  }
  io::copy_file_atomically(last / "model.safetensors", run_dir / "model.safetensors");
  io::copy_file_atomically(last / "centroids.npy", run_dir / "centroids.npy");
  report.json = baselines->metrics;
  report.table = eval::TaxonomyTable{};
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
  io::write_text_atomically(run_dir / "retrieval.json", io::dump_json(report.json, 2));
  std::cout << "\n" << table_csv << "\nretrieval (leave-one-out on the eval set; Recall@K definition " << c.recall_definition
            << ": " << eval::describe(eval::recall_definition_from_string(c.recall_definition)) << "):\n";
  for (auto& [name, m] : report.json.items())
    std::printf("  %-11s accuracy_individual %6.2f%%  Recall@1 %6.2f%%  MAP@R %6.2f%%\n", name.c_str(),
                100 * m["accuracy_individual_all"].get<double>(), 100 * m["recall_at_1"].get<double>(),
                100 * m["map_at_r"].get<double>());
  recorder.end("finished");
  log_outputs(run_dir, recorder.report_file());
  std::cout << "outputs in " << run_dir.string() << "\n";
  std::cout << "report: " << fs::absolute(recorder.report_file()).lexically_normal().string() << "\n";
  return 0;
}

// --cluster-ratio A,B,C (or --clusters A,B,C): one run per value in RUN/ratio-A/ ..., each from the same starting
// model (baselines and round-0 features computed once), then RUN/sweep.csv and RUN/report.html compare them. A
// resumed sweep (--resume RUN) skips the values that finished and resumes the one that was interrupted.
int run_sweep(const unicom::Config& c, dist::ProcessGroup& group) {
  const fs::path run_dir = c.run_dir;
  report::Sweep sweep;
  sweep.parameter = c.clusters_sweep.empty() ? report::SweepParameter::cluster_ratio : report::SweepParameter::clusters;
  std::vector<double> values(c.cluster_ratio_sweep.begin(), c.cluster_ratio_sweep.end());
  for (auto k : c.clusters_sweep) values.push_back(static_cast<double>(k));
  for (double v : values) sweep.points.push_back({v, run_dir / report::sweep_dir_name(sweep.parameter, v)});
  io::write_text_atomically(run_dir / "config.json", nlohmann::json(c).dump(2));
  std::string listed;
  for (const auto& p : sweep.points) listed += (listed.empty() ? "" : ", ") + p.dir.filename().string();
  log::info("sweep: ", values.size(), " adaptations over ", report::to_string(sweep.parameter), " from the same starting model: ",
            listed, " (in ", fs::absolute(run_dir).lexically_normal().string(), ")");

  SharedStart shared;
  const fs::path baselines = run_dir / "eval-before.json";  // the starting point's evaluation, shared by every value
  for (size_t i = 0; i < sweep.points.size(); ++i) {
    const auto& point = sweep.points[i];
    const std::string name = point.dir.filename().string();
    if (io::path_exists(point.dir) && report::read_run(point.dir).finished()) {
      log::info("sweep ", i + 1, "/", values.size(), ": ", name, " finished earlier; not redone");
      continue;
    }
    unicom::Config one = c;
    one.cluster_ratio_sweep.clear();
    one.clusters_sweep.clear();
    if (sweep.parameter == report::SweepParameter::clusters) one.clusters = static_cast<int64_t>(point.value);
    else one.cluster_ratio = point.value, one.clusters = 0;
    one.run_dir = point.dir.string();
    one.resume.clear();
    log::info("sweep ", i + 1, "/", values.size(), ": ", name);
    io::ensure_directory(point.dir);
    if (io::path_exists(baselines) && !io::path_exists(point.dir / "eval-before.json"))
      io::copy_file_atomically(baselines, point.dir / "eval-before.json");
    const int rc = run_single(one, group, &shared);
    if (rc != 0) {
      log::warn("sweep stopped at ", name, "; continue it with --resume ", run_dir.string());
      return rc;
    }
    if (!io::path_exists(baselines)) io::copy_file_atomically(point.dir / "eval-before.json", baselines);
    report::write_sweep_report(run_dir, sweep);  // the comparison grows as values finish
  }

  const auto written = report::write_sweep_report(run_dir, sweep);
  std::printf("\nsweep over %s (after training; before: Recall@1 %.2f%%, MAP@R %.2f%%):\n", report::to_string(sweep.parameter).c_str(),
              written.rows.empty() ? std::nan("") : 100 * written.rows.front().before_recall_at_1,
              written.rows.empty() ? std::nan("") : 100 * written.rows.front().before_map_at_r);
  std::printf("  %-14s %-16s %9s %9s %9s %9s\n", "value", "run", "classes", "Recall@1", "Recall@5", "MAP@R");
  for (const auto& r : written.rows)
    std::printf("  %-14s %-16s %9lld %8.2f%% %8.2f%% %8.2f%%\n", report::sweep_value_text(r.value).c_str(), r.run.c_str(),
                static_cast<long long>(r.pseudo_classes), 100 * r.recall_at_1, 100 * r.recall_at_5, 100 * r.map_at_r);
  log::info("done: sweep table  ", fs::absolute(written.csv).lexically_normal().string());
  log::info("done: sweep report ", fs::absolute(written.report).lexically_normal().string());
  for (const auto& p : sweep.points)
    log::info("done: ", p.dir.filename().string(), " model ", fs::absolute(p.dir / "model.safetensors").lexically_normal().string());
  std::cout << "outputs in " << run_dir.string() << "\n";
  std::cout << "sweep table: " << fs::absolute(written.csv).lexically_normal().string() << "\n";
  std::cout << "report: " << fs::absolute(written.report).lexically_normal().string() << "\n";
  return 0;
}

int run(const unicom::Config& c, dist::ProcessGroup& group) {
  if (c.cluster_ratio_sweep.empty() && c.clusters_sweep.empty()) return run_single(c, group);
  TAXON_CHECK(!group.distributed(), "cli.bad-option", "a --cluster-ratio/--clusters sweep runs in one process; under ",
              "torchrun/srun run one value per job");
  return run_sweep(c, group);
}

// The ranks of this job from the launcher's environment (torchrun, srun), or one process. Gloo on the CPU, NCCL
// with each rank on GPU LOCAL_RANK; --batch-size is the global batch and must split evenly.
dist::ProcessGroup connect_ranks(const unicom::Config& c) {
  const auto env = dist::launch_environment_from_env();
  if (env.world_size == 1) return dist::ProcessGroup::single();
  const auto device = parse_device(c.device).device;
  const at::Device rank_device = device.is_cuda() ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank))
                                                  : at::Device(at::kCPU);
  TAXON_CHECK(c.batch_size % env.world_size == 0, "cli.bad-option", "--batch-size ", c.batch_size,
              " is the batch over all ", env.world_size, " ranks and must be a multiple of it");
  if (env.rank != 0 && !std::getenv("TAXON_LOG_LEVEL")) log::set_level(log::Level::warn);  // one log: rank 0's
  auto group = dist::ProcessGroup::connect(
      env, dist::ProcessGroupOptions()
               .timeout(std::chrono::milliseconds(static_cast<int64_t>(c.dist_timeout * 1000)))
               .device(rank_device));
  log::info("distributed: rank ", env.rank, " of ", env.world_size, " (", env.launcher, ", ",
            rank_device.is_cuda() ? "NCCL" : "Gloo", ", collective timeout ", c.dist_timeout, " s)");
  return group;
}

}  // namespace

int main(int argc, char** argv) {
  dist::ProcessGroup group = dist::ProcessGroup::single();
  try {
    const auto c = parse(argc, argv);
    group = connect_ranks(c);
    return run(c, group);
  } catch (const Interrupted& stop) {
    std::cerr << "taxon-unicom: interrupted during " << stop.stage
              << "; nothing is lost (this stage is redone): continue with --resume RUN_DIR\n";
    return 130;
  } catch (const taxon::Error& e) {
    std::cerr << "taxon-unicom: " << (group.distributed() ? "rank " + std::to_string(group.rank()) + ": " : "")
              << e.what() << "\n";
    if (e.id() != "dist.peer-failed") group.report_failure(e.what());  // the other ranks name this one
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "taxon-unicom: unexpected error: " << e.what() << "\n";
    group.report_failure(e.what());
    return 1;
  }
}
