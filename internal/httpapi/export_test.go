package httpapi

import jsonv2 "github.com/go-json-experiment/json"

// DecodeStrict is the one-pass decoding of a request body on the router's fast path (readJSON),
// for benchmarks that read the same bodies outside the router.
func DecodeStrict(body []byte, v any) error { return jsonv2.Unmarshal(body, v, strictDecode) }
