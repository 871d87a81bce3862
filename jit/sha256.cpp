#include "jit/sha256.h"

#include <openssl/evp.h>

#include <array>

#include "jit/error.h"

namespace sparsejit::jit {

struct Sha256::State {
  EVP_MD_CTX* context = nullptr;
  ~State() { EVP_MD_CTX_free(context); }
};

Sha256::Sha256() : state_(std::make_unique<State>()) {
  state_->context = EVP_MD_CTX_new();
  if (state_->context == nullptr || EVP_DigestInit_ex(state_->context, EVP_sha256(), nullptr) != 1)
    throw JitError("OpenSSL could not start a SHA-256 digest");
}

Sha256::~Sha256() = default;

Sha256& Sha256::add_bytes(std::string_view bytes) {
  if (EVP_DigestUpdate(state_->context, bytes.data(), bytes.size()) != 1)
    throw JitError("OpenSSL SHA-256 update failed");
  return *this;
}

Sha256& Sha256::add_field(std::string_view field) {
  std::array<char, 8> length{};
  std::uint64_t size = field.size();
  for (char& byte : length) {
    byte = static_cast<char>(size & 0xff);
    size >>= 8;
  }
  add_bytes({length.data(), length.size()});
  return add_bytes(field);
}

std::string Sha256::hex() {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(state_->context, digest.data(), &length) != 1)
    throw JitError("OpenSSL SHA-256 final failed");
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    out.push_back(kDigits[digest[i] >> 4]);
    out.push_back(kDigits[digest[i] & 0xf]);
  }
  return out;
}

std::string sha256_hex(std::string_view bytes) { return Sha256().add_bytes(bytes).hex(); }

}  // namespace sparsejit::jit
