#include "tools/npy_file.h"

#include <cstring>
#include <fstream>
#include <stdexcept>
#include <system_error>

namespace sparsejit::tools {
namespace {

// The value of `key` in the header dict, up to the next ',' at depth 0 (or the closing brace).
std::string header_value(const std::string& header, const std::string& key, const std::string& file) {
  const std::size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) throw std::runtime_error(file + ": the .npy header has no '" + key + "'");
  std::size_t position = header.find(':', at);
  if (position == std::string::npos) throw std::runtime_error(file + ": the .npy header is malformed at '" + key + "'");
  ++position;
  int depth = 0;
  std::string value;
  for (; position < header.size(); ++position) {
    const char c = header[position];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
    value += c;
  }
  const std::size_t first = value.find_first_not_of(' '), last = value.find_last_not_of(' ');
  return first == std::string::npos ? std::string() : value.substr(first, last - first + 1);
}

std::size_t element_count(const std::vector<std::size_t>& shape) {
  std::size_t count = 1;
  for (std::size_t size : shape) count *= size;
  return count;
}

}  // namespace

std::size_t npy_dtype_bytes(NpyDtype dtype) { return dtype == NpyDtype::float32 ? 4 : 2; }

std::size_t NpyHeader::data_bytes() const { return element_count(shape) * npy_dtype_bytes(dtype); }

std::size_t NpyArray::elements() const { return element_count(shape); }

std::vector<std::uint16_t> NpyArray::to_half(templates::HalfDtype to) const {
  using templates::HalfDtype;
  const std::size_t count = elements();
  std::vector<std::uint16_t> out(count);
  for (std::size_t i = 0; i < count; ++i) {
    float value;
    if (dtype == NpyDtype::float32) {
      std::memcpy(&value, &data[i * 4], 4);
    } else {
      std::uint16_t bits;
      std::memcpy(&bits, &data[i * 2], 2);
      const HalfDtype from = dtype == NpyDtype::float16 ? HalfDtype::fp16 : HalfDtype::bf16;
      if (from == to) {
        out[i] = bits;
        continue;
      }
      value = templates::half_bits_to_float(bits, from);
    }
    out[i] = templates::float_to_half_bits(value, to);
  }
  return out;
}

NpyHeader read_npy_header(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(file + ": cannot be opened");
  std::error_code error;
  const std::uintmax_t file_bytes = std::filesystem::file_size(path, error);
  if (error) throw std::runtime_error(file + ": cannot be opened: " + error.message());
  std::vector<std::uint8_t> prefix(12, 0);
  in.read(reinterpret_cast<char*>(prefix.data()), static_cast<std::streamsize>(prefix.size()));
  const auto prefix_bytes = static_cast<std::size_t>(in.gcount());
  static const std::uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (prefix_bytes < 10 || std::memcmp(prefix.data(), kMagic, 6) != 0)
    throw std::runtime_error(file + ": not an .npy file (its first bytes are not \\x93NUMPY)");
  const int major = prefix[6];
  if (major < 1 || major > 3)
    throw std::runtime_error(file + ": .npy format version " + std::to_string(major) + " is not supported (1 to 3)");
  const std::size_t length_bytes = major == 1 ? 2 : 4;
  if (prefix_bytes < 8 + length_bytes) throw std::runtime_error(file + ": the .npy header is cut short");
  std::size_t header_length = 0;
  for (std::size_t i = 0; i < length_bytes; ++i) header_length |= static_cast<std::size_t>(prefix[8 + i]) << (8 * i);
  NpyHeader result;
  result.data_offset = 8 + length_bytes + header_length;
  if (file_bytes < result.data_offset)
    throw std::runtime_error(file + ": the .npy header is cut short (" + std::to_string(header_length) +
                             " bytes announced, the file has " + std::to_string(file_bytes) + ")");
  std::string header(header_length, '\0');
  in.clear();
  in.seekg(static_cast<std::streamoff>(8 + length_bytes));
  in.read(header.data(), static_cast<std::streamsize>(header_length));
  if (header.find('{') == std::string::npos) throw std::runtime_error(file + ": the .npy header is not a dict");

  const std::string descr = header_value(header, "descr", file);
  if (descr == "'<f2'") {
    result.dtype = NpyDtype::float16;
  } else if (descr == "'<f4'") {
    result.dtype = NpyDtype::float32;
  } else if (descr == "'<V2'" || descr == "'|V2'" || descr == "'bfloat16'") {
    result.dtype = NpyDtype::bfloat16;
  } else {
    throw std::runtime_error(file + ": dtype " + descr +
                             " is not supported (little-endian float16 '<f2', float32 '<f4' or bfloat16 '<V2')");
  }
  if (header_value(header, "fortran_order", file) != "False")
    throw std::runtime_error(file + ": Fortran order is not supported (save a C-contiguous array)");
  const std::string shape = header_value(header, "shape", file);
  if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')')
    throw std::runtime_error(file + ": the .npy shape " + shape + " is not a tuple");
  std::size_t position = 1;
  while (position < shape.size() - 1) {
    while (position < shape.size() - 1 && (shape[position] == ' ' || shape[position] == ',')) ++position;
    if (position >= shape.size() - 1) break;
    std::size_t used = 0;
    unsigned long long size = 0;
    try {
      size = std::stoull(shape.substr(position), &used);
    } catch (const std::exception&) {
      throw std::runtime_error(file + ": the .npy shape " + shape + " is not a tuple of sizes");
    }
    result.shape.push_back(static_cast<std::size_t>(size));
    position += used;
    while (position < shape.size() - 1 && shape[position] == 'L') ++position;  // Python 2's long suffix
  }
  const std::size_t data_bytes = result.data_bytes();
  if (file_bytes - result.data_offset < data_bytes)
    throw std::runtime_error(file + ": truncated: shape " + shape + " needs " + std::to_string(data_bytes) +
                             " bytes of data, the file has " + std::to_string(file_bytes - result.data_offset));
  return result;
}

NpyArray read_npy(const std::filesystem::path& path) {
  const NpyHeader header = read_npy_header(path);
  NpyArray array;
  array.shape = header.shape;
  array.dtype = header.dtype;
  array.data.resize(header.data_bytes());
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(header.data_offset));
  in.read(reinterpret_cast<char*>(array.data.data()), static_cast<std::streamsize>(array.data.size()));
  if (static_cast<std::size_t>(in.gcount()) != array.data.size())
    throw std::runtime_error(path.string() + ": truncated while reading (the file changed?)");
  return array;
}

}  // namespace sparsejit::tools
