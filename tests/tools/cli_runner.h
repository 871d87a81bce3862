// Runs the sparsejit CLI as a child process with a controlled environment and captures its
// stdout, stderr and exit code separately.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sparsejit::testing {

struct CliResult {
  int exit_code = -1;  // the child's exit status; 128 + signal when it was killed by one
  std::string out;
  std::string err;
  std::string describe() const;  // for failure messages: the code and both streams
};

// The environment of a child: this process's environment with the variables named in
// `overrides` replaced (a std::nullopt value removes the variable).
using EnvironmentOverrides = std::map<std::string, std::optional<std::string>>;

// The sparsejit binary: $SPARSEJIT_CLI (set by CTest), else the path compiled in.
std::filesystem::path cli_path();

// Runs `cli_path() args...` in `working_directory`; kills it after `timeout_seconds`.
CliResult run_cli(const std::vector<std::string>& args, const EnvironmentOverrides& overrides,
                  const std::filesystem::path& working_directory, int timeout_seconds = 120);

// The lines of `text`, without their '\n'; a last line without '\n' counts.
std::vector<std::string> lines_of(const std::string& text);

}  // namespace sparsejit::testing
