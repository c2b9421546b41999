package embed

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestOpenAICircuitBreakerFailsFastWhileTheServerIsDown: a server that is down costs the first
// call a few attempts, after which the breaker opens and every call fails at once, without a
// request, with a transient error (so ingest queues its chunks at once: it used to retry each
// call 6 times, 9 to 15 s with the default backoff). After the cooldown one call probes the
// server; once that succeeds, calls go through again.
func TestOpenAICircuitBreakerFailsFastWhileTheServerIsDown(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	down.Store(true)
	f := newFakeServer(t, 4, func(_ int, w http.ResponseWriter, _ *http.Request, _ fakeRequest) bool {
		if down.Load() {
			http.Error(w, "upstream down", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	// The fail-fast checks below must all run within one cooldown of the breaker opening.
	p := newTestOpenAI(t, f, OpenAIConfig{Breaker: BreakerConfig{Cooldown: 2 * time.Second}})
	ctx := context.Background()

	_, err := p.Embed(ctx, texts(3))
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorContains(t, err, "the circuit breaker opened")
	require.Len(t, f.requests(), DefaultBreakerFailures, "the first call stops retrying once the breaker opens")
	require.Positive(t, p.OpenFor())

	for range 5 {
		_, err := p.Embed(ctx, texts(3))
		require.ErrorIs(t, err, ErrCircuitOpen)
		require.True(t, IsTransient(err), "an open breaker is a transient failure")
		require.Positive(t, RetryAfterOf(err))
	}
	require.Len(t, f.requests(), DefaultBreakerFailures, "no request while the breaker is open")

	// Still down at the first probe: one request, open again.
	require.Eventually(t, func() bool { return p.OpenFor() == 0 }, 5*time.Second, 10*time.Millisecond)
	_, err = p.Embed(ctx, texts(3))
	require.ErrorIs(t, err, ErrUnavailable)
	require.Len(t, f.requests(), DefaultBreakerFailures+1, "the probe is one request, not retried")
	require.Positive(t, p.OpenFor())

	// Back up: the next probe closes the breaker.
	down.Store(false)
	require.Eventually(t, func() bool { return p.OpenFor() == 0 }, 5*time.Second, 10*time.Millisecond)
	vs, err := p.Embed(ctx, texts(3))
	require.NoError(t, err)
	requireTexts(t, vs, 4)
	require.Equal(t, "closed", p.breaker.State())
	_, err = p.Embed(ctx, texts(3))
	require.NoError(t, err)
}

// TestBreakerCountsOnlyTransientFailures: permanent errors (the server answered) and the caller's
// cancellation never open the breaker; transient failures in a row do, and a success between them
// starts the count again.
func TestBreakerCountsOnlyTransientFailures(t *testing.T) {
	t.Parallel()
	b, err := NewBreaker(BreakerConfig{Failures: 2, Cooldown: time.Hour})
	require.NoError(t, err)
	transient := &APIError{StatusCode: http.StatusBadGateway}
	for _, tc := range []struct {
		given  error
		expect string // state after the call
	}{
		{&APIError{StatusCode: http.StatusBadRequest}, "closed"},
		{context.Canceled, "closed"},
		{transient, "closed"},
		{nil, "closed"}, // resets the count
		{transient, "closed"},
		{context.DeadlineExceeded, "closed"}, // neither
		{transient, "open"},
	} {
		got := b.Do(func() error { return tc.given })
		require.ErrorIs(t, got, tc.given)
		require.Equal(t, tc.expect, b.State(), "after %v", tc.given)
	}
	called := false
	err = b.Do(func() error { called = true; return nil })
	require.False(t, called)
	var openErr *CircuitOpenError
	require.ErrorAs(t, err, &openErr)
	require.InDelta(t, time.Hour.Seconds(), openErr.RetryAfter.Seconds(), 5)
	require.True(t, errors.Is(err, ErrUnavailable) && errors.Is(err, ErrCircuitOpen))

	never, err := NewBreaker(BreakerConfig{Failures: -1})
	require.NoError(t, err)
	for range 10 {
		require.ErrorIs(t, never.Do(func() error { return transient }), transient)
	}
	require.Equal(t, "closed", never.State())
	_, err = NewBreaker(BreakerConfig{Cooldown: -time.Second})
	require.ErrorContains(t, err, "Cooldown")
}

// TestBreakerLetsOneProbeThrough: while the probe after the cooldown is in flight, other calls
// still fail fast.
func TestBreakerLetsOneProbeThrough(t *testing.T) {
	t.Parallel()
	b, err := NewBreaker(BreakerConfig{Failures: 1, Cooldown: 50 * time.Millisecond})
	require.NoError(t, err)
	require.Error(t, b.Do(func() error { return ErrUnavailable }))
	require.Eventually(t, func() bool { return b.OpenFor() == 0 }, 5*time.Second, 5*time.Millisecond)
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- b.Do(func() error {
			close(started)
			<-release
			return nil
		})
	}()
	<-started
	require.Equal(t, "half-open", b.State())
	require.ErrorIs(t, b.Do(func() error { t.Error("a second call went through during the probe"); return nil }), ErrCircuitOpen)
	close(release)
	require.NoError(t, <-done)
	require.Equal(t, "closed", b.State())
}
