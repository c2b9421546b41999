package memory

import (
	"context"
	"encoding/json"
	"fmt"
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
	DateFrom             *time.Time      `json:"date_from,omitempty"`
	DateTo               *time.Time      `json:"date_to,omitempty"`
	IncludeParentContext bool            `json:"include_parent_context,omitempty"`
	IncludeDocuments     bool            `json:"include_documents,omitempty"`
	Degraded             bool            `json:"degraded,omitempty"`
}

// recordSearch inserts one history row and prunes the tenant's rows beyond the newest
// HistoryMaxRows and older than HistoryMaxAge. The prune reads at most HistoryMaxRows+1 entries
// of the (owner_id, search_id) index, so its cost is bounded whatever the table holds.
func (e *Engine) recordSearch(ctx context.Context, tx pgx.Tx, s Scope, in searchInput, results int, tookMS float64) error {
	f := searchFilters{
		Limit: in.limit, QueryEmbedding: in.p.QueryEmbedding != nil,
		IDAtOrigin: in.p.IDAtOrigin, IDAtOrigins: in.idAtOrigins, DocumentTypes: in.p.DocumentTypes,
		MetadataFilter: in.metadata, DateFrom: in.p.DateFrom, DateTo: in.p.DateTo,
		IncludeParentContext: in.p.IncludeParentContext, IncludeDocuments: in.p.IncludeDocuments,
	}
	if in.searchType == SearchHybrid {
		f.Alpha = &in.alpha
	}
	fj, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("memory: search history: %w", err)
	}
	// Two statements in one round trip: a data-modifying CTE would hide the new row from the
	// prune's count.
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO search_history (owner_id, query_text, search_type, filters, result_count, latency_ms)
		VALUES ($1, $2, $3, $4, $5, $6)`, s.OwnerID, in.queryText, in.searchType, fj, results, tookMS)
	b.Queue(`DELETE FROM search_history
		WHERE owner_id = $1
		  AND (created_at < now() - make_interval(secs => $3)
		       OR search_id <= (SELECT search_id FROM search_history WHERE owner_id = $1
		                        ORDER BY search_id DESC OFFSET $2 LIMIT 1))`,
		s.OwnerID, e.cfg.HistoryMaxRows, e.cfg.HistoryMaxAge.Seconds())
	err = tx.SendBatch(ctx, b).Close()
	if err != nil {
		return fmt.Errorf("memory: search history: %w", err)
	}
	return nil
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
