#pragma once
// What a kernel family gives the tuner: problems, each with its candidates, inputs, a
// correctness gate against the family's CPU reference, and one timed run. The tuner
// (tuner/) is generic; everything family-specific stays in the family's folder.
#include <cuda.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "jit/kernel_provider.h"
#include "jit/module.h"
#include "jit/target.h"

namespace sparsejit::templates {

struct TuningCandidate {
  std::string config_json;         // the point of the space, as stored in the database
  jit::KernelSpec specialization;  // what to compile
};

class TuningProblem {
 public:
  virtual ~TuningProblem() = default;
  virtual std::string family() const = 0;
  // The problem key stored in the database, e.g. "permute_tokens|d128|gather".
  virtual std::string key() const = 0;
  virtual std::string description() const = 0;  // for people: the shape that is timed
  // The candidates that fit this problem on `target`; the built-in default among them.
  virtual std::vector<TuningCandidate> candidates(const jit::Target& target) const = 0;
  virtual std::string default_config_json() const = 0;
  // What `sparsejit tune --head-dim` and `--density` select by; none where the problem has no
  // such parameter (such problems are left out when the option is given).
  virtual std::optional<int> head_dim() const { return std::nullopt; }
  virtual std::optional<double> density() const { return std::nullopt; }
  // The time this problem takes to tune relative to its family's others (any unit), for the
  // ETA of a run of many problems and for sharing out a time budget.
  virtual double relative_cost() const { return 1.0; }
  // Allocates and fills the inputs (gate and timing) in the current context. Called once.
  virtual void prepare() = 0;
  // Runs `candidate` on the gate inputs with a poisoned output and returns the relative
  // error ||out - ref|| / ||ref|| against the CPU reference (synchronizes `stream`).
  virtual double check(const jit::Kernel& kernel, const TuningCandidate& candidate,
                       CUstream stream) = 0;
  virtual double error_bound() const = 0;
  // Enqueues one run of `candidate` on the timing inputs.
  virtual void run(const jit::Kernel& kernel, const TuningCandidate& candidate,
                   CUstream stream) = 0;
};

}  // namespace sparsejit::templates
