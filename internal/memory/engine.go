package memory

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tenantmem/tenantmem/internal/embed"
)

// Defaults of [Config], applied by [Config.WithDefaults].
const (
	// DefaultMaxContentBytes is the largest document content accepted: 10 MB.
	DefaultMaxContentBytes = 10 << 20
	// DefaultMaxQueryChars is the longest query_text accepted, in characters (as the original).
	DefaultMaxQueryChars = 1000
	// DefaultHistoryMaxRows is how many search history rows are kept per tenant.
	DefaultHistoryMaxRows = 1000
	// DefaultHistoryMaxAge is how long search history rows are kept.
	DefaultHistoryMaxAge = 30 * 24 * time.Hour
	// DefaultRRFK is the k of reciprocal rank fusion.
	DefaultRRFK = 60
	// DefaultLexicalDepth bounds the postings text search reads per query term (see
	// Config.LexicalDepth).
	DefaultLexicalDepth = 1000
	// DefaultPreparedSearches is Config.PreparedSearches' default.
	DefaultPreparedSearches = 16
	// DefaultRecallTarget is the recall@10 against an exact scan that vector search aims for: the
	// HNSW search effort (ef_search) is chosen for it per tier and tenant size ([EfSearchFor]).
	DefaultRecallTarget = 0.95
	// MinRecallTarget is the lowest recall target a request may ask for.
	MinRecallTarget = 0.5
	// DefaultRerankTopK is how many candidates the reranker sees when a request does not say
	// (or the limit, when larger).
	DefaultRerankTopK = 20
	// MaxRerankTopK is the most candidates a request may send to the reranker.
	MaxRerankTopK = 100
	// DefaultRerankTimeout bounds one reranker call; past it the results keep the unreranked
	// order, marked degraded.
	DefaultRerankTimeout = 2 * time.Second
	// DefaultHistoryFlushInterval is how often the asynchronous history writer writes.
	DefaultHistoryFlushInterval = 200 * time.Millisecond
	// DefaultHistoryQueueSize bounds the searches waiting for the asynchronous history writer.
	DefaultHistoryQueueSize = 10000
	// DefaultMaxScanTuples is hnsw.max_scan_tuples, the bound of an iterative index scan.
	DefaultMaxScanTuples = 20000
	// DefaultExactSearchThreshold is the tenant size, in chunks, up to which vector search scans
	// the tenant's rows exactly instead of walking the HNSW graph. An exact scan costs about
	// 2µs per chunk here (2,000 chunks: 3 to 5 ms, 20,000: 30 to 40 ms), while the graph walk
	// over a shared table loses recall for small tenants (0.92 for one owning 1% of 200,000
	// chunks at ef_search 100). See docs/memory.md for the measurements.
	DefaultExactSearchThreshold = 5000
	// DefaultMaxChunksPerDocument bounds the work of one ingest: a 10 MB text document at the
	// default chunk sizes makes about 13,500 chunks; a tiny child_size on the same content would
	// make hundreds of thousands, and is refused with 413 instead.
	DefaultMaxChunksPerDocument = 20_000
	// DefaultIngestBatchSize is how many chunks one INSERT statement of an ingest writes, so each
	// statement of a large document stays well inside the statement timeout.
	DefaultIngestBatchSize = 500
	// DefaultYieldBatchSize is Config.YieldBatchSize's default.
	DefaultYieldBatchSize = 64
	// DefaultIdempotencyTTL is how long the result of a write made with an idempotency key is
	// kept for a retry.
	DefaultIdempotencyTTL = 24 * time.Hour
)

// Limits of the HTTP contract.
const (
	// MaxLimit is the largest limit of a search or a list.
	MaxLimit = 100
	// MaxMetadataBytes is the largest metadata object, and the largest metadata filter.
	MaxMetadataBytes = 64 << 10
	// MaxDocumentNameChars is the longest document name, in characters.
	MaxDocumentNameChars = 500
	// MaxIDAtOriginBytes is the longest id_at_origin, in bytes.
	MaxIDAtOriginBytes = 255
	// MaxFilterValues bounds the lists of a filter (document_ids, id_at_origins, document_types).
	MaxFilterValues = 1000
)

// Config configures an [Engine]. Zero values mean the documented default.
type Config struct {
	// Embedder computes the vectors of chunks and queries. Required. Its dimension must be the
	// deployment's embedding dimension (the width of the chunks.embedding column).
	Embedder embed.Provider
	// MaxContentBytes is the largest document content, in bytes. Default 10 MB.
	MaxContentBytes int
	// MaxQueryChars is the longest query text, in characters. Default 1000.
	MaxQueryChars int
	// HistoryMaxRows is how many search history rows are kept per tenant; older ones are pruned
	// when a search is recorded. Default 1000.
	HistoryMaxRows int
	// HistoryMaxAge is how long search history rows are kept. Default 30 days.
	HistoryMaxAge time.Duration
	// RRFK is the k of weighted reciprocal rank fusion in hybrid search. Default 60.
	RRFK int
	// EfSearch, when set, fixes hnsw.ef_search for vector queries (at most 1000) instead of
	// choosing it for the recall target. Default 0: chosen by [EfSearchFor].
	EfSearch int
	// Fusion is the default fusion of hybrid search, FusionScore or FusionRRF. Default
	// FusionScore (chosen on the evaluation sets, docs/benchmarks.md).
	Fusion string
	// LexicalDepth is how many postings of each query term text search reads, best impact
	// first (the term's BM25 term-frequency part); terms with more postings are scored on their
	// best LexicalDepth only, which bounds the cost of common words. Negative means all (exact
	// BM25 for every query). Default 1000.
	LexicalDepth int
	// RecallTarget is the default recall@10 target of vector search (a request may override it
	// with recall_target), in [MinRecallTarget, 1]. Default 0.95.
	RecallTarget float64
	// Reranker, when set, serves requests with rerank: true. Default: none (such requests get 400).
	Reranker Reranker
	// RerankTimeout bounds one reranker call. Default 2s.
	RerankTimeout time.Duration
	// AsyncHistory records searches in the background: Search queues the record and returns, and
	// [Engine.RunHistory], which the caller must run, writes the queue in batches every
	// HistoryFlushInterval. Without it each search writes its record in a transaction of its own
	// after the answer is ready. Either way a failed history write never fails the search.
	AsyncHistory bool
	// HistoryFlushInterval is how often RunHistory writes. Default 200ms.
	HistoryFlushInterval time.Duration
	// HistoryQueueSize bounds the queued records; past it new records are dropped and counted
	// (HistoryStats). Default 10,000.
	HistoryQueueSize int
	// MaxScanTuples is hnsw.max_scan_tuples: how far an iterative index scan may go to satisfy a
	// filtered query before the engine falls back to an exact scan. Default 20000.
	MaxScanTuples int
	// ExactSearchThreshold is the tenant size (chunks of both levels) up to which vector search
	// is an exact scan. Default 5000; a negative value disables the exact path (the fallback for
	// short result lists still applies).
	ExactSearchThreshold int
	// MaxChunksPerDocument is the most chunks (both levels) one document may make; a document
	// that would make more is refused with a *ValidationError (413) before anything is written.
	// Default 20,000.
	MaxChunksPerDocument int
	// IngestBatchSize is how many chunks one INSERT of an ingest writes. Default 500.
	IngestBatchSize int
	// YieldBatchSize is how many chunks one batch of bulk work (an INSERT, an embedding slice)
	// holds when the scope yields between batches (Scope.Yield): smaller batches let other
	// tenants' requests in sooner. Default 64.
	YieldBatchSize int
	// IdempotencyTTL is how long a write's idempotency key is remembered. Default 24 hours.
	IdempotencyTTL time.Duration
	// PreparedSearches is how many search statements each pooled connection keeps prepared
	// (one per tenant schema and query shape: filters, options, mode). A connection prepares a
	// statement the second time it runs it, so one-off tenants of the schema tier cost nothing,
	// and drops the least recently used one past this number. A prepared text statement holds
	// about 0.3 MB of the server's memory. Default 16; negative: none (every search statement is
	// parsed and planned each time).
	PreparedSearches int
	// Logger receives warnings (provider failures at ingest). Default: discard.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with unset fields replaced by their defaults.
func (c Config) WithDefaults() Config {
	c.MaxContentBytes = cmp.Or(c.MaxContentBytes, DefaultMaxContentBytes)
	c.MaxQueryChars = cmp.Or(c.MaxQueryChars, DefaultMaxQueryChars)
	c.HistoryMaxRows = cmp.Or(c.HistoryMaxRows, DefaultHistoryMaxRows)
	c.HistoryMaxAge = cmp.Or(c.HistoryMaxAge, DefaultHistoryMaxAge)
	c.RRFK = cmp.Or(c.RRFK, DefaultRRFK)
	c.RecallTarget = cmp.Or(c.RecallTarget, DefaultRecallTarget)
	c.LexicalDepth = cmp.Or(c.LexicalDepth, DefaultLexicalDepth)
	c.Fusion = cmp.Or(c.Fusion, FusionScore)
	c.RerankTimeout = cmp.Or(c.RerankTimeout, DefaultRerankTimeout)
	c.HistoryFlushInterval = cmp.Or(c.HistoryFlushInterval, DefaultHistoryFlushInterval)
	c.HistoryQueueSize = cmp.Or(c.HistoryQueueSize, DefaultHistoryQueueSize)
	c.MaxScanTuples = cmp.Or(c.MaxScanTuples, DefaultMaxScanTuples)
	c.ExactSearchThreshold = cmp.Or(c.ExactSearchThreshold, DefaultExactSearchThreshold)
	c.MaxChunksPerDocument = cmp.Or(c.MaxChunksPerDocument, DefaultMaxChunksPerDocument)
	c.IngestBatchSize = cmp.Or(c.IngestBatchSize, DefaultIngestBatchSize)
	c.YieldBatchSize = cmp.Or(c.YieldBatchSize, DefaultYieldBatchSize)
	c.IdempotencyTTL = cmp.Or(c.IdempotencyTTL, DefaultIdempotencyTTL)
	c.PreparedSearches = cmp.Or(c.PreparedSearches, DefaultPreparedSearches)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Embedder == nil:
		return errors.New("memory: Config.Embedder is required")
	case c.Embedder.Dimension() < 1:
		return fmt.Errorf("memory: Config.Embedder has dimension %d", c.Embedder.Dimension())
	case c.MaxContentBytes < 1:
		return fmt.Errorf("memory: Config.MaxContentBytes must be positive, got %d", c.MaxContentBytes)
	case c.MaxQueryChars < 1:
		return fmt.Errorf("memory: Config.MaxQueryChars must be positive, got %d", c.MaxQueryChars)
	case c.HistoryMaxRows < 1:
		return fmt.Errorf("memory: Config.HistoryMaxRows must be positive, got %d", c.HistoryMaxRows)
	case c.HistoryMaxAge <= 0:
		return fmt.Errorf("memory: Config.HistoryMaxAge must be positive, got %s", c.HistoryMaxAge)
	case c.RRFK < 1:
		return fmt.Errorf("memory: Config.RRFK must be positive, got %d", c.RRFK)
	case c.EfSearch < 0 || c.EfSearch > 1000:
		return fmt.Errorf("memory: Config.EfSearch must be in [0, 1000], got %d", c.EfSearch)
	case c.Fusion != FusionScore && c.Fusion != FusionRRF && c.Fusion != FusionDBSF:
		return fmt.Errorf("memory: Config.Fusion must be %q or %q, got %q", FusionScore, FusionRRF, c.Fusion)
	case c.RecallTarget < MinRecallTarget || c.RecallTarget > 1:
		return fmt.Errorf("memory: Config.RecallTarget must be in [%v, 1], got %v", MinRecallTarget, c.RecallTarget)
	case c.RerankTimeout < 0 || c.HistoryFlushInterval < 0 || c.HistoryQueueSize < 1:
		return fmt.Errorf("memory: Config.RerankTimeout, HistoryFlushInterval and HistoryQueueSize must be positive")
	case c.MaxScanTuples < 1:
		return fmt.Errorf("memory: Config.MaxScanTuples must be positive, got %d", c.MaxScanTuples)
	case c.MaxChunksPerDocument < 1:
		return fmt.Errorf("memory: Config.MaxChunksPerDocument must be positive, got %d", c.MaxChunksPerDocument)
	case c.IngestBatchSize < 1:
		return fmt.Errorf("memory: Config.IngestBatchSize must be positive, got %d", c.IngestBatchSize)
	case c.IdempotencyTTL <= 0:
		return fmt.Errorf("memory: Config.IdempotencyTTL must be positive, got %s", c.IdempotencyTTL)
	}
	return nil
}

// Engine is the document memory: it adds, reads, lists and deletes documents, chunks and
// embeds them, and searches them, for one tenant at a time given a [Scope]. The same engine
// serves every tier and every tenant. It is safe for concurrent use; build one per process.
type Engine struct {
	cfg   Config
	sizes *sizeCache
	hist  *historyQueue
}

// New validates cfg (after defaults) and returns an Engine.
func New(cfg Config) (*Engine, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Engine{cfg: cfg, sizes: newSizeCache(), hist: newHistoryQueue(cfg.HistoryQueueSize)}, nil
}

// Config returns the engine's configuration, defaults applied.
func (e *Engine) Config() Config { return e.cfg }
