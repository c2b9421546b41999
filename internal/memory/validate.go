package memory

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tenantmem/tenantmem/internal/chunk"
)

// maxMetadataDepth bounds the nesting of metadata objects and arrays.
const maxMetadataDepth = 32

// parseUUID checks that s is a UUID in its canonical 8-4-4-4-12 hex form (either case) and
// returns it lower-cased. Anything else is a validation error naming field, never a database
// error.
func parseUUID(field, s string) (string, error) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return "", invalid(field, "must be a UUID like 123e4567-e89b-12d3-a456-426614174000")
	}
	var b [16]byte
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if _, err := hex.Decode(b[:], []byte(h)); err != nil {
		return "", invalid(field, "must be a UUID like 123e4567-e89b-12d3-a456-426614174000")
	}
	return strings.ToLower(s), nil
}

func parseUUIDs(field string, ids []string) ([]string, error) {
	if len(ids) > MaxFilterValues {
		return nil, invalid(field, "at most %d values, got %d", MaxFilterValues, len(ids))
	}
	out := make([]string, 0, len(ids))
	for i, id := range ids {
		u, err := parseUUID(fmt.Sprintf("%s[%d]", field, i), id)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// checkText rejects what PostgreSQL text cannot hold: invalid UTF-8 and NUL characters.
func checkText(field, s string) error {
	if !utf8.ValidString(s) {
		return invalid(field, "must be valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return invalid(field, "must not contain NUL characters")
	}
	return nil
}

func validateDocumentType(field, t string) error {
	if _, err := chunk.DefaultOptions(t); err != nil {
		return invalid(field, "unknown document type %q (accepted: %s)", t, strings.Join(chunk.DocumentTypes(), ", "))
	}
	return nil
}

// validateIDAtOrigin accepts 1 to 255 bytes of UTF-8 without control characters and without
// leading or trailing white space. The original's narrow pattern rejected real-world ids
// (URLs, titles); the id is only ever a bound value, so any printable text is safe.
func validateIDAtOrigin(field, s string) error {
	switch {
	case s == "":
		return invalid(field, "must not be empty")
	case len(s) > MaxIDAtOriginBytes:
		return tooLarge(field, "at most %d bytes, got %d", MaxIDAtOriginBytes, len(s))
	case !utf8.ValidString(s):
		return invalid(field, "must be valid UTF-8")
	case strings.TrimSpace(s) != s:
		return invalid(field, "must not start or end with white space")
	case strings.ContainsFunc(s, unicode.IsControl):
		return invalid(field, "must not contain control characters")
	}
	return nil
}

// validateMetadata checks a JSON metadata value: a JSON object of at most MaxMetadataBytes,
// nested at most maxMetadataDepth deep, valid UTF-8, without NUL characters (which jsonb
// cannot store). An absent value or JSON null yields nil (no metadata). When allowEmpty is
// false an empty object is rejected too (a filter {} would match everything).
func validateMetadata(field string, raw json.RawMessage, allowEmpty bool) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return nil, nil
	}
	if len(trimmed) > MaxMetadataBytes {
		return nil, tooLarge(field, "at most %d bytes of JSON, got %d", MaxMetadataBytes, len(trimmed))
	}
	if !utf8.Valid(trimmed) {
		return nil, invalid(field, "must be valid UTF-8")
	}
	if trimmed[0] != '{' {
		return nil, invalid(field, "must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, invalid(field, "must be a JSON object: %v", err)
	}
	if dec.More() {
		return nil, invalid(field, "must be a single JSON object")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, invalid(field, "must be a JSON object")
	}
	if !allowEmpty && len(obj) == 0 {
		return nil, invalid(field, "must not be an empty object")
	}
	if err := checkJSONValue(field, obj, 1); err != nil {
		return nil, err
	}
	return json.RawMessage(trimmed), nil
}

func checkJSONValue(field string, v any, depth int) error {
	if depth > maxMetadataDepth {
		return invalid(field, "nested deeper than %d levels", maxMetadataDepth)
	}
	switch x := v.(type) {
	case string:
		if strings.IndexByte(x, 0) >= 0 {
			return invalid(field, "must not contain NUL characters (\\u0000)")
		}
	case map[string]any:
		for k, e := range x {
			if strings.IndexByte(k, 0) >= 0 {
				return invalid(field, "keys must not contain NUL characters (\\u0000)")
			}
			if err := checkJSONValue(field, e, depth+1); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range x {
			if err := checkJSONValue(field, e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}
