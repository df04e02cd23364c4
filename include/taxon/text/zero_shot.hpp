#pragma once
// Zero-shot classification at every rank of a taxonomy (CLIP's prompt ensembling, BioCLIP's taxonomic prompts):
//  - for each rank column, the classes are the distinct labels of the evaluated rows; each class gets one text per
//    template of a prompt set; per template the class texts are embedded and L2-normalised, then averaged over the
//    templates and normalised again (CLIP's zero-shot classifier);
//  - images are L2-normalised; a row's class is ranked by cosine; top-1 / top-5 accuracy, ties going to the
//    class whose name sorts first;
//  - per group of the taxa column (Fish, Bird, ...) the candidates are the classes present in that group, as each
//    group is its own problem in the seeds' table; "All" uses every class and also classifies the group itself.
// Templates: "{}" is the class name, "{taxonomic}" the BioCLIP-style string built from the Linnaean ranks present
// ("Animalia Chordata ... Pseudanthias squamipinnis", a binomial's genus not repeated), "{<rank>}" the class's
// value at another rank (its most common one among the class's rows).
// Zero-shot needs no gallery, so every row with a label at that rank is a query (num_queries in the table).
#include "taxon/core/error.hpp"
#include "taxon/core/normalize.hpp"
#include "taxon/core/options.hpp"
#include "taxon/eval/taxonomy.hpp"
#include "taxon/io/atomic_file.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace taxon::text {

struct PromptSet {
  std::string name;
  std::vector<std::string> templates;
};

// CLIP's single-prompt classifier, BioCLIP's taxonomic string, and the bare name.
inline std::vector<PromptSet> default_prompt_sets() {
  return {{"clip", {"a photo of {}."}}, {"taxonomic", {"a photo of {taxonomic}."}}, {"name", {"{}"}}};
}

// Linnaean ranks, coarse to fine, as BioCLIP's taxonomic strings order them.
inline const std::vector<std::string>& linnaean_ranks() {
  static const std::vector<std::string> ranks = {"kingdom", "phylum", "class", "order", "family", "genus", "species",
                                                 "subspecies"};
  return ranks;
}

// Texts the encoder turns into [texts, D] features (e.g. embed_text with a tower and a tokenizer).
using TextEncoder = std::function<at::Tensor(const std::vector<std::string>&)>;

struct ClassPrompt {
  std::string name;
  std::string taxonomic;
  std::map<std::string, std::string> ranks;  // rank name -> this class's value there
};

namespace zero_shot_detail {

inline std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

inline int linnaean_index(const std::string& rank) {
  const auto& r = linnaean_ranks();
  const auto it = std::find(r.begin(), r.end(), lower(rank));
  return it == r.end() ? -1 : static_cast<int>(it - r.begin());
}

inline std::string known_placeholders(const ClassPrompt& c) {
  std::string s = "{}, {taxonomic}";
  for (const auto& [rank, value] : c.ranks) s += ", {" + rank + "}";
  return s;
}

}  // namespace zero_shot_detail

// The template with its placeholders filled; an unknown placeholder is "text.bad-template".
inline std::string fill_template(const std::string& tmpl, const ClassPrompt& c) {
  std::string out;
  for (std::size_t i = 0; i < tmpl.size();) {
    if (tmpl[i] != '{') {
      out += tmpl[i++];
      continue;
    }
    const std::size_t close = tmpl.find('}', i);
    TAXON_CHECK(close != std::string::npos, "text.bad-template", "template '", tmpl, "' has an unclosed '{'");
    const std::string key = tmpl.substr(i + 1, close - i - 1);
    if (key.empty()) out += c.name;
    else if (key == "taxonomic") out += c.taxonomic;
    else {
      auto it = c.ranks.find(key);
      TAXON_CHECK(it != c.ranks.end(), "text.bad-template", "template '", tmpl, "': unknown placeholder {", key,
                  "}; known: ", zero_shot_detail::known_placeholders(c));
      out += it->second;
    }
    i = close + 1;
  }
  return out;
}

// BioCLIP-style string from values ordered coarse to fine: joined with spaces, a value that starts with the
// previous one plus a space (a binomial after its genus) contributing only the rest.
inline std::string taxonomic_string(const std::vector<std::string>& coarse_to_fine) {
  std::string out, previous;
  for (const auto& v : coarse_to_fine) {
    if (v.empty()) continue;
    std::string part = v;
    if (!previous.empty() && v.size() > previous.size() && v.compare(0, previous.size(), previous) == 0 &&
        v[previous.size()] == ' ')
      part = v.substr(previous.size() + 1);
    out += (out.empty() ? "" : " ") + part;
    previous = v;
  }
  return out;
}

// The classes of rank column `rank_index` (sorted names) with their prompt fields, from the rows' labels.
inline std::vector<ClassPrompt> class_prompts(const eval::TaxonomyColumns& cols, std::size_t rank_index) {
  using namespace zero_shot_detail;
  const auto& [rank, labels] = cols.ranks.at(rank_index);
  std::map<std::string, std::vector<std::map<std::string, int64_t>>> counts;  // class -> per rank value counts
  for (std::size_t row = 0; row < labels.size(); ++row) {
    if (labels[row].empty()) continue;
    auto& per_rank = counts[labels[row]];
    per_rank.resize(cols.ranks.size());
    for (std::size_t r = 0; r < cols.ranks.size(); ++r)
      if (!cols.ranks[r].second[row].empty()) ++per_rank[r][cols.ranks[r].second[row]];
  }
  const int target = linnaean_index(rank);
  std::vector<ClassPrompt> out;
  for (const auto& [name, per_rank] : counts) {
    ClassPrompt c;
    c.name = name;
    std::vector<std::pair<int, std::string>> chain;
    for (std::size_t r = 0; r < cols.ranks.size(); ++r) {
      std::string best;
      int64_t best_count = 0;
      for (const auto& [value, n] : per_rank[r])
        if (n > best_count) best = value, best_count = n;  // ties: the value that sorts first
      if (r == rank_index) best = name;
      c.ranks[cols.ranks[r].first] = best;
      const int li = linnaean_index(cols.ranks[r].first);
      if (target >= 0 && li >= 0 && li <= target) chain.emplace_back(li, best);
    }
    std::sort(chain.begin(), chain.end());
    std::vector<std::string> values;
    for (auto& [li, v] : chain) values.push_back(v);
    c.taxonomic = target >= 0 ? taxonomic_string(values) : name;
    out.push_back(std::move(c));
  }
  return out;
}

// CLIP's zero-shot classifier: per template, normalised class text features; their mean, normalised: [C, D].
inline at::Tensor class_text_embeddings(const TextEncoder& encode, const std::vector<ClassPrompt>& classes,
                                        const std::vector<std::string>& templates) {
  TAXON_CHECK(!templates.empty(), "text.bad-template", "a prompt set needs at least one template");
  at::Tensor sum;
  for (const auto& t : templates) {
    std::vector<std::string> texts;
    for (const auto& c : classes) texts.push_back(fill_template(t, c));
    at::Tensor f = encode(texts).to(at::kFloat);
    TAXON_CHECK(f.dim() == 2 && f.size(0) == static_cast<int64_t>(texts.size()), "text.bad-output",
                "text encoder returned ", f.sizes(), " for ", texts.size(), " texts");
    f = l2_normalize_rows(f);
    sum = sum.defined() ? sum + f : f;
  }
  const at::Tensor mean = sum / static_cast<double>(templates.size());
  return l2_normalize_rows(mean);
}

struct ZeroShotOptions {
  TAXON_ARG(std::string, model) = "model";
  TAXON_ARG(std::vector<PromptSet>, prompt_sets) = default_prompt_sets();
  // Group order; empty = order of first appearance in TaxonomyColumns::taxa.
  TAXON_ARG(std::vector<std::string>, groups) = {};
  TAXON_ARG(bool, include_all) = true;
  TAXON_ARG(std::string, all_name) = "All";
  TAXON_ARG(std::string, taxa_column_name) = "taxa";
  TAXON_ARG(int64_t, top_k) = 5;
  // The seeds' label cleaning, as the taxonomy table does it (eval::TaxonomyEvalOptions::clean_labels): taxa values
  // stripped of whitespace, rows with a blank first rank left out, so both tables judge the same rows.
  TAXON_ARG(bool, clean_labels) = true;
};

struct ZeroShotRow {
  std::string model, prompts, taxa, column;
  double top1 = 0, top5 = 0;  // fractions
  int64_t num_queries = 0, num_classes = 0;
};

struct ZeroShotTable {
  std::vector<ZeroShotRow> rows;

  static const std::vector<std::string>& header() {
    static const std::vector<std::string> h = {"model", "prompts", "taxa", "column", "top1", "top5", "num_queries",
                                               "num_classes"};
    return h;
  }
  const ZeroShotRow& at(const std::string& prompts, const std::string& taxa, const std::string& column) const {
    for (const auto& r : rows)
      if (r.prompts == prompts && r.taxa == taxa && r.column == column) return r;
    TAXON_FAIL("text.no-such-row", "the zero-shot table has no row prompts='", prompts, "' taxa='", taxa,
               "' column='", column, "'");
  }
  static std::vector<std::string> cells(const ZeroShotRow& r) {
    return {r.model, r.prompts, r.taxa, r.column, eval::format_percent(r.top1), eval::format_percent(r.top5),
            std::to_string(r.num_queries), std::to_string(r.num_classes)};
  }
  std::string to_csv() const {
    std::string out;
    auto line = [&](const std::vector<std::string>& cs) {
      for (std::size_t i = 0; i < cs.size(); ++i) {
        if (i) out += ',';
        out += data_quote(cs[i]);
      }
      out += "\n";
    };
    line(header());
    for (const auto& r : rows) line(cells(r));
    return out;
  }
  std::string to_markdown() const {
    std::string out;
    auto line = [&](const std::vector<std::string>& cs) {
      out += "|";
      for (const auto& c : cs) {
        std::string e;
        for (char ch : c) e += ch == '|' ? std::string("\\|") : std::string(1, ch);
        out += " " + e + " |";
      }
      out += "\n";
    };
    line(header());
    out += "|---|---|---|---|---:|---:|---:|---:|\n";
    for (const auto& r : rows) line(cells(r));
    return out;
  }
  void write_csv(const std::filesystem::path& path) const { io::write_text_atomically(path, to_csv()); }
  void write_markdown(const std::filesystem::path& path) const { io::write_text_atomically(path, to_markdown()); }

 private:
  static std::string data_quote(const std::string& s) {
    if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
    std::string q = "\"";
    for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return q + "\"";
  }
};

namespace zero_shot_detail {

// Top-1 / top-k hits of rows `rows` (true class `truth[i]` among `candidates` columns of `scores`).
inline std::pair<double, double> accuracy(const at::Tensor& scores, const std::vector<int64_t>& rows,
                                          const std::vector<int64_t>& truth, const std::vector<int64_t>& candidates,
                                          int64_t k) {
  if (rows.empty()) return {0.0, 0.0};
  const at::Tensor s = scores.index_select(0, at::tensor(rows, at::kLong)).index_select(1, at::tensor(candidates, at::kLong));
  std::vector<int64_t> position(static_cast<std::size_t>(scores.size(1)), -1);
  for (std::size_t j = 0; j < candidates.size(); ++j) position[static_cast<std::size_t>(candidates[j])] = static_cast<int64_t>(j);
  std::vector<int64_t> cols;
  for (auto t : truth) cols.push_back(position[static_cast<std::size_t>(t)]);
  const at::Tensor col = at::tensor(cols, at::kLong);
  const at::Tensor own = s.gather(1, col.unsqueeze(1));                    // [n, 1]
  const at::Tensor index = at::arange(s.size(1), at::kLong).unsqueeze(0);  // [1, C]
  // Rank of the true class: classes scoring higher, plus equal ones that sort first.
  const at::Tensor rank = (s > own).sum(1) + ((s == own) & (index < col.unsqueeze(1))).sum(1);
  const double n = static_cast<double>(rows.size());
  return {(rank == 0).sum().item<double>() / n, (rank < k).sum().item<double>() / n};
}


// evaluate_zero_shot on rows already checked and cleaned; `has_taxa`: the caller gave a taxa column.
inline ZeroShotTable evaluate(const at::Tensor& images, const eval::TaxonomyColumns& cols, bool has_taxa,
                              const TextEncoder& encode, const ZeroShotOptions& o) {
  const int64_t n = images.size(0);
  const std::vector<std::string>& taxa = cols.taxa;
  std::vector<std::string> groups = o.groups();
  if (groups.empty())
    for (const auto& t : taxa)
      if (std::find(groups.begin(), groups.end(), t) == groups.end() && t != o.all_name()) groups.push_back(t);
  const bool with_all = o.include_all() && !(groups.size() == 1 && groups[0] == o.all_name());
  // Rank columns, plus the group itself for "All" when there are several groups.
  eval::TaxonomyColumns columns = cols;
  const bool classify_groups = with_all && groups.size() > 1 && has_taxa;
  if (classify_groups) columns.ranks.emplace_back(o.taxa_column_name(), taxa);

  ZeroShotTable table;
  for (const auto& set : o.prompt_sets()) {
    for (std::size_t r = 0; r < columns.ranks.size(); ++r) {
      const auto& [rank, labels] = columns.ranks[r];
      const auto classes = class_prompts(columns, r);
      if (classes.empty()) continue;
      std::map<std::string, int64_t> class_index;
      for (std::size_t c = 0; c < classes.size(); ++c) class_index[classes[c].name] = static_cast<int64_t>(c);
      const at::Tensor text = class_text_embeddings(encode, classes, set.templates);
      TAXON_CHECK(text.size(1) == images.size(1), "text.dim-mismatch", "zero-shot: text features have ",
                  text.size(1), " dimensions, image features ", images.size(1),
                  " (image and text towers of different models?)");
      const at::Tensor scores = at::matmul(images, text.t());
      auto add_row = [&](const std::string& group, bool all) {
        std::vector<int64_t> rows, truth, candidates;
        std::vector<bool> present(classes.size(), false);
        for (int64_t i = 0; i < n; ++i) {
          const auto& label = labels[static_cast<std::size_t>(i)];
          if (label.empty() || (!all && taxa[static_cast<std::size_t>(i)] != group)) continue;
          rows.push_back(i);
          truth.push_back(class_index.at(label));
          present[static_cast<std::size_t>(truth.back())] = true;
        }
        if (rows.empty()) return;
        for (std::size_t c = 0; c < classes.size(); ++c)
          if (all || present[c]) candidates.push_back(static_cast<int64_t>(c));
        const auto [top1, topk] = zero_shot_detail::accuracy(scores, rows, truth, candidates, o.top_k());
        table.rows.push_back({o.model(), set.name, group, rank, top1, topk, static_cast<int64_t>(rows.size()),
                              static_cast<int64_t>(candidates.size())});
      };
      const bool group_column = classify_groups && r + 1 == columns.ranks.size();
      if (!group_column)
        for (const auto& g : groups) add_row(g, false);
      if (with_all) add_row(o.all_name(), true);
    }
  }
  return table;
}

}  // namespace zero_shot_detail

// Zero-shot top-1 / top-k per prompt set, group and rank column for image features [N, D] whose rows match
// `cols`. The text encoder is called once per (prompt set, rank, template) with all class texts.
inline ZeroShotTable evaluate_zero_shot(const at::Tensor& image_features, const eval::TaxonomyColumns& cols,
                                        const TextEncoder& encode, const ZeroShotOptions& o = {}) {
  TAXON_CHECK(image_features.defined() && image_features.dim() == 2, "text.bad-input",
              "zero-shot: image features must be [N, D], got ",
              image_features.defined() ? c10::str(image_features.sizes()) : std::string("undefined"));
  const int64_t n = image_features.size(0);
  TAXON_CHECK(!cols.ranks.empty(), "text.bad-input", "zero-shot: no rank column to classify");
  for (const auto& [rank, labels] : cols.ranks)
    TAXON_CHECK(static_cast<int64_t>(labels.size()) == n, "text.bad-input", "zero-shot: rank '", rank, "' has ",
                labels.size(), " labels for ", n, " image features");
  TAXON_CHECK(cols.taxa.empty() || static_cast<int64_t>(cols.taxa.size()) == n, "text.bad-input",
              "zero-shot: ", cols.taxa.size(), " taxa labels for ", n, " image features");
  TAXON_CHECK(o.top_k() >= 1, "text.bad-option", "zero-shot: top_k ", o.top_k(), " must be >= 1");
  at::Tensor images = image_features.to(at::kFloat).to(at::kCPU);
  images = l2_normalize_rows(images);

  eval::TaxonomyColumns given = cols;
  if (given.taxa.empty()) given.taxa.assign(static_cast<std::size_t>(n), o.all_name());
  if (o.clean_labels()) {
    eval::TaxonomyColumns cleaned;
    eval::LabelCleaning cleaning;
    const auto kept = eval::clean_taxonomy_columns(given, cleaned, cleaning);
    if (static_cast<int64_t>(kept.size()) != n) images = images.index_select(0, at::tensor(kept, at::kLong));
    given = std::move(cleaned);
  }
  return zero_shot_detail::evaluate(images, given, !cols.taxa.empty(), encode, o);
}

}  // namespace taxon::text
