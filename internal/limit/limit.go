package limit

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"runtime"
	"time"

	"github.com/tenantmem/tenantmem/internal/registry"
)

// Defaults of [Config].
const (
	// DefaultRequestsPerSecond is a tenant's sustained request rate.
	DefaultRequestsPerSecond = 500
	// DefaultBurst is how many requests a tenant may send at once above its rate.
	DefaultBurst = 1000
	// DefaultQueueWait bounds how long a tenant's request waits behind its own requests in
	// flight before 429.
	DefaultQueueWait = 2 * time.Second
	// DefaultMaxDocuments, DefaultMaxChunks and DefaultMaxContentBytes are a tenant's storage
	// quotas: 1,000,000 documents, 10,000,000 chunks and 10 GiB of document content.
	DefaultMaxDocuments    = 1_000_000
	DefaultMaxChunks       = 10_000_000
	DefaultMaxContentBytes = 10 << 30
	// DefaultAcquireWait bounds the wait for a database connection.
	DefaultAcquireWait = 3 * time.Second
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrRateLimited means a tenant sent requests faster than its rate, or has too many in flight:
	// HTTP 429. Waiting (Retry-After) fixes it.
	ErrRateLimited = errors.New("rate limited")
	// ErrBusy means no database connection (or no slot of a share of them) could be had in the
	// bounded wait: HTTP 503. The request did nothing.
	ErrBusy = errors.New("database busy")
)

// DefaultMaxConcurrent is how many requests of one tenant may be in flight at once: half the
// CPUs, at least one, so that one tenant's heavy requests (a large ingest, an expensive search)
// never keep more than half the machine busy. Its other requests wait in its own queue.
var DefaultMaxConcurrent = max(1, runtime.NumCPU()/2)

// Limits is what one tenant may use. A zero field means no limit.
type Limits struct {
	// RequestsPerSecond is the sustained request rate of a token bucket.
	RequestsPerSecond float64 `json:"requests_per_second"`
	// Burst is the bucket's size: requests that may come at once. Zero takes
	// max(1, ceil(RequestsPerSecond)).
	Burst int `json:"burst"`
	// MaxConcurrent is how many requests may be in flight at once.
	MaxConcurrent int `json:"max_concurrent"`
	// MaxDocuments, MaxChunks and MaxContentBytes are the storage quotas, checked at ingest.
	MaxDocuments    int64 `json:"max_documents"`
	MaxChunks       int64 `json:"max_chunks"`
	MaxContentBytes int64 `json:"max_content_bytes"`
}

// With returns l with a tenant's overrides applied: each field set in o replaces l's.
func (l Limits) With(o registry.TenantLimits) Limits {
	if o.RequestsPerSecond != nil {
		l.RequestsPerSecond = *o.RequestsPerSecond
		if o.Burst == nil {
			l.Burst = 0 // derive it from the tenant's own rate
		}
	}
	if o.Burst != nil {
		l.Burst = *o.Burst
	}
	if o.MaxConcurrent != nil {
		l.MaxConcurrent = *o.MaxConcurrent
	}
	if o.MaxDocuments != nil {
		l.MaxDocuments = *o.MaxDocuments
	}
	if o.MaxChunks != nil {
		l.MaxChunks = *o.MaxChunks
	}
	if o.MaxContentBytes != nil {
		l.MaxContentBytes = *o.MaxContentBytes
	}
	return l
}

// burst is the effective bucket size.
func (l Limits) burst() int {
	if l.Burst > 0 {
		return l.Burst
	}
	return max(1, int(math.Ceil(l.RequestsPerSecond)))
}

// Validate reports a negative or non-finite field.
func (l Limits) Validate() error {
	switch {
	case math.IsNaN(l.RequestsPerSecond) || math.IsInf(l.RequestsPerSecond, 0) || l.RequestsPerSecond < 0:
		return fmt.Errorf("limit: requests per second must be a finite number >= 0, got %v", l.RequestsPerSecond)
	case l.Burst < 0, l.MaxConcurrent < 0, l.MaxDocuments < 0, l.MaxChunks < 0, l.MaxContentBytes < 0:
		return errors.New("limit: limits must not be negative (0 means no limit)")
	}
	return nil
}

// Config holds the deployment's default [Limits] and the bounded wait for a connection.
type Config struct {
	// Defaults apply to every tenant without an override. A zero Limits value takes the Default*
	// constants; to turn a limit off for everyone, set it to [Unlimited] (-1).
	Defaults Limits
	// AcquireWait bounds the wait for a database connection. Default [DefaultAcquireWait].
	AcquireWait time.Duration
	// QueueWait bounds the wait of a tenant's request behind its own requests in flight.
	// Default [DefaultQueueWait].
	QueueWait time.Duration
}

// Unlimited, in a field of Config.Defaults, turns that limit off (a zero field takes the default).
const Unlimited = -1

// WithDefaults returns c with zero fields set to their defaults and Unlimited fields set to 0
// (no limit).
func (c Config) WithDefaults() Config {
	d := &c.Defaults
	d.RequestsPerSecond = orUnlimited(d.RequestsPerSecond, DefaultRequestsPerSecond)
	d.Burst = orUnlimited(d.Burst, DefaultBurst)
	d.MaxConcurrent = orUnlimited(d.MaxConcurrent, DefaultMaxConcurrent)
	d.MaxDocuments = orUnlimited(d.MaxDocuments, DefaultMaxDocuments)
	d.MaxChunks = orUnlimited(d.MaxChunks, DefaultMaxChunks)
	d.MaxContentBytes = orUnlimited(d.MaxContentBytes, DefaultMaxContentBytes)
	c.AcquireWait = cmp.Or(c.AcquireWait, DefaultAcquireWait)
	c.QueueWait = cmp.Or(c.QueueWait, DefaultQueueWait)
	return c
}

func orUnlimited[T int | int64 | float64](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// Validate reports an unusable configuration (after WithDefaults).
func (c Config) Validate() error {
	if c.AcquireWait < 0 || c.QueueWait < 0 {
		return fmt.Errorf("limit: waits must not be negative, got %s and %s", c.AcquireWait, c.QueueWait)
	}
	return c.Defaults.Validate()
}

// RateLimitError is a refused request of a tenant (HTTP 429). It wraps [ErrRateLimited].
type RateLimitError struct {
	// Reason says which limit: "rate" or "concurrency".
	Reason string
	// Limit is the limit's value (requests per second, or requests in flight).
	Limit float64
	// Wait is when the request would be admitted.
	Wait time.Duration
}

func (e *RateLimitError) Error() string {
	if e.Reason == ReasonConcurrency {
		return fmt.Sprintf("too many requests in flight for this tenant (at most %v at once, the others wait in its queue); retry later", e.Limit)
	}
	return fmt.Sprintf("request rate of this tenant exceeded (%v per second); retry later", e.Limit)
}

// Unwrap returns ErrRateLimited.
func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// RetryAfter is when to retry, at least one second.
func (e *RateLimitError) RetryAfter() time.Duration { return max(time.Second, e.Wait) }

// Reasons of a [RateLimitError].
const (
	ReasonRate        = "rate"
	ReasonConcurrency = "concurrency"
)

// BusyError is a connection that could not be had in time (HTTP 503). It wraps [ErrBusy].
type BusyError struct {
	// What was waited for: a gate's name or "database connection".
	What string
	// Waited is how long.
	Waited time.Duration
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("no %s free after %s", e.What, e.Waited.Round(time.Millisecond))
}

// Unwrap returns ErrBusy.
func (e *BusyError) Unwrap() error { return ErrBusy }

// RetryAfter is one second: connections free up quickly, and a request holds one briefly.
func (e *BusyError) RetryAfter() time.Duration { return time.Second }
