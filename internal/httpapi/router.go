package httpapi

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantmem/tenantmem/api"
	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/routing"
)

// Router defaults.
const (
	// DefaultRouterBodyLimit is the router's default request body limit: 12 MiB, the largest
	// document content (memory.DefaultMaxContentBytes, 10 MB) plus room for JSON escaping and the
	// other fields.
	DefaultRouterBodyLimit int64 = 12 << 20
	// DefaultStatementTimeout bounds every statement of a router request, transaction-locally.
	DefaultStatementTimeout = 30 * time.Second
	// DefaultRequestTimeout bounds a whole router request (the embedding of a document included).
	DefaultRequestTimeout = 2 * time.Minute
	// DefaultBulkYield is RouterConfig.BulkYield's default: how long one batch of bulk work
	// waits at most for other tenants' interactive requests.
	DefaultBulkYield = 100 * time.Millisecond
)

// HeaderIdempotencyKey makes a POST that writes idempotent: a retry with the same key and body
// gets the first answer (with HeaderIdempotentReplayed) instead of doing the write again.
const (
	HeaderIdempotencyKey     = "Idempotency-Key"
	HeaderIdempotentReplayed = "Idempotent-Replayed"
)

// HeaderActAs names, in a router request, the tenant a delegated key acts for: a tenant id
// strictly below the key's own ("acme/u-42" for a key of "acme"). Without it a request acts for
// the key's own tenant. See routing.Resolver.ResolveAs for the checks and the README for the
// status table.
const HeaderActAs = "Tenantmem-Act-As"

// CodeClientClosed is the code of a request whose client went away before the answer (status
// 499, nginx's convention). The client never sees it; it shows in the access log and metrics.
const CodeClientClosed = "client_closed_request"

// StatusClientClosed is the status logged for a request whose client went away.
const StatusClientClosed = 499

// Retry-After values of the router's 503 answers.
const (
	retryTenantUnavailable = 5 * time.Second
	retryTimeout           = 5 * time.Second
	retryEmbedTransient    = 5 * time.Second
	retryEmbedPermanent    = 60 * time.Second
	retryPlacement         = 5 * time.Second
)

// RouterConfig configures the tenant router, built by [NewRouter].
type RouterConfig struct {
	// Resolver authenticates API keys and returns tenant handles. Required.
	Resolver *routing.Resolver
	// Engine does the work. Required.
	Engine *memory.Engine
	// Logger and Registerer are as in [Config].
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// BodyLimit is the largest request body, in bytes; larger ones get 413. Default
	// [DefaultRouterBodyLimit] (12 MiB).
	BodyLimit int64
	// StatementTimeout bounds every statement of a request; it is set transaction-locally through
	// memory.Scope. A statement that runs longer is cancelled and the request gets 503 with
	// Retry-After. Default [DefaultStatementTimeout] (30s).
	StatementTimeout time.Duration
	// Ready reports whether the database is reachable and the control schema migrated; GET
	// /readyz answers 503 while it fails. Default: always ready. See [RegistryReady].
	Ready func(context.Context) error
	// OnIngest, when set, is called after a request left embeddings queued for the worker (the
	// provider failed at ingest, or failed embeddings were queued again), with the tenant's
	// handle and the number of queued chunks. It runs on the request's goroutine: it must not
	// block.
	OnIngest func(h *routing.Handle, pendingEmbeddings int)
	// Limits are every tenant's default limits (request rate, requests in flight, storage
	// quotas); a tenant's registry overrides replace single fields. Zero fields take the
	// limit.Default* values and limit.Unlimited (-1) turns one off (see limit.Config).
	Limits limit.Limits
	// RequestTimeout bounds a whole request: past it the request's statements are cancelled and
	// it gets 503 with Retry-After. Default [DefaultRequestTimeout] (2 minutes).
	RequestTimeout time.Duration
	// QueueWait bounds how long a request waits behind its tenant's requests in flight (its
	// MaxConcurrent) before 429. Default limit.DefaultQueueWait (2s); negative: no wait.
	QueueWait time.Duration
	// BulkYield bounds how long a batch of a tenant's bulk work (an ingest's embedding slices
	// and insert statements) waits, before it starts, for other tenants' interactive requests in
	// flight to end, so that one tenant's big ingest does not slow the others' searches and
	// reads (see limit.Admission.Yield). Default DefaultBulkYield; negative: never wait.
	BulkYield time.Duration
	// AloneMaxConcurrent is how many requests a tenant may have in flight while no other tenant
	// is active (the in-flight cap lends idle capacity; see limit.LimiterConfig). Default
	// limit.DefaultAloneMaxConcurrent (8); 1 turns lending off.
	AloneMaxConcurrent int
	// ReadyDetails, when set, adds to the body of GET /readyz what it returns (per-tier and
	// per-pool state), whether ready or not.
	ReadyDetails func(context.Context) any
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c RouterConfig) WithDefaults() RouterConfig {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.BodyLimit = cmp.Or(c.BodyLimit, DefaultRouterBodyLimit)
	c.StatementTimeout = cmp.Or(c.StatementTimeout, DefaultStatementTimeout)
	c.RequestTimeout = cmp.Or(c.RequestTimeout, DefaultRequestTimeout)
	c.QueueWait = cmp.Or(c.QueueWait, limit.DefaultQueueWait)
	c.BulkYield = cmp.Or(c.BulkYield, DefaultBulkYield)
	c.Limits = limit.Config{Defaults: c.Limits}.WithDefaults().Defaults
	return c
}

func (c RouterConfig) validate() error {
	switch {
	case c.Resolver == nil:
		return errors.New("httpapi: RouterConfig.Resolver is required")
	case c.Engine == nil:
		return errors.New("httpapi: RouterConfig.Engine is required")
	case c.BodyLimit < 1:
		return fmt.Errorf("httpapi: RouterConfig.BodyLimit %d must be positive", c.BodyLimit)
	case c.StatementTimeout < 0:
		return fmt.Errorf("httpapi: RouterConfig.StatementTimeout %s must not be negative", c.StatementTimeout)
	case c.RequestTimeout < 0:
		return fmt.Errorf("httpapi: RouterConfig.RequestTimeout %s must not be negative", c.RequestTimeout)
	}
	return c.Limits.Validate()
}

// RegistryReady returns a readiness check for [RouterConfig.Ready]: the database answers (within
// 3 seconds) and `provisioner init` has run, i.e. the control schema is migrated and the
// deployment settings exist. pool may be the router's pool: the router role can read the settings.
func RegistryReady(pool *pgxpool.Pool) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, readyTimeout)
		defer cancel()
		_, err := registry.GetSettings(ctx, pool)
		if errors.Is(err, registry.ErrNotFound) {
			return provision.ErrNotInitialized
		}
		return err
	}
}

// RouterErrorRules returns the router's error table: its own rules (client gone, memory engine
// validation and not-found, tenant suspended or unavailable, statement timeouts, query embedding
// failures), tried first, then [DefaultErrorRules].
//
//   - *memory.ValidationError: 400 invalid_input naming the field, or 413 payload_too_large when
//     a size limit was exceeded;
//   - memory.ErrNotFound: 404 not_found, "document not found", whatever the id (a missing id and
//     another tenant's id are indistinguishable);
//   - routing.ErrSuspended: 403 forbidden; routing.ErrUnavailable: 503 with Retry-After 5s;
//   - memory.ErrWritesPaused (the last instant of a move): 503 with Retry-After 1s;
//   - memory.ErrTimeout and SQLSTATE 57014: 503 with Retry-After 5s;
//   - memory.ErrEmbeddingUnavailable (a vector search could not embed its query): 503, with
//     Retry-After 5s when the provider failure is transient and 60s when it is permanent (the
//     operator must fix the provider; hybrid search degrades to text instead of failing);
//   - memory.ErrQuotaExceeded: 413 quota_exceeded naming the quota (documents, chunks or
//     content_bytes): waiting does not help, deleting documents or a larger quota does, so it is
//     not a 429;
//   - memory.ErrIdempotencyKeyReused: 422 idempotency_key_reused;
//   - limit.ErrRateLimited (rate or requests in flight): 429 with Retry-After, and
//     limit.ErrBusy (no connection in the bounded wait): 503 with Retry-After 1s (both in
//     [DefaultErrorRules]);
//   - the tenant's database unavailable (placement.IsConnectionLoss: its placement disabled,
//     down, unreachable or without credentials in this router, the connection lost): 503,
//     Retry-After 5s (a full connection budget is limit.ErrBusy: 503, Retry-After 1s);
//   - context.Canceled (the client went away): 499, logged only.
func RouterErrorRules() []ErrorRule {
	rules := []ErrorRule{
		{Match: Is(context.Canceled), Status: StatusClientClosed, Code: CodeClientClosed,
			Message: func(error) string { return "client closed the request" }},
		{Match: Is(memory.ErrQuotaExceeded), Status: http.StatusRequestEntityTooLarge, Code: CodeQuotaExceeded},
		{Match: Is(memory.ErrIdempotencyKeyReused), Status: http.StatusUnprocessableEntity, Code: CodeIdempotencyReuse,
			Message: func(error) string {
				return "this Idempotency-Key was used with another request; use a new key for a new request"
			}},
		{Match: Is(memory.ErrTooLarge), Status: http.StatusRequestEntityTooLarge, Code: CodePayloadTooLarge,
			Message: validationMessage},
		{Match: As[*memory.ValidationError](), Status: http.StatusBadRequest, Code: CodeInvalidInput,
			Message: validationMessage},
		{Match: Is(memory.ErrNotFound), Status: http.StatusNotFound, Code: CodeNotFound,
			Message: func(error) string { return "document not found" }},
		// The tenant was suspended, deleted or re-created while the request was on its way:
		// nothing was done, and the next request resolves the tenant afresh.
		{Match: Is(memory.ErrFenced), Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			RetryAfter: time.Second,
			Message:    func(error) string { return "the tenant changed while this request was served; retry" }},
		// The tenant is being moved and this is the last, short instant of the move: writes wait,
		// reads go on. Nothing was written.
		{Match: Is(memory.ErrWritesPaused), Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			RetryAfter: time.Second,
			Message:    func(error) string { return "the tenant is being moved; writes resume in a moment, retry" }},
		{Match: Is(routing.ErrSuspended), Status: http.StatusForbidden, Code: CodeForbidden,
			Message: func(error) string { return "tenant is suspended" }},
		// Delegation (Tenantmem-Act-As). One answer for every tenant the key may not reach, so
		// that no answer tells whether an id exists.
		{Match: Is(routing.ErrDelegationForbidden), Status: http.StatusForbidden, Code: CodeForbidden,
			Message: func(error) string {
				return "this API key may not act for other tenants (" + HeaderActAs + "); issue a key with delegate"
			}},
		{Match: Is(routing.ErrTenantNotFound), Status: http.StatusNotFound, Code: CodeNotFound,
			Message: func(error) string { return "tenant not found" }},
		{Match: Is(routing.ErrNoPlacement), Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			RetryAfter: retryEmbedPermanent,
			Message: func(error) string {
				return "the tenant could not be created: no placement takes new shared-tier tenants"
			}},
		{Match: Is(routing.ErrUnavailable), Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			RetryAfter: retryTenantUnavailable,
			Message:    func(error) string { return "tenant is being provisioned or moved; retry later" }},
		{Match: func(err error) bool { return errors.Is(err, memory.ErrEmbeddingUnavailable) && embed.IsTransient(err) },
			Status: http.StatusServiceUnavailable, Code: CodeUnavailable, RetryAfter: retryEmbedTransient,
			Message: func(error) string {
				return "the embedding provider is unavailable, so the query could not be embedded; retry later, or use search_type text"
			}},
		{Match: Is(memory.ErrEmbeddingUnavailable), Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			RetryAfter: retryEmbedPermanent,
			Message: func(error) string {
				return "the embedding provider rejected the query embedding; use search_type text until the operator fixes it"
			}},
		// After the embedding rules: a provider timeout is the provider's failure, not ours.
		{Match: isTimeout, Status: http.StatusServiceUnavailable, Code: CodeUnavailable, RetryAfter: retryTimeout,
			Message: func(error) string {
				return "the request exceeded its time limit; retry later or narrow it (smaller limit, more filters)"
			}},
		// The tenant's placement disabled, down, unreachable or without credentials here, or the
		// connection lost mid-way. (A full connection budget is limit.ErrBusy, in the defaults.)
		{Match: placement.IsConnectionLoss, Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			RetryAfter: retryPlacement,
			Message:    func(error) string { return "the tenant's database is unavailable; retry later" }},
	}
	return append(rules, DefaultErrorRules()...)
}

// validationMessage is "<field>: <message>" of the first *memory.ValidationError in the chain,
// without the wrapping.
func validationMessage(err error) string {
	var ve *memory.ValidationError
	if errors.As(err, &ve) {
		return ve.Error()
	}
	return err.Error()
}

// isTimeout matches a statement timeout (memory.ErrTimeout, or SQLSTATE 57014 outside the engine)
// and a deadline of the request context.
func isTimeout(err error) bool {
	if errors.Is(err, memory.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.QueryCanceled
}

// NewRouter returns the tenant router: the document and search API of DESIGN.md under /v1
// (Authorization: Bearer <tenant API key>), plus the shared /healthz, /readyz and /metrics.
//
//	POST   /v1/documents                  add or upsert -> 201 (new) or 200 (upsert on id_at_origin)
//	GET    /v1/documents                  list: limit, offset, document_type, id_at_origin, metadata_filter, order_by, order
//	GET    /v1/documents/{id}             one document; include_chunks=true adds its chunks
//	DELETE /v1/documents/{id}             204, or 404
//	POST   /v1/documents/delete           {document_ids} or {metadata_filter} -> {deleted_count, deleted_document_ids}
//	POST   /v1/documents/import           JSON lines of documents (content or chunks, vectors optional) -> {documents, created, ...}
//	POST   /v1/search                     vector, text or hybrid search -> {results, search_type, took_ms}
//	GET    /v1/search?q=&limit=           hybrid search
//	GET    /v1/statistics                 {document_count, chunk_count, total_size_bytes, document_type_breakdown, ...}
//	GET    /v1/search/history?limit=      extension: recent searches, newest first
//	GET    /v1/embeddings/status          extension: {pending, failed} embedding jobs
//	POST   /v1/embeddings/retry           extension: queue failed embedding jobs again -> {queued}
//	GET    /openapi.json                  the description (api/router.openapi.yaml) as JSON, no key needed
//
// The tenant comes only from the key. Request bodies reject unknown fields (tenant_id, owner_id
// and schema among them) with 400 naming the field, and query strings reject parameters a route
// does not take, so nothing a client writes can select another tenant. Every request runs in one
// transaction of the tenant's scope (search_path, owner id and statement timeout set
// transaction-locally by memory.Scope).
//
// Besides the shared HTTP metrics, the router counts requests by route, method, status and tier
// (tenantmem_router_requests_total, tenantmem_router_request_duration_seconds; never a tenant id)
// and exposes the resolver's caches (tenantmem_router_cache_*). Register one router per registry:
// a second one on the same registry reports the first one's caches.
func NewRouter(cfg RouterConfig) (*echo.Echo, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Registerer == nil {
		// One private registry for the shared metrics and the router's own.
		cfg.Registerer = prometheus.NewRegistry()
	}
	e, err := New(Config{
		Name:         "router",
		Logger:       cfg.Logger,
		Registerer:   cfg.Registerer,
		BodyLimit:    cfg.BodyLimit,
		Ready:        cfg.Ready,
		ReadyDetails: cfg.ReadyDetails,
		ErrorRules:   RouterErrorRules(),
		// A bulk import is read line by line; each line is held to BodyLimit instead.
		StreamRoutes: []string{"/v1/documents/import"},
	})
	if err != nil {
		return nil, err
	}
	m, err := newRouterMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	if err := cfg.Registerer.Register(newResolverCollector(cfg.Resolver)); err != nil {
		if !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return nil, fmt.Errorf("httpapi: register resolver metrics: %w", err)
		}
	}

	r := &router{cfg: cfg, metrics: m, limiter: limit.NewLimiter(limit.LimiterConfig{AloneMaxConcurrent: cfg.AloneMaxConcurrent})}
	eng := cfg.Engine
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tenantmem_search_history_written_total",
			Help: "Search records written to the search history."}, func() float64 { return float64(eng.HistoryStats().Written) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tenantmem_search_history_dropped_total",
			Help: "Search records given up (queue full, tenant fenced, write failed 3 times); each is logged."},
			func() float64 { return float64(eng.HistoryStats().Dropped) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tenantmem_search_history_queued",
			Help: "Search records waiting for the background writer."}, func() float64 { return float64(eng.HistoryStats().Queued) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tenantmem_bulk_yield_waits_total",
			Help: "Batches of bulk work (ingest) that waited for other tenants' interactive requests (--bulk-yield)."},
			func() float64 { return float64(r.limiter.YieldStats().Waits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tenantmem_bulk_yield_wait_seconds_total",
			Help: "Time batches of bulk work spent waiting for other tenants' interactive requests."},
			func() float64 { return r.limiter.YieldStats().Waited.Seconds() }),
	} {
		if err := cfg.Registerer.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return nil, fmt.Errorf("httpapi: register history metrics: %w", err)
		}
	}

	// Authentication is route middleware, as in the admin API, so unknown methods stay 405.
	mw := []echo.MiddlewareFunc{r.instrument, r.deadline, r.authenticate, r.admit}
	e.POST("/v1/documents", r.addDocument, mw...)
	e.GET("/v1/documents", r.listDocuments, mw...)
	e.GET("/v1/documents/:id", r.getDocument, mw...)
	e.DELETE("/v1/documents/:id", r.deleteDocument, mw...)
	// Any deeper path below /v1/documents/ is a malformed document id (an unescaped "/"):
	// answer 400 like any other bad id, not 404.
	e.GET("/v1/documents/*", r.badDocumentPath, mw...)
	e.DELETE("/v1/documents/*", r.badDocumentPath, mw...)
	e.POST("/v1/documents/delete", r.deleteDocuments, mw...)
	e.POST("/v1/documents/import", r.importDocuments, mw...)
	e.POST("/v1/search", r.search, mw...)
	e.GET("/v1/search", r.quickSearch, mw...)
	e.GET("/v1/search/history", r.searchHistory, mw...)
	e.GET("/v1/statistics", r.statistics, mw...)
	e.GET("/v1/embeddings/status", r.embeddingStatus, mw...)
	e.POST("/v1/embeddings/retry", r.retryEmbeddings, mw...)
	if err := serveOpenAPI(e, api.RouterJSON); err != nil {
		return nil, err
	}
	return e, nil
}

type router struct {
	cfg     RouterConfig
	metrics *routerMetrics
	limiter *limit.Limiter
}

// authedKey carries an authenticated request's *authed in its context.
type authedKey struct{}

// authed is what the router knows of an authenticated request: its tenant's handle and the id of
// the API key it came with (set by authenticate), and its admission (set by admit, in place: one
// context value per request).
type authed struct {
	handle    *routing.Handle
	keyID     string
	admission *limit.Admission
}

func authedFrom(ctx context.Context) *authed {
	a, _ := ctx.Value(authedKey{}).(*authed)
	return a
}

func handleFrom(ctx context.Context) *routing.Handle {
	if a := authedFrom(ctx); a != nil {
		return a.handle
	}
	return nil
}

// deadline bounds the whole request by RequestTimeout.
func (r *router) deadline(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), r.cfg.RequestTimeout)
		defer cancel()
		c.SetRequest(c.Request().WithContext(ctx))
		return next(c)
	}
}

// limitsOf is a tenant's effective limits: the defaults with its registry overrides.
func (r *router) limitsOf(h *routing.Handle) limit.Limits {
	return r.cfg.Limits.With(h.Limits)
}

// admit holds an authenticated request to its tenant's request rate (429 with Retry-After
// beyond) and requests in flight (it waits up to QueueWait in the tenant's own queue, then 429),
// before anything else of it runs.
func (r *router) admit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx := c.Request().Context()
		au := authedFrom(ctx)
		a, err := r.limiter.AdmitRequest(ctx, au.handle.TenantID, r.limitsOf(au.handle), r.cfg.QueueWait)
		if err != nil {
			return err
		}
		defer a.Release()
		au.admission = a
		return next(c)
	}
}

// authenticate admits requests carrying "Authorization: Bearer <API key>" of an active tenant and
// puts the tenant's handle in the request context. It is the only place a tenant is chosen.
func (r *router) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		req := c.Request()
		values := req.Header.Values(echo.HeaderAuthorization)
		if len(values) != 1 {
			return WithMessage(registry.ErrUnauthenticated, "missing or malformed Authorization header; want: Bearer API_KEY")
		}
		scheme, key, ok := strings.Cut(values[0], " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
			return WithMessage(registry.ErrUnauthenticated, "missing or malformed Authorization header; want: Bearer API_KEY")
		}
		ctx := req.Context()
		var h *routing.Handle
		switch acts := req.Header.Values(HeaderActAs); len(acts) {
		case 0:
			h, err = r.cfg.Resolver.Resolve(ctx, key)
		case 1:
			h, err = r.cfg.Resolver.ResolveAs(ctx, key, acts[0])
		default:
			// Which one would count is up to each proxy on the way: refuse, after authenticating.
			if _, err = r.cfg.Resolver.Resolve(ctx, key); err == nil {
				err = &memory.ValidationError{Field: HeaderActAs, Message: "given more than once"}
			}
		}
		switch {
		case errors.Is(err, registry.ErrUnauthenticated):
			return WithMessage(err, "invalid API key")
		case errors.Is(err, routing.ErrInvalidTarget):
			return &memory.ValidationError{Field: HeaderActAs, Message: strings.TrimPrefix(
				strings.TrimPrefix(err.Error(), routing.ErrInvalidTarget.Error()+": "), "invalid tenant id: ") +
				"; want a tenant id below the key's tenant, as registered (nothing is normalised)"}
		case err != nil:
			return fmt.Errorf("authenticate: %w", err)
		}
		SetTenantID(ctx, h.TenantID)
		if parent := h.ActingFor(); parent != "" {
			setActingFor(ctx, parent)
		}
		keyID, _, _ := registry.ParseKey(key) // Resolve accepted it
		ctx = context.WithValue(ctx, authedKey{}, &authed{handle: h, keyID: keyID})
		c.SetRequest(req.WithContext(ctx))
		return next(c)
	}
}

// scope is the memory scope of an authenticated request: its transactions check that the tenant
// is still active and the request's key not revoked, and ingest is held to the tenant's quotas.
func (r *router) scope(c echo.Context) memory.Scope {
	au := authedFrom(c.Request().Context())
	s := au.handle.KeyScope(au.keyID, r.cfg.StatementTimeout)
	l := r.limitsOf(au.handle)
	s.Quota = memory.Quota{Documents: l.MaxDocuments, Chunks: l.MaxChunks, ContentBytes: l.MaxContentBytes}
	if a := au.admission; a != nil && r.cfg.BulkYield > 0 {
		s.Yield = func(ctx context.Context) error { return a.Yield(ctx, r.cfg.BulkYield) }
	}
	return s
}

// idempotency reads the request's Idempotency-Key, if any: the key and a hash of what the
// request asks (method, route and body), so that the key cannot be replayed for another request.
func idempotency(c echo.Context, body []byte) (*memory.IdempotencyKey, error) {
	values := c.Request().Header.Values(HeaderIdempotencyKey)
	switch len(values) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, &memory.ValidationError{Field: HeaderIdempotencyKey, Message: "given more than once"}
	}
	if err := memory.ValidateIdempotencyKey(HeaderIdempotencyKey, values[0]); err != nil {
		return nil, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s %s\n", c.Request().Method, c.Path())
	h.Write(body)
	return &memory.IdempotencyKey{Key: values[0], RequestHash: h.Sum(nil)}, nil
}

// queued tells OnIngest that a request left n embeddings queued.
func (r *router) queued(c echo.Context, n int) {
	if n > 0 && r.cfg.OnIngest != nil {
		r.cfg.OnIngest(handleFrom(c.Request().Context()), n)
	}
}

// DocumentAddRequest is the body of POST /v1/documents. document_date is RFC 3339
// ("2024-05-01T12:00:00Z") or a date ("2024-05-01", midnight UTC).
type DocumentAddRequest struct {
	DocumentName string                  `json:"document_name"`
	DocumentType string                  `json:"document_type"`
	Content      string                  `json:"content,omitempty"`
	Chunks       []memory.ChunkInput     `json:"chunks,omitempty"`
	IDAtOrigin   string                  `json:"id_at_origin,omitempty"`
	Metadata     json.RawMessage         `json:"metadata,omitempty"`
	DocumentDate *string                 `json:"document_date,omitempty"`
	Chunking     *memory.ChunkingOptions `json:"chunking,omitempty"`
}

func (r *router) addDocument(c echo.Context) error {
	if err := allowQuery(c); err != nil {
		return err
	}
	var req DocumentAddRequest
	// Strict like every body (readJSON), and located: an embedding with NaN or an out-of-range
	// number is named down to its element.
	body, err := readJSONLocated(c, &req)
	if err != nil {
		return err
	}
	ik, err := idempotency(c, body)
	if err != nil {
		return err
	}
	p, err := req.params()
	if err != nil {
		return err
	}
	p.Idempotency = ik
	res, err := r.cfg.Engine.AddDocument(c.Request().Context(), r.scope(c), p)
	if err != nil {
		return err
	}
	if res.Replayed {
		c.Response().Header().Set(HeaderIdempotentReplayed, "true")
	} else {
		r.queued(c, res.EmbeddingsPending)
	}
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
		c.Response().Header().Set(echo.HeaderLocation, "/v1/documents/"+res.DocumentID)
	}
	return c.JSON(status, res)
}

// params converts a request into the engine's parameters.
func (req DocumentAddRequest) params() (memory.DocumentAddParams, error) {
	p := memory.DocumentAddParams{
		DocumentName: req.DocumentName,
		DocumentType: req.DocumentType,
		Content:      req.Content,
		Chunks:       req.Chunks,
		IDAtOrigin:   req.IDAtOrigin,
		Metadata:     req.Metadata,
	}
	if req.Chunks == nil && req.Content == "" {
		return p, &registry.FieldError{Field: "content", Message: "give the content, or the document as chunks"}
	}
	if req.Chunking != nil {
		p.Chunking = *req.Chunking
	}
	if req.DocumentDate != nil {
		d, err := parseDate("document_date", *req.DocumentDate, false)
		if err != nil {
			return p, err
		}
		p.DocumentDate = &d
	}
	return p, nil
}

func (r *router) listDocuments(c echo.Context) error {
	q, err := queryOf(c, "limit", "offset", "document_type", "id_at_origin", "metadata_filter", "order_by", "order")
	if err != nil {
		return err
	}
	p := memory.DocumentListParams{
		DocumentType: q.Get("document_type"),
		IDAtOrigin:   q.Get("id_at_origin"),
		OrderBy:      q.Get("order_by"),
		Order:        q.Get("order"),
	}
	if p.Limit, err = intParam(q, "limit"); err != nil {
		return err
	}
	offset, err := intParam(q, "offset")
	if err != nil {
		return err
	}
	if offset != nil {
		p.Offset = *offset
	}
	if v := q.Get("metadata_filter"); v != "" {
		p.MetadataFilter = []byte(v)
	}
	res, err := r.cfg.Engine.ListDocuments(c.Request().Context(), r.scope(c), p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, res)
}

func (r *router) getDocument(c echo.Context) error {
	q, err := queryOf(c, "include_chunks")
	if err != nil {
		return err
	}
	id, err := documentIDParam(c)
	if err != nil {
		return err
	}
	p := memory.DocumentGetParams{DocumentID: id}
	if v := q.Get("include_chunks"); v != "" {
		if p.IncludeChunks, err = strconv.ParseBool(v); err != nil {
			return &registry.FieldError{Field: "include_chunks", Message: "must be true or false"}
		}
	}
	doc, err := r.cfg.Engine.GetDocument(c.Request().Context(), r.scope(c), p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, doc)
}

func (r *router) deleteDocument(c echo.Context) error {
	if err := allowQuery(c); err != nil {
		return err
	}
	id, err := documentIDParam(c)
	if err != nil {
		return err
	}
	if err := r.cfg.Engine.DeleteDocument(c.Request().Context(), r.scope(c), memory.DocumentDeleteParams{DocumentID: id}); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// errBadDocumentID is the answer to every document id that is not a UUID, whatever it holds.
var errBadDocumentID = &memory.ValidationError{Field: "document_id", Message: "must be a UUID like 123e4567-e89b-12d3-a456-426614174000"}

func (r *router) badDocumentPath(echo.Context) error { return errBadDocumentID }

// documentIDParam is the document id of the path, unescaped once. Only the form is checked here
// (a UUID, so "..", "/", NUL or quotes never reach the database); the engine checks the rest.
func documentIDParam(c echo.Context) (string, error) {
	id, err := pathParam(c, "id")
	if err != nil || !looksLikeUUID(id) {
		return "", errBadDocumentID
	}
	return id, nil
}

// looksLikeUUID reports whether s has the 8-4-4-4-12 hex form.
func looksLikeUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch i {
		case 8, 13, 18, 23:
			if ch != '-' {
				return false
			}
		default:
			if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f' || ch >= 'A' && ch <= 'F') {
				return false
			}
		}
	}
	return true
}

// DocumentDeleteManyRequest is the body of POST /v1/documents/delete: exactly one of
// document_ids (at most 1000) or metadata_filter (a non-empty JSON object).
type DocumentDeleteManyRequest struct {
	DocumentIDs    []string        `json:"document_ids,omitempty"`
	MetadataFilter json.RawMessage `json:"metadata_filter,omitempty"`
}

func (r *router) deleteDocuments(c echo.Context) error {
	if err := allowQuery(c); err != nil {
		return err
	}
	var req DocumentDeleteManyRequest
	body, err := readJSON(c, &req)
	if err != nil {
		return err
	}
	ik, err := idempotency(c, body)
	if err != nil {
		return err
	}
	res, err := r.cfg.Engine.DeleteDocuments(c.Request().Context(), r.scope(c), memory.DocumentDeleteManyParams{
		DocumentIDs: req.DocumentIDs, MetadataFilter: req.MetadataFilter, Idempotency: ik,
	})
	if err != nil {
		return err
	}
	if res.Replayed {
		c.Response().Header().Set(HeaderIdempotentReplayed, "true")
	}
	return c.JSON(http.StatusOK, res)
}

// SearchRequest is the body of POST /v1/search. date_from and date_to are RFC 3339 or dates
// ("2024-05-01"); a date bound covers its whole day (UTC), so date_to "2024-05-31" includes the
// 31st.
type SearchRequest struct {
	QueryText            string          `json:"query_text"`
	QueryEmbedding       []float32       `json:"query_embedding,omitempty"`
	SearchType           string          `json:"search_type,omitempty"`
	Limit                *int            `json:"limit,omitempty"`
	IDAtOrigin           string          `json:"id_at_origin,omitempty"`
	IDAtOrigins          []string        `json:"id_at_origins,omitempty"`
	DocumentTypes        []string        `json:"document_types,omitempty"`
	MetadataFilter       json.RawMessage `json:"metadata_filter,omitempty"`
	DateFrom             *string         `json:"date_from,omitempty"`
	DateTo               *string         `json:"date_to,omitempty"`
	Alpha                *float64        `json:"alpha,omitempty"`
	IncludeParentContext bool            `json:"include_parent_context,omitempty"`
	IncludeDocuments     bool            `json:"include_documents,omitempty"`
	// ChunkMetadataFilter matches the chunk's own metadata; MetadataFilter the document's.
	ChunkMetadataFilter json.RawMessage `json:"chunk_metadata_filter,omitempty"`
	RecallTarget        *float64        `json:"recall_target,omitempty"`
	Fusion              string          `json:"fusion,omitempty"`
	Rerank              bool            `json:"rerank,omitempty"`
	RerankTopK          *int            `json:"rerank_top_k,omitempty"`
}

func (r *router) search(c echo.Context) error {
	if err := allowQuery(c); err != nil {
		return err
	}
	var req SearchRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	p := memory.SearchParams{
		QueryText:            req.QueryText,
		QueryEmbedding:       req.QueryEmbedding,
		SearchType:           req.SearchType,
		Limit:                req.Limit,
		IDAtOrigin:           req.IDAtOrigin,
		IDAtOrigins:          req.IDAtOrigins,
		DocumentTypes:        req.DocumentTypes,
		MetadataFilter:       req.MetadataFilter,
		Alpha:                req.Alpha,
		IncludeParentContext: req.IncludeParentContext,
		IncludeDocuments:     req.IncludeDocuments,
		ChunkMetadataFilter:  req.ChunkMetadataFilter,
		RecallTarget:         req.RecallTarget,
		Fusion:               req.Fusion,
		Rerank:               req.Rerank,
		RerankTopK:           req.RerankTopK,
	}
	if req.DateFrom != nil {
		d, err := parseDate("date_from", *req.DateFrom, false)
		if err != nil {
			return err
		}
		p.DateFrom = &d
	}
	if req.DateTo != nil {
		d, err := parseDate("date_to", *req.DateTo, true)
		if err != nil {
			return err
		}
		p.DateTo = &d
	}
	res, err := r.cfg.Engine.Search(c.Request().Context(), r.scope(c), p)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, res)
}

func (r *router) quickSearch(c echo.Context) error {
	q, err := queryOf(c, "q", "limit")
	if err != nil {
		return err
	}
	text := q.Get("q")
	if strings.TrimSpace(text) == "" {
		return &registry.FieldError{Field: "q", Message: "must not be empty"}
	}
	limit, err := intParam(q, "limit")
	if err != nil {
		return err
	}
	res, err := r.cfg.Engine.Search(c.Request().Context(), r.scope(c),
		memory.SearchParams{QueryText: text, SearchType: memory.SearchHybrid, Limit: limit})
	var ve *memory.ValidationError
	if errors.As(err, &ve) && ve.Field == "query_text" {
		// Name the parameter the client actually sent.
		return &memory.ValidationError{Field: "q", Message: ve.Message, TooLarge: ve.TooLarge}
	}
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, res)
}

// SearchHistoryResponse is the body of GET /v1/search/history.
type SearchHistoryResponse struct {
	History []memory.SearchHistoryEntry `json:"history"`
}

func (r *router) searchHistory(c echo.Context) error {
	q, err := queryOf(c, "limit")
	if err != nil {
		return err
	}
	limit, err := intParam(q, "limit")
	if err != nil {
		return err
	}
	h, err := r.cfg.Engine.SearchHistory(c.Request().Context(), r.scope(c), memory.SearchHistoryListParams{Limit: limit})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, SearchHistoryResponse{History: h})
}

func (r *router) statistics(c echo.Context) error {
	if err := allowQuery(c); err != nil {
		return err
	}
	st, err := r.cfg.Engine.Statistics(c.Request().Context(), r.scope(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func (r *router) embeddingStatus(c echo.Context) error {
	if err := allowQuery(c); err != nil {
		return err
	}
	st, err := r.cfg.Engine.EmbeddingStats(c.Request().Context(), r.scope(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

// EmbeddingRetryResponse is the body of POST /v1/embeddings/retry.
type EmbeddingRetryResponse struct {
	// Queued counts the failed embedding jobs queued again.
	Queued int `json:"queued"`
}

func (r *router) retryEmbeddings(c echo.Context) error {
	if err := allowQuery(c); err != nil {
		return err
	}
	n, err := r.cfg.Engine.RetryFailedEmbeddings(c.Request().Context(), r.scope(c))
	if err != nil {
		return err
	}
	r.queued(c, n)
	return c.JSON(http.StatusOK, EmbeddingRetryResponse{Queued: n})
}

// reservedParams name a tenant; a query string carrying one is refused with a message saying
// where the tenant comes from.
var reservedParams = []string{"tenant_id", "tenant", "owner_id", "schema", "schema_name"}

// maxParamNameLength bounds the name of an unknown query parameter repeated in an error message.
const maxParamNameLength = 64

// queryOf parses the query string and refuses parameters the route does not take (a tenant id,
// owner id or schema among them) and parameters given twice, naming them.
func queryOf(c echo.Context, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(c.Request().URL.RawQuery)
	if err != nil {
		return nil, &registry.FieldError{Field: "query", Message: "malformed query string"}
	}
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		switch {
		case slices.Contains(reservedParams, k):
			return nil, &registry.FieldError{Field: k, Message: "not accepted: the tenant comes from the API key"}
		case !slices.Contains(allowed, k):
			name := k
			if len(name) > maxParamNameLength || !utf8.ValidString(name) {
				name = strings.ToValidUTF8(name[:min(len(name), maxParamNameLength)], "") + "..."
			}
			return nil, &registry.FieldError{Field: name, Message: "unknown query parameter"}
		case len(q[k]) > 1:
			return nil, &registry.FieldError{Field: k, Message: "given more than once"}
		}
	}
	return q, nil
}

// allowQuery refuses any query parameter.
func allowQuery(c echo.Context) error {
	_, err := queryOf(c)
	return err
}

// intParam is an optional integer query parameter.
func intParam(q url.Values, name string) (*int, error) {
	v := q.Get(name)
	if v == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return nil, &registry.FieldError{Field: name, Message: "must be an integer"}
	}
	return &n, nil
}

// parseDate reads an RFC 3339 time or a YYYY-MM-DD date. A date is midnight UTC, or the last
// microsecond of its day when endOfDay is set (an inclusive upper bound).
func parseDate(field, s string, endOfDay bool) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, &registry.FieldError{Field: field,
			Message: "must be an RFC 3339 time (2024-05-01T12:00:00Z) or a date (2024-05-01)"}
	}
	if endOfDay {
		t = t.Add(24*time.Hour - time.Microsecond)
	}
	return t, nil
}

// tierLabel bounds the tier label to the known tiers.
func tierLabel(h *routing.Handle) string {
	if h == nil {
		return "none"
	}
	switch h.Tier {
	case registry.TierShared, registry.TierSchema, registry.TierDatabase:
		return string(h.Tier)
	}
	return "other"
}

// routerMetrics count router requests by tier. Labels are bounded: method, route template,
// status code and tier (shared, schema, database, or none before authentication).
type routerMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newRouterMetrics(reg prometheus.Registerer) (*routerMetrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tenantmem_router_requests_total",
		Help: "Router requests, by method, route template, status code and tenant tier (none before authentication).",
	}, []string{"method", "route", "code", "tier"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tenantmem_router_request_duration_seconds",
		Help:    "Router request latency, by method, route template, status class and tenant tier.",
		Buckets: prometheus.DefBuckets,
	}, []string{"method", "route", "status_class", "tier"})
	var err error
	if requests, err = register(reg, requests); err != nil {
		return nil, err
	}
	if duration, err = register(reg, duration); err != nil {
		return nil, err
	}
	return &routerMetrics{requests: requests, duration: duration}, nil
}

// instrument is the outermost route middleware of the router: it renders errors through the error
// handler (so that it sees the final status) and records the request by tier.
func (r *router) instrument(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}
		status := c.Response().Status
		route, method := routeLabel(c), methodLabel(c.Request().Method)
		tier := tierLabel(handleFrom(c.Request().Context()))
		r.metrics.requests.WithLabelValues(method, route, strconv.Itoa(status), tier).Inc()
		r.metrics.duration.WithLabelValues(method, route, strconv.Itoa(status/100)+"xx", tier).
			Observe(time.Since(start).Seconds())
		return nil
	}
}

// resolverCollector exposes a resolver's cache sizes and counters.
type resolverCollector struct {
	r                                        *routing.Resolver
	entries, hits, misses, evictions, purges *prometheus.Desc
}

func newResolverCollector(r *routing.Resolver) *resolverCollector {
	return &resolverCollector{
		r: r,
		entries: prometheus.NewDesc("tenantmem_router_cache_entries",
			"Entries in the router's caches (handles: tenant handles; keys: API keys).", []string{"cache"}, nil),
		hits: prometheus.NewDesc("tenantmem_router_cache_hits_total",
			"Router cache hits.", []string{"cache"}, nil),
		misses: prometheus.NewDesc("tenantmem_router_cache_misses_total",
			"Router cache misses; a handle miss costs one registry query.", []string{"cache"}, nil),
		evictions: prometheus.NewDesc("tenantmem_router_cache_evictions_total",
			"Router cache evictions caused by registry notifications.", nil, nil),
		purges: prometheus.NewDesc("tenantmem_router_cache_purges_total",
			"Purges of every router cache (the registry listener reconnected).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (rc *resolverCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- rc.entries
	ch <- rc.hits
	ch <- rc.misses
	ch <- rc.evictions
	ch <- rc.purges
}

// Collect implements prometheus.Collector.
func (rc *resolverCollector) Collect(ch chan<- prometheus.Metric) {
	handles, keys := rc.r.Len()
	s := rc.r.Stats()
	ch <- prometheus.MustNewConstMetric(rc.entries, prometheus.GaugeValue, float64(handles), "handles")
	ch <- prometheus.MustNewConstMetric(rc.entries, prometheus.GaugeValue, float64(keys), "keys")
	ch <- prometheus.MustNewConstMetric(rc.hits, prometheus.CounterValue, float64(s.HandleHits), "handles")
	ch <- prometheus.MustNewConstMetric(rc.hits, prometheus.CounterValue, float64(s.KeyHits), "keys")
	ch <- prometheus.MustNewConstMetric(rc.misses, prometheus.CounterValue, float64(s.HandleMisses), "handles")
	ch <- prometheus.MustNewConstMetric(rc.misses, prometheus.CounterValue, float64(s.KeyMisses), "keys")
	ch <- prometheus.MustNewConstMetric(rc.evictions, prometheus.CounterValue, float64(s.Evictions))
	ch <- prometheus.MustNewConstMetric(rc.purges, prometheus.CounterValue, float64(s.Purges))
}
