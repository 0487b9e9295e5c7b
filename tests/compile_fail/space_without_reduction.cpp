// A memory space with a for_each but no reduce: an element-wise optimizer in it is refused
// at compile time (its NaN/Inf scan needs the reduction), never run without the scan.
#include <slowmo/optim/adam.hpp>

struct NoReduction {
  template <class T>
  using vector = slowmo::Vector<T>;
  template <class T>
  using ref = slowmo::VectorRef<T>;
  template <class T>
  using const_ref = slowmo::ConstVectorRef<T>;
  template <class Comm>
  static constexpr bool communicates_with = true;
  static constexpr const char* name = "no-reduction";
  template <class Rule, class... Q>
  static void for_each(Eigen::Index n, const Rule& rule, Q*... ptrs) {
    slowmo::detail::for_each_element(n, rule, ptrs...);
  }
#ifdef SLOWMO_COMPILE_FAIL_CONTROL
  template <class Op, class T>
  static T reduce(Eigen::Index n, const Op& op, const T* p) {
    return slowmo::detail::reduce_elements(n, op, p);
  }
#endif
};

static_assert(sizeof(slowmo::Adam<float, slowmo::schedule::Constant, NoReduction>) > 0);

int main() {}
