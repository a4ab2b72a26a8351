#include "libs/common/wire_check.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"

namespace switchboard {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::internal::WireFormatLite;

std::string ValidUtf8Prefix(absl::string_view s, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(s.size(), max_bytes));
  size_t i = 0;
  while (i < s.size()) {
    // The longest valid character starting here, if any (1 to 4 bytes).
    size_t len = 0;
    for (size_t n = 1; n <= 4 && i + n <= s.size(); ++n) {
      if (IsValidUtf8(s.substr(i, n))) {
        len = n;
        break;
      }
    }
    absl::string_view piece = len > 0 ? s.substr(i, len) : absl::string_view("\xEF\xBF\xBD");
    if (out.size() + piece.size() > max_bytes) break;
    out.append(piece.data(), piece.size());
    i += len > 0 ? len : 1;
  }
  return out;
}

bool IsValidUtf8(absl::string_view s) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
  const unsigned char* end = p + s.size();
  while (p < end) {
    unsigned char c = *p;
    int n;
    uint32_t cp;
    if (c < 0x80) {
      ++p;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (end - p <= n) return false;
    for (int i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are invalid.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    p += n + 1;
  }
  return true;
}

namespace {

// Reads a map entry's string key for a readable path (fields["note"]).
std::string MapKey(absl::string_view entry) {
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(entry.data()),
                                            static_cast<int>(entry.size()));
  uint32_t tag;
  while ((tag = in.ReadTag()) != 0) {
    if (WireFormatLite::GetTagFieldNumber(tag) == 1 &&
        WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      std::string key;
      uint32_t length;
      if (in.ReadVarint32(&length) && in.ReadString(&key, static_cast<int>(length))) return key;
      return "?";
    }
    if (!WireFormatLite::SkipField(&in, tag)) break;
  }
  return "";
}

std::optional<std::string> Walk(const Descriptor* type, absl::string_view bytes,
                                const std::string& path, int depth) {
  if (depth > 64) return std::nullopt;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  std::map<int, int> seen;  // field number -> count, for repeated indexes
  uint32_t tag;
  while ((tag = in.ReadTag()) != 0) {
    int number = WireFormatLite::GetTagFieldNumber(tag);
    const FieldDescriptor* field = type->FindFieldByNumber(number);
    if (field == nullptr ||
        WireFormatLite::GetTagWireType(tag) != WireFormatLite::WIRETYPE_LENGTH_DELIMITED ||
        (field->type() != FieldDescriptor::TYPE_STRING &&
         field->type() != FieldDescriptor::TYPE_MESSAGE)) {
      if (!WireFormatLite::SkipField(&in, tag)) return std::nullopt;
      continue;
    }
    std::string value;
    uint32_t length;
    if (!in.ReadVarint32(&length) || !in.ReadString(&value, static_cast<int>(length))) {
      return std::nullopt;
    }
    std::string here = path.empty() ? field->name() : absl::StrCat(path, ".", field->name());
    if (field->is_map()) {
      absl::StrAppend(&here, "[\"", MapKey(value), "\"]");
    } else if (field->is_repeated()) {
      absl::StrAppend(&here, "[", seen[number]++, "]");
    }
    if (field->type() == FieldDescriptor::TYPE_STRING) {
      if (!IsValidUtf8(value)) return here;
    } else if (field->is_map()) {
      // Check key and value, naming the entry by its key.
      const Descriptor* entry = field->message_type();
      const FieldDescriptor* key_field = entry->FindFieldByNumber(1);
      if (key_field->type() == FieldDescriptor::TYPE_STRING && !IsValidUtf8(MapKey(value))) {
        return absl::StrCat(path.empty() ? "" : path + ".", field->name(), " (a key)");
      }
      std::optional<std::string> inner = Walk(entry, value, here, depth + 1);
      if (inner.has_value()) {
        // Drop the synthetic ".value" of the map entry.
        std::string p = *inner;
        std::string suffix = here + ".value";
        if (p.rfind(suffix, 0) == 0) p = here + p.substr(suffix.size());
        return p;
      }
    } else {
      std::optional<std::string> inner = Walk(field->message_type(), value, here, depth + 1);
      if (inner.has_value()) return inner;
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> FindInvalidUtf8(const Descriptor* type, absl::string_view bytes) {
  return Walk(type, bytes, "", 0);
}

absl::Status ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* message,
                          absl::string_view public_name) {
  {
    grpc::ByteBuffer copy(buffer);
    grpc::ProtoBufferReader reader(&copy);
    if (message->ParseFromZeroCopyStream(&reader)) return absl::OkStatus();
  }
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (buffer.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  std::optional<std::string> bad = FindInvalidUtf8(message->GetDescriptor(), bytes);
  if (bad.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(*bad, ": invalid UTF-8"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "request: not a valid ",
      public_name.empty() ? message->GetDescriptor()->full_name() : std::string(public_name)));
}

void SerializeResponse(const google::protobuf::Message& message, grpc::ByteBuffer* buffer) {
  bool own;
  grpc::SerializationTraits<google::protobuf::Message>::Serialize(message, buffer, &own);
}

}  // namespace switchboard
