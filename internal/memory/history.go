package memory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Limits of [SearchHistoryListParams].
const (
	DefaultHistoryLimit = 50
	MaxHistoryLimit     = 1000
)

// searchFilters is what the history records of a search besides its query: the filters and
// options, never the results (the original stored the top results' full content).
type searchFilters struct {
	Limit                int             `json:"limit"`
	Alpha                *float64        `json:"alpha,omitempty"`
	QueryEmbedding       bool            `json:"query_embedding,omitempty"`
	IDAtOrigin           string          `json:"id_at_origin,omitempty"`
	IDAtOrigins          []string        `json:"id_at_origins,omitempty"`
	DocumentTypes        []string        `json:"document_types,omitempty"`
	MetadataFilter       json.RawMessage `json:"metadata_filter,omitempty"`
	ChunkMetadataFilter  json.RawMessage `json:"chunk_metadata_filter,omitempty"`
	Rerank               bool            `json:"rerank,omitempty"`
	DateFrom             *time.Time      `json:"date_from,omitempty"`
	DateTo               *time.Time      `json:"date_to,omitempty"`
	IncludeParentContext bool            `json:"include_parent_context,omitempty"`
	IncludeDocuments     bool            `json:"include_documents,omitempty"`
	Degraded             bool            `json:"degraded,omitempty"`
}

// historyEntry is one search waiting to be recorded.
type historyEntry struct {
	s         Scope
	query     string
	typ       string
	filters   []byte
	results   int
	latencyMS float64
	at        time.Time
}

// HistoryStats counts what became of the search records since the engine started.
type HistoryStats struct {
	// Written records are in the database.
	Written uint64
	// Dropped records were given up: the queue was full, the tenant was fenced (deleted or
	// suspended meanwhile), or the write failed HistoryWriteAttempts times. Each drop is logged.
	Dropped uint64
	// Queued records wait for the background writer.
	Queued int
}

// historyWriteAttempts is how often a failed history write is tried before its records are
// dropped (and logged).
const historyWriteAttempts = 3

type historyQueue struct {
	mu      sync.Mutex
	pending []historyEntry
	limit   int
	wake    chan struct{}
	flushMu sync.Mutex // one flush at a time
	written atomic.Uint64
	dropped atomic.Uint64
}

func newHistoryQueue(limit int) *historyQueue {
	return &historyQueue{limit: limit, wake: make(chan struct{}, 1)}
}

// HistoryStats returns the counters of the search history writer.
func (e *Engine) HistoryStats() HistoryStats {
	e.hist.mu.Lock()
	q := len(e.hist.pending)
	e.hist.mu.Unlock()
	return HistoryStats{Written: e.hist.written.Load(), Dropped: e.hist.dropped.Load(), Queued: q}
}

// recordSearch records a finished search. It never fails the search: with AsyncHistory the
// record is queued for RunHistory; otherwise it is written at once in a transaction of its own,
// and a failure is logged and counted.
func (e *Engine) recordSearch(ctx context.Context, s Scope, in searchInput, results int, tookMS float64) {
	f := searchFilters{
		Limit: in.limit, QueryEmbedding: in.p.QueryEmbedding != nil,
		IDAtOrigin: in.p.IDAtOrigin, IDAtOrigins: in.idAtOrigins, DocumentTypes: in.p.DocumentTypes,
		MetadataFilter: in.metadata, ChunkMetadataFilter: in.chunkMetadata, DateFrom: in.p.DateFrom, DateTo: in.p.DateTo,
		IncludeParentContext: in.p.IncludeParentContext, IncludeDocuments: in.p.IncludeDocuments,
		Rerank: in.rerank,
	}
	if in.searchType == SearchHybrid {
		f.Alpha = &in.alpha
	}
	fj, err := json.Marshal(f)
	if err != nil {
		e.cfg.Logger.ErrorContext(ctx, "memory: search history record", slog.String("error", err.Error()))
		e.hist.dropped.Add(1)
		return
	}
	h := historyEntry{s: s, query: in.queryText, typ: in.searchType, filters: fj, results: results, latencyMS: tookMS,
		at: time.Now()}
	if !e.cfg.AsyncHistory {
		e.writeHistory(context.WithoutCancel(ctx), []historyEntry{h})
		return
	}
	q := e.hist
	q.mu.Lock()
	full := len(q.pending) >= q.limit
	if !full {
		q.pending = append(q.pending, h)
	}
	q.mu.Unlock()
	if full {
		q.dropped.Add(1)
		e.cfg.Logger.WarnContext(ctx, "memory: search history queue full; record dropped",
			slog.String("owner_id", s.OwnerID), slog.Int("queue", q.limit))
		return
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// RunHistory writes the queued search records (AsyncHistory) until ctx ends: every
// HistoryFlushInterval, in one transaction per tenant with all its queued records. When ctx ends
// it writes what is left (bounded by 10 seconds) and returns. Records still queued when the
// process dies are lost: at most one flush interval of searches (see docs/memory.md).
func (e *Engine) RunHistory(ctx context.Context) {
	t := time.NewTicker(e.cfg.HistoryFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			e.FlushHistory(fctx)
			cancel()
			return
		case <-t.C:
			e.FlushHistory(ctx)
		}
	}
}

// FlushHistory writes every queued search record now. Failures are logged and counted.
func (e *Engine) FlushHistory(ctx context.Context) {
	q := e.hist
	q.flushMu.Lock()
	defer q.flushMu.Unlock()
	q.mu.Lock()
	batch := q.pending
	q.pending = nil
	q.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	// One transaction per tenant, in arrival order.
	groups := map[string][]historyEntry{}
	var order []string
	for _, h := range batch {
		k := sizeKey(h.s) + "\x00" + fmt.Sprintf("%p", h.s.Pool)
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], h)
	}
	for _, k := range order {
		e.writeHistory(ctx, groups[k])
	}
}

// writeHistory writes the records of one tenant in one transaction (fenced like every write of
// the scope), numbering them after the tenant's own newest search_id, then prunes the tenant's
// rows beyond the newest HistoryMaxRows and older than HistoryMaxAge. It retries a failure
// (a concurrent writer took the same ids, a lost connection) and gives up after
// historyWriteAttempts, logging what it dropped.
func (e *Engine) writeHistory(ctx context.Context, hs []historyEntry) {
	s := hs[0].s
	queries, types, filters := make([]string, len(hs)), make([]string, len(hs)), make([]string, len(hs))
	results, lat, at := make([]int32, len(hs)), make([]float64, len(hs)), make([]time.Time, len(hs))
	for i, h := range hs {
		queries[i], types[i], filters[i] = h.query, h.typ, string(h.filters)
		results[i], lat[i], at[i] = int32(min(h.results, math.MaxInt32)), h.latencyMS, h.at
	}
	var err error
	for attempt := 1; attempt <= historyWriteAttempts; attempt++ {
		err = s.InTx(ctx, func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue(`INSERT INTO search_history (owner_id, search_id, query_text, search_type, filters, result_count, latency_ms, created_at)
				SELECT $1, m.id + u.ord, u.q, u.t, u.f::jsonb, u.n, u.l, u.at
				FROM (SELECT coalesce(max(search_id), 0) AS id FROM search_history WHERE owner_id = $1) m,
				     unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::float8[], $7::timestamptz[])
				         WITH ORDINALITY AS u(q, t, f, n, l, at, ord)`,
				s.OwnerID, queries, types, filters, results, lat, at)
			b.Queue(`DELETE FROM search_history
				WHERE owner_id = $1
				  AND (created_at < now() - make_interval(secs => $3)
				       OR search_id <= (SELECT max(search_id) FROM search_history WHERE owner_id = $1) - $2)`,
				s.OwnerID, e.cfg.HistoryMaxRows, e.cfg.HistoryMaxAge.Seconds())
			return tx.SendBatch(ctx, b).Close()
		})
		if err == nil {
			e.hist.written.Add(uint64(len(hs)))
			return
		}
		if errors.Is(err, ErrFenced) || ctx.Err() != nil {
			break
		}
		if attempt < historyWriteAttempts {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt*attempt) * 50 * time.Millisecond):
			}
		}
	}
	e.hist.dropped.Add(uint64(len(hs)))
	e.cfg.Logger.WarnContext(ctx, "memory: search history not written; records dropped",
		slog.String("owner_id", s.OwnerID), slog.Int("records", len(hs)), slog.String("error", err.Error()))
}

// SearchHistoryListParams selects the newest entries of a tenant's search history.
type SearchHistoryListParams struct {
	// Limit is the number of entries, 1 to 1000; nil means 50.
	Limit *int `json:"limit,omitempty"`
}

// SearchHistoryEntry is one recorded search.
type SearchHistoryEntry struct {
	SearchID    int64           `json:"search_id"`
	QueryText   string          `json:"query_text"`
	SearchType  string          `json:"search_type"`
	Filters     json.RawMessage `json:"filters"`
	ResultCount int             `json:"result_count"`
	LatencyMS   float64         `json:"latency_ms"`
	CreatedAt   time.Time       `json:"created_at"`
}

// SearchHistory returns the tenant's most recent searches, newest first. The history keeps at
// most Config.HistoryMaxRows searches per tenant, none older than Config.HistoryMaxAge.
func (e *Engine) SearchHistory(ctx context.Context, s Scope, p SearchHistoryListParams) ([]SearchHistoryEntry, error) {
	limit := DefaultHistoryLimit
	if p.Limit != nil {
		if *p.Limit < 1 || *p.Limit > MaxHistoryLimit {
			return nil, invalid("limit", "must be between 1 and %d, got %d", MaxHistoryLimit, *p.Limit)
		}
		limit = *p.Limit
	}
	// Read your own searches: what this process still has queued is written first.
	e.FlushHistory(ctx)
	var out []SearchHistoryEntry
	err := s.inTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			SELECT search_id, query_text, search_type, filters, result_count, latency_ms, created_at
			FROM search_history
			WHERE owner_id = $1 AND created_at >= now() - make_interval(secs => $3)
			ORDER BY search_id DESC LIMIT $2`, s.OwnerID, limit, e.cfg.HistoryMaxAge.Seconds())
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (SearchHistoryEntry, error) {
			var h SearchHistoryEntry
			err := r.Scan(&h.SearchID, &h.QueryText, &h.SearchType, &h.Filters, &h.ResultCount, &h.LatencyMS, &h.CreatedAt)
			return h, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("memory: search history: %w", err)
	}
	if out == nil {
		out = []SearchHistoryEntry{}
	}
	return out, nil
}
