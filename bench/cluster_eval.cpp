// Clustering and evaluation at working scale: faiss k-means (n=262144, d=256, k=1024; GMAC/s), the seeds'
// full taxonomy table on 30,000 x 512 embeddings, and leave-one-out MAP@R on 100,000 x 512. Each reports
// seconds and peak resident memory (VmHWM, reset before the run through /proc/self/clear_refs).
#include "support/context.hpp"

#include "taxon/cluster/kmeans.hpp"
#include "taxon/eval/retrieval.hpp"
#include "taxon/eval/taxonomy.hpp"

#include <ATen/ATen.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>

namespace bench_cluster_eval {

// Peak RSS in MiB since the last reset.
inline double peak_rss_mib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  return -1;
}
inline void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

// CPU seconds of the whole process (all threads): with a loaded shared machine, work / CPU time is the
// figure that does not depend on what else runs.
inline double process_cpu_s() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

inline at::Tensor clustered(int64_t n, int64_t d, int64_t centres, double noise, uint64_t seed, at::Tensor* labels) {
  auto gen = taxon::make_generator(seed);
  auto c = at::randn({centres, d}, gen);
  *labels = at::randint(0, centres, {n}, gen);
  return c.index_select(0, *labels) + noise * at::randn({n, d}, gen);
}

inline int niter_from_env() {
  const char* env = std::getenv("TAXON_BENCH_KMEANS_NITER");
  return env ? std::max(1, std::atoi(env)) : 5;
}

}  // namespace bench_cluster_eval

static void BM_FaissKMeans(benchmark::State& state) {
  using namespace taxon::cluster;
  const int64_t n = 262144, d = 256, k = 1024;
  const int niter = bench_cluster_eval::niter_from_env();
  at::Tensor truth;
  auto x = bench_cluster_eval::clustered(n, d, k, 0.5, 1, &truth);
  KMeans km(KMeansOptions().k(k).niter(niter).seed(1234).backend(KMeansBackend::faiss).verbose(false));
  bench_cluster_eval::reset_peak_rss();
  double seconds = 0, cpu = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = bench_cluster_eval::process_cpu_s();
    auto r = km.fit(x);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    cpu = bench_cluster_eval::process_cpu_s() - c0;
    benchmark::DoNotOptimize(r.labels);
  }
  // MACs: niter training assignments plus the final assignment of all N points.
  const double macs = static_cast<double>(n) * d * k * (niter + 1);
  state.counters["niter"] = niter;
  state.counters["seconds"] = seconds;
  state.counters["s_per_iter"] = seconds / (niter + 1);
  state.counters["GMAC/s"] = macs / seconds / 1e9;
  state.counters["cpu_s"] = cpu;
  // The rate two uncontended threads would reach if each got a whole core.
  state.counters["GMAC/s_2cores"] = 2 * macs / cpu / 1e9;
  state.counters["peak_MiB"] = bench_cluster_eval::peak_rss_mib();
}
BENCHMARK(BM_FaissKMeans)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

static void BM_TaxonomyTable(benchmark::State& state) {
  using namespace taxon::eval;
  // VLM4Bio scale: 3 taxa x 10,000 images, 400 species in 100 genera per taxon.
  const int64_t per_taxon = 10000, species_per_taxon = 400, d = 512;
  auto gen = taxon::make_generator(2);
  const int64_t n = 3 * per_taxon;
  // Row i belongs to taxon i / 10,000 and to one of that taxon's 400 species (4 species per genus).
  auto sp = at::arange(n, at::kLong).div(per_taxon, "floor") * species_per_taxon +
            at::randint(0, species_per_taxon, {n}, gen);
  auto emb = at::randn({3 * species_per_taxon, d}, gen).index_select(0, sp) + 1.5 * at::randn({n, d}, gen);
  std::vector<std::string> taxa, species;
  const char* names[] = {"Fish", "Bird", "Butterfly"};
  auto spp = sp.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = i / per_taxon;
    const int64_t s = spp[i];
    taxa.push_back(names[t]);
    species.push_back(std::string(names[t]) + "_g" + std::to_string(s / 4) + " sp" + std::to_string(s));
  }
  auto columns = TaxonomyColumns::from_species(taxa, species);
  TaxonomyEvaluator ev(TaxonomyEvalOptions().model("bench").seed(0));
  bench_cluster_eval::reset_peak_rss();
  double seconds = 0, acc = 0, cpu = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = bench_cluster_eval::process_cpu_s();
    auto table = ev.evaluate(emb, columns);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    cpu = bench_cluster_eval::process_cpu_s() - c0;
    acc = table.at("All", "species").accuracy_individual;
  }
  state.counters["seconds"] = seconds;
  state.counters["rows"] = 9;
  state.counters["cpu_s"] = cpu;
  state.counters["all_species_acc"] = acc;
  state.counters["peak_MiB"] = bench_cluster_eval::peak_rss_mib();
}
BENCHMARK(BM_TaxonomyTable)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

static void BM_MapAtR(benchmark::State& state) {
  using namespace taxon::eval;
  const int64_t n = 100000, d = 512;
  const auto backend = state.range(0) == 0 ? KnnBackend::faiss : KnnBackend::torch;
  at::Tensor labels;
  auto x = bench_cluster_eval::clustered(n, d, 1000, 1.5, 3, &labels);  // ~100 per class: R ~ 99
  bench_cluster_eval::reset_peak_rss();
  double seconds = 0, cpu = 0;
  RetrievalMetrics m;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = bench_cluster_eval::process_cpu_s();
    m = evaluate_retrieval(x, labels, RetrievalOptions().backend(backend).recall_at({1, 5, 10}));
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    cpu = bench_cluster_eval::process_cpu_s() - c0;
  }
  state.SetLabel(backend == KnnBackend::faiss ? "faiss" : "torch");
  state.counters["seconds"] = seconds;
  state.counters["k_used"] = static_cast<double>(m.k_used);
  state.counters["MAP@R"] = m.map_at_r;
  state.counters["R@1"] = m.recall_at(1);
  state.counters["GMAC/s"] = static_cast<double>(n) * n * d / seconds / 1e9;
  state.counters["cpu_s"] = cpu;
  state.counters["peak_MiB"] = bench_cluster_eval::peak_rss_mib();
}
BENCHMARK(BM_MapAtR)->Arg(0)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

