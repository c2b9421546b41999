package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tenantmem/tenantmem/internal/dberr"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// Error codes: the "code" of an error body. Clients match on them; messages are for people.
const (
	CodeInvalidInput     = "invalid_input"          // 400
	CodeUnauthorized     = "unauthorized"           // 401
	CodeForbidden        = "forbidden"              // 403
	CodeNotFound         = "not_found"              // 404
	CodeMethodNotAllowed = "method_not_allowed"     // 405
	CodeAlreadyExists    = "already_exists"         // 409
	CodeConflict         = "conflict"               // 409
	CodePayloadTooLarge  = "payload_too_large"      // 413
	CodeQuotaExceeded    = "quota_exceeded"         // 413: a storage quota of the tenant
	CodeUnsupportedMedia = "unsupported_media"      // 415
	CodeIdempotencyReuse = "idempotency_key_reused" // 422
	CodeRateLimited      = "rate_limited"           // 429
	CodeInternal         = "internal"               // 500
	CodeUnavailable      = "unavailable"            // 503
)

// internalMessage is all a client learns about a 5xx that is not "unavailable"; the error handler
// adds the request id, under which the details are logged.
const internalMessage = "internal error"

// ErrUnavailable means the server cannot answer for now (not ready, being migrated); it maps to
// 503 with a Retry-After header. Wrap it with %w and a message the client may see.
var ErrUnavailable = errors.New("unavailable")

// Problem is what a client is told about an error: the HTTP status and the body
// {"error": {"code", "message", "field"}}.
type Problem struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field names the offending input field of an invalid_input or payload_too_large error, when
	// known.
	Field string `json:"field,omitempty"`
	// RetryAfter, when positive, is sent as the Retry-After header (whole seconds, at least 1).
	RetryAfter time.Duration `json:"-"`
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error Problem `json:"error"`
}

// ErrorRule maps one kind of error to a Problem. Rules are tried in order; the first whose Match
// accepts the error wins.
type ErrorRule struct {
	// Match reports whether the rule applies; build it with [Is] or [As].
	Match func(err error) bool
	// Status and Code are the answer.
	Status int
	Code   string
	// Message, when set, returns the client-facing message. When nil, the message is the one given
	// with [WithMessage], else err.Error(); for a 5xx other than 503 it is always a generic text.
	Message func(err error) string
	// RetryAfter is sent as Retry-After unless the error carries its own (see [RetryAfterError]).
	RetryAfter time.Duration
}

// Is returns a matcher for errors.Is(err, target).
func Is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

// As returns a matcher for errors.As(err, new(T)).
func As[T error]() func(error) bool {
	return func(err error) bool {
		var target T
		return errors.As(err, &target)
	}
}

// RetryAfterError is implemented by errors that know when the client may retry; it overrides
// ErrorRule.RetryAfter.
type RetryAfterError interface {
	error
	RetryAfter() time.Duration
}

// DefaultErrorRules returns the error table shared by every tenantmem server: the domain errors of
// the registry and the provisioner, JSON decoding errors, request body limits and database
// outages. A server extends it by prepending its own rules (they are tried first) or appending
// them. Errors that match no rule, and *echo.HTTPError values, are handled by [MapError] itself.
func DefaultErrorRules() []ErrorRule {
	return []ErrorRule{
		{Match: Is(ErrUnavailable), Status: http.StatusServiceUnavailable, Code: CodeUnavailable, RetryAfter: 5 * time.Second},
		{Match: As[*registry.FieldError](), Status: http.StatusBadRequest, Code: CodeInvalidInput, Message: func(err error) string {
			var fe *registry.FieldError
			errors.As(err, &fe)
			return fe.Error() // "field: message", without the wrapping
		}},
		{Match: As[*json.SyntaxError](), Status: http.StatusBadRequest, Code: CodeInvalidInput, Message: func(err error) string {
			var se *json.SyntaxError
			errors.As(err, &se)
			return fmt.Sprintf("body: invalid JSON at byte %d: %s", se.Offset, se.Error())
		}},
		{Match: As[*json.UnmarshalTypeError](), Status: http.StatusBadRequest, Code: CodeInvalidInput, Message: func(err error) string {
			var te *json.UnmarshalTypeError
			errors.As(err, &te)
			field, msg := describeTypeError(te)
			return field + ": " + msg
		}},
		{Match: As[*http.MaxBytesError](), Status: http.StatusRequestEntityTooLarge, Code: CodePayloadTooLarge, Message: func(err error) string {
			var me *http.MaxBytesError
			errors.As(err, &me)
			return fmt.Sprintf("request body larger than %d bytes", me.Limit)
		}},
		// A tenant archive that is truncated, corrupted, foreign, of a future version or of
		// another embedding dimension.
		{Match: provision.IsArchiveError, Status: http.StatusBadRequest, Code: CodeInvalidInput},
		// A restore or import that would take a tenant over its quota (nothing was left behind).
		{Match: Is(memory.ErrQuotaExceeded), Status: http.StatusRequestEntityTooLarge, Code: CodeQuotaExceeded},
		{Match: Is(registry.ErrUnauthenticated), Status: http.StatusUnauthorized, Code: CodeUnauthorized},
		{Match: Is(registry.ErrNotFound), Status: http.StatusNotFound, Code: CodeNotFound},
		{Match: Is(registry.ErrExists), Status: http.StatusConflict, Code: CodeAlreadyExists},
		{Match: Is(registry.ErrConflict), Status: http.StatusConflict, Code: CodeConflict},
		{Match: Is(provision.ErrMoveUnfinished), Status: http.StatusConflict, Code: CodeConflict},
		{Match: Is(provision.ErrNotInitialized), Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			RetryAfter: 30 * time.Second, Message: func(error) string { return provision.ErrNotInitialized.Error() }},
		{Match: Is(limit.ErrRateLimited), Status: http.StatusTooManyRequests, Code: CodeRateLimited, RetryAfter: time.Second},
		{Match: Is(limit.ErrBusy), Status: http.StatusServiceUnavailable, Code: CodeUnavailable, RetryAfter: time.Second,
			Message: func(error) string { return "the database is busy; retry shortly" }},
		// Every connection-level and server-availability failure: the connection was lost, reset
		// or refused (the driver's unexpected EOF included), the server is shutting down,
		// starting or crashed, out of disk, memory or connections, read-only, or a lock or
		// serialization conflict. The request may or may not have been done when the connection
		// broke during its commit: writes carry an Idempotency-Key (or an id_at_origin) so that
		// the retry is safe.
		// A placement's server (the admin sees which and why; the router says less, see
		// RouterErrorRules).
		{Match: Is(placement.ErrUnavailable), Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			RetryAfter: retryDatabase},
		{Match: dberr.Unavailable, Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			RetryAfter: retryDatabase, Message: func(error) string { return "database unavailable" }},
	}
}

// retryDatabase is the Retry-After of a database outage: a restart or failover takes seconds.
const retryDatabase = 5 * time.Second

// describeTypeError names the field of a JSON type mismatch ("body" for the whole document) and
// says what was expected.
func describeTypeError(te *json.UnmarshalTypeError) (field, msg string) {
	if te.Field == "" {
		return "body", fmt.Sprintf("must be a JSON object, not %s", te.Value)
	}
	kind := "of another type"
	if te.Type != nil {
		kind = jsonKind(te.Type.Kind().String())
	}
	return te.Field, fmt.Sprintf("must be %s, not %s", kind, te.Value)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "a number"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "of another type"
}

// WithMessage returns err with msg as the message a client sees. errors.Is and errors.As still see
// err, so the error table maps it as usual.
func WithMessage(err error, msg string) error {
	if err == nil {
		return nil
	}
	return &messageError{err: err, msg: msg}
}

type messageError struct {
	err error
	msg string
}

func (e *messageError) Error() string { return e.msg + ": " + e.err.Error() }
func (e *messageError) Unwrap() error { return e.err }

// MapError turns err into the Problem a client sees, using rules (see [DefaultErrorRules]). It is a
// pure function. An *echo.HTTPError anywhere in the chain (routing errors, echo middleware) keeps its
// status; an error that matches nothing is a 500 with a generic message.
func MapError(err error, rules []ErrorRule) Problem {
	for _, r := range rules {
		if r.Match == nil || !r.Match(err) {
			continue
		}
		p := Problem{Status: r.Status, Code: r.Code, RetryAfter: r.RetryAfter}
		switch {
		case r.Message != nil:
			p.Message = r.Message(err)
		case r.Status >= 500 && r.Status != http.StatusServiceUnavailable:
			p.Message = internalMessage
		default:
			p.Message = publicMessage(err)
		}
		if r.Status == http.StatusBadRequest || r.Status == http.StatusRequestEntityTooLarge {
			p.Field = fieldOf(err)
		}
		var ra RetryAfterError
		if errors.As(err, &ra) && ra.RetryAfter() > 0 {
			p.RetryAfter = ra.RetryAfter()
		}
		return p
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		p := Problem{Status: he.Code, Code: codeForStatus(he.Code)}
		switch m := he.Message.(type) {
		case string:
			p.Message = m
		case error:
			p.Message = m.Error()
		default:
			p.Message = http.StatusText(he.Code)
		}
		if he.Code >= 500 && he.Code != http.StatusServiceUnavailable {
			p.Message = internalMessage
		}
		return p
	}
	return Problem{Status: http.StatusInternalServerError, Code: CodeInternal, Message: internalMessage}
}

// fieldOf names the input field an error is about, or "".
func fieldOf(err error) string {
	var fe *registry.FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	var ve *memory.ValidationError
	if errors.As(err, &ve) {
		return ve.Field
	}
	var qe *memory.QuotaError
	if errors.As(err, &qe) {
		return qe.Field
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field, _ := describeTypeError(te)
		return field
	}
	if errors.As(err, new(*json.SyntaxError)) {
		return "body"
	}
	if provision.IsArchiveError(err) {
		return "archive"
	}
	return ""
}

func publicMessage(err error) string {
	var me *messageError
	if errors.As(err, &me) {
		return me.msg
	}
	return err.Error()
}

// codeForStatus is the error code of a bare HTTP status (from an *echo.HTTPError).
func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return CodeInvalidInput
	case http.StatusUnauthorized:
		return CodeUnauthorized
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusMethodNotAllowed:
		return CodeMethodNotAllowed
	case http.StatusConflict:
		return CodeConflict
	case http.StatusRequestEntityTooLarge:
		return CodePayloadTooLarge
	case http.StatusUnsupportedMediaType:
		return CodeUnsupportedMedia
	case http.StatusUnprocessableEntity:
		return CodeIdempotencyReuse
	case http.StatusTooManyRequests:
		return CodeRateLimited
	case http.StatusServiceUnavailable:
		return CodeUnavailable
	}
	if status >= 500 {
		return CodeInternal
	}
	return CodeInvalidInput
}

// newErrorHandler returns the echo HTTPErrorHandler that writes Problems. Server errors are logged
// with their details and the request id; the client sees only the generic message and the id.
func newErrorHandler(logger *slog.Logger, rules []ErrorRule) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		p := MapError(err, rules)
		ctx := c.Request().Context()
		if p.Code == CodeInternal {
			p.Message += "; request id " + RequestID(ctx)
		}
		if p.Status >= 500 {
			logger.ErrorContext(ctx, "request failed", slog.String("request_id", RequestID(ctx)),
				slog.String("method", c.Request().Method), slog.String("route", routeLabel(c)),
				slog.Int("status", p.Status), slog.String("error", err.Error()))
		}
		if p.RetryAfter > 0 {
			secs := max(1, int(p.RetryAfter.Round(time.Second)/time.Second))
			c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
		}
		if p.Status == http.StatusUnauthorized {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="tenantmem"`)
		}
		if c.Request().Method == http.MethodHead {
			err = c.NoContent(p.Status)
		} else {
			err = c.JSON(p.Status, ErrorBody{Error: p})
		}
		if err != nil {
			logger.DebugContext(ctx, "write error response", slog.String("error", err.Error()))
		}
	}
}
