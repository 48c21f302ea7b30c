// Element types of stored tensors (checkpoints and safetensors files). The names are the
// safetensors spellings ("F32", "BF16", ...), used by both formats. Data is little-endian.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "loco/core/buffer.hpp"

namespace loco {

enum class StorageDType : uint8_t {
  BOOL,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  F64,
  I64,
  U64,
};

// Bytes per element.
size_t storage_dtype_size(StorageDType t);
// "F32", "BF16", ... (safetensors names).
const char* storage_dtype_name(StorageDType t);
// Inverse of storage_dtype_name; nullopt for an unknown name (case-sensitive, as safetensors).
std::optional<StorageDType> parse_storage_dtype(const std::string& name);
// The names accepted by parse_storage_dtype, for messages: "BOOL, U8, I8, ...".
std::string storage_dtype_names();

// loco's buffer dtypes map onto the stored ones: F32 -> F32, BF16 -> BF16, I32 -> I32.
StorageDType to_storage_dtype(DType t);

}  // namespace loco
