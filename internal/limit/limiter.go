package limit

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// idleAfter is how long a tenant's state is kept after its last request; a sweep forgets it
// then (a full bucket and nothing in flight equal a fresh state).
const idleAfter = time.Minute

// Limiter admits the requests of many tenants, each against its own [Limits]: a token bucket for
// the request rate and a count of requests in flight. Memory is bounded by the tenants active in
// the last minute.
type Limiter struct {
	now func() time.Time

	mu        sync.Mutex
	tenants   map[string]*tenantState
	lastSweep time.Time
}

type tenantState struct {
	bucket   *rate.Limiter
	limits   Limits
	inflight int
	// waiters are the requests queued for a slot, oldest first; a release hands its slot to the
	// first one by closing its channel.
	waiters  []chan struct{}
	lastUsed time.Time
}

// NewLimiter returns an empty Limiter.
func NewLimiter() *Limiter {
	return &Limiter{now: time.Now, tenants: map[string]*tenantState{}}
}

// Admit admits one request of tenantID under lim, or refuses it with a [*RateLimitError]: over
// lim.RequestsPerSecond (at once), or still without a slot after waiting up to wait behind the
// tenant's lim.MaxConcurrent requests in flight (a tenant's excess requests queue in its own
// queue, first come first served, never in everyone's). A refused request costs the tenant
// nothing but its token. When ctx ends first, Admit returns ctx's error. After admission, call
// release exactly once when the request ends.
func (l *Limiter) Admit(ctx context.Context, tenantID string, lim Limits, wait time.Duration) (release func(), err error) {
	now := l.now()
	l.mu.Lock()
	l.sweep(now)
	st := l.tenants[tenantID]
	if st == nil {
		st = &tenantState{limits: lim}
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
	if lim.MaxConcurrent <= 0 || st.inflight < lim.MaxConcurrent {
		st.inflight++
		l.mu.Unlock()
		return l.releaser(st), nil
	}
	refuse := &RateLimitError{Reason: ReasonConcurrency, Limit: float64(lim.MaxConcurrent), Wait: time.Second}
	if wait <= 0 {
		l.mu.Unlock()
		return nil, refuse
	}
	slot := make(chan struct{})
	st.waiters = append(st.waiters, slot)
	l.mu.Unlock()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-slot:
		return l.releaser(st), nil
	case <-timer.C:
		err = refuse
	case <-ctx.Done():
		err = ctx.Err()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if i := indexOf(st.waiters, slot); i >= 0 {
		st.waiters = append(st.waiters[:i], st.waiters[i+1:]...)
		return nil, err
	}
	// The slot was handed over just as the wait ended: it is ours.
	return l.releaser(st), nil
}

func indexOf(s []chan struct{}, c chan struct{}) int {
	for i, x := range s {
		if x == c {
			return i
		}
	}
	return -1
}

// releaser ends one admitted request of st: its slot goes to the first waiter, if any.
func (l *Limiter) releaser(st *tenantState) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			st.lastUsed = l.now()
			st.inflight--
			for len(st.waiters) > 0 && (st.limits.MaxConcurrent <= 0 || st.inflight < st.limits.MaxConcurrent) {
				close(st.waiters[0]) // the slot passes on to the oldest waiter
				st.waiters = st.waiters[1:]
				st.inflight++
			}
		})
	}
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
