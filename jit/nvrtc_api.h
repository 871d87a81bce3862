#pragma once
// NVRTC, opened at run time, not linked.
//
// Linking libnvrtc (about 109 MB for CUDA 13, with static constructors) made every process
// that links libsparsejit.so map it at start, although a process whose kernels are all in
// the database never compiles. NVRTC is opened with dlopen on first use instead, and only
// by what needs it: a compile, the NVRTC version of a cache key (CompileRequest::cache_key),
// the list of supported architectures (Target::parse). Loading a stored CUBIN needs none of
// these (CompileRequest::source_key, KernelProvider).
//
// Which library: $SPARSEJIT_NVRTC_LIBRARY (a file name or path for dlopen) when it is set
// and not empty, and then nothing else; otherwise libnvrtc.so.<major> of the CUDA toolkit
// sparsejit was built with, then libnvrtc.so, both found the usual way (LD_LIBRARY_PATH,
// the ld.so cache), then libnvrtc.so.<major> in that toolkit's library folder (where the
// build found it). The entry points are resolved once, with dlsym, into NvrtcApi.
//
// Use: const NvrtcApi& api = nvrtc("compiling <label>"); then
//     check_nvrtc_result(api.nvrtcGetCUBINSize(program, &size), "nvrtcGetCUBINSize");
#include <nvrtc.h>

#include <string>
#include <string_view>
#include <vector>

namespace sparsejit::jit {

// Every NVRTC function sparsejit calls.
#define SPARSEJIT_NVRTC_FUNCTIONS(X) \
  X(nvrtcVersion)                    \
  X(nvrtcGetErrorString)             \
  X(nvrtcGetNumSupportedArchs)       \
  X(nvrtcGetSupportedArchs)          \
  X(nvrtcCreateProgram)              \
  X(nvrtcDestroyProgram)             \
  X(nvrtcAddNameExpression)          \
  X(nvrtcCompileProgram)             \
  X(nvrtcGetProgramLogSize)          \
  X(nvrtcGetProgramLog)              \
  X(nvrtcGetCUBINSize)               \
  X(nvrtcGetCUBIN)                   \
  X(nvrtcGetLoweredName)

struct NvrtcApi {
#define SPARSEJIT_DECLARE_POINTER(name) decltype(&::name) name = nullptr;
  SPARSEJIT_NVRTC_FUNCTIONS(SPARSEJIT_DECLARE_POINTER)
#undef SPARSEJIT_DECLARE_POINTER
  std::string library;  // the file the loader mapped, e.g. "/usr/local/cuda-13.0/lib/libnvrtc.so.13"
};

// The environment variable that names the NVRTC library to open instead of the defaults.
inline constexpr const char* kNvrtcLibraryEnvironment = "SPARSEJIT_NVRTC_LIBRARY";

// The names dlopen is given, in order (see above), as this process's environment makes them.
std::vector<std::string> nvrtc_library_candidates();

// NVRTC, opened on first use and kept; thread-safe. When it cannot be opened (or lacks one
// of the functions), throws NvrtcUnavailableError saying what needed it (`purpose`, e.g.
// "compiling permute_tokens<D=64 ...>"), each library tried with dlerror()'s text, and what
// to do. A failure is remembered: later calls throw it again (with their own purpose).
const NvrtcApi& nvrtc(std::string_view purpose);

// Whether this process has opened libnvrtc (through nvrtc() above). Never loads it.
bool nvrtc_loaded();

// Throws NvrtcError naming `call` with NVRTC's text when `result` is not NVRTC_SUCCESS.
// NVRTC must be loaded already (a result comes from a call through the table).
void check_nvrtc_result(nvrtcResult result, const char* call);

}  // namespace sparsejit::jit
