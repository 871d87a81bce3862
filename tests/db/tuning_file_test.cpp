// The tuning file format (db/tuning_file.h): a golden file pins version 1 byte for byte,
// CUBINs survive base64 at every chunk boundary, and every kind of bad file is refused
// with a message that names the field.
#include "db/tuning_file.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <functional>

#include "tests/db/sample_records.h"
#include "tests/support/test_support.h"

namespace sparsejit::db {
namespace {

using nlohmann::ordered_json;
using testing::build_sample_database;
using testing::TempDirectory;

const std::filesystem::path kGoldenFile = std::filesystem::path(SPARSEJIT_DB_TEST_DATA) / "sample_v1.json";

std::string golden_text() {
  const std::vector<char> bytes = testing::read_bytes(kGoldenFile);
  return std::string(bytes.begin(), bytes.end());
}

class TuningFileTest : public ::testing::Test {
 protected:
  TempDirectory directory;
};

// The export of build_sample_database is the golden file, byte for byte. A change here is a
// change of the format: old files must still read (bump kTuningFileVersion if they would be
// misread) and the golden file is then updated on purpose.
TEST_F(TuningFileTest, TheSampleDatabaseExportsToTheGoldenFile) {
  build_sample_database(directory / "sample.db");
  const std::string text = write_tuning_file(Database::open(directory / "sample.db").read_snapshot(true));
  ASSERT_FALSE(golden_text().empty()) << kGoldenFile << " is missing";
  EXPECT_EQ(text, golden_text()) << "the export of the sample database changed; it is now:\n" << text;
}

TEST_F(TuningFileTest, TheGoldenFileImportsAndExportsToTheSameBytes) {
  Database database = Database::open(directory / "fresh.db");
  database.import_snapshot(read_tuning_file(golden_text()));
  EXPECT_EQ(write_tuning_file(database.read_snapshot(true)), golden_text());
}

TEST_F(TuningFileTest, TheFormatAndVersionComeFirstAndCubinsOnlyWhenCarried) {
  build_sample_database(directory / "sample.db");
  const Database database = Database::open(directory / "sample.db");
  const ordered_json without = ordered_json::parse(write_tuning_file(database.read_snapshot(false)));
  ASSERT_GE(without.size(), 2u);
  EXPECT_EQ(without.begin().key(), "format");
  EXPECT_EQ(*without.begin(), "sparsejit-tuning");
  EXPECT_EQ(std::next(without.begin()).key(), "version");
  EXPECT_EQ(*std::next(without.begin()), 1);
  EXPECT_FALSE(without.contains("cubins"));
  EXPECT_EQ(without["trials"][1]["config_json"], R"({"vec":16})") << "configs are JSON text, kept exactly";
  EXPECT_TRUE(without["trials"][2]["median_ms"].is_null()) << "the failed trial has no time";
  EXPECT_TRUE(ordered_json::parse(write_tuning_file(database.read_snapshot(true))).contains("cubins"));
}

TEST_F(TuningFileTest, BinariesOfEverySizeSurviveBase64) {
  TuningSnapshot snapshot;
  // Sizes around the 12,288-byte encoding chunk and every padding length.
  for (const std::size_t size : {1u, 2u, 3u, 4u, 12287u, 12288u, 12289u, 30000u}) {
    CubinRecord cubin = testing::sample_cubin(7, static_cast<int>(size));
    cubin.binary.resize(size);
    for (std::size_t i = 0; i < size; ++i) cubin.binary[i] = static_cast<std::uint8_t>((i * 131 + size) % 256);
    cubin.created_at = "2025-01-01T00:00:00.000Z";
    snapshot.cubins.push_back(cubin);
  }
  const TuningSnapshot read = read_tuning_file(write_tuning_file(snapshot));
  ASSERT_EQ(read.cubins.size(), snapshot.cubins.size());
  for (std::size_t i = 0; i < read.cubins.size(); ++i)
    EXPECT_EQ(read.cubins[i].binary, snapshot.cubins[i].binary) << snapshot.cubins[i].binary.size() << " bytes";
}

struct BadFile {
  std::string name;
  std::function<void(ordered_json&)> spoil;  // applied to the golden file
  std::string message;                       // must appear in the error
};

void PrintTo(const BadFile& bad, std::ostream* os) { *os << bad.name; }

class BadTuningFileTest : public TuningFileTest, public ::testing::WithParamInterface<BadFile> {};

TEST_P(BadTuningFileTest, IsRefusedWithAMessageNamingTheField) {
  ordered_json file = ordered_json::parse(golden_text());
  GetParam().spoil(file);
  try {
    read_tuning_file(file.dump());
    FAIL() << "expected a TuningFileError mentioning '" << GetParam().message << "'";
  } catch (const TuningFileError& error) {
    EXPECT_NE(std::string(error.what()).find(GetParam().message), std::string::npos) << error.what();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Spoiled, BadTuningFileTest,
    ::testing::Values(
        BadFile{"newer_version", [](ordered_json& f) { f["version"] = 2; },
                "format version 2 is newer than this sparsejit reads (1)"},
        BadFile{"version_zero", [](ordered_json& f) { f["version"] = 0; }, "0 is not a format version"},
        BadFile{"version_as_text", [](ordered_json& f) { f["version"] = "1"; },
                "version: expected an integer, found string"},
        BadFile{"other_format", [](ordered_json& f) { f["format"] = "something-else"; },
                "not a sparsejit tuning file"},
        BadFile{"no_format", [](ordered_json& f) { f.erase("format"); }, "not a sparsejit tuning file"},
        BadFile{"top_level_array", [](ordered_json& f) { f = ordered_json::array({1, 2}); },
                "not a sparsejit tuning file"},
        BadFile{"missing_trials", [](ordered_json& f) { f.erase("trials"); }, "trials: missing"},
        BadFile{"trial_not_an_object", [](ordered_json& f) { f["trials"][2] = 5; },
                "trials[2]: expected an object, found number"},
        BadFile{"median_as_text", [](ordered_json& f) { f["trials"][1]["median_ms"] = "fast"; },
                "trials[1].median_ms: expected a number, found string"},
        BadFile{"unknown_status", [](ordered_json& f) { f["trials"][0]["status"] = "great"; },
                "trials[0].status: 'great' is not ok, failed or incorrect"},
        BadFile{"ok_without_time", [](ordered_json& f) { f["trials"][0]["median_ms"] = nullptr; },
                "trials[0]: an ok trial needs its median time"},
        BadFile{"unknown_gpu", [](ordered_json& f) { f["best_configs"][1]["gpu"] = "NVIDIA B200|cc10.0"; },
                "best_configs[1]: GPU 'NVIDIA B200|cc10.0' is not among the GPUs"},
        BadFile{"fingerprint_mismatch", [](ordered_json& f) { f["gpus"][0]["sm_count"] = 100; },
                "gpus[0].fingerprint: 'NVIDIA H100 80GB HBM3|cc9.0|132 SMs"},
        BadFile{"sm_count_too_large", [](ordered_json& f) { f["gpus"][0]["sm_count"] = 1LL << 40; },
                "gpus[0].sm_count: 1099511627776 is out of range"},
        BadFile{"density_above_one", [](ordered_json& f) { f["sparsity_profiles"][0]["density"] = 2; },
                "sparsity_profiles[0]: sparsity profile (model 'wan2.1-14b', step 12, layer 0, head 0): density "
                "2.000000 and tau 0.950000 must lie in (0, 1]"},
        BadFile{"bad_base64", [](ordered_json& f) { f["cubins"][0]["binary_base64"] = "AAA=A==="; },
                "cubins[0].binary_base64: not standard base64 with padding"},
        BadFile{"base64_with_whitespace", [](ordered_json& f) { f["cubins"][0]["binary_base64"] = " AAAA"; },
                "cubins[0].binary_base64: not standard base64"},
        BadFile{"bad_cubin_key", [](ordered_json& f) { f["cubins"][1]["key"] = "abc"; },
                "cubins[1]: cubin key must be 64 lowercase hex digits"},
        BadFile{"bad_source_key", [](ordered_json& f) { f["cubins"][0]["source_key"] = "abc"; },
                "cubins[0]: cubin 0000000000000000000000000000000000000000000000000000000000000001: "
                "source key must be empty or 64 lowercase hex digits"},
        BadFile{"source_key_as_number", [](ordered_json& f) { f["cubins"][0]["source_key"] = 7; },
                "cubins[0].source_key: expected a string, found number"}),
    [](const ::testing::TestParamInfo<BadFile>& info) { return info.param.name; });

TEST_F(TuningFileTest, TextThatIsNotJsonIsRefused) {
  for (const std::string text : {"", "garbage", "{\"format\": \"sparsejit-tuning\",", "\x89PNG\r\n"}) {
    try {
      read_tuning_file(text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const TuningFileError& error) {
      EXPECT_EQ(std::string(error.what()), "not a sparsejit tuning file: the text is not JSON");
    }
  }
}

// A CUBIN's source key (added within version 1): written after "key" where known, absent
// where not (so older files export as before: the golden file has none), read back either way.
TEST_F(TuningFileTest, ASourceKeyIsWrittenWhereKnownAndReadBack) {
  const std::string source(64, 'c');
  TuningSnapshot snapshot;
  snapshot.cubins = {testing::sample_cubin(3, 1), testing::sample_cubin(3, 2)};
  snapshot.cubins[0].source_key = source;
  for (CubinRecord& cubin : snapshot.cubins) cubin.created_at = "2025-01-01T00:00:00.000Z";
  const std::string text = write_tuning_file(snapshot);
  const ordered_json file = ordered_json::parse(text);
  EXPECT_EQ(file["cubins"][0].begin().key(), "key");
  EXPECT_EQ(std::next(file["cubins"][0].begin()).key(), "source_key");
  EXPECT_FALSE(file["cubins"][1].contains("source_key"));
  const TuningSnapshot read = read_tuning_file(text);
  ASSERT_EQ(read.cubins.size(), 2u);
  EXPECT_EQ(read.cubins[0].source_key, source);
  EXPECT_EQ(read.cubins[1].source_key, "");
  EXPECT_EQ(write_tuning_file(read), text);
}

TEST_F(TuningFileTest, UnknownKeysAreIgnored) {
  ordered_json file = ordered_json::parse(golden_text());
  file["written_by"] = "a later sparsejit";
  file["trials"][0]["power_watts"] = 700;
  const TuningSnapshot snapshot = read_tuning_file(file.dump());
  EXPECT_EQ(snapshot.trials.size(), 5u);
}

}  // namespace
}  // namespace sparsejit::db
