# cmake --install: headers, libsparsejit.so, the CLI and a CMake package, so that a user's
# project does find_package(sparsejit) and links sparsejit::sparsejit.
include(CMakePackageConfigHelpers)

foreach(folder jit db templates tuner runtime)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${folder}/
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/sparsejit/${folder}
          FILES_MATCHING PATTERN "*.h")
endforeach()

install(TARGETS sparsejit EXPORT sparsejitTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(EXPORT sparsejitTargets NAMESPACE sparsejit::
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sparsejit)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/sparsejitConfig.cmake.in
  ${PROJECT_BINARY_DIR}/sparsejitConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sparsejit)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/sparsejitConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/sparsejitConfig.cmake
              ${PROJECT_BINARY_DIR}/sparsejitConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/sparsejit)

# The Python package (ctypes over the C API, no extension to build): PYTHONPATH=
# <prefix>/share/sparsejit/python, with <prefix>/lib on the loader's path (or SPARSEJIT_LIBRARY).
install(DIRECTORY ${PROJECT_SOURCE_DIR}/python/sparsejit DESTINATION ${CMAKE_INSTALL_DATADIR}/sparsejit/python
        FILES_MATCHING PATTERN "*.py")
