package limit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// idleAfter is how long a tenant's state is kept after its last request; a sweep forgets it
// then (a full bucket and nothing in flight equal a fresh state).
const idleAfter = time.Minute

// DefaultQuietWindow is how long after another tenant's last request a tenant counts as not
// alone (see [LimiterConfig.AloneMaxConcurrent]).
const DefaultQuietWindow = time.Second

// DefaultAloneMaxConcurrent is how many requests a tenant may have in flight while no other
// tenant is active (see [LimiterConfig.AloneMaxConcurrent]).
const DefaultAloneMaxConcurrent = 8

// LimiterConfig configures a [Limiter]. Zero values mean the documented default.
type LimiterConfig struct {
	// AloneMaxConcurrent makes the in-flight cap work-conserving: while no other tenant has a
	// request in flight or queued, or sent one in the last QuietWindow, a tenant may run up to
	// max(its MaxConcurrent, AloneMaxConcurrent) requests at once, so one busy tenant on an
	// otherwise idle router is not held to its fair share of a contended one. As soon as another
	// tenant shows up, new requests are held to MaxConcurrent again (requests already running
	// finish). Default [DefaultAloneMaxConcurrent]; a value at or below MaxConcurrent (e.g. 1)
	// turns borrowing off.
	AloneMaxConcurrent int
	// QuietWindow is how recent another tenant's request must be for a tenant not to count as
	// alone. Default [DefaultQuietWindow].
	QuietWindow time.Duration
}

// Limiter admits the requests of many tenants, each against its own [Limits]: a token bucket for
// the request rate and a count of requests in flight. Memory is bounded by the tenants active in
// the last minute.
type Limiter struct {
	now func() time.Time
	cfg LimiterConfig

	mu        sync.Mutex
	tenants   map[string]*tenantState
	lastSweep time.Time
	// inflight and waiting count every tenant's admitted and queued requests; recent holds the
	// last two distinct tenants that sent a request and when, so "has any other tenant been
	// active lately" is answered without visiting every tenant.
	inflight, waiting int
	recent            [2]activity
	// bulk counts the admitted requests marked as bulk work by [Admission.Yield]; the others in
	// flight are interactive. yielders counts the Yield calls waiting, and released is closed
	// (and replaced) when an interactive request ends while any wait.
	bulk, yielders int
	released       chan struct{}
	// yieldWaits and yieldWaited count the yields that waited for another tenant, and how long.
	yieldWaits, yieldWaited atomic.Int64
}

// YieldStats are a Limiter's counts of bulk work that yielded to other tenants.
type YieldStats struct {
	// Waits is how many batches of bulk work waited for another tenant's requests.
	Waits int64
	// Waited is how long they waited in all.
	Waited time.Duration
}

// YieldStats returns the counts since the Limiter was made.
func (l *Limiter) YieldStats() YieldStats {
	return YieldStats{Waits: l.yieldWaits.Load(), Waited: time.Duration(l.yieldWaited.Load())}
}

type activity struct {
	tenantID string
	at       time.Time
}

type tenantState struct {
	id       string
	bucket   *rate.Limiter
	limits   Limits
	inflight int
	// bulk counts the tenant's admitted requests marked as bulk work.
	bulk int
	// waiters are the requests queued for a slot, oldest first; a release hands its slot to the
	// first one by closing its channel.
	waiters  []chan struct{}
	lastUsed time.Time
}

// NewLimiter returns an empty Limiter.
func NewLimiter(cfg LimiterConfig) *Limiter {
	if cfg.AloneMaxConcurrent == 0 {
		cfg.AloneMaxConcurrent = DefaultAloneMaxConcurrent
	}
	if cfg.QuietWindow <= 0 {
		cfg.QuietWindow = DefaultQuietWindow
	}
	return &Limiter{now: time.Now, cfg: cfg, tenants: map[string]*tenantState{}}
}

// touch records that tenantID sent a request at now. Called with mu held.
func (l *Limiter) touch(tenantID string, now time.Time) {
	if l.recent[0].tenantID != tenantID {
		l.recent[1] = l.recent[0]
	}
	l.recent[0] = activity{tenantID: tenantID, at: now}
}

// capOf is st's in-flight cap at now: its MaxConcurrent (0: none), raised to AloneMaxConcurrent
// while no other tenant is active. Called with mu held.
func (l *Limiter) capOf(st *tenantState, now time.Time) int {
	c := st.limits.MaxConcurrent
	if c <= 0 || l.cfg.AloneMaxConcurrent <= c {
		return c
	}
	other := l.recent[0]
	if other.tenantID == st.id {
		other = l.recent[1]
	}
	alone := l.inflight == st.inflight && l.waiting == len(st.waiters) &&
		(other.tenantID == "" || now.Sub(other.at) >= l.cfg.QuietWindow)
	if alone {
		return l.cfg.AloneMaxConcurrent
	}
	return c
}

// Admit admits one request of tenantID under lim, or refuses it with a [*RateLimitError]: over
// lim.RequestsPerSecond (at once), or still without a slot after waiting up to wait behind the
// tenant's lim.MaxConcurrent requests in flight (a tenant's excess requests queue in its own
// queue, first come first served, never in everyone's). A refused request costs the tenant
// nothing but its token. When ctx ends first, Admit returns ctx's error. After admission, call
// release exactly once when the request ends.
func (l *Limiter) Admit(ctx context.Context, tenantID string, lim Limits, wait time.Duration) (release func(), err error) {
	a, err := l.AdmitRequest(ctx, tenantID, lim, wait)
	if err != nil {
		return nil, err
	}
	return a.Release, nil
}

// AdmitRequest is [Limiter.Admit] returning the admission itself, through which the request can
// also yield to other tenants between the batches of bulk work ([Admission.Yield]).
func (l *Limiter) AdmitRequest(ctx context.Context, tenantID string, lim Limits, wait time.Duration) (a *Admission, err error) {
	now := l.now()
	l.mu.Lock()
	l.sweep(now)
	st := l.tenants[tenantID]
	if st == nil {
		st = &tenantState{id: tenantID, limits: lim}
		if lim.RequestsPerSecond > 0 {
			st.bucket = rate.NewLimiter(rate.Limit(lim.RequestsPerSecond), lim.burst())
		}
		l.tenants[tenantID] = st
	} else if st.limits != lim {
		// The tenant's limits changed (an override was set): keep its bucket's state.
		switch {
		case lim.RequestsPerSecond <= 0:
			st.bucket = nil
		case st.bucket == nil:
			st.bucket = rate.NewLimiter(rate.Limit(lim.RequestsPerSecond), lim.burst())
		default:
			st.bucket.SetLimitAt(now, rate.Limit(lim.RequestsPerSecond))
			st.bucket.SetBurstAt(now, lim.burst())
		}
		st.limits = lim
	}
	st.lastUsed = now
	l.touch(tenantID, now)
	if st.bucket != nil {
		r := st.bucket.ReserveN(now, 1)
		if !r.OK() {
			l.mu.Unlock()
			return nil, &RateLimitError{Reason: ReasonRate, Limit: lim.RequestsPerSecond, Wait: time.Second}
		}
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			l.mu.Unlock()
			return nil, &RateLimitError{Reason: ReasonRate, Limit: lim.RequestsPerSecond, Wait: d}
		}
	}
	if c := l.capOf(st, now); c <= 0 || st.inflight < c {
		st.inflight++
		l.inflight++
		l.mu.Unlock()
		return &Admission{l: l, st: st, lastYield: time.Now()}, nil
	}
	refuse := &RateLimitError{Reason: ReasonConcurrency, Limit: float64(lim.MaxConcurrent), Wait: time.Second}
	if wait <= 0 {
		l.mu.Unlock()
		return nil, refuse
	}
	slot := make(chan struct{})
	st.waiters = append(st.waiters, slot)
	l.waiting++
	l.mu.Unlock()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-slot:
		return &Admission{l: l, st: st, lastYield: time.Now()}, nil
	case <-timer.C:
		err = refuse
	case <-ctx.Done():
		err = ctx.Err()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if i := indexOf(st.waiters, slot); i >= 0 {
		st.waiters = append(st.waiters[:i], st.waiters[i+1:]...)
		l.waiting--
		return nil, err
	}
	// The slot was handed over just as the wait ended: it is ours.
	return &Admission{l: l, st: st, lastYield: time.Now()}, nil
}

func indexOf(s []chan struct{}, c chan struct{}) int {
	for i, x := range s {
		if x == c {
			return i
		}
	}
	return -1
}

// Admission is one admitted request of a tenant. Release it exactly once when the request ends.
type Admission struct {
	l        *Limiter
	st       *tenantState
	once     sync.Once
	bulk     bool // guarded by l.mu
	released bool // guarded by l.mu
	// lastYield is when the request was admitted, then when its previous Yield returned: the
	// work since then bounds the next wait, so bulk work waits at most as long as it works.
	lastYield time.Time
}

// Release ends the request: its slot goes to the tenant's first waiter, if any. Calls after the
// first do nothing.
func (a *Admission) Release() {
	a.once.Do(func() {
		l, st := a.l, a.st
		l.mu.Lock()
		defer l.mu.Unlock()
		now := l.now()
		a.released = true
		st.lastUsed = now
		st.inflight--
		l.inflight--
		if a.bulk {
			st.bulk--
			l.bulk--
		} else if l.yielders > 0 {
			close(l.released) // an interactive request ended: the yielding ones look again
			l.released = make(chan struct{})
		}
		for len(st.waiters) > 0 {
			if c := l.capOf(st, now); c > 0 && st.inflight >= c {
				break
			}
			close(st.waiters[0]) // the slot passes on to the oldest waiter
			st.waiters = st.waiters[1:]
			l.waiting--
			st.inflight++
			l.inflight++
		}
	})
}

// Yield is called by bulk work (an ingest's insert statements, its embedding slices) between
// its batches. It marks the request as bulk work, then waits while a request of another tenant
// that is not bulk work is in flight, so that interactive requests (searches, reads) of other
// tenants do not share the CPU with the bulk work's next batch. Bulk work never waits for bulk
// work, and a tenant alone never waits. A wait lasts at most max, and at most as long as the
// batch before it took (from the previous Yield's return), so bulk work keeps at least half of
// its pace whatever the others do and its request deadline stays within reach. It returns ctx's
// error when ctx ends first, else nil (also when the bound is reached: the work goes on).
// One goroutine per Admission may call Yield.
func (a *Admission) Yield(ctx context.Context, max time.Duration) error {
	max = min(max, time.Since(a.lastYield))
	defer func() { a.lastYield = time.Now() }()
	l, st := a.l, a.st
	l.mu.Lock()
	if a.released {
		// The request has ended (a goroutine of it outlived its handler): it counts for nothing.
		l.mu.Unlock()
		return nil
	}
	if !a.bulk {
		a.bulk = true
		st.bulk++
		l.bulk++
	}
	if max <= 0 || l.interactiveOthers(st) <= 0 {
		l.mu.Unlock()
		return nil
	}
	start := time.Now()
	l.yieldWaits.Add(1)
	defer func() { l.yieldWaited.Add(int64(time.Since(start))) }()
	timer := time.NewTimer(max)
	defer timer.Stop()
	for {
		if l.released == nil {
			l.released = make(chan struct{})
		}
		ch := l.released
		l.yielders++
		l.mu.Unlock()
		var err error
		done := false
		select {
		case <-ch:
		case <-timer.C:
			done = true
		case <-ctx.Done():
			err, done = ctx.Err(), true
		}
		l.mu.Lock()
		l.yielders--
		if done || l.interactiveOthers(st) <= 0 {
			l.mu.Unlock()
			return err
		}
	}
}

// interactiveOthers counts the requests in flight that are neither st's nor bulk work. Called
// with mu held.
func (l *Limiter) interactiveOthers(st *tenantState) int {
	return (l.inflight - l.bulk) - (st.inflight - st.bulk)
}

// InFlight returns the number of admitted requests of tenantID that have not been released.
func (l *Limiter) InFlight(tenantID string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.tenants[tenantID]; st != nil {
		return st.inflight
	}
	return 0
}

// sweep forgets tenants idle for idleAfter, at most once per idleAfter. Called with mu held.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < idleAfter {
		return
	}
	l.lastSweep = now
	for id, st := range l.tenants {
		if st.inflight == 0 && len(st.waiters) == 0 && now.Sub(st.lastUsed) >= idleAfter &&
			(st.bucket == nil || st.bucket.TokensAt(now) >= float64(st.bucket.Burst())) {
			delete(l.tenants, id)
		}
	}
}
