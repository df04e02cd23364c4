// libFuzzer harness: metadata CSVs (taxon::data::CsvTable and CsvImageDataset), e.g. a VLM4Bio or BIOSCAN table.
#include "support.hpp"
#include "taxon/data/csv.hpp"
#include "taxon/data/image_dataset.hpp"

TAXON_FUZZ_TARGET(csv) {
  const std::string_view text = taxon::fuzz::as_text(data, size);
  taxon::fuzz::expect_only_taxon_errors([&] {
    const auto table = taxon::data::CsvTable::parse(text, "fuzz.csv");
    size_t total = 0;
    for (int64_t r = 0; r < table.num_rows(); ++r)
      for (int64_t c = 0; c < static_cast<int64_t>(table.header().size()); ++c) total += table.cell(r, c).size();
    for (const auto& name : table.header()) total += static_cast<size_t>(table.column(name));
    (void)total;
    if (table.header().size() < 2) return;
    // As a dataset's metadata: the first column holds image paths (relative to an empty folder, so every row is a
    // missing file), the second the species, its first token the genus.
    const auto csv = taxon::fuzz::write_input("meta.csv", text);
    const auto options = taxon::data::CsvImageDatasetOptions()
                             .path_column(table.header()[0])
                             .ranks({taxon::data::RankSpec::column("species", table.header()[1]),
                                     taxon::data::RankSpec::genus_from("genus", table.header()[1]),
                                     taxon::data::RankSpec::constant("taxa", "Fish")})
                             .missing_files(taxon::data::MissingFilePolicy::skip)
                             .add_source(csv, taxon::fuzz::scratch_dir() / "no-images");
    const taxon::data::CsvImageDataset dataset(options);
    (void)dataset.size();
  });
}
