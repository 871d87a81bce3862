#pragma once
// A reader of NumPy .npy files (format versions 1, 2 and 3), for the Q/K/V dumps users save
// from their models (`sparsejit bench mask --quality --q q.npy --k k.npy`). Little-endian
// float16 ('<f2'), float32 ('<f4') and bfloat16 (ml_dtypes writes it as '<V2'; 'bfloat16' is
// accepted too), C order. No system package reads .npy from C++ here, hence this one.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "templates/common/half_precision.h"

namespace sparsejit::tools {

enum class NpyDtype { float16, bfloat16, float32 };

struct NpyArray {
  std::vector<std::size_t> shape;
  NpyDtype dtype = NpyDtype::float32;
  std::vector<std::uint8_t> data;  // C order, little-endian

  std::size_t elements() const;
  // Every element rounded to `to` (a float16 file read as fp16, or a bfloat16 one as bf16, is
  // copied bit for bit).
  std::vector<std::uint16_t> to_half(templates::HalfDtype to) const;
};

std::size_t npy_dtype_bytes(NpyDtype dtype);  // 2 or 4

// An .npy file's header: what read_npy checks, without reading the data (to validate many
// large dumps before any is loaded).
struct NpyHeader {
  std::vector<std::size_t> shape;
  NpyDtype dtype = NpyDtype::float32;
  std::size_t data_offset = 0;  // bytes before the data
  std::size_t data_bytes() const;
};

// Reads the header of `path`. Throws std::runtime_error naming the file and the problem:
// unreadable, not an .npy file (magic), an unknown format version, a header that is cut
// short or not a dict with 'descr', 'fortran_order' and 'shape', a dtype other than the
// three above (or big-endian), Fortran order, or data shorter than the shape needs (a
// truncated file).
NpyHeader read_npy_header(const std::filesystem::path& path);

// Reads `path`: its header (read_npy_header, with the same errors), then its data.
NpyArray read_npy(const std::filesystem::path& path);

}  // namespace sparsejit::tools
