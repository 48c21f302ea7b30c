#include "loco/io/dtype.hpp"

#include <array>
#include <utility>

namespace loco {

namespace {

struct DTypeInfo {
  StorageDType type;
  const char* name;
  size_t size;
};

constexpr std::array<DTypeInfo, 15> kDTypes{{
    {StorageDType::BOOL, "BOOL", 1},
    {StorageDType::U8, "U8", 1},
    {StorageDType::I8, "I8", 1},
    {StorageDType::F8_E5M2, "F8_E5M2", 1},
    {StorageDType::F8_E4M3, "F8_E4M3", 1},
    {StorageDType::I16, "I16", 2},
    {StorageDType::U16, "U16", 2},
    {StorageDType::F16, "F16", 2},
    {StorageDType::BF16, "BF16", 2},
    {StorageDType::I32, "I32", 4},
    {StorageDType::U32, "U32", 4},
    {StorageDType::F32, "F32", 4},
    {StorageDType::F64, "F64", 8},
    {StorageDType::I64, "I64", 8},
    {StorageDType::U64, "U64", 8},
}};

const DTypeInfo& info(StorageDType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d;
  LOCO_CHECK(false, "unknown StorageDType " + std::to_string(static_cast<int>(t)));
  return kDTypes[0];  // not reached
}

}  // namespace

size_t storage_dtype_size(StorageDType t) { return info(t).size; }
const char* storage_dtype_name(StorageDType t) { return info(t).name; }

std::optional<StorageDType> parse_storage_dtype(const std::string& name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return d.type;
  return std::nullopt;
}

std::string storage_dtype_names() {
  std::string s;
  for (const auto& d : kDTypes) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

StorageDType to_storage_dtype(DType t) {
  switch (t) {
    case DType::F32:
      return StorageDType::F32;
    case DType::BF16:
      return StorageDType::BF16;
    case DType::I32:
      return StorageDType::I32;
    case DType::U8:
      return StorageDType::U8;
  }
  LOCO_CHECK(false, "unknown DType");
  return StorageDType::F32;
}

}  // namespace loco
