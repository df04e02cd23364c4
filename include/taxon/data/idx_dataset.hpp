#pragma once
// MNIST-format idx files (gzip or plain), e.g. Debian's dataset-fashion-mnist. Images are kept as one uint8
// tensor; get() returns [H,W,3] (grey replicated, the default) or [H,W,1].
#include "taxon/core/checked.hpp"
#include "taxon/core/error.hpp"
#include "taxon/core/options.hpp"
#include "taxon/data/dataset.hpp"
#include "taxon/io/atomic_file.hpp"

#include <ATen/ATen.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace taxon::data {

namespace detail {

inline std::uint32_t read_be32(std::string_view s, std::size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + at);
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3]);
}

// The whole size (header + payload) an idx file declares, once `prefix` holds its header; nullopt while it does
// not. A bad magic, a type other than unsigned byte, no dimension or a size overflowing 64 bits is an error.
inline std::optional<std::uint64_t> idx_declared_size(std::string_view prefix, const std::filesystem::path& path) {
  if (prefix.size() < 4) return std::nullopt;
  TAXON_CHECK(prefix[0] == 0 && prefix[1] == 0, "data.corrupt-file", path.string(), ": not an idx file (bad magic)");
  TAXON_CHECK(static_cast<unsigned char>(prefix[2]) == 0x08, "data.corrupt-file", path.string(),
              ": idx element type 0x", std::hex, int(static_cast<unsigned char>(prefix[2])), " is not unsigned byte");
  const std::size_t dims = static_cast<unsigned char>(prefix[3]);
  TAXON_CHECK(dims >= 1, "data.corrupt-file", path.string(), ": idx header declares no dimension");
  const std::size_t header = 4 + 4 * dims;
  if (prefix.size() < header) return std::nullopt;
  std::vector<std::int64_t> shape;
  for (std::size_t d = 0; d < dims; ++d) shape.push_back(read_be32(prefix, 4 + 4 * d));
  const auto count = checked_product<std::int64_t>(shape);
  TAXON_CHECK(count.has_value(), "data.corrupt-file", path.string(), ": idx dimensions overflow a 64-bit size");
  const auto total = checked_add<std::uint64_t>(static_cast<std::uint64_t>(*count), header);
  TAXON_CHECK(total.has_value(), "data.corrupt-file", path.string(), ": idx dimensions overflow a 64-bit size");
  return total;
}

// Whole file, gunzipped when it starts with the gzip magic (idx files, the text tower's merges file). With
// `declared_size` (the size the inflated prefix's header declares, nullopt until known), inflation stops with an
// error as soon as the output exceeds it, so a small gzip cannot expand into gigabytes that are then thrown away.
inline std::string read_maybe_gzip(
    const std::filesystem::path& path,
    const std::function<std::optional<std::uint64_t>(std::string_view)>& declared_size = nullptr) {
  const std::string raw = io::read_file(path);
  if (raw.size() < 2 || static_cast<unsigned char>(raw[0]) != 0x1f || static_cast<unsigned char>(raw[1]) != 0x8b) return raw;
  TAXON_CHECK(raw.size() <= std::numeric_limits<uInt>::max(), "data.corrupt-file", path.string(),
              ": gzip file larger than 4 GiB");
  std::string out;
  z_stream zs{};
  TAXON_CHECK(inflateInit2(&zs, 15 + 32) == Z_OK, "data.corrupt-file", path.string(), ": zlib init failed");
  struct End {
    z_stream* zs;
    ~End() { inflateEnd(zs); }
  } end{&zs};
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  zs.avail_in = static_cast<uInt>(raw.size());
  char buf[1 << 16];
  int rc = Z_OK;
  std::optional<std::uint64_t> declared;
  while (rc != Z_STREAM_END) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    TAXON_CHECK(rc == Z_OK || rc == Z_STREAM_END, "data.corrupt-file", path.string(),
                ": gzip data is corrupt or truncated (zlib code ", rc, ")");
    out.append(buf, sizeof buf - zs.avail_out);
    if (declared_size && !declared) declared = declared_size(out);
    TAXON_CHECK(!declared || out.size() <= *declared, "data.corrupt-file", path.string(),
                ": gzip data inflates to more than the ", *declared, " bytes its header declares");
    TAXON_CHECK(!(rc == Z_OK && zs.avail_in == 0 && zs.avail_out != 0), "data.corrupt-file", path.string(),
                ": gzip data is truncated");
  }
  return out;
}

// Parses an unsigned-byte idx file: returns the tensor with the file's dimensions.
inline at::Tensor read_idx_u8(const std::filesystem::path& path) {
  const std::string data = read_maybe_gzip(path, [&](std::string_view prefix) { return idx_declared_size(prefix, path); });
  const auto declared = idx_declared_size(data, path);
  TAXON_CHECK(declared.has_value(), "data.corrupt-file", path.string(), ": truncated idx header (", data.size(), " bytes)");
  const std::size_t dims = static_cast<unsigned char>(data[3]);
  const std::size_t offset = 4 + 4 * dims;
  const std::uint64_t count = *declared - offset;
  TAXON_CHECK(data.size() - offset == count, "data.corrupt-file", path.string(), ": idx payload has ", data.size() - offset,
              " bytes, header says ", count);
  std::vector<int64_t> shape;
  for (std::size_t d = 0; d < dims; ++d) shape.push_back(read_be32(data, 4 + 4 * d));
  at::Tensor t = at::empty(shape, at::kByte);
  if (count > 0) std::memcpy(t.data_ptr<uint8_t>(), data.data() + offset, count);  // an empty tensor may have no buffer
  return t;
}
}  // namespace detail

class IdxDatasetOptions {
  // Class names in id order (empty: "0", "1", ...).
  TAXON_ARG(std::vector<std::string>, class_names);
  // Optional coarse rank: group name per class id (same length as the classes), and its rank name.
  TAXON_ARG(std::vector<std::string>, coarse_groups);
  TAXON_ARG(std::string, coarse_rank) = "group";
  TAXON_ARG(std::string, class_rank) = "class";
  // Replicate grey to 3 channels (what decode does for grey JPEG/PNG), so every pipeline sees RGB.
  TAXON_ARG(bool, rgb) = true;
};

class IdxDataset {
 public:
  IdxDataset(const std::filesystem::path& images, const std::filesystem::path& labels, IdxDatasetOptions options = {})
      : options_(std::move(options)) {
    images_ = detail::read_idx_u8(images);
    const at::Tensor lab = detail::read_idx_u8(labels);
    TAXON_CHECK(images_.dim() == 3, "data.corrupt-file", images.string(), ": expected [N,H,W] images, got ", images_.sizes());
    TAXON_CHECK(lab.dim() == 1 && lab.size(0) == images_.size(0), "data.corrupt-file", labels.string(), ": ",
                lab.size(0), " labels for ", images_.size(0), " images");
    labels_ = lab.to(at::kLong);
    const int64_t num_classes = labels_.numel() ? labels_.max().item<int64_t>() + 1 : 0;
    auto names = options_.class_names();
    if (names.empty())
      for (int64_t c = 0; c < num_classes; ++c) names.push_back(std::to_string(c));
    TAXON_CHECK(static_cast<int64_t>(names.size()) >= num_classes, "data.bad-taxonomy", labels.string(), ": label ",
                num_classes - 1, " but only ", names.size(), " class names");
    std::vector<std::string> ranks{options_.class_rank()};
    std::vector<LabelMap> maps{LabelMap(names)};
    if (!options_.coarse_groups().empty()) {
      const auto& groups = options_.coarse_groups();
      TAXON_CHECK(groups.size() == names.size(), "data.bad-taxonomy", "coarse_groups has ", groups.size(),
                  " entries for ", names.size(), " classes");
      // Group ids in order of first appearance over class ids (stable, documented order).
      std::vector<std::string> group_names;
      for (const auto& g : groups)
        if (std::find(group_names.begin(), group_names.end(), g) == group_names.end()) group_names.push_back(g);
      LabelMap group_map(group_names);
      for (const auto& g : groups) class_to_group_.push_back(group_map.id(g));
      ranks.push_back(options_.coarse_rank());
      maps.push_back(std::move(group_map));
    }
    taxonomy_ = Taxonomy(std::move(ranks), std::move(maps));
  }

  // Fashion-MNIST from Debian's dataset-fashion-mnist (train: 60000, test: 10000). Ranks: "class" (the 10
  // official ids) and "group", a coarse grouping: tops = {T-shirt/top, Pullover, Coat, Shirt}, bottoms =
  // {Trouser}, dresses = {Dress}, footwear = {Sandal, Sneaker, Ankle boot}, bags = {Bag}.
  static IdxDataset fashion_mnist(bool train = true,
                                  const std::filesystem::path& dir = "/usr/share/datasets/fashion-mnist",
                                  bool rgb = true) {
    const std::string prefix = train ? "train" : "t10k";
    const auto pick = [&](const std::string& stem) {
      const auto gz = dir / (stem + ".gz");
      return std::filesystem::exists(gz) ? gz : dir / stem;
    };
    return IdxDataset(pick(prefix + "-images-idx3-ubyte"), pick(prefix + "-labels-idx1-ubyte"),
                      IdxDatasetOptions()
                          .class_names({"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                        "Sneaker", "Bag", "Ankle boot"})
                          .coarse_groups({"tops", "bottoms", "tops", "dresses", "tops", "footwear", "tops",
                                          "footwear", "bags", "footwear"})
                          .rgb(rgb));
  }

  std::int64_t size() const { return images_.size(0); }
  Sample get(std::int64_t i) const {
    check_index(i, size(), "IdxDataset");
    at::Tensor img = images_[i].unsqueeze(2);
    img = options_.rgb() ? img.expand({-1, -1, 3}).contiguous() : img.clone();
    return Sample{std::move(img), labels(i)};
  }
  std::vector<std::int64_t> labels(std::int64_t i) const {
    check_index(i, size(), "IdxDataset");
    const int64_t c = labels_.data_ptr<int64_t>()[i];
    std::vector<std::int64_t> out{c};
    if (!class_to_group_.empty()) out.push_back(class_to_group_[static_cast<size_t>(c)]);
    return out;
  }
  const Taxonomy& taxonomy() const { return taxonomy_; }
  // All raw images [N,H,W] uint8 and class labels [N] int64 (for fast CPU demos).
  const at::Tensor& images() const { return images_; }
  const at::Tensor& class_labels() const { return labels_; }

 private:
  IdxDatasetOptions options_;
  at::Tensor images_, labels_;
  std::vector<std::int64_t> class_to_group_;
  Taxonomy taxonomy_;
};

}  // namespace taxon::data
