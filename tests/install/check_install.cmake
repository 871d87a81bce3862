# cmake -P check_install.cmake: installs the build tree into a fresh prefix, then configures,
# builds and runs tests/install/consumer against that prefix only.
# Then checks the C API's exports and builds examples/attention_layer (C, against the prefix
# only) and runs it: it must either run the layer or, without a GPU, exit 2 saying so.
# Variables: BUILD_DIR (the sparsejit build tree), CONFIG (its build type), WORK_DIR (scratch,
# emptied first), CONSUMER_SOURCE, EXAMPLE_SOURCE, NM (binutils' nm), GENERATOR, CXX_COMPILER,
# EXPECTED_VERSION, and optionally CUDA_ROOT (passed on as CUDAToolkit_ROOT) and PYTHON (a
# python3 that imports the installed Python package against the installed library).
cmake_minimum_required(VERSION 3.24)
foreach(variable BUILD_DIR WORK_DIR CONSUMER_SOURCE EXAMPLE_SOURCE NM GENERATOR CXX_COMPILER EXPECTED_VERSION)
  if(NOT DEFINED ${variable} OR "${${variable}}" STREQUAL "")
    message(FATAL_ERROR "check_install.cmake needs -D${variable}=...")
  endif()
endforeach()

set(prefix ${WORK_DIR}/prefix)
set(consumer_build ${WORK_DIR}/consumer-build)
set(example_build ${WORK_DIR}/example-build)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

# Runs a command; on failure stops with the command, its exit code and both streams.
function(run_step name)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " command "${ARGN}")
    message(FATAL_ERROR "${name} failed (exit ${rc}): ${command}\n--- stdout ---\n${out}\n--- stderr ---\n${err}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

# 1. Install.
set(config_args "")
if(CONFIG)
  set(config_args --config ${CONFIG})
endif()
run_step("cmake --install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix} ${config_args})

# The files a user needs are there.
file(GLOB config_files ${prefix}/lib*/cmake/sparsejit/sparsejitConfig.cmake)
file(GLOB libraries ${prefix}/lib*/libsparsejit.so)
set(missing "")
foreach(file
    ${prefix}/include/sparsejit/templates/registry.h
    ${prefix}/include/sparsejit/templates/kernel_family.h
    ${prefix}/include/sparsejit/templates/permute/permute_family.h
    ${prefix}/include/sparsejit/templates/permute/permute_params.h
    ${prefix}/include/sparsejit/jit/nvrtc_compiler.h
    ${prefix}/include/sparsejit/db/database.h
    ${prefix}/include/sparsejit/runtime/runtime.h
    ${prefix}/include/sparsejit/runtime/sparsejit.h
    ${prefix}/share/sparsejit/python/sparsejit/__init__.py
    ${prefix}/share/sparsejit/python/sparsejit/_capi.py
    ${prefix}/bin/sparsejit)
  if(NOT EXISTS ${file})
    list(APPEND missing ${file})
  endif()
endforeach()
if(NOT config_files)
  list(APPEND missing "${prefix}/lib*/cmake/sparsejit/sparsejitConfig.cmake")
endif()
if(NOT libraries)
  list(APPEND missing "${prefix}/lib*/libsparsejit.so")
endif()
if(missing)
  string(REPLACE ";" "\n  " missing "${missing}")
  message(FATAL_ERROR "cmake --install did not install:\n  ${missing}")
endif()

# Every header that an installed header includes with "folder/file.h" is installed too.
file(GLOB_RECURSE installed_headers RELATIVE ${prefix}/include/sparsejit ${prefix}/include/sparsejit/*.h)
foreach(header IN LISTS installed_headers)
  file(STRINGS ${prefix}/include/sparsejit/${header} includes REGEX "^#include \"")
  foreach(line IN LISTS includes)
    string(REGEX REPLACE "^#include \"([^\"]+)\".*" "\\1" included "${line}")
    if(NOT EXISTS ${prefix}/include/sparsejit/${included})
      message(FATAL_ERROR "installed header ${header} includes \"${included}\", which is not installed")
    endif()
  endforeach()
endforeach()

# 2. Configure and build the consumer against the prefix only (no package registries).
set(package_args
  -G ${GENERATOR}
  -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_PREFIX_PATH=${prefix}
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
if(CUDA_ROOT)
  list(APPEND package_args -DCUDAToolkit_ROOT=${CUDA_ROOT})
endif()
run_step("configuring the consumer" ${CMAKE_COMMAND} -S ${CONSUMER_SOURCE} -B ${consumer_build}
  -DCMAKE_CXX_COMPILER=${CXX_COMPILER} ${package_args})
set(configure_output "${step_output}")
file(GLOB expected_dir ${prefix}/lib*/cmake/sparsejit)
if(NOT configure_output MATCHES "consumer: sparsejit_DIR=${expected_dir}\n")
  message(FATAL_ERROR "the consumer found sparsejit elsewhere than ${expected_dir}:\n${configure_output}")
endif()
if(NOT configure_output MATCHES "consumer: sparsejit_VERSION=${EXPECTED_VERSION}\n")
  message(FATAL_ERROR "the package reports another version than ${EXPECTED_VERSION}:\n${configure_output}")
endif()
run_step("building the consumer" ${CMAKE_COMMAND} --build ${consumer_build})

# 3. Run it and check every line it prints.
run_step("running the consumer" ${consumer_build}/consumer ${WORK_DIR}/consumer.db)
set(output "${step_output}")
message(STATUS "consumer output:\n${output}")
foreach(pattern
    "package version ${EXPECTED_VERSION}\n"
    "nvrtc [0-9]+\\.[0-9]+ \\("
    "family permute_tokens\n"
    "compiled permute_tokens<D=128 vec=16 threads=256 unroll=2 gather> for sm_90: ELF cubin, 1 lowered name\\(s\\)\n"
    "provider: first from nvrtc, second from database, 1 cubin\\(s\\) stored\n"
    "gpu (available|absent)\n")
  if(NOT output MATCHES "${pattern}")
    message(FATAL_ERROR "the consumer's output lacks '${pattern}':\n${output}")
  endif()
endforeach()
if(NOT EXISTS ${WORK_DIR}/consumer.db)
  message(FATAL_ERROR "the consumer did not create its database")
endif()

# 4. The C API: every function sparsejit.h declares is exported by libsparsejit.so.
file(STRINGS ${prefix}/include/sparsejit/runtime/sparsejit.h declarations REGEX "^SPARSEJIT_API ")
list(GET libraries 0 library)
run_step("nm libsparsejit.so" ${NM} -D --defined-only ${library})
set(exported "${step_output}")
set(declared_count 0)
foreach(declaration IN LISTS declarations)
  string(REGEX MATCH "(sparsejit_[a-z0-9_]+)\\(" name "${declaration}")
  set(name "${CMAKE_MATCH_1}")
  math(EXPR declared_count "${declared_count} + 1")
  if(NOT exported MATCHES " T ${name}\n")
    message(FATAL_ERROR "libsparsejit.so does not export ${name}, which sparsejit.h declares")
  endif()
endforeach()
if(declared_count LESS 20)
  message(FATAL_ERROR "found only ${declared_count} SPARSEJIT_API declarations in sparsejit.h")
endif()

# 5. The example program, in C, against the prefix only; it needs nothing but sparsejit_* symbols.
run_step("configuring the example" ${CMAKE_COMMAND} -S ${EXAMPLE_SOURCE} -B ${example_build} ${package_args})
if(NOT step_output MATCHES "attention_layer: sparsejit_DIR=${expected_dir}\n")
  message(FATAL_ERROR "the example found sparsejit elsewhere than ${expected_dir}:\n${step_output}")
endif()
run_step("building the example" ${CMAKE_COMMAND} --build ${example_build})
run_step("nm attention_layer" ${NM} -D --undefined-only ${example_build}/attention_layer)
string(REGEX MATCHALL "[^ \n]*sparsejit[^ \n]*" used "${step_output}")
foreach(symbol IN LISTS used)
  if(NOT symbol MATCHES "^sparsejit_[a-z0-9_]+$")
    message(FATAL_ERROR "the C example uses ${symbol} from libsparsejit.so: only sparsejit_* C functions may be needed")
  endif()
endforeach()
if(NOT used)
  message(FATAL_ERROR "the example links no sparsejit_* function:\n${step_output}")
endif()

# The installed Python package loads the installed library, of the API version it declares.
if(PYTHON)
  get_filename_component(library_dir ${library} DIRECTORY)
  file(WRITE ${WORK_DIR}/import_check.py
    "import sparsejit\nfrom sparsejit import _capi\n"
    "print('python package: API version', _capi.lib.sparsejit_api_version(), _capi.lib._name)\n")
  run_step("importing the Python package" ${CMAKE_COMMAND} -E env --unset=SPARSEJIT_LIBRARY
    PYTHONPATH=${prefix}/share/sparsejit/python LD_LIBRARY_PATH=${library_dir}
    ${PYTHON} ${WORK_DIR}/import_check.py)
  if(NOT step_output MATCHES "python package: API version 1 libsparsejit.so.0\n")
    message(FATAL_ERROR "the installed Python package did not load the installed library:\n${step_output}")
  endif()
endif()

# Runs the layer where there is a GPU; without one it must exit 2 and say so, nothing else.
execute_process(COMMAND ${example_build}/attention_layer --db ${WORK_DIR}/example.db --grid 4x16x16 --heads 2
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 2 AND err MATCHES "^attention_layer: no GPU: ")
  message(STATUS "example: no GPU here, as it says: ${err}")
elseif(rc EQUAL 0 AND out MATCHES "attention +[0-9.]+ ms" AND out MATCHES "\nlookup +(exact|nearest bucket|same compute capability|built-in default) ")
  message(STATUS "example output:\n${out}")
else()
  message(FATAL_ERROR "the example failed (exit ${rc}):\n--- stdout ---\n${out}\n--- stderr ---\n${err}")
endif()
message(STATUS "install check passed: ${prefix}")
