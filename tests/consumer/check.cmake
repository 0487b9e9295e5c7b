# Builds and runs tests/consumer against slowmo, either installed into a scratch prefix
# (MODE=installed) or pulled in from source with FetchContent (MODE=fetchcontent).
# Invoked by ctest with -DMODE -DSLOWMO_SOURCE_DIR -DSLOWMO_BUILD_DIR -DWORK_DIR
# -DGENERATOR -DCXX_COMPILER, and -DWITH_MPI=ON / -DWITH_CUDA=ON to also build against
# slowmo::mpi / slowmo::cuda.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "command failed (${rc}): ${cmd}")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(args -S "${SLOWMO_SOURCE_DIR}/tests/consumer" -B "${WORK_DIR}/build" -G "${GENERATOR}"
  -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DSLOWMO_CONSUMER_MODE=${MODE})
if(WITH_MPI)
  list(APPEND args -DSLOWMO_CONSUMER_MPI=ON)
endif()
if(WITH_CUDA)
  list(APPEND args -DSLOWMO_CONSUMER_CUDA=ON)
endif()
if(MODE STREQUAL "installed")
  run(${CMAKE_COMMAND} --install "${SLOWMO_BUILD_DIR}" --prefix "${WORK_DIR}/prefix")
  list(APPEND args "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix")
else()
  list(APPEND args "-DSLOWMO_SOURCE_DIR=${SLOWMO_SOURCE_DIR}")
endif()
run(${CMAKE_COMMAND} ${args})
run(${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run("${WORK_DIR}/build/consumer")
if(WITH_CUDA)
  run("${WORK_DIR}/build/consumer_cuda")
endif()
