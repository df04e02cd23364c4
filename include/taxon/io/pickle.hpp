#pragma once
// Reading torch.save archives (zip + pickle, what Python's torch.save and torch::pickle_save write) from a file.
// Not torch::pickle_load(bytes): in LibTorch 1.13 its in-memory reader does not bound reads to the buffer, so a
// damaged zip directory makes it read past the end (found by tests/fuzz/pt_archive.cpp under ASan). The file reader
// clamps every read to the file size.
#include "taxon/core/error.hpp"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/import_read.h>

#include <filesystem>
#include <string>

namespace taxon::io {

// The pickled object; a missing file is io.missing-file, an unreadable archive `error_id`.
inline c10::IValue load_pickle(const std::filesystem::path& path, const char* error_id) {
  TAXON_CHECK(std::filesystem::exists(path), "io.missing-file", "file not found: ", path.string());
  try {
    caffe2::serialize::PyTorchStreamReader reader(path.string());
    return torch::jit::readArchiveAndTensors("data", /*pickle_prefix=*/"", /*tensor_prefix=*/"",
                                             /*type_resolver=*/c10::nullopt, /*obj_loader=*/c10::nullopt,
                                             /*device=*/c10::nullopt, reader);
  } catch (const c10::Error& e) {
    TAXON_FAIL(error_id, path.string(), " is not a readable torch.save archive: ", e.what_without_backtrace());
  }
}

}  // namespace taxon::io
