// libFuzzer harness: taxon's JSON configs: a ViT config (the "config" metadata of taxon checkpoints, also written
// to run directories) and a taxonomy file (Taxonomy::load_json).
#include "support.hpp"
#include "taxon/backbone/vit.hpp"
#include "taxon/data/taxonomy.hpp"

TAXON_FUZZ_TARGET(json_config) {
  const std::string_view text = taxon::fuzz::as_text(data, size);
  taxon::fuzz::expect_only_taxon_errors([&] {
    const auto options = taxon::backbone::vit_options_from_json(text, "fuzz config");
    (void)options.tokens();
    (void)taxon::backbone::vit_state_numel(options);
  });
  taxon::fuzz::expect_only_taxon_errors([&] {
    const auto taxonomy = taxon::data::Taxonomy::load_json(taxon::fuzz::write_input("taxonomy.json", text));
    for (int64_t r = 0; r < taxonomy.num_ranks(); ++r) (void)taxonomy.labels(r).size();
  });
}
