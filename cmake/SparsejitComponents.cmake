# Helpers that turn each source folder into an object library and assemble the
# static library (for the tools and tests) and the shared libsparsejit.so (for users).

set(SPARSEJIT_COMPONENTS "" CACHE INTERNAL "")

# sparsejit_add_component(<folder> SOURCES <files...> [DEPENDS <components or imported targets...>])
# Creates the object library sparsejit_<folder>. DEPENDS lists other components by folder
# name (jit, db, ...) or imported targets (SQLite::SQLite3, ...).
function(sparsejit_add_component folder)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPENDS" ${ARGN})
  set(target sparsejit_${folder})
  add_library(${target} OBJECT ${ARG_SOURCES})
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
    $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated>)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Werror=return-type)
  foreach(dep IN LISTS ARG_DEPENDS)
    if(TARGET sparsejit_${dep})
      target_link_libraries(${target} PUBLIC sparsejit_${dep})
    else()
      target_link_libraries(${target} PUBLIC ${dep})
    endif()
  endforeach()
endfunction()

# Builds sparsejit_static and the shared sparsejit from the objects of the components.
function(sparsejit_assemble_libraries)
  set(objects "")
  set(links "")
  foreach(folder IN LISTS ARGN)
    list(APPEND objects $<TARGET_OBJECTS:sparsejit_${folder}>)
  endforeach()
  add_library(sparsejit_static STATIC ${objects})
  add_library(sparsejit SHARED ${objects})
  set_target_properties(sparsejit PROPERTIES
    VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}
    CXX_VISIBILITY_PRESET default)
  foreach(lib sparsejit_static sparsejit)
    target_include_directories(${lib} PUBLIC
      $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
      $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated>
      $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/sparsejit>
      $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  endforeach()
  set(private_deps SQLite::SQLite3 OpenSSL::Crypto Threads::Threads ${CMAKE_DL_LIBS})
  target_link_libraries(sparsejit_static PUBLIC ${private_deps} nlohmann_json::nlohmann_json)
  target_link_libraries(sparsejit PRIVATE ${private_deps} nlohmann_json::nlohmann_json)
  # Public headers name CUstream and friends from cuda.h (headers only; the driver is opened at run time).
  target_link_libraries(sparsejit PUBLIC CUDA::toolkit)
  target_link_libraries(sparsejit_static PUBLIC CUDA::toolkit)
  add_library(sparsejit::sparsejit ALIAS sparsejit)
endfunction()
