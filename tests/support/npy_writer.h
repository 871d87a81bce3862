#pragma once
// .npy files byte by byte, as NumPy writes them, for the tests of the reader and of the CLI's
// dump input.
#include <cstring>
#include <string>
#include <vector>

namespace sparsejit::testing {

// Magic, version, header length, the dict padded with spaces to a multiple of 64 bytes and
// ended by '\n', then `data`.
inline std::vector<char> npy_bytes(const std::string& descr, const std::string& shape, const std::vector<char>& data,
                                   int version = 1, const std::string& fortran = "False") {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
  const std::size_t prefix = version == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::vector<char> bytes = {'\x93', 'N', 'U', 'M', 'P', 'Y', static_cast<char>(version), 0};
  for (std::size_t i = 0; i < prefix - 8; ++i) bytes.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

// The bytes of `values`.
template <class T>
std::vector<char> raw_bytes(const std::vector<T>& values) {
  std::vector<char> bytes(values.size() * sizeof(T));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

}  // namespace sparsejit::testing
