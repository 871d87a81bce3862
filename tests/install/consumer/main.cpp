// Uses the installed headers (both include forms) and libsparsejit.so without a GPU: lists
// the kernel families, compiles one specialization with NVRTC, then stores and finds it in a
// database through the runtime's KernelProvider. Prints one line per step for check_install.cmake.
#include <sparsejit/jit/nvrtc_compiler.h>

#include <cstdio>
#include <exception>
#include <string>

#include "db/database.h"
#include "jit/driver_api.h"
#include "jit/target.h"
#include "jit/kernel_provider.h"
#include "runtime/database_cubin_store.h"
#include "templates/permute/permute_family.h"
#include "templates/registry.h"

int main(int argc, char** argv) {
  using namespace sparsejit;
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer <database path>\n");
    return 2;
  }
  try {
    std::printf("package version %s\n", SPARSEJIT_PACKAGE_VERSION);
    std::printf("nvrtc %s\n", jit::nvrtc_version().to_string().c_str());
    for (const templates::KernelFamily* family : templates::registered_families())
      std::printf("family %s\n", std::string(family->name()).c_str());

    const jit::Target target = jit::Target::parse("sm_90");
    const jit::KernelSpec specialization =
        templates::PermuteFamily::render(templates::default_permute_config(128, templates::PermuteDirection::gather),
                                         target);
    const jit::CompiledBinary binary = jit::compile(specialization.request);
    const bool elf = binary.cubin.size() > 4 && binary.cubin[0] == 0x7f && binary.cubin[1] == 'E' &&
                     binary.cubin[2] == 'L' && binary.cubin[3] == 'F';
    std::printf("compiled %s for %s: %s, %zu lowered name(s)\n", specialization.label.c_str(),
                target.name().c_str(), elf ? "ELF cubin" : "NOT A CUBIN", binary.lowered_names.size());

    db::Database database = db::Database::open(argv[1]);
    runtime::DatabaseCubinStore store(database);
    jit::KernelProvider provider(&store);
    const jit::ProvidedBinary first = provider.binary(specialization);
    const jit::ProvidedBinary second = provider.binary(specialization);
    std::printf("provider: first from %s, second from %s, %lld cubin(s) stored\n",
                first.source == jit::BinarySource::nvrtc ? "nvrtc" : "database",
                second.source == jit::BinarySource::nvrtc ? "nvrtc" : "database",
                static_cast<long long>(database.stats().cubins));

    std::string why;
    std::printf("gpu %s\n", jit::driver_available(&why) ? "available" : "absent");
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "consumer: %s\n", error.what());
    return 1;
  }
}
