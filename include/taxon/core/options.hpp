#pragma once
// The options idiom of LibTorch's C++ frontend: `Options().scale(32).margin(0.3)`, each field with a
// chainable setter and a const getter, so option structs read like keyword arguments.
#include <utility>

#define TAXON_ARG(T, name)                                          \
 public:                                                            \
  inline auto name(const T& new_##name) -> decltype(*this) {        \
    this->name##_ = new_##name;                                     \
    return *this;                                                   \
  }                                                                 \
  inline auto name(T&& new_##name) -> decltype(*this) {             \
    this->name##_ = std::move(new_##name);                          \
    return *this;                                                   \
  }                                                                 \
  inline const T& name() const noexcept { return this->name##_; }   \
  inline T& name() noexcept { return this->name##_; }               \
                                                                    \
 private:                                                           \
  T name##_
