// The text side of CLIP on CPU: BPE tokenization (cleaning included) and text-tower throughput at the ViT-B/32
// text config (width 512, 12 blocks, 8 heads, 49,408-entry vocabulary). Short prompts (taxonomic names, ~10
// tokens) run on their own length thanks to causal-mask trimming; 77-token captions show the full cost.
// No CLIP vocabulary is bundled: the merges are built here so that every corpus word ends as one token.
#include "support/context.hpp"

#include "taxon/text/text.hpp"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <set>
#include <string>
#include <vector>

namespace bench_text {

inline const std::vector<std::string>& words() {
  static const std::vector<std::string> w = {
      "animalia", "chordata", "actinopterygii", "perciformes", "serranidae", "pseudanthias", "squamipinnis", "danio",
      "rerio",    "salmo",    "trutta",         "corvus",      "corax",      "aphaenogaster", "rudis",       "photo",
      "of",       "a",        "small",          "striped",     "fish",       "bird",          "insect",      "the"};
  return w;
}

// Merges that build each word left to right ("d a", "da n", ...), the word's last symbol carrying "</w>".
inline std::string merges() {
  std::string text = "#version: bench\n";
  std::set<std::string> seen;
  for (const auto& w : words()) {
    std::string left(1, w[0]);
    for (std::size_t i = 1; i < w.size(); ++i) {
      const std::string right = std::string(1, w[i]) + (i + 1 == w.size() ? "</w>" : "");
      const std::string line = left + " " + right;
      if (seen.insert(line).second) text += line + "\n";
      left += w[i];
    }
  }
  text.pop_back();
  return text;
}

inline std::vector<std::string> prompts(int64_t n, int64_t words_per_prompt) {
  std::vector<std::string> out;
  for (int64_t i = 0; i < n; ++i) {
    std::string p = "a photo of";
    for (int64_t k = 0; k < words_per_prompt; ++k) p += " " + words()[static_cast<std::size_t>((i * 7 + k * 3) % 24)];
    out.push_back(p + ".");
  }
  return out;
}

}  // namespace bench_text

static void BM_Tokenize(benchmark::State& state) {
  const auto tokenizer = taxon::text::Tokenizer::from_merges(bench_text::merges());
  const auto texts = bench_text::prompts(256, state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(tokenizer.tokenize(texts).data_ptr());
  state.counters["texts/s"] = benchmark::Counter(256.0 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Tokenize)->Arg(6)->Arg(70)->Unit(benchmark::kMillisecond)->UseRealTime();

static void BM_EmbedText_B32(benchmark::State& state) {
  const auto tokenizer = taxon::text::Tokenizer::from_merges(bench_text::merges());
  taxon::text::TextTransformer tower{taxon::text::TextTransformerOptions{}};  // ViT-B/32's text tower
  tower->eval();
  const auto texts = bench_text::prompts(64, state.range(0));
  const auto ids = tokenizer.tokenize(texts);
  c10::InferenceMode guard;
  benchmark::DoNotOptimize(tower->forward(ids));  // warm-up
  for (auto _ : state) benchmark::DoNotOptimize(tower->forward(ids).data_ptr());
  state.counters["texts/s"] = benchmark::Counter(64.0 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["tokens"] = static_cast<double>((ids.argmax(1).max().item<int64_t>() + 1));
}
BENCHMARK(BM_EmbedText_B32)->Arg(6)->Arg(70)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
