// safetensors files (the Hugging Face tensor format), read and written without a library:
//
//   u64 little-endian N | N bytes of JSON header | data area
//
// The header maps each tensor name to {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}
// (offsets relative to the data area) plus an optional "__metadata__" object of string
// values. Our writer pads the header with spaces so the data area starts 8-byte aligned, and
// stores tensors in the order given, back to back.
//
// The reader is strict: header length within the file and the 100 MB limit, valid UTF-8 JSON
// object, no duplicate names, known dtypes, non-negative shapes, shape × dtype size equal to
// the offsets' span, offsets inside the data area, and the tensors (sorted by offset) covering
// the data area exactly with no gap and no overlap. Every error names the file and, where
// there is one, the tensor.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "loco/io/dtype.hpp"
#include "loco/io/file_io.hpp"

namespace loco {

struct SafetensorsEntry {  // one tensor to write
  std::string name;
  StorageDType dtype = StorageDType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel × dtype size bytes, little-endian; not copied
};

// Writes atomically (temporary file + fsync + rename). Throws loco::Error naming the file and
// the tensor on invalid input (empty or duplicate names, "__metadata__" as a name, negative
// dimensions).
void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

struct SafetensorsTensor {
  std::string name;
  StorageDType dtype = StorageDType::F32;
  std::vector<int64_t> shape;
  uint64_t numel = 0;
  uint64_t begin = 0, end = 0;          // data_offsets
  const unsigned char* data = nullptr;  // valid while the SafetensorsFile lives
  uint64_t bytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Sorted by data offset (file order).
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* find(const std::string& name) const;  // nullptr when absent
  const SafetensorsTensor& get(const std::string& name) const;   // throws naming the file
  // The tensor's values widened to F32 (F32, BF16, F16 and F64 are accepted; F64 is
  // narrowed). Throws naming the file and tensor for other dtypes.
  std::vector<float> to_f32(const std::string& name) const;
  void to_f32(const SafetensorsTensor& t, float* dst) const;

 private:
  friend SafetensorsFile parse_safetensors(AlignedBytes, const std::string&);
  std::string path_;
  std::map<std::string, std::string> metadata_;
  std::vector<SafetensorsTensor> tensors_;
  AlignedBytes bytes_;
};

SafetensorsFile read_safetensors(const std::string& path);
// The same from bytes in memory (`source` names them in messages); the fuzzer's entry point.
SafetensorsFile parse_safetensors(AlignedBytes bytes, const std::string& source);

}  // namespace loco
