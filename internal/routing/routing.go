package routing

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/dberr"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// Errors returned by [Resolver.Resolve].
var (
	// ErrSuspended means the tenant exists but is suspended (HTTP 403).
	ErrSuspended = errors.New("tenant is suspended")
	// ErrUnavailable means the tenant is being provisioned and cannot be served yet (HTTP 503).
	ErrUnavailable = errors.New("tenant is not available yet")
	// ErrDelegationForbidden means a request names a tenant to act for, but its key has no
	// delegate scope (HTTP 403). It is decided before the named tenant is looked at.
	ErrDelegationForbidden = errors.New("this API key may not act for other tenants")
	// ErrTenantNotFound means the tenant a delegated request names is not one the key may act
	// for: not strictly below the key's tenant, not registered, suspended, or being deleted
	// (HTTP 404). The cases are indistinguishable on purpose: no existence oracle.
	ErrTenantNotFound = errors.New("tenant not found")
	// ErrInvalidTarget means the tenant id a delegated request names is not a valid tenant id
	// (HTTP 400). It is rejected as written, never normalised.
	ErrInvalidTarget = errors.New("invalid tenant id to act as")
	// ErrNoPlacement means a descendant could not be created on first use: the control server's
	// placement takes no new shared-tier tenant (HTTP 503).
	ErrNoPlacement = errors.New("no placement takes a new shared-tier tenant")
)

// Handle is where one tenant's rows live. Handles are immutable; a registry change replaces them.
type Handle struct {
	TenantID string
	Tier     registry.Tier
	// Location is where the tenant's rows live (registry.Tenant.Location).
	Location registry.Location
	// Schema holds the tenant's tables (tenantmem_shared for the shared tier).
	Schema string
	// OwnerID is the value of owner_id on every row of the tenant.
	OwnerID string
	Status  registry.Status
	// Pool hands out connections to the database that holds the tenant's tables, as the router
	// role: the control pool, or a placement's database (placement.Pools.DB).
	Pool memory.Pool
	// fencePool is the registry's database when it is not Pool's (see memory.Fence.Pool).
	fencePool memory.Pool
	// fenceGates are the shares of fencePool the fence's transaction must enter.
	fenceGates []*limit.Gate
	// TextSearchConfig is the tenant's text search configuration (english, simple, ...).
	TextSearchConfig string
	// CreatedAt identifies this incarnation of the tenant id: a tenant deleted and created again
	// gets another.
	CreatedAt time.Time
	// Limits are the tenant's overrides of the router's default limits (nil fields: defaults).
	Limits registry.TenantLimits
	// gates and acquireWait bound the wait of the tenant's transactions for a connection.
	gates       []*limit.Gate
	acquireWait time.Duration
	loadedAt    time.Time
	resolver    *Resolver
	observe     func(*pgx.Conn, string)
	// parent is set on the (uncached) copy of a descendant's handle that a delegated request
	// runs with: the key's own tenant, whose state the request's fence checks too.
	parent *delegation
}

// delegation is the tenant whose key acts for a descendant.
type delegation struct {
	tenantID  string
	createdAt time.Time
}

// ActingFor returns the id of the tenant whose key acts for this handle's tenant, or "" when
// the request uses the tenant's own key.
func (h *Handle) ActingFor() string {
	if h.parent == nil {
		return ""
	}
	return h.parent.tenantID
}

// fenceCheck is NULL while the tenant is still this active incarnation, at the handle's location
// ($4-$7: a move changes it), and, when a key id is given ($3), that key is not revoked;
// otherwise it names what changed.
const fenceCheck = `SELECT CASE
	WHEN NOT EXISTS (SELECT 1 FROM tenantmem_control.tenants
		WHERE tenant_id = $1 AND created_at = $2 AND status = 'active' AND tier = $4 AND schema_name = $5
			AND coalesce(database_name, '') = coalesce($6::text, '') AND placement_id = $7) THEN 'tenant'
	WHEN $3::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tenantmem_control.api_keys
		WHERE key_id = $3 AND tenant_id = $1 AND revoked_at IS NULL) THEN 'key'
	END`

// delegatedFenceCheck is fenceCheck for a request that acts for a descendant ($1, $2, at the
// location $4-$7) with the key $3 of the tenant $8 (created at $9): the descendant is still this
// active incarnation at this location, the key is not revoked and still delegates, and the key's
// tenant is still this active incarnation and still strictly above the descendant. A revocation,
// or a suspension or delete of either tenant, stops the request in its first transaction,
// whatever the caches say; a move of the descendant ('tenant') is followed by the fence's Refresh,
// which reloads the same descendant only.
const delegatedFenceCheck = `SELECT CASE
	WHEN NOT EXISTS (SELECT 1 FROM tenantmem_control.tenants
		WHERE tenant_id = $1 AND created_at = $2 AND status = 'active' AND tier = $4 AND schema_name = $5
			AND coalesce(database_name, '') = coalesce($6::text, '') AND placement_id = $7) THEN 'tenant'
	WHEN NOT EXISTS (SELECT 1 FROM tenantmem_control.api_keys
		WHERE key_id = $3 AND tenant_id = $8 AND revoked_at IS NULL AND delegate) THEN 'key'
	WHEN NOT EXISTS (SELECT 1 FROM tenantmem_control.tenants
		WHERE tenant_id = $8 AND created_at = $9 AND status = 'active' AND created_at <= $2
		AND left($1::text, length($8::text) + 1) = $8::text || '/') THEN 'parent'
	END`

// Reasons of a failed fence check.
const (
	fenceTenant = "tenant"
	fenceKey    = "key"
)

// ErrKeyRevoked is the error of a request whose API key was revoked after the router resolved
// it: registry.ErrUnauthenticated (HTTP 401), found by the request's own transaction.
var ErrKeyRevoked = fmt.Errorf("the API key was revoked: %w", registry.ErrUnauthenticated)

// Scope is the memory scope of one request of the tenant. Its transactions hold the tenant's
// advisory lock shared and first check that the tenant is still this active incarnation at the
// handle's location, so a delete (which takes the lock exclusively) waits for requests in flight,
// and a request that starts after a suspension or delete, even from a handle cached before it,
// does nothing (memory.ErrFenced). A request that finds the tenant moved (same incarnation,
// another location) reloads the tenant and runs at its new location instead.
func (h *Handle) Scope(statementTimeout time.Duration) memory.Scope {
	return h.scope(nil, statementTimeout)
}

// KeyScope is Scope for a request made with the API key keyID: its transactions also check that
// the key is not revoked, so a key is refused (ErrKeyRevoked, HTTP 401) from the moment its
// revocation commits, whatever a cache still says.
func (h *Handle) KeyScope(keyID string, statementTimeout time.Duration) memory.Scope {
	return h.scope(&keyID, statementTimeout)
}

func (h *Handle) scope(keyID *string, statementTimeout time.Duration) memory.Scope {
	loc := []any{string(h.Location.Tier), h.Location.Schema, h.Location.Database, h.Location.Placement}
	fence := &memory.Fence{LockID: registry.LockID(h.TenantID), Check: fenceCheck,
		Args: append([]any{h.TenantID, h.CreatedAt, keyID}, loc...), Refuse: refuse, Pool: h.fencePool, Gates: h.fenceGates,
		Refresh: func(ctx context.Context) (memory.Scope, error) {
			n, err := h.resolver.moved(ctx, h)
			if err != nil {
				return memory.Scope{}, err
			}
			if h.parent != nil {
				// The same descendant (moved checks its id and incarnation), still acting for the
				// same key's tenant: the refreshed scope's fence checks the key and that tenant
				// again. The reloaded handle is the cached one; the delegation goes on a copy.
				d := *n
				d.parent = h.parent
				n = &d
			}
			return n.scope(keyID, statementTimeout), nil
		}}
	if h.parent != nil {
		// A delegated request: the key must be given, and the key's tenant is checked too.
		var k string
		if keyID != nil {
			k = *keyID
		}
		fence.Check = delegatedFenceCheck
		fence.Args = append(append([]any{h.TenantID, h.CreatedAt, k}, loc...), h.parent.tenantID, h.parent.createdAt)
	}
	return memory.Scope{
		Pool: h.Pool, Schema: h.Schema, OwnerID: h.OwnerID, StatementTimeout: statementTimeout, TextConfig: h.TextSearchConfig,
		AcquireWait: h.acquireWait, Gates: h.gates, Observe: h.observe, Fence: fence,
	}
}

func refuse(reason string) error {
	if reason == fenceKey {
		return ErrKeyRevoked
	}
	// fenceTenant, and "parent": the tenant (or the key's tenant) changed; the next request
	// resolves it afresh.
	return memory.ErrFenced
}

type keyEntry struct {
	hash     []byte
	tenantID string
	loadedAt time.Time
	// seq tells this caching of the key from an earlier one in the tenant index.
	seq uint64
	// The key's scopes (registry.APIKey), fixed at issue time.
	delegate, createDescendants bool
}

// Config configures a [Resolver].
type Config struct {
	// Pool connects to the main database as the router role; it reads the registry and serves
	// the tenants of the local placement's main database.
	Pool *pgxpool.Pool
	// Pools serves every other location (other placements, tenant databases). When nil, tenants
	// outside the control database are unavailable (503).
	Pools *placement.Pools
	// Handles is the capacity of the tenant handle LRU. Default 10,000.
	Handles int
	// Keys is the capacity of the API key LRU. Default 10,000.
	Keys int
	// TTL bounds how long a cached entry is trusted without a notification. Default 1 minute.
	TTL time.Duration
	// ObserveConn, when set, becomes the Observe of every handle's scope (see memory.Scope).
	ObserveConn func(conn *pgx.Conn, schema string)
	// Registry, when set, is the pool registry reads (key and tenant lookups) use instead of
	// Pool, so that they never wait behind tenant work for a connection.
	Registry *pgxpool.Pool
	// Gates, by tier, are the shares of the pool the tier's transactions must enter (see
	// limit.Acquire); a tier without one has no share limit.
	Gates map[registry.Tier]*limit.Gate
	// FenceGate is the share of the pool that the fences of tenants whose rows live elsewhere
	// (another database or placement) may hold at once: their fence's transaction runs on this
	// pool for the whole request, so without a share a slow or unreachable placement could hold
	// every connection and starve the tenants of this database. Nil means no share limit.
	FenceGate *limit.Gate
	// AcquireWait bounds the wait of a tenant's transaction for a connection (limit.Acquire).
	// Zero waits as long as the request allows.
	AcquireWait time.Duration
	// Logger. Default: discard.
	Logger *slog.Logger
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	c.Handles = cmp.Or(c.Handles, 10_000)
	c.Keys = cmp.Or(c.Keys, 10_000)
	c.TTL = cmp.Or(c.TTL, time.Minute)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = c.Pool
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Pool == nil:
		return errors.New("routing: Config.Pool is required")
	case c.Handles < 1 || c.Keys < 1:
		return errors.New("routing: cache sizes must be positive")
	case c.TTL <= 0:
		return errors.New("routing: TTL must be positive")
	}
	return nil
}

// Stats counts cache outcomes since start.
type Stats struct {
	HandleHits, HandleMisses, KeyHits, KeyMisses, Evictions, Purges uint64
}

// Resolver resolves API keys to tenant handles.
type Resolver struct {
	cfg     Config
	handles *lru.Cache[string, *Handle]
	keys    *lru.Cache[string, keyEntry]
	// mu orders loads against evictions: every eviction bumps generation under mu, and a load
	// caches what it read only if, under mu, generation has not moved since it started. So a
	// registry read that raced with a notification is served once but never cached. The hot path
	// (both caches hit) does not take mu.
	mu         sync.Mutex
	generation uint64
	// byTenant indexes the cached keys by tenant, so that evicting a tenant costs the number of
	// its keys, not of all cached keys. An entry is added (under mu) before its key is cached and
	// removed when the key leaves the cache, unless the key was cached again since (seq differs).
	idxMu    sync.Mutex
	byTenant map[string][]indexedKey
	seq      atomic.Uint64
	// caching is false while no LISTEN is in place (before the first, and while the listener
	// reconnects): nothing then tells the resolver about changes, so every request reads the
	// registry and nothing is cached.
	caching bool

	handleHits, handleMisses, keyHits, keyMisses, evictions, purges atomic.Uint64
}

// New returns a Resolver.
func New(cfg Config) (*Resolver, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	handles, err := lru.New[string, *Handle](cfg.Handles)
	if err != nil {
		return nil, err
	}
	r := &Resolver{cfg: cfg, handles: handles, byTenant: map[string][]indexedKey{}}
	if r.keys, err = lru.NewWithEvict[string, keyEntry](cfg.Keys, r.unindex); err != nil {
		return nil, err
	}
	return r, nil
}

// indexedKey is one cached key in the tenant index. A tenant has one key, or a few: a slice is
// the smallest index (a map per tenant would cost some 300 bytes each).
type indexedKey struct {
	keyID string
	seq   uint64
}

// index records that keyID of tenantID is about to be cached as caching seq.
func (r *Resolver) index(tenantID, keyID string, seq uint64) {
	r.idxMu.Lock()
	defer r.idxMu.Unlock()
	ks := r.byTenant[tenantID]
	for i := range ks {
		if ks[i].keyID == keyID {
			ks[i].seq = seq
			return
		}
	}
	r.byTenant[tenantID] = append(ks, indexedKey{keyID: keyID, seq: seq})
}

// unindex is the key cache's eviction callback: the key left the cache.
func (r *Resolver) unindex(keyID string, e keyEntry) {
	r.idxMu.Lock()
	defer r.idxMu.Unlock()
	ks := r.byTenant[e.tenantID]
	for i := range ks {
		if ks[i].keyID == keyID && ks[i].seq == e.seq {
			ks = append(ks[:i], ks[i+1:]...)
			if len(ks) == 0 {
				delete(r.byTenant, e.tenantID)
			} else {
				r.byTenant[e.tenantID] = ks
			}
			return
		}
	}
}

// cacheKey caches a key of a tenant. Call it with mu held.
func (r *Resolver) cacheKey(keyID string, e keyEntry) {
	e.seq = r.seq.Add(1)
	r.index(e.tenantID, keyID, e.seq)
	r.keys.Add(keyID, e)
}

// Resolve authenticates a clear API key and returns the handle of its tenant. A malformed,
// unknown, revoked or wrong key, and the key of a deleted tenant, give registry.ErrUnauthenticated;
// a suspended tenant gives ErrSuspended; a tenant still provisioning or being deleted gives
// ErrUnavailable or ErrUnauthenticated respectively. While caching is off (see SetCaching) every
// call reads the registry.
func (r *Resolver) Resolve(ctx context.Context, apiKey string) (*Handle, error) {
	h, _, err := r.resolve(ctx, apiKey)
	return h, err
}

// resolve is Resolve that also returns the key's cache entry (its scopes).
func (r *Resolver) resolve(ctx context.Context, apiKey string) (*Handle, keyEntry, error) {
	keyID, secret, err := registry.ParseKey(apiKey)
	if err != nil {
		return nil, keyEntry{}, err
	}
	hash := registry.HashSecret(secret)
	now := time.Now()
	r.mu.Lock()
	caching, gen := r.caching, r.generation
	r.mu.Unlock()
	if caching {
		ke, ok := r.keys.Get(keyID)
		if ok && now.Sub(ke.loadedAt) < r.cfg.TTL {
			r.keyHits.Add(1)
			if subtle.ConstantTimeCompare(hash, ke.hash) != 1 {
				return nil, keyEntry{}, registry.ErrUnauthenticated
			}
			if h, ok := r.handles.Get(ke.tenantID); ok && now.Sub(h.loadedAt) < r.cfg.TTL {
				r.handleHits.Add(1)
				h, err := check(h)
				return h, ke, err
			}
		} else {
			r.keyMisses.Add(1)
		}
	} else {
		r.keyMisses.Add(1)
	}
	// Miss: one query resolves key and tenant together.
	r.handleMisses.Add(1)
	p, err := registry.Authorize(ctx, r.cfg.Registry, apiKey)
	if err != nil && dberr.ConnectionLost(err) && ctx.Err() == nil {
		// A pooled connection the server had closed: the read never ran. Once more, on another.
		p, err = registry.Authorize(ctx, r.cfg.Registry, apiKey)
	}
	if err != nil {
		if errors.Is(err, registry.ErrUnauthenticated) {
			r.keys.Remove(keyID)
		}
		return nil, keyEntry{}, err
	}
	t := p.Tenant
	h := r.HandleFor(t)
	h.Limits, h.loadedAt = p.Limits, now
	ke := keyEntry{hash: hash, tenantID: t.ID, loadedAt: now, delegate: p.Delegate, createDescendants: p.CreateDescendants}
	// Cache only while listening, and if no eviction or purge happened while we were reading:
	// what we read may predate the change that was announced.
	r.mu.Lock()
	if r.caching && r.generation == gen {
		r.cacheKey(keyID, ke)
		r.handles.Add(t.ID, h)
	}
	r.mu.Unlock()
	h, err = check(h)
	return h, ke, err
}

// HandleFor returns a handle of a registry entry (uncached), e.g. for the embedding worker's
// sweep of active tenants: its Scope is fenced like a request's.
func (r *Resolver) HandleFor(t registry.Tenant) *Handle {
	loc := t.Location()
	h := &Handle{TenantID: t.ID, Tier: t.Tier, Location: loc, Schema: t.SchemaName, OwnerID: t.ID, Status: t.Status,
		Pool: r.PoolFor(loc), CreatedAt: t.CreatedAt, TextSearchConfig: t.TextSearchConfig,
		acquireWait: r.cfg.AcquireWait, loadedAt: time.Now(), resolver: r, observe: r.cfg.ObserveConn}
	if !loc.Key().IsControl() {
		// Elsewhere than the control database: no share of the control pool to take, but the
		// fence's transaction runs there (and the placement pools' connection budget bounds the rest).
		h.fencePool = r.cfg.Pool
		if r.cfg.FenceGate != nil {
			h.fenceGates = []*limit.Gate{r.cfg.FenceGate}
		}
	} else if g := r.cfg.Gates[t.Tier]; g != nil {
		h.gates = []*limit.Gate{g}
	}
	return h
}

// ResolveAs authenticates a clear API key and returns the handle of target, a tenant strictly
// below the key's own in the id hierarchy, for a delegated request. In order:
//
//   - the key is resolved as by Resolve (registry.ErrUnauthenticated, ErrSuspended and
//     ErrUnavailable are about the key's own tenant);
//   - target must be a valid tenant id as written (ErrInvalidTarget; nothing is normalised);
//   - the key must have the delegate scope (ErrDelegationForbidden), whatever target is;
//   - target must be strictly below the key's tenant, segment-wise, registered no earlier than
//     the key's tenant (so a tenant re-created under a deleted one's id inherits none of its
//     descendants), and active (ErrTenantNotFound for every other case, alike; ErrUnavailable
//     while it is provisioned).
//     A missing target is registered in the shared tier first when the key has the
//     create_descendants scope (registry.CreateDescendant; ErrNoPlacement when no placement takes
//     it).
//
// The returned handle is the descendant's, exactly as its own key would resolve it (one cache
// entry per tenant id), with the key's tenant attached: its scopes' transactions check the
// descendant, the key and the key's tenant (see KeyScope).
func (r *Resolver) ResolveAs(ctx context.Context, apiKey, target string) (*Handle, error) {
	parent, ke, err := r.resolve(ctx, apiKey)
	if err != nil {
		return nil, err
	}
	if err := schema.ValidateTenantID(target); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidTarget, err)
	}
	if !ke.delegate {
		return nil, ErrDelegationForbidden
	}
	if !registry.IsStrictDescendant(parent.TenantID, target) {
		return nil, ErrTenantNotFound
	}
	h, err := r.tenant(ctx, target)
	if errors.Is(err, registry.ErrNotFound) && ke.createDescendants {
		keyID, _, _ := registry.ParseKey(apiKey) // resolve accepted it
		var out registry.DescendantOutcome
		out, err = registry.CreateDescendant(ctx, r.cfg.Registry, keyID, target)
		switch {
		case err != nil:
			return nil, err
		case out == registry.DescendantCreated:
			r.cfg.Logger.InfoContext(ctx, "descendant created on first use", slog.String("tenant_id", target),
				slog.String("parent", parent.TenantID), slog.String("key_id", keyID))
		case out == registry.DescendantNoPlacement:
			return nil, ErrNoPlacement
		case out != registry.DescendantExists:
			// The registry refused (the key was revoked, the parent suspended meanwhile): the
			// same answer as any other tenant the key may not reach.
			return nil, ErrTenantNotFound
		}
		h, err = r.tenant(ctx, target)
	}
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, ErrTenantNotFound
	case err != nil:
		return nil, err
	}
	if h.CreatedAt.Before(parent.CreatedAt) {
		// Registered before this incarnation of the key's tenant: it may be a descendant of a
		// deleted tenant of the same id, which this one must not inherit.
		return nil, ErrTenantNotFound
	}
	switch h.Status {
	case registry.StatusActive:
	case registry.StatusProvisioning:
		return nil, ErrUnavailable
	default:
		return nil, ErrTenantNotFound
	}
	d := *h
	d.parent = &delegation{tenantID: parent.TenantID, createdAt: parent.CreatedAt}
	return &d, nil
}

// tenant returns the handle of a tenant by id, cached like the handles Resolve loads (one entry
// per tenant id, whichever key led to it), or registry.ErrNotFound. Absence is never cached.
func (r *Resolver) tenant(ctx context.Context, tenantID string) (*Handle, error) {
	now := time.Now()
	r.mu.Lock()
	caching, gen := r.caching, r.generation
	r.mu.Unlock()
	if caching {
		if h, ok := r.handles.Get(tenantID); ok && now.Sub(h.loadedAt) < r.cfg.TTL {
			r.handleHits.Add(1)
			return h, nil
		}
	}
	r.handleMisses.Add(1)
	t, l, err := registry.GetWithLimits(ctx, r.cfg.Registry, tenantID)
	if err != nil && dberr.ConnectionLost(err) && ctx.Err() == nil {
		t, l, err = registry.GetWithLimits(ctx, r.cfg.Registry, tenantID)
	}
	if err != nil {
		return nil, err
	}
	h := r.HandleFor(t)
	h.Limits, h.loadedAt = l, now
	r.mu.Lock()
	if r.caching && r.generation == gen {
		r.handles.Add(t.ID, h)
	}
	r.mu.Unlock()
	return h, nil
}

// errNotMoved is the refusal of a refresh: the tenant did not move (it was suspended, deleted or
// re-created), so the fence's verdict stands.
var errNotMoved = errors.New("routing: the tenant did not move")

// moved reloads a tenant whose fence check failed and returns its handle when the only change is
// its location (a move): same incarnation, still active. Anything else keeps the request fenced.
// The reloaded handle replaces the cached one.
func (r *Resolver) moved(ctx context.Context, h *Handle) (*Handle, error) {
	r.mu.Lock()
	gen := r.generation
	r.mu.Unlock()
	t, err := registry.Get(ctx, r.cfg.Registry, h.TenantID)
	if err != nil {
		return nil, err
	}
	if !t.CreatedAt.Equal(h.CreatedAt) || t.Status != registry.StatusActive || t.Location() == h.Location {
		return nil, errNotMoved
	}
	n := r.HandleFor(t)
	n.Limits = h.Limits
	// Cache it only under the rule of Resolve: while listening, and when nothing was announced
	// while we read.
	r.mu.Lock()
	if r.caching && r.generation == gen {
		r.handles.Add(t.ID, n)
	}
	r.mu.Unlock()
	return n, nil
}

// PoolFor returns what hands out connections to a location's database, as the router role: the
// control pool for the control database, else the placement's database from Config.Pools.
func (r *Resolver) PoolFor(loc registry.Location) memory.Pool {
	if loc.Key().IsControl() {
		return r.cfg.Pool
	}
	if r.cfg.Pools == nil {
		return unservedPool{key: loc.Key()}
	}
	return r.cfg.Pools.DB(loc.Key())
}

// unservedPool is a location this resolver has no pools for.
type unservedPool struct{ key registry.DatabaseKey }

func (u unservedPool) Acquire(context.Context) (*pgxpool.Conn, error) {
	return nil, fmt.Errorf("routing: %s: no placement pools configured: %w", u.key, placement.ErrUnavailable)
}

// SetCaching turns the caches on (LISTEN is in place: changes will be announced) or off (no
// LISTEN: every request reads the registry). Either way it purges them, since notifications may
// have been missed. A new Resolver does not cache until the first SetCaching(true).
func (r *Resolver) SetCaching(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.caching = on
	r.generation++
	r.purges.Add(1)
	r.handles.Purge()
	r.keys.Purge()
	if r.cfg.Pools != nil {
		// Placement rows are cached for a TTL of their own; they may have changed unannounced.
		r.cfg.Pools.InvalidateAll()
	}
}

// Caching reports whether the caches are in use (a LISTEN is in place).
func (r *Resolver) Caching() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.caching
}

func check(h *Handle) (*Handle, error) {
	switch h.Status {
	case registry.StatusActive:
		return h, nil
	case registry.StatusSuspended:
		return nil, ErrSuspended
	case registry.StatusProvisioning:
		return nil, ErrUnavailable
	default:
		return nil, registry.ErrUnauthenticated
	}
}

// EvictTenant drops a tenant's handle and every cached key of it, and makes loads that are in
// flight uncacheable. It costs the number of the tenant's cached keys, whatever the cache holds.
func (r *Resolver) EvictTenant(tenantID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.generation++
	r.evictions.Add(1)
	r.handles.Remove(tenantID)
	r.idxMu.Lock()
	ks := r.byTenant[tenantID]
	delete(r.byTenant, tenantID)
	r.idxMu.Unlock()
	for _, k := range ks {
		r.keys.Remove(k.keyID)
	}
}

// EvictKey drops one cached key, and makes loads that are in flight uncacheable.
func (r *Resolver) EvictKey(keyID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.generation++
	r.evictions.Add(1)
	r.keys.Remove(keyID)
}

// Purge drops every cached key and handle, and makes loads that are in flight uncacheable.
func (r *Resolver) Purge() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.generation++
	r.purges.Add(1)
	r.handles.Purge()
	r.idxMu.Lock()
	r.byTenant = map[string][]indexedKey{}
	r.idxMu.Unlock()
	r.keys.Purge()
	if r.cfg.Pools != nil {
		r.cfg.Pools.InvalidateAll()
	}
}

// Len returns the number of cached handles and keys.
func (r *Resolver) Len() (handles, keys int) { return r.handles.Len(), r.keys.Len() }

// Stats returns the cache counters.
func (r *Resolver) Stats() Stats {
	return Stats{
		HandleHits: r.handleHits.Load(), HandleMisses: r.handleMisses.Load(),
		KeyHits: r.keyHits.Load(), KeyMisses: r.keyMisses.Load(),
		Evictions: r.evictions.Load(), Purges: r.purges.Load(),
	}
}

// Apply evicts what a registry notification makes stale.
func (r *Resolver) Apply(n registry.Notification) {
	if n.KeyID != "" {
		r.EvictKey(n.KeyID)
	}
	if n.TenantID != "" {
		r.EvictTenant(n.TenantID)
	}
	if n.Placement != "" && r.cfg.Pools != nil {
		r.cfg.Pools.Invalidate(n.Placement)
	}
}
