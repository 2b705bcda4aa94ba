package extauthz

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// The gRPC answer of an allowed check is written as protobuf wire bytes
// (the fields okResponse and NewPrincipal write, byte for byte what
// proto.Marshal with Deterministic writes for the same messages, see
// TestWireMatchesMarshal) rather than built as messages: the messages
// would be allocated on every check, or kept for as long as a principal
// is cached, only to be encoded once. The field numbers are read from the
// generated descriptors, not written out here.
var (
	fieldOkHeaders           = fieldNumber(&authv3.OkHttpResponse{}, "headers")
	fieldOkHeadersToRemove   = fieldNumber(&authv3.OkHttpResponse{}, "headers_to_remove")
	fieldOkResponseHeaders   = fieldNumber(&authv3.OkHttpResponse{}, "response_headers_to_add")
	fieldCheckDynamicMeta    = fieldNumber(&authv3.CheckResponse{}, "dynamic_metadata")
	fieldOptionHeader        = fieldNumber(&corev3.HeaderValueOption{}, "header")
	fieldOptionAppend        = fieldNumber(&corev3.HeaderValueOption{}, "append")
	fieldOptionAppendAction  = fieldNumber(&corev3.HeaderValueOption{}, "append_action")
	fieldHeaderKey           = fieldNumber(&corev3.HeaderValue{}, "key")
	fieldHeaderValue         = fieldNumber(&corev3.HeaderValue{}, "value")
	fieldStructFields        = fieldNumber(&structpb.Struct{}, "fields")
	fieldStringValue         = fieldNumber(&structpb.Value{}, "string_value")
	fieldMapKey, fieldMapVal = protowire.Number(1), protowire.Number(2) // every map entry's
)

// fieldNumber is the number of m's field called name; it panics, at
// start-up, if the generated code has no such field.
func fieldNumber(m proto.Message, name string) protowire.Number {
	fd := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
	if fd == nil {
		panic("extauthz: " + string(m.ProtoReflect().Descriptor().FullName()) + " has no field " + name)
	}
	return fd.Number()
}

// overwriteAction is append_action OVERWRITE_IF_EXISTS_OR_ADD.
var overwriteAction = uint64(corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)

// text is a string field's value, as a string or as bytes (a number
// formatted into a buffer on the stack).
type text interface{ ~string | ~[]byte }

// sizeString is the size of a string field: tag, length, bytes.
func sizeString[T text](f protowire.Number, s T) int {
	return protowire.SizeTag(f) + protowire.SizeBytes(len(s))
}

// appendString appends a string field.
func appendString[T text](b []byte, f protowire.Number, s T) []byte {
	b = protowire.AppendTag(b, f, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(s)))
	return append(b, s...)
}

// headerValueSize is the size of a HeaderValue{Key: name, Value: value}.
func headerValueSize[T text](name string, value T) int {
	n := sizeString(fieldHeaderKey, name)
	if len(value) > 0 { // proto3: an empty string is not written
		n += sizeString(fieldHeaderValue, value)
	}
	return n
}

// headerOptionSize is the size of the HeaderValueOption overwrite(name,
// value) writes: the header, append false (an empty BoolValue: false is
// not written) and append_action.
func headerOptionSize[T text](name string, value T) int {
	hv := headerValueSize(name, value)
	return protowire.SizeTag(fieldOptionHeader) + protowire.SizeBytes(hv) +
		protowire.SizeTag(fieldOptionAppend) + protowire.SizeBytes(0) +
		protowire.SizeTag(fieldOptionAppendAction) + protowire.SizeVarint(overwriteAction)
}

// sizeHeaderOption is the size of field f holding overwrite(name, value).
func sizeHeaderOption[T text](f protowire.Number, name string, value T) int {
	return protowire.SizeTag(f) + protowire.SizeBytes(headerOptionSize(name, value))
}

// appendHeaderOption appends field f holding overwrite(name, value).
func appendHeaderOption[T text](b []byte, f protowire.Number, name string, value T) []byte {
	b = protowire.AppendTag(b, f, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(headerOptionSize(name, value)))
	b = protowire.AppendTag(b, fieldOptionHeader, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(headerValueSize(name, value)))
	b = appendString(b, fieldHeaderKey, name)
	if len(value) > 0 {
		b = appendString(b, fieldHeaderValue, value)
	}
	b = protowire.AppendTag(b, fieldOptionAppend, protowire.BytesType)
	b = protowire.AppendVarint(b, 0)
	b = protowire.AppendTag(b, fieldOptionAppendAction, protowire.VarintType)
	return protowire.AppendVarint(b, overwriteAction)
}

// metadataEntrySize is the size of one Struct.fields map entry whose value
// is a string Value.
func metadataEntrySize(key, value string) int {
	v := sizeString(fieldStringValue, value) // a oneof: written even when empty
	return sizeString(fieldMapKey, key) + protowire.SizeTag(fieldMapVal) + protowire.SizeBytes(v)
}

// appendMetadataEntry appends one Struct.fields map entry {key: value}.
func appendMetadataEntry(b []byte, key, value string) []byte {
	b = protowire.AppendTag(b, fieldStructFields, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(metadataEntrySize(key, value)))
	b = appendString(b, fieldMapKey, key)
	b = protowire.AppendTag(b, fieldMapVal, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(sizeString(fieldStringValue, value)))
	return appendString(b, fieldStringValue, value)
}
