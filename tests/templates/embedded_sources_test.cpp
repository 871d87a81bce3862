// The kernel sources embedded at build time are byte-identical to the files in the tree,
// and every kernel source of the tree is embedded.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>

#include "templates/embedded_sources.h"
#include "tests/support/test_support.h"

#ifndef SPARSEJIT_SOURCE_DIR
#error "tests/templates/CMakeLists.txt defines SPARSEJIT_SOURCE_DIR (the source tree)"
#endif

namespace sparsejit::templates {
namespace {

// The tree the test was built from, or $SPARSEJIT_SOURCE_DIR where the binary runs elsewhere
// (the GPU machine runs it from another checkout of the same commit).
std::filesystem::path templates_directory() {
  const char* override_dir = std::getenv("SPARSEJIT_SOURCE_DIR");
  const std::filesystem::path root =
      override_dir != nullptr && *override_dir != '\0' ? override_dir : SPARSEJIT_SOURCE_DIR;
  return root / "templates";
}
const std::filesystem::path kTemplatesDir = templates_directory();

std::string file_text(const std::filesystem::path& path) {
  const std::vector<char> bytes = testing::read_bytes(path);
  return std::string(bytes.begin(), bytes.end());
}

// The permute family's two device files are embedded with exactly their bytes on disk.
TEST(EmbeddedSources, PermuteFilesMatchTheSourceTree) {
  for (const char* path : {"permute/permute_tokens.cuh", "permute/permute_params.h"}) {
    SCOPED_TRACE(path);
    ASSERT_TRUE(std::filesystem::is_regular_file(kTemplatesDir / path));
    const std::string on_disk = file_text(kTemplatesDir / path);
    ASSERT_FALSE(on_disk.empty());
    EXPECT_EQ(embedded_source(path), on_disk);
  }
}

// Every embedded file matches its file in the tree, and every *.cuh and *_params.h under
// templates/ is embedded (a new kernel file cannot be forgotten), each once.
TEST(EmbeddedSources, AreExactlyTheKernelFilesOfTheTree) {
  std::set<std::string> embedded;
  for (const EmbeddedSource& source : embedded_sources()) {
    SCOPED_TRACE(std::string(source.path));
    EXPECT_TRUE(embedded.insert(std::string(source.path)).second) << "embedded twice";
    EXPECT_EQ(source.content, file_text(kTemplatesDir / source.path));
  }
  std::set<std::string> on_disk;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(kTemplatesDir)) {
    const std::string name = entry.path().filename().string();
    const bool kernel_file = name.ends_with(".cuh") || name.ends_with("_params.h");
    if (entry.is_regular_file() && kernel_file)
      on_disk.insert(entry.path().lexically_relative(kTemplatesDir).generic_string());
  }
  EXPECT_EQ(embedded, on_disk);
  EXPECT_TRUE(embedded.contains("permute/permute_tokens.cuh"));
}

// A path that is not embedded throws std::out_of_range naming it.
TEST(EmbeddedSources, MissingPathThrowsNamingIt) {
  try {
    embedded_source("missing");
    FAIL() << "an absent file must throw";
  } catch (const std::out_of_range& error) {
    EXPECT_NE(std::string(error.what()).find("'missing'"), std::string::npos) << error.what();
  }
  // The path is relative to templates/: the same file under another spelling is absent.
  EXPECT_THROW(embedded_source("templates/permute/permute_tokens.cuh"), std::out_of_range);
  EXPECT_THROW(embedded_source("permute_tokens.cuh"), std::out_of_range);
}

}  // namespace
}  // namespace sparsejit::templates
