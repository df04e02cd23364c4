#pragma once
// Checkpoint directories written atomically: everything goes into a hidden temporary sibling directory that is
// renamed into place only when complete, and then the `latest` pointer file is replaced atomically. A crash at
// any point leaves `latest` naming the previous, complete checkpoint.
#include "taxon/core/error.hpp"
#include "taxon/core/log.hpp"
#include "taxon/io/atomic_file.hpp"
#include "taxon/io/pickle.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Dict.h>
#include <torch/nn/module.h>
#include <torch/serialize.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace taxon::train {

namespace fs = std::filesystem;

inline constexpr const char* latest_pointer_file = "latest";
inline constexpr const char* trainer_state_file = "trainer.json";

inline std::string checkpoint_name(int64_t global_step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%09lld", static_cast<long long>(global_step));
  return buf;
}

// Creates root/name by filling a temporary directory and renaming it, then points root/latest at it.
// On any exception the temporary directory is removed and root/latest is unchanged.
inline fs::path write_checkpoint_dir(const fs::path& root, const std::string& name,
                                     const std::function<void(const fs::path& dir)>& fill) {
  std::error_code ec;
  fs::create_directories(root, ec);
  TAXON_CHECK(!ec, "io.cannot-write", "cannot create checkpoint directory ", root.string(), ": ", ec.message());
  std::random_device rd;
  const fs::path tmp = root / ("." + name + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd()));
  const fs::path target = root / name;
  try {
    fs::create_directories(tmp, ec);
    TAXON_CHECK(!ec, "io.cannot-write", "cannot create ", tmp.string(), ": ", ec.message());
    fill(tmp);
    io::fsync_path(tmp);
    if (fs::exists(target)) fs::remove_all(target);  // re-saving the same step replaces it
    fs::rename(tmp, target, ec);
    TAXON_CHECK(!ec, "io.cannot-write", "cannot rename ", tmp.string(), " to ", target.string(), ": ", ec.message());
    io::fsync_path(root);
    io::write_text_atomically(root / latest_pointer_file, name + "\n");
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    throw;
  }
  return target;
}

// The directory root/latest points at, if it exists and is complete.
inline std::optional<fs::path> latest_checkpoint(const fs::path& root) {
  const fs::path pointer = root / latest_pointer_file;
  if (!fs::exists(pointer)) return std::nullopt;
  std::string name = io::read_file(pointer);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  const fs::path dir = root / name;
  TAXON_CHECK(!name.empty() && fs::exists(dir / trainer_state_file), "train.bad-checkpoint", pointer.string(),
              " names '", name, "' but ", (dir / trainer_state_file).string(), " does not exist");
  return dir;
}

// Removes all but the newest `keep` step-* checkpoints (never the one `latest` names); keep <= 0 keeps all.
inline void prune_checkpoints(const fs::path& root, int keep) {
  if (keep <= 0 || !fs::exists(root)) return;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0) names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  const auto latest = latest_checkpoint(root);
  for (size_t i = 0; i + static_cast<size_t>(keep) < names.size(); ++i) {
    if (latest && latest->filename() == names[i]) continue;
    std::error_code ignored;
    fs::remove_all(root / names[i], ignored);
  }
}

// name → tensor for every parameter and buffer (the module's state_dict), detached, on CPU.
inline c10::Dict<std::string, at::Tensor> module_state(const torch::nn::Module& module) {
  c10::Dict<std::string, at::Tensor> state;
  for (const auto& p : module.named_parameters(true)) state.insert(p.key(), p.value().detach().cpu().clone());
  for (const auto& b : module.named_buffers(true)) state.insert(b.key(), b.value().detach().cpu().clone());
  return state;
}

inline void save_module_state(const fs::path& file, const torch::nn::Module& module) {
  const std::vector<char> bytes = torch::pickle_save(module_state(module));
  io::write_atomically(file, [&](std::ostream& out) { out.write(bytes.data(), static_cast<std::streamsize>(bytes.size())); });
}

// Copies a saved state into `module`; missing or extra names and shape differences are errors naming them.
inline void load_module_state(const fs::path& file, torch::nn::Module& module, const std::string& what) {
  const auto value = io::load_pickle(file, "train.bad-checkpoint");
  TAXON_CHECK(value.isGenericDict(), "train.bad-checkpoint", file.string(), " is not a tensor dictionary");
  auto dict = c10::impl::toTypedDict<std::string, at::Tensor>(value.toGenericDict());
  torch::NoGradGuard no_grad;
  size_t matched = 0;
  auto restore = [&](const std::string& name, at::Tensor& target) {
    auto it = dict.find(name);
    TAXON_CHECK(it != dict.end(), "train.checkpoint-mismatch", what, " tensor '", name, "' is missing from ",
                file.string());
    const at::Tensor& src = it->value();
    TAXON_CHECK(src.sizes() == target.sizes(), "train.checkpoint-mismatch", what, " tensor '", name, "' has shape ",
                src.sizes(), " in ", file.string(), " but the model expects ", target.sizes());
    target.copy_(src);
    ++matched;
  };
  for (auto& p : module.named_parameters(true)) restore(p.key(), p.value());
  for (auto& b : module.named_buffers(true)) restore(b.key(), b.value());
  TAXON_CHECK(matched == dict.size(), "train.checkpoint-mismatch", file.string(), " holds ", dict.size(),
              " tensors but the ", what, " has ", matched);
}

// The default CPU generator's state (dropout, PartialFC's negative sampling and anything else drawing from it).
inline at::Tensor cpu_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}
inline void set_cpu_rng_state(const at::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

inline at::Tensor generator_state(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}
inline void set_generator_state(at::Generator gen, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

}  // namespace taxon::train
