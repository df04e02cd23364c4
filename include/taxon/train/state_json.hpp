#pragma once
// Typed reads from the JSON state a training checkpoint holds (trainer.json, and the schedule and grad-scaler
// states inside it): a missing key or a value of another type is a train.bad-checkpoint error that names the file
// and the key, never an nlohmann exception.
#include "taxon/core/error.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <type_traits>

namespace taxon::train {

// object[key]; `where` names the object for the error, e.g. "runs/a/step-000000010/trainer.json 'schedule'".
inline const nlohmann::json& state_value(const nlohmann::json& object, const char* key, const std::string& where) {
  TAXON_CHECK(object.is_object(), "train.bad-checkpoint", where, " is ", object.type_name(),
              ", not a JSON object (looking for '", key, "')");
  const auto it = object.find(key);
  TAXON_CHECK(it != object.end(), "train.bad-checkpoint", where, " has no '", key, "'");
  return *it;
}

// object[key] as T. Integers must be JSON integers and booleans JSON booleans (nlohmann would turn 3.7 or true
// into an int64 silently).
template <typename T>
T state_field(const nlohmann::json& object, const char* key, const std::string& where) {
  const nlohmann::json& value = state_value(object, key, where);
  bool ok = true;
  const char* expected = "a value of the expected type";
  if constexpr (std::is_same_v<T, bool>) {
    ok = value.is_boolean();
    expected = "a boolean";
  } else if constexpr (std::is_integral_v<T>) {
    ok = value.is_number_integer();
    expected = "an integer";
  } else if constexpr (std::is_floating_point_v<T>) {
    ok = value.is_number();
    expected = "a number";
  } else if constexpr (std::is_same_v<T, std::string>) {
    ok = value.is_string();
    expected = "a string";
  }
  if (ok) {
    try {
      return value.get<T>();
    } catch (const nlohmann::json::exception&) {  // e.g. a list holding a string where numbers belong
    }
  }
  TAXON_FAIL("train.bad-checkpoint", where, ": '", key, "' is ", value.dump(), ", not ", expected);
}

}  // namespace taxon::train
