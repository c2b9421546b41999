package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/tenantmem/tenantmem/internal/command"

	"github.com/alecthomas/kong"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmem/tenantmem/internal/dataplane"
	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/rerank"
	"github.com/tenantmem/tenantmem/internal/version"
)

const (
	envEmbeddingAPIKey = "TENANTMEM_EMBEDDING_API_KEY" //nolint:gosec // the variable's name, not a credential
	envRerankerAPIKey  = "TENANTMEM_RERANKER_API_KEY"  //nolint:gosec // the variable's name, not a credential
)

// Main runs the router. main wires it to the process (arguments, signals, standard streams,
// environment); tests run it in-process with their own.
type Main struct {
	// Stdout receives --help; Stderr receives logs (JSON) and the one-line error of a failed start.
	Stdout, Stderr io.Writer
	// LookupEnv reads the environment (TENANTMEM_*). Default: nothing is set.
	LookupEnv func(key string) (string, bool)
	// Environ lists the environment ("KEY=value"), for the per-placement credential variables
	// (TENANTMEM_PLACEMENT_<NAME>_ROUTER_USER, _PASSWORD). Default: none.
	Environ func() []string
	// OnListen, when set, is called with the address the router listens on, before serving.
	OnListen func(addr net.Addr)
	// OnMetricsListen, when set, is called with the address of the metrics listener.
	OnMetricsListen func(addr net.Addr)
}

// cli is the command line; every flag also has a TENANTMEM_* environment variable.
type cli struct {
	DatabaseURL      string        `name:"database-url" env:"TENANTMEM_ROUTER_DATABASE_URL,TENANTMEM_DATABASE_URL" required:"" placeholder:"URL" help:"PostgreSQL URL of the main database, logged in as the router role (tenantmem_router); a superuser, a BYPASSRLS role or a member of the owner role is refused."`
	Listen           string        `name:"listen" env:"TENANTMEM_ROUTER_LISTEN" default:"127.0.0.1:8080" placeholder:"ADDR" help:"Address to listen on (default ${default})."`
	HandleCacheSize  int           `name:"handle-cache-size" env:"TENANTMEM_HANDLE_CACHE_SIZE" default:"10000" help:"Tenant handles kept in the LRU (default ${default})."`
	KeyCacheSize     int           `name:"key-cache-size" env:"TENANTMEM_KEY_CACHE_SIZE" default:"10000" help:"API keys kept in the LRU (default ${default})."`
	CacheTTL         time.Duration `name:"cache-ttl" env:"TENANTMEM_CACHE_TTL" default:"1m" help:"Longest a cached key or handle is trusted without a notification (default ${default})."`
	StatementTimeout time.Duration `name:"statement-timeout" env:"TENANTMEM_STATEMENT_TIMEOUT" default:"30s" help:"Per-statement timeout of a request, set transaction-locally; a request over it gets 503 (default ${default})."`
	BodyLimit        int64         `name:"body-limit" env:"TENANTMEM_BODY_LIMIT" default:"${body_limit}" placeholder:"BYTES" help:"Largest request body in bytes; larger ones get 413 (default ${default}, 12 MiB)."`
	MaxConns         int32         `name:"max-conns" env:"TENANTMEM_MAX_CONNS" default:"16" help:"Database connections for tenant work (default ${default}); registry reads have 4 of their own."`
	TierMaxConns     int           `name:"tier-max-conns" env:"TENANTMEM_TIER_MAX_CONNS" default:"0" help:"Connections one tier (shared, schema) may hold at once; 0 means three quarters of --max-conns."`
	AcquireTimeout   time.Duration `name:"acquire-timeout" env:"TENANTMEM_ACQUIRE_TIMEOUT" default:"3s" help:"Longest wait for a database connection; a request that waits longer gets 503 with Retry-After (default ${default})."`
	RequestTimeout   time.Duration `name:"request-timeout" env:"TENANTMEM_REQUEST_TIMEOUT" default:"2m" help:"Longest a request may take, embedding included; beyond it 503 with Retry-After (default ${default})."`
	ShutdownTimeout  time.Duration `name:"shutdown-timeout" env:"TENANTMEM_SHUTDOWN_TIMEOUT" default:"30s" help:"How long a shutdown waits for requests in flight before cancelling them; the exit code is 0 either way (default ${default})."`
	MetricsListen    string        `name:"metrics-listen" env:"TENANTMEM_ROUTER_METRICS_LISTEN" default:"127.0.0.1:9080" placeholder:"ADDR" help:"Address of the Prometheus /metrics listener, apart from the tenant-facing port (default ${default})."`

	TenantRate               float64       `name:"tenant-rate" env:"TENANTMEM_TENANT_RATE" default:"500" help:"Default requests per second of one tenant (token bucket); 0 means no limit (default ${default}). Per-tenant overrides: provisioner tenant limits."`
	TenantBurst              int           `name:"tenant-burst" env:"TENANTMEM_TENANT_BURST" default:"1000" help:"Default burst of one tenant above its rate; 0 means the rate rounded up (default ${default})."`
	TenantMaxConcurrent      int           `name:"tenant-max-concurrent" env:"TENANTMEM_TENANT_MAX_CONCURRENT" default:"${tenant_max_concurrent}" help:"Default requests of one tenant in flight at once, the others wait in its queue; 0 means no limit (default ${default}: half the CPUs, at least 1)."`
	TenantAloneMaxConcurrent int           `name:"tenant-max-concurrent-alone" env:"TENANTMEM_TENANT_MAX_CONCURRENT_ALONE" default:"8" help:"Requests a tenant may have in flight while no other tenant is active (idle capacity is lent; the cap returns as soon as another tenant sends a request); 1 turns lending off (default ${default})."`
	BulkYield                time.Duration `name:"bulk-yield" env:"TENANTMEM_BULK_YIELD" default:"100ms" help:"Longest wait of each batch of a tenant's ingest for other tenants' searches and reads in flight, so a big ingest does not slow them; 0 turns it off (default ${default})."`
	TenantQueueWait          time.Duration `name:"tenant-queue-wait" env:"TENANTMEM_TENANT_QUEUE_WAIT" default:"2s" help:"Longest wait of a request behind its tenant's requests in flight; 429 beyond (default ${default})."`
	TenantMaxDocuments       int64         `name:"tenant-max-documents" env:"TENANTMEM_TENANT_MAX_DOCUMENTS" default:"1000000" help:"Default document quota of one tenant; 0 means no quota (default ${default})."`
	TenantMaxChunks          int64         `name:"tenant-max-chunks" env:"TENANTMEM_TENANT_MAX_CHUNKS" default:"10000000" help:"Default chunk quota of one tenant; 0 means no quota (default ${default})."`
	TenantMaxBytes           int64         `name:"tenant-max-bytes" env:"TENANTMEM_TENANT_MAX_BYTES" default:"10737418240" placeholder:"BYTES" help:"Default quota of document content of one tenant, in bytes; 0 means no quota (default ${default}, 10 GiB)."`
	MaxChunksPerDocument     int           `name:"max-chunks-per-document" env:"TENANTMEM_MAX_CHUNKS_PER_DOCUMENT" default:"20000" help:"Most chunks one document may make; larger ones get 413 (default ${default})."`

	PlacementCredentials string `name:"placement-credentials" env:"TENANTMEM_PLACEMENT_CREDENTIALS" placeholder:"FILE" help:"Credentials file for placements other than local: lines placement:login:user:password (see docs/scaling.md); mode 600."`
	ConnBudget           int    `name:"conn-budget" env:"TENANTMEM_CONN_BUDGET" default:"64" help:"Connections open at once to every database but the control database (placements' main databases, tenant databases); a new one beyond it waits up to --acquire-timeout (default ${default})."`
	DatabaseMaxConns     int32  `name:"database-max-conns" env:"TENANTMEM_DATABASE_MAX_CONNS" default:"2" help:"Connections of the pool of each tenant database (default ${default})."`
	PoolCacheSize        int    `name:"pool-cache-size" env:"TENANTMEM_POOL_CACHE_SIZE" default:"1000" help:"Per-database pools kept open; the least recently used idle one is closed beyond it (default ${default})."`

	Embedder               string `name:"embedder" env:"TENANTMEM_EMBEDDER" default:"builtin" enum:"builtin,openai" help:"Embedding provider: builtin (offline) or openai (any OpenAI-compatible server; API key from $$TENANTMEM_EMBEDDING_API_KEY)."`
	EmbeddingBaseURL       string `name:"embedding-base-url" env:"TENANTMEM_EMBEDDING_BASE_URL" placeholder:"URL" help:"Base URL of the OpenAI-compatible server (default https://api.openai.com)."`
	EmbeddingModel         string `name:"embedding-model" env:"TENANTMEM_EMBEDDING_MODEL" placeholder:"NAME" help:"Embedding model (required with --embedder openai)."`
	EmbeddingDimension     int    `name:"embedding-dimension" env:"TENANTMEM_EMBEDDING_DIMENSION" default:"0" help:"Expected embedding dimension; 0 takes the deployment's (fixed at init). A different value refuses to start."`
	EmbeddingSendDimension bool   `name:"embedding-send-dimensions" env:"TENANTMEM_EMBEDDING_SEND_DIMENSIONS" help:"Send \"dimensions\" in every request, for models that can shorten their vectors."`

	RerankerURL     string        `name:"reranker-url" env:"TENANTMEM_RERANKER_URL" placeholder:"URL" help:"Base URL of a reranking server with the common /rerank API (query + documents -> scores); enables rerank: true in searches. API key from $$TENANTMEM_RERANKER_API_KEY."`
	RerankerModel   string        `name:"reranker-model" env:"TENANTMEM_RERANKER_MODEL" placeholder:"NAME" help:"Model name sent to the reranker."`
	RerankerTimeout time.Duration `name:"reranker-timeout" env:"TENANTMEM_RERANKER_TIMEOUT" default:"2s" help:"Longest wait for the reranker; past it results keep the unreranked order, marked degraded (default ${default})."`

	WorkerInterval    time.Duration `name:"worker-interval" env:"TENANTMEM_WORKER_INTERVAL" default:"5s" help:"Longest pause between two looks at the embedding work queue, and first retry pause of a tenant whose queue could not be read (doubling up to 5m) (default ${default})."`
	ReconcileInterval time.Duration `name:"reconcile-interval" env:"TENANTMEM_WORKER_RECONCILE_INTERVAL" default:"24h" help:"How often the rate-bounded check of every active tenant for unlisted embedding work starts (also at start) (default ${default})."`
	ReconcileRate     float64       `name:"reconcile-rate" env:"TENANTMEM_WORKER_RECONCILE_RATE" default:"50" help:"Tenants per second that check visits (default ${default})."`
	WorkerConcurrency int           `name:"worker-concurrency" env:"TENANTMEM_WORKER_CONCURRENCY" default:"2" help:"Tenants the embedding worker serves at once (default ${default})."`
	MaxConnSchemas    int           `name:"max-conn-schemas" env:"TENANTMEM_MAX_CONN_SCHEMAS" default:"500" help:"Distinct tenant schemas a database connection serves before it is replaced, bounding its server-side catalog cache; -1: never (default ${default}; see docs/scaling.md)."`

	LogLevel string              `name:"log-level" env:"TENANTMEM_LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level: debug, info, warn or error (JSON logs on stderr)."`
	Version  command.VersionFlag `name:"version" help:"Print the version (release, commit, build date) and exit."`
}

// Run parses the command line (without the program name), serves until ctx ends, and returns the
// exit code. Cancelling ctx is the graceful shutdown: requests in flight finish first.
func (m *Main) Run(ctx context.Context, args []string) int {
	o := command.IO{Stdout: m.Stdout, Stderr: m.Stderr, LookupEnv: m.LookupEnv}.WithDefaults()
	var c cli
	_, code, ok := command.Parse(o, command.ParseParams{
		Name:        "router",
		Description: "tenantmem's data plane: the tenant-routed document and search API.",
		Grammar:     &c,
		Vars: kong.Vars{"body_limit": fmt.Sprint(httpapi.DefaultRouterBodyLimit),
			"tenant_max_concurrent": fmt.Sprint(limit.DefaultMaxConcurrent)},
		Args: args,
	})
	if !ok {
		return code
	}
	logger, err := command.Logger(o.Stderr, c.LogLevel)
	if err == nil {
		err = m.serve(ctx, &c, o.LookupEnv, logger)
	}
	if err != nil {
		return command.Fail(o, "router", err, isBadInput)
	}
	return command.ExitOK
}

func (m *Main) serve(ctx context.Context, c *cli, lookup func(string) (string, bool), logger *slog.Logger) error {
	if c.BodyLimit < 1 {
		return &command.UsageError{Msg: "--body-limit must be positive"}
	}
	if c.MaxConnSchemas == 0 || c.MaxConnSchemas < -1 {
		return &command.UsageError{Msg: "--max-conn-schemas must be positive, or -1 for no limit"}
	}
	if c.ReconcileRate <= 0 {
		return &command.UsageError{Msg: "--reconcile-rate must be positive"}
	}
	ec := embed.Config{Kind: c.Embedder, Dimension: c.EmbeddingDimension}
	if c.Embedder == embed.KindOpenAI {
		if c.EmbeddingModel == "" {
			return &command.UsageError{Msg: "--embedding-model is required with --embedder openai"}
		}
		apiKey, _ := lookup(envEmbeddingAPIKey)
		ec.OpenAI = embed.OpenAIConfig{BaseURL: c.EmbeddingBaseURL, APIKey: apiKey, Model: c.EmbeddingModel,
			SendDimensions: c.EmbeddingSendDimension}
	} else if c.EmbeddingBaseURL != "" || c.EmbeddingModel != "" {
		return &command.UsageError{Msg: "--embedding-base-url and --embedding-model need --embedder openai"}
	}

	if c.MaxConns < 1 || c.MaxChunksPerDocument < 1 {
		return &command.UsageError{Msg: "--max-conns and --max-chunks-per-document must be positive"}
	}
	limits := limit.Limits{
		RequestsPerSecond: c.TenantRate, Burst: c.TenantBurst, MaxConcurrent: c.TenantMaxConcurrent,
		MaxDocuments: c.TenantMaxDocuments, MaxChunks: c.TenantMaxChunks, MaxContentBytes: c.TenantMaxBytes,
	}
	if err := limits.Validate(); err != nil {
		return &command.UsageError{Msg: "--tenant-*: " + err.Error()}
	}
	var rc rerank.Config
	if c.RerankerURL != "" {
		key, _ := lookup(envRerankerAPIKey)
		rc = rerank.Config{BaseURL: c.RerankerURL, Model: c.RerankerModel, APIKey: key, Timeout: c.RerankerTimeout}
	} else if c.RerankerModel != "" {
		return &command.UsageError{Msg: "--reranker-model needs --reranker-url"}
	}

	v := version.Get()
	logger.InfoContext(ctx, "router starting", slog.String("version", v.Version), slog.String("commit", v.Commit),
		slog.String("built", v.Date))
	if c.ConnBudget < 1 || c.DatabaseMaxConns < 1 || int(c.DatabaseMaxConns) > c.ConnBudget || c.PoolCacheSize < 1 {
		return &command.UsageError{Msg: "--conn-budget, --database-max-conns (at most --conn-budget) and --pool-cache-size must be positive"}
	}
	var environ []string
	if m.Environ != nil {
		environ = m.Environ()
	}
	creds, err := command.PlacementCredentials(c.PlacementCredentials, environ)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), version.Collector())
	svc, err := dataplane.Open(ctx, dataplane.Config{
		DatabaseURL:          c.DatabaseURL,
		MaxConns:             c.MaxConns,
		PlacementCredentials: creds,
		ConnBudget:           c.ConnBudget,
		DatabaseMaxConns:     c.DatabaseMaxConns,
		PoolCacheSize:        c.PoolCacheSize,
		TierMaxConns:         c.TierMaxConns,
		AcquireWait:          c.AcquireTimeout,
		RequestTimeout:       c.RequestTimeout,
		QueueWait:            c.TenantQueueWait,
		BulkYield:            cmp.Or(c.BulkYield, -1),
		AloneMaxConcurrent:   c.TenantAloneMaxConcurrent,
		Limits:               unlimitedZeros(limits),
		MaxChunksPerDocument: c.MaxChunksPerDocument,
		HandleCacheSize:      c.HandleCacheSize,
		KeyCacheSize:         c.KeyCacheSize,
		CacheTTL:             c.CacheTTL,
		StatementTimeout:     c.StatementTimeout,
		BodyLimit:            c.BodyLimit,
		Embedding:            ec,
		Reranker:             rc,
		WorkerInterval:       c.WorkerInterval,
		ReconcileInterval:    c.ReconcileInterval,
		ReconcileRate:        c.ReconcileRate,
		WorkerConcurrency:    c.WorkerConcurrency,
		MaxConnSchemas:       c.MaxConnSchemas,
		ShutdownTimeout:      c.ShutdownTimeout,
		Logger:               logger,
		Registerer:           reg,
	})
	if err != nil {
		return err
	}
	defer svc.Close()
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	mln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", c.MetricsListen)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("metrics listen: %w", err)
	}
	metrics, err := httpapi.NewServer(httpapi.ServerConfig{Handler: httpapi.MetricsHandler(reg, logger), Logger: logger,
		ShutdownTimeout: time.Second})
	if err != nil {
		_, _ = ln.Close(), mln.Close()
		return err
	}
	if m.OnListen != nil {
		m.OnListen(ln.Addr())
	}
	if m.OnMetricsListen != nil {
		m.OnMetricsListen(mln.Addr())
	}
	logger.InfoContext(ctx, "metrics listening", slog.String("addr", mln.Addr().String()))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return metrics.Serve(gctx, mln) })
	g.Go(func() error { return svc.Run(gctx, ln) })
	if err := g.Wait(); err != nil {
		return err
	}
	logger.InfoContext(ctx, "router stopped")
	return nil
}

// unlimitedZeros maps the command line's "0 means no limit" to limit.Unlimited (a zero field of
// limit.Limits takes the default).
func unlimitedZeros(l limit.Limits) limit.Limits {
	if l.RequestsPerSecond == 0 {
		l.RequestsPerSecond = limit.Unlimited
	}
	for _, p := range []*int{&l.Burst, &l.MaxConcurrent} {
		if *p == 0 {
			*p = limit.Unlimited
		}
	}
	for _, p := range []*int64{&l.MaxDocuments, &l.MaxChunks, &l.MaxContentBytes} {
		if *p == 0 {
			*p = limit.Unlimited
		}
	}
	return l
}

// isBadInput reports the errors fixed by changing the configuration.
func isBadInput(err error) bool {
	var ce *dataplane.ConfigError
	return errors.As(err, &ce) || errors.Is(err, dataplane.ErrUnsafeRole)
}
