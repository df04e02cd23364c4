// Writes the seed corpora of the fuzz harnesses (tests/fuzz/corpus/<harness>/): small valid files of each format,
// made with taxon's own writers (and libjpeg/libpng/zlib for variants taxon does not write), so that fuzzing starts
// from inputs that reach deep into each parser. Run by scripts/fuzz-corpus; the output is committed.
#include "taxon/backbone/weights.hpp"
#include "taxon/backbone/zoo.hpp"
#include "taxon/core/seed.hpp"
#include "taxon/data/decode.hpp"
#include "taxon/data/taxonomy.hpp"
#include "taxon/io/npy.hpp"
#include "taxon/io/safetensors.hpp"
#include "taxon/pfc/partial_fc.hpp"
#include "taxon/train/train.hpp"

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/serialize.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using taxon::backbone::VisionTransformer;
using taxon::backbone::VisionTransformerOptions;

namespace {

fs::path g_root;

void write(const std::string& harness, const std::string& name, const std::string& bytes) {
  const fs::path dir = g_root / harness;
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string slurp(const fs::path& p) { return taxon::io::read_file(p); }

// A scratch file written by one of taxon's path-based writers, read back as bytes.
template <typename F>
std::string via_file(const std::string& name, F&& writer) {
  const fs::path p = fs::temp_directory_path() / ("taxon_make_corpus_" + name);
  writer(p);
  std::string bytes = slurp(p);
  fs::remove(p);
  return bytes;
}

std::string gzip(const std::string& in) {
  z_stream zs{};
  deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, in.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::string idx(const std::vector<uint32_t>& dims, uint8_t start) {
  std::string s("\0\0\x08", 3);
  s += static_cast<char>(dims.size());
  size_t n = 1;
  for (auto d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) s += static_cast<char>((d >> shift) & 0xFF);
    n *= d;
  }
  for (size_t i = 0; i < n; ++i) s += static_cast<char>(start + i);
  return s;
}

// A progressive JPEG (libjpeg's simple progression), which taxon's encoder does not write.
std::string progressive_jpeg(int w, int h) {
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr err{};
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buf, &size);
  cinfo.image_width = static_cast<JDIMENSION>(w);
  cinfo.image_height = static_cast<JDIMENSION>(h);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 75, TRUE);
  jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  std::vector<unsigned char> row(static_cast<size_t>(w) * 3);
  while (cinfo.next_scanline < cinfo.image_height) {
    for (int x = 0; x < w * 3; ++x) row[static_cast<size_t>(x)] = static_cast<unsigned char>(x * 7 + cinfo.next_scanline * 13);
    JSAMPROW r = row.data();
    jpeg_write_scanlines(&cinfo, &r, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buf), size);
  std::free(buf);
  return out;
}

void png_append(png_structp png, png_bytep data, png_size_t n) {
  auto* out = static_cast<std::string*>(png_get_io_ptr(png));
  out->append(reinterpret_cast<const char*>(data), n);
}
void png_no_flush(png_structp) {}

// PNG layouts taxon's encoder does not write: palette with transparency, 16-bit grey + alpha, Adam7 interlacing.
std::string png_variant(int color_type, int depth, bool interlaced, int w, int h) {
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_set_write_fn(png, &out, png_append, png_no_flush);
  png_set_IHDR(png, info, static_cast<png_uint_32>(w), static_cast<png_uint_32>(h), depth, color_type,
               interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    png_color palette[4] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
    png_set_PLTE(png, info, palette, 4);
    png_byte alpha[2] = {0, 128};
    png_set_tRNS(png, info, alpha, 2, nullptr);
  }
  png_write_info(png, info);
  const int channels = color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : color_type == PNG_COLOR_TYPE_RGB_ALPHA ? 4 : 1;
  const size_t row_bytes = (static_cast<size_t>(w) * channels * depth + 7) / 8;
  std::vector<png_byte> pixels(row_bytes * static_cast<size_t>(h));
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<png_byte>(color_type == PNG_COLOR_TYPE_PALETTE ? (i % 4) * 0x55 % 4 : i * 29);
  std::vector<png_bytep> rows(static_cast<size_t>(h));
  for (int y = 0; y < h; ++y) rows[static_cast<size_t>(y)] = pixels.data() + row_bytes * static_cast<size_t>(y);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

at::Tensor test_image(int64_t h, int64_t w, int64_t c) {
  return at::arange(h * w * c, at::kLong).mul(37).remainder(256).to(at::kByte).reshape({h, w, c});
}

// The smallest ViTs of each layout: the tensors of their state dicts fit in a few kilobytes.
VisionTransformerOptions tiny_clip() {
  return VisionTransformerOptions().image_size(8).patch_size(4).width(8).layers(1).heads(2).output_dim(4);
}
VisionTransformerOptions tiny_unicom() {
  return tiny_clip().layout(taxon::backbone::Layout::unicom).activation(taxon::backbone::Activation::relu6);
}

void npy_seeds() {
  const auto npy = [](const std::string& name, const at::Tensor& t) {
    write("npy", name, via_file(name, [&](const fs::path& p) { taxon::io::save_npy(p, t); }));
  };
  npy("f32.npy", at::arange(6, at::kFloat).reshape({2, 3}));
  npy("i64.npy", at::arange(4, at::kLong));
  npy("u8_scalar.npy", at::full({}, 7, at::kByte));
  npy("bool.npy", at::ones({2, 2}, at::kBool));
  npy("f16_empty.npy", at::empty({0, 3}, at::kHalf));
  // numpy's own layout (format 1.0, Python 2 'L' suffix) and format 2.0 with a 4-byte header length.
  const auto header = [](int major, const std::string& dict) {
    const size_t len_field = major == 1 ? 2 : 4;
    std::string h = dict;
    const size_t unpadded = 8 + len_field + h.size() + 1;
    h += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
    std::string s = "\x93NUMPY";
    s += static_cast<char>(major);
    s += '\0';
    for (size_t i = 0; i < len_field; ++i) s += static_cast<char>((h.size() >> (8 * i)) & 0xFF);
    return s + h;
  };
  write("npy", "numpy_v1.npy", header(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2L, 1L), }") +
                                   std::string("\x01\0\0\0\x02\0\0\0", 8));
  write("npy", "numpy_v2.npy", header(2, "{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }") + "abc");
}

void safetensors_seeds() {
  const auto st = [](const std::string& harness, const std::string& name,
                     const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                     const std::map<std::string, std::string>& metadata) {
    write(harness, name, via_file(name, [&](const fs::path& p) { taxon::io::save_safetensors(p, tensors, metadata); }));
  };
  st("safetensors", "mixed.safetensors",
     {{"w", at::arange(6, at::kFloat).reshape({2, 3})},
      {"empty", at::empty({0}, at::kFloat)},
      {"h", at::ones({3}, at::kHalf)},
      {"b", at::ones({2}, at::kBFloat16)},
      {"i", at::arange(2, at::kLong)}},
     {{"format", "pt"}});
  st("safetensors", "one_u8.safetensors", {{"x", at::full({1}, 3, at::kByte)}}, {});

  // Model checkpoints: taxon's own (config metadata) and bare open_clip / UNICOM visual state dicts.
  taxon::seed_everything(1);
  const auto model_seed = [&](const std::string& name, const VisionTransformerOptions& o, bool with_config,
                              const std::string& prefix) {
    VisionTransformer model(o);
    if (with_config) {
      write("checkpoint", name, via_file(name, [&](const fs::path& p) { taxon::backbone::save_checkpoint(p, model); }));
      return;
    }
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& [k, v] : taxon::backbone::state_dict(*model)) tensors.emplace_back(prefix + k, v.to(at::kHalf));
    st("checkpoint", name, tensors, {});
  };
  model_seed("taxon_clip.safetensors", tiny_clip(), true, "");
  model_seed("taxon_unicom.safetensors", tiny_unicom(), true, "");
  model_seed("open_clip_fp16.safetensors", tiny_clip().layer_scale(true), false, "visual.");
  model_seed("unicom_fp16.safetensors", tiny_unicom(), false, "");
}

void idx_seeds() {
  write("idx", "images-idx3-ubyte", idx({2, 3, 3}, 1));
  write("idx", "labels-idx1-ubyte", idx({4}, 0));
  write("idx", "images-idx3-ubyte.gz", gzip(idx({3, 2, 4}, 9)));
}

void csv_seeds() {
  write("csv", "vlm4bio.csv",
        "fileNameAsDelivered,scientificName,family\n"
        "a.jpg,Salmo trutta fario,Salmonidae\n"
        "b.jpg,\"Esox lucius\",Esocidae\n");
  write("csv", "quoted_crlf_bom.csv",
        "\xEF\xBB\xBFpath,species\r\n"
        "\"dir, with comma/x.png\",\"Quoted \"\"name\"\"\"\r\n"
        "\"multi\nline.jpg\",  \r\n");
}

void image_seeds() {
  write("image", "rgb.jpg", taxon::data::encode_jpeg(test_image(12, 16, 3), 80));
  write("image", "gray.jpg", taxon::data::encode_jpeg(test_image(9, 8, 1), 80));
  write("image", "progressive.jpg", progressive_jpeg(17, 11));
  write("image", "rgb.png", taxon::data::encode_png(test_image(7, 9, 3)));
  write("image", "gray.png", taxon::data::encode_png(test_image(5, 6, 1)));
  write("image", "palette_trns.png", png_variant(PNG_COLOR_TYPE_PALETTE, 2, false, 7, 5));
  write("image", "gray16_alpha_interlaced.png", png_variant(PNG_COLOR_TYPE_GRAY_ALPHA, 16, true, 9, 9));
}

void pt_seeds() {
  taxon::seed_everything(2);
  // torch.save'd state dicts (zip + pickle), bare and wrapped as training scripts save them.
  VisionTransformer clip(tiny_clip());
  c10::Dict<std::string, at::Tensor> visual;
  for (const auto& [k, v] : taxon::backbone::state_dict(*clip)) visual.insert("visual." + k, v.to(at::kHalf));
  const auto pickled = [](const c10::IValue& value) {
    const std::vector<char> bytes = torch::pickle_save(value);
    return std::string(bytes.begin(), bytes.end());
  };
  write("pt_archive", "open_clip_state_dict.pt", pickled(visual));
  VisionTransformer unicom(tiny_unicom());
  c10::Dict<std::string, at::Tensor> unicom_dict;
  for (const auto& [k, v] : taxon::backbone::state_dict(*unicom)) unicom_dict.insert(k, v);
  c10::impl::GenericDict wrapped(c10::StringType::get(), c10::AnyType::get());
  wrapped.insert("state_dict", unicom_dict);
  wrapped.insert("epoch", 3);
  write("pt_archive", "unicom_wrapped.pt", pickled(wrapped));
  // A TorchScript archive (what OpenAI's CLIP .pt files are), holding a parameter and a buffer.
  torch::jit::Module module("__torch__.Tiny");
  module.register_parameter("weight", at::ones({2, 2}), false);
  module.register_buffer("scale", at::full({1}, 0.5));
  write("pt_archive", "torchscript.pt", via_file("ts.pt", [&](const fs::path& p) { module.save(p.string()); }));
  // Files Python's torch.save wrote (tests/data/pt/make_pt_fixtures.py): an OrderedDict with _metadata, DDP and
  // WarpModule prefixes, views of shared storages with plain values, a forbidden global, the legacy format.
  for (const char* name : {"vit_fp16.pt", "ddp_warp.pt", "tensors.pt", "evil.pt", "legacy.pt"}) {
    std::ifstream in(g_root / "../../data/pt" / name, std::ios::binary);
    write("pt_archive", std::string("python_") + name,
          std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()));
  }
}

void json_seeds() {
  write("json_config", "vit_clip.json", nlohmann::json(tiny_clip()).dump());
  write("json_config", "vit_unicom_partial.json", R"({"layout": "unicom", "image_size": 28, "patch_size": 7, "width": 16})");
  const taxon::data::Taxonomy taxonomy({"species", "genus"}, {taxon::data::LabelMap({"Salmo trutta", "Esox lucius"}),
                                                              taxon::data::LabelMap({"Salmo", "Esox"})});
  write("json_config", "taxonomy.json", taxonomy.to_json().dump(2));
}

void trainer_seeds() {
  // The same trainer as tests/fuzz/trainer_state.cpp; its checkpoint's trainer.json as written by save_checkpoint.
  auto backbone = VisionTransformer(taxon::backbone::zoo_config("demo28").layers(1));
  auto head = taxon::pfc::PartialFC<taxon::loss::ArcFace>(taxon::pfc::PartialFCOptions(4, 64));
  taxon::train::Trainer trainer(backbone, head, taxon::train::TrainerOptions().epochs(2).steps_per_epoch(3),
                                taxon::train::Schedule::one_cycle());
  trainer.set_config({{"dataset", "fashion-mnist"}, {"rank", {"species=scientificName"}}});
  write("trainer_state", "trainer.json", trainer.state_json().dump(2));
  taxon::train::Trainer constant(backbone, head, taxon::train::TrainerOptions().epochs(2).steps_per_epoch(3),
                                 taxon::train::Schedule::constant());
  write("trainer_state", "trainer_constant_schedule.json", constant.state_json().dump());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " CORPUS_ROOT (e.g. tests/fuzz/corpus)\n";
    return 2;
  }
  g_root = argv[1];
  npy_seeds();
  safetensors_seeds();
  idx_seeds();
  csv_seeds();
  image_seeds();
  pt_seeds();
  json_seeds();
  trainer_seeds();
  std::cout << "make_corpus: wrote seeds under " << g_root.string() << "\n";
  return 0;
}
