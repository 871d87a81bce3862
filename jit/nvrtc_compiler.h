#pragma once
// Source -> CUBIN with NVRTC. Works on machines without a GPU.
//
// The pipeline (after jitify2): a CompileRequest (source, headers, name expressions,
// options, target) is compiled into a CompiledBinary (CUBIN bytes and the lowered name of
// every name expression); jit/module.h loads that into a LoadedModule and finds Kernels.
//
// NVRTC is opened at run time on first use (jit/nvrtc_api.h says which library and how to
// point at another): compile(), nvrtc_version() and cache_key() open it; source_key() does
// not, so a process that only loads stored CUBINs never maps libnvrtc.
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "jit/target.h"

namespace sparsejit::jit {

// An in-memory header the program can #include by `name`.
struct SourceFile {
  std::string name;
  std::string content;
};

struct CompileRequest {
  std::string program_name;                   // shown in logs, e.g. "permute_tokens.cu"
  std::string source;                         // the translation unit
  std::vector<SourceFile> headers;            // every header it may include
  std::vector<std::string> name_expressions;  // e.g. "sparsejit::permute_tokens<128, 16, 256, 2, false>"
  std::vector<std::string> options;           // NVRTC options, without the architecture
  Target target = Target::for_compute_capability(9, 0);

  // SHA-256 (hex) over everything above plus the NVRTC version and build: a changed byte of
  // any header, option or template argument, or a different NVRTC, gives a different key.
  // The key a CUBIN is stored under. Opens NVRTC (its version; 4 ms for CUDA 13's build tag).
  std::string cache_key() const;
  // SHA-256 (hex) over what cache_key() hashes except the NVRTC version and build (and
  // under its own tag, so the two never collide): which source a CUBIN was compiled from,
  // by whichever NVRTC. The runtime finds stored CUBINs by it without opening NVRTC.
  std::string source_key() const;
  // All options passed to NVRTC, the architecture included.
  std::vector<std::string> all_options() const;
};

struct CompiledBinary {
  std::vector<std::uint8_t> cubin;
  std::map<std::string, std::string> lowered_names;  // name expression -> mangled name
  std::string log;                                   // NVRTC's warnings, possibly empty
  double compile_ms = 0;
};

struct NvrtcVersion {
  int major = 0;
  int minor = 0;
  std::string build;  // "cuda_13.0.r13.0/compiler.36424714_0", read from the loaded libnvrtc
  std::string to_string() const;  // "13.0 (cuda_13.0.r13.0/compiler.36424714_0)"
};

// The NVRTC this process uses; read once. Opens NVRTC: throws NvrtcUnavailableError when
// it cannot.
const NvrtcVersion& nvrtc_version();

// Compiles to a CUBIN. Throws CompileError with the log and the options when NVRTC rejects
// the program, NvrtcUnavailableError when NVRTC cannot be opened. Thread-safe (each call
// owns its nvrtcProgram).
CompiledBinary compile(const CompileRequest& request);

// How many times compile() has invoked NVRTC in this process (for cache tests and stats).
std::uint64_t nvrtc_compile_count();

// Whether this process has opened libnvrtc (a compile, nvrtc_version(), cache_key() or
// Target::parse did). Never opens it. Defined in jit/nvrtc_api.cpp.
bool nvrtc_loaded();

}  // namespace sparsejit::jit
