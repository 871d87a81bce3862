#pragma once
// Errors raised by the jit/ layer. Each carries what a user needs to act on it:
// the failing call, the driver's or NVRTC's own words, and for compiles the full log.
#include <stdexcept>
#include <string>
#include <vector>

namespace sparsejit::jit {

// Base of every jit/ error.
class JitError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The CUDA driver library (libcuda.so.1) could not be opened, or reports no usable device.
// Raised on machines without a GPU; callers that can do useful work without one catch it.
class NoGpuError : public JitError {
 public:
  using JitError::JitError;
};

// A driver API call returned an error. `call` is the call as written in the source.
class CudaError : public JitError {
 public:
  CudaError(int code, std::string call, std::string message)
      : JitError(call + " failed: " + message), code_(code), call_(std::move(call)) {}
  int code() const { return code_; }
  const std::string& call() const { return call_; }

 private:
  int code_;
  std::string call_;
};

// NVRTC rejected a program. what() holds the program name, the options and the NVRTC log.
class CompileError : public JitError {
 public:
  CompileError(const std::string& program, std::vector<std::string> options, std::string log,
               const std::string& nvrtc_message);
  const std::string& log() const { return log_; }
  const std::vector<std::string>& options() const { return options_; }

 private:
  std::vector<std::string> options_;
  std::string log_;
};

// An NVRTC API call (other than the compile itself) failed.
class NvrtcError : public JitError {
 public:
  using JitError::JitError;
};

// NVRTC was needed (to compile, or for its version) but libnvrtc could not be opened or
// lacks a function (jit/nvrtc_api.h). what() says what needed it, each library tried with
// the loader's reason, and what to do.
class NvrtcUnavailableError : public NvrtcError {
 public:
  using NvrtcError::NvrtcError;
};

}  // namespace sparsejit::jit
