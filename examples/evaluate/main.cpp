// taxon-eval: embeddings (.npy) + a labels CSV in, the seeds' taxonomy table (and Recall@K / MAP@R) out.
//
//   taxon-eval --embeddings emb.npy --labels meta.csv --group-column taxa
//              --rank species=scientificName --rank genus=@genus(scientificName) --out table.csv
//
// Row i of the CSV labels row i of the embeddings. The table is the NFHM/BioCosmos one: per group plus All, a
// seeded 80/20 split, accuracy_individual / accuracy_avg / distance_individual / distance_avg.
// `--device auto|cpu|cuda|cuda:N` (default auto: the first GPU when there is one) is where the similarity blocks
// and the neighbour search run; `--device cuda` without a usable GPU fails before anything is read.
#include <taxon/core/core.hpp>
#include <taxon/data/csv.hpp>
#include <taxon/eval/eval.hpp>
#include <taxon/io/npy.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>

using namespace taxon;

int main(int argc, char** argv) {
  std::string embeddings_path, labels_path, group_column, model = "model", out, device_spec = "auto";
  std::vector<std::string> rank_specs;
  bool nfhm_compat = false, normalize = false;
  uint64_t seed = 0;
  double test_size = 0.2;
  CLI::App app{"taxon-eval: the seeds' taxonomy retrieval table for a set of embeddings"};
  app.add_option("--embeddings", embeddings_path, "[N, D] embeddings (.npy)")->required();
  app.add_option("--labels", labels_path, "CSV with N rows of labels, in embedding order")->required();
  app.add_option("--rank", rank_specs, "RANK=COLUMN, or RANK=@genus(COLUMN) for the binomial's first token")->required();
  app.add_option("--group-column", group_column, "column whose values get their own rows (e.g. taxa); empty: All only");
  app.add_option("--model", model, "model name for the table's first column")->capture_default_str();
  app.add_option("--out", out, "write the table here (.csv; a .md Markdown copy is written beside it)");
  app.add_option("--seed", seed, "split seed")->capture_default_str();
  app.add_option("--test-size", test_size, "query fraction of each group")->capture_default_str();
  app.add_flag("--nfhm-compat", nfhm_compat, "reproduce the seeds' distance_individual bug (= accuracy_individual)");
  app.add_flag("--normalize", normalize, "L2-normalise embeddings first (the seeds use raw embeddings)");
  app.add_option("--device", device_spec, "auto (the first GPU when there is one, else the CPU), cpu, cuda or cuda:N")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    const auto device = parse_device(device_spec);
    log::info("device: ", device.describe());
    configure_threads();
    const at::Tensor embeddings = io::load_npy(embeddings_path).to(at::kFloat);
    TAXON_CHECK(embeddings.dim() == 2, "eval.bad-embeddings", embeddings_path, ": expected [N, D], got ",
                embeddings.sizes());
    const auto csv = data::CsvTable::read(labels_path);
    TAXON_CHECK(csv.num_rows() == embeddings.size(0), "eval.label-mismatch", labels_path, " has ", csv.num_rows(),
                " rows but ", embeddings_path, " has ", embeddings.size(0), " embeddings");

    eval::TaxonomyColumns columns;
    for (const auto& spec : rank_specs) {
      const auto eq = spec.find('=');
      TAXON_CHECK(eq != std::string::npos, "cli.bad-rank", "--rank '", spec, "' is not RANK=COLUMN");
      std::string rank = spec.substr(0, eq), source = spec.substr(eq + 1);
      const bool genus = source.rfind("@genus(", 0) == 0 && source.back() == ')';
      if (genus) source = source.substr(7, source.size() - 8);
      const auto col = csv.column(source);
      std::vector<std::string> values;
      for (int64_t i = 0; i < csv.num_rows(); ++i)
        values.push_back(genus ? eval::TaxonomyColumns::extract_genus(csv.cell(i, col)) : csv.cell(i, col));
      columns.ranks.emplace_back(rank, std::move(values));
    }
    auto options = eval::TaxonomyEvalOptions().model(model).seed(seed).test_size(test_size)
                       .nfhm_compat(nfhm_compat).normalize(normalize).device(device.device);
    if (group_column.empty()) {
      columns.taxa.assign(static_cast<size_t>(csv.num_rows()), "All");
      options.groups({"All"}).include_all(false);
    } else {
      const auto col = csv.column(group_column);
      for (int64_t i = 0; i < csv.num_rows(); ++i) columns.taxa.push_back(csv.cell(i, col));
      options.taxa_column_name(group_column);
    }
    const auto table = eval::TaxonomyEvaluator(options).evaluate(embeddings, columns);
    std::cout << table.to_csv();

    const auto ids = eval::encode_labels(columns.ranks.front().second).ids;
    const auto m = eval::evaluate_retrieval(embeddings, ids, eval::RetrievalOptions().device(device.device));
    std::printf("\n%s leave-one-out: Recall@1 %.2f%%  Recall@5 %.2f%%  MAP@R %.2f%%  R-precision %.2f%%\n",
                columns.ranks.front().first.c_str(), 100 * m.recall_at(1), 100 * m.recall_at(5), 100 * m.map_at_r,
                100 * m.r_precision);
    if (!out.empty()) {
      table.write_csv(out);
      table.write_markdown(std::filesystem::path(out).replace_extension(".md"));
    }
    return 0;
  } catch (const taxon::Error& e) {
    std::cerr << "taxon-eval: " << e.what() << "\n";
    return 2;
  }
}
