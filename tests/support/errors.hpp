// Helpers for the tests of named errors: the message of what a call throws, and a substring test.
#pragma once

#include <exception>
#include <string>
#include <string_view>

namespace check {

/// The message of the std::exception f() throws, or "(no error)".
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

inline bool has(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

}  // namespace check
