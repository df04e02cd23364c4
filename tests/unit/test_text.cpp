// The text side of CLIP: cleaning (ftfy subset, html.unescape, NFC, lower), the BPE tokenizer on a merges file
// built here and on the committed goldens (CLIP's real ids, tests/data/text/make_goldens.py), the text tower
// against upstream's features, CLIP checkpoints, embed_text and zero-shot evaluation.
#include "taxon/backbone/weights.hpp"
#include "taxon/backbone/zoo.hpp"
#include "taxon/io/safetensors.hpp"
#include "taxon/text/text.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support/gzip.hpp"
#include "support/temp_dir.hpp"
#include "support/tensor_compare.hpp"

namespace test_text {

namespace fs = std::filesystem;
using taxon::text::Tokenizer;

inline std::string u8(std::u32string_view s) { return taxon::text::encode_utf8(s); }
inline std::string cleaned(const std::string& s) { return u8(taxon::text::clean_for_clip(s)); }
inline std::string unescaped(const std::string& s) {
  return u8(taxon::text::html_unescape(taxon::text::decode_utf8(s)));
}

// Byte symbols as bytes_to_unicode spells them: printable ASCII is itself, space is U+0120 'Ġ'.
inline const char* kMerges =
    "#version: test\n"
    "t h\n"
    "th e</w>\n"
    "d o\n"
    "do g</w>\n"
    "' s</w>\n"
    "c a\n"
    "ca f\n"
    "\xC3\x83 \xC2\xA9</w>\n"  // "é" = bytes C3 A9 -> symbols U+00C3 U+00A9 ("Ã©")
    "caf \xC3\x83\xC2\xA9</w>";  // no final newline (see the trailing-newline case)

inline Tokenizer small_tokenizer(taxon::text::TokenizerOptions o = {}) {
  return Tokenizer::from_merges(kMerges, o, "test merges");
}

using taxon::test::gzip;

inline const fs::path kData = fs::path(TAXON_TEST_DATA_DIR) / "text";

inline nlohmann::json goldens() {
  std::ifstream in(kData / "goldens.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

inline at::Tensor ids_tensor(const nlohmann::json& cases, const char* field) {
  std::vector<int64_t> flat;
  for (const auto& c : cases)
    for (auto v : c[field]) flat.push_back(v.get<int64_t>());
  return at::tensor(flat, at::kLong).view({static_cast<int64_t>(cases.size()), -1});
}

}  // namespace test_text

using namespace test_text;

TEST_CASE("text cleaning: ftfy fixes, html.unescape, whitespace and lower-casing as CLIP's tokenizer", "[text]") {
  CHECK(cleaned("  Hello\t\tWORLD \u00a0 ") == "hello world");
  CHECK(cleaned("It\u2019s \u201cquoted\u201d") == "it's \"quoted\"");    // uncurl_quotes
  CHECK(cleaned("\uff26\uff49\uff53\uff48\u3000\ufb01n") == "fish fin");   // width map + ligature
  CHECK(cleaned("E\u0301rable") == "\u00e9rable");                           // NFC composes
  CHECK(cleaned("\x1b[31mred\x1b[0m") == "red");                             // terminal escapes
  CHECK(cleaned("a\x01" "b\x7f" "c") == "abc");                              // control characters
  CHECK(cleaned("\xc2\x93x\xc2\x94") == "\"x\"");                            // C1 controls as Windows-1252
  CHECK(cleaned("&amp;amp;amp;") == "&");                                    // ftfy repeats until unchanged
  CHECK(cleaned("a<b &amp;amp;amp;") == "a<b &amp;");                        // '<': only html.unescape (twice)
  CHECK(cleaned("&NTILDE;") == "\u00f1");                                    // ftfy's upper-case entity names
  CHECK(cleaned("\u039f\u0394\u039f\u03a3 \u03a3\u039f\u03a6\u0399\u0391\u03a3") ==
        "\u03bf\u03b4\u03bf\u03c2 \u03c3\u03bf\u03c6\u03b9\u03b1\u03c2");    // final sigma
  CHECK(cleaned("\u0130") == "i\u0307");                                     // one code point to two
  CHECK(cleaned("") == "");
  CHECK(cleaned("\xff" "ok") == "\ufffdok");                                 // invalid UTF-8 -> U+FFFD
}

TEST_CASE("html.unescape: named, legacy-prefix and numeric references as Python's", "[text]") {
  CHECK(unescaped("&lt;&gt;&amp;&quot;") == "<>&\"");
  CHECK(unescaped("&eacute;t&eacute;") == "\u00e9t\u00e9");
  CHECK(unescaped("&ampxyz &notit; &amp") == "&xyz \u00acit; &");  // longest legacy prefix
  CHECK(unescaped("&unknown; & &#") == "&unknown; & &#");
  CHECK(unescaped("&#65;&#x42;&#X43") == "ABC");
  CHECK(unescaped("&#0;&#128;&#xD800;&#x110000;") == "\ufffd\u20ac\ufffd\ufffd");  // invalid references
  CHECK(unescaped("a&#1;b") == "ab");                                               // invalid code point
  CHECK(unescaped("&#99999999999999999999;") == "\ufffd");
  CHECK(unescaped("&NotNestedGreaterGreater;") == "\u2aa2\u0338");
}

TEST_CASE("tokenizer: vocabulary layout, special ids and BPE merges on a small merges file", "[text]") {
  const auto t = small_tokenizer();
  // 256 bytes + 256 bytes</w> + 9 merges + start + end.
  CHECK(t.vocab_size() == 256 * 2 + 9 + 2);
  CHECK(t.sot_id() == 521);
  CHECK(t.eot_id() == 522);
  CHECK(t.encode("the") == std::vector<int64_t>{513});            // "th" then "the</w>"
  CHECK(t.encode("The dog") == std::vector<int64_t>{513, 515});  // lower-cased, one piece per word
  CHECK(t.encode("dogs") == std::vector<int64_t>{514, 'g' - 33, 's' - 33 + 256});
  CHECK(t.encode("caf\xc3\xa9") == std::vector<int64_t>{520});   // bytes of "é" merged into one symbol
  CHECK(t.decode(t.encode("The dog's caf\xc3\xa9")) == "the dog 's caf\xc3\xa9 ");
}

TEST_CASE("tokenizer: pre-split of contractions, numbers, punctuation, whitespace, unicode and specials", "[text]") {
  const auto t = small_tokenizer();
  auto pieces = [&](const std::string& s) { return t.decode(t.encode(s)); };
  CHECK(pieces("dog's") == "dog 's ");                       // contraction split off
  CHECK(pieces("dog'S") == "dog 's ");
  CHECK(pieces("dogs''s") == "dogs '' s ");                  // a punctuation run takes the apostrophes
  CHECK(pieces("it'll we're I'd") == "it 'll we 're i 'd ");
  CHECK(pieces("x'\xc5\xbf") == "x '\xc5\xbf ");             // 'ſ counts as 's (IGNORECASE)
  CHECK(pieces("2024") == "2 0 2 4 ");                        // one digit per piece
  CHECK(pieces("\u00bd\u00b2x\u0663") == "\u00bd \u00b2 x \u0663 ");
  CHECK(pieces("a,b...c!?") == "a , b ... c !? ");
  CHECK(pieces("  many \t\n spaces  ") == "many spaces ");
  CHECK(pieces("\u65e5\u672c\u8a9e \xf0\x9f\x90\x9f") == "\u65e5\u672c\u8a9e \xf0\x9f\x90\x9f ");
  CHECK(t.encode("") == std::vector<int64_t>{});
  CHECK(t.encode("   ") == std::vector<int64_t>{});
  // The literal special tokens become their ids; after punctuation they are just text.
  CHECK(t.encode("<|endoftext|>") == std::vector<int64_t>{t.eot_id()});
  CHECK(t.encode("<|StartOfText|>") == std::vector<int64_t>{t.sot_id()});
  CHECK(t.encode("?<|endoftext|>").size() > 1);
  // open_clip spells them differently: with its option, OpenAI's spelling is plain text.
  const auto oc = small_tokenizer(taxon::text::TokenizerOptions().special_tokens(taxon::text::SpecialTokens::open_clip));
  CHECK(oc.encode("<end_of_text>") == std::vector<int64_t>{oc.eot_id()});
  CHECK(oc.encode("<|endoftext|>").size() > 1);
}

TEST_CASE("tokenizer: tokenize pads to the context length and truncates ending with the end token", "[text]") {
  const auto t = small_tokenizer();
  const auto ids = t.tokenize({"", "the dog", "1 2 3 4 5 6 7 8 9"}, 8);
  REQUIRE(ids.sizes() == at::IntArrayRef({3, 8}));
  CHECK(at::equal(ids[0], at::tensor({521, 522, 0, 0, 0, 0, 0, 0}, at::kLong)));
  CHECK(at::equal(ids[1], at::tensor({521, 513, 515, 522, 0, 0, 0, 0}, at::kLong)));
  const int64_t one = '1' - 33 + 256;  // "1</w>"
  CHECK(at::equal(ids[2], at::tensor(std::vector<int64_t>{521, one, one + 1, one + 2, one + 3, one + 4, one + 5, 522}, at::kLong)));
  CHECK(t.tokenize({"x"}).size(1) == 77);
}

TEST_CASE("tokenizer: merges file reading (gzip or plain, header, trailing newline, limit) and errors", "[text]") {
  taxon::test::TempDir dir("taxon_test_text");
  {
    std::ofstream(dir / "merges.txt.gz", std::ios::binary) << gzip(kMerges);
    std::ofstream(dir / "merges.txt", std::ios::binary) << kMerges;
  }
  const auto gz = Tokenizer::from_file(dir / "merges.txt.gz");
  const auto plain = Tokenizer::from_file(dir / "merges.txt");
  CHECK(gz.encode("the dog") == plain.encode("the dog"));
  CHECK(gz.vocab_size() == 523);
  // Upstream splits on '\n': a short file ending in a newline has one empty merge, shifting the special ids.
  const auto trailing = Tokenizer::from_merges(std::string(kMerges) + "\n");
  CHECK(trailing.vocab_size() == 524);
  CHECK(trailing.eot_id() == 523);
  CHECK(trailing.encode("the") == std::vector<int64_t>{513});
  // Only the first max_merges lines after the header count.
  const auto limited = Tokenizer::from_merges(kMerges, taxon::text::TokenizerOptions().max_merges(2));
  CHECK(limited.vocab_size() == 516);
  CHECK(limited.encode("the") == std::vector<int64_t>{513});
  CHECK(limited.encode("dog").size() == 3);
  REQUIRE_TAXON_ERROR(Tokenizer::from_file(dir / "absent.txt.gz"), "text.missing-vocab");
  try {
    (void)Tokenizer::from_file(dir / "absent.txt.gz");
  } catch (const taxon::Error& e) {
    CHECK(std::string(e.what()).find("open_clip/bpe_simple_vocab_16e6.txt.gz") != std::string::npos);
  }
  REQUIRE_TAXON_ERROR(Tokenizer::from_merges("just a header"), "text.bad-vocab");
  REQUIRE_TAXON_ERROR(taxon::text::find_vocab({}, dir / "model.safetensors"), "text.missing-vocab");
  std::ofstream(dir / "bpe_simple_vocab_16e6.txt.gz", std::ios::binary) << gzip(kMerges);
  CHECK(taxon::text::find_vocab({}, dir / "model.safetensors") == dir / "bpe_simple_vocab_16e6.txt.gz");
}

TEST_CASE("tokenizer goldens: CLIP's real token ids from upstream's SimpleTokenizer", "[text][golden]") {
  const auto g = goldens();
  const auto padded = Tokenizer::from_file(kData / "merges_padded.txt.gz");
  const auto compact = Tokenizer::from_file(kData / "merges_compact.txt.gz");
  CHECK(padded.sot_id() == 49406);
  CHECK(padded.eot_id() == 49407);
  for (const auto& c : g["cases"]) {
    const std::string text = c["text"];
    INFO("text: " << text);
    const auto real = padded.tokenize({text});
    const auto small = compact.tokenize({text});
    CHECK(at::equal(real[0], ids_tensor(nlohmann::json::array({c}), "ids_real")[0]));
    CHECK(at::equal(small[0], ids_tensor(nlohmann::json::array({c}), "ids_compact")[0]));
  }
}

TEST_CASE("text tower goldens: features of upstream's CLIP.encode_text within 1e-5", "[text][golden]") {
  const auto g = goldens();
  const auto file = taxon::io::load_safetensors(kData / "tiny_text_tower.safetensors");
  const taxon::backbone::StateDict dict(file.tensors.begin(), file.tensors.end());
  auto tower = taxon::text::text_from_state_dict(dict, taxon::text::TextInferOptions().heads(2));
  CHECK(tower->options.width() == 16);
  CHECK(tower->options.layers() == 2);
  CHECK(tower->options.output_dim() == 8);
  CHECK(tower->options.context_length() == 77);
  CHECK(tower->options.vocab_size() == g["tower"]["vocab_size"].get<int64_t>());
  tower->eval();
  std::vector<float> flat;
  for (const auto& c : g["cases"])
    for (auto v : c["features"]) flat.push_back(v.get<float>());
  const auto expected = at::tensor(flat).view({static_cast<int64_t>(g["cases"].size()), 8});
  const auto ids = ids_tensor(g["cases"], "ids_compact");
  at::Tensor got;
  {
    at::NoGradGuard no_grad;
    got = tower->forward(ids);
  }
  const auto row_error = (got - expected).norm(2, {1}) / expected.norm(2, {1});
  INFO("max relative row error " << row_error.max().item<double>());
  CHECK(row_error.max().item<double>() < 1e-5);
  REQUIRE_TENSORS_CLOSE(got, expected, 1e-5, 1e-5 * expected.abs().max().item<double>());
  // Tokenizer + tower end to end through embed_text, in batches of 5.
  const auto tokenizer = Tokenizer::from_file(kData / "merges_compact.txt.gz");
  std::vector<std::string> texts;
  for (const auto& c : g["cases"]) texts.push_back(c["text"]);
  const auto embedded = taxon::embed_text(tower, tokenizer, texts, taxon::TextEmbedOptions().batch_size(5));
  REQUIRE_TENSORS_CLOSE(embedded, expected, 1e-5, 1e-5 * expected.abs().max().item<double>());
  // A stop request (Ctrl-C) ends it before the next batch, with the tower's mode as it was.
  int asked = 0;
  tower->train();
  REQUIRE_TAXON_ERROR(taxon::embed_text(tower, tokenizer, texts, taxon::TextEmbedOptions().batch_size(1)
                                                                   .stop_requested([&] { return ++asked == 2; })),
                      "text.interrupted");
  CHECK(asked == 2);
  CHECK(tower->is_training());
  tower->eval();
  // logit_scale kept as stored.
  CHECK(taxon::text::clip_detail::logit_scale_of(dict).item<double>() ==
        Approx(g["logit_scale"].get<double>()).epsilon(1e-6));
}

TEST_CASE("text tower: a causal mask and EOT pooling make batch padding and trimming irrelevant", "[text]") {
  at::manual_seed(3);
  taxon::text::TextTransformer tower(
      taxon::text::TextTransformerOptions().vocab_size(600).context_length(16).width(32).heads(4).layers(2).output_dim(8));
  tower->eval();
  at::NoGradGuard no_grad;
  // Row 0 ends at position 3, row 1 at position 9; ids after the end are padding (0).
  auto ids = at::zeros({2, 16}, at::kLong);
  ids[0].narrow(0, 0, 4).copy_(at::tensor({598, 10, 11, 599}, at::kLong));
  ids[1].narrow(0, 0, 10).copy_(at::tensor({598, 1, 2, 3, 4, 5, 6, 7, 8, 599}, at::kLong));
  const auto both = tower->forward(ids);
  const auto first = tower->forward(ids.narrow(0, 0, 1));
  const auto first_garbage = tower->forward(ids.narrow(0, 0, 1).clone().index_fill_(1, at::arange(4, 16), 7));
  REQUIRE_TENSORS_CLOSE(both[0], first[0], 1e-5, 1e-6);
  REQUIRE_TENSORS_CLOSE(first_garbage, first, 1e-5, 1e-6);  // tokens after the end cannot leak backwards
  // A different earlier token does change the features.
  auto changed = ids.narrow(0, 0, 1).clone();
  changed[0][1] = 12;
  CHECK_FALSE(taxon::test::allclose(tower->forward(changed), first, 1e-3, 1e-4));
  REQUIRE_TAXON_ERROR(tower->forward(at::full({1, 4}, 600, at::kLong)), "text.bad-token");
  REQUIRE_TAXON_ERROR(tower->forward(at::zeros({1, 17}, at::kLong)), "text.bad-input");
  REQUIRE_TAXON_ERROR(tower->forward(at::zeros({1, 4})), "text.bad-input");
}

TEST_CASE("CLIP checkpoints: taxon's format round trip, OpenAI/open_clip layouts, visual-only files", "[text]") {
  taxon::test::TempDir dir("taxon_test_text");
  at::manual_seed(5);
  taxon::text::ClipModel clip;
  clip.visual = taxon::backbone::make_vit("tiny");
  clip.text = taxon::text::TextTransformer(
      taxon::text::TextTransformerOptions().vocab_size(530).context_length(20).width(64).heads(2).layers(1)
          .output_dim(32).activation(taxon::backbone::Activation::gelu));
  clip.logit_scale = at::tensor(2.5);
  taxon::text::save_clip_checkpoint(dir / "clip.safetensors", clip);

  auto back = taxon::text::load_clip_safetensors(dir / "clip.safetensors");
  REQUIRE(back.has_text());
  CHECK(back.text->options == clip.text->options);
  CHECK(back.visual->options == clip.visual->options);
  CHECK(back.logit_scale.item<double>() == 2.5);
  const auto ids = at::randint(0, 528, {3, 20}, at::kLong).index_fill_(1, at::tensor({19}, at::kLong), 529);
  at::NoGradGuard no_grad;
  clip.text->eval();
  back.text->eval();
  REQUIRE_TENSORS_CLOSE(back.text->forward(ids), clip.text->forward(ids), 0, 0);
  // The visual-only loader reads the visual tower of the same file.
  const auto visual = taxon::backbone::load_checkpoint(dir / "clip.safetensors");
  CHECK(visual->options == clip.visual->options);

  // OpenAI / open_clip key layout without metadata (architecture inferred; heads = width / 64 = 1).
  const auto file = taxon::io::load_safetensors(dir / "clip.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> plain(file.tensors.begin(), file.tensors.end());
  taxon::io::save_safetensors(dir / "open_clip.safetensors", plain);
  auto inferred = taxon::text::load_clip_safetensors(
      dir / "open_clip.safetensors",
      taxon::text::ClipLoadOptions()
          .visual(taxon::backbone::InferOptions().heads(2).activation(taxon::backbone::Activation::gelu))
          .text(taxon::text::TextInferOptions().heads(2).activation(taxon::backbone::Activation::gelu)));
  REQUIRE(inferred.has_text());
  CHECK(inferred.text->options == clip.text->options);
  inferred.text->eval();
  REQUIRE_TENSORS_CLOSE(inferred.text->forward(ids), clip.text->forward(ids), 0, 0);
  // open_clip CustomTextCLIP puts the text tower under "text.".
  taxon::backbone::StateDict prefixed;
  for (const auto& [k, v] : file.tensors) prefixed[k.rfind("visual.", 0) == 0 || k == "logit_scale" ? k : "text." + k] = v;
  CHECK(taxon::text::text_state_dict(prefixed).size() == taxon::backbone::state_dict(*clip.text).size());

  // A visual-only checkpoint: no text tower, and asking for one is a clear error.
  taxon::backbone::save_checkpoint(dir / "vit.safetensors", clip.visual);
  CHECK_FALSE(taxon::text::load_clip_safetensors(dir / "vit.safetensors").has_text());
  taxon::backbone::StateDict visual_only;
  for (const auto& [k, v] : file.tensors)
    if (k.rfind("visual.", 0) == 0) visual_only[k] = v;
  CHECK_FALSE(taxon::text::clip_from_state_dict(visual_only, taxon::text::ClipLoadOptions().visual(
                                                                 taxon::backbone::InferOptions().heads(2)))
                  .has_text());
  REQUIRE_TAXON_ERROR(taxon::text::text_from_state_dict(visual_only), "text.no-text-tower");
  // A text tower with a missing block key is reported, not half-loaded.
  auto broken = taxon::text::text_state_dict(prefixed);
  broken.erase("transformer.resblocks.0.ln_2.bias");
  REQUIRE_TAXON_ERROR(taxon::text::text_from_state_dict(broken), "backbone.state-dict-mismatch");
}

TEST_CASE("zero-shot: prompts, taxonomic strings, template averaging and per-rank/group accuracy", "[text]") {
  using namespace taxon::text;
  CHECK(taxonomic_string({"Animalia", "Chordata", "Danio", "Danio rerio"}) == "Animalia Chordata Danio rerio");
  CHECK(taxonomic_string({"Salmo", "Salmo trutta fario"}) == "Salmo trutta fario");
  taxon::eval::TaxonomyColumns cols;
  cols.taxa = {"Fish", "Fish", "Fish", "Bird", "Bird", "Bird"};
  cols.ranks.emplace_back("species", std::vector<std::string>{"Danio rerio", "Danio rerio", "Salmo trutta", "Corvus corax",
                                                              "Corvus corone", "Corvus corax"});
  cols.ranks.emplace_back("genus", std::vector<std::string>{"Danio", "Danio", "Salmo", "Corvus", "Corvus", "Corvus"});
  cols.ranks.emplace_back("family", std::vector<std::string>{"Cyprinidae", "Cyprinidae", "Salmonidae", "Corvidae",
                                                             "Corvidae", ""});
  const auto species = class_prompts(cols, 0);
  REQUIRE(species.size() == 4);
  CHECK(species[0].name == "Corvus corax");
  CHECK(species[0].taxonomic == "Corvidae Corvus corax");  // family from its rows, genus not repeated
  CHECK(fill_template("a photo of {taxonomic}.", species[0]) == "a photo of Corvidae Corvus corax.");
  CHECK(fill_template("{} ({family})", species[3]) == "Salmo trutta (Salmonidae)");
  REQUIRE_TAXON_ERROR(fill_template("a {kingdom}", species[0]), "text.bad-template");

  // A fake text encoder: one axis per distinct word, so a prompt's feature is its bag of words.
  std::vector<std::string> vocabulary;
  std::vector<std::vector<std::string>> seen;
  TextEncoder encode = [&](const std::vector<std::string>& texts) {
    seen.push_back(texts);
    at::Tensor f = at::zeros({static_cast<int64_t>(texts.size()), 64});
    for (std::size_t i = 0; i < texts.size(); ++i) {
      std::string word;
      for (char c : texts[i] + " ") {
        if (c == ' ' || c == '.') {
          if (word.empty() || word == "a" || word == "photo" || word == "of") {
            word.clear();
            continue;
          }
          auto it = std::find(vocabulary.begin(), vocabulary.end(), word);
          if (it == vocabulary.end()) it = vocabulary.insert(vocabulary.end(), word);
          f[static_cast<int64_t>(i)][it - vocabulary.begin()] += 1;
          word.clear();
        } else {
          word += c;
        }
      }
    }
    return f;
  };
  // Images: rows 0-4 look like their species' name; row 5 (a Corvus corax) looks like Corvus corone.
  std::vector<std::string> looks = {"Danio rerio", "Danio rerio", "Salmo trutta", "Corvus corax", "Corvus corone",
                                    "Corvus corone"};
  const at::Tensor images = encode(looks);
  seen.clear();
  const auto table = evaluate_zero_shot(images, cols, encode,
                                        ZeroShotOptions().model("m").prompt_sets({{"clip", {"a photo of {}.", "{}"}}}));
  // Averaged over two templates: each template's class texts were encoded once per rank column (+ taxa).
  CHECK(seen.size() == 2 * 4);
  CHECK(table.at("clip", "All", "species").top1 == Approx(5.0 / 6));
  CHECK(table.at("clip", "All", "species").num_classes == 4);
  CHECK(table.at("clip", "Bird", "species").top1 == Approx(2.0 / 3));
  CHECK(table.at("clip", "Bird", "species").num_classes == 2);
  CHECK(table.at("clip", "Bird", "species").top5 == Approx(1.0));
  CHECK(table.at("clip", "Fish", "species").top1 == Approx(1.0));
  CHECK(table.at("clip", "All", "genus").top1 == Approx(1.0));
  CHECK(table.at("clip", "All", "family").num_queries == 5);  // the row without a family is not a query
  CHECK(table.at("clip", "All", "taxa").num_classes == 2);
  CHECK(table.to_csv().rfind("model,prompts,taxa,column,top1,top5,num_queries,num_classes\n", 0) == 0);
  CHECK(table.to_csv().find("m,clip,Bird,species,66.67%,100.00%,3,2") != std::string::npos);
  REQUIRE_TAXON_ERROR(evaluate_zero_shot(images.narrow(0, 0, 5), cols, encode), "text.bad-input");
  REQUIRE_TAXON_ERROR(evaluate_zero_shot(images.narrow(1, 0, 8), cols, encode), "text.dim-mismatch");

  // The seeds' label cleaning, as the taxonomy table does it: a row with a blank species is not a query at any
  // rank, and " Bird " is the Bird group (without cleaning: one more family query and a group of its own).
  auto messy = cols;
  messy.taxa.push_back(" Bird ");
  messy.taxa.push_back("Fish");
  for (auto& [rank, labels] : messy.ranks) labels.push_back(rank == "species" ? "Corvus corax" : rank == "genus" ? "Corvus" : "Corvidae");
  for (auto& [rank, labels] : messy.ranks) labels.push_back(rank == "family" ? "Cyprinidae" : "");
  const at::Tensor messy_images = encode({looks[0], looks[1], looks[2], looks[3], looks[4], looks[5], "Corvus corax", "Danio rerio"});
  const auto zs = ZeroShotOptions().model("m").prompt_sets({{"clip", {"{}"}}});
  const auto cleaned = evaluate_zero_shot(messy_images, messy, encode, zs);
  CHECK(cleaned.at("clip", "Bird", "species").num_queries == 4);
  CHECK(cleaned.at("clip", "All", "family").num_queries == 6);
  CHECK(cleaned.at("clip", "All", "taxa").num_queries == 7);
  REQUIRE_TAXON_ERROR(cleaned.at("clip", " Bird ", "species"), "text.no-such-row");
  const auto raw = evaluate_zero_shot(messy_images, messy, encode, ZeroShotOptions(zs).clean_labels(false));
  CHECK(raw.at("clip", "Bird", "species").num_queries == 3);
  CHECK(raw.at("clip", " Bird ", "species").num_queries == 1);
  CHECK(raw.at("clip", "All", "family").num_queries == 7);
}
