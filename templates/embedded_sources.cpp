#include "templates/embedded_sources.h"

#include <stdexcept>
#include <string>

namespace sparsejit::templates {

std::string_view embedded_source(std::string_view path) {
  for (const EmbeddedSource& source : embedded_sources())
    if (source.path == path) return source.content;
  throw std::out_of_range("no kernel source '" + std::string(path) +
                          "' is embedded in this build of sparsejit");
}

}  // namespace sparsejit::templates
