#pragma once
// SHA-256 (OpenSSL's EVP) for the keys of compiled code.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace sparsejit::jit {

// Incremental hasher. Fields are framed by their length so that ("ab","c") and ("a","bc")
// hash differently: use add_field for every logical field of a key.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  Sha256& add_bytes(std::string_view bytes);
  Sha256& add_field(std::string_view field);  // 8-byte length, then the bytes
  std::string hex();                           // 64 lowercase hex digits; ends the hash

 private:
  struct State;
  std::unique_ptr<State> state_;
};

std::string sha256_hex(std::string_view bytes);

}  // namespace sparsejit::jit
