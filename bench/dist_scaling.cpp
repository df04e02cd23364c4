// bench_dist_scaling: the per-step cost of distributed training on this machine's Gloo ranks, for issue 15's
// scaling figure (docs/distributed.md, "Scaling"). Run once per world size; rank 0 reports:
//   build/bench/bench_dist_scaling                                   # 1 process
//   build/tests/dist/taxon_launch 2 -- build/bench/bench_dist_scaling
//   build/tests/dist/taxon_launch 4 -- build/bench/bench_dist_scaling
// Every benchmark has a fixed iteration count: all ranks must issue the same collectives in the same order.
// Counters: step_s (wall time per step on rank 0), collective_s and collective_fraction (time inside ProcessGroup
// calls, including waiting for slower ranks), payload_MB (bytes this rank handed to collectives per step) and
// ring_wire_MB (what a ring algorithm sends per rank for that payload: 2(W-1)/W for all-reduce, (W-1)/W of the
// gathered total for all-gather).
#include "support/context.hpp"

#include "taxon/dist/process_group.hpp"
#include "taxon/pfc/partial_fc.hpp"

#include <ATen/ATen.h>
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {
taxon::dist::ProcessGroup& group() {
  static taxon::dist::ProcessGroup g = taxon::dist::ProcessGroup::from_environment(
      taxon::dist::ProcessGroupOptions().timeout(std::chrono::minutes(10)));
  return g;
}

void report(benchmark::State& state, const taxon::dist::CollectiveStats& before, double wire_bytes_per_step,
            double step_seconds_total) {
  const auto after = group().stats();
  const double steps = static_cast<double>(state.iterations());
  state.counters["world_size"] = group().world_size();
  state.counters["step_s"] = step_seconds_total / steps;
  state.counters["collective_s"] = (after.seconds - before.seconds) / steps;
  state.counters["collective_fraction"] = (after.seconds - before.seconds) / step_seconds_total;
  state.counters["payload_MB"] = static_cast<double>(after.payload_bytes - before.payload_bytes) / steps / 1e6;
  state.counters["ring_wire_MB"] = wire_bytes_per_step / 1e6;
}

// Data-parallel gradient averaging: ViT-B/32's 87.8M parameters as fp32 gradients, all-reduced in 25 MB buckets
// (DDP's default bucket size), then divided by W. Arg: parameters in millions.
void BM_GradientAllReduce(benchmark::State& state) {
  const std::int64_t params = state.range(0) * 1'000'000;
  const std::int64_t bucket = 25'000'000 / 4;
  at::Tensor grads = at::randn({params});
  const double w = group().world_size();
  const auto before = group().stats();
  double total = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    for (std::int64_t offset = 0; offset < params; offset += bucket) {
      at::Tensor b = grads.narrow(0, offset, std::min(bucket, params - offset));
      group().all_reduce_(b);
    }
    grads.div_(w);
    total += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  report(state, before, 2.0 * (w - 1) / w * static_cast<double>(params) * 4, total);
}
BENCHMARK(BM_GradientAllReduce)->Arg(88)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();

// One step (forward + backward) of the sharded PartialFC head, fused loss, ArcFace, sample_rate 0.1 (PFC-0.1),
// D = 512, 32 rows per rank (global batch 32·W). Arg: classes in thousands.
void BM_ShardedPFCStep(benchmark::State& state) {
  const std::int64_t classes = state.range(0) * 1000, dim = 512, rows = 32;
  using Head = taxon::pfc::PartialFC<taxon::loss::ArcFace, taxon::pfc::UniformNegatives>;
  Head head(taxon::pfc::PartialFCOptions(classes, dim).process_group(group()).seed(1), taxon::loss::ArcFace(),
            taxon::pfc::UniformNegatives(0.1));
  at::Generator gen = taxon::make_generator(9, {static_cast<std::uint64_t>(group().rank())});
  const at::Tensor labels = at::randint(classes, {rows}, gen, at::kLong);
  at::Tensor embeddings = at::randn({rows, dim}, gen).requires_grad_(true);
  const double w = group().world_size(), B = rows * w;
  const auto before = group().stats();
  double total = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    head->zero_grad();
    embeddings.mutable_grad() = at::Tensor();
    at::Tensor loss = head->forward(embeddings, labels);
    loss.backward();
    total += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  // Gathers: (W-1)/W of B·D floats and B labels; all-reduces: 3·B floats forward, B·D floats backward.
  const double wire = (w - 1) / w * B * (dim * 4 + 8) + 2.0 * (w - 1) / w * (3 * B * 4 + B * dim * 4);
  report(state, before, wire, total);
  state.counters["classes_per_rank"] = static_cast<double>(head->shard().num_local);
}
BENCHMARK(BM_ShardedPFCStep)->Arg(1000)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (group().rank() != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) return 1;  // rank 0 reports
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
