#pragma once
// Opening a shared library at run time with dlopen, for the libraries sparsejit does not
// link: the CUDA driver (jit/driver_api.h) and NVRTC (jit/nvrtc_api.h). Each keeps its own
// table of entry points and its own words for a failure; this is the part they share.
#include <string>
#include <vector>

namespace sparsejit::jit {

struct LibraryAttempt {
  std::string name;   // as given to dlopen: a soname ("libnvrtc.so.13") or a path
  std::string error;  // dlerror()'s text
};

struct OpenedLibrary {
  void* handle = nullptr;  // null when no candidate opened
  std::string name;        // the candidate that opened
  std::vector<LibraryAttempt> failed;  // the candidates that did not open, in order
};

// Tries `candidates` in order with dlopen(RTLD_NOW | RTLD_LOCAL); the first that opens wins.
// The handle is never closed: the libraries stay mapped for the life of the process.
OpenedLibrary open_first_library(const std::vector<std::string>& candidates);

// "name (error); name (error)", for messages.
std::string describe(const std::vector<LibraryAttempt>& attempts);

// The file the dynamic loader mapped for `handle` (dlinfo's link map), or "" if unknown.
std::string library_path(void* handle);

}  // namespace sparsejit::jit
