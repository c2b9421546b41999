package limit

import (
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
	lastUsed time.Time
}

// NewLimiter returns an empty Limiter.
func NewLimiter() *Limiter {
	return &Limiter{now: time.Now, tenants: map[string]*tenantState{}}
}

// Admit admits one request of tenantID under lim, or refuses it with a [*RateLimitError]: with
// lim.MaxConcurrent requests already in flight, or over lim.RequestsPerSecond. A refused request
// costs the tenant nothing. After admission, call release exactly once when the request ends.
func (l *Limiter) Admit(tenantID string, lim Limits) (release func(), err error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
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
	if lim.MaxConcurrent > 0 && st.inflight >= lim.MaxConcurrent {
		return nil, &RateLimitError{Reason: ReasonConcurrency, Limit: float64(lim.MaxConcurrent), Wait: time.Second}
	}
	if st.bucket != nil {
		r := st.bucket.ReserveN(now, 1)
		if !r.OK() {
			return nil, &RateLimitError{Reason: ReasonRate, Limit: lim.RequestsPerSecond, Wait: time.Second}
		}
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			return nil, &RateLimitError{Reason: ReasonRate, Limit: lim.RequestsPerSecond, Wait: d}
		}
	}
	st.inflight++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			st.inflight--
			st.lastUsed = l.now()
			l.mu.Unlock()
		})
	}, nil
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
		if st.inflight == 0 && now.Sub(st.lastUsed) >= idleAfter &&
			(st.bucket == nil || st.bucket.TokensAt(now) >= float64(st.bucket.Burst())) {
			delete(l.tenants, id)
		}
	}
}
