package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/tenantmem/tenantmem/internal/registry"
)

// jsonPathAt returns the path ("chunks[3].embedding[17]") of the value of body that contains byte
// offset (or would start there, for a syntax error), read with a tokenizer up to there; "" when
// offset is at the top level.
func jsonPathAt(body []byte, offset int64) string {
	type frame struct {
		array bool
		index int    // array: elements read so far
		key   string // object: the key of the value being read
		inKey bool   // object: the next string token is a key
	}
	var stack []frame
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	// valueDone marks the end of one value in the innermost container.
	valueDone := func() {
		if n := len(stack); n > 0 {
			if stack[n-1].array {
				stack[n-1].index++
			} else {
				stack[n-1].inKey = true
			}
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil || dec.InputOffset() > offset {
			// A bad token, or the token that spans offset: the path is that of its value.
			break
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '[':
				stack = append(stack, frame{array: true})
			case '{':
				stack = append(stack, frame{inKey: true})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case string:
			if n := len(stack); n > 0 && !stack[n-1].array && stack[n-1].inKey {
				stack[n-1].key, stack[n-1].inKey = t, false
				continue
			}
			valueDone()
		default:
			valueDone()
		}
	}
	var b strings.Builder
	for _, f := range stack {
		if f.array {
			b.WriteString("[" + strconv.Itoa(f.index) + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(f.key)
	}
	return b.String()
}

// readJSONLocated is readJSON (the whole body, strictly checked, decoded into v, and returned)
// for bodies whose errors should name the exact element: a type error, and a NaN or Infinity
// that a client's JSON encoder wrote into an embedding (encoding/json refuses them as syntax),
// name the path of the value at fault, such as chunks[3].embedding[17].
func readJSONLocated(c echo.Context, v any) ([]byte, error) {
	req := c.Request()
	body, err := io.ReadAll(req.Body)
	if err != nil {
		var mb *http.MaxBytesError
		switch {
		case errors.As(err, &mb):
			return nil, err
		case req.Context().Err() != nil:
			return nil, fmt.Errorf("read body: %w", req.Context().Err())
		}
		return nil, &registry.FieldError{Field: "body", Message: "could not be read: " + err.Error()}
	}
	if json.Valid(body) {
		if err := checkJSON(body); err != nil {
			return nil, err
		}
	}
	if err := decodeLocated(body, v); err != nil {
		return nil, err
	}
	return body, nil
}

// decodeLocated decodes exactly one JSON object of body into v, rejecting unknown fields, with
// errors that name the path of the offending value.
func decodeLocated(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return &registry.FieldError{Field: "body", Message: "must be a JSON object; the body is empty"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return &registry.FieldError{Field: "body", Message: "unexpected data after the JSON object"}
		}
		return nil
	}
	var (
		se *json.SyntaxError
		te *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &se):
		path := jsonPathAt(body, se.Offset-1)
		rest := body[min(int(se.Offset)-1, len(body)):]
		for _, lit := range []string{"NaN", "Infinity", "-Infinity", "inf", "-inf", "nan"} {
			if bytes.HasPrefix(rest, []byte(lit)) {
				if i := int(se.Offset) - 2; i >= 0 && body[i] == '-' {
					lit = "-" + lit // the decoder stops after the sign
				}
				return &registry.FieldError{Field: cmpField(path), Message: fmt.Sprintf("%s is not a JSON number; embeddings and numbers must be finite", lit)}
			}
		}
		return err
	case errors.As(err, &te):
		path := jsonPathAt(body, te.Offset-1)
		field, msg := describeTypeError(te)
		if path == "" {
			path = field
		}
		if te.Type != nil && (te.Type.Kind().String() == "float32" || te.Type.Kind().String() == "float64") && te.Value == "number "+valueAt(body, te.Offset) {
			msg = "out of range: embeddings and numbers must be finite 32-bit floats"
		}
		return &registry.FieldError{Field: path, Message: msg}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &registry.FieldError{Field: "body", Message: "truncated JSON"}
	}
	if name, ok := strings.CutPrefix(err.Error(), `json: unknown field "`); ok {
		return &registry.FieldError{Field: strings.TrimSuffix(name, `"`), Message: "unknown field"}
	}
	return err
}

func cmpField(path string) string {
	if path == "" {
		return "body"
	}
	return path
}

// valueAt returns the number literal that ends at offset (exclusive) in body.
func valueAt(body []byte, offset int64) string {
	end := min(int(offset), len(body))
	start := end
	for start > 0 && strings.IndexByte("+-.0123456789eE", body[start-1]) >= 0 {
		start--
	}
	return string(body[start:end])
}
