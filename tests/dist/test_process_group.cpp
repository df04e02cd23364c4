// Every collective of taxon::dist::ProcessGroup across the ranks taxon_launch started (2 or 4 in ctest), plus the
// launch-environment parsing (one process).
#include "dist/dist_support.hpp"
#include "support/tensor_compare.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>

namespace test_process_group {
using taxon::dist::ProcessGroup;
using taxon::dist::ReduceOp;

// Sets environment variables for one test and restores them afterwards.
class EnvScope {
 public:
  explicit EnvScope(const std::map<std::string, std::optional<std::string>>& values) {
    for (const auto& [name, value] : values) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
      set(name, value);
    }
  }
  ~EnvScope() {
    for (const auto& [name, value] : saved_) set(name, value);
  }

 private:
  static void set(const std::string& name, const std::optional<std::string>& value) {
    if (value) {
      ::setenv(name.c_str(), value->c_str(), 1);
    } else {
      ::unsetenv(name.c_str());
    }
  }
  std::map<std::string, std::optional<std::string>> saved_;
};

const std::map<std::string, std::optional<std::string>> no_launcher = {
    {"RANK", std::nullopt},         {"WORLD_SIZE", std::nullopt},    {"LOCAL_RANK", std::nullopt},
    {"MASTER_ADDR", std::nullopt},  {"MASTER_PORT", std::nullopt},   {"SLURM_PROCID", std::nullopt},
    {"SLURM_NTASKS", std::nullopt}, {"SLURM_LOCALID", std::nullopt}, {"SLURM_NODELIST", std::nullopt},
    {"SLURM_JOB_NODELIST", std::nullopt}};

std::map<std::string, std::optional<std::string>> with(std::map<std::string, std::optional<std::string>> changes) {
  auto all = no_launcher;
  for (auto& [k, v] : changes) all[k] = v;
  return all;
}
}  // namespace test_process_group

using namespace test_process_group;

TEST_CASE("launch environment: nothing set is a single process", "[env]") {
  EnvScope env(no_launcher);
  const auto e = taxon::dist::launch_environment_from_env();
  CHECK(e.launcher == "single");
  CHECK(e.world_size == 1);
  CHECK(e.rank == 0);
  CHECK(e.master_addr.empty());
  const ProcessGroup g = ProcessGroup::from_environment();
  CHECK_FALSE(g.distributed());
}

TEST_CASE("launch environment: torchrun variables", "[env]") {
  EnvScope env(with({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node7"},
                     {"MASTER_PORT", "29501"}, {"SLURM_PROCID", "0"}}));
  const auto e = taxon::dist::launch_environment_from_env();
  CHECK(e.launcher == "torchrun");
  CHECK(e.rank == 3);
  CHECK(e.world_size == 4);
  CHECK(e.local_rank == 1);
  CHECK(e.master_addr == "node7");
  CHECK(e.master_port == 29501);
}

TEST_CASE("launch environment: SLURM variables and the first host of the node list", "[env]") {
  {
    EnvScope env(with({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "16"}, {"SLURM_LOCALID", "1"},
                       {"SLURM_NODELIST", "gpu[07-09,12],cpu1"}}));
    const auto e = taxon::dist::launch_environment_from_env();
    CHECK(e.launcher == "slurm");
    CHECK(e.rank == 5);
    CHECK(e.world_size == 16);
    CHECK(e.local_rank == 1);
    CHECK(e.master_addr == "gpu07");
    CHECK(e.master_port == taxon::dist::default_master_port);
  }
  {
    EnvScope env(with({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_NODELIST", "a1,b2"},
                       {"MASTER_PORT", "1234"}}));
    const auto e = taxon::dist::launch_environment_from_env();
    CHECK(e.master_addr == "a1");
    CHECK(e.master_port == 1234);
  }
}

TEST_CASE("launch environment: contradictory or malformed values name the variable", "[env]") {
  const auto error_of = [](const std::map<std::string, std::optional<std::string>>& changes) {
    EnvScope env(with(changes));
    try {
      taxon::dist::launch_environment_from_env();
    } catch (const taxon::Error& e) {
      CHECK(e.id() == "dist.bad-launch-environment");
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(error_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}),
             Catch::Contains("RANK=2 is not below WORLD_SIZE=2"));
  CHECK_THAT(error_of({{"RANK", "0"}, {"WORLD_SIZE", "two"}}), Catch::Contains("WORLD_SIZE='two'"));
  CHECK_THAT(error_of({{"RANK", "0"}}), Catch::Contains("WORLD_SIZE is not set"));
  CHECK_THAT(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}}), Catch::Contains("MASTER_ADDR is not set"));
  CHECK_THAT(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}}),
             Catch::Contains("MASTER_PORT='70000'"));
  CHECK_THAT(error_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}}), Catch::Contains("SLURM_NODELIST"));
}

TEST_CASE("single process group: every collective is the identity", "[env]") {
  ProcessGroup g = ProcessGroup::single();
  CHECK(g.rank() == 0);
  CHECK(g.world_size() == 1);
  at::Tensor t = at::arange(6, at::kFloat);
  const at::Tensor copy = t.clone();
  g.all_reduce_(t, ReduceOp::max);
  g.broadcast_(t);
  g.barrier();
  CHECK(t.equal(copy));
  CHECK(g.all_gather(t).equal(copy));
  CHECK(g.all_gather_uneven(t).equal(copy));
}

TEST_CASE("all_reduce_ sums, maxes and mins across ranks in every dtype", "[collectives]") {
  auto& g = taxon::test::dist_group();
  REQUIRE(g.distributed());
  const int r = g.rank(), w = g.world_size();
  for (const auto dtype : {at::kFloat, at::kDouble, at::kLong, at::kInt, at::kBFloat16}) {
    CAPTURE(dtype);
    // rank r holds [r, r+1, ..., r+4]: sum is w*i + w(w-1)/2, max is i + w-1, min is i.
    const at::Tensor base = at::arange(5, at::kDouble);
    at::Tensor sum = (base + r).to(dtype), max = (base + r).to(dtype), min = (base + r).to(dtype);
    g.all_reduce_(sum);
    g.all_reduce_(max, ReduceOp::max);
    g.all_reduce_(min, ReduceOp::min);
    CHECK(sum.scalar_type() == dtype);
    CHECK(sum.to(at::kDouble).equal(base * w + w * (w - 1) / 2.0));
    CHECK(max.to(at::kDouble).equal(base + (w - 1)));
    CHECK(min.to(at::kDouble).equal(base));
  }
}

TEST_CASE("all_reduce_ writes back into a non-contiguous tensor", "[collectives]") {
  auto& g = taxon::test::dist_group();
  at::Tensor storage = at::ones({3, 4});
  at::Tensor column = storage.select(1, 2);  // stride 4
  const taxon::dist::CollectiveStats before = g.stats();
  g.all_reduce_(column);
  CHECK(g.stats().calls == before.calls + 1);
  CHECK(g.stats().payload_bytes == before.payload_bytes + 3 * 4);
  CHECK(g.stats().seconds > before.seconds);
  CHECK(storage.select(1, 2).equal(at::full({3}, static_cast<double>(g.world_size()))));
  CHECK(storage.select(1, 1).equal(at::ones({3})));
}

TEST_CASE("all_gather concatenates equal shapes in rank order", "[collectives]") {
  auto& g = taxon::test::dist_group();
  const int r = g.rank(), w = g.world_size();
  const at::Tensor mine = at::full({2, 3}, static_cast<double>(r), at::kFloat) + at::arange(3, at::kFloat);
  const at::Tensor all = g.all_gather(mine);
  REQUIRE(all.sizes() == c10::IntArrayRef({2 * w, 3}));
  for (int other = 0; other < w; ++other) {
    CHECK(all.narrow(0, 2 * other, 2).equal(at::full({2, 3}, static_cast<double>(other)) + at::arange(3)));
  }
  const at::Tensor flags = g.all_gather(at::full({1}, r % 2 == 0, at::kBool));
  CHECK(flags.sizes() == c10::IntArrayRef({w}));
  CHECK(flags[1].item<bool>() == false);
  const at::Tensor ids = g.all_gather(at::full({1}, std::int64_t{1} << 40 | r, at::kLong));
  CHECK(ids[w - 1].item<std::int64_t>() == (std::int64_t{1} << 40 | (w - 1)));
}

TEST_CASE("all_gather_uneven concatenates per-rank row counts, including none", "[collectives]") {
  auto& g = taxon::test::dist_group();
  const int r = g.rank(), w = g.world_size();
  // rank r contributes r rows of value r (rank 0 none).
  const at::Tensor mine = at::full({r, 2}, static_cast<double>(r), at::kDouble);
  const at::Tensor all = g.all_gather_uneven(mine);
  REQUIRE(all.size(0) == w * (w - 1) / 2);
  REQUIRE(all.size(1) == 2);
  std::int64_t row = 0;
  for (int other = 0; other < w; ++other) {
    CHECK(all.narrow(0, row, other).equal(at::full({other, 2}, static_cast<double>(other), at::kDouble)));
    row += other;
  }
  CHECK(g.all_gather_uneven(at::zeros({0, 2})).sizes() == c10::IntArrayRef({0, 2}));
}

TEST_CASE("all_gather with different shapes is an error naming the rank on every rank", "[collectives]") {
  auto& g = taxon::test::dist_group();
  const int r = g.rank();
  REQUIRE_TAXON_ERROR(g.all_gather(at::zeros({r + 1, 2})), "dist.shape-mismatch");
  REQUIRE_TAXON_ERROR(g.all_gather_uneven(at::zeros({1, r + 1})), "dist.shape-mismatch");
  REQUIRE_TAXON_ERROR(g.all_gather_uneven(at::zeros({1}, r == 0 ? at::kFloat : at::kDouble)), "dist.shape-mismatch");
  try {
    g.all_gather(at::zeros({r + 1, 2}));
  } catch (const taxon::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains(r == 0 ? "rank 1 passed shape [2, 2]" : "rank 0 passed shape [1, 2]"));
  }
  // The group still works afterwards: the mismatch was found before any payload moved.
  at::Tensor t = at::ones({1});
  g.all_reduce_(t);
  CHECK(t.item<float>() == g.world_size());
}

TEST_CASE("broadcast_ copies the root's tensor to every rank", "[collectives]") {
  auto& g = taxon::test::dist_group();
  const int w = g.world_size();
  for (int root = 0; root < w; ++root) {
    at::Tensor t = at::full({4}, static_cast<double>(g.rank() * 10), at::kLong);
    g.broadcast_(t, root);
    CHECK(t.equal(at::full({4}, static_cast<double>(root * 10), at::kLong)));
  }
  at::Tensor t = at::zeros({1});
  REQUIRE_TAXON_ERROR(g.broadcast_(t, w), "dist.bad-rank");
  g.barrier();
}
