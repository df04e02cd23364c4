#pragma once
// Reading torch.save archives (zip + pickle, what Python's torch.save and torch::pickle_save write) from a file.
// Not torch::pickle_load(bytes): in LibTorch 1.13 its in-memory reader does not bound reads to the buffer, so a
// damaged zip directory makes it read past the end (found by tests/fuzz/pt_archive.cpp under ASan). The file reader
// clamps every read to the file size.
#include "taxon/io/atomic_file.hpp"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/import_read.h>

#include <exception>
#include <filesystem>
#include <string>

namespace taxon::io {

// The pickled object. A missing file is io.missing-file; a damaged archive throws c10::Error, which the caller
// turns into its format's error id.
inline c10::IValue load_pickle(const std::filesystem::path& path, std::string_view what = "torch.save archive") {
  require_file(path, what);
  try {
    caffe2::serialize::PyTorchStreamReader reader(path.string());
    return torch::jit::readArchiveAndTensors("data", /*pickle_prefix=*/"", /*tensor_prefix=*/"",
                                             /*type_resolver=*/c10::nullopt, /*obj_loader=*/c10::nullopt,
                                             /*device=*/c10::nullopt, reader);
  } catch (const c10::Error&) {
    throw;
  } catch (const std::exception& e) {  // the Unpickler also throws std:: exceptions on damaged data (found by fuzzing)
    const std::string message = std::string("damaged pickle: ") + e.what();
    throw c10::Error{c10::SourceLocation{__func__, __FILE__, static_cast<uint32_t>(__LINE__)}, message};
  }
}

}  // namespace taxon::io
