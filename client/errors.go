package client

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Sentinel errors, one per error code of the servers. An [*Error] matches the sentinel of its code
// with errors.Is, e.g. errors.Is(err, client.ErrNotFound).
var (
	ErrInvalidInput     = errors.New("invalid input")          // 400 invalid_input: Error.Field names the field
	ErrUnauthorized     = errors.New("unauthorized")           // 401: missing, unknown or revoked key
	ErrForbidden        = errors.New("forbidden")              // 403: the tenant is suspended
	ErrNotFound         = errors.New("not found")              // 404
	ErrMethodNotAllowed = errors.New("method not allowed")     // 405
	ErrAlreadyExists    = errors.New("already exists")         // 409 already_exists
	ErrConflict         = errors.New("conflict")               // 409 conflict: wrong state
	ErrPayloadTooLarge  = errors.New("payload too large")      // 413: Error.Field names the field
	ErrUnsupportedMedia = errors.New("unsupported media type") // 415
	ErrRateLimited      = errors.New("rate limited")           // 429: Error.RetryAfter says when
	ErrInternal         = errors.New("internal server error")  // 500: Error.Message carries a request id
	ErrUnavailable      = errors.New("unavailable")            // 503: Error.RetryAfter says when
)

// codes is the one table of error codes: the sentinel of each code and the status that carries it.
var codes = map[string]struct {
	sentinel error
	status   int
}{
	"invalid_input":      {ErrInvalidInput, http.StatusBadRequest},
	"unauthorized":       {ErrUnauthorized, http.StatusUnauthorized},
	"forbidden":          {ErrForbidden, http.StatusForbidden},
	"not_found":          {ErrNotFound, http.StatusNotFound},
	"method_not_allowed": {ErrMethodNotAllowed, http.StatusMethodNotAllowed},
	"already_exists":     {ErrAlreadyExists, http.StatusConflict},
	"conflict":           {ErrConflict, http.StatusConflict},
	"payload_too_large":  {ErrPayloadTooLarge, http.StatusRequestEntityTooLarge},
	"unsupported_media":  {ErrUnsupportedMedia, http.StatusUnsupportedMediaType},
	"rate_limited":       {ErrRateLimited, http.StatusTooManyRequests},
	"internal":           {ErrInternal, http.StatusInternalServerError},
	"unavailable":        {ErrUnavailable, http.StatusServiceUnavailable},
}

// codeForStatus is the code of an answer without tenantmem's error body (a proxy's error page).
func codeForStatus(status int) string {
	if status == http.StatusConflict {
		return "conflict"
	}
	for code, c := range codes {
		if c.status == status {
			return code
		}
	}
	if status >= 500 {
		return "internal"
	}
	return "invalid_input"
}

// Error is an answer other than 2xx: the server's error body {"error": {"code", "message",
// "field"}} with the HTTP status and the Retry-After header. Get it with errors.As; errors.Is
// matches it against the sentinel of its code.
type Error struct {
	// StatusCode is the HTTP status, e.g. 404.
	StatusCode int
	// Code is the machine-readable code, e.g. "not_found"; match on it (or the sentinels), not on
	// Message.
	Code string
	// Message is for people.
	Message string
	// Field names the offending input field of a 400 or 413, when the server knows it.
	Field string
	// RetryAfter is the server's Retry-After (503 and 429), or 0.
	RetryAfter time.Duration
	// RequestID is the server's X-Request-Id: the key to its log lines.
	RequestID string
	// Method and Path are the request's.
	Method, Path string
}

// Error returns "tenantmem: METHOD PATH: STATUS CODE: MESSAGE".
func (e *Error) Error() string {
	s := fmt.Sprintf("tenantmem: %s %s: %d %s: %s", e.Method, e.Path, e.StatusCode, e.Code, e.Message)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

// Is reports whether target is the sentinel of e's code.
func (e *Error) Is(target error) bool {
	c, ok := codes[e.Code]
	return ok && c.sentinel == target
}
