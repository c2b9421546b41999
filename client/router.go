package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Router is a client of the tenant router, authenticated with one tenant's API key: every call
// acts on that tenant, and on nothing else. Build it with [NewRouter]. Safe for concurrent use.
type Router struct{ c *conn }

// NewRouter returns a client of the router at cfg.BaseURL with the API key cfg.Token.
func NewRouter(cfg Config) (*Router, error) {
	c, err := newConn(cfg)
	if err != nil {
		return nil, err
	}
	return &Router{c: c}, nil
}

// ActAs returns a client that acts for tenantID, a tenant strictly below the key's own
// ("acme/u-42" for a key of "acme"), by sending it in the Tenantmem-Act-As header. The key must
// have been issued with the delegate scope. The router answers 403 when it has not, 404 (one
// answer for all) when tenantID is not a registered, active tenant below the key's, and 400
// when tenantID is not a valid tenant id as written. The returned client shares r's connections;
// r itself is unchanged. An empty tenantID returns a client for the key's own tenant.
func (r *Router) ActAs(tenantID string) *Router {
	c := *r.c
	c.actAs = tenantID
	return &Router{c: &c}
}

// Search types of [SearchParams].
const (
	SearchVector = "vector"
	SearchText   = "text"
	SearchHybrid = "hybrid"
)

// Orders of [DocumentListParams].
const (
	OrderByCreatedAt    = "created_at"
	OrderByUpdatedAt    = "updated_at"
	OrderByDocumentName = "document_name"
	OrderAsc            = "asc"
	OrderDesc           = "desc"
)

// ChunkingOptions overrides the chunk window sizes of a document type, in tokens; zero keeps the
// type's default, -1 disables an overlap.
type ChunkingOptions struct {
	ParentSize    int `json:"parent_size,omitempty"`
	ChildSize     int `json:"child_size,omitempty"`
	ParentOverlap int `json:"parent_overlap,omitempty"`
	ChildOverlap  int `json:"child_overlap,omitempty"`
}

// DocumentAddParams is the body of POST /v1/documents: a document to add, or to replace when
// IDAtOrigin names one the tenant already has.
type DocumentAddParams struct {
	// DocumentName (1-500 characters) and DocumentType (e.g. "text", "markdown") are required,
	// and either Content (at most 10 MB) or Chunks.
	DocumentName string `json:"document_name"`
	DocumentType string `json:"document_type"`
	Content      string `json:"content,omitempty"`
	// Chunks, instead of Content, gives the document already chunked, with or without your own
	// vectors (see [ChunkInput]).
	Chunks []ChunkInput `json:"chunks,omitempty"`
	// IDAtOrigin is the document's id in your system and the upsert key.
	IDAtOrigin string `json:"id_at_origin,omitempty"`
	// Metadata is a JSON object of at most 64 KB, replaced on upsert.
	Metadata map[string]any `json:"metadata,omitempty"`
	// DocumentDate is the document's own date, what SearchParams.DateFrom and DateTo filter on.
	DocumentDate *time.Time `json:"document_date,omitempty"`
	// Chunking overrides the window sizes of DocumentType.
	Chunking *ChunkingOptions `json:"chunking,omitempty"`
}

// ChunkInput is one chunk of a pre-chunked document (DocumentAddParams.Chunks).
type ChunkInput struct {
	// Content is the chunk's text.
	Content string `json:"content"`
	// Metadata is a JSON object, stored as the chunk's metadata.
	Metadata map[string]any `json:"metadata,omitempty"`
	// Embedding is the chunk's vector: exactly the deployment's dimension, finite, not all zero;
	// leaves only. Without it the router embeds the chunk.
	Embedding []float32 `json:"embedding,omitempty"`
	// Level is 0 for a leaf (embedded and searched) and 1 or more for a parent.
	Level int `json:"level,omitempty"`
	// Parent is the position in Chunks of the chunk's parent, an earlier chunk of a higher
	// level; nil for a top-level chunk.
	Parent *int `json:"parent,omitempty"`
}

// DocumentAddResult is the answer of POST /v1/documents.
type DocumentAddResult struct {
	DocumentID        string `json:"document_id"`
	ChunksCreated     int    `json:"chunks_created"`
	EmbeddingsCreated int    `json:"embeddings_created"`
	// EmbeddingsPending counts chunks queued because the embedding provider failed; the router
	// embeds them in the background, and the document is searchable by text meanwhile.
	EmbeddingsPending int       `json:"embeddings_pending"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
	// Created is true when the document is new (201), false when it replaced the document with
	// the same IDAtOrigin (200).
	Created bool `json:"-"`
}

// Document is a stored document, without its content (that lives in its chunks).
type Document struct {
	DocumentID   string         `json:"document_id"`
	IDAtOrigin   *string        `json:"id_at_origin"`
	DocumentName string         `json:"document_name"`
	DocumentType string         `json:"document_type"`
	DocumentDate *time.Time     `json:"document_date"`
	Metadata     map[string]any `json:"metadata"`
	ContentBytes int64          `json:"content_bytes"`
	ChunkCount   int            `json:"chunk_count"`
	CreatedAt    time.Time      `json:"created_at"`
	UpdatedAt    time.Time      `json:"updated_at"`
}

// Chunk is a stored chunk: level 0 chunks are embedded and searched, level 1 chunks are their
// parents (wider context).
type Chunk struct {
	ChunkID       string         `json:"chunk_id"`
	ParentChunkID *string        `json:"parent_chunk_id"`
	ChunkIndex    int            `json:"chunk_index"`
	ChunkLevel    int            `json:"chunk_level"`
	Content       string         `json:"content"`
	ContentHash   string         `json:"content_hash"`
	TokenCount    int            `json:"token_count"`
	Metadata      map[string]any `json:"metadata"`
	HasEmbedding  bool           `json:"has_embedding"`
}

// DocumentWithChunks is the answer of GET /v1/documents/{id}; Chunks only with IncludeChunks.
type DocumentWithChunks struct {
	Document
	Chunks []Chunk `json:"chunks,omitempty"`
}

// DocumentGetParams are the options of GET /v1/documents/{id}.
type DocumentGetParams struct {
	// IncludeChunks adds the document's chunks, in order.
	IncludeChunks bool
}

// DocumentListParams are the query parameters of GET /v1/documents. Zero values are left out
// (the server's defaults: 20 documents, newest first).
type DocumentListParams struct {
	Limit          int // 1-100
	Offset         int
	DocumentType   string
	IDAtOrigin     string
	MetadataFilter map[string]any // documents whose metadata contains this object
	OrderBy        string         // OrderByCreatedAt, OrderByUpdatedAt or OrderByDocumentName
	Order          string         // OrderAsc or OrderDesc
}

// DocumentListResult is one page of documents and how many match in all.
type DocumentListResult struct {
	Documents []Document `json:"documents"`
	Total     int        `json:"total"`
	Limit     int        `json:"limit"`
	Offset    int        `json:"offset"`
}

// DocumentDeleteManyParams is the body of POST /v1/documents/delete: exactly one of DocumentIDs
// (at most 1000) or MetadataFilter.
type DocumentDeleteManyParams struct {
	DocumentIDs    []string       `json:"document_ids,omitempty"`
	MetadataFilter map[string]any `json:"metadata_filter,omitempty"`
}

// DocumentDeleteManyResult lists the deleted documents; unknown ids are skipped.
type DocumentDeleteManyResult struct {
	DeletedCount       int      `json:"deleted_count"`
	DeletedDocumentIDs []string `json:"deleted_document_ids"`
}

// SearchParams is the body of POST /v1/search. Zero values are left out (the server's defaults:
// hybrid, 10 results, alpha 0.1, score fusion, recall target 0.95).
type SearchParams struct {
	QueryText string `json:"query_text"`
	// QueryEmbedding, when set, is used instead of embedding QueryText.
	QueryEmbedding []float32 `json:"query_embedding,omitempty"`
	// SearchType is SearchVector, SearchText or SearchHybrid.
	SearchType     string         `json:"search_type,omitempty"`
	Limit          int            `json:"limit,omitempty"` // 1-100
	IDAtOrigin     string         `json:"id_at_origin,omitempty"`
	IDAtOrigins    []string       `json:"id_at_origins,omitempty"`
	DocumentTypes  []string       `json:"document_types,omitempty"`
	MetadataFilter map[string]any `json:"metadata_filter,omitempty"`
	// DateFrom and DateTo bound the documents' DocumentDate, inclusive.
	DateFrom *time.Time `json:"date_from,omitempty"`
	DateTo   *time.Time `json:"date_to,omitempty"`
	// Alpha weighs the vector side of hybrid search, 0 (text only) to 1 (vector only).
	Alpha                *float64 `json:"alpha,omitempty"`
	IncludeParentContext bool     `json:"include_parent_context,omitempty"`
	IncludeDocuments     bool     `json:"include_documents,omitempty"`
	// ChunkMetadataFilter matches the chunk's own metadata (MetadataFilter the document's).
	ChunkMetadataFilter map[string]any `json:"chunk_metadata_filter,omitempty"`
	// Fusion is how hybrid search fuses its legs: "score" (default), "rrf" or "dbsf".
	Fusion string `json:"fusion,omitempty"`
	// RecallTarget is the recall@10 the HNSW effort aims for, 0.5-1 (1 = exact scan).
	RecallTarget *float64 `json:"recall_target,omitempty"`
	// Rerank re-scores the top RerankTopK candidates with the server's reranker.
	Rerank     bool `json:"rerank,omitempty"`
	RerankTopK int  `json:"rerank_top_k,omitempty"`
}

// ParentChunk is the wider context of a hit (SearchParams.IncludeParentContext).
type ParentChunk struct {
	ChunkID    string `json:"chunk_id"`
	ChunkIndex int    `json:"chunk_index"`
	ChunkLevel int    `json:"chunk_level"`
	Content    string `json:"content"`
}

// SearchResult is one hit, a leaf chunk. Score is on one scale per list, higher is better;
// Similarity, TextRank and RRFScore are its components, nil when their mode did not run.
type SearchResult struct {
	ChunkID      string         `json:"chunk_id"`
	DocumentID   string         `json:"document_id"`
	DocumentName string         `json:"document_name"`
	ChunkIndex   int            `json:"chunk_index"`
	Content      string         `json:"content"`
	Score        float64        `json:"score"`
	Similarity   *float64       `json:"similarity"`
	TextRank     *float64       `json:"text_rank"`
	RRFScore     *float64       `json:"rrf_score"`
	RerankScore  *float64       `json:"rerank_score,omitempty"`
	Metadata     map[string]any `json:"metadata"`
	ParentChunks []ParentChunk  `json:"parent_chunks,omitempty"`
	// With SearchParams.IncludeDocuments only.
	DocumentType     string         `json:"document_type,omitempty"`
	DocumentMetadata map[string]any `json:"document_metadata,omitempty"`
	IDAtOrigin       *string        `json:"id_at_origin,omitempty"`
	DocumentDate     *time.Time     `json:"document_date,omitempty"`
}

// SearchResponse is the answer of a search.
type SearchResponse struct {
	Results    []SearchResult `json:"results"`
	SearchType string         `json:"search_type"`
	TookMS     float64        `json:"took_ms"`
	// Degraded is set when a hybrid search ran on text alone (the embedding provider failed) or
	// the reranker failed (results in the unreranked order); DegradedReasons says which.
	Degraded        bool     `json:"degraded,omitempty"`
	DegradedReasons []string `json:"degraded_reasons,omitempty"`
}

// SearchHistoryEntry is one recorded search of the tenant.
type SearchHistoryEntry struct {
	SearchID    int64          `json:"search_id"`
	QueryText   string         `json:"query_text"`
	SearchType  string         `json:"search_type"`
	Filters     map[string]any `json:"filters"`
	ResultCount int            `json:"result_count"`
	LatencyMS   float64        `json:"latency_ms"`
	CreatedAt   time.Time      `json:"created_at"`
}

// searchHistoryResponse is the body of GET /v1/search/history.
type searchHistoryResponse struct {
	History []SearchHistoryEntry `json:"history"`
}

// Statistics describes the tenant's memory.
type Statistics struct {
	DocumentCount         int            `json:"document_count"`
	ChunkCount            int            `json:"chunk_count"`
	TotalSizeBytes        int64          `json:"total_size_bytes"`
	DocumentTypeBreakdown map[string]int `json:"document_type_breakdown"`
	EmbeddingsPending     int            `json:"embeddings_pending"`
	EmbeddingsFailed      int            `json:"embeddings_failed"`
}

// EmbeddingQueueStats counts the tenant's queued embedding jobs.
type EmbeddingQueueStats struct {
	Pending int `json:"pending"`
	Failed  int `json:"failed"`
}

// embeddingRetryResult is the body of POST /v1/embeddings/retry.
type embeddingRetryResult struct {
	Queued int `json:"queued"`
}

// AddDocument adds a document, or replaces the one with the same IDAtOrigin (Created false).
func (r *Router) AddDocument(ctx context.Context, p DocumentAddParams) (*DocumentAddResult, error) {
	var res DocumentAddResult
	status, err := r.c.call(ctx, http.MethodPost, []string{"v1", "documents"}, nil, p, &res)
	if err != nil {
		return nil, err
	}
	res.Created = status == http.StatusCreated
	return &res, nil
}

// ListDocuments returns a page of the tenant's documents.
func (r *Router) ListDocuments(ctx context.Context, p DocumentListParams) (*DocumentListResult, error) {
	q := url.Values{}
	setInt(q, "limit", p.Limit)
	setInt(q, "offset", p.Offset)
	setString(q, "document_type", p.DocumentType)
	setString(q, "id_at_origin", p.IDAtOrigin)
	setString(q, "order_by", p.OrderBy)
	setString(q, "order", p.Order)
	if p.MetadataFilter != nil {
		b, err := json.Marshal(p.MetadataFilter)
		if err != nil {
			return nil, fmt.Errorf("client: metadata_filter: %w", err)
		}
		q.Set("metadata_filter", string(b))
	}
	var res DocumentListResult
	if _, err := r.c.call(ctx, http.MethodGet, []string{"v1", "documents"}, q, nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// GetDocument returns one document; another tenant's id is ErrNotFound, exactly like a missing one.
func (r *Router) GetDocument(ctx context.Context, documentID string, p DocumentGetParams) (*DocumentWithChunks, error) {
	q := url.Values{}
	if p.IncludeChunks {
		q.Set("include_chunks", "true")
	}
	var res DocumentWithChunks
	if _, err := r.c.call(ctx, http.MethodGet, []string{"v1", "documents", documentID}, q, nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// DeleteDocument deletes one document (ErrNotFound when there is none).
func (r *Router) DeleteDocument(ctx context.Context, documentID string) error {
	_, err := r.c.call(ctx, http.MethodDelete, []string{"v1", "documents", documentID}, nil, nil, nil)
	return err
}

// DeleteDocuments deletes documents by id or by metadata filter.
func (r *Router) DeleteDocuments(ctx context.Context, p DocumentDeleteManyParams) (*DocumentDeleteManyResult, error) {
	var res DocumentDeleteManyResult
	if _, err := r.c.call(ctx, http.MethodPost, []string{"v1", "documents", "delete"}, nil, p, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Search runs a vector, text or hybrid search.
func (r *Router) Search(ctx context.Context, p SearchParams) (*SearchResponse, error) {
	var res SearchResponse
	if _, err := r.c.call(ctx, http.MethodPost, []string{"v1", "search"}, nil, p, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// QuickSearch is GET /v1/search?q=: a hybrid search; limit 0 takes the server's default.
func (r *Router) QuickSearch(ctx context.Context, q string, limit int) (*SearchResponse, error) {
	v := url.Values{"q": {q}}
	setInt(v, "limit", limit)
	var res SearchResponse
	if _, err := r.c.call(ctx, http.MethodGet, []string{"v1", "search"}, v, nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// SearchHistory returns the tenant's recent searches, newest first; limit 0 takes the server's
// default (50).
func (r *Router) SearchHistory(ctx context.Context, limit int) ([]SearchHistoryEntry, error) {
	q := url.Values{}
	setInt(q, "limit", limit)
	var res searchHistoryResponse
	if _, err := r.c.call(ctx, http.MethodGet, []string{"v1", "search", "history"}, q, nil, &res); err != nil {
		return nil, err
	}
	return res.History, nil
}

// Statistics counts the tenant's documents, chunks and queued embeddings.
func (r *Router) Statistics(ctx context.Context) (*Statistics, error) {
	var res Statistics
	if _, err := r.c.call(ctx, http.MethodGet, []string{"v1", "statistics"}, nil, nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// EmbeddingStatus counts the tenant's pending and failed embedding jobs.
func (r *Router) EmbeddingStatus(ctx context.Context) (*EmbeddingQueueStats, error) {
	var res EmbeddingQueueStats
	if _, err := r.c.call(ctx, http.MethodGet, []string{"v1", "embeddings", "status"}, nil, nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// RetryEmbeddings queues the tenant's failed embedding jobs again and returns how many.
func (r *Router) RetryEmbeddings(ctx context.Context) (int, error) {
	var res embeddingRetryResult
	if _, err := r.c.call(ctx, http.MethodPost, []string{"v1", "embeddings", "retry"}, nil, nil, &res); err != nil {
		return 0, err
	}
	return res.Queued, nil
}

// Ready returns nil when the router is ready (GET /readyz answers 200): its database answers and
// `provisioner init` has run.
func (r *Router) Ready(ctx context.Context) error { return r.c.ready(ctx) }

func setInt(q url.Values, name string, v int) {
	if v != 0 {
		q.Set(name, strconv.Itoa(v))
	}
}

func setString(q url.Values, name, v string) {
	if v != "" {
		q.Set(name, v)
	}
}
