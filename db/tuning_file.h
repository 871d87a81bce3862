// The tuning file: a TuningSnapshot as JSON, written by `sparsejit db export` and read by
// `sparsejit db import`. Format version 1, keys in this order:
//
//   {
//     "format": "sparsejit-tuning",           always this text
//     "version": 1,                           the format version
//     "gpus": [{"fingerprint", "name", "cc_major", "cc_minor", "sm_count", "memory_bytes",
//               "driver_version", "uuid", "sm_clock_khz", "memory_clock_khz",
//               "first_seen", "last_seen"}],
//     "trials": [{"gpu", "family", "problem_key", "config_json", "status", "median_ms", "p20_ms",
//                 "p80_ms", "rel_error", "sm_clock_khz", "cubin_key", "message", "created_at"}],
//     "best_configs": [{"gpu", "family", "problem_key", "config_json", "median_ms", "updated_at"}],
//     "sparsity_profiles": [{"model", "step", "layer", "head", "density", "tau"}],
//     "cubins": [{"key", "source_key", "family", "target", "nvrtc_version", "specialization",
//                 "lowered_names_json", "compile_ms", "created_at", "binary_base64"}]
//   }
//
// - "gpu" is a fingerprint from "gpus" (GpuRecord::fingerprint; a GPU's "fingerprint" must
//   match its name, compute capability, SMs and memory).
// - "config_json" and "lowered_names_json" are JSON text in a string, kept byte for byte: a
//   config's exact text is part of a trial's identity (db/snapshot.h).
// - "status" is "ok", "failed" or "incorrect"; the *_ms, "rel_error" and "cubin_key" fields are
//   null when unknown ("median_ms" is required for an ok trial).
// - Times are ISO 8601 UTC text with milliseconds ("2025-01-31T12:00:00.123Z").
// - "cubins" is present only in an export with CUBINs; "binary_base64" is standard base64
//   with padding (RFC 4648, no line breaks). "source_key" (CompileRequest::source_key, 64
//   hex digits) was added within version 1: it is written only where the database knows it
//   (not for CUBINs stored before schema v3), and a file without it reads as unknown, so
//   files of older sparsejits read and export as before.
//
// Stability: the same database always exports to the same bytes (rows in the order of
// Database::read_snapshot, two-space indentation, numbers as the shortest text that reads
// back to the same double, no export time). Readers ignore keys they do not know, so fields
// may be added within a version; the version goes up only for a change that a reader of the
// older version would misread, and a reader refuses a version above its own.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "db/snapshot.h"

namespace sparsejit::db {

inline constexpr std::string_view kTuningFileFormat = "sparsejit-tuning";
inline constexpr int kTuningFileVersion = 1;

// A text that is not a tuning file this build can read; what() names the field at fault,
// e.g. "trials[3].median_ms: expected a number, found a string".
class TuningFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The tuning file of `snapshot` (with a "cubins" array when it carries CUBINs), ending in a newline.
std::string write_tuning_file(const TuningSnapshot& snapshot);

// Parses and checks a whole tuning file. Throws TuningFileError for text that is not JSON,
// not a sparsejit tuning file, of a newer format version, or with a missing or ill-typed
// field, a bad base64 binary, a GPU fingerprint that does not match its GPU, or rows that
// validate_snapshot refuses: what read_tuning_file returns, import_snapshot accepts.
TuningSnapshot read_tuning_file(std::string_view text);

}  // namespace sparsejit::db
