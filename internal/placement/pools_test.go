package placement_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/connrecycle"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// deployment is an initialised control database with n extra databases on the test server,
// standing for tenant databases of the local placement.
type deployment struct {
	admin  *pgxpool.Pool // superuser, control database
	router *pgxpool.Pool // router role, control database
	dbs    []string
}

func newDeployment(t *testing.T, n int) *deployment {
	t.Helper()
	ctx := context.Background()
	u := pgtest.NewDatabase(t)
	admin, err := pgxpool.New(ctx, u)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	prov, err := provision.New(provision.Config{Pool: admin})
	require.NoError(t, err)
	t.Cleanup(prov.Close)
	_, err = prov.Init(ctx, provision.InitParams{})
	require.NoError(t, err)
	router, err := pgxpool.New(ctx, pgtest.WithUser(t, u, provision.DefaultRouterRole, ""))
	require.NoError(t, err)
	t.Cleanup(router.Close)
	d := &deployment{admin: admin, router: router}
	for range n {
		parsed, err := url.Parse(pgtest.NewDatabase(t))
		require.NoError(t, err)
		d.dbs = append(d.dbs, strings.TrimPrefix(parsed.Path, "/"))
	}
	return d
}

func (d *deployment) pools(t *testing.T, cfg placement.Config) *placement.Pools {
	t.Helper()
	cfg.Control = d.router
	p, err := placement.New(cfg)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

// serverConns counts the server's connections to the databases, as the server sees them.
func (d *deployment) serverConns(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, d.admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE datname = ANY($1)`,
		d.dbs).Scan(&n))
	return n
}

// requireServerConnsWithin checks the server's count of connections against the budget. A backend
// whose client just closed its socket (giving its slot back) is still counted by the server for
// the moment it takes to exit, so the server's count may exceed the budget by those for an
// instant; it must come down to it at once.
func (d *deployment) requireServerConnsWithin(t *testing.T, budget int) {
	t.Helper()
	require.Eventually(t, func() bool { return d.serverConns(t) <= budget }, 2*time.Second, 5*time.Millisecond)
}

func key(db string) registry.DatabaseKey {
	return registry.DatabaseKey{Placement: registry.LocalPlacement, Database: db}
}

func query(t *testing.T, conn *pgxpool.Conn, db string) {
	t.Helper()
	var got string
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT current_database()`).Scan(&got))
	require.Equal(t, db, got)
}

// TestBudgetBoundsTheConnectionsOfEveryPool touches more databases than the budget has
// connections, holds the whole budget, and checks that the next cold database waits and then
// gives up, that a freed connection goes to a waiter, and that the server never sees more
// connections than the budget.
func TestBudgetBoundsTheConnectionsOfEveryPool(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t, 6)
	const budget = 3
	p := d.pools(t, placement.Config{Budget: budget, DatabaseMaxConns: 2, BudgetWait: time.Second})

	// One after the other: each cold database reuses the room the idle ones leave.
	for round := range 2 {
		for _, db := range d.dbs {
			conn, err := p.DB(key(db)).Acquire(ctx)
			require.NoError(t, err, "round %d %s", round, db)
			query(t, conn, db)
			conn.Release()
			require.LessOrEqual(t, p.Stats().BudgetInUse, budget)
			d.requireServerConnsWithin(t, budget)
		}
	}

	// The whole budget held: a cold database waits BudgetWait, then is refused, holding nothing.
	var held []*pgxpool.Conn
	released := make(map[*pgxpool.Conn]bool)
	t.Cleanup(func() { // a failed assertion must not leave Close waiting for these
		for _, c := range held {
			if !released[c] {
				c.Release()
			}
		}
	})
	for _, db := range d.dbs[:budget] {
		conn, err := p.DB(key(db)).Acquire(ctx)
		require.NoError(t, err)
		held = append(held, conn)
	}
	start := time.Now()
	_, err := p.DB(key(d.dbs[5])).Acquire(ctx)
	require.ErrorIs(t, err, placement.ErrBudgetExhausted)
	require.ErrorIs(t, err, limit.ErrBusy, "a full budget is busy (503 Retry-After), not a placement down")
	require.NotErrorIs(t, err, placement.ErrUnavailable)
	require.GreaterOrEqual(t, time.Since(start), time.Second)
	require.Equal(t, uint64(1), p.Stats().BudgetRefused)
	d.requireServerConnsWithin(t, budget)

	// A connection given back while a cold database waits wakes it, and the idle connection it closes makes its room.
	got := make(chan error, 1)
	waits := p.Stats().BudgetWaits // the loops above waited already
	go func() {
		conn, err := p.DB(key(d.dbs[4])).Acquire(ctx)
		if err == nil {
			conn.Release()
		}
		got <- err
	}()
	require.Eventually(t, func() bool { return p.Stats().BudgetWaits > waits }, 5*time.Second, 5*time.Millisecond)
	held[0].Release()
	released[held[0]] = true
	require.NoError(t, <-got)
	for _, c := range held[1:] {
		query(t, c, c.Conn().Config().Database)
		c.Release()
		released[c] = true
	}
	d.requireServerConnsWithin(t, budget)
}

// TestBurstOfColdDatabasesStaysWithinTheBudget opens many cold databases at once: some wait,
// none exceeds the budget, and every one is served or refused cleanly.
func TestBurstOfColdDatabasesStaysWithinTheBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t, 8)
	const budget = 4
	p := d.pools(t, placement.Config{Budget: budget, DatabaseMaxConns: 2, BudgetWait: 5 * time.Second})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		maxSeen int
		errs    []error
	)
	for i := range 32 {
		db := d.dbs[i%len(d.dbs)]
		wg.Go(func() {
			conn, err := p.DB(key(db)).Acquire(ctx)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer conn.Release()
			_, err = conn.Exec(ctx, `SELECT pg_sleep(0.02)`)
			mu.Lock()
			maxSeen = max(maxSeen, p.Stats().BudgetInUse)
			if err != nil {
				errs = append(errs, err)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	require.Empty(t, errs)
	require.LessOrEqual(t, maxSeen, budget)
	require.Positive(t, p.Stats().BudgetWaits, "the burst had to wait")
	d.requireServerConnsWithin(t, budget)
}

// TestPoolsAreEvictedButNeverUnderAConnection keeps fewer pools than databases and checks that
// a pool with a connection out survives eviction.
func TestPoolsAreEvictedButNeverUnderAConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t, 5)
	p := d.pools(t, placement.Config{MaxPools: 2})
	held, err := p.DB(key(d.dbs[0])).Acquire(ctx)
	require.NoError(t, err)
	for _, db := range d.dbs[1:] {
		conn, err := p.DB(key(db)).Acquire(ctx)
		require.NoError(t, err)
		conn.Release()
		require.LessOrEqual(t, p.Stats().Pools, 3)
	}
	query(t, held, d.dbs[0]) // its pool was least recently used, but a connection was out
	held.Release()
	// A leased pool is kept too, and usable across statements.
	pool, release, err := p.Acquire(ctx, key(d.dbs[1]))
	require.NoError(t, err)
	for _, db := range d.dbs[2:] {
		conn, err := p.DB(key(db)).Acquire(ctx)
		require.NoError(t, err)
		conn.Release()
	}
	var got string
	require.NoError(t, pool.QueryRow(ctx, `SELECT current_database()`).Scan(&got))
	require.Equal(t, d.dbs[1], got)
	release()
	require.Eventually(t, func() bool { return p.Stats().Pools <= 2 }, 5*time.Second, 10*time.Millisecond)
}

// TestPlacementsThatCannotBeServed covers an unknown placement, one without credentials (the log
// names it), a disabled one, and what Health says about each.
func TestPlacementsThatCannotBeServed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t, 1)
	_, err := d.admin.Exec(ctx, `INSERT INTO tenantmem_control.placements (placement_id, host, port, database_name)
		VALUES ('remote', '127.0.0.1', 1, 'x'), ('off', '127.0.0.1', 2, 'y');
		UPDATE tenantmem_control.placements SET state = 'disabled' WHERE placement_id = 'off'`)
	require.NoError(t, err)
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(b)
	}), nil))
	p := d.pools(t, placement.Config{Logger: logger})

	_, err = p.DB(registry.DatabaseKey{Placement: "nowhere"}).Acquire(ctx)
	require.ErrorIs(t, err, registry.ErrNotFound)
	_, err = p.DB(registry.DatabaseKey{Placement: "remote", Database: "tmdb_x_0123456789abcdef"}).Acquire(ctx)
	require.ErrorIs(t, err, placement.ErrNoCredentials)
	require.ErrorIs(t, err, placement.ErrUnavailable)
	mu.Lock()
	require.Contains(t, logs.String(), `"placement":"remote"`)
	mu.Unlock()
	_, err = p.DB(registry.DatabaseKey{Placement: "off"}).Acquire(ctx)
	require.ErrorIs(t, err, placement.ErrDisabled)
	require.ErrorIs(t, err, placement.ErrUnavailable)

	// The local placement is still served, and Health reports each placement on its own.
	conn, err := p.DB(key(d.dbs[0])).Acquire(ctx)
	require.NoError(t, err)
	conn.Release()
	h, err := p.Health(ctx, time.Second)
	require.NoError(t, err)
	require.Equal(t, "ok", h["local"].Status)
	require.Equal(t, "no_credentials", h["remote"].Status)
	require.Contains(t, h["remote"].Error, "TENANTMEM_PLACEMENT_REMOTE_ROUTER_PASSWORD")
	require.Equal(t, "disabled", h["off"].Status)

	// With credentials, the placement is tried and found down: unreachable, not missing.
	creds := placement.CredentialsFromEnv([]string{"TENANTMEM_PLACEMENT_REMOTE_ROUTER_PASSWORD="})
	p2 := d.pools(t, placement.Config{Credentials: creds, ConnectTimeout: time.Second})
	_, err = p2.DB(registry.DatabaseKey{Placement: "remote"}).Acquire(ctx)
	require.ErrorIs(t, err, placement.ErrUnavailable)
	require.True(t, placement.IsConnectionLoss(err))
	h, err = p2.Health(ctx, 2*time.Second)
	require.NoError(t, err)
	require.Equal(t, "unreachable", h["remote"].Status)

	// The provisioner's login still reaches a disabled placement (to delete its tenants).
	pp := d.pools(t, placement.Config{Login: placement.LoginProvisioner, Credentials: placement.CredentialsFromEnv(
		[]string{"TENANTMEM_PLACEMENT_OFF_PROVISIONER_PASSWORD="}), ConnectTimeout: time.Second})
	_, err = pp.DB(registry.DatabaseKey{Placement: "off"}).Acquire(ctx)
	require.NotErrorIs(t, err, placement.ErrDisabled)
	require.ErrorIs(t, err, placement.ErrUnavailable, "it is down, not disabled, for the provisioner")
}

// TestInvalidateFollowsAPlacementMovingElsewhere re-registers a placement at another database:
// new connections go there once it is invalidated.
func TestInvalidateFollowsAPlacementMovingElsewhere(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t, 2)
	srv := pgtest.Existing(pgtest.ServerURL())
	_, err := d.admin.Exec(ctx, `INSERT INTO tenantmem_control.placements (placement_id, host, port, database_name)
		VALUES ('moving', $1, $2, $3)`, srv.Host(), srv.Port(), d.dbs[0])
	require.NoError(t, err)
	creds := placement.CredentialsFromEnv([]string{"TENANTMEM_PLACEMENT_MOVING_ROUTER_PASSWORD="})
	p := d.pools(t, placement.Config{Credentials: creds, DefaultUser: provision.DefaultRouterRole})
	where := func() string {
		conn, err := p.DB(registry.DatabaseKey{Placement: "moving"}).Acquire(ctx)
		require.NoError(t, err)
		defer conn.Release()
		var db string
		require.NoError(t, conn.QueryRow(ctx, `SELECT current_database()`).Scan(&db))
		return db
	}
	require.Equal(t, d.dbs[0], where())
	_, err = d.admin.Exec(ctx, `UPDATE tenantmem_control.placements SET database_name = $1 WHERE placement_id = 'moving'`, d.dbs[1])
	require.NoError(t, err)
	require.Equal(t, d.dbs[0], where(), "cached until invalidated")
	p.Invalidate("moving")
	require.Equal(t, d.dbs[1], where())
	var user string
	conn, err := p.DB(registry.DatabaseKey{Placement: "moving"}).Acquire(ctx)
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, `SELECT current_user`).Scan(&user))
	conn.Release()
	require.Equal(t, provision.DefaultRouterRole, user)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestRecycledConnectionGivesBackItsBudgetSlot: a placement pool configured with the router's
// schema recycle limit (Config.ConfigurePool) closes a connection that served more schemas than
// the limit when it is released, and its slot of the connection budget comes back with it, so the
// next database opens without waiting. Without the hook the connection stayed open, idle,
// holding its slot (and its catalog caches).
func TestRecycledConnectionGivesBackItsBudgetSlot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t, 2)
	recycler := connrecycle.New(1)
	p := d.pools(t, placement.Config{Budget: 1, DatabaseMaxConns: 1, BudgetWait: 5 * time.Second,
		ConfigurePool: recycler.Configure})

	conn, err := p.DB(key(d.dbs[0])).Acquire(ctx)
	require.NoError(t, err)
	query(t, conn, d.dbs[0])
	recycler.Observe(conn.Conn(), "tenant_a")
	recycler.Observe(conn.Conn(), "tenant_b") // over the limit of 1
	require.Equal(t, 1, p.Stats().BudgetInUse)
	conn.Release()
	// The pool forgets the connection only after closing its socket (which gives the slot back).
	require.Eventually(t, func() bool { s := p.Stats(); return s.BudgetInUse == 0 && s.Conns == 0 }, 5*time.Second, 5*time.Millisecond,
		"the recycled connection is closed and its slot given back")
	require.EqualValues(t, 1, recycler.Recycled())

	conn, err = p.DB(key(d.dbs[1])).Acquire(ctx)
	require.NoError(t, err)
	query(t, conn, d.dbs[1])
	conn.Release()
	require.Zero(t, p.Stats().BudgetWaits, "the next database found its slot free")
	d.requireServerConnsWithin(t, 1)
}

// TestAUserWithoutPasswordKeepsThePassfile: only TENANTMEM_PLACEMENT_<N>_<LOGIN>_USER set, the
// password comes from libpq's passfile, as docs/scaling.md says; it used to be replaced by "".
// Not parallel: it sets PGPASSFILE.
func TestAUserWithoutPasswordKeepsThePassfile(t *testing.T) {
	d := newDeployment(t, 0)
	pass := filepath.Join(t.TempDir(), "pgpass")
	require.NoError(t, os.WriteFile(pass, []byte("db2.example:5432:main:app_router:from-passfile\n"), 0o600))
	t.Setenv("PGPASSFILE", pass)
	pl := registry.Placement{Name: "eu-2", Host: "db2.example", Port: 5432, Database: "main"}
	for _, tc := range []struct {
		given   string
		environ []string
		user    string
		want    string
	}{
		{"nothing configured", nil, "app_router", "from-passfile"},
		{"the user only", []string{"TENANTMEM_PLACEMENT_EU_2_ROUTER_USER=app_router"}, "", "from-passfile"},
		{"user and password", []string{"TENANTMEM_PLACEMENT_EU_2_ROUTER_USER=app_router",
			"TENANTMEM_PLACEMENT_EU_2_ROUTER_PASSWORD=from-env"}, "", "from-env"},
	} {
		t.Run(tc.given, func(t *testing.T) {
			p := d.pools(t, placement.Config{Credentials: placement.CredentialsFromEnv(tc.environ), DefaultUser: tc.user})
			pc, err := p.PoolConfigOf(pl)
			require.NoError(t, err)
			require.Equal(t, "app_router", pc.ConnConfig.User)
			require.Equal(t, tc.want, pc.ConnConfig.Password)
		})
	}
}
