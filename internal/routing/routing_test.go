package routing_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/routing"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type env struct {
	url       string
	admin     *pgxpool.Pool
	prov      *provision.Provisioner
	res       *routing.Resolver
	listening atomic.Int64
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	admin, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	prov, err := provision.New(provision.Config{Pool: admin})
	require.NoError(t, err)
	_, err = prov.Init(ctx, provision.InitParams{})
	require.NoError(t, err)
	routerURL := pgtest.WithUser(t, url, provision.DefaultRouterRole, "")
	pool, err := pgxpool.New(ctx, routerURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	res, err := routing.New(routing.Config{Pool: pool})
	require.NoError(t, err)
	e := &env{url: url, admin: admin, prov: prov, res: res}

	cc, err := pgx.ParseConfig(routerURL)
	require.NoError(t, err)
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- routing.Listen(lctx, routing.ListenerConfig{ConnConfig: cc, Resolver: res,
			MinBackoff: 10 * time.Millisecond, OnListening: func() { e.listening.Add(1) }})
	}()
	t.Cleanup(func() {
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
	})
	waitFor(t, "listener up", func() bool { return e.listening.Load() == 1 })
	return e
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestResolveCachesAndFollowsTheRegistry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	a, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "a", Tier: registry.TierSchema})
	require.NoError(t, err)
	b, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "b", Tier: registry.TierShared})
	require.NoError(t, err)
	// Let both "created" notifications land: a load racing a notification is served, not cached.
	waitFor(t, "created notifications", func() bool { return e.res.Stats().Evictions >= 2 })

	h, err := e.res.Resolve(ctx, a.Key.Key)
	require.NoError(t, err)
	require.Equal(t, "a", h.TenantID)
	require.Equal(t, a.Tenant.SchemaName, h.Schema)
	require.Equal(t, "a", h.OwnerID)
	before := e.res.Stats()
	for range 5 {
		h2, err := e.res.Resolve(ctx, a.Key.Key)
		require.NoError(t, err)
		require.Same(t, h, h2)
	}
	after := e.res.Stats()
	require.Equal(t, before.HandleMisses, after.HandleMisses, "a hot key costs no query")
	require.Equal(t, before.KeyHits+5, after.KeyHits)

	// A cached key id with a wrong secret is refused without a query.
	wrong := a.Key.Key[:len(a.Key.Key)-4] + "0000"
	if wrong == a.Key.Key {
		wrong = a.Key.Key[:len(a.Key.Key)-4] + "1111"
	}
	_, err = e.res.Resolve(ctx, wrong)
	require.ErrorIs(t, err, registry.ErrUnauthenticated)

	hb, err := e.res.Resolve(ctx, b.Key.Key)
	require.NoError(t, err)
	require.Equal(t, "tenantmem_shared", hb.Schema)

	// Suspension is applied on the notification, without waiting for the TTL.
	ev := e.res.Stats().Evictions
	_, err = e.prov.SuspendTenant(ctx, "a")
	require.NoError(t, err)
	waitFor(t, "suspend notification", func() bool { return e.res.Stats().Evictions > ev })
	_, err = e.res.Resolve(ctx, a.Key.Key)
	require.ErrorIs(t, err, routing.ErrSuspended)
	_, err = e.res.Resolve(ctx, a.Key.Key) // cached as suspended too
	require.ErrorIs(t, err, routing.ErrSuspended)
	ev = e.res.Stats().Evictions
	_, err = e.prov.ResumeTenant(ctx, "a")
	require.NoError(t, err)
	waitFor(t, "resume notification", func() bool { return e.res.Stats().Evictions > ev })
	_, err = e.res.Resolve(ctx, a.Key.Key)
	require.NoError(t, err)

	// A revoked key stops working; the tenant's other keys do not.
	k2, err := e.prov.IssueKey(ctx, "a")
	require.NoError(t, err)
	_, err = e.res.Resolve(ctx, k2.Key)
	require.NoError(t, err)
	ev = e.res.Stats().Evictions
	require.NoError(t, e.prov.RevokeKey(ctx, "a", a.Key.KeyID))
	waitFor(t, "revoke notification", func() bool { return e.res.Stats().Evictions > ev })
	_, err = e.res.Resolve(ctx, a.Key.Key)
	require.ErrorIs(t, err, registry.ErrUnauthenticated)
	_, err = e.res.Resolve(ctx, k2.Key)
	require.NoError(t, err)

	// A deleted tenant's keys are refused.
	ev = e.res.Stats().Evictions
	require.NoError(t, e.prov.DeleteTenant(ctx, "b"))
	waitFor(t, "delete notification", func() bool { return e.res.Stats().Evictions > ev })
	_, err = e.res.Resolve(ctx, b.Key.Key)
	require.ErrorIs(t, err, registry.ErrUnauthenticated)
}

// TestLostListenerPurgesEveryHandle kills the listening connection, changes the registry while it
// is down (so the notification is lost), and checks the change is still honoured once it is back.
func TestLostListenerPurgesEveryHandle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	a, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "a", Tier: registry.TierShared})
	require.NoError(t, err)
	waitFor(t, "created notification", func() bool { return e.res.Stats().Evictions >= 1 })
	_, err = e.res.Resolve(ctx, a.Key.Key)
	require.NoError(t, err)
	handles, keys := e.res.Len()
	require.Equal(t, 1, handles)
	require.Equal(t, 1, keys)

	// Suspend in the same transaction that kills the listener: its notification is lost.
	tx, err := e.admin.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND usename = $1 AND query LIKE 'LISTEN%'`, provision.DefaultRouterRole)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `UPDATE tenantmem_control.tenants SET status = 'suspended' WHERE tenant_id = 'a'`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))

	waitFor(t, "listener back", func() bool { return e.listening.Load() == 2 })
	require.Positive(t, e.res.Stats().Purges)
	_, err = e.res.Resolve(ctx, a.Key.Key)
	require.ErrorIs(t, err, routing.ErrSuspended)
}

func TestResolveRejectsBadKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	for _, k := range []string{"", "x", "tm_", "tm_aaaaaaaaaaaaaaaa_", "tm_AAAAAAAAAAAAAAAA_" + string(make([]byte, 64)),
		"tm_aaaaaaaaaaaaaaaa_0000000000000000000000000000000000000000000000000000000000000000", "' OR 1=1 --"} {
		_, err := e.res.Resolve(ctx, k)
		require.ErrorIs(t, err, registry.ErrUnauthenticated, "%q", k)
	}
}

// gateTracer pauses the registry read of a Resolve, once armed, after the row was read and before
// the resolver caches it.
type gateTracer struct {
	armed            atomic.Bool
	reached, release chan struct{}
}

type gateKey struct{}

func (g *gateTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, "api_keys k JOIN") {
		return context.WithValue(ctx, gateKey{}, true)
	}
	return ctx
}

func (g *gateTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if ctx.Value(gateKey{}) != nil && g.armed.CompareAndSwap(true, false) {
		close(g.reached)
		<-g.release
	}
}

// TestLoadRacingANotificationIsNotCached reads a tenant as active, suspends it and lets the
// notification evict before the read is cached: the read is served once but never cached, so the
// next request sees the suspension.
func TestLoadRacingANotificationIsNotCached(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	a, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "a", Tier: registry.TierShared})
	require.NoError(t, err)

	pc, err := pgxpool.ParseConfig(pgtest.WithUser(t, e.url, provision.DefaultRouterRole, ""))
	require.NoError(t, err)
	g := &gateTracer{reached: make(chan struct{}), release: make(chan struct{})}
	pc.ConnConfig.Tracer = g
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	res, err := routing.New(routing.Config{Pool: pool})
	require.NoError(t, err)
	// As with its registry listener in place: without caching there would be nothing to race.
	res.SetCaching(true)

	g.armed.Store(true)
	done := make(chan error, 1)
	go func() { _, err := res.Resolve(ctx, a.Key.Key); done <- err }()
	<-g.reached // the registry said "active"; nothing cached yet
	res.Apply(registry.Notification{TenantID: "a", Event: "suspended"})
	_, err = e.prov.SuspendTenant(ctx, "a")
	require.NoError(t, err)
	close(g.release)
	require.NoError(t, <-done, "the racing request itself was read before the suspension")
	_, err = res.Resolve(ctx, a.Key.Key)
	require.ErrorIs(t, err, routing.ErrSuspended)

	// The resolver does cache a load that raced with nothing.
	b, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "b", Tier: registry.TierShared})
	require.NoError(t, err)
	_, err = res.Resolve(ctx, b.Key.Key)
	require.NoError(t, err)
	hits := res.Stats().KeyHits
	_, err = res.Resolve(ctx, b.Key.Key)
	require.NoError(t, err)
	require.Equal(t, hits+1, res.Stats().KeyHits)
}

// TestFenceOrdersRequestsAndDeletes holds a request's transaction open while the tenant is
// deleted: the delete waits for it, removes what it wrote, and a request that starts afterwards
// with the old (cached) handle does nothing. A suspension fences the same way.
func TestFenceOrdersRequestsAndDeletes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	f, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "f", Tier: registry.TierShared})
	require.NoError(t, err)
	h, err := e.res.Resolve(ctx, f.Key.Key)
	require.NoError(t, err)

	started, release := make(chan struct{}), make(chan struct{})
	inflight := make(chan error, 1)
	go func() {
		inflight <- h.Scope(0).InTx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO documents (owner_id, document_name, document_type) VALUES ($1, 'late', 'text')`, h.OwnerID); err != nil {
				return err
			}
			close(started)
			<-release
			return nil
		})
	}()
	<-started
	deleted := make(chan error, 1)
	go func() { deleted <- e.prov.DeleteTenant(ctx, "f") }()
	waitFor(t, "the delete to queue behind the request", func() bool {
		var waiting int
		require.NoError(t, e.admin.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting))
		return waiting == 1
	})
	close(release)
	require.NoError(t, <-inflight)
	require.NoError(t, <-deleted)
	var left int
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT count(*) FROM tenantmem_shared.documents WHERE owner_id = 'f'`).Scan(&left))
	require.Zero(t, left, "the delete ran after the request committed, so it removed its row")
	err = h.Scope(0).InTx(ctx, func(pgx.Tx) error { t.Fatal("ran for a deleted tenant"); return nil })
	require.ErrorIs(t, err, memory.ErrFenced)

	g, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "g", Tier: registry.TierSchema})
	require.NoError(t, err)
	hg, err := e.res.Resolve(ctx, g.Key.Key)
	require.NoError(t, err)
	require.NoError(t, hg.Scope(0).InTx(ctx, func(pgx.Tx) error { return nil }))
	_, err = e.prov.SuspendTenant(ctx, "g")
	require.NoError(t, err)
	err = hg.Scope(0).InTx(ctx, func(pgx.Tx) error { t.Fatal("ran for a suspended tenant"); return nil })
	require.ErrorIs(t, err, memory.ErrFenced)
}

// TestFenceOrdersRequestsAndDeletesAcrossDatabases is TestFenceOrdersRequestsAndDeletes for a
// tenant in its own database: the tenant's lock lives in the control database, so the router holds
// it in a transaction there around the tenant's own transaction, and a delete (which drops the
// database) still waits for the request in flight and fences the requests after it.
func TestFenceOrdersRequestsAndDeletesAcrossDatabases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	s, err := registry.GetSettings(ctx, e.admin)
	require.NoError(t, err)
	pgtest.DropDatabasesOnCleanup(t, pgtest.ServerURL(), "tenantmem deployment "+s.DeploymentID+" ")
	pool, err := pgxpool.New(ctx, pgtest.WithUser(t, e.url, provision.DefaultRouterRole, ""))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	pools, err := placement.New(placement.Config{Control: pool})
	require.NoError(t, err)
	t.Cleanup(pools.Close)
	res, err := routing.New(routing.Config{Pool: pool, Pools: pools})
	require.NoError(t, err)
	d, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "d", Tier: registry.TierDatabase})
	require.NoError(t, err)
	h, err := res.Resolve(ctx, d.Key.Key)
	require.NoError(t, err)
	require.Equal(t, d.Tenant.DatabaseName, h.Location.Database)

	started, release := make(chan struct{}), make(chan struct{})
	inflight := make(chan error, 1)
	go func() {
		inflight <- h.Scope(0).InTx(ctx, func(tx pgx.Tx) error {
			var db string
			if err := tx.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
				return err
			}
			if db != d.Tenant.DatabaseName {
				return fmt.Errorf("the transaction runs in %s", db)
			}
			close(started)
			<-release
			return nil
		})
	}()
	<-started
	deleted := make(chan error, 1)
	go func() { deleted <- e.prov.DeleteTenant(ctx, "d") }()
	waitFor(t, "the delete to queue behind the request, in the control database", func() bool {
		var waiting int
		require.NoError(t, e.admin.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting))
		return waiting == 1
	})
	var exists bool
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`,
		d.Tenant.DatabaseName).Scan(&exists))
	require.True(t, exists, "nothing is dropped while the request runs")
	close(release)
	require.NoError(t, <-inflight)
	require.NoError(t, <-deleted)
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`,
		d.Tenant.DatabaseName).Scan(&exists))
	require.False(t, exists)
	err = h.Scope(0).InTx(ctx, func(pgx.Tx) error { t.Fatal("ran for a deleted tenant"); return nil })
	require.ErrorIs(t, err, memory.ErrFenced)
	// Searches read in a pipeline of their own: they are fenced in the control database too.
	embedder, err := embed.NewBuiltin(provision.DefaultEmbeddingDimension)
	require.NoError(t, err)
	engine, err := memory.New(memory.Config{Embedder: embedder})
	require.NoError(t, err)
	_, err = engine.Search(ctx, h.Scope(0), memory.SearchParams{QueryText: "anything", SearchType: "text"})
	require.ErrorIs(t, err, memory.ErrFenced)
}

// TestListenerLossTurnsCachingOff: while the registry listener is down nothing announces
// changes, so the resolver reads the registry for every request instead of trusting (and
// filling) its caches; the reconnect delay doubles over quick losses and starts again at the
// minimum after a healthy period. (Before: a loss purged the caches once, loads during the
// backoff were cached again, and the delay never went down: after a few losses every loss left
// a 5 s window in which a suspension or a revocation was not seen.)
func TestListenerLossTurnsCachingOff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	admin, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	prov, err := provision.New(provision.Config{Pool: admin})
	require.NoError(t, err)
	_, err = prov.Init(ctx, provision.InitParams{})
	require.NoError(t, err)
	routerURL := pgtest.WithUser(t, url, provision.DefaultRouterRole, "")
	pool, err := pgxpool.New(ctx, routerURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	res, err := routing.New(routing.Config{Pool: pool})
	require.NoError(t, err)
	require.False(t, res.Caching(), "no caching before the first LISTEN")

	var (
		listening atomic.Int64
		lost      = make(chan time.Duration, 10)
	)
	cc, err := pgx.ParseConfig(routerURL)
	require.NoError(t, err)
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	const minBackoff = 400 * time.Millisecond
	go func() {
		done <- routing.Listen(lctx, routing.ListenerConfig{ConnConfig: cc, Resolver: res,
			MinBackoff: minBackoff, MaxBackoff: 10 * time.Second, HealthyAfter: 3 * time.Second,
			OnListening: func() { listening.Add(1) },
			OnLost:      func(_ error, backoff time.Duration) { lost <- backoff }})
	}()
	t.Cleanup(func() {
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
	})
	waitFor(t, "listener up", func() bool { return listening.Load() == 1 })
	require.True(t, res.Caching())
	kill := func() time.Duration {
		t.Helper()
		var n int
		require.NoError(t, admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = $1 AND datname = current_database()`, routing.ListenerApplicationName).Scan(&n))
		require.Equal(t, 1, n)
		select {
		case b := <-lost:
			return b
		case <-time.After(20 * time.Second):
			t.Fatal("the listener did not notice the loss")
			return 0
		}
	}

	created, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "watched", Tier: registry.TierShared})
	require.NoError(t, err)
	key := created.Key.Key
	_, err = res.Resolve(ctx, key)
	require.NoError(t, err)

	require.Equal(t, minBackoff, kill())
	require.False(t, res.Caching())
	// During the backoff: a request, then a suspension nobody announces to us, then a request.
	_, err = res.Resolve(ctx, key)
	require.NoError(t, err)
	_, err = prov.SuspendTenant(ctx, "watched")
	require.NoError(t, err)
	_, err = res.Resolve(ctx, key)
	require.ErrorIs(t, err, routing.ErrSuspended, "seen at once, not after the reconnect")
	waitFor(t, "reconnect", func() bool { return listening.Load() == 2 })
	require.True(t, res.Caching())

	// A quick second loss doubles the delay; a healthy period resets it.
	require.Equal(t, 2*minBackoff, kill())
	waitFor(t, "reconnect", func() bool { return listening.Load() == 3 })
	time.Sleep(3500 * time.Millisecond) // longer than HealthyAfter
	require.Equal(t, minBackoff, kill())
	waitFor(t, "reconnect", func() bool { return listening.Load() == 4 })
}
