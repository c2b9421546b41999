package dataplane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantmem/tenantmem/internal/connrecycle"
	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/rerank"
	"github.com/tenantmem/tenantmem/internal/routing"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// Defaults of [Config].
const (
	DefaultWorkerInterval    = 5 * time.Second
	DefaultReconcileInterval = 24 * time.Hour
	DefaultReconcileRate     = 50
	DefaultWorkerConcurrency = 2
	// DefaultListenTimeout bounds the wait for the first LISTEN at start.
	DefaultListenTimeout = 30 * time.Second
	// DefaultConnBudget is the default of Config.ConnBudget.
	DefaultConnBudget = 64
	// placementCheckTimeout bounds each placement's ping in GET /readyz.
	placementCheckTimeout = 2 * time.Second
	// DefaultMaxConns is the size of the router's pool for tenant work: room for several tenants
	// at their default of 4 requests in flight each.
	DefaultMaxConns = 16
	// registryConns is the size of the pool for registry reads (key lookups, readiness), kept
	// apart so that they never wait behind tenant work.
	registryConns = 4
	// probeTimeout bounds the start-up call that checks an HTTP embedding provider's dimension.
	probeTimeout = 15 * time.Second
)

// ErrUnsafeRole means the database login would bypass row-level security: it is a superuser, has
// BYPASSRLS, or is a member of the role that owns the tenant tables. The router refuses to run so.
var ErrUnsafeRole = errors.New("unsafe database role")

// ConfigError is a configuration the service cannot run with (a malformed URL, an embedding
// provider whose dimension differs from the deployment's). Fixing the configuration fixes it.
type ConfigError struct{ Err error }

// Error returns the message of the underlying error.
func (e *ConfigError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

func configErrorf(format string, args ...any) error {
	return &ConfigError{Err: fmt.Errorf(format, args...)}
}

// Config configures a [Service]. Zero values mean the documented default.
type Config struct {
	// DatabaseURL is the main database, logged in as the router role (tenantmem_router). Required.
	DatabaseURL string
	// MaxConns bounds the router pool for tenant work. Default [DefaultMaxConns] (16). Registry
	// reads (key lookups, readiness) use a separate pool of 4 connections.
	MaxConns int32
	// TierMaxConns bounds the connections one tier (shared, schema) may hold at once, so that
	// trouble in one tier (a lock on a shared table, a slow tenant schema) cannot take every
	// connection. The fences of tenants on other databases (whose fence transaction runs on this
	// pool for their whole request) have a share of the same size, so that an unreachable
	// placement cannot take them either. Default: three quarters of MaxConns.
	TierMaxConns int
	// AcquireWait bounds a request's wait for a connection; past it the request gets 503 with
	// Retry-After. Default limit.DefaultAcquireWait (3s).
	AcquireWait time.Duration
	// Limits are every tenant's default limits; zero fields take limit's defaults and
	// limit.Unlimited turns one off (see httpapi.RouterConfig.Limits).
	Limits limit.Limits
	// RequestTimeout bounds a whole request. Default httpapi.DefaultRequestTimeout (2 minutes).
	RequestTimeout time.Duration
	// QueueWait bounds a request's wait behind its tenant's requests in flight. Default
	// limit.DefaultQueueWait (2s).
	QueueWait time.Duration
	// BulkYield bounds how long each batch of a tenant's bulk work (an ingest's embedding slices
	// and inserts) waits for other tenants' interactive requests in flight. Default
	// httpapi.DefaultBulkYield (100ms); negative: never wait.
	BulkYield time.Duration
	// AloneMaxConcurrent is how many requests a tenant may have in flight while no other tenant
	// is active. Default limit.DefaultAloneMaxConcurrent (8); 1 turns lending off.
	AloneMaxConcurrent int
	// MaxChunksPerDocument bounds the chunks of one document. Default
	// memory.DefaultMaxChunksPerDocument (20,000).
	MaxChunksPerDocument int
	// PlacementCredentials are the router's credentials on placements other than local (file and
	// environment, read by cmd/router).
	PlacementCredentials placement.Credentials
	// ConnBudget bounds the connections open at once to every database but the control database
	// (placements' main databases and tenant databases); a new connection beyond it waits up to
	// AcquireWait, like any other wait for a connection. Default 64; see placement.Config.Budget.
	ConnBudget int
	// DatabaseMaxConns bounds the pool of each tenant database. Default 2.
	DatabaseMaxConns int32
	// PoolCacheSize bounds the per-database pools kept open. Default 1000.
	PoolCacheSize int
	// HandleCacheSize, KeyCacheSize and CacheTTL size the resolver's caches (routing.Config
	// defaults: 10,000, 10,000, 1 minute).
	HandleCacheSize, KeyCacheSize int
	CacheTTL                      time.Duration
	// StatementTimeout bounds each statement of a request or of the worker. Default
	// httpapi.DefaultStatementTimeout (30s).
	StatementTimeout time.Duration
	// BodyLimit is the largest request body. Default httpapi.DefaultRouterBodyLimit (12 MiB).
	BodyLimit int64
	// Embedding selects the embedding provider. Its Dimension (and OpenAI.Dimension) may be left
	// zero: the deployment's dimension (tenantmem_control.settings) is used; when set, it must equal
	// it.
	Embedding embed.Config
	// Provider, when set, is used instead of building one from Embedding (tests inject failures
	// with it). Its dimension must be the deployment's.
	Provider embed.Provider
	// Reranker configures the optional reranking stage (rerank: true in a search). An empty
	// BaseURL means none: such searches get 400.
	Reranker rerank.Config
	// HistoryFlushInterval is how often the search history is written in the background
	// (memory.Config.HistoryFlushInterval). Default 200ms.
	HistoryFlushInterval time.Duration
	// WorkerInterval is the longest the embedding worker sleeps between two looks at its work
	// queue when nothing is due (work queued by other replicas is found within it; this router's
	// ingest wakes it at once), and the first pause before a tenant whose queue could not be read
	// is tried again (doubling, up to 5 minutes). Default 5s.
	WorkerInterval time.Duration
	// ReconcileInterval is how often the worker starts a reconciliation pass over every active
	// tenant (at start, then at this interval), which lists embedding work the queue does not know
	// of. Default 24h.
	ReconcileInterval time.Duration
	// ReconcileRate bounds the reconciliation to this many tenants per second. Default 50.
	ReconcileRate float64
	// MaxConnSchemas is how many distinct schemas a pooled connection serves before it is closed
	// at release and replaced, bounding the catalog cache each backend keeps (about 190 KB per
	// schema; see docs/scaling.md). Default connrecycle.DefaultMaxSchemas (500); negative: never.
	MaxConnSchemas int
	// WorkerConcurrency is how many tenants the embedding worker serves at once. Default 2.
	WorkerConcurrency int
	// ShutdownTimeout bounds the wait for requests in flight at shutdown. Default
	// httpapi.DefaultShutdownTimeout (30s).
	ShutdownTimeout time.Duration
	// ListenTimeout bounds the wait for the registry LISTEN at start. Default 30s.
	ListenTimeout time.Duration
	// Logger receives logs. Default: discard.
	Logger *slog.Logger
	// Registerer receives the metrics; serve them with httpapi.MetricsHandler on a listener of
	// their own.
	Registerer prometheus.Registerer
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.StatementTimeout = cmp.Or(c.StatementTimeout, httpapi.DefaultStatementTimeout)
	c.WorkerInterval = cmp.Or(c.WorkerInterval, DefaultWorkerInterval)
	c.ReconcileInterval = cmp.Or(c.ReconcileInterval, DefaultReconcileInterval)
	c.ReconcileRate = cmp.Or(c.ReconcileRate, DefaultReconcileRate)
	c.MaxConnSchemas = cmp.Or(c.MaxConnSchemas, connrecycle.DefaultMaxSchemas)
	c.WorkerConcurrency = cmp.Or(c.WorkerConcurrency, DefaultWorkerConcurrency)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, httpapi.DefaultShutdownTimeout)
	c.ListenTimeout = cmp.Or(c.ListenTimeout, DefaultListenTimeout)
	c.MaxConns = cmp.Or(c.MaxConns, DefaultMaxConns)
	c.TierMaxConns = cmp.Or(c.TierMaxConns, max(1, int(c.MaxConns)*3/4))
	c.AcquireWait = cmp.Or(c.AcquireWait, limit.DefaultAcquireWait)
	c.RequestTimeout = cmp.Or(c.RequestTimeout, httpapi.DefaultRequestTimeout)
	c.ConnBudget = cmp.Or(c.ConnBudget, DefaultConnBudget)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.DatabaseURL == "":
		return configErrorf("dataplane: the database URL is required")
	case c.MaxConns < 0:
		return configErrorf("dataplane: max conns must not be negative, got %d", c.MaxConns)
	case c.ConnBudget < 0 || c.DatabaseMaxConns < 0 || c.PoolCacheSize < 0:
		return configErrorf("dataplane: the connection budget and pool sizes must not be negative")
	case c.TierMaxConns < 1 || c.TierMaxConns > int(c.MaxConns):
		return configErrorf("dataplane: tier max conns must be between 1 and max conns (%d), got %d", c.MaxConns, c.TierMaxConns)
	case c.AcquireWait < 0 || c.RequestTimeout < 0:
		return configErrorf("dataplane: durations must be positive")
	case c.MaxChunksPerDocument < 0:
		return configErrorf("dataplane: max chunks per document must be positive, got %d", c.MaxChunksPerDocument)
	case c.HandleCacheSize < 0 || c.KeyCacheSize < 0:
		return configErrorf("dataplane: cache sizes must be positive")
	case c.CacheTTL < 0 || c.StatementTimeout < 0 || c.WorkerInterval < 0 || c.ReconcileInterval < 0 ||
		c.ShutdownTimeout < 0 || c.ListenTimeout < 0:
		return configErrorf("dataplane: durations must be positive")
	case c.ReconcileRate < 0:
		return configErrorf("dataplane: the reconcile rate must be positive, got %g", c.ReconcileRate)
	case c.WorkerConcurrency < 1:
		return configErrorf("dataplane: worker concurrency must be positive, got %d", c.WorkerConcurrency)
	case c.BodyLimit < 0:
		return configErrorf("dataplane: body limit must be positive, got %d", c.BodyLimit)
	}
	return nil
}

// Service is a running data plane: the router pool, resolver, engine, embedding worker and HTTP
// handler. Build it with [Open], serve with [Service.Run], release with [Service.Close].
type Service struct {
	cfg      Config
	pool     *pgxpool.Pool
	pools    *placement.Pools
	registry *pgxpool.Pool
	gates    map[registry.Tier]*limit.Gate
	listenCC *pgx.ConnConfig
	resolver *routing.Resolver
	engine   *memory.Engine
	worker   *memory.Worker
	handler  http.Handler
	settings registry.Settings
	provider embed.Provider
	// recycler closes pooled connections that served MaxConnSchemas schemas (the schema recycle limit).
	recycler *connrecycle.Recycler
	// queues are the work queues the embedding worker serves, by database (see runWorker).
	queuesMu sync.Mutex
	queues   map[registry.DatabaseKey]*workQueue
	// refreshNow asks the worker to read the list of databases again (ingest in one it lacks).
	refreshNow chan struct{}
	// fenceGate is the share of the pool held by the fences of tenants elsewhere (routing.Config.FenceGate).
	fenceGate *limit.Gate
}

// Open connects as the router role, refuses a role that would bypass row-level security
// ([ErrUnsafeRole]), reads the deployment settings (provision.ErrNotInitialized before
// `provisioner init`), builds the embedding provider for the deployment's dimension (a
// [*ConfigError] when it cannot match) and the router. It opens no listener.
func Open(ctx context.Context, cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, configErrorf("database URL: %w", err)
	}
	rc := pc.Copy()
	pc.MaxConns = cfg.MaxConns
	rc.MaxConns, rc.MinConns = registryConns, 0
	// Only the tenant pool touches tenant schemas: the registry pool needs no recycling.
	recycler := connrecycle.New(cfg.MaxConnSchemas)
	recycler.Configure(pc)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	regPool, err := pgxpool.NewWithConfig(ctx, rc)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	s := &Service{cfg: cfg, pool: pool, registry: regPool, listenCC: pc.ConnConfig.Copy(), recycler: recycler,
		queues: map[registry.DatabaseKey]*workQueue{}, refreshNow: make(chan struct{}, 1),
		gates: map[registry.Tier]*limit.Gate{
			registry.TierShared: limit.NewGate("shared tier connection", cfg.TierMaxConns),
			registry.TierSchema: limit.NewGate("schema tier connection", cfg.TierMaxConns),
		},
		fenceGate: limit.NewGate("connection for the fence of a tenant on another database", cfg.TierMaxConns)}
	if err := s.open(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Service) open(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if err := checkRole(ctx, s.pool); err != nil {
		return err
	}
	settings, err := registry.GetSettings(ctx, s.pool)
	if errors.Is(err, registry.ErrNotFound) {
		return provision.ErrNotInitialized
	}
	if err != nil {
		return err
	}
	s.settings = settings
	if err := checkNotOwner(ctx, s.pool, settings.OwnerRole); err != nil {
		return err
	}
	if err := checkMigrated(ctx, s.pool); err != nil {
		return err
	}
	if s.provider, err = s.newProvider(ctx); err != nil {
		return err
	}
	logger := s.cfg.Logger
	mc := memory.Config{Embedder: s.provider, Logger: logger, AsyncHistory: true, HistoryFlushInterval: s.cfg.HistoryFlushInterval,
		MaxChunksPerDocument: s.cfg.MaxChunksPerDocument}
	if s.cfg.Reranker.BaseURL != "" {
		rr, err := rerank.New(s.cfg.Reranker)
		if err != nil {
			return &ConfigError{Err: err}
		}
		mc.Reranker, mc.RerankTimeout = rr, s.cfg.Reranker.Timeout
	}
	if s.engine, err = memory.New(mc); err != nil {
		return &ConfigError{Err: err}
	}
	if s.worker, err = memory.NewWorker(memory.WorkerConfig{Embedder: s.provider, Logger: logger}); err != nil {
		return err
	}
	if s.pools, err = placement.New(placement.Config{
		Control:          s.pool,
		Registry:         s.registry,
		Login:            placement.LoginRouter,
		Credentials:      s.cfg.PlacementCredentials,
		DefaultUser:      settings.RouterRole,
		DatabaseMaxConns: s.cfg.DatabaseMaxConns,
		Budget:           s.cfg.ConnBudget,
		BudgetWait:       s.cfg.AcquireWait,
		MaxPools:         s.cfg.PoolCacheSize,
		// Every pool's connections are recycled at the schema recycle limit too; a recycled
		// connection gives its slot of the budget back when it is closed.
		ConfigurePool: s.recycler.Configure,
		Logger:        logger,
	}); err != nil {
		return &ConfigError{Err: err}
	}
	if s.cfg.Registerer != nil {
		if err := s.cfg.Registerer.Register(placement.NewCollector(s.pools)); err != nil &&
			!errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return fmt.Errorf("register placement metrics: %w", err)
		}
	}
	if s.resolver, err = routing.New(routing.Config{Pool: s.pool, Registry: s.registry, Pools: s.pools,
		Handles: s.cfg.HandleCacheSize, Keys: s.cfg.KeyCacheSize, TTL: s.cfg.CacheTTL, Logger: logger, Gates: s.gates,
		AcquireWait: s.cfg.AcquireWait, ObserveConn: s.recycler.Observe, FenceGate: s.fenceGate}); err != nil {
		return &ConfigError{Err: err}
	}
	s.handler, err = httpapi.NewRouter(httpapi.RouterConfig{
		Resolver:           s.resolver,
		Engine:             s.engine,
		Logger:             logger,
		Registerer:         s.cfg.Registerer,
		BodyLimit:          s.cfg.BodyLimit,
		StatementTimeout:   s.cfg.StatementTimeout,
		RequestTimeout:     s.cfg.RequestTimeout,
		QueueWait:          s.cfg.QueueWait,
		BulkYield:          s.cfg.BulkYield,
		AloneMaxConcurrent: s.cfg.AloneMaxConcurrent,
		Limits:             s.cfg.Limits,
		Ready:              httpapi.RegistryReady(s.registry),
		ReadyDetails:       s.readyDetails,
		// Ingest listed the tenant in its placement's work queue, in its own transaction; this
		// only saves the worker its wait.
		OnIngest: func(h *routing.Handle, _ int) { s.wakeWorker(h.Location.Key()) },
	})
	if err != nil {
		return &ConfigError{Err: err}
	}
	if err := s.registerMetrics(); err != nil {
		return &ConfigError{Err: err}
	}
	logger.InfoContext(ctx, "router ready to serve", slog.String("embedder", s.provider.Name()),
		slog.Int("embedding_dimension", settings.EmbeddingDimension))
	return nil
}

// registerMetrics adds the data plane's own metrics to Registerer: connections recycled at the
// schema recycle limit, and whether the embedding provider's circuit breaker is open.
func (s *Service) registerMetrics() error {
	reg := s.cfg.Registerer
	if reg == nil {
		return nil
	}
	cs := []prometheus.Collector{prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tenantmem_router_connections_recycled_total",
		Help: "Database connections closed for having served more than --max-conn-schemas tenant schemas.",
	}, func() float64 { return float64(s.recycler.Recycled()) })}
	if g, ok := s.provider.(embed.Gate); ok {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tenantmem_embedding_breaker_open",
			Help: "1 while the embedding provider's circuit breaker fails calls fast (ingest queues, vector search answers 503).",
		}, func() float64 {
			if g.OpenFor() > 0 {
				return 1
			}
			return 0
		}))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("dataplane: metrics: %w", err)
		}
	}
	return nil
}

// checkRole refuses a login that row-level security would not bind: a superuser or a role with
// BYPASSRLS.
func checkRole(ctx context.Context, pool *pgxpool.Pool) error {
	var (
		user          string
		super, bypass bool
	)
	if err := pool.QueryRow(ctx, `SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user`).
		Scan(&user, &super, &bypass); err != nil {
		return fmt.Errorf("check the database role: %w", err)
	}
	switch {
	case super:
		return fmt.Errorf("%w: %s is a superuser, which bypasses row-level security; log in as the router role (%s)",
			ErrUnsafeRole, user, provision.DefaultRouterRole)
	case bypass:
		return fmt.Errorf("%w: %s has BYPASSRLS, which bypasses row-level security; log in as the router role (%s)",
			ErrUnsafeRole, user, provision.DefaultRouterRole)
	}
	return nil
}

// checkMigrated refuses a database whose placement schema (`provisioner migrate`) is missing:
// ingest lists tenants with embedding work there.
func checkMigrated(ctx context.Context, pool *pgxpool.Pool) error {
	var ok bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, schema.PlacementSchema+".embedding_work").Scan(&ok); err != nil {
		return fmt.Errorf("check the database: %w", err)
	}
	if !ok {
		return fmt.Errorf("%w: the database lacks %s.embedding_work: run `provisioner migrate` (or init) first",
			provision.ErrNotInitialized, schema.PlacementSchema)
	}
	return nil
}

// checkNotOwner refuses a login that is a member of the role owning the tenant tables: it could
// SET ROLE to it and turn row-level security off.
func checkNotOwner(ctx context.Context, pool *pgxpool.Pool, ownerRole string) error {
	var (
		user   string
		member bool
	)
	err := pool.QueryRow(ctx, `SELECT current_user, pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = $1`,
		ownerRole).Scan(&user, &member)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("check the database role: the owner role %q does not exist", ownerRole)
	}
	if err != nil {
		return fmt.Errorf("check the database role: %w", err)
	}
	if member {
		return fmt.Errorf("%w: %s is a member of %s, which owns the tenant tables; log in as the router role (%s)",
			ErrUnsafeRole, user, ownerRole, provision.DefaultRouterRole)
	}
	return nil
}

// newProvider builds the embedding provider for the deployment's dimension and, for an HTTP
// provider, checks with one call that its vectors have that dimension. A provider that cannot be
// reached is only a warning: ingest queues the chunks and text search works meanwhile.
func (s *Service) newProvider(ctx context.Context) (embed.Provider, error) {
	ec := s.cfg.Embedding
	dim := s.settings.EmbeddingDimension
	if p := s.cfg.Provider; p != nil {
		if p.Dimension() != dim {
			return nil, configErrorf("embedding provider %s has dimension %d, the deployment %d", p.Name(), p.Dimension(), dim)
		}
		return p, nil
	}
	for _, d := range []int{ec.Dimension, ec.OpenAI.Dimension} {
		if d != 0 && d != dim {
			return nil, configErrorf("embedding dimension %d differs from the deployment's %d (fixed at `provisioner init`)", d, dim)
		}
	}
	ec.Dimension, ec.OpenAI.Dimension = dim, dim
	if ec.OpenAI.Logger == nil {
		ec.OpenAI.Logger = s.cfg.Logger
	}
	p, err := embed.New(ec)
	if err != nil {
		return nil, &ConfigError{Err: err}
	}
	if ec.WithDefaults().Kind == embed.KindBuiltin {
		return p, nil
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, err = p.Embed(pctx, []string{"tenantmem dimension check"})
	switch {
	case errors.Is(err, embed.ErrDimensionMismatch):
		return nil, &ConfigError{Err: fmt.Errorf("embedding provider %s: %w", p.Name(), err)}
	case err != nil:
		s.cfg.Logger.WarnContext(ctx, "the embedding provider failed its start-up check; ingest will queue embeddings until it answers",
			slog.String("embedder", p.Name()), slog.String("error", err.Error()))
	}
	return p, nil
}

// Handler is the router's HTTP handler.
func (s *Service) Handler() http.Handler { return s.handler }

// Resolver is the router's tenant resolver.
func (s *Service) Resolver() *routing.Resolver { return s.resolver }

// Pools are the router's per-database pools.
func (s *Service) Pools() *placement.Pools { return s.pools }

func (s *Service) scopeOf(pool memory.Pool, schemaName, ownerID string) memory.Scope {
	return memory.Scope{Pool: pool, Schema: schemaName, OwnerID: ownerID, StatementTimeout: s.cfg.StatementTimeout,
		Observe: s.recycler.Observe}
}

// RecycledConns counts the pooled connections closed for having served MaxConnSchemas schemas.
func (s *Service) RecycledConns() uint64 { return s.recycler.Recycled() }

// Run serves the router on ln until ctx ends, then shuts down gracefully: it stops accepting,
// finishes the requests in flight (up to ShutdownTimeout), then stops the embedding worker and the
// registry listener. The router starts answering only once the registry LISTEN is in place, so a
// suspension is honoured from the first request. Run closes ln. It returns nil after a shutdown
// caused by ctx.
func (s *Service) Run(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait() // deferred first, so it runs after stop
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()

	listening := make(chan struct{})
	var once sync.Once
	wg.Go(func() {
		err := routing.Listen(bg, routing.ListenerConfig{
			ConnConfig:  s.listenCC,
			Resolver:    s.resolver,
			Logger:      s.cfg.Logger,
			OnListening: func() { once.Do(func() { close(listening) }) },
		})
		if err != nil && bg.Err() == nil {
			s.cfg.Logger.ErrorContext(bg, "registry listener stopped", slog.String("error", err.Error()))
		}
	})
	timer := time.NewTimer(s.cfg.ListenTimeout)
	defer timer.Stop()
	select {
	case <-listening:
	case <-ctx.Done():
		_ = ln.Close()
		return nil
	case <-timer.C:
		_ = ln.Close()
		return fmt.Errorf("no LISTEN on %s after %s: is the database reachable?", registry.Channel, s.cfg.ListenTimeout)
	}

	wg.Go(func() { s.runWorker(bg) })
	// The search history writer stops (writing what is queued) only after the requests in
	// flight are done: it has its own context, cancelled after Serve returns.
	hctx, stopHistory := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHistory()
	historyDone := make(chan struct{})
	go func() { defer close(historyDone); s.engine.RunHistory(hctx) }()
	defer func() { stopHistory(); <-historyDone }()

	srv, err := httpapi.NewServer(httpapi.ServerConfig{Handler: s.handler, Logger: s.cfg.Logger,
		ShutdownTimeout: s.cfg.ShutdownTimeout})
	if err != nil {
		_ = ln.Close()
		return err
	}
	s.cfg.Logger.InfoContext(ctx, "router listening", slog.String("addr", ln.Addr().String()))
	// Serve returns once the requests in flight are done; only then stop the worker and listener.
	err = srv.Serve(ctx, ln)
	stop()
	return err
}

// Close releases the pools. Call it after Run returned.
func (s *Service) Close() {
	if s.pools != nil {
		s.pools.Close()
	}
	s.pool.Close()
	s.registry.Close()
}

// PoolDetails is the state of a pool in GET /readyz.
type PoolDetails struct {
	Acquired int32 `json:"acquired"`
	Idle     int32 `json:"idle"`
	Max      int32 `json:"max"`
}

// fenceGateName is the fence gate's entry among the tiers of GET /readyz: the fences of tenants
// whose rows are in another database (database tier, other placements) share the pool too.
const fenceGateName = "elsewhere_fence"

// GateDetails is the state of a tier's share of the pool in GET /readyz.
type GateDetails struct {
	InUse int `json:"in_use"`
	Size  int `json:"size"`
}

// ReadyDetails is the "details" of GET /readyz: what may be in trouble without making the whole
// router unready. A tier whose share is full, or a listener that is reconnecting (every request
// then reads the registry), shows here while the router keeps serving the others.
type ReadyDetails struct {
	// Listener is "listening", or "reconnecting" while the registry LISTEN is down.
	Listener string                 `json:"listener"`
	Pool     PoolDetails            `json:"pool"`
	Registry PoolDetails            `json:"registry_pool"`
	Tiers    map[string]GateDetails `json:"tiers"`
	// Placements is each placement's state and health: "ok", "unreachable", "no_credentials" or
	// "disabled" (placement.Pools.Health). One placement's trouble never makes the router unready.
	Placements map[string]placement.Health `json:"placements,omitempty"`
	// PlacementPools counts the pools of other databases and the connection budget.
	PlacementPools placement.Stats `json:"placement_pools"`
}

func (s *Service) readyDetails(ctx context.Context) any {
	pd := func(p *pgxpool.Pool) PoolDetails {
		st := p.Stat()
		return PoolDetails{Acquired: st.AcquiredConns(), Idle: st.IdleConns(), Max: st.MaxConns()}
	}
	d := ReadyDetails{Listener: "listening", Pool: pd(s.pool), Registry: pd(s.registry), Tiers: map[string]GateDetails{}}
	if !s.resolver.Caching() {
		d.Listener = "reconnecting"
	}
	for tier, g := range s.gates {
		inUse, size := g.Usage()
		d.Tiers[string(tier)] = GateDetails{InUse: inUse, Size: size}
	}
	inUse, size := s.fenceGate.Usage()
	d.Tiers[fenceGateName] = GateDetails{InUse: inUse, Size: size}
	if h, err := s.pools.Health(ctx, placementCheckTimeout); err == nil {
		d.Placements = h
	}
	d.PlacementPools = s.pools.Stats()
	return d
}
