package memory

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors. Match them with errors.Is; the HTTP layer maps each to one status.
var (
	// ErrNotFound means the document does not exist for this tenant. Another tenant's document id
	// gives exactly this error too, so a caller cannot tell the two apart.
	ErrNotFound = errors.New("not found")
	// ErrInvalid is wrapped by every [*ValidationError].
	ErrInvalid = errors.New("invalid input")
	// ErrTooLarge is also wrapped by a [*ValidationError] whose value exceeds a size limit
	// (content, metadata, query text): HTTP 413 rather than 400.
	ErrTooLarge = errors.New("input too large")
	// ErrEmbeddingUnavailable means a vector search needed a query embedding and the provider
	// failed. The error also wraps the provider's error (see embed.IsTransient).
	ErrEmbeddingUnavailable = errors.New("embedding provider unavailable")
	// ErrTimeout means a statement ran longer than the scope's StatementTimeout.
	ErrTimeout = errors.New("statement timeout")
	// ErrFenced means a scope's Fence check failed: the tenant was suspended, deleted or
	// replaced after the caller resolved it. Nothing was done; resolving it again tells what
	// changed.
	ErrFenced = errors.New("the tenant changed while the request was being served")
	// ErrWritesPaused means the tenant's writes are paused for the last instant of a move to
	// another tier or placement (SQLSTATE TM503, raised by the change capture trigger): nothing
	// was written; retry in a moment. Reads are not paused.
	ErrWritesPaused = errors.New("writes of the tenant are paused while it is moved")
	// ErrQuotaExceeded is wrapped by every [*QuotaError].
	ErrQuotaExceeded = errors.New("quota exceeded")
	// ErrIdempotencyKeyReused means an idempotency key came back with another request than the
	// one it was first used with. Nothing was done.
	ErrIdempotencyKeyReused = errors.New("idempotency key reused with a different request")
)

// sqlstateWritesPaused is the SQLSTATE of a write refused while its tenant is moved
// (migrations/tenant 00009).
const sqlstateWritesPaused = "TM503"

// QuotaError refuses a write that would take the tenant over one of its storage quotas
// ([Scope].Quota). Nothing was written. It wraps [ErrQuotaExceeded].
type QuotaError struct {
	// Field names the quota: "documents", "chunks" or "content_bytes".
	Field string
	// Limit is the quota; Stored is what the tenant holds; Adding is what the write would add.
	Limit, Stored, Adding int64
}

// Error says which quota and by how much.
func (e *QuotaError) Error() string {
	return fmt.Sprintf("%s: the tenant's quota of %d would be exceeded (%d stored, this write adds %d); "+
		"delete documents or ask the operator to raise the quota", e.Field, e.Limit, e.Stored, e.Adding)
}

// Unwrap returns ErrQuotaExceeded.
func (e *QuotaError) Unwrap() error { return ErrQuotaExceeded }

// ValidationError is invalid input, naming the field (the snake_case name of the HTTP
// contract, e.g. "document_type" or "metadata_filter"). Nothing was written when it is returned.
// It wraps [ErrInvalid], and [ErrTooLarge] when a size limit was exceeded.
type ValidationError struct {
	// Field is the offending input.
	Field string
	// Message says what is wrong, without repeating the field name.
	Message string
	// TooLarge is set when the value exceeds a size limit.
	TooLarge bool
}

// Error returns "<field>: <message>".
func (e *ValidationError) Error() string { return e.Field + ": " + e.Message }

// Unwrap returns ErrInvalid, and ErrTooLarge when TooLarge is set.
func (e *ValidationError) Unwrap() []error {
	if e.TooLarge {
		return []error{ErrInvalid, ErrTooLarge}
	}
	return []error{ErrInvalid}
}

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

func tooLarge(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...), TooLarge: true}
}

// interpretError translates database errors into domain errors at one seam. It keeps the
// original error in the chain.
func interpretError(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err // the caller stopped; 57014 is then the cancel request, not a timeout
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.QueryCanceled {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	if errors.As(err, &pgErr) && pgErr.Code == sqlstateWritesPaused {
		return fmt.Errorf("%w: %w", ErrWritesPaused, err)
	}
	return err
}
