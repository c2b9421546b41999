package embed

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Defaults of [BreakerConfig].
const (
	// DefaultBreakerFailures is how many transient failures in a row open the breaker.
	DefaultBreakerFailures = 3
	// DefaultBreakerCooldown is how long an open breaker fails calls fast before it lets one probe
	// through.
	DefaultBreakerCooldown = 10 * time.Second
)

// ErrCircuitOpen means calls to the provider fail fast, without reaching it, because its recent
// calls failed (see [Breaker]). Errors that wrap it also wrap [ErrUnavailable], so they are
// transient: ingest queues the chunks, a vector search answers 503.
var ErrCircuitOpen = errors.New("embed: circuit breaker open")

// CircuitOpenError is what a call gets, at once, while the provider's breaker is open.
type CircuitOpenError struct {
	// RetryAfter is how long the breaker stays open (at least a second: while a probe is in
	// flight, its outcome is not known yet).
	RetryAfter time.Duration
}

// Error says the provider is failing fast and when it is probed again.
func (e *CircuitOpenError) Error() string {
	return fmt.Sprintf("embed: provider unavailable: its recent calls failed, so calls fail fast for %s (circuit breaker open)",
		e.RetryAfter.Round(time.Millisecond))
}

// Unwrap returns ErrUnavailable and ErrCircuitOpen.
func (e *CircuitOpenError) Unwrap() []error { return []error{ErrUnavailable, ErrCircuitOpen} }

// RetryAfterOf is the pause an error of a provider asks for: an [*APIError]'s RetryAfter or a
// [*CircuitOpenError]'s; zero otherwise.
func RetryAfterOf(err error) time.Duration {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.RetryAfter
	}
	var openErr *CircuitOpenError
	if errors.As(err, &openErr) {
		return openErr.RetryAfter
	}
	return 0
}

// Gate is implemented by providers that stop calling their server after repeated failures
// ([OpenAI]): a queue worker asks it before taking work, rather than claiming jobs only to fail them.
type Gate interface {
	// OpenFor is how long calls will still fail fast without reaching the server; zero when they
	// go through (the breaker is closed, or lets a probe through).
	OpenFor() time.Duration
}

// BreakerConfig configures a [Breaker]. Zero values mean the documented default.
type BreakerConfig struct {
	// Failures is how many transient failures in a row (see [IsTransient]) open the breaker.
	// Default 3; a negative value never opens it.
	Failures int
	// Cooldown is how long the breaker stays open; then one call goes through as a probe: its
	// success closes the breaker, its failure opens it again. Default 10s.
	Cooldown time.Duration
	// Name identifies the breaker in logs. Default "embedding provider".
	Name string
	// Logger receives one line per state change. Default: discard.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with unset fields replaced by their defaults.
func (c BreakerConfig) WithDefaults() BreakerConfig {
	c.Failures = cmp.Or(c.Failures, DefaultBreakerFailures)
	c.Cooldown = cmp.Or(c.Cooldown, DefaultBreakerCooldown)
	c.Name = cmp.Or(c.Name, "embedding provider")
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c BreakerConfig) validate() error {
	if c.Cooldown < 0 {
		return fmt.Errorf("embed: breaker Cooldown must be positive, got %s", c.Cooldown)
	}
	return nil
}

// Breaker is a circuit breaker (sony/gobreaker) in front of a provider's server. While closed,
// calls go through; Failures transient failures in a row open it, and then calls fail at once with
// a [*CircuitOpenError] for Cooldown, so that ingest queues its chunks at once instead of waiting
// on retries of a server that is down; then one probe call goes through (the others still fail
// fast), and its outcome closes or reopens the breaker. Permanent errors (the server answered) and
// the caller's own cancellation do not count as failures. A Breaker is safe for concurrent use.
type Breaker struct {
	cfg      BreakerConfig
	cb       *gobreaker.CircuitBreaker[struct{}]
	openedAt atomic.Int64 // UnixNano of the last opening; 0 while not open
}

// NewBreaker returns a closed breaker.
func NewBreaker(cfg BreakerConfig) (*Breaker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Breaker{cfg: cfg}
	b.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        cfg.Name,
		MaxRequests: 1,
		Timeout:     cfg.Cooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return cfg.Failures > 0 && c.ConsecutiveFailures >= uint32(cfg.Failures)
		},
		IsSuccessful: func(err error) bool { return err == nil || !IsTransient(err) },
		IsExcluded: func(err error) bool {
			return !IsTransient(err) && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				b.openedAt.Store(time.Now().UnixNano())
			} else {
				b.openedAt.Store(0)
			}
			level := slog.LevelInfo
			if to == gobreaker.StateOpen {
				level = slog.LevelWarn
			}
			cfg.Logger.Log(context.Background(), level, "embed: circuit breaker "+to.String(),
				slog.String("breaker", name), slog.String("from", from.String()))
		},
	})
	return b, nil
}

// Do runs call through the breaker: at once a [*CircuitOpenError] while it is open (or while its
// probe is in flight), else call's own result.
func (b *Breaker) Do(call func() error) error {
	_, err := b.cb.Execute(func() (struct{}, error) { return struct{}{}, call() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return &CircuitOpenError{RetryAfter: max(b.OpenFor(), time.Second)}
	}
	return err
}

// OpenFor is how long calls will still fail fast; zero when the breaker is closed or half open.
func (b *Breaker) OpenFor() time.Duration {
	at := b.openedAt.Load()
	if at == 0 || b.cb.State() != gobreaker.StateOpen {
		return 0
	}
	return max(time.Until(time.Unix(0, at).Add(b.cfg.Cooldown)), 0)
}

// State is "closed", "half-open" or "open".
func (b *Breaker) State() string { return b.cb.State().String() }
