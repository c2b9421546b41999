package placement

import (
	"cmp"
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/dberr"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// Errors. Every failure to reach a placement's database wraps ErrUnavailable (the router answers
// 503 with Retry-After); the others say why. A full connection budget is limit.ErrBusy instead.
var (
	// ErrUnavailable means a placement's database cannot be used right now: it is down or
	// unreachable, disabled, or missing credentials.
	ErrUnavailable = errors.New("placement unavailable")
	// ErrNoCredentials means no credentials are configured for a placement (file, environment or
	// passfile).
	ErrNoCredentials = errors.New("no credentials configured for this placement")
	// ErrDisabled means the placement is disabled: its tenants are not served.
	ErrDisabled = errors.New("placement is disabled")
	// ErrBudgetExhausted means no connection could be opened within the budget wait: every
	// connection of the budget was busy. It comes with a *limit.BusyError (limit.ErrBusy: HTTP
	// 503 with Retry-After 1s), the same answer as any other bounded wait for a connection.
	ErrBudgetExhausted = errors.New("connection budget exhausted")
	// ErrClosed means the Pools were closed.
	ErrClosed = errors.New("placement pools closed")
)

// Defaults of [Config].
const (
	DefaultDatabaseMaxConns = 2
	DefaultMaxPools         = 1000
	DefaultBudgetWait       = 5 * time.Second
	DefaultIdleTimeout      = time.Minute
	DefaultPlacementTTL     = time.Minute
	DefaultConnectTimeout   = 5 * time.Second
	// logEvery bounds how often one placement's failure is logged.
	logEvery = 30 * time.Second
)

// Config configures [Pools].
type Config struct {
	// Control is the pool of the control database (the local placement's main database). Its
	// location is served by it directly; it reads the placements; its connection settings (user,
	// password, TLS) are the local placement's. It is not counted in the budget and never closed
	// by Pools. Required.
	Control *pgxpool.Pool
	// Registry reads the placements' registry rows. Default: Control.
	Registry registry.DBTX
	// Login selects the credentials used on other placements. Default LoginRouter.
	Login Login
	// Credentials of the other placements (file and environment). The local placement uses
	// Control's.
	Credentials Credentials
	// DefaultUser is the user for a placement whose credential names none. Default: Control's user.
	DefaultUser string
	// MainMaxConns bounds the pool of each placement's main database (shared and schema tiers).
	// Default: Control's MaxConns.
	MainMaxConns int32
	// DatabaseMaxConns bounds the pool of each tenant database (database tier). Default 2.
	DatabaseMaxConns int32
	// Budget bounds the connections open at once across every pool but Control; a new connection
	// beyond it waits (closing idle connections of the least recently used pools) up to
	// BudgetWait, then fails with ErrBudgetExhausted. 0 means no budget.
	Budget int
	// BudgetWait is the longest a new connection waits for room in the budget. Default 5s.
	BudgetWait time.Duration
	// MaxPools bounds the pools kept open; beyond it the least recently used pool that no
	// transaction holds is closed. Default 1000.
	MaxPools int
	// IdleTimeout closes a pooled connection idle for longer. Default 1 minute.
	IdleTimeout time.Duration
	// PlacementTTL bounds how long a placement's registry row is trusted without an
	// [Pools.Invalidate]. Default 1 minute.
	PlacementTTL time.Duration
	// ConnectTimeout bounds each connection attempt to another placement. Default 5s.
	ConnectTimeout time.Duration
	// ConfigurePool, when set, adjusts the configuration of every pool Pools creates, before the
	// budget's own hooks are added (they run first and keep the ones it set). The router installs
	// its schema recycle limit (connrecycle) with it: a connection closed for that reason gives
	// its budget slot back like any other, when its socket is closed.
	ConfigurePool func(*pgxpool.Config)
	// Logger. Default: discard.
	Logger *slog.Logger
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.Login = cmp.Or(c.Login, LoginRouter)
	if c.Registry == nil && c.Control != nil {
		c.Registry = c.Control
	}
	if c.Control != nil {
		c.DefaultUser = cmp.Or(c.DefaultUser, c.Control.Config().ConnConfig.User)
		c.MainMaxConns = cmp.Or(c.MainMaxConns, c.Control.Config().MaxConns)
	}
	c.DatabaseMaxConns = cmp.Or(c.DatabaseMaxConns, DefaultDatabaseMaxConns)
	c.BudgetWait = cmp.Or(c.BudgetWait, DefaultBudgetWait)
	c.MaxPools = cmp.Or(c.MaxPools, DefaultMaxPools)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, DefaultIdleTimeout)
	c.PlacementTTL = cmp.Or(c.PlacementTTL, DefaultPlacementTTL)
	c.ConnectTimeout = cmp.Or(c.ConnectTimeout, DefaultConnectTimeout)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Control == nil:
		return errors.New("placement: Config.Control is required")
	case c.Login != LoginRouter && c.Login != LoginProvisioner:
		return fmt.Errorf("placement: unknown login %q", c.Login)
	case c.MainMaxConns < 1 || c.DatabaseMaxConns < 1:
		return errors.New("placement: pool sizes must be positive")
	case c.Budget < 0:
		return errors.New("placement: Budget must not be negative")
	case c.MaxPools < 1:
		return errors.New("placement: MaxPools must be positive")
	case c.BudgetWait < 0 || c.IdleTimeout < 0 || c.PlacementTTL < 0 || c.ConnectTimeout < 0:
		return errors.New("placement: durations must be positive")
	case c.Budget > 0 && int(c.DatabaseMaxConns) > c.Budget:
		return fmt.Errorf("placement: DatabaseMaxConns %d exceeds the budget %d", c.DatabaseMaxConns, c.Budget)
	}
	return nil
}

// Pools hands out connection pools for the databases of every placement: one pgxpool per
// (placement, database), created on first use, kept in least-recently-used order and closed when
// evicted (MaxPools) or when its placement's endpoint changed, but never while a transaction
// holds it. New connections of every pool but Control share one budget. A *Pools is safe for
// concurrent use.
type Pools struct {
	cfg    Config
	budget *budget

	mu         sync.Mutex
	pools      map[registry.DatabaseKey]*entry
	order      *list.List // of *entry, most recently used first
	placements map[string]*cachedPlacement
	logged     map[string]time.Time // placement -> last failure logged
	closed     bool
	closing    sync.WaitGroup // pools being closed in the background
}

type entry struct {
	key      registry.DatabaseKey
	endpoint string
	pool     *pgxpool.Pool
	refs     int           // callers of Acquire holding the pool
	elem     *list.Element // nil once retired
}

type cachedPlacement struct {
	p        registry.Placement
	loadedAt time.Time
}

// New returns Pools. It opens nothing until a database is used.
func New(cfg Config) (*Pools, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Pools{
		cfg: cfg, budget: newBudget(cfg.Budget),
		pools: map[registry.DatabaseKey]*entry{}, order: list.New(),
		placements: map[string]*cachedPlacement{}, logged: map[string]time.Time{},
	}, nil
}

// ConnectTimeout is Config.ConnectTimeout.
func (m *Pools) ConnectTimeout() time.Duration { return m.cfg.ConnectTimeout }

// Control is the control database's pool.
func (m *Pools) Control() *pgxpool.Pool { return m.cfg.Control }

// Acquirer hands out pooled connections; *pgxpool.Pool is one, and so is every database of
// [Pools.DB].
type Acquirer interface {
	Acquire(ctx context.Context) (*pgxpool.Conn, error)
}

// DB returns a database of a placement as an Acquirer: each Acquire takes a connection of that
// database's pool, creating the pool when needed. A pool is closed only when no connection of it
// is out (pgxpool's Close waits for those anyway), and an Acquire that meets a pool closed under
// it takes the next one. The control database is the control pool itself. DB does no I/O.
func (m *Pools) DB(key registry.DatabaseKey) Acquirer {
	if key.IsControl() {
		return m.cfg.Control
	}
	return db{m: m, key: key}
}

type db struct {
	m   *Pools
	key registry.DatabaseKey
}

func (d db) Acquire(ctx context.Context) (*pgxpool.Conn, error) {
	for attempt := 0; ; attempt++ {
		e, err := d.m.entry(ctx, d.key, false)
		if err != nil {
			return nil, err
		}
		conn, err := e.pool.Acquire(ctx)
		if err == nil {
			return conn, nil
		}
		if d.m.retired(e) && attempt < 3 {
			continue // evicted between the lookup and the acquire: take the new pool
		}
		return nil, d.m.unavailable(ctx, d.key, err)
	}
}

// unavailable wraps a failure to use a placement's database in ErrUnavailable (unless the caller
// gave up: then it stays the context's error) and logs it, naming the placement, at most every
// 30 seconds per placement.
func (m *Pools) unavailable(ctx context.Context, key registry.DatabaseKey, err error) error {
	if ctx.Err() != nil {
		return err
	}
	if errors.Is(err, limit.ErrBusy) {
		// The connection budget was full: the database may be fine (limit's 503, Retry-After 1s).
		return fmt.Errorf("placement %q (%s): %w", key.Placement, key, err)
	}
	m.logFailure(ctx, key.Placement, err)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// A pool closed under a connection being opened cancels it: not the caller's doing, so the
		// context's error must not reach the caller's error chain.
		return fmt.Errorf("placement %q (%s): %w: %s", key.Placement, key, ErrUnavailable, err.Error())
	}
	return fmt.Errorf("placement %q (%s): %w: %w", key.Placement, key, ErrUnavailable, err)
}

func (m *Pools) logFailure(ctx context.Context, placement string, err error) {
	m.mu.Lock()
	last, seen := m.logged[placement]
	now := time.Now()
	if seen && now.Sub(last) < logEvery {
		m.mu.Unlock()
		return
	}
	m.logged[placement] = now
	m.mu.Unlock()
	m.cfg.Logger.WarnContext(ctx, "placement unavailable", slog.String("placement", placement),
		slog.String("login", string(m.cfg.Login)), slog.String("error", err.Error()))
}

// Acquire returns the pool of a placement's database, creating it when needed, and a release
// function that must be called once the caller is done with it; until then the pool stays open.
// A disabled placement gives ErrDisabled (to the router login only), one without credentials
// ErrNoCredentials, an unknown one registry.ErrNotFound; all but the last wrap ErrUnavailable.
func (m *Pools) Acquire(ctx context.Context, key registry.DatabaseKey) (*pgxpool.Pool, func(), error) {
	if key.IsControl() {
		return m.cfg.Control, func() {}, nil
	}
	e, err := m.entry(ctx, key, true)
	if err != nil {
		return nil, nil, err
	}
	var once sync.Once
	return e.pool, func() { once.Do(func() { m.release(e) }) }, nil
}

// entry returns the pool entry of a database, creating it when needed; with lease it also counts
// the caller as a holder (release).
func (m *Pools) entry(ctx context.Context, key registry.DatabaseKey, lease bool) (*entry, error) {
	p, err := m.Placement(ctx, key.Placement)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return nil, err
		}
		return nil, m.unavailable(ctx, key, err)
	}
	if p.State == registry.PlacementDisabled && m.cfg.Login == LoginRouter {
		return nil, fmt.Errorf("placement %q: %w: %w", key.Placement, ErrUnavailable, ErrDisabled)
	}
	endpoint := endpointOf(p)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	e, ok := m.pools[key]
	if ok && e.endpoint != endpoint {
		// The placement was removed and registered again elsewhere: new connections go there.
		m.retireLocked(e)
		ok = false
	}
	if !ok {
		m.mu.Unlock()
		pc, err := m.poolConfig(p, key)
		if err != nil {
			return nil, m.unavailable(ctx, key, err)
		}
		pool, err := pgxpool.NewWithConfig(context.WithoutCancel(ctx), pc)
		if err != nil {
			return nil, m.unavailable(ctx, key, err)
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			pool.Close()
			return nil, ErrClosed
		}
		if e, ok = m.pools[key]; ok && e.endpoint == endpoint {
			// Another caller created it meanwhile: use theirs.
			m.closeLater(pool)
		} else {
			if ok {
				m.retireLocked(e)
			}
			e = &entry{key: key, endpoint: endpoint, pool: pool}
			e.elem = m.order.PushFront(e)
			m.pools[key] = e
		}
	}
	if lease {
		e.refs++
	}
	if e.elem != nil {
		m.order.MoveToFront(e.elem)
	}
	m.evictLocked(e)
	m.mu.Unlock()
	return e, nil
}

// Forget retires the pool of one database, e.g. one that was just dropped: its connections are
// closed once nobody holds the pool, and the next Acquire opens a new pool. Unknown keys and the
// control database are ignored.
func (m *Pools) Forget(key registry.DatabaseKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.pools[key]; ok {
		m.retireLocked(e)
	}
}

// retired reports whether an entry was taken out of use (evicted, replaced or closed).
func (m *Pools) retired(e *entry) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return e.elem == nil
}

func (m *Pools) release(e *entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.refs--
	if e.refs == 0 && e.elem == nil {
		m.closeLater(e.pool) // retired while leased: close it now that nobody holds it
	}
}

// retireLocked removes an entry from the map and the order; it is closed once no caller of
// Acquire holds it (and pgxpool's Close waits for its connections that are out).
func (m *Pools) retireLocked(e *entry) {
	if e.elem == nil {
		return
	}
	m.order.Remove(e.elem)
	e.elem = nil
	if m.pools[e.key] == e {
		delete(m.pools, e.key)
	}
	if e.refs == 0 {
		m.closeLater(e.pool)
	}
}

// evictLocked retires the least recently used pools that nobody holds and that have no
// connection out, while there are more than MaxPools; keep (just used) is never evicted.
func (m *Pools) evictLocked(keep *entry) {
	for el := m.order.Back(); el != nil && len(m.pools) > m.cfg.MaxPools; {
		prev := el.Prev()
		if e := el.Value.(*entry); e != keep && e.refs == 0 && idle(e.pool) {
			m.retireLocked(e)
		}
		el = prev
	}
}

// idle reports whether no connection of a pool is out or being opened.
func idle(p *pgxpool.Pool) bool {
	st := p.Stat()
	return st.AcquiredConns() == 0 && st.ConstructingConns() == 0
}

// closeLater closes a pool in the background (pgxpool.Close waits for connections in use and
// says goodbye to each server); Close waits for it.
func (m *Pools) closeLater(p *pgxpool.Pool) {
	m.closing.Add(1)
	go func() {
		defer m.closing.Done()
		p.Close()
	}()
}

// reclaim closes idle connections of the least recently used pools other than except, so that a
// new connection fits in the budget. It closes at most one pool's idle connections per call.
func (m *Pools) reclaim(except registry.DatabaseKey) {
	m.mu.Lock()
	var victims []*pgxpool.Pool
	for el := m.order.Back(); el != nil; el = el.Prev() {
		if e := el.Value.(*entry); e.key != except && e.pool.Stat().IdleConns() > 0 {
			victims = append(victims, e.pool)
			if len(victims) == 4 {
				break
			}
		}
	}
	m.mu.Unlock()
	for _, p := range victims {
		conns := p.AcquireAllIdle(context.Background())
		for _, c := range conns {
			_ = c.Conn().Close(context.Background())
			c.Release() // a closed connection is destroyed, not returned
		}
		if len(conns) > 0 {
			return
		}
	}
}

type registryKey struct{}

// WithRegistry returns a context whose registry reads (placement rows) go through db instead of
// the control pool: for a caller that holds one of the control pool's connections while others
// wait for the pool (the provisioner under a tenant's lock), so it never waits for itself.
func WithRegistry(ctx context.Context, db registry.DBTX) context.Context {
	return context.WithValue(ctx, registryKey{}, db)
}

// Placement returns a placement's registry row, cached for PlacementTTL or until Invalidate.
func (m *Pools) Placement(ctx context.Context, name string) (registry.Placement, error) {
	m.mu.Lock()
	cp, ok := m.placements[name]
	m.mu.Unlock()
	if ok && time.Since(cp.loadedAt) < m.cfg.PlacementTTL {
		return cp.p, nil
	}
	db := m.cfg.Registry
	if r, ok := ctx.Value(registryKey{}).(registry.DBTX); ok {
		db = r
	}
	p, err := registry.GetPlacement(ctx, db, name)
	if err != nil {
		return registry.Placement{}, err
	}
	m.mu.Lock()
	m.placements[name] = &cachedPlacement{p: p, loadedAt: time.Now()}
	m.mu.Unlock()
	return p, nil
}

// Invalidate forgets a placement's cached registry row (a notification said it changed): the next
// use reads it again, and its pools are replaced if its endpoint changed.
func (m *Pools) Invalidate(name string) {
	m.mu.Lock()
	delete(m.placements, name)
	m.mu.Unlock()
}

// InvalidateAll forgets every cached placement row.
func (m *Pools) InvalidateAll() {
	m.mu.Lock()
	clear(m.placements)
	m.mu.Unlock()
}

// endpointOf identifies where a placement's connections go.
func endpointOf(p registry.Placement) string {
	if p.Name == registry.LocalPlacement {
		return registry.LocalPlacement
	}
	return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) + "/" + p.Database
}

// ConnConfig returns the connection settings of a placement's database, as this process's login
// (a copy: the caller may change it). The local placement's come from the control pool with the
// database replaced; others are built from the registry row and the login's credentials, after
// PostgreSQL's environment variables, service file and passfile (pgx's libpq-compatible
// ParseConfig).
func (m *Pools) ConnConfig(ctx context.Context, key registry.DatabaseKey) (*pgx.ConnConfig, error) {
	p, err := m.Placement(ctx, key.Placement)
	if err != nil {
		return nil, err
	}
	pc, err := m.poolConfig(p, key)
	if err != nil {
		return nil, err
	}
	return pc.ConnConfig, nil
}

// PoolConfigOf returns the pool configuration of a placement given by value (one not registered
// yet, for `placement add`), as this process's login.
func (m *Pools) PoolConfigOf(p registry.Placement) (*pgxpool.Config, error) {
	return m.poolConfig(p, registry.DatabaseKey{Placement: p.Name})
}

// poolConfig builds the pgxpool configuration of one database of a placement.
func (m *Pools) poolConfig(p registry.Placement, key registry.DatabaseKey) (*pgxpool.Config, error) {
	var pc *pgxpool.Config
	if p.Name == registry.LocalPlacement {
		pc = m.cfg.Control.Config().Copy()
		// The control pool's own hooks belong to it; ConfigurePool installs what every pool needs.
		pc.AfterRelease, pc.BeforeClose = nil, nil
		if key.Database != "" {
			pc.ConnConfig.Database = key.Database
		}
	} else {
		cred, explicit := m.cfg.Credentials.Lookup(p.Name, m.cfg.Login)
		user := cmp.Or(cred.User, m.cfg.DefaultUser)
		dbname := cmp.Or(key.Database, p.Database)
		var err error
		pc, err = pgxpool.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=%s user=%s connect_timeout=%d",
			quoteValue(p.Host), p.Port, quoteValue(dbname), quoteValue(user), int(m.cfg.ConnectTimeout.Seconds())))
		if err != nil {
			return nil, fmt.Errorf("placement %q: connection settings: %w", p.Name, err)
		}
		switch {
		case explicit && !cred.NoPassword:
			pc.ConnConfig.Password = cred.Password
		case explicit:
			// A user without a password: the passfile's password for it, if it has one.
		case pc.ConnConfig.Password == "":
			return nil, fmt.Errorf("placement %q: %w for the %s login (credentials file, %s%s_%s_PASSWORD or passfile)",
				p.Name, ErrNoCredentials, m.cfg.Login, EnvPrefix, envName(p.Name), strings.ToUpper(string(m.cfg.Login)))
		}
	}
	pc.MinConns = 0
	pc.MaxConns = m.cfg.MainMaxConns
	if key.Database != "" {
		pc.MaxConns = m.cfg.DatabaseMaxConns
	}
	pc.MaxConnIdleTime = m.cfg.IdleTimeout
	pc.HealthCheckPeriod = min(m.cfg.IdleTimeout, time.Minute)
	if m.cfg.ConfigurePool != nil {
		m.cfg.ConfigurePool(pc)
	}
	if m.budget.slots == nil {
		return pc, nil
	}
	dial := pc.ConnConfig.DialFunc
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	pc.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if err := m.budget.acquire(ctx, m.cfg.BudgetWait, func() { m.reclaim(key) }); err != nil {
			return nil, err
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			m.budget.release()
			return nil, err
		}
		return &budgetConn{Conn: c, release: m.budget.release}, nil
	}
	// A connection given back while another waits for room in the budget wakes the waiter, which
	// closes the least recently used idle connection for it.
	keep := pc.AfterRelease
	pc.AfterRelease = func(c *pgx.Conn) bool {
		m.budget.released()
		return keep == nil || keep(c)
	}
	return pc, nil
}

// quoteValue quotes a value of a keyword/value connection string.
func quoteValue(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// Stats describes the pools at one moment.
type Stats struct {
	// Pools is the number of open pools (the control pool excepted).
	Pools int `json:"pools"`
	// Conns is the number of connections they hold, busy or idle; BudgetInUse the budget slots
	// taken (connections being opened included).
	Conns       int `json:"conns"`
	BudgetInUse int `json:"budget_in_use"`
	Budget      int `json:"budget"`
	// BudgetWaits counts connections that had to wait for a slot; BudgetRefused those that gave up.
	BudgetWaits   uint64 `json:"budget_waits"`
	BudgetRefused uint64 `json:"budget_refused"`
}

// Stats returns the current counts.
func (m *Pools) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Stats{Pools: len(m.pools), BudgetInUse: m.budget.inUse(), Budget: m.cfg.Budget,
		BudgetWaits: m.budget.waits.Load(), BudgetRefused: m.budget.refused.Load()}
	for _, e := range m.pools {
		s.Conns += int(e.pool.Stat().TotalConns())
	}
	return s
}

// Health is the state of one placement as this process sees it.
type Health struct {
	State registry.PlacementState `json:"state"`
	// Status is "ok", "disabled", "no_credentials" or "unreachable".
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// Health checks every registered placement's main database (a ping, at most timeout each, all at
// once) and returns the outcome by placement name. It fails only when the registry cannot be read.
func (m *Pools) Health(ctx context.Context, timeout time.Duration) (map[string]Health, error) {
	ps, err := registry.ListPlacements(ctx, m.cfg.Registry)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Health, len(ps))
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, p := range ps {
		h := Health{State: p.State}
		if p.State == registry.PlacementDisabled {
			h.Status = "disabled"
			mu.Lock()
			out[p.Name] = h
			mu.Unlock()
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			key := registry.DatabaseKey{Placement: p.Name}
			err := func() error {
				pool, release, err := m.Acquire(ctx, key)
				if err != nil {
					return err
				}
				defer release()
				if err := pool.Ping(ctx); err != nil {
					return m.unavailable(ctx, key, err)
				}
				return nil
			}()
			switch {
			case err == nil:
				h.Status = "ok"
			case errors.Is(err, ErrNoCredentials):
				h.Status, h.Error = "no_credentials", err.Error()
			default:
				h.Status, h.Error = "unreachable", err.Error()
			}
			mu.Lock()
			out[p.Name] = h
			mu.Unlock()
		})
	}
	wg.Wait()
	return out, nil
}

// Close closes every pool (waiting for connections in use to be given back) but the control
// pool, which belongs to the caller. Later uses fail with ErrClosed.
func (m *Pools) Close() {
	m.mu.Lock()
	m.closed = true
	for _, e := range m.pools {
		m.retireLocked(e)
	}
	m.mu.Unlock()
	m.closing.Wait()
}

// IsConnectionLoss reports whether err means a placement's database could not be used: the
// placement is unavailable (disabled, down, without credentials; ErrUnavailable), or the connection
// could not be opened or was lost (dberr.ConnectionLost). A full connection budget is not one: it
// is limit.ErrBusy.
func IsConnectionLoss(err error) bool {
	if err == nil || errors.Is(err, limit.ErrBusy) {
		return false
	}
	return errors.Is(err, ErrUnavailable) || dberr.ConnectionLost(err)
}
