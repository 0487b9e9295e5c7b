# Warnings for slowmo's own targets (tests, examples, benchmarks); never forced on users,
# whose targets only see the INTERFACE properties of slowmo::slowmo.
function(slowmo_project_target target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:-Wall;-Wextra;-Wpedantic>")
    if(SLOWMO_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
    endif()
    # CUDA sources (nvcc): the host compiler's warnings on the host code, nvcc's own
    # warnings; only Eigen 3.4's known #20012 ("__host__ annotation is ignored on a function
    # that is explicitly defaulted") is silenced. No -Wpedantic: nvcc's generated host code
    # uses GCC extensions.
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra;-diag-suppress=20012>")
    if(SLOWMO_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings;-Xcompiler=-Werror>")
    endif()
    # Sanitized builds of the test suite (CMakePresets.json: sanitize, tsan).
    if(SLOWMO_SANITIZE)
      target_compile_options(${target} PRIVATE
        "$<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${SLOWMO_SANITIZE};-fno-omit-frame-pointer;-fno-sanitize-recover=all>")
      target_link_options(${target} PRIVATE "-fsanitize=${SLOWMO_SANITIZE}")
    endif()
  elseif(MSVC)
    target_compile_options(${target} PRIVATE /W4 $<$<BOOL:${SLOWMO_WARNINGS_AS_ERRORS}>:/WX>)
  endif()
endfunction()
