package memory

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

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

// maxNumberLength bounds the text of one JSON number in metadata.
const maxNumberLength = 1000

// maxNumberExponent bounds the exponent of a JSON number: PostgreSQL's numeric, which jsonb
// stores numbers as, refuses exponents beyond ±1000.
const maxNumberExponent = 1000

// validateMetadata checks a JSON metadata value: one JSON object of at most MaxMetadataBytes,
// nested at most maxMetadataDepth deep, that PostgreSQL's jsonb accepts exactly as given: valid
// UTF-8 without lone surrogate escapes (\ud800), no duplicate member names (which could hide a
// value the last one replaces), no NUL character (\u0000) in a name or a string, and numbers
// that numeric can hold (finite as a double, exponent within ±1000). Anything else is a
// *ValidationError naming field and the JSON pointer of the offending value, never a database
// error. An absent value or JSON null yields nil (no metadata). When allowEmpty is false an
// empty object is rejected too (a filter {} would match everything).
func validateMetadata(field string, raw json.RawMessage, allowEmpty bool) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return nil, nil
	}
	if len(trimmed) > MaxMetadataBytes {
		return nil, tooLarge(field, "at most %d bytes of JSON, got %d", MaxMetadataBytes, len(trimmed))
	}
	if trimmed[0] != '{' {
		return nil, invalid(field, "must be a JSON object")
	}
	dec := jsontext.NewDecoder(bytes.NewReader(trimmed))
	members, done := 0, false
	for {
		tok, err := dec.ReadToken()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, invalid(field, "must be a valid JSON object: %s", jsonProblem(err))
		}
		if done {
			return nil, invalid(field, "must be a single JSON object")
		}
		depth := dec.StackDepth()
		done = depth == 0
		if depth > maxMetadataDepth {
			return nil, invalid(field, "nested deeper than %d levels", maxMetadataDepth)
		}
		switch tok.Kind() {
		case '"':
			if depth == 1 {
				members++ // at depth 1 inside the object, strings alternate name, value
			}
			if strings.IndexByte(tok.String(), 0) >= 0 {
				return nil, invalid(field, "must not contain NUL characters (\\u0000), at %s", pointerOf(dec))
			}
		case '0':
			if err := checkNumber(tok.String()); err != "" {
				return nil, invalid(field, "%s, at %s", err, pointerOf(dec))
			}
		}
	}
	if !allowEmpty && members == 0 {
		return nil, invalid(field, "must not be an empty object")
	}
	return json.RawMessage(trimmed), nil
}

// pointerOf is the JSON pointer of the value just read ("/a/0/b"), or "/" for the whole object.
func pointerOf(dec *jsontext.Decoder) string {
	if p := string(dec.StackPointer()); p != "" {
		return p
	}
	return "/"
}

// jsonProblem is a jsontext error without its package prefix.
func jsonProblem(err error) string {
	msg := strings.TrimPrefix(err.Error(), "jsontext: ")
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "truncated"
	}
	return msg
}

// checkNumber says why PostgreSQL's numeric could not hold the JSON number s, or "".
func checkNumber(s string) string {
	if len(s) > maxNumberLength {
		return fmt.Sprintf("numbers must be at most %d characters long", maxNumberLength)
	}
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		exp, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
		if err != nil || exp > maxNumberExponent || exp < -maxNumberExponent {
			return fmt.Sprintf("number %.40s has an exponent beyond ±%d", s, maxNumberExponent)
		}
	}
	if f, err := strconv.ParseFloat(s, 64); err != nil || math.IsInf(f, 0) {
		return fmt.Sprintf("number %.40s is out of range", s)
	}
	return ""
}
