# Warnings for slowmo's own targets (tests, examples, benchmarks); never forced on users,
# whose targets only see the INTERFACE properties of slowmo::slowmo.
function(slowmo_project_target target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
    if(SLOWMO_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  elseif(MSVC)
    target_compile_options(${target} PRIVATE /W4 $<$<BOOL:${SLOWMO_WARNINGS_AS_ERRORS}>:/WX>)
  endif()
endfunction()
