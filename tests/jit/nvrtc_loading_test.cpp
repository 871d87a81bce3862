// NVRTC opened at run time (jit/nvrtc_api.h): which libraries are tried, the error when none
// opens, and what opens it. NVRTC is opened once per process and other tests of this program
// open it, so the cases that need a process where it is not open yet run in a child that
// re-executes this program for that test alone (gtest's "threadsafe" death-test style).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <regex>
#include <string>

#include "jit/error.h"
#include "jit/nvrtc_api.h"
#include "jit/nvrtc_compiler.h"
#include "jit/target.h"

namespace sparsejit::jit {
namespace {

// In the child: fails it with `what` on stderr unless `condition`.
void require(bool condition, const std::string& what) {
  if (condition) return;
  std::fprintf(stderr, "child check failed: %s\n", what.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

CompileRequest tiny_request() {
  CompileRequest request;
  request.program_name = "tiny.cu";
  request.source = "__global__ void tiny(int* out) { *out = 1; }";
  request.name_expressions = {"tiny"};
  request.target = Target::for_compute_capability(9, 0);  // Target::parse would open NVRTC
  return request;
}

class NvrtcLoading : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(NvrtcLoading, TheDefaultsAreTheToolkitsSonameThenTheUnversionedNameThenTheToolkitFolder) {
  const char* saved = std::getenv(kNvrtcLibraryEnvironment);
  const std::string restore = saved != nullptr ? saved : "";
  ::unsetenv(kNvrtcLibraryEnvironment);
  const std::vector<std::string> candidates = nvrtc_library_candidates();
  ::setenv(kNvrtcLibraryEnvironment, "/opt/nvrtc/libnvrtc.so.13", 1);
  const std::vector<std::string> overridden = nvrtc_library_candidates();
  ::setenv(kNvrtcLibraryEnvironment, "", 1);
  const std::vector<std::string> empty_override = nvrtc_library_candidates();
  if (saved != nullptr) ::setenv(kNvrtcLibraryEnvironment, restore.c_str(), 1);
  else ::unsetenv(kNvrtcLibraryEnvironment);

  ASSERT_GE(candidates.size(), 2u);
  EXPECT_TRUE(std::regex_match(candidates[0], std::regex("libnvrtc\\.so\\.1[2-9]|libnvrtc\\.so\\.[2-9][0-9]")))
      << candidates[0];
  EXPECT_EQ(candidates[1], "libnvrtc.so");
  if (candidates.size() == 3) {
    EXPECT_TRUE(candidates[2].ends_with("/" + candidates[0])) << candidates[2];
  }
  EXPECT_EQ(overridden, std::vector<std::string>{"/opt/nvrtc/libnvrtc.so.13"}) << "the override is the only candidate";
  EXPECT_EQ(empty_override, candidates) << "an empty override counts as unset";
}

// $SPARSEJIT_NVRTC_LIBRARY naming a file that does not exist: compiling, the version, the
// cache key and Target::parse each fail with NvrtcUnavailableError saying what needed NVRTC,
// what was tried, the loader's reason and what to do; nothing is loaded.
TEST_F(NvrtcLoading, AMissingLibraryIsAClearErrorNamingWhatNeededIt) {
  EXPECT_EXIT(
      {
        ::setenv(kNvrtcLibraryEnvironment, "/nonexistent/libnvrtc.so.99", 1);
        std::string message;
        try {
          compile(tiny_request());
          require(false, "compile() must throw without NVRTC");
        } catch (const NvrtcUnavailableError& error) {
          message = error.what();
        }
        require(contains(message, "NVRTC is needed for compiling tiny.cu"), message);
        require(contains(message, "$SPARSEJIT_NVRTC_LIBRARY = /nonexistent/libnvrtc.so.99 ("), message);
        require(contains(message, "No such file or directory"), "dlerror()'s text: " + message);
        require(contains(message, "point $SPARSEJIT_NVRTC_LIBRARY at a libnvrtc that exists"), message);
        try {
          nvrtc_version();
          require(false, "nvrtc_version() must throw without NVRTC");
        } catch (const NvrtcUnavailableError& error) {
          require(contains(error.what(), "NVRTC is needed for reading NVRTC's version"), error.what());
        }
        try {
          (void)tiny_request().cache_key();
          require(false, "cache_key() must throw without NVRTC");
        } catch (const NvrtcError& error) {  // the base class: the C API maps it to SPARSEJIT_ERROR_COMPILE
          require(contains(error.what(), "/nonexistent/libnvrtc.so.99"), error.what());
        }
        try {
          Target::parse("sm_90");
          require(false, "Target::parse must throw without NVRTC");
        } catch (const NvrtcUnavailableError& error) {
          require(contains(error.what(), "checking the target 'sm_90'"), error.what());
        }
        require(!nvrtc_loaded(), "nothing was loaded");
        require(!tiny_request().source_key().empty(), "the source key needs no NVRTC");
        std::fprintf(stderr, "child: clear errors\n");
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "child: clear errors");
}

// Without the override the defaults find this machine's NVRTC (the build's toolkit), and
// only what needs NVRTC opens it.
TEST_F(NvrtcLoading, OnlyWhatNeedsNvrtcOpensIt) {
  EXPECT_EXIT(
      {
        ::unsetenv(kNvrtcLibraryEnvironment);
        require(!nvrtc_loaded(), "a fresh process has not opened NVRTC");
        const CompileRequest request = tiny_request();
        const std::string source_key = request.source_key();
        require(source_key.size() == 64, source_key);
        require(!nvrtc_loaded(), "source_key() must not open NVRTC");
        const std::string key = request.cache_key();
        require(nvrtc_loaded(), "cache_key() opens NVRTC (its version is part of the key)");
        require(key != source_key, "the two keys differ");
        require(contains(nvrtc("the test").library, "libnvrtc"), nvrtc("the test").library);
        require(!compile(request).cubin.empty(), "compiles");
        std::fprintf(stderr, "child: loaded on demand\n");
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "child: loaded on demand");
}

}  // namespace
}  // namespace sparsejit::jit
