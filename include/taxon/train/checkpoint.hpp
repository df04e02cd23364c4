#pragma once
// The training checkpoint format, owned by TrainingCheckpoint: file names, layout, the `latest` pointer, pruning,
// saving and loading. Trainer::save_checkpoint and Trainer::resume hand it their parts and never name a file.
//
//   <root>/step-<optimizer step, 9 digits>/
//       backbone.pt    pickled {name: tensor} of every parameter and buffer (Python reads it with torch.load)
//       head.pt        the same for the head (e.g. PartialFC's class centres)
//       optimizer.pt   torch::serialize archive of the optimizer (AdamW moments and step counts)
//       rng.pt         pickled {"cpu": state[, "head": state][, "backbone": state]} generator states
//       trainer.json   {"format": 2, "files": {part: {"name": file, "bytes": size, "crc32": n}}, "trainer": {...}}
//   <root>/latest      the name of the newest complete step directory
//
// A checkpoint of an N-rank run (N > 1) is written once, by rank 0: the files above hold rank 0's state (the
// backbone and its AdamW moments are the same on every rank), and each other rank r's own state (its head shard, its
// optimizer state, its generators), serialised on rank r and sent to rank 0, sits next to them as
// head.rank-<r, 5 digits>.pt, optimizer.rank-<r>.pt and rng.rank-<r>.pt, in the manifest as "head@r", ... with
// "ranks": N at the top of trainer.json. Rank r resumes from its own files (docs/distributed.md).
//
// A step directory is filled under a hidden temporary name and renamed into place when complete, and `latest` is
// replaced atomically after that: a crash at any point leaves `latest` naming a complete checkpoint. The "files"
// manifest lets a load report a missing, truncated or altered part (size, CRC-32 as Python's zlib.crc32) by name
// before parsing anything; "crc32" is absent from checkpoints of older versions, which are read without it. Opening
// a root falls back from a damaged newest checkpoint to the previous intact one and says so (keep_last >= 2 keeps
// one to fall back to). Format 1 (the trainer's state at the top level, no manifest) is still read.
#include "taxon/core/error.hpp"
#include "taxon/core/log.hpp"
#include "taxon/io/atomic_file.hpp"
#include "taxon/io/json.hpp"
#include "taxon/io/pickle.hpp"
#include "taxon/train/state_json.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Dict.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace taxon::train {

using TensorDict = c10::Dict<std::string, at::Tensor>;
// Generator states by owner: "cpu" (LibTorch's default generator), "head" and "backbone" (their own generators).
using GeneratorStates = TensorDict;

// Writes a torch::serialize archive to `out`. LibTorch's stream writer throws from its destructor when the stream
// fails mid-archive (std::terminate on a full disk); through a callback that takes every byte, the failure stays in
// `out`'s state, for io::write_atomically to report as io.disk-full.
inline void save_archive(torch::serialize::OutputArchive& archive, std::ostream& out) {
  archive.save_to([&out](const void* data, size_t n) -> size_t {
    if (out.good()) out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
    return n;
  });
}

// The objects whose state a checkpoint holds besides the generators and the trainer's JSON state.
struct CheckpointParts {
  torch::nn::Module& backbone;
  torch::nn::Module& head;
  torch::optim::Optimizer& optimizer;
};

// The bytes of one rank's own files of a distributed checkpoint (made by TrainingCheckpoint::rank_files on that
// rank, written by rank 0).
struct RankFiles {
  int rank = 0;
  std::string head, optimizer, rng;
};

class TrainingCheckpoint {
 public:
  static constexpr int kFormat = 2;
  static constexpr const char* kLatestFile = "latest";
  static constexpr const char* kStateFile = "trainer.json";
  // Manifest entries: part -> file name inside the step directory.
  struct Part {
    const char* part;
    const char* file;
  };
  static constexpr std::array<Part, 4> kParts{
      {{"backbone", "backbone.pt"}, {"head", "head.pt"}, {"optimizer", "optimizer.pt"}, {"rng", "rng.pt"}}};

  // "step-000000042": the directory of the checkpoint taken after optimizer step 42 (sorts by step).
  static std::string directory_name(int64_t step) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "step-%09lld", static_cast<long long>(step));
    return buf;
  }

  // Writes root/step-<step>/ atomically, points root/latest at it and keeps the newest `keep_last` step
  // directories (0: all). `state` is the trainer's own JSON state. Returns the new directory.
  static std::filesystem::path save(const std::filesystem::path& root, int64_t step, const CheckpointParts& parts,
                                    const GeneratorStates& generators, const nlohmann::json& state,
                                    int keep_last = 0, const std::vector<RankFiles>& other_ranks = {}) {
    const std::string name = directory_name(step);
    if (io::path_exists(root)) io::remove_stale_temporaries(root);  // of a process killed mid-save
    const auto dir = io::write_directory_atomically(root, name, [&](const std::filesystem::path& d) {
      write_pickle(d / file_of("backbone"), module_state(parts.backbone));
      write_pickle(d / file_of("head"), module_state(parts.head));
      io::write_atomically(d / file_of("optimizer"), [&](std::ostream& out) {
        torch::serialize::OutputArchive archive;
        parts.optimizer.save(archive);
        save_archive(archive, out);
      });
      write_pickle(d / file_of("rng"), generators);
      nlohmann::json files = nlohmann::json::object();
      auto record = [&](const std::string& part, const std::string& file) {
        files[part] = {{"name", file}, {"bytes", io::file_size(d / file)}, {"crc32", io::file_crc32(d / file)}};
      };
      for (const auto& p : kParts) record(p.part, p.file);
      for (const auto& r : other_ranks) {
        const std::array<std::pair<const char*, const std::string*>, 3> own{
            {{"head", &r.head}, {"optimizer", &r.optimizer}, {"rng", &r.rng}}};
        for (const auto& [part, bytes] : own) {
          const std::string file = rank_file(part, r.rank);
          io::write_atomically(d / file, [&](std::ostream& out) {
            out.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
          });
          record(rank_part(part, r.rank), file);
        }
      }
      nlohmann::json doc = {{"format", kFormat}, {"files", std::move(files)}, {"trainer", state}};
      if (!other_ranks.empty()) doc["ranks"] = static_cast<int64_t>(other_ranks.size()) + 1;
      io::write_text_atomically(d / kStateFile, io::dump_json(doc, 2));
    });
    io::write_text_atomically(root / kLatestFile, name + "\n");
    prune(root, keep_last);
    return dir;
  }

  // The checkpoint at `path`: a step directory, or a root whose newest intact checkpoint is used; nullopt when
  // `path` holds none yet (a fresh run). trainer.json and the manifest (sizes, checksums) are checked here; nothing
  // is restored yet. In a root, `latest` is tried first, then every other step directory from the newest down: a
  // damaged one is reported (log warning) and skipped; a missing `latest` with checkpoints present is said too.
  // When none is intact it is train.bad-checkpoint listing each one and why.
  static std::optional<TrainingCheckpoint> open(const std::filesystem::path& path) {
    if (io::path_exists(path / kStateFile)) return TrainingCheckpoint(path);
    if (!io::path_exists(path)) return std::nullopt;
    std::vector<std::string> names;
    for (auto& n : io::subdirectory_names(path))
      if (n.rfind("step-", 0) == 0) names.push_back(std::move(n));
    std::sort(names.rbegin(), names.rend());  // newest first
    const auto pointer = path / kLatestFile;
    std::optional<std::string> named;
    if (io::path_exists(pointer)) {
      named = latest_name(pointer);
      if (std::find(names.begin(), names.end(), *named) == names.end()) {
        TAXON_CHECK(!names.empty(), "train.bad-checkpoint", pointer.string(), " names '", *named, "' but ",
                    (path / *named).string(), " does not exist and no other checkpoint is there");
        log::warn(pointer.string(), " names '", *named, "', which does not exist; looking for another checkpoint");
      } else {
        std::rotate(names.begin(), std::find(names.begin(), names.end(), *named),
                    std::find(names.begin(), names.end(), *named) + 1);
      }
    } else if (!names.empty()) {
      log::warn(path.string(), " has ", names.size(), " checkpoint(s) but no '", kLatestFile,
                "' pointer (deleted, or a crash before the first one completed); using the newest intact one");
    }
    if (names.empty()) return std::nullopt;
    std::string problems;
    for (const auto& name : names) {
      try {
        TrainingCheckpoint checkpoint(path / name);
        if (!problems.empty() || !named || *named != name)
          log::warn("resuming from ", (path / name).string(), problems.empty() ? "" : " instead of a damaged newer one");
        return checkpoint;
      } catch (const Error& e) {
        log::warn("checkpoint ", (path / name).string(), " is damaged, skipping it: ", e.what());
        problems += "\n  " + name + ": " + e.what();
      }
    }
    TAXON_FAIL("train.bad-checkpoint", "no intact checkpoint in ", path.string(), ":", problems,
               "\nRemove the damaged ones (or start over) to continue.");
  }

  // The step directory root/latest names; nullopt when there is no `latest` (no checkpoint saved yet).
  static std::optional<std::filesystem::path> latest(const std::filesystem::path& root) {
    const auto pointer = root / kLatestFile;
    if (!io::path_exists(pointer)) return std::nullopt;
    const std::string name = latest_name(pointer);
    const auto dir = root / name;
    TAXON_CHECK(io::path_exists(dir / kStateFile), "train.bad-checkpoint", pointer.string(), " names '", name, "' but ",
                (dir / kStateFile).string(), " does not exist");
    return dir;
  }

  // Removes all but the newest `keep` step directories (never the one `latest` names); keep <= 0 keeps all.
  static void prune(const std::filesystem::path& root, int keep) {
    if (keep <= 0 || !io::path_exists(root)) return;
    std::vector<std::string> names;
    for (auto& n : io::subdirectory_names(root))
      if (n.rfind("step-", 0) == 0) names.push_back(std::move(n));
    const auto newest = latest(root);
    for (size_t i = 0; i + static_cast<size_t>(keep) < names.size(); ++i) {
      if (newest && newest->filename() == names[i]) continue;
      std::error_code ignored;  // an old checkpoint that cannot be removed is left behind, not fatal
      std::filesystem::remove_all(root / names[i], ignored);
    }
  }

  // This rank's own state (head, optimizer, generators) as the bytes of its files, for rank 0 to write.
  static RankFiles rank_files(int rank, const CheckpointParts& parts, const GeneratorStates& generators) {
    RankFiles out;
    out.rank = rank;
    auto pickled = [](const TensorDict& dict) {
      const std::vector<char> bytes = torch::pickle_save(dict);
      return std::string(bytes.begin(), bytes.end());
    };
    out.head = pickled(module_state(parts.head));
    std::ostringstream optimizer;
    torch::serialize::OutputArchive archive;
    parts.optimizer.save(archive);
    save_archive(archive, optimizer);
    out.optimizer = std::move(optimizer).str();
    out.rng = pickled(generators);
    return out;
  }
  // "head.rank-00003.pt": rank 3's file of `part` in a distributed checkpoint.
  static std::string rank_file(std::string_view part, int rank) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%05d", rank);
    std::string name = file_of(part);
    return name.insert(name.find('.'), std::string(".rank-") + buf);
  }
  // Number of ranks whose state the checkpoint holds (1 for a single-process run).
  int64_t ranks() const { return ranks_; }

  const std::filesystem::path& dir() const { return dir_; }
  // trainer.json of this checkpoint, for naming it in errors.
  std::filesystem::path state_file() const { return dir_ / kStateFile; }
  // The trainer's JSON state as saved.
  const nlohmann::json& state() const { return state_; }

  // The generator states (rng.pt), read and checked; nothing is applied.
  GeneratorStates generators(int rank = 0) const {
    const auto file = dir_ / file_for("rng", rank);
    const io::PickleValue value = read_pickle(file, "generator states");
    TAXON_CHECK(value.is_dict(), "train.bad-checkpoint", file.string(),
                " does not hold a dictionary of generator states");
    return to_tensor_dict(value, file, "generator states");
  }

  // Copies the saved backbone, head and optimizer state into `parts` (optimizer state onto `device`). Both modules'
  // names and shapes are checked before any tensor is copied; a mismatch is train.checkpoint-mismatch naming them.
  void restore(const CheckpointParts& parts, at::Device device, int rank = 0) const {
    const auto backbone_file = dir_ / file_of("backbone");
    const auto head_file = dir_ / file_for("head", rank);
    const auto backbone = read_module_state(backbone_file);
    const auto head = read_module_state(head_file);
    check_module_state(backbone, parts.backbone, backbone_file, "backbone");
    check_module_state(head, parts.head, head_file, "head");
    const auto optimizer_file = dir_ / file_for("optimizer", rank);
    torch::serialize::InputArchive archive;
    try {
      archive.load_from(optimizer_file.string(), device);
    } catch (const c10::Error& e) {
      TAXON_FAIL("train.bad-checkpoint", optimizer_file.string(), " is not a readable optimizer archive: ",
                 e.what_without_backtrace());
    }
    try {
      parts.optimizer.load(archive);
    } catch (const c10::Error& e) {
      TAXON_FAIL("train.checkpoint-mismatch", optimizer_file.string(),
                 " does not fit this optimizer (other parameters or optimizer?): ", e.what_without_backtrace());
    }
    copy_module_state(backbone, parts.backbone);
    copy_module_state(head, parts.head);
  }

 private:
  explicit TrainingCheckpoint(std::filesystem::path dir) : dir_(std::move(dir)) {
    const auto file = state_file();
    const std::string where = file.string();
    const auto parsed = io::parse_json(io::read_file(file));
    TAXON_CHECK(parsed, "train.bad-checkpoint", where, ": ", parsed.error);
    const nlohmann::json& doc = parsed.value;
    TAXON_CHECK(doc.is_object(), "train.bad-checkpoint", where, " is not a JSON object (truncated or overwritten?)");
    const auto format = doc.contains("format") && doc["format"].is_number_integer() ? doc["format"].get<int>() : 0;
    TAXON_CHECK(format == 1 || format == kFormat, "train.bad-checkpoint", where,
                " is not a taxon training checkpoint this version reads (format ",
                doc.contains("format") ? doc["format"].dump() : std::string("missing"), "; reads 1 and ", kFormat, ")");
    if (format == 1) {  // the trainer's state at the top level, fixed file names, no sizes
      state_ = doc;
      for (const auto& p : kParts)
        TAXON_CHECK(io::path_exists(dir_ / p.file), "train.bad-checkpoint", (dir_ / p.file).string(),
                    " is missing from the checkpoint");
      return;
    }
    state_ = state_value(doc, "trainer", where);
    if (doc.contains("ranks")) ranks_ = state_field<int64_t>(doc, "ranks", where);
    TAXON_CHECK(ranks_ >= 1 && ranks_ <= 1 << 20, "train.bad-checkpoint", where, " records ", ranks_, " ranks");
    const auto& files = state_value(doc, "files", where);
    const std::string files_where = where + " 'files'";
    std::vector<std::pair<std::string, std::string>> expected;  // manifest key, file name
    for (const auto& p : kParts) expected.emplace_back(p.part, p.file);
    for (int r = 1; r < ranks_; ++r)
      for (const char* part : {"head", "optimizer", "rng"}) expected.emplace_back(rank_part(part, r), rank_file(part, r));
    for (const auto& [part, file] : expected) {
      const auto& entry = state_value(files, part.c_str(), files_where);
      const std::string entry_where = files_where + " '" + part + "'";
      const auto name = state_field<std::string>(entry, "name", entry_where);
      TAXON_CHECK(name == file, "train.bad-checkpoint", entry_where, " names '", name, "'; this version writes '",
                  file, "'");
      const auto bytes = state_field<std::uint64_t>(entry, "bytes", entry_where);
      const auto path = dir_ / file;
      std::error_code ec;
      const auto size = std::filesystem::file_size(path, ec);
      TAXON_CHECK(!ec, "train.bad-checkpoint", path.string(), " is missing from the checkpoint (", ec.message(), ")");
      TAXON_CHECK(size == bytes, "train.bad-checkpoint", path.string(), " is ", size, " bytes but ", where,
                  " records ", bytes, " (truncated or replaced after saving?)");
      if (!entry.contains("crc32")) continue;  // written before checksums were recorded
      const auto crc = state_field<std::uint32_t>(entry, "crc32", entry_where);
      const auto actual = io::file_crc32(path);
      TAXON_CHECK(actual == crc, "train.bad-checkpoint", path.string(), " has CRC-32 ", actual, " but ", where,
                  " records ", crc, " (the file was altered or damaged on disk after saving)");
    }
  }

  static std::string latest_name(const std::filesystem::path& pointer) {
    std::string name = io::read_file(pointer);
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    TAXON_CHECK(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..",
                "train.bad-checkpoint", pointer.string(), " does not hold a checkpoint directory name: '", name, "'");
    return name;
  }

  static const char* file_of(std::string_view part) {
    for (const auto& p : kParts)
      if (part == p.part) return p.file;
    TAXON_FAIL("train.bad-checkpoint", "no checkpoint part '", part, "'");
  }
  static std::string rank_part(std::string_view part, int rank) { return std::string(part) + "@" + std::to_string(rank); }
  // Rank `rank`'s file of `part`: rank 0's are the plain names.
  std::string file_for(std::string_view part, int rank) const {
    TAXON_CHECK(rank >= 0 && rank < ranks_, "train.resume-mismatch", dir_.string(), " holds the state of ", ranks_,
                " rank(s); rank ", rank, " has none (resume on as many ranks as wrote it)");
    return rank == 0 ? std::string(file_of(part)) : rank_file(part, rank);
  }

  // name -> tensor for every parameter and buffer (the module's state_dict), detached, on CPU.
  static TensorDict module_state(const torch::nn::Module& module) {
    TensorDict state;
    for (const auto& p : module.named_parameters(true)) state.insert(p.key(), p.value().detach().cpu().clone());
    for (const auto& b : module.named_buffers(true)) state.insert(b.key(), b.value().detach().cpu().clone());
    return state;
  }

  static void write_pickle(const std::filesystem::path& file, const TensorDict& dict) {
    const std::vector<char> bytes = torch::pickle_save(dict);
    io::write_atomically(file, [&](std::ostream& out) {
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    });
  }

  // Written by LibTorch (torch::pickle_save), read back by taxon's restricted reader like any .pt: a checkpoint
  // directory copied from elsewhere is untrusted input too.
  static io::PickleValue read_pickle(const std::filesystem::path& file, const char* what) {
    try {
      return io::load_torch_save(file, what);
    } catch (const Error& e) {
      if (e.id() == "io.missing-file") throw;
      TAXON_FAIL("train.bad-checkpoint", file.string(), " is not a readable pickle of ", what, ": ", e.what());
    }
  }

  static TensorDict to_tensor_dict(const io::PickleValue& value, const std::filesystem::path& file, const char* what) {
    TensorDict out;
    for (const auto& [k, v] : value.entries) {
      TAXON_CHECK(k.is_string() && v.is_tensor(), "train.bad-checkpoint", file.string(),
                  " holds a non-tensor entry among its ", what);
      out.insert(k.text, v.tensor);
    }
    return out;
  }

  static TensorDict read_module_state(const std::filesystem::path& file) {
    const io::PickleValue value = read_pickle(file, "module tensors");
    TAXON_CHECK(value.is_dict(), "train.bad-checkpoint", file.string(), " is not a tensor dictionary");
    return to_tensor_dict(value, file, "module tensors");
  }

  // Every parameter and buffer of `module` must be in `state` with its shape, and nothing else.
  static void check_module_state(const TensorDict& state, const torch::nn::Module& module,
                                 const std::filesystem::path& file, const char* what) {
    size_t matched = 0;
    auto check = [&](const std::string& name, const at::Tensor& target) {
      auto it = state.find(name);
      TAXON_CHECK(it != state.end(), "train.checkpoint-mismatch", what, " tensor '", name, "' is missing from ",
                  file.string());
      TAXON_CHECK(it->value().sizes() == target.sizes(), "train.checkpoint-mismatch", what, " tensor '", name,
                  "' has shape ", it->value().sizes(), " in ", file.string(), " but the model expects ",
                  target.sizes());
      ++matched;
    };
    for (const auto& p : module.named_parameters(true)) check(p.key(), p.value());
    for (const auto& b : module.named_buffers(true)) check(b.key(), b.value());
    TAXON_CHECK(matched == state.size(), "train.checkpoint-mismatch", file.string(), " holds ", state.size(),
                " tensors but the ", what, " has ", matched);
  }

  static void copy_module_state(const TensorDict& state, torch::nn::Module& module) {
    torch::NoGradGuard no_grad;
    for (auto& p : module.named_parameters(true)) p.value().copy_(state.at(p.key()));
    for (auto& b : module.named_buffers(true)) b.value().copy_(state.at(b.key()));
  }

  std::filesystem::path dir_;
  nlohmann::json state_;
  int64_t ranks_ = 1;
};

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
