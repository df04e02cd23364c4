#pragma once
// How pure a clustering's pseudo-classes are against every rank the data happens to know (training never uses
// these labels, but they say whether the clusters mean something): NMI, AMI and purity per rank, saved as
// <round dir>/cluster_quality.json. This header owns that file's format.
#include "taxon/io/json.hpp"
#include "taxon/core/error.hpp"
#include "taxon/eval/cluster_agreement.hpp"
#include "taxon/io/atomic_file.hpp"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace taxon::cluster {

struct RankAgreement {
  std::string rank;
  int64_t unlabeled = 0;  // images without a label at this rank (left out of the scores)
  eval::ClusterAgreement agreement;
};

struct ClusterQuality {
  int64_t images = 0;    // clustered images
  int64_t clusters = 0;  // non-empty pseudo-classes
  std::vector<RankAgreement> ranks;

  static constexpr const char* kFileName = "cluster_quality.json";

  nlohmann::json to_json() const {
    // NaN (not computed) is written as null, which JSON can hold.
    const auto number = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
    nlohmann::json ranks_json = nlohmann::json::array();
    for (const auto& r : ranks) {
      const auto& a = r.agreement;
      ranks_json.push_back({{"rank", r.rank},
                            {"images", a.items},
                            {"unlabeled", r.unlabeled},
                            {"classes", a.classes},
                            {"nmi", number(a.nmi)},
                            {"ami", number(a.ami)},
                            {"purity", number(a.purity)},
                            {"mutual_information", number(a.mutual_information)},
                            {"expected_mutual_information", number(a.expected_mutual_information)},
                            {"entropy_true", number(a.entropy_true)},
                            {"entropy_clusters", number(a.entropy_pred)}});
    }
    return {{"images", images}, {"clusters", clusters}, {"ranks", ranks_json}};
  }

  static ClusterQuality from_json(const nlohmann::json& j, const std::string& source) {
    const auto number = [&](const nlohmann::json& o, const char* key) {
      TAXON_CHECK(o.contains(key), "cluster.bad-quality-file", source, ": a rank entry has no '", key, "'");
      const auto& v = o.at(key);
      if (v.is_null()) return std::numeric_limits<double>::quiet_NaN();
      TAXON_CHECK(v.is_number(), "cluster.bad-quality-file", source, ": '", key, "' is not a number");
      return v.get<double>();
    };
    TAXON_CHECK(j.is_object() && j.contains("ranks") && j.at("ranks").is_array(), "cluster.bad-quality-file", source,
                ": expected an object with a 'ranks' array");
    ClusterQuality q;
    q.images = j.value("images", int64_t{0});
    q.clusters = j.value("clusters", int64_t{0});
    for (const auto& r : j.at("ranks")) {
      TAXON_CHECK(r.is_object() && r.contains("rank") && r.at("rank").is_string(), "cluster.bad-quality-file", source,
                  ": a rank entry has no 'rank' name");
      RankAgreement ra;
      ra.rank = r.at("rank").get<std::string>();
      ra.unlabeled = r.value("unlabeled", int64_t{0});
      auto& a = ra.agreement;
      a.items = r.value("images", int64_t{0});
      a.classes = r.value("classes", int64_t{0});
      a.clusters = q.clusters;
      a.nmi = number(r, "nmi");
      a.ami = number(r, "ami");
      a.purity = number(r, "purity");
      a.mutual_information = r.contains("mutual_information") ? number(r, "mutual_information") : std::nan("");
      a.expected_mutual_information =
          r.contains("expected_mutual_information") ? number(r, "expected_mutual_information") : std::nan("");
      a.entropy_true = r.contains("entropy_true") ? number(r, "entropy_true") : std::nan("");
      a.entropy_pred = r.contains("entropy_clusters") ? number(r, "entropy_clusters") : std::nan("");
      q.ranks.push_back(std::move(ra));
    }
    return q;
  }
};

// Scores pseudo-labels [N] against each known rank ({name, one label per image, negative = unknown}).
inline ClusterQuality measure_cluster_quality(const at::Tensor& pseudo_labels,
                                              const std::vector<std::pair<std::string, std::vector<int64_t>>>& known,
                                              const eval::ExpectedMutualInformationOptions& options = {}) {
  TAXON_CHECK(pseudo_labels.dim() == 1 && !at::isFloatingType(pseudo_labels.scalar_type()), "cluster.bad-labels",
              "pseudo-labels must be a 1-D integer tensor, got ", pseudo_labels.scalar_type(), " ", pseudo_labels.sizes());
  const auto labels = pseudo_labels.to(at::kCPU, at::kLong).contiguous();
  const int64_t n = labels.numel();
  const int64_t* p = labels.data_ptr<int64_t>();
  ClusterQuality q;
  q.images = n;
  std::vector<int64_t> distinct(p, p + n);
  std::sort(distinct.begin(), distinct.end());
  q.clusters = std::unique(distinct.begin(), distinct.end()) - distinct.begin();
  for (const auto& [rank, truth] : known) {
    TAXON_CHECK(static_cast<int64_t>(truth.size()) == n, "cluster.bad-labels", "rank '", rank, "' has ",
                truth.size(), " labels for ", n, " clustered images");
    std::vector<int64_t> t, c;
    t.reserve(truth.size());
    c.reserve(truth.size());
    for (int64_t i = 0; i < n; ++i)
      if (truth[static_cast<size_t>(i)] >= 0) {
        t.push_back(truth[static_cast<size_t>(i)]);
        c.push_back(p[i]);
      }
    if (t.empty()) continue;  // nothing known at this rank
    q.ranks.push_back({rank, n - static_cast<int64_t>(t.size()), eval::cluster_agreement(t, c, options)});
  }
  return q;
}

inline void save_cluster_quality(const std::filesystem::path& dir, const ClusterQuality& q) {
  io::write_text_atomically(dir / ClusterQuality::kFileName, io::dump_json(q.to_json(), 2) + "\n");
}

inline ClusterQuality load_cluster_quality(const std::filesystem::path& dir) {
  const auto path = dir / ClusterQuality::kFileName;
  const auto j = nlohmann::json::parse(io::read_file(path), nullptr, false);
  TAXON_CHECK(!j.is_discarded(), "cluster.bad-quality-file", path.string(), " is not valid JSON");
  return ClusterQuality::from_json(j, path.string());
}

}  // namespace taxon::cluster
