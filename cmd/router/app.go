package main

import (
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

	"github.com/tenantmem/tenantmem/internal/dataplane"
	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/httpapi"
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
	// OnListen, when set, is called with the address the router listens on, before serving.
	OnListen func(addr net.Addr)
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
	MaxConns         int32         `name:"max-conns" env:"TENANTMEM_MAX_CONNS" default:"0" help:"Largest number of database connections; 0 means pgxpool's default, max(4, CPUs)."`
	ShutdownTimeout  time.Duration `name:"shutdown-timeout" env:"TENANTMEM_SHUTDOWN_TIMEOUT" default:"30s" help:"How long a shutdown waits for requests in flight (default ${default})."`

	Embedder               string `name:"embedder" env:"TENANTMEM_EMBEDDER" default:"builtin" enum:"builtin,openai" help:"Embedding provider: builtin (offline) or openai (any OpenAI-compatible server; API key from $$TENANTMEM_EMBEDDING_API_KEY)."`
	EmbeddingBaseURL       string `name:"embedding-base-url" env:"TENANTMEM_EMBEDDING_BASE_URL" placeholder:"URL" help:"Base URL of the OpenAI-compatible server (default https://api.openai.com)."`
	EmbeddingModel         string `name:"embedding-model" env:"TENANTMEM_EMBEDDING_MODEL" placeholder:"NAME" help:"Embedding model (required with --embedder openai)."`
	EmbeddingDimension     int    `name:"embedding-dimension" env:"TENANTMEM_EMBEDDING_DIMENSION" default:"0" help:"Expected embedding dimension; 0 takes the deployment's (fixed at init). A different value refuses to start."`
	EmbeddingSendDimension bool   `name:"embedding-send-dimensions" env:"TENANTMEM_EMBEDDING_SEND_DIMENSIONS" help:"Send \"dimensions\" in every request, for models that can shorten their vectors."`

	RerankerURL     string        `name:"reranker-url" env:"TENANTMEM_RERANKER_URL" placeholder:"URL" help:"Base URL of a reranking server with the common /rerank API (query + documents -> scores); enables rerank: true in searches. API key from $$TENANTMEM_RERANKER_API_KEY."`
	RerankerModel   string        `name:"reranker-model" env:"TENANTMEM_RERANKER_MODEL" placeholder:"NAME" help:"Model name sent to the reranker."`
	RerankerTimeout time.Duration `name:"reranker-timeout" env:"TENANTMEM_RERANKER_TIMEOUT" default:"2s" help:"Longest wait for the reranker; past it results keep the unreranked order, marked degraded (default ${default})."`

	WorkerInterval    time.Duration `name:"worker-interval" env:"TENANTMEM_WORKER_INTERVAL" default:"5s" help:"First pause before a tenant whose queued embeddings are in backoff is looked at again; doubles up to --sweep-interval (default ${default})."`
	SweepInterval     time.Duration `name:"sweep-interval" env:"TENANTMEM_WORKER_SWEEP_INTERVAL" default:"5m" help:"How often every active tenant is checked for queued embeddings (default ${default})."`
	WorkerConcurrency int           `name:"worker-concurrency" env:"TENANTMEM_WORKER_CONCURRENCY" default:"2" help:"Tenants the embedding worker serves at once (default ${default})."`

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
		Vars:        kong.Vars{"body_limit": fmt.Sprint(httpapi.DefaultRouterBodyLimit)},
		Args:        args,
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), version.Collector())
	svc, err := dataplane.Open(ctx, dataplane.Config{
		DatabaseURL:       c.DatabaseURL,
		MaxConns:          c.MaxConns,
		HandleCacheSize:   c.HandleCacheSize,
		KeyCacheSize:      c.KeyCacheSize,
		CacheTTL:          c.CacheTTL,
		StatementTimeout:  c.StatementTimeout,
		BodyLimit:         c.BodyLimit,
		Embedding:         ec,
		Reranker:          rc,
		WorkerInterval:    c.WorkerInterval,
		SweepInterval:     c.SweepInterval,
		WorkerConcurrency: c.WorkerConcurrency,
		ShutdownTimeout:   c.ShutdownTimeout,
		Logger:            logger,
		Registerer:        reg,
		Gatherer:          reg,
	})
	if err != nil {
		return err
	}
	defer svc.Close()
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if m.OnListen != nil {
		m.OnListen(ln.Addr())
	}
	if err := svc.Run(ctx, ln); err != nil {
		return err
	}
	logger.InfoContext(ctx, "router stopped")
	return nil
}

// isBadInput reports the errors fixed by changing the configuration.
func isBadInput(err error) bool {
	var ce *dataplane.ConfigError
	return errors.As(err, &ce) || errors.Is(err, dataplane.ErrUnsafeRole)
}
