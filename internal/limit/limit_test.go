package limit

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/registry"
)

func ptr[T any](v T) *T { return &v }

func TestLimitsWithOverrides(t *testing.T) {
	t.Parallel()
	def := Config{}.WithDefaults().Defaults
	for _, tc := range []struct {
		given  string
		when   registry.TenantLimits
		expect Limits
	}{
		{"no override", registry.TenantLimits{}, def},
		{"a rate of its own derives its burst", registry.TenantLimits{RequestsPerSecond: ptr(2.5)},
			Limits{RequestsPerSecond: 2.5, MaxConcurrent: def.MaxConcurrent, MaxDocuments: def.MaxDocuments,
				MaxChunks: def.MaxChunks, MaxContentBytes: def.MaxContentBytes}},
		{"zero means no limit", registry.TenantLimits{MaxConcurrent: ptr(0), MaxDocuments: ptr[int64](0)},
			Limits{RequestsPerSecond: def.RequestsPerSecond, Burst: def.Burst, MaxChunks: def.MaxChunks,
				MaxContentBytes: def.MaxContentBytes}},
	} {
		t.Run(tc.given, func(t *testing.T) {
			require.Equal(t, tc.expect, def.With(tc.when))
		})
	}
	require.Equal(t, 3, Limits{RequestsPerSecond: 2.5}.burst())
	require.Equal(t, Limits{}, Config{Defaults: Limits{RequestsPerSecond: Unlimited, Burst: Unlimited,
		MaxConcurrent: Unlimited, MaxDocuments: Unlimited, MaxChunks: Unlimited, MaxContentBytes: Unlimited}}.WithDefaults().Defaults)
	require.Error(t, Limits{RequestsPerSecond: -1}.Validate())
	require.Error(t, Limits{MaxChunks: -1}.Validate())
}

// clock is a manual clock for the Limiter.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func TestLimiterRate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := &clock{now: time.Unix(1000, 0)}
	l := NewLimiter(LimiterConfig{AloneMaxConcurrent: 1}) // strict caps: no borrowing
	l.now = c.Now
	lim := Limits{RequestsPerSecond: 2, Burst: 3}
	for i := range 3 {
		release, err := l.Admit(ctx, "a", lim, 0)
		require.NoError(t, err, "request %d is within the burst", i)
		release()
	}
	_, err := l.Admit(ctx, "a", lim, 0)
	var rle *RateLimitError
	require.ErrorAs(t, err, &rle)
	require.ErrorIs(t, err, ErrRateLimited)
	require.Equal(t, ReasonRate, rle.Reason)
	require.Equal(t, 500*time.Millisecond, rle.Wait, "one token comes back every half second")
	require.Equal(t, time.Second, rle.RetryAfter(), "at least a second")

	// Another tenant has its own bucket.
	release, err := l.Admit(ctx, "b", lim, 0)
	require.NoError(t, err)
	release()

	// A refused request cost nothing: after half a second exactly one more is admitted.
	c.now = c.now.Add(500 * time.Millisecond)
	release, err = l.Admit(ctx, "a", lim, 0)
	require.NoError(t, err)
	release()
	_, err = l.Admit(ctx, "a", lim, 0)
	require.ErrorIs(t, err, ErrRateLimited)

	// An override that lifts the limit applies at once.
	release, err = l.Admit(ctx, "a", Limits{}, 0)
	require.NoError(t, err)
	release()
}

func TestLimiterConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := NewLimiter(LimiterConfig{AloneMaxConcurrent: 1}) // strict caps: no borrowing
	lim := Limits{MaxConcurrent: 2}
	r1, err := l.Admit(ctx, "a", lim, 0)
	require.NoError(t, err)
	r2, err := l.Admit(ctx, "a", lim, 0)
	require.NoError(t, err)
	_, err = l.Admit(ctx, "a", lim, 0)
	var rle *RateLimitError
	require.ErrorAs(t, err, &rle)
	require.Equal(t, ReasonConcurrency, rle.Reason)
	require.Equal(t, 2, l.InFlight("a"))
	r3, err := l.Admit(ctx, "b", lim, 0)
	require.NoError(t, err, "another tenant is not affected")
	r3()
	r1()
	r1() // a second release is a no-op
	require.Equal(t, 1, l.InFlight("a"))
	r4, err := l.Admit(ctx, "a", lim, 0)
	require.NoError(t, err)
	r4()
	r2()
	require.Zero(t, l.InFlight("a"))
}

func TestLimiterForgetsIdleTenants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := &clock{now: time.Unix(1000, 0)}
	l := NewLimiter(LimiterConfig{AloneMaxConcurrent: 1}) // strict caps: no borrowing
	l.now = c.Now
	for _, id := range []string{"a", "b"} {
		release, err := l.Admit(ctx, id, Limits{RequestsPerSecond: 10}, 0)
		require.NoError(t, err)
		if id == "a" {
			release()
		}
	}
	c.now = c.now.Add(2 * idleAfter)
	release, err := l.Admit(ctx, "c", Limits{}, 0)
	require.NoError(t, err)
	release()
	l.mu.Lock()
	_, hasA := l.tenants["a"]
	_, hasB := l.tenants["b"]
	l.mu.Unlock()
	require.False(t, hasA, "idle with a full bucket: forgotten")
	require.True(t, hasB, "a request in flight keeps its state")
}

// TestLimiterQueuesATenantsExcess: over its cap, a tenant's requests wait in its own queue, first
// come first served, for a bounded time; a release hands the slot to the oldest waiter.
func TestLimiterQueuesATenantsExcess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := NewLimiter(LimiterConfig{AloneMaxConcurrent: 1}) // strict caps: no borrowing
	lim := Limits{MaxConcurrent: 1}
	first, err := l.Admit(ctx, "a", lim, 0)
	require.NoError(t, err)
	got := make(chan int, 2)
	var waiters sync.WaitGroup
	for i := range 2 {
		waiters.Go(func() {
			release, err := l.Admit(ctx, "a", lim, time.Minute)
			if err != nil {
				t.Error(err)
				return
			}
			got <- i
			release()
		})
		// The second waiter queues after the first.
		for {
			l.mu.Lock()
			n := len(l.tenants["a"].waiters)
			l.mu.Unlock()
			if n == i+1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	_, err = l.Admit(ctx, "a", lim, 10*time.Millisecond)
	require.ErrorIs(t, err, ErrRateLimited, "a bounded wait ends in 429")
	other, err := l.Admit(ctx, "b", lim, 0)
	require.NoError(t, err, "another tenant does not queue behind it")
	other()
	first()
	require.Equal(t, 0, <-got)
	require.Equal(t, 1, <-got)
	waiters.Wait() // a waiter reports before it releases: its slot is free only once it returned
	cctx, cancel := context.WithCancel(ctx)
	hold, err := l.Admit(ctx, "a", lim, 0)
	require.NoError(t, err)
	cancel()
	_, err = l.Admit(cctx, "a", lim, time.Minute)
	require.ErrorIs(t, err, context.Canceled)
	hold()
	require.Zero(t, l.InFlight("a"))
}

// TestLimiterLendsIdleCapacity: a tenant alone on the router may run up to AloneMaxConcurrent
// requests; once another tenant is active (in flight, queued, or seen within the quiet window),
// new requests are held to MaxConcurrent again, and the other tenant is admitted at once.
func TestLimiterLendsIdleCapacity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := &clock{now: time.Unix(1000, 0)}
	l := NewLimiter(LimiterConfig{AloneMaxConcurrent: 3, QuietWindow: time.Second})
	l.now = c.Now
	lim := Limits{MaxConcurrent: 1}
	var releases []func()
	for i := range 3 {
		r, err := l.Admit(ctx, "big", lim, 0)
		require.NoError(t, err, "request %d: alone, the tenant borrows idle capacity", i)
		releases = append(releases, r)
	}
	_, err := l.Admit(ctx, "big", lim, 0)
	require.ErrorIs(t, err, ErrRateLimited, "AloneMaxConcurrent is the ceiling")

	small, err := l.Admit(ctx, "small", lim, 0)
	require.NoError(t, err, "another tenant is never held back by the borrower")
	small()
	for _, r := range releases {
		r()
	}
	// "small" was active a moment ago: "big" is back to its fair share.
	r1, err := l.Admit(ctx, "big", lim, 0)
	require.NoError(t, err)
	_, err = l.Admit(ctx, "big", lim, 0)
	require.ErrorIs(t, err, ErrRateLimited, "not alone: MaxConcurrent applies")
	r1()

	// After the quiet window, "big" is alone again.
	c.now = c.now.Add(2 * time.Second)
	r1, err = l.Admit(ctx, "big", lim, 0)
	require.NoError(t, err)
	r2, err := l.Admit(ctx, "big", lim, 0)
	require.NoError(t, err, "alone again after the quiet window")

	// A queued request of another tenant also counts as activity.
	c.now = c.now.Add(2 * time.Second)
	hold, err := l.Admit(ctx, "small", Limits{MaxConcurrent: 1}, 0)
	require.NoError(t, err)
	c.now = c.now.Add(2 * time.Second)
	waited := make(chan error, 1)
	go func() {
		r, err := l.Admit(ctx, "small", Limits{MaxConcurrent: 1}, time.Minute)
		if err == nil {
			r()
		}
		waited <- err
	}()
	for {
		l.mu.Lock()
		n := l.waiting
		l.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	_, err = l.Admit(ctx, "big", lim, 0)
	require.ErrorIs(t, err, ErrRateLimited, "another tenant in flight and queued: no borrowing")
	hold()
	require.NoError(t, <-waited)
	r1()
	r2()
	require.Zero(t, l.InFlight("big"))
	l.mu.Lock()
	require.Zero(t, l.inflight)
	require.Zero(t, l.waiting)
	l.mu.Unlock()
}

func TestBulkWorkYieldsToOtherTenants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := NewLimiter(LimiterConfig{})
	lim := Limits{}
	const long = time.Minute // a wait that would fail the test by its timeout

	ingest, err := l.AdmitRequest(ctx, "neighbour", lim, 0)
	require.NoError(t, err)
	defer ingest.Release()

	// Alone, bulk work never waits, whatever the bound.
	require.NoError(t, ingest.Yield(ctx, long))

	// The tenant's own interactive requests do not hold its bulk work back either.
	own, err := l.AdmitRequest(ctx, "neighbour", lim, 0)
	require.NoError(t, err)
	require.NoError(t, ingest.Yield(ctx, long))
	own.Release()

	// Another tenant's bulk work does not hold it back: two ingests never wait for each other.
	other, err := l.AdmitRequest(ctx, "other", lim, 0)
	require.NoError(t, err)
	require.NoError(t, other.Yield(ctx, long))
	require.NoError(t, ingest.Yield(ctx, long))
	other.Release()

	// Another tenant's search in flight: the next batch waits until it ends (the batch before
	// it was long: the wait is not bounded by it here).
	search, err := l.AdmitRequest(ctx, "victim", lim, 0)
	require.NoError(t, err)
	longBatch := func() { ingest.lastYield = time.Now().Add(-time.Hour) }
	longBatch()
	require.Zero(t, l.YieldStats().Waits, "nothing has waited yet")
	yielded := make(chan error, 1)
	go func() { yielded <- ingest.Yield(ctx, long) }()
	// The hold is timed from when the yield is known to wait (it counts itself after taking its
	// start time), not from when its goroutine was started: the goroutine may start late.
	waitingSince := waitUntilYielding(t, l, yielded)
	select {
	case err := <-yielded:
		t.Fatalf("the batch went on beside another tenant's search (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	held := time.Since(waitingSince)
	search.Release()
	require.NoError(t, <-yielded)
	require.Equal(t, int64(1), l.YieldStats().Waits)
	require.GreaterOrEqual(t, l.YieldStats().Waited, held, "the wait counted covers the time the search held the batch")

	// The wait is bounded: a tenant whose searches never stop delays each batch by max at most.
	search, err = l.AdmitRequest(ctx, "victim", lim, 0)
	require.NoError(t, err)
	longBatch()
	start := time.Now()
	require.NoError(t, ingest.Yield(ctx, 20*time.Millisecond))
	require.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)
	// ... and by the batch before it: bulk work waits at most as long as it worked.
	ingest.lastYield = time.Now().Add(-5 * time.Millisecond)
	start = time.Now()
	require.NoError(t, ingest.Yield(ctx, long))
	waited := time.Since(start)
	require.GreaterOrEqual(t, waited, 5*time.Millisecond)
	require.Less(t, waited, long)

	// A request that ends while it yields stops waiting with its context's error.
	cctx, cancel := context.WithCancel(ctx)
	longBatch()
	go func() { yielded <- ingest.Yield(cctx, long) }()
	cancel()
	require.ErrorIs(t, <-yielded, context.Canceled)
	search.Release()

	// A released bulk request no longer counts: the victim's bulk work does not wait for it.
	ingest.Release()
	ingest.Release() // a second release changes nothing
	vbulk, err := l.AdmitRequest(ctx, "victim", lim, 0)
	require.NoError(t, err)
	require.NoError(t, vbulk.Yield(ctx, long))
	vbulk.Release()
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Zero(t, l.inflight)
	require.Zero(t, l.bulk)
	require.Zero(t, l.yielders)
}

// TestBulkYieldBounds: the first wait of a request is bounded by the work since its admission
// (not only by max), a Yield after the request's Release counts for nothing and leaves no count
// behind (a tenant alone then still never waits), and the counters are zero after many requests
// with cancelled yields and double releases (run with -race).
func TestBulkYieldBounds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := NewLimiter(LimiterConfig{})

	search, err := l.AdmitRequest(ctx, "slow-search", Limits{}, 0)
	require.NoError(t, err)
	ingest, err := l.AdmitRequest(ctx, "ingest", Limits{}, 0)
	require.NoError(t, err)
	time.Sleep(5 * time.Millisecond) // the first batch: 5 ms of work since the admission
	first := make(chan error, 1)
	go func() { first <- ingest.Yield(ctx, time.Minute) }()
	select {
	case err := <-first:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the first wait is not bounded by the work before it")
	}
	ingest.Release()
	search.Release()

	late, err := l.AdmitRequest(ctx, "a", Limits{}, 0)
	require.NoError(t, err)
	late.Release()
	require.NoError(t, late.Yield(ctx, time.Minute))
	l.mu.Lock()
	require.Zero(t, l.bulk, "a yield after the release counts for nothing")
	l.mu.Unlock()
	alone, err := l.AdmitRequest(ctx, "b", Limits{}, 0)
	require.NoError(t, err)
	alone.lastYield = time.Now().Add(-time.Hour)
	done := make(chan error, 1)
	go func() { done <- alone.Yield(ctx, time.Minute) }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("a tenant alone waited")
	}
	alone.Release()

	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			a, err := l.AdmitRequest(ctx, []string{"x", "y", "z"}[i%3], Limits{}, 0)
			if err != nil {
				return
			}
			defer a.Release()
			defer a.Release()
			if i%2 == 0 {
				cctx, cancel := context.WithTimeout(ctx, time.Duration(i%5)*time.Millisecond)
				defer cancel()
				for range 5 {
					_ = a.Yield(cctx, 20*time.Millisecond)
				}
			} else {
				time.Sleep(3 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Zero(t, l.inflight)
	require.Zero(t, l.bulk)
	require.Zero(t, l.yielders)
	require.Zero(t, l.waiting)
}

// waitUntilYielding returns once a Yield of l has begun to wait (YieldStats counts it), failing
// the test if the Yield returns first, and the time it saw the wait begin.
func waitUntilYielding(t *testing.T, l *Limiter, yielded <-chan error) time.Time {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for l.YieldStats().Waits == 0 {
		select {
		case err := <-yielded:
			t.Fatalf("the batch went on beside another tenant's search (err %v)", err)
		case <-deadline:
			t.Fatal("the yield never began to wait")
		case <-time.After(time.Millisecond):
		}
	}
	return time.Now()
}
