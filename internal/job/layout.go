package job

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The output layout maps (input key, file the processor left) to one
// output object key, and is injective: no two inputs, and no two files of
// one input, ever share an output key.
//
//   - The file's relative path is escaped into one path segment: '%', '/'
//     and control characters become %XX. A processor's "b/x" is
//     "b%2Fx", so the outputs of input "a" never land under "a/b/", where
//     input "a/b" keeps its own.
//   - The outputs of key K are K + "/" + segment: exactly the direct
//     children of "K/", so a listing of "K/" with delimiter "/" finds them,
//     and never those of "K/x".
//   - A key longer than MaxDirectKey keeps its outputs under
//     "_long/<32 hex digits of SHA-256(K)>/%2F" + segment. An escaped
//     segment never starts with "%2F" (a relative path never starts with
//     '/'), so these never collide with the outputs of an input whose key
//     is literally "_long/<hex>".

// MaxDirectKey is the longest input key whose outputs live under the key
// itself; S3 keys end at 1,024 bytes and outputs need room for their names.
const MaxDirectKey = 768

// maxObjectKey is S3's limit on a key's length in bytes.
const maxObjectKey = 1024

// longMarker starts the segment of every output of a long key.
const longMarker = "%2F"

// ErrOutputName is wrapped by OutputKey when a file's name cannot be an
// output key; retrying cannot help.
var ErrOutputName = errors.New("output file name cannot be stored")

// OutputPrefix is the prefix shared by every output of key and by no other
// object: list it with delimiter "/" to find them (then keep those for which
// OutputRel reports ok).
func OutputPrefix(key string) string {
	if len(key) > MaxDirectKey {
		h := sha256.Sum256([]byte(key))
		return "_long/" + hex.EncodeToString(h[:16]) + "/" + longMarker
	}
	return key + "/"
}

// OutputKey is the output object key of the file rel (a slash-separated
// path relative to the output directory) of input key.
func OutputKey(key, rel string) (string, error) {
	if rel == "" || strings.HasPrefix(rel, "/") {
		return "", fmt.Errorf("%w: %q is not a relative path", ErrOutputName, rel)
	}
	k := OutputPrefix(key) + escapeSegment(rel)
	if len(k) > maxObjectKey {
		return "", fmt.Errorf("%w: %q makes a key of %d bytes, more than S3's %d; give the file a shorter name", ErrOutputName, rel, len(k), maxObjectKey)
	}
	return k, nil
}

// OutputRel returns the relative path of the file that object (a key
// listed under OutputPrefix(key)) holds, and whether it is an output of
// key at all.
func OutputRel(key, object string) (string, bool) {
	prefix := OutputPrefix(key)
	seg, ok := strings.CutPrefix(object, prefix)
	if !ok || seg == "" || strings.Contains(seg, "/") {
		return "", false
	}
	if len(key) <= MaxDirectKey && strings.HasPrefix(seg, longMarker) {
		return "", false // a long key's output, under a short key "_long/<hex>"
	}
	rel, err := unescapeSegment(seg)
	if err != nil {
		return "", false
	}
	return rel, true
}

func escapeSegment(rel string) string {
	var b strings.Builder
	for i := 0; i < len(rel); i++ {
		c := rel[i]
		if c == '%' || c == '/' || c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func unescapeSegment(seg string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(seg); i++ {
		if seg[i] != '%' {
			b.WriteByte(seg[i])
			continue
		}
		if i+2 >= len(seg) {
			return "", fmt.Errorf("truncated escape in %q", seg)
		}
		c, err := hex.DecodeString(seg[i+1 : i+3])
		if err != nil {
			return "", fmt.Errorf("bad escape in %q", seg)
		}
		b.Write(c)
		i += 2
	}
	return b.String(), nil
}

// Metadata keys every output object carries (x-amz-meta-*).
const (
	MetaJob          = "conveyor-job"           // the job that wrote it
	MetaInputVersion = "conveyor-input-version" // the input version it describes (Record.InputVersion)
	MetaSHA256       = "sha256"
)

// ErrNotItsOutput is wrapped by CheckOutput when an output object was
// written by another job: a newer version of the key replaced it.
var ErrNotItsOutput = errors.New("output belongs to another job")

// CheckOutput returns an error wrapping ErrNotItsOutput unless meta (an
// output object's user metadata, keys in any case) names r as its writer.
func (r *Record) CheckOutput(object string, meta map[string]string) error {
	var owner, version string
	for k, v := range meta {
		switch strings.ToLower(k) {
		case MetaJob:
			owner = v
		case MetaInputVersion:
			version = v
		}
	}
	if owner == r.ID && version == r.InputVersion() {
		return nil
	}
	if owner == "" {
		return fmt.Errorf("%w: %s names no job; it was not published by Conveyor", ErrNotItsOutput, object)
	}
	return fmt.Errorf("%w: %s is now the output of job %s (input version %s), not of job %s; a newer version of %q replaced it: ask for that job, or for the key",
		ErrNotItsOutput, object, owner, version, r.ID, r.Key)
}

// Printable returns an object key as it may appear in a log line or a
// message: unchanged when it is plain printable text, else Go-quoted, so a
// key with a newline or a terminal escape cannot forge or garble lines.
func Printable(key string) string {
	q := strconv.Quote(key)
	if q[1:len(q)-1] == key {
		return key
	}
	return q
}
