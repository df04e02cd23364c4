#pragma once
// Datasets of image files with taxonomic labels: CsvImageDataset (metadata CSV + image root, e.g. VLM4Bio,
// BIOSCAN-5M) and ImageFolderDataset (one folder per class, optionally nested folders as ranks).
#include "taxon/core/error.hpp"
#include "taxon/core/log.hpp"
#include "taxon/core/options.hpp"
#include "taxon/data/csv.hpp"
#include "taxon/data/dataset.hpp"
#include "taxon/data/decode.hpp"
#include "taxon/data/decode_crop.hpp"
#include "taxon/data/decode_request.hpp"
#include "taxon/data/rank_spec.hpp"
#include "taxon/data/taxonomy.hpp"
#include "taxon/io/atomic_file.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace taxon::data {

// What to do with rows whose image file does not exist: drop them (reported: count + first few), or fail.
enum class MissingFilePolicy { skip, reject };

// Image files with per-rank label ids; get() reads and decodes (thread-safe: no shared mutable state). It accepts a
// Loader's DecodeRequest (decode_request.hpp).
class ImageFileDataset {
 public:
  std::int64_t size() const { return static_cast<std::int64_t>(paths_.size()); }
  Sample get(std::int64_t i) const {
    check_index(i, size(), "image dataset");
    const auto& path = paths_[static_cast<size_t>(i)];
    if (decode_crop_.enabled())
      return Sample{decode_resize_center_crop(detail::read_encoded(path), path.string(), decode_crop_.resize_to,
                                              decode_crop_.crop, max_image_pixels_),
                    labels(i)};
    return Sample{read_image(path, decode_min_side_, max_image_pixels_), labels(i)};
  }
  // get(i) with the request's resize + center crop applied (what a Loader asks for when its transform starts with
  // one), resized in the file's own mode as PIL does: decoded straight to the crop when get(i) would decode the
  // whole file, else get(i) cropped.
  Sample get(std::int64_t i, const DecodeRequest& request) const {
    check_index(i, size(), "image dataset");
    if (decode_crop_.enabled() || decode_min_side_ > 0) {  // get(i) is already cropped or scaled: crop that
      Sample s = get(i);
      s.image = request.apply(s.image);
      return s;
    }
    const auto& path = paths_[static_cast<size_t>(i)];
    const ResizeCenterCrop& rc = request.resize_crop;
    return Sample{decode_resize_center_crop(detail::read_encoded(path), path.string(), rc.resize_to, rc.crop,
                                            max_image_pixels_),
                  labels(i)};
  }
  std::vector<std::int64_t> labels(std::int64_t i) const {
    check_index(i, size(), "image dataset");
    const auto r = static_cast<size_t>(taxonomy_.num_ranks());
    return std::vector<std::int64_t>(labels_.begin() + static_cast<std::ptrdiff_t>(i * r),
                                     labels_.begin() + static_cast<std::ptrdiff_t>((i + 1) * r));
  }
  const Taxonomy& taxonomy() const { return taxonomy_; }
  const std::filesystem::path& path(std::int64_t i) const { return paths_[static_cast<size_t>(i)]; }
  // The row's text column (captions for image+text features; CsvImageDatasetOptions::text_column), or "".
  const std::string& text(std::int64_t i) const {
    check_index(i, size(), "image dataset");
    static const std::string none;
    return texts_.empty() ? none : texts_[static_cast<size_t>(i)];
  }
  // Rows/files dropped because the file was missing: total and the first few paths.
  std::int64_t missing_count() const noexcept { return missing_count_; }
  const std::vector<std::string>& missing_examples() const noexcept { return missing_examples_; }
  // Let libjpeg decode at 1/2..1/8 scale while the shorter side stays >= this (0: always full size).
  void set_decode_min_side(int side) { decode_min_side_ = side; }
  void set_decode_resize_crop(DecodeResizeCrop rc) { decode_crop_ = rc; }
  // Images whose declared width x height exceeds this are refused (data.image-too-large) before decoding.
  void set_max_image_pixels(std::int64_t pixels) {
    TAXON_CHECK(pixels > 0, "data.bad-option", "max_image_pixels must be positive, got ", pixels);
    max_image_pixels_ = pixels;
  }
  std::int64_t max_image_pixels() const noexcept { return max_image_pixels_; }

 protected:
  static constexpr std::size_t kExamples = 5;
  // Builds label maps (sorted distinct values per rank) from string labels [rows][ranks].
  void finish(std::vector<std::string> ranks, const std::vector<std::vector<std::string>>& names) {
    std::vector<LabelMap> maps;
    for (size_t r = 0; r < ranks.size(); ++r) {
      std::vector<std::string> values;
      values.reserve(names.size());
      for (const auto& row : names) values.push_back(row[r]);
      maps.push_back(LabelMap::from_values(std::move(values)));
    }
    labels_.clear();
    labels_.reserve(names.size() * ranks.size());
    for (const auto& row : names)
      for (size_t r = 0; r < ranks.size(); ++r) labels_.push_back(maps[r].id(row[r]));
    taxonomy_ = Taxonomy(std::move(ranks), std::move(maps));
  }
  void note_missing(const std::filesystem::path& p) {
    ++missing_count_;
    if (missing_examples_.size() < kExamples) missing_examples_.push_back(p.string());
  }
  void report_missing(const std::string& what, MissingFilePolicy policy) const {
    if (missing_count_ == 0) return;
    std::string examples;
    for (const auto& e : missing_examples_) examples += (examples.empty() ? "" : ", ") + e;
    if (missing_count_ > static_cast<std::int64_t>(missing_examples_.size())) examples += ", ...";
    TAXON_CHECK(policy == MissingFilePolicy::skip, "data.missing-images", what, ": ", missing_count_,
                " image files not found (", examples, ")");
    log::warn(what, ": skipped ", missing_count_, " rows whose image file is missing (", examples, ")");
  }

  std::vector<std::filesystem::path> paths_;
  std::vector<std::int64_t> labels_;  // [size, ranks] row-major
  std::vector<std::string> texts_;    // per row when a text column was read
  Taxonomy taxonomy_;
  std::int64_t missing_count_ = 0;
  std::vector<std::string> missing_examples_;
  int decode_min_side_ = 0;
  DecodeResizeCrop decode_crop_;
  std::int64_t max_image_pixels_ = kDefaultMaxImagePixels;
};

// One metadata CSV, the folder its paths are relative to, and constant columns added to each of its rows
// (e.g. {"taxa", "Fish"} for VLM4Bio, which has no taxa column). Constants override CSV columns of the same name.
struct CsvSource {
  std::filesystem::path csv;
  std::filesystem::path image_root;
  std::map<std::string, std::string> constants;
};

class CsvImageDatasetOptions {
  TAXON_ARG(std::vector<CsvSource>, sources);
  TAXON_ARG(std::string, path_column) = "path";
  TAXON_ARG(std::vector<RankSpec>, ranks);
  TAXON_ARG(MissingFilePolicy, missing_files) = MissingFilePolicy::skip;
  // Trim surrounding whitespace of label cells (whitespace-only cells are missing labels either way).
  TAXON_ARG(bool, strip_labels) = false;
  TAXON_ARG(int, decode_min_side) = 0;
  TAXON_ARG(DecodeResizeCrop, decode_resize_crop);
  // Decompression-bomb guard: larger images (declared width x height) are refused; Pillow's limit by default.
  TAXON_ARG(std::int64_t, max_image_pixels) = kDefaultMaxImagePixels;
  // A column of free text kept per row (e.g. captions), read back with text(i); empty: none.
  TAXON_ARG(std::string, text_column);

 public:
  CsvImageDatasetOptions& add_source(std::filesystem::path csv, std::filesystem::path image_root,
                                     std::map<std::string, std::string> constants = {}) {
    sources_.push_back({std::move(csv), std::move(image_root), std::move(constants)});
    return *this;
  }
};

// VLM4Bio species-classification CSVs (fileNameAsDelivered, scientificName): ranks species (the whole
// scientificName, as the seeds use it), genus (its first token) and taxa (Fish/Bird/Butterfly per source).
// `taxa_sources`: {taxon, metadata csv, image folder}, e.g. {"Fish", ".../Fish/metadata/metadata_10k.csv", ".../Fish/images"}.
struct Vlm4BioSource {
  std::string taxon;
  std::filesystem::path csv, image_root;
};
inline CsvImageDatasetOptions vlm4bio_options(const std::vector<Vlm4BioSource>& taxa_sources) {
  CsvImageDatasetOptions o;
  o.path_column("fileNameAsDelivered")
      .ranks({RankSpec::column("species", "scientificName"), RankSpec::genus_from("genus", "scientificName"),
              RankSpec::column("taxa", "taxa")})
      .missing_files(MissingFilePolicy::skip);
  for (const auto& s : taxa_sources) o.add_source(s.csv, s.image_root, {{"taxa", s.taxon}});
  return o;
}

class CsvImageDataset : public ImageFileDataset {
  static inline const std::string kNoText;

 public:
  explicit CsvImageDataset(const CsvImageDatasetOptions& options) {
    TAXON_CHECK(!options.sources().empty(), "data.bad-option", "CsvImageDataset: no CSV source given");
    TAXON_CHECK(!options.ranks().empty(), "data.bad-option", "CsvImageDataset: no rank given");
    std::vector<std::string> ranks;
    for (const auto& r : options.ranks()) ranks.push_back(r.rank);
    std::vector<std::vector<std::string>> names;
    std::string what;
    for (const auto& src : options.sources()) {
      const CsvTable table = CsvTable::read(src.csv);
      what += (what.empty() ? "" : ", ") + src.csv.string();
      // Resolve every column up front so a missing column fails before any row is read.
      const auto resolve = [&](const std::string& col) -> std::pair<std::int64_t, const std::string*> {
        if (auto it = src.constants.find(col); it != src.constants.end()) return {-1, &it->second};
        return {table.column(col), nullptr};
      };
      const auto path_col = resolve(options.path_column());
      const auto text_col = options.text_column().empty() ? std::make_pair(std::int64_t(-1), &kNoText)
                                                          : resolve(options.text_column());
      std::vector<std::pair<std::int64_t, const std::string*>> cols;
      for (const auto& r : options.ranks())
        cols.push_back(r.kind == RankSpec::Kind::constant ? std::make_pair(std::int64_t(-1), &r.source) : resolve(r.source));
      for (std::int64_t row = 0; row < table.num_rows(); ++row) {
        const auto cell = [&](const std::pair<std::int64_t, const std::string*>& c) -> const std::string& {
          return c.second ? *c.second : table.cell(row, c.first);
        };
        const std::string& rel = cell(path_col);
        TAXON_CHECK(!rel.empty(), "data.bad-csv", src.csv.string(), ": row ", row + 1, " has an empty '",
                    options.path_column(), "' cell");
        std::filesystem::path p = std::filesystem::path(rel).is_absolute() ? std::filesystem::path(rel) : src.image_root / rel;
        if (!std::filesystem::exists(p)) {
          note_missing(p);
          continue;
        }
        std::vector<std::string> labels;
        for (size_t r = 0; r < cols.size(); ++r) {
          std::string v = cell(cols[r]);
          if (options.ranks()[r].kind == RankSpec::Kind::first_token) v = genus_of(v);
          if (options.strip_labels() || v.find_first_not_of(" \t\r\n") == std::string::npos) v = trim(v);
          labels.push_back(std::move(v));
        }
        paths_.push_back(std::move(p));
        names.push_back(std::move(labels));
        if (!options.text_column().empty()) texts_.push_back(cell(text_col));
      }
    }
    report_missing(what, options.missing_files());
    finish(std::move(ranks), names);
    decode_min_side_ = options.decode_min_side();
    decode_crop_ = options.decode_resize_crop();
    set_max_image_pixels(options.max_image_pixels());
  }

 private:
  static std::string trim(const std::string& s) {
    const auto b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return {};
    return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
  }
};

class ImageFolderDatasetOptions {
  // Rank names, outermost folder first: {"class"} for root/<class>/img.jpg, {"genus", "species"} for
  // root/<genus>/<species>/img.jpg. Labels are the folder names.
  TAXON_ARG(std::vector<std::string>, ranks) = std::vector<std::string>{"class"};
  TAXON_ARG(std::vector<std::string>, extensions) = std::vector<std::string>{".jpg", ".jpeg", ".png"};
  TAXON_ARG(int, decode_min_side) = 0;
  TAXON_ARG(DecodeResizeCrop, decode_resize_crop);
  // Decompression-bomb guard: larger images (declared width x height) are refused; Pillow's limit by default.
  TAXON_ARG(std::int64_t, max_image_pixels) = kDefaultMaxImagePixels;
};

class ImageFolderDataset : public ImageFileDataset {
 public:
  explicit ImageFolderDataset(const std::filesystem::path& root, const ImageFolderDatasetOptions& options = {}) {
    namespace fs = std::filesystem;
    io::require_directory(root, "image folder");
    const auto depth = static_cast<std::ptrdiff_t>(options.ranks().size());
    TAXON_CHECK(depth >= 1, "data.bad-option", "ImageFolderDataset needs at least one rank");
    std::vector<std::pair<fs::path, std::vector<std::string>>> files;
    for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::follow_directory_symlink);
         it != fs::recursive_directory_iterator(); ++it) {
      if (!it->is_regular_file()) continue;
      const fs::path rel = fs::relative(it->path(), root);
      std::vector<std::string> parts;
      for (const auto& part : rel) parts.push_back(part.string());
      if (static_cast<std::ptrdiff_t>(parts.size()) != depth + 1) continue;  // files at other depths are not samples
      std::string ext = it->path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (std::find(options.extensions().begin(), options.extensions().end(), ext) == options.extensions().end()) continue;
      parts.pop_back();
      files.emplace_back(it->path(), std::move(parts));
    }
    std::sort(files.begin(), files.end());  // directory order is filesystem-dependent
    std::vector<std::vector<std::string>> names;
    for (auto& [p, labels] : files) {
      paths_.push_back(p);
      names.push_back(std::move(labels));
    }
    TAXON_CHECK(!paths_.empty(), "data.empty-dataset", "no images found ", depth, " folder level(s) below ", root.string());
    finish(options.ranks(), names);
    decode_min_side_ = options.decode_min_side();
    decode_crop_ = options.decode_resize_crop();
    set_max_image_pixels(options.max_image_pixels());
  }
};

static_assert(AcceptsDecodeRequest<CsvImageDataset> && AcceptsDecodeRequest<ImageFolderDataset>);

}  // namespace taxon::data
