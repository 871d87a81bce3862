#include "jit/nvrtc_compiler.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <utility>

#include "jit/error.h"
#include "jit/nvrtc_api.h"
#include "jit/sha256.h"

namespace sparsejit::jit {
namespace {

std::atomic<std::uint64_t> compile_counter{0};

// The byte range of the ELF64 section `.rodata` of the file mapped at `image` (`size`
// bytes), where a library keeps its string constants; the whole file when it is not a
// well-formed ELF64 file with such a section.
std::pair<std::size_t, std::size_t> rodata_range(const unsigned char* image, std::size_t size) {
  const std::pair<std::size_t, std::size_t> whole{0, size};
  Elf64_Ehdr header;
  if (size < sizeof header) return whole;
  std::memcpy(&header, image, sizeof header);
  if (std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0 || header.e_ident[EI_CLASS] != ELFCLASS64 ||
      header.e_shentsize != sizeof(Elf64_Shdr) || header.e_shstrndx >= header.e_shnum ||
      header.e_shoff > size || (size - header.e_shoff) / sizeof(Elf64_Shdr) < header.e_shnum)
    return whole;
  const auto section = [&](std::size_t i) {
    Elf64_Shdr entry;
    std::memcpy(&entry, image + header.e_shoff + i * sizeof(Elf64_Shdr), sizeof entry);
    return entry;
  };
  const Elf64_Shdr names = section(header.e_shstrndx);
  if (names.sh_offset > size || names.sh_size > size - names.sh_offset) return whole;
  static constexpr char kRodata[] = ".rodata";
  for (std::size_t i = 0; i < header.e_shnum; ++i) {
    const Elf64_Shdr entry = section(i);
    if (entry.sh_name + sizeof kRodata > names.sh_size || entry.sh_type != SHT_PROGBITS) continue;
    if (std::memcmp(image + names.sh_offset + entry.sh_name, kRodata, sizeof kRodata) != 0) continue;
    if (entry.sh_offset > size || entry.sh_size > size - entry.sh_offset) return whole;
    return {entry.sh_offset, entry.sh_size};
  }
  return whole;
}

// nvrtcVersion() gives major.minor only; two NVRTCs of one minor version may still emit
// different code. The library carries its build tag ("Build cuda_13.0.r13.0/compiler.N_0");
// read it from the file the process actually loaded (the one `api` came from). Falls back to
// the file's size. Only `.rodata` is searched (13 MB of the 109 MB libnvrtc of CUDA 13.0; the
// tag sits 93 MB in): every process that computes a cache key reads it (3.7-4.4 ms measured),
// which is why a warm start finds CUBINs by their source key and never gets here.
std::string read_nvrtc_build(const NvrtcApi& api) {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(api.nvrtcVersion), &info) == 0 || info.dli_fname == nullptr)
    return "unknown build";
  const int fd = ::open(info.dli_fname, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "unknown build";
  struct stat status {};
  std::string build = "unknown build";
  if (::fstat(fd, &status) == 0 && status.st_size > 0) {
    const auto size = static_cast<std::size_t>(status.st_size);
    build = "library of " + std::to_string(size) + " bytes";
    void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping != MAP_FAILED) {
      static constexpr char kTag[] = "Build cuda_";
      const auto* image = static_cast<const unsigned char*>(mapping);
      const char* file = reinterpret_cast<const char*>(image);
      const auto [offset, length] = rodata_range(image, size);
      const void* hit = ::memmem(file + offset, length, kTag, sizeof(kTag) - 1);
      if (hit == nullptr && length < size) hit = ::memmem(file, size, kTag, sizeof(kTag) - 1);  // elsewhere after all
      if (hit != nullptr) {
        const char* tag = static_cast<const char*>(hit) + std::strlen("Build ");
        const char* end = static_cast<const char*>(std::memchr(tag, '\0', file + size - tag));
        if (end != nullptr && end - tag < 200) build.assign(tag, end);
      }
      ::munmap(mapping, size);
    }
  }
  ::close(fd);
  return build;
}

struct ProgramDeleter {
  const NvrtcApi* api;
  void operator()(nvrtcProgram* program) const {
    api->nvrtcDestroyProgram(program);
    delete program;
  }
};
using ProgramHandle = std::unique_ptr<nvrtcProgram, ProgramDeleter>;

std::string program_log(const NvrtcApi& api, nvrtcProgram program) {
  std::size_t size = 0;
  if (api.nvrtcGetProgramLogSize(program, &size) != NVRTC_SUCCESS || size <= 1) return {};
  std::string log(size, '\0');
  if (api.nvrtcGetProgramLog(program, log.data()) != NVRTC_SUCCESS) return {};
  log.resize(size - 1);  // drop the terminating NUL
  return log;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : " ") + item;
  return out;
}

}  // namespace

CompileError::CompileError(const std::string& program, std::vector<std::string> options,
                           std::string log, const std::string& nvrtc_message)
    : JitError("NVRTC could not compile " + program + " (" + nvrtc_message + ")\noptions: " +
               join(options) + "\nlog:\n" + (log.empty() ? "(empty)" : log)),
      options_(std::move(options)),
      log_(std::move(log)) {}

std::string NvrtcVersion::to_string() const {
  return std::to_string(major) + "." + std::to_string(minor) + " (" + build + ")";
}

const NvrtcVersion& nvrtc_version() {
  static const NvrtcVersion version = [] {
    const NvrtcApi& api = nvrtc("reading NVRTC's version (part of every CUBIN's cache key)");
    NvrtcVersion v;
    check_nvrtc_result(api.nvrtcVersion(&v.major, &v.minor), "nvrtcVersion");
    v.build = read_nvrtc_build(api);
    return v;
  }();
  return version;
}

std::vector<std::string> CompileRequest::all_options() const {
  std::vector<std::string> all = options;
  all.push_back(target.nvrtc_option());
  return all;
}

namespace {

// Everything of `request` that determines its binary, save the compiler: the fields both
// keys hash after their own tag.
void add_request_fields(Sha256& hash, const CompileRequest& request) {
  hash.add_field(request.target.name()).add_field(request.program_name).add_field(request.source);
  hash.add_field(std::to_string(request.headers.size()));
  for (const SourceFile& header : request.headers) hash.add_field(header.name).add_field(header.content);
  hash.add_field(std::to_string(request.name_expressions.size()));
  for (const std::string& expression : request.name_expressions) hash.add_field(expression);
  hash.add_field(std::to_string(request.options.size()));
  for (const std::string& option : request.options) hash.add_field(option);
}

}  // namespace

std::string CompileRequest::cache_key() const {
  Sha256 hash;  // unchanged since v1: the keys of stored CUBINs stay valid
  hash.add_field("sparsejit-cubin-key-v1").add_field(nvrtc_version().to_string());
  add_request_fields(hash, *this);
  return hash.hex();
}

std::string CompileRequest::source_key() const {
  Sha256 hash;
  hash.add_field("sparsejit-source-key-v1");
  add_request_fields(hash, *this);
  return hash.hex();
}

CompiledBinary compile(const CompileRequest& request) {
  const NvrtcApi& api = nvrtc("compiling " + request.program_name);
  const auto start = std::chrono::steady_clock::now();
  std::vector<const char*> header_contents;
  std::vector<const char*> header_names;
  for (const SourceFile& header : request.headers) {
    header_contents.push_back(header.content.c_str());
    header_names.push_back(header.name.c_str());
  }
  ProgramHandle program(new nvrtcProgram(nullptr), ProgramDeleter{&api});
  check_nvrtc_result(api.nvrtcCreateProgram(program.get(), request.source.c_str(), request.program_name.c_str(),
                                            static_cast<int>(request.headers.size()), header_contents.data(),
                                            header_names.data()),
                     "nvrtcCreateProgram");
  for (const std::string& expression : request.name_expressions)
    check_nvrtc_result(api.nvrtcAddNameExpression(*program, expression.c_str()), "nvrtcAddNameExpression");

  const std::vector<std::string> options = request.all_options();
  std::vector<const char*> option_pointers;
  for (const std::string& option : options) option_pointers.push_back(option.c_str());

  compile_counter.fetch_add(1, std::memory_order_relaxed);
  const nvrtcResult result =
      api.nvrtcCompileProgram(*program, static_cast<int>(option_pointers.size()), option_pointers.data());
  CompiledBinary binary;
  binary.log = program_log(api, *program);
  if (result != NVRTC_SUCCESS)
    throw CompileError(request.program_name, options, binary.log, api.nvrtcGetErrorString(result));

  std::size_t cubin_size = 0;
  check_nvrtc_result(api.nvrtcGetCUBINSize(*program, &cubin_size), "nvrtcGetCUBINSize");
  if (cubin_size == 0)
    throw NvrtcError("NVRTC produced no CUBIN for " + request.program_name + " with " +
                     request.target.nvrtc_option());
  binary.cubin.resize(cubin_size);
  check_nvrtc_result(api.nvrtcGetCUBIN(*program, reinterpret_cast<char*>(binary.cubin.data())), "nvrtcGetCUBIN");
  for (const std::string& expression : request.name_expressions) {
    const char* lowered = nullptr;
    check_nvrtc_result(api.nvrtcGetLoweredName(*program, expression.c_str(), &lowered), "nvrtcGetLoweredName");
    binary.lowered_names.emplace(expression, lowered);
  }
  binary.compile_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return binary;
}

std::uint64_t nvrtc_compile_count() { return compile_counter.load(std::memory_order_relaxed); }

}  // namespace sparsejit::jit
