package jwtauth

import (
	"bytes"
	"io"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// The JOSE header and the claims are read with jsontext, the syntactic layer
// of encoding/json/v2 (github.com/go-json-experiment/json is the standard
// library's implementation published as a module; with Go 1.27 it aliases
// encoding/json/v2, which Go 1.26 ships only behind GOEXPERIMENT=jsonv2).
// It was chosen over encoding/json (v1) for three reasons:
//
//   - duplicate member names are refused at every depth, as RFC 7519
//     section 4 allows and RFC 7493 requires. encoding/json keeps the last
//     one, so a verifier and another reader of the same payload could see
//     different claims;
//   - member names are compared exactly by construction: the document is
//     read as a token stream and the names matched here, with no struct
//     tag matching that folds case ("EXP" is not exp);
//   - a token stream needs no map of every claim and no copy of the values:
//     each value is a slice of the decoded segment, parsed only if used.
//
// Invalid UTF-8 inside strings is accepted and replaced by U+FFFD, as
// encoding/json did: the payload is signed by the issuer, and refusing it
// now would change which tokens verify.
var decodeOptions = jsontext.AllowInvalidUTF8(true)

// objectReader is a pooled decoder reading one document from buf.
type objectReader struct {
	dec jsontext.Decoder
	buf bytes.Buffer
}

var objectReaders = sync.Pool{New: func() any {
	r := &objectReader{}
	r.dec.Reset(&r.buf, decodeOptions)
	return r
}}

// borrowReader returns a pooled reader at the start of doc, which it reads
// in place; give it back with release.
func borrowReader(doc []byte) *objectReader {
	r := objectReaders.Get().(*objectReader)
	r.buf = *bytes.NewBuffer(doc)
	r.dec.Reset(&r.buf, decodeOptions)
	return r
}

// release drops every reference to the document before the reader is
// reused, and returns it to the pool.
func (r *objectReader) release() {
	r.buf = bytes.Buffer{}
	r.dec.Reset(&r.buf, decodeOptions)
	objectReaders.Put(r)
}

// forEachMember checks that doc is exactly one JSON object (well formed, no
// duplicate member names at any depth, nothing but whitespace after it) and
// calls fn with each member's name and raw value, in document order. name
// is only valid during the call; value is a slice of doc. It reports false,
// having possibly called fn for some members, when doc is not such an
// object: the caller then refuses the document whatever fn saw.
func forEachMember(doc []byte, fn func(name []byte, value []byte)) bool {
	r := borrowReader(doc)
	defer r.release()
	d := &r.dec
	if tok, err := d.ReadToken(); err != nil || tok.Kind() != '{' {
		return false
	}
	for d.PeekKind() != '}' {
		name, err := d.ReadValue()
		if err != nil || len(name) < 2 {
			return false
		}
		name = memberName(name)
		value, err := d.ReadValue()
		if err != nil {
			return false
		}
		// The decoder reads doc in place (a bytes.Buffer) and the value is
		// its exact bytes, so its offset locates it in doc.
		end := int(d.InputOffset())
		fn(name, doc[end-len(value):end])
	}
	if _, err := d.ReadToken(); err != nil { // the closing brace
		return false
	}
	_, err := d.ReadToken()
	return err == io.EOF
}

// memberName returns the name of a quoted member name as read: the bytes
// between the quotes, or, when it has escapes ("\u0065xp" is exp, as it was
// for encoding/json), its unquoted form.
func memberName(quoted jsontext.Value) []byte {
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	// The decoder accepted the name, so the only error left is invalid
	// UTF-8, which is replaced (decodeOptions).
	out, _ := jsontext.AppendUnquote(nil, quoted)
	return out
}

// forEachElement calls fn with the raw value of each element of the JSON
// array doc (a value of a document forEachMember accepted), in order, until
// fn returns false. It reports false when doc is not an array or fn
// stopped.
func forEachElement(doc []byte, fn func(value []byte) bool) bool {
	r := borrowReader(doc)
	defer r.release()
	d := &r.dec
	if tok, err := d.ReadToken(); err != nil || tok.Kind() != '[' {
		return false
	}
	for d.PeekKind() != ']' {
		value, err := d.ReadValue()
		if err != nil {
			return false
		}
		end := int(d.InputOffset())
		if !fn(doc[end-len(value) : end]) {
			return false
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return false
	}
	_, err := d.ReadToken()
	return err == io.EOF
}
