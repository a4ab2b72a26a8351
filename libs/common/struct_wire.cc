#include "libs/common/struct_wire.h"

#include <climits>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/stubs/common.h"
#include "libs/common/wire_check.h"

namespace switchboard {
namespace {

// The rules below are those of protobuf 3.21's parser (parse_context.h and
// the generated code of struct.pb.cc), so that a Struct the broker stores
// without parsing is exactly one that a subscriber can parse:
// - tags and lengths are varints of at most 5 bytes, other varints of at
//   most 10; a length past the enclosing message fails;
// - a field whose wire type is not the declared one is an unknown field;
//   unknown fields are skipped, groups included (matching end tag);
// - tag 0, field number 0, wire types 6 and 7, and an end-group tag outside
//   a group fail;
// - every nested message (a map entry, a Value, a Struct, a ListValue, a
//   group) costs one level of the recursion limit.
using Ptr = const uint8_t*;

enum Tag : uint32_t {
  kStructFields = (1 << 3) | 2,
  kEntryKey = (1 << 3) | 2,
  kEntryValue = (2 << 3) | 2,
  kValueNull = (1 << 3) | 0,
  kValueNumber = (2 << 3) | 1,
  kValueString = (3 << 3) | 2,
  kValueBool = (4 << 3) | 0,
  kValueStruct = (5 << 3) | 2,
  kValueList = (6 << 3) | 2,
  kListValues = (1 << 3) | 2,
};

Ptr ReadTag(Ptr p, Ptr end, uint32_t* tag) {
  uint32_t res = 0;
  for (int i = 0; i < 5 && p < end; ++i, ++p) {
    res |= static_cast<uint32_t>(*p & 0x7f) << (7 * i);
    if (*p < 0x80) {
      *tag = res;
      return p + 1;
    }
  }
  return nullptr;
}

Ptr SkipVarint(Ptr p, Ptr end) {
  for (int i = 0; i < 10 && p < end; ++i, ++p) {
    if (*p < 0x80) return p + 1;
  }
  return nullptr;
}

// A length-delimited field's length; nullptr unless its bytes are all there.
Ptr ReadSize(Ptr p, Ptr end, uint32_t* size) {
  uint64_t res = 0;
  for (int i = 0; i < 5 && p < end; ++i, ++p) {
    res |= static_cast<uint64_t>(*p & 0x7f) << (7 * i);
    if (*p < 0x80) {
      ++p;
      if (res > static_cast<uint64_t>(end - p)) return nullptr;
      *size = static_cast<uint32_t>(res);
      return p;
    }
  }
  return nullptr;
}

bool IsEnd(uint32_t tag) { return tag == 0 || (tag & 7) == 4; }

Ptr SkipField(uint32_t tag, Ptr p, Ptr end, int budget);

// The fields of a group up to its end tag.
Ptr SkipGroup(uint32_t start_tag, Ptr p, Ptr end, int budget) {
  if (--budget < 0) return nullptr;
  while (p != nullptr && p < end) {
    uint32_t tag;
    p = ReadTag(p, end, &tag);
    if (p == nullptr) return nullptr;
    if (IsEnd(tag)) return tag == start_tag + 1 ? p : nullptr;
    p = SkipField(tag, p, end, budget);
  }
  return nullptr;  // the enclosing message ended inside the group
}

Ptr SkipField(uint32_t tag, Ptr p, Ptr end, int budget) {
  if ((tag >> 3) == 0) return nullptr;
  switch (tag & 7) {
    case 0:
      return SkipVarint(p, end);
    case 1:
      return end - p >= 8 ? p + 8 : nullptr;
    case 2: {
      uint32_t size;
      p = ReadSize(p, end, &size);
      return p == nullptr ? nullptr : p + size;
    }
    case 3:
      return SkipGroup(tag, p, end, budget);
    case 5:
      return end - p >= 4 ? p + 4 : nullptr;
    default:  // 4 is handled by the callers; 6 and 7 do not exist
      return nullptr;
  }
}

bool CheckStruct(Ptr p, Ptr end, int budget);
bool CheckList(Ptr p, Ptr end, int budget);
bool CheckValue(Ptr p, Ptr end, int budget);

// A nested message: its length, then `check` of its bytes one level down.
Ptr Nested(Ptr p, Ptr end, int budget, bool (*check)(Ptr, Ptr, int)) {
  uint32_t size;
  p = ReadSize(p, end, &size);
  if (p == nullptr || budget - 1 < 0 || !check(p, p + size, budget - 1)) return nullptr;
  return p + size;
}

Ptr Utf8String(Ptr p, Ptr end) {
  uint32_t size;
  p = ReadSize(p, end, &size);
  if (p == nullptr || !google::protobuf::internal::IsStructurallyValidUTF8(
                          reinterpret_cast<const char*>(p), static_cast<int>(size))) {
    return nullptr;
  }
  return p + size;
}

// One message's fields: `known` handles a tag it declares (returning the
// position after it, or nullptr), or returns `p` untouched for others.
template <typename Known>
bool Fields(Ptr p, Ptr end, int budget, Known known) {
  while (p < end) {
    uint32_t tag;
    p = ReadTag(p, end, &tag);
    if (p == nullptr || IsEnd(tag)) return false;
    Ptr next = known(tag, p);
    if (next == p) next = SkipField(tag, p, end, budget);
    if (next == nullptr) return false;
    p = next;
  }
  return true;
}

bool CheckEntry(Ptr p, Ptr end, int budget) {
  return Fields(p, end, budget, [&](uint32_t tag, Ptr at) -> Ptr {
    if (tag == kEntryKey) return Utf8String(at, end);
    if (tag == kEntryValue) return Nested(at, end, budget, CheckValue);
    return at;
  });
}

bool CheckStruct(Ptr p, Ptr end, int budget) {
  return Fields(p, end, budget, [&](uint32_t tag, Ptr at) -> Ptr {
    return tag == kStructFields ? Nested(at, end, budget, CheckEntry) : at;
  });
}

bool CheckList(Ptr p, Ptr end, int budget) {
  return Fields(p, end, budget, [&](uint32_t tag, Ptr at) -> Ptr {
    return tag == kListValues ? Nested(at, end, budget, CheckValue) : at;
  });
}

bool CheckValue(Ptr p, Ptr end, int budget) {
  return Fields(p, end, budget, [&](uint32_t tag, Ptr at) -> Ptr {
    switch (tag) {
      case kValueNull:
      case kValueBool:
        return SkipVarint(at, end);
      case kValueNumber:
        return end - at >= 8 ? at + 8 : nullptr;
      case kValueString:
        return Utf8String(at, end);
      case kValueStruct:
        return Nested(at, end, budget, CheckStruct);
      case kValueList:
        return Nested(at, end, budget, CheckList);
      default:
        return at;
    }
  });
}

}  // namespace

bool IsStructBytes(absl::string_view bytes, int depth) {
  Ptr p = reinterpret_cast<Ptr>(bytes.data());
  return bytes.size() <= static_cast<size_t>(INT_MAX) &&
         CheckStruct(p, p + bytes.size(), kProtobufRecursionLimit - depth);
}

absl::Status CheckStructBytes(absl::string_view bytes, int depth, absl::string_view field) {
  if (IsStructBytes(bytes, depth)) return absl::OkStatus();
  std::optional<std::string> bad = FindInvalidUtf8(google::protobuf::Struct::descriptor(), bytes);
  if (bad.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".", *bad, ": invalid UTF-8"));
  }
  return absl::InvalidArgumentError(absl::StrCat(field, ": not a valid google.protobuf.Struct"));
}

}  // namespace switchboard
