#include "db/tuning_file.h"

#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

namespace sparsejit::db {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// ---- base64 (OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock take int lengths: work in chunks)

constexpr std::size_t kBinaryChunk = 3 * 4096;  // a multiple of 3: chunks encode without padding

std::string encode_base64(const std::vector<std::uint8_t>& binary) {
  std::string text;
  text.reserve(4 * ((binary.size() + 2) / 3));
  std::vector<unsigned char> encoded(4 * kBinaryChunk / 3 + 1);  // + the NUL EVP_EncodeBlock writes
  for (std::size_t offset = 0; offset < binary.size(); offset += kBinaryChunk) {
    const std::size_t size = std::min(kBinaryChunk, binary.size() - offset);
    const int length = EVP_EncodeBlock(encoded.data(), binary.data() + offset, static_cast<int>(size));
    text.append(reinterpret_cast<const char*>(encoded.data()), static_cast<std::size_t>(length));
  }
  return text;
}

// Standard base64 with padding; nullopt for anything else (EVP_DecodeBlock alone would skip
// surrounding whitespace and accept '=' inside the text).
std::optional<std::vector<std::uint8_t>> decode_base64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  const std::size_t padding = text.ends_with("==") ? 2 : text.ends_with("=") ? 1 : 0;
  const std::string_view body = text.substr(0, text.size() - padding);
  constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  if (body.find_first_not_of(kAlphabet) != std::string_view::npos) return std::nullopt;
  constexpr std::size_t kTextChunk = 4 * kBinaryChunk / 3;  // a multiple of 4
  std::vector<std::uint8_t> binary;
  binary.reserve(3 * (text.size() / 4));
  std::vector<unsigned char> decoded(kBinaryChunk);
  for (std::size_t offset = 0; offset < text.size(); offset += kTextChunk) {
    const std::size_t size = std::min(kTextChunk, text.size() - offset);
    const int length = EVP_DecodeBlock(decoded.data(), reinterpret_cast<const unsigned char*>(text.data() + offset),
                                       static_cast<int>(size));
    if (length < 0) return std::nullopt;
    binary.insert(binary.end(), decoded.begin(), decoded.begin() + length);
  }
  binary.resize(binary.size() - padding);  // EVP_DecodeBlock counts the padding as zero bytes
  return binary;
}

// ---- writing

ordered_json optional_number(const std::optional<double>& value) {
  return value ? ordered_json(*value) : ordered_json(nullptr);
}

ordered_json gpu_json(const StoredGpu& stored) {
  const GpuRecord& gpu = stored.gpu;
  return {{"fingerprint", gpu.fingerprint()},
          {"name", gpu.name},
          {"cc_major", gpu.cc_major},
          {"cc_minor", gpu.cc_minor},
          {"sm_count", gpu.sm_count},
          {"memory_bytes", gpu.memory_bytes},
          {"driver_version", gpu.driver_version},
          {"uuid", gpu.uuid},
          {"sm_clock_khz", gpu.sm_clock_khz},
          {"memory_clock_khz", gpu.memory_clock_khz},
          {"first_seen", stored.first_seen},
          {"last_seen", stored.last_seen}};
}

ordered_json trial_json(const SnapshotTrial& row) {
  const TrialRecord& trial = row.trial;
  return {{"gpu", row.gpu_fingerprint},
          {"family", trial.family},
          {"problem_key", trial.problem_key},
          {"config_json", trial.config_json},
          {"status", to_string(trial.status)},
          {"median_ms", optional_number(trial.median_ms)},
          {"p20_ms", optional_number(trial.p20_ms)},
          {"p80_ms", optional_number(trial.p80_ms)},
          {"rel_error", optional_number(trial.rel_error)},
          {"sm_clock_khz", trial.sm_clock_khz},
          {"cubin_key", trial.cubin_key.empty() ? ordered_json(nullptr) : ordered_json(trial.cubin_key)},
          {"message", trial.message},
          {"created_at", row.created_at}};
}

ordered_json best_json(const SnapshotBestConfig& row) {
  const BestConfig& best = row.best;
  return {{"gpu", row.gpu_fingerprint},
          {"family", best.family},
          {"problem_key", best.problem_key},
          {"config_json", best.config_json},
          {"median_ms", best.median_ms},
          {"updated_at", best.updated_at}};
}

ordered_json profile_json(const SparsityProfile& profile) {
  return {{"model", profile.model}, {"step", profile.step},       {"layer", profile.layer},
          {"head", profile.head},   {"density", profile.density}, {"tau", profile.tau}};
}

ordered_json cubin_json(const CubinRecord& cubin) {
  ordered_json row = {{"key", cubin.key}};
  if (!cubin.source_key.empty()) row["source_key"] = cubin.source_key;  // absent when unknown, as before it existed
  row["family"] = cubin.family;
  row["target"] = cubin.target;
  row["nvrtc_version"] = cubin.nvrtc_version;
  row["specialization"] = cubin.specialization;
  row["lowered_names_json"] = cubin.lowered_names_json;
  row["compile_ms"] = cubin.compile_ms;
  row["created_at"] = cubin.created_at;
  row["binary_base64"] = encode_base64(cubin.binary);
  return row;
}

template <typename Row, typename ToJson>
ordered_json array_of(const std::vector<Row>& rows, ToJson to_json) {
  ordered_json array = ordered_json::array();
  for (const Row& row : rows) array.push_back(to_json(row));
  return array;
}

// ---- reading

// The fields of one JSON object, read with errors that name where they are ("trials[3].status").
class Fields {
 public:
  Fields(const json& object, std::string where) : object_(object), where_(std::move(where)) {
    if (!object_.is_object()) fail("", "an object", object_);
  }

  std::string text(const char* name) const { return typed(name, "a string", &json::is_string).get<std::string>(); }
  double number(const char* name) const { return typed(name, "a number", &json::is_number).get<double>(); }
  std::int64_t integer(const char* name) const {
    return typed(name, "an integer", &json::is_number_integer).get<std::int64_t>();
  }
  int small_integer(const char* name) const {
    const std::int64_t value = integer(name);
    if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max())
      throw TuningFileError(path(name) + ": " + std::to_string(value) + " is out of range");
    return static_cast<int>(value);
  }
  // A number, or null (or absent) for none.
  std::optional<double> optional_number(const char* name) const {
    const auto found = object_.find(name);
    if (found == object_.end() || found->is_null()) return std::nullopt;
    return number(name);
  }
  // A string, or null (or absent) for none: the empty string.
  std::string optional_text(const char* name) const {
    const auto found = object_.find(name);
    return found == object_.end() || found->is_null() ? std::string() : text(name);
  }
  const json& array(const char* name) const { return typed(name, "an array", &json::is_array); }
  bool has(const char* name) const { return object_.contains(name); }

  [[noreturn]] void fail(const char* name, const std::string& expected, const json& found) const {
    throw TuningFileError(path(name) + ": expected " + expected + ", found " + std::string(found.type_name()));
  }
  std::string path(const char* name) const {
    return where_.empty() ? std::string(name) : *name == '\0' ? where_ : where_ + "." + name;
  }

 private:
  const json& typed(const char* name, const char* expected, bool (json::*check)() const noexcept) const {
    const auto found = object_.find(name);
    if (found == object_.end()) throw TuningFileError(path(name) + ": missing");
    if (!((*found).*check)()) fail(name, expected, *found);
    return *found;
  }

  const json& object_;
  std::string where_;
};

StoredGpu read_gpu(const Fields& fields) {
  StoredGpu stored;
  GpuRecord& gpu = stored.gpu;
  gpu.name = fields.text("name");
  gpu.cc_major = fields.small_integer("cc_major");
  gpu.cc_minor = fields.small_integer("cc_minor");
  gpu.sm_count = fields.small_integer("sm_count");
  gpu.memory_bytes = fields.integer("memory_bytes");
  gpu.driver_version = fields.text("driver_version");
  gpu.uuid = fields.text("uuid");
  gpu.sm_clock_khz = fields.small_integer("sm_clock_khz");
  gpu.memory_clock_khz = fields.small_integer("memory_clock_khz");
  stored.first_seen = fields.text("first_seen");
  stored.last_seen = fields.text("last_seen");
  if (const std::string fingerprint = fields.text("fingerprint"); fingerprint != gpu.fingerprint())
    throw TuningFileError(fields.path("fingerprint") + ": '" + fingerprint + "' does not match the GPU's fields ('" +
                          gpu.fingerprint() + "')");
  return stored;
}

SnapshotTrial read_trial(const Fields& fields) {
  SnapshotTrial row;
  row.gpu_fingerprint = fields.text("gpu");
  TrialRecord& trial = row.trial;
  trial.family = fields.text("family");
  trial.problem_key = fields.text("problem_key");
  trial.config_json = fields.text("config_json");
  const std::string status = fields.text("status");
  const std::optional<TrialStatus> parsed = parse_trial_status(status);
  if (!parsed) throw TuningFileError(fields.path("status") + ": '" + status + "' is not ok, failed or incorrect");
  trial.status = *parsed;
  trial.median_ms = fields.optional_number("median_ms");
  trial.p20_ms = fields.optional_number("p20_ms");
  trial.p80_ms = fields.optional_number("p80_ms");
  trial.rel_error = fields.optional_number("rel_error");
  trial.sm_clock_khz = fields.small_integer("sm_clock_khz");
  trial.cubin_key = fields.optional_text("cubin_key");
  trial.message = fields.text("message");
  row.created_at = fields.text("created_at");
  return row;
}

SnapshotBestConfig read_best(const Fields& fields) {
  SnapshotBestConfig row;
  row.gpu_fingerprint = fields.text("gpu");
  row.best.family = fields.text("family");
  row.best.problem_key = fields.text("problem_key");
  row.best.config_json = fields.text("config_json");
  row.best.median_ms = fields.number("median_ms");
  row.best.updated_at = fields.text("updated_at");
  return row;
}

SparsityProfile read_profile(const Fields& fields) {
  return SparsityProfile{.model = fields.text("model"),
                         .step = fields.small_integer("step"),
                         .layer = fields.small_integer("layer"),
                         .head = fields.small_integer("head"),
                         .density = fields.number("density"),
                         .tau = fields.number("tau")};
}

CubinRecord read_cubin(const Fields& fields) {
  CubinRecord cubin;
  cubin.key = fields.text("key");
  cubin.source_key = fields.optional_text("source_key");
  cubin.family = fields.text("family");
  cubin.target = fields.text("target");
  cubin.nvrtc_version = fields.text("nvrtc_version");
  cubin.specialization = fields.text("specialization");
  cubin.lowered_names_json = fields.text("lowered_names_json");
  cubin.compile_ms = fields.number("compile_ms");
  cubin.created_at = fields.text("created_at");
  std::optional<std::vector<std::uint8_t>> binary = decode_base64(fields.text("binary_base64"));
  if (!binary) throw TuningFileError(fields.path("binary_base64") + ": not standard base64 with padding");
  cubin.binary = std::move(*binary);
  return cubin;
}

// Reads every element of the array `name` with `read`.
template <typename Read>
auto read_rows(const Fields& top, const char* name, Read read) {
  const json& array = top.array(name);
  std::vector<decltype(read(std::declval<const Fields&>()))> rows;
  rows.reserve(array.size());
  for (std::size_t i = 0; i < array.size(); ++i)
    rows.push_back(read(Fields(array[i], std::string(name) + "[" + std::to_string(i) + "]")));
  return rows;
}

}  // namespace

std::string write_tuning_file(const TuningSnapshot& snapshot) {
  ordered_json file = {{"format", kTuningFileFormat},
                       {"version", kTuningFileVersion},
                       {"gpus", array_of(snapshot.gpus, gpu_json)},
                       {"trials", array_of(snapshot.trials, trial_json)},
                       {"best_configs", array_of(snapshot.best_configs, best_json)},
                       {"sparsity_profiles", array_of(snapshot.sparsity_profiles, profile_json)}};
  if (!snapshot.cubins.empty()) file["cubins"] = array_of(snapshot.cubins, cubin_json);
  return file.dump(2) + "\n";
}

TuningSnapshot read_tuning_file(std::string_view text) {
  const json file = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (file.is_discarded()) throw TuningFileError("not a sparsejit tuning file: the text is not JSON");
  if (!file.is_object() || !file.contains("format") || file["format"] != kTuningFileFormat)
    throw TuningFileError("not a sparsejit tuning file: no \"format\": \"" + std::string(kTuningFileFormat) +
                          "\" at the top level");
  const Fields top(file, "");
  const std::int64_t version = top.integer("version");
  if (version > kTuningFileVersion)
    throw TuningFileError("tuning file format version " + std::to_string(version) +
                          " is newer than this sparsejit reads (" + std::to_string(kTuningFileVersion) +
                          "); upgrade sparsejit");
  if (version < 1) throw TuningFileError("version: " + std::to_string(version) + " is not a format version");

  TuningSnapshot snapshot;
  snapshot.gpus = read_rows(top, "gpus", read_gpu);
  snapshot.trials = read_rows(top, "trials", read_trial);
  snapshot.best_configs = read_rows(top, "best_configs", read_best);
  snapshot.sparsity_profiles = read_rows(top, "sparsity_profiles", read_profile);
  if (top.has("cubins")) snapshot.cubins = read_rows(top, "cubins", read_cubin);

  try {
    validate_snapshot(snapshot);  // the rows' references and ranges, named as in the file
  } catch (const std::invalid_argument& error) {
    throw TuningFileError(error.what());
  }
  return snapshot;
}

}  // namespace sparsejit::db
