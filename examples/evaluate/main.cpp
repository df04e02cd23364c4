// taxon-eval: embeddings (.npy) + a labels CSV in, the seeds' taxonomy table (and Recall@K / MAP@R) out.
//
//   taxon-eval --embeddings emb.npy --labels meta.csv --group-column taxa
//              --rank species=scientificName --rank genus=@genus(scientificName) --out table.csv
//   taxon-eval --embeddings clip=clip.npy --embeddings unicom=unicom.npy ...   -> one table, a block of rows per model
//
// Row i of the CSV labels row i of every embeddings file. The table is the NFHM/BioCosmos one: per group plus All, a
// seeded 80/20 split, accuracy_individual / accuracy_avg / distance_individual / distance_avg. Labels are cleaned
// first as the seeds' vlm_species_eval does (`--clean-labels false` turns it off): group values are stripped of
// whitespace and rows whose first rank (the scientific name) is blank are dropped, from the table and from the
// leave-one-out retrieval alike; `--out` writes the counts to a JSON beside the table. Recall@K follows
// `--recall-definition pml|unicom`, named wherever a number is printed or written.
// `--device auto|cpu|cuda|cuda:N` (default auto: the first GPU when there is one) is where the similarity blocks
// and the neighbour search run; `--device cuda` without a usable GPU fails before anything is read.
#include <taxon/core/core.hpp>
#include <taxon/data/csv.hpp>
#include <taxon/data/rank_spec.hpp>
#include <taxon/eval/eval.hpp>
#include <taxon/io/atomic_file.hpp>
#include <taxon/io/json.hpp>
#include <taxon/io/npy.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>

#include "zero_shot.hpp"

using namespace taxon;

namespace {

struct NamedEmbeddings {
  std::string model, path;
};

// --embeddings PATH (named by --model) or, repeatable, NAME=PATH: the models' names fill the table's model column.
std::vector<NamedEmbeddings> name_embeddings(const std::vector<std::string>& args, const std::string& default_model) {
  std::vector<NamedEmbeddings> out;
  for (const auto& a : args) {
    const auto eq = a.find('=');
    const bool named = eq != std::string::npos && eq > 0 && a.find('/') > eq;  // a '/' before '=' is part of a path
    out.push_back(named ? NamedEmbeddings{a.substr(0, eq), a.substr(eq + 1)} : NamedEmbeddings{default_model, a});
    TAXON_CHECK(!out.back().path.empty(), "cli.bad-option", "--embeddings '", a, "' names no file");
    TAXON_CHECK(named || args.size() == 1, "cli.bad-option", "--embeddings '", a, "': with several embeddings files, ",
                "name each one as NAME=PATH (e.g. --embeddings clip=clip.npy --embeddings unicom=unicom.npy)");
  }
  for (size_t i = 0; i < out.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      TAXON_CHECK(out[i].model != out[j].model, "cli.bad-option", "--embeddings: the name '", out[i].model,
                  "' is given twice");
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string labels_path, group_column, model = "model", out, device_spec = "auto";
  std::vector<std::string> embeddings_args;
  std::vector<std::string> rank_specs;
  bool nfhm_compat = false, normalize = false, clean_labels = true;
  std::string recall_definition = "pml";
  uint64_t seed = 0;
  double test_size = 0.2;
  CLI::App app{"taxon-eval: the seeds' taxonomy retrieval table for a set of embeddings"};
  taxon_eval::ZeroShotArgs zs;
  bool zero_shot = false;
  app.add_option("--embeddings", embeddings_args,
                 "[N, D] embeddings (.npy), or NAME=FILE, repeatable: one table with a block of rows per NAME (the "
                 "model column); with --zero-shot, one file or none (--images embeds them)");
  app.add_option("--labels", labels_path, "CSV with N rows of labels, in embedding order")->required();
  app.add_option("--rank", rank_specs,
                 "RANK=COLUMN, RANK=@genus(COLUMN) for the binomial's first token, or RANK==VALUE for a constant "
                 "(repeatable; the first rank is the one Recall@K and MAP@R use)")->required();
  app.add_option("--group-column", group_column, "column whose values get their own rows (e.g. taxa); empty: All only");
  app.add_option("--model", model, "model name for the table's first column (one unnamed --embeddings)")->capture_default_str();
  app.add_option("--out", out, "write the table here (.csv; a .md Markdown copy is written beside it)");
  app.add_option("--seed", seed, "split seed")->capture_default_str();
  app.add_option("--test-size", test_size, "query fraction of each group")->capture_default_str();
  app.add_flag("--nfhm-compat", nfhm_compat, "reproduce the seeds' distance_individual bug (= accuracy_individual)");
  app.add_flag("--normalize", normalize, "L2-normalise embeddings first (the seeds use raw embeddings)");
  app.add_option("--clean-labels", clean_labels,
                 "the seeds' label cleaning: strip whitespace from group values, drop rows whose first rank "
                 "(scientific name) is blank")->capture_default_str();
  app.add_option("--recall-definition", recall_definition,
                 "pml: queries with no other sample of their label are excluded from Recall@K; unicom: they count "
                 "as misses (UNICOM's get_metric)")->check(CLI::IsMember({"pml", "unicom"}))->capture_default_str();
  app.add_flag("--zero-shot", zero_shot, "also zero-shot top-1/top-5 per rank and group from the text tower of --weights");
  app.add_option("--weights", zs.weights, "CLIP checkpoint with a text tower (OpenAI .pt, open_clip, taxon)");
  app.add_option("--vocab", zs.vocab, "CLIP BPE vocabulary (default: bpe_simple_vocab_16e6.txt.gz next to --weights)");
  app.add_option("--images", zs.images, "image root for --path-column (embeds the images with --weights' visual tower)");
  app.add_option("--path-column", zs.path_column, "CSV column holding each row's image path")->capture_default_str();
  app.add_option("--template", zs.templates, "prompt template, repeatable ({} name, {taxonomic}, {RANK}); replaces the default sets");
  app.add_option("--zero-shot-out", zs.out, "write the zero-shot table here (.csv; a .md copy beside it)");
  app.add_option("--device", device_spec, "auto (the first GPU when there is one, else the CPU), cpu, cuda or cuda:N")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    const auto device = parse_device(device_spec);
    log::info("device: ", device.describe());
    configure_threads();
    const auto inputs = name_embeddings(embeddings_args, model);
    TAXON_CHECK(!inputs.empty() || (zero_shot && !zs.weights.empty()), "cli.missing-option",
                "--embeddings is required (or --zero-shot --weights CKPT to embed the images the CSV lists)");
    TAXON_CHECK(!zero_shot || !zs.weights.empty(), "cli.missing-option", "--zero-shot needs --weights CKPT");
    TAXON_CHECK(!zero_shot || inputs.size() <= 1, "cli.bad-option", "--zero-shot classifies with the text tower of ",
                zs.weights, ", which matches one set of image embeddings; got ", inputs.size(), " --embeddings");
    std::optional<text::ClipModel> clip;
    if (zero_shot) clip = text::load_clip(zs.weights);
    const auto csv = data::CsvTable::read(labels_path);
    std::vector<at::Tensor> all_embeddings;
    for (const auto& in : inputs) {
      all_embeddings.push_back(io::load_npy(in.path).to(at::kFloat));
      const auto& e = all_embeddings.back();
      TAXON_CHECK(e.dim() == 2, "cli.bad-embeddings", in.path, ": expected [N, D], got ", e.sizes());
      TAXON_CHECK(csv.num_rows() == e.size(0), "cli.label-mismatch", labels_path, " has ", csv.num_rows(),
                  " rows but ", in.path, " has ", e.size(0), " embeddings");
    }
    if (inputs.empty()) {  // --zero-shot --weights without --embeddings: embed the images the CSV lists
      all_embeddings.push_back(taxon_eval::embed_csv_images(clip->visual, labels_path, zs));
      TAXON_CHECK(csv.num_rows() == all_embeddings.back().size(0), "cli.label-mismatch", labels_path, " has ",
                  csv.num_rows(), " rows but ", all_embeddings.back().size(0), " images were embedded");
    }
    const at::Tensor& embeddings = all_embeddings.front();

    eval::TaxonomyColumns columns;
    for (const auto& spec : rank_specs) {
      const auto rank = data::parse_rank_spec(spec);
      columns.ranks.emplace_back(rank.rank, data::rank_values(csv, rank));
    }
    // The All row's label column is named `taxa` whatever --group-column is called, as in the seeds' table.
    auto options = eval::TaxonomyEvalOptions().seed(seed).test_size(test_size)
                       .nfhm_compat(nfhm_compat).normalize(normalize).clean_labels(clean_labels)
                       .device(device.device);
    if (group_column.empty()) {
      columns.taxa.assign(static_cast<size_t>(csv.num_rows()), "All");
      options.groups({"All"}).include_all(false);
    } else {
      const auto col = csv.column(group_column);
      for (int64_t i = 0; i < csv.num_rows(); ++i) columns.taxa.push_back(csv.cell(i, col));
    }
    // One table, a block of rows per model (the same seeded split for every model), as the seeds' model-eval does.
    eval::TaxonomyTable table;
    for (size_t i = 0; i < all_embeddings.size(); ++i) {
      const std::string name = inputs.empty() ? model : inputs[i].model;
      const auto one = eval::TaxonomyEvaluator(options.model(name)).evaluate(all_embeddings[i], columns);
      table.rows.insert(table.rows.end(), one.rows.begin(), one.rows.end());
      table.cleaning = one.cleaning;  // the same rows for every model
    }
    std::cout << table.to_csv();

    // Retrieval over the rows the table kept (the same cleaning), for every model.
    eval::TaxonomyColumns kept_columns;
    eval::LabelCleaning cleaning;
    std::vector<int64_t> kept;
    if (clean_labels) kept = eval::clean_taxonomy_columns(columns, kept_columns, cleaning);
    const auto& retrieval_columns = clean_labels ? kept_columns : columns;
    const auto definition = eval::recall_definition_from_string(recall_definition);
    const auto ids = eval::encode_labels(retrieval_columns.ranks.front().second).ids;
    std::vector<eval::RetrievalMetrics> metrics;
    std::printf("\n");
    for (size_t i = 0; i < all_embeddings.size(); ++i) {
      const std::string name = inputs.empty() ? model : inputs[i].model;
      const at::Tensor& e = all_embeddings[i];
      const at::Tensor kept_embeddings = clean_labels ? e.index_select(0, at::tensor(kept, at::kLong).to(e.device())) : e;
      metrics.push_back(eval::evaluate_retrieval(kept_embeddings, ids, eval::RetrievalOptions().device(device.device)
                                                   .recall_definition(definition).progress_label("retrieval " + name)));
      const auto& m = metrics.back();
      std::printf("%s %s leave-one-out: Recall@1 %.2f%%  Recall@5 %.2f%%  MAP@R %.2f%%  R-precision %.2f%%\n",
                  name.c_str(), retrieval_columns.ranks.front().first.c_str(), 100 * m.recall_at(1),
                  100 * m.recall_at(5), 100 * m.map_at_r, 100 * m.r_precision);
    }
    std::printf("Recall@K definition: %s (%s; %lld such queries)\n", eval::to_string(definition),
                eval::describe(definition), static_cast<long long>(metrics.front().num_lone));
    if (!out.empty()) {
      table.write_csv(out);
      table.write_markdown(std::filesystem::path(out).replace_extension(".md"));
      // The seeds' table keeps their seven columns; what was cleaned and how Recall@K was defined go beside it.
      auto retrieval_json = [&](const eval::RetrievalMetrics& m) {
        return nlohmann::json{{"rank", retrieval_columns.ranks.front().first},
                              {"recall_definition", eval::to_string(definition)},
                              {"recall_definition_description", eval::describe(definition)},
                              {"lone_queries", m.num_lone}, {"recall_at_1", m.recall_at(1)}, {"recall_at_5", m.recall_at(5)},
                              {"precision_at_1", m.precision_at_1}, {"map_at_r", m.map_at_r}, {"r_precision", m.r_precision}};
      };
      // "retrieval" is the first (or only) model's; "retrieval_by_model" names every model's.
      nlohmann::json summary = {
          {"label_cleaning", {{"applied", table.cleaning.applied}, {"rows_in", table.cleaning.rows_in},
                              {"rows_dropped", table.cleaning.rows_dropped},
                              {"taxa_rewritten", table.cleaning.taxa_rewritten},
                              {"description", table.cleaning.describe()}}},
          {"retrieval", retrieval_json(metrics.front())}};
      for (size_t i = 0; i < metrics.size(); ++i)
        summary["retrieval_by_model"][inputs.empty() ? model : inputs[i].model] = retrieval_json(metrics[i]);
      io::write_text_atomically(std::filesystem::path(out).replace_extension(".json"), io::dump_json(summary, 2) + "\n");
    }
    if (zero_shot) {
      zs.clean_labels = clean_labels;
      const auto zs_table = taxon_eval::run_zero_shot(*clip, embeddings, columns, model, zs);
      std::cout << "\nzero-shot (" << zs.weights << "):\n" << zs_table.to_csv();
      if (!zs.out.empty()) {
        zs_table.write_csv(zs.out);
        zs_table.write_markdown(std::filesystem::path(zs.out).replace_extension(".md"));
      }
    }
    return 0;
  } catch (const taxon::Error& e) {
    std::cerr << "taxon-eval: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "taxon-eval: unexpected error: " << e.what() << "\n";
    return 1;
  }
}
