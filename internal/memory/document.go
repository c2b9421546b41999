package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/pgvector/pgvector-go"

	"github.com/tenantmem/tenantmem/internal/chunk"
	"github.com/tenantmem/tenantmem/internal/embed"
)

// ChunkingOptions overrides the chunk window sizes of a document type, in tokens. A zero field
// takes the type's default (see chunk.DefaultOptions); chunk.NoOverlap (-1) disables an overlap.
type ChunkingOptions struct {
	// ParentSize is the largest parent chunk.
	ParentSize int `json:"parent_size,omitempty"`
	// ChildSize is the largest leaf chunk (the unit that is embedded and searched).
	ChildSize int `json:"child_size,omitempty"`
	// ParentOverlap is how many tokens consecutive parents share.
	ParentOverlap int `json:"parent_overlap,omitempty"`
	// ChildOverlap is how many tokens consecutive children share.
	ChildOverlap int `json:"child_overlap,omitempty"`
}

// DocumentAddParams is a document to add, or to replace when IDAtOrigin names one the tenant
// already has. The JSON names are those of POST /v1/documents.
type DocumentAddParams struct {
	// DocumentName is required: 1 to 500 characters.
	DocumentName string `json:"document_name"`
	// DocumentType is one of chunk.DocumentTypes(); it selects the chunker and its sizes.
	DocumentType string `json:"document_type"`
	// Content is the text: not blank, valid UTF-8 without NUL, at most Config.MaxContentBytes.
	Content string `json:"content"`
	// IDAtOrigin, when set, is the document's id in the client's system and the upsert key:
	// adding the same IDAtOrigin again replaces that document (same document_id and
	// created_at). Empty means a new document every time.
	IDAtOrigin string `json:"id_at_origin,omitempty"`
	// Metadata is a JSON object of at most 64 KB, stored as given and replaced on upsert.
	Metadata json.RawMessage `json:"metadata,omitempty"`
	// DocumentDate is the document's own date (what date_from/date_to filter on).
	DocumentDate *time.Time `json:"document_date,omitempty"`
	// Chunking overrides the window sizes of DocumentType.
	Chunking ChunkingOptions `json:"chunking,omitzero"`
	// Chunks, instead of Content, gives the document already chunked, with or without the
	// client's vectors (see [ChunkInput]); the document's size is that of its leaves.
	Chunks []ChunkInput `json:"chunks,omitempty"`
	// DeferEmbedding queues the chunks that have no client vector for the embedding worker
	// instead of calling the provider (bulk loads by the provisioner, which embeds nothing).
	DeferEmbedding bool `json:"-"`
	// Idempotency, when set, makes the add idempotent (see [IdempotencyKey]).
	Idempotency *IdempotencyKey `json:"-"`
}

// DocumentAddResult reports an added or replaced document.
type DocumentAddResult struct {
	// DocumentID is the document's id; an upsert keeps the existing one.
	DocumentID string `json:"document_id"`
	// ChunksCreated counts the stored chunks of both levels.
	ChunksCreated int `json:"chunks_created"`
	// EmbeddingsCreated counts the leaf chunks that have their vector: embedded at ingest, or
	// given by the client.
	EmbeddingsCreated int `json:"embeddings_created"`
	// EmbeddingsPending counts the leaf chunks queued for the worker because the provider failed.
	EmbeddingsPending int `json:"embeddings_pending"`
	// Created is true for a new document and false when an existing one was replaced
	// (HTTP 201 versus 200).
	Created bool `json:"-"`
	// CreatedAt is when the document was first added; an upsert keeps it.
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is when it was last written; every upsert makes it grow.
	UpdatedAt time.Time `json:"updated_at"`
	// Replayed is true when the result is the stored one of an earlier request with the same
	// idempotency key: nothing was written this time.
	Replayed bool `json:"-"`
}

// storedAdd is an add's result as kept for its idempotency key.
type storedAdd struct {
	Result  DocumentAddResult `json:"result"`
	Created bool              `json:"created"`
}

// Document is a stored document. Its content is not stored as one value: it lives in its
// chunks; ContentBytes is its size.
type Document struct {
	DocumentID string `json:"document_id"`
	// IDAtOrigin is the client's id of the document, or nil.
	IDAtOrigin   *string    `json:"id_at_origin"`
	DocumentName string     `json:"document_name"`
	DocumentType string     `json:"document_type"`
	DocumentDate *time.Time `json:"document_date"`
	// Metadata is the JSON object given at the last add.
	Metadata json.RawMessage `json:"metadata"`
	// ContentBytes is the size of the content in bytes (UTF-8).
	ContentBytes int64 `json:"content_bytes"`
	// ChunkCount counts the stored chunks of both levels.
	ChunkCount int       `json:"chunk_count"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Chunk is a stored chunk. Level 0 chunks are the leaves that are embedded and searched;
// level 1 chunks are parents that give a hit its wider context (see docs/memory.md).
type Chunk struct {
	ChunkID string `json:"chunk_id"`
	// ParentChunkID is the chunk's parent (level 1), or nil for a top-level chunk.
	ParentChunkID *string `json:"parent_chunk_id"`
	// ChunkIndex is the chunk's position in the document, from 0; parents precede children.
	ChunkIndex int `json:"chunk_index"`
	// ChunkLevel is 0 for a leaf (embedded and searched) and 1 for a parent.
	ChunkLevel int    `json:"chunk_level"`
	Content    string `json:"content"`
	// ContentHash is the lowercase hex SHA-256 of Content.
	ContentHash string `json:"content_hash"`
	// TokenCount is chunk.CountTokens(Content), an estimate of cl100k tokens.
	TokenCount int `json:"token_count"`
	// Metadata holds the chunker's keys ("section", "email_part", "speakers", ...) and the
	// byte offsets "start" and "end" of the chunk in the content.
	Metadata json.RawMessage `json:"metadata"`
	// HasEmbedding is false for parents and for leaves still in the embedding queue.
	HasEmbedding bool `json:"has_embedding"`
}

// DocumentGetParams selects one document.
type DocumentGetParams struct {
	DocumentID string `json:"document_id"`
	// IncludeChunks adds the document's chunks, in chunk_index order.
	IncludeChunks bool `json:"include_chunks"`
}

// DocumentWithChunks is a document and, when asked for, its chunks.
type DocumentWithChunks struct {
	Document
	Chunks []Chunk `json:"chunks,omitempty"`
}

// Orders of [DocumentListParams].
const (
	OrderByCreatedAt    = "created_at"
	OrderByUpdatedAt    = "updated_at"
	OrderByDocumentName = "document_name"
	OrderAsc            = "asc"
	OrderDesc           = "desc"
)

// DefaultListLimit is the page size of a list without a limit.
const DefaultListLimit = 20

// DocumentListParams selects a page of documents. Filters combine with AND.
type DocumentListParams struct {
	// Limit is the page size, 1 to 100; nil means 20.
	Limit *int `json:"limit,omitempty"`
	// Offset skips that many documents; at least 0.
	Offset int `json:"offset,omitempty"`
	// DocumentType keeps documents of this type.
	DocumentType string `json:"document_type,omitempty"`
	// IDAtOrigin keeps the document with this id at origin.
	IDAtOrigin string `json:"id_at_origin,omitempty"`
	// MetadataFilter keeps documents whose metadata contains this JSON object (jsonb @>).
	MetadataFilter json.RawMessage `json:"metadata_filter,omitempty"`
	// OrderBy is created_at (default), updated_at or document_name.
	OrderBy string `json:"order_by,omitempty"`
	// Order is desc (default) or asc.
	Order string `json:"order,omitempty"`
}

// DocumentListResult is one page of documents and the number of documents matching the filters.
type DocumentListResult struct {
	Documents []Document `json:"documents"`
	Total     int        `json:"total"`
	Limit     int        `json:"limit"`
	Offset    int        `json:"offset"`
}

// DocumentDeleteParams selects one document to delete.
type DocumentDeleteParams struct {
	DocumentID string `json:"document_id"`
}

// DocumentDeleteManyParams selects documents to delete: exactly one of DocumentIDs (at most
// 1000) or MetadataFilter (a non-empty JSON object; jsonb containment) must be given.
type DocumentDeleteManyParams struct {
	DocumentIDs    []string        `json:"document_ids,omitempty"`
	MetadataFilter json.RawMessage `json:"metadata_filter,omitempty"`
	// Idempotency, when set, makes the delete idempotent: a retry gets the first answer (see
	// [IdempotencyKey]).
	Idempotency *IdempotencyKey `json:"-"`
}

// DocumentDeleteManyResult lists the deleted documents. Ids that do not exist, or belong to
// another tenant, are simply not in it.
type DocumentDeleteManyResult struct {
	DeletedCount       int      `json:"deleted_count"`
	DeletedDocumentIDs []string `json:"deleted_document_ids"`
	// Replayed is true when the result is the stored one of an earlier request with the same
	// idempotency key: nothing was deleted this time.
	Replayed bool `json:"-"`
}

// Statistics describes one tenant's memory, read from one snapshot.
type Statistics struct {
	DocumentCount int `json:"document_count"`
	// ChunkCount counts stored chunks of both levels.
	ChunkCount int `json:"chunk_count"`
	// TotalSizeBytes is the sum of the documents' content sizes in bytes (UTF-8).
	TotalSizeBytes        int64          `json:"total_size_bytes"`
	DocumentTypeBreakdown map[string]int `json:"document_type_breakdown"`
	// EmbeddingsPending counts leaf chunks waiting for the embedding worker.
	EmbeddingsPending int `json:"embeddings_pending"`
	// EmbeddingsFailed counts leaf chunks the worker gave up on.
	EmbeddingsFailed int `json:"embeddings_failed"`
}

// addInput is a validated DocumentAddParams.
type addInput struct {
	p          DocumentAddParams
	idAtOrigin *string
	metadata   json.RawMessage
	opts       chunk.Options
}

func (e *Engine) validateAdd(p DocumentAddParams) (addInput, error) {
	in := addInput{p: p}
	name := strings.TrimSpace(p.DocumentName)
	switch {
	case name == "":
		return in, invalid("document_name", "must not be empty")
	case utf8.RuneCountInString(p.DocumentName) > MaxDocumentNameChars:
		return in, tooLarge("document_name", "at most %d characters", MaxDocumentNameChars)
	}
	if err := checkText("document_name", p.DocumentName); err != nil {
		return in, err
	}
	if err := validateDocumentType("document_type", p.DocumentType); err != nil {
		return in, err
	}
	switch {
	case p.Chunks != nil && p.Content != "":
		return in, invalid("chunks", "give content or chunks, not both")
	case p.Chunks != nil && p.Chunking != (ChunkingOptions{}):
		return in, invalid("chunking", "does not apply to a document given as chunks")
	case p.Chunks != nil:
		// validatePrechunked checks them.
	case len(p.Content) > e.cfg.MaxContentBytes:
		return in, tooLarge("content", "at most %d bytes, got %d", e.cfg.MaxContentBytes, len(p.Content))
	case strings.TrimSpace(p.Content) == "":
		return in, invalid("content", "must not be empty or white space only")
	}
	if err := checkText("content", p.Content); err != nil {
		return in, err
	}
	if p.IDAtOrigin != "" {
		if err := validateIDAtOrigin("id_at_origin", p.IDAtOrigin); err != nil {
			return in, err
		}
		in.idAtOrigin = &p.IDAtOrigin
	}
	md, err := validateMetadata("metadata", p.Metadata, true)
	if err != nil {
		return in, err
	}
	in.metadata = md
	if d := p.DocumentDate; d != nil && (d.Year() < 1 || d.Year() > 9999) {
		return in, invalid("document_date", "year must be between 1 and 9999")
	}
	in.opts = chunk.Options{
		ParentSize: p.Chunking.ParentSize, ChildSize: p.Chunking.ChildSize,
		ParentOverlap: p.Chunking.ParentOverlap, ChildOverlap: p.Chunking.ChildOverlap,
	}
	return in, nil
}

// splitError turns a chunk.FieldError into a ValidationError with the HTTP field name.
func splitError(err error) error {
	var fe *chunk.FieldError
	if errors.As(err, &fe) {
		field := fe.Field
		switch field {
		case "document_type", "content":
		default:
			field = "chunking." + field
		}
		return invalid(field, "%s", fe.Message)
	}
	return fmt.Errorf("memory: chunk: %w", err)
}

// AddDocument validates, chunks and embeds a document, then stores it and its chunks in one
// transaction. With an IDAtOrigin the tenant already uses, it replaces that document: the
// document_id and created_at stay, name, type, date, metadata and content are replaced and every
// old chunk is deleted, all in the same transaction, so a failure leaves the old version whole.
//
// The work of one call is bounded: a document that would make more than
// Config.MaxChunksPerDocument chunks is refused before anything is embedded (413), and the chunks
// are written in statements of Config.IngestBatchSize rows, so each stays well inside the
// statement timeout whatever the document's size. A document that would take the tenant over its
// quota (Scope.Quota) is refused with a *QuotaError and nothing is written.
//
// The embedding provider is called before the transaction begins (no transaction is held open
// during a network call). When it fails, the document is stored anyway, searchable by text, and
// its leaf chunks are queued for the [Worker]; EmbeddingsPending says how many.
func (e *Engine) AddDocument(ctx context.Context, s Scope, p DocumentAddParams) (DocumentAddResult, error) {
	in, err := e.validateAdd(p)
	if err != nil {
		return DocumentAddResult{}, err
	}
	if err := s.validate(); err != nil {
		return DocumentAddResult{}, err
	}
	var (
		chunks       []chunk.Chunk
		clientVecs   map[int][]float32
		contentBytes = len(p.Content)
	)
	if p.Chunks != nil {
		pre, err := validatePrechunked(p.Chunks, e.cfg.Embedder.Dimension(), e.cfg.MaxContentBytes)
		if err != nil {
			return DocumentAddResult{}, err
		}
		chunks, clientVecs, contentBytes = pre.chunks, pre.vectors, pre.bytes
	} else {
		var err error
		if chunks, err = chunk.Split(p.DocumentType, p.Content, in.opts); err != nil {
			return DocumentAddResult{}, splitError(err)
		}
	}
	if len(chunks) > e.cfg.MaxChunksPerDocument {
		field := "content"
		if p.Chunking.ChildSize != 0 {
			field = "chunking.child_size"
		}
		return DocumentAddResult{}, tooLarge(field, "the document makes %d chunks, at most %d are allowed per document: "+
			"use a larger chunking.child_size or split the document", len(chunks), e.cfg.MaxChunksPerDocument)
	}
	// Before the expensive part (embedding): a retry of a write that already committed gets its
	// result back, and a document that cannot fit in the quota is refused.
	if replay, err := e.preflightAdd(ctx, s, p, in, int64(len(chunks)), int64(contentBytes)); err != nil || replay != nil {
		if err != nil {
			return DocumentAddResult{}, err
		}
		return *replay, nil
	}

	// Leaves (level 0) are embedded and searched; parents only give context. Leaves that came
	// with the client's vector are not embedded again.
	var leaves []int
	for i, c := range chunks {
		if _, given := clientVecs[i]; c.Level == 0 && !given {
			leaves = append(leaves, i)
		}
	}
	texts := make([]string, len(leaves))
	for i, ci := range leaves {
		texts[i] = chunks[ci].Content
	}
	var (
		vecs   [][]float32
		embErr error
	)
	if !p.DeferEmbedding {
		vecs, embErr = e.embedYielding(ctx, s, texts)
	}
	if embErr != nil {
		if ctx.Err() != nil {
			return DocumentAddResult{}, fmt.Errorf("memory: embed: %w", ctx.Err())
		}
		if ye, ok := errors.AsType[*yieldError](embErr); ok {
			return DocumentAddResult{}, ye.err // the request ended: not the provider's failure
		}
		e.cfg.Logger.WarnContext(ctx, "memory: embedding failed at ingest; chunks queued",
			slog.String("owner_id", s.OwnerID), slog.Int("chunks", len(texts)), slog.String("error", embErr.Error()))
		vecs = nil
	}

	ids := make([]string, len(chunks))
	for i := range chunks {
		ids[i] = newUUID()
	}
	vecOf := make(map[int]pgvector.Vector, len(vecs)+len(clientVecs))
	for i, v := range vecs {
		vecOf[leaves[i]] = pgvector.NewVector(v)
	}
	for i, v := range clientVecs {
		vecOf[i] = pgvector.NewVector(v)
	}
	var pending []string
	cols := chunkArrays{
		ids: ids, parents: make([]*string, len(chunks)), indexes: make([]int32, len(chunks)),
		levels: make([]int16, len(chunks)), contents: make([]string, len(chunks)),
		hashes: make([]string, len(chunks)), tokens: make([]int32, len(chunks)),
		metadata: make([]string, len(chunks)), vectors: make([]*pgvector.Vector, len(chunks)),
	}
	for i, c := range chunks {
		if c.ParentIndex >= 0 {
			cols.parents[i] = &ids[c.ParentIndex]
		}
		md := make(map[string]any, len(c.Metadata)+2)
		for k, v := range c.Metadata {
			md[k] = v
		}
		if c.Start >= 0 {
			// Offsets in the content; a document given as chunks has none.
			md["start"], md["end"] = c.Start, c.End
		}
		mdJSON, err := json.Marshal(md)
		if err != nil {
			return DocumentAddResult{}, fmt.Errorf("memory: chunk metadata: %w", err)
		}
		cols.indexes[i], cols.levels[i], cols.tokens[i] = int32(i), int16(c.Level), int32(c.Tokens)
		cols.contents[i], cols.hashes[i], cols.metadata[i] = c.Content, c.ContentHash, string(mdJSON)
		if v, ok := vecOf[i]; ok {
			cols.vectors[i] = &v
		} else if c.Level == 0 {
			pending = append(pending, ids[i])
		}
	}

	var res DocumentAddResult
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		res = DocumentAddResult{}
		if p.Idempotency != nil {
			stored, err := e.claimIdempotent(ctx, tx, s, p.Idempotency)
			if err != nil {
				return err
			}
			if stored != nil {
				return replayAdd(stored, &res)
			}
		}
		delta := usage{chunks: int64(len(chunks)), bytes: int64(contentBytes)}
		if in.idAtOrigin != nil {
			// The version this upsert replaces, if any: its size leaves the tenant's usage.
			var oldBytes int64
			err := tx.QueryRow(ctx, `SELECT content_bytes FROM documents WHERE owner_id = $1 AND id_at_origin = $2 FOR UPDATE`,
				s.OwnerID, *in.idAtOrigin).Scan(&oldBytes)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
			case err != nil:
				return fmt.Errorf("memory: read replaced document: %w", err)
			default:
				delta.bytes -= oldBytes
			}
		}
		var inserted bool
		err := tx.QueryRow(ctx, `
			INSERT INTO documents AS d (owner_id, id_at_origin, document_name, document_type, document_date,
				metadata, content_bytes)
			VALUES ($1, $2, $3, $4, $5, coalesce($6::jsonb, '{}'::jsonb), $7)
			ON CONFLICT (owner_id, id_at_origin) DO UPDATE SET
				document_name = excluded.document_name,
				document_type = excluded.document_type,
				document_date = excluded.document_date,
				metadata      = excluded.metadata,
				content_bytes = excluded.content_bytes,
				updated_at    = greatest(now(), d.updated_at + interval '1 microsecond')
			RETURNING document_id::text, created_at, updated_at, xmax = 0`,
			s.OwnerID, in.idAtOrigin, p.DocumentName, p.DocumentType, p.DocumentDate, in.metadata, contentBytes,
		).Scan(&res.DocumentID, &res.CreatedAt, &res.UpdatedAt, &inserted)
		if err != nil {
			return fmt.Errorf("memory: upsert document: %w", err)
		}
		res.Created = inserted
		if inserted {
			delta.documents = 1
		} else {
			tag, err := tx.Exec(ctx, `DELETE FROM chunks WHERE owner_id = $1 AND document_id = $2`, s.OwnerID, res.DocumentID)
			if err != nil {
				return fmt.Errorf("memory: delete old chunks: %w", err)
			}
			delta.chunks -= tag.RowsAffected()
		}
		// One statement per batch (COPY is not allowed under row-level security). Parents come
		// before their children in chunk order, so every parent exists when a child names it.
		batch := e.batchSize(s)
		for lo := 0; lo < len(chunks); lo += batch {
			hi := min(lo+batch, len(chunks))
			if lo > 0 {
				if err := s.yield(ctx); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `
				INSERT INTO chunks (chunk_id, document_id, owner_id, parent_chunk_id, chunk_index, chunk_level,
					content, content_hash, token_count, metadata, embedding, search_vector)
				SELECT u.id, $1, $2, u.parent, u.idx, u.level, u.content, u.hash, u.tokens, u.metadata, u.embedding,
					CASE WHEN u.level = 0 THEN to_tsvector($12::regconfig, u.content) END
				FROM unnest($3::uuid[], $4::uuid[], $5::int[], $6::smallint[], $7::text[], $8::text[], $9::int[],
					$10::jsonb[], $11::vector[]) AS u(id, parent, idx, level, content, hash, tokens, metadata, embedding)`,
				res.DocumentID, s.OwnerID, cols.ids[lo:hi], cols.parents[lo:hi], cols.indexes[lo:hi], cols.levels[lo:hi],
				cols.contents[lo:hi], cols.hashes[lo:hi], cols.tokens[lo:hi], cols.metadata[lo:hi], cols.vectors[lo:hi],
				s.textConfig()); err != nil {
				return fmt.Errorf("memory: insert chunks: %w", err)
			}
		}
		for lo := 0; lo < len(pending); lo += e.cfg.IngestBatchSize {
			hi := min(lo+e.cfg.IngestBatchSize, len(pending))
			if _, err := tx.Exec(ctx, `INSERT INTO embedding_jobs (chunk_id, owner_id)
				SELECT unnest($1::uuid[]), $2`, pending[lo:hi], s.OwnerID); err != nil {
				return fmt.Errorf("memory: queue embeddings: %w", err)
			}
		}
		if len(pending) > 0 {
			// The tenant's row in its placement's work queue, in the same transaction as its jobs.
			if err := markWork(ctx, tx, s); err != nil {
				return err
			}
		}
		res.ChunksCreated = len(chunks)
		res.EmbeddingsCreated = len(vecs) + len(clientVecs)
		res.EmbeddingsPending = len(pending)
		if p.Idempotency != nil {
			if err := storeIdempotent(ctx, tx, s, p.Idempotency, storedAdd{Result: res, Created: res.Created}); err != nil {
				return err
			}
		}
		// Last: it locks the tenant's usage row until the commit.
		return addUsage(ctx, tx, s, delta)
	})
	if err != nil {
		return DocumentAddResult{}, err
	}
	return res, nil
}

// preflightAdd runs before an add embeds anything, in a short read-only transaction: the stored
// result of an earlier request with the same idempotency key (then the add is done), and a check
// that the document can fit in the tenant's quota (the exact check is in the write's own
// transaction). It reads nothing when neither applies.
func (e *Engine) preflightAdd(ctx context.Context, s Scope, p DocumentAddParams, in addInput, chunks, bytes int64) (*DocumentAddResult, error) {
	q := s.Quota
	if p.Idempotency == nil && q == (Quota{}) {
		return nil, nil
	}
	var replay *DocumentAddResult
	err := s.inTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if p.Idempotency != nil {
			stored, err := e.lookupIdempotent(ctx, tx, s, p.Idempotency)
			if err != nil {
				return err
			}
			if stored != nil {
				replay = &DocumentAddResult{}
				return replayAdd(stored, replay)
			}
		}
		if q == (Quota{}) {
			return nil
		}
		u, err := readUsage(ctx, tx, s)
		if err != nil {
			return err
		}
		// An upsert may replace a document: count only what surely grows.
		delta := usage{chunks: chunks, bytes: bytes}
		if in.idAtOrigin == nil {
			delta.documents = 1
		} else {
			delta.chunks, delta.bytes = 0, 0
		}
		return q.check(usage{documents: u.documents + delta.documents, chunks: u.chunks + delta.chunks,
			bytes: u.bytes + delta.bytes}, delta)
	})
	return replay, err
}

// replayAdd decodes a stored add result into res.
func replayAdd(stored json.RawMessage, res *DocumentAddResult) error {
	var st storedAdd
	if err := json.Unmarshal(stored, &st); err != nil {
		return fmt.Errorf("memory: stored idempotent result: %w", err)
	}
	*res = st.Result
	res.Created, res.Replayed = st.Created, true
	return nil
}

// chunkArrays holds the columns of a document's chunks, one array per column.
type chunkArrays struct {
	ids      []string
	parents  []*string
	indexes  []int32
	levels   []int16
	contents []string
	hashes   []string
	tokens   []int32
	metadata []string
	vectors  []*pgvector.Vector
}

// batchSize is how many chunks one statement of bulk work writes in scope s.
func (e *Engine) batchSize(s Scope) int {
	if s.Yield != nil {
		return min(e.cfg.IngestBatchSize, e.cfg.YieldBatchSize)
	}
	return e.cfg.IngestBatchSize
}

// embedYielding is embed in slices of the scope's batch size, yielding between them, when the
// scope yields and the provider runs in this process (a remote provider's time is not ours to
// share, and splitting its batches would only add round trips).
func (e *Engine) embedYielding(ctx context.Context, s Scope, texts []string) ([][]float32, error) {
	if s.Yield == nil || !embed.InProcess(e.cfg.Embedder) {
		return e.embed(ctx, texts)
	}
	batch := e.batchSize(s)
	out := make([][]float32, 0, len(texts))
	for lo := 0; lo < len(texts); lo += batch {
		if lo > 0 {
			if err := s.yield(ctx); err != nil {
				return nil, &yieldError{err}
			}
		}
		vecs, err := e.embed(ctx, texts[lo:min(lo+batch, len(texts))])
		if err != nil {
			return nil, err
		}
		out = append(out, vecs...)
	}
	return out, nil
}

// yieldError is the error of Scope.Yield between two embedding slices, apart from the
// provider's errors (which queue the document's embeddings instead of failing it).
type yieldError struct{ err error }

func (e *yieldError) Error() string { return "memory: yield: " + e.err.Error() }
func (e *yieldError) Unwrap() error { return e.err }

// embed calls the provider and checks its answer: one finite, non-zero vector of the
// provider's dimension per text.
func (e *Engine) embed(ctx context.Context, texts []string) ([][]float32, error) {
	if len(texts) == 0 {
		return nil, nil
	}
	vecs, err := e.cfg.Embedder.Embed(ctx, texts)
	if err != nil {
		return nil, err
	}
	if err := checkVectors(vecs, len(texts), e.cfg.Embedder.Dimension()); err != nil {
		return nil, fmt.Errorf("%w (provider %s)", err, e.cfg.Embedder.Name())
	}
	return vecs, nil
}

// errBadVectors is a provider answer the engine cannot store.
var errBadVectors = errors.New("memory: unusable vectors from the embedding provider")

func checkVectors(vecs [][]float32, n, dim int) error {
	if len(vecs) != n {
		return fmt.Errorf("%w: %d vectors for %d texts", errBadVectors, len(vecs), n)
	}
	for i, v := range vecs {
		if len(v) != dim {
			return fmt.Errorf("%w: vector %d has dimension %d, want %d", errBadVectors, i, len(v), dim)
		}
		var zero = true
		for _, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return fmt.Errorf("%w: vector %d has a non-finite value", errBadVectors, i)
			}
			if x != 0 {
				zero = false
			}
		}
		if zero {
			return fmt.Errorf("%w: vector %d is zero (cosine distance undefined)", errBadVectors, i)
		}
	}
	return nil
}

// newUUID returns a random (version 4) UUID. Chunk ids are made client-side so that parents
// and children go to the database in one COPY.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

const documentColumns = `d.document_id::text, d.id_at_origin, d.document_name, d.document_type, d.document_date,
	d.metadata, d.content_bytes, d.created_at, d.updated_at,
	(SELECT count(*) FROM chunks c WHERE c.owner_id = d.owner_id AND c.document_id = d.document_id)`

func scanDocument(row pgx.Row) (Document, error) {
	var d Document
	err := row.Scan(&d.DocumentID, &d.IDAtOrigin, &d.DocumentName, &d.DocumentType, &d.DocumentDate,
		&d.Metadata, &d.ContentBytes, &d.CreatedAt, &d.UpdatedAt, &d.ChunkCount)
	return d, err
}

// GetDocument returns one document of the tenant, and its chunks when asked. A missing id and
// another tenant's id both give ErrNotFound; a malformed id gives a ValidationError.
func (e *Engine) GetDocument(ctx context.Context, s Scope, p DocumentGetParams) (DocumentWithChunks, error) {
	id, err := parseUUID("document_id", p.DocumentID)
	if err != nil {
		return DocumentWithChunks{}, err
	}
	var out DocumentWithChunks
	err = s.inTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		d, err := scanDocument(tx.QueryRow(ctx, `SELECT `+documentColumns+`
			FROM documents d WHERE d.owner_id = $1 AND d.document_id = $2`, s.OwnerID, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("memory: get document: %w", err)
		}
		out.Document = d
		if !p.IncludeChunks {
			return nil
		}
		rows, err := tx.Query(ctx, `SELECT chunk_id::text, parent_chunk_id::text, chunk_index, chunk_level, content,
				content_hash, token_count, metadata, embedding IS NOT NULL
			FROM chunks WHERE owner_id = $1 AND document_id = $2 ORDER BY chunk_index`, s.OwnerID, id)
		if err != nil {
			return fmt.Errorf("memory: get chunks: %w", err)
		}
		out.Chunks, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Chunk, error) {
			var c Chunk
			err := r.Scan(&c.ChunkID, &c.ParentChunkID, &c.ChunkIndex, &c.ChunkLevel, &c.Content,
				&c.ContentHash, &c.TokenCount, &c.Metadata, &c.HasEmbedding)
			return c, err
		})
		if err != nil {
			return fmt.Errorf("memory: get chunks: %w", err)
		}
		return nil
	})
	if err != nil {
		return DocumentWithChunks{}, err
	}
	return out, nil
}

// ListDocuments returns a page of the tenant's documents and the total matching the filters,
// both from one statement (one snapshot).
func (e *Engine) ListDocuments(ctx context.Context, s Scope, p DocumentListParams) (DocumentListResult, error) {
	limit := DefaultListLimit
	if p.Limit != nil {
		limit = *p.Limit
		if limit < 1 || limit > MaxLimit {
			return DocumentListResult{}, invalid("limit", "must be between 1 and %d, got %d", MaxLimit, limit)
		}
	}
	if p.Offset < 0 {
		return DocumentListResult{}, invalid("offset", "must not be negative, got %d", p.Offset)
	}
	orderBy := p.OrderBy
	switch orderBy {
	case "":
		orderBy = OrderByCreatedAt
	case OrderByCreatedAt, OrderByUpdatedAt, OrderByDocumentName:
	default:
		return DocumentListResult{}, invalid("order_by", "must be %s, %s or %s, got %q",
			OrderByCreatedAt, OrderByUpdatedAt, OrderByDocumentName, p.OrderBy)
	}
	dir := strings.ToLower(p.Order)
	switch dir {
	case "":
		dir = OrderDesc
	case OrderAsc, OrderDesc:
	default:
		return DocumentListResult{}, invalid("order", "must be asc or desc, got %q", p.Order)
	}
	args := []any{s.OwnerID}
	where := `d.owner_id = $1`
	if p.DocumentType != "" {
		if err := validateDocumentType("document_type", p.DocumentType); err != nil {
			return DocumentListResult{}, err
		}
		args = append(args, p.DocumentType)
		where += fmt.Sprintf(` AND d.document_type = $%d`, len(args))
	}
	if p.IDAtOrigin != "" {
		if err := validateIDAtOrigin("id_at_origin", p.IDAtOrigin); err != nil {
			return DocumentListResult{}, err
		}
		args = append(args, p.IDAtOrigin)
		where += fmt.Sprintf(` AND d.id_at_origin = $%d`, len(args))
	}
	md, err := validateMetadata("metadata_filter", p.MetadataFilter, true)
	if err != nil {
		return DocumentListResult{}, err
	}
	if md != nil {
		args = append(args, md)
		where += fmt.Sprintf(` AND d.metadata @> $%d::jsonb`, len(args))
	}
	if err := s.validate(); err != nil {
		return DocumentListResult{}, err
	}
	args = append(args, limit, p.Offset)
	order := fmt.Sprintf(`d.%s %s, d.document_id %s`, orderBy, dir, dir)
	// One statement, one snapshot: the total rides on every row, and the LEFT JOIN keeps it
	// when the page is empty (an offset past the end).
	sql := fmt.Sprintf(`
		SELECT t.total, p.* FROM (SELECT count(*) AS total FROM documents d WHERE %[1]s) t
		LEFT JOIN LATERAL (
			SELECT %[2]s FROM documents d WHERE %[1]s ORDER BY %[3]s LIMIT $%[4]d OFFSET $%[5]d
		) p ON true`, where, documentColumns, order, len(args)-1, len(args))
	res := DocumentListResult{Documents: []Document{}, Limit: limit, Offset: p.Offset}
	err = s.inTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return fmt.Errorf("memory: list documents: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				total int
				id    *string
				d     Document
				count *int
				size  *int64
				name  *string
				typ   *string
				ca    *time.Time
				ua    *time.Time
			)
			if err := rows.Scan(&total, &id, &d.IDAtOrigin, &name, &typ, &d.DocumentDate, &d.Metadata,
				&size, &ca, &ua, &count); err != nil {
				return fmt.Errorf("memory: list documents: %w", err)
			}
			res.Total = total
			if id == nil {
				continue // empty page
			}
			d.DocumentID, d.DocumentName, d.DocumentType = *id, *name, *typ
			d.ContentBytes, d.CreatedAt, d.UpdatedAt, d.ChunkCount = *size, *ca, *ua, *count
			res.Documents = append(res.Documents, d)
		}
		return rows.Err()
	})
	if err != nil {
		return DocumentListResult{}, err
	}
	return res, nil
}

// DeleteDocument deletes one document of the tenant with its chunks and queued embeddings.
// A missing id and another tenant's id both give ErrNotFound.
func (e *Engine) DeleteDocument(ctx context.Context, s Scope, p DocumentDeleteParams) error {
	id, err := parseUUID("document_id", p.DocumentID)
	if err != nil {
		return err
	}
	return s.InTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM documents d WHERE d.owner_id = $1 AND d.document_id = $2
			RETURNING `+deletedColumns, s.OwnerID, id)
		if err != nil {
			return fmt.Errorf("memory: delete document: %w", err)
		}
		_, gone, err := collectDeleted(rows)
		if err != nil {
			return fmt.Errorf("memory: delete document: %w", err)
		}
		if gone.documents == 0 {
			return ErrNotFound
		}
		return addUsage(ctx, tx, s, usage{documents: -gone.documents, chunks: -gone.chunks, bytes: -gone.bytes})
	})
}

// deletedColumns are RETURNED by a delete of documents: the id, the size and the number of chunks
// (counted before the cascade removes them, which happens at the end of the statement).
const deletedColumns = `d.document_id::text, d.content_bytes,
	(SELECT count(*) FROM chunks c WHERE c.owner_id = d.owner_id AND c.document_id = d.document_id)`

// collectDeleted reads the rows of deletedColumns: the ids and what they held.
func collectDeleted(rows pgx.Rows) ([]string, usage, error) {
	var (
		ids  []string
		gone usage
	)
	for rows.Next() {
		var (
			id            string
			bytes, chunks int64
		)
		if err := rows.Scan(&id, &bytes, &chunks); err != nil {
			rows.Close()
			return nil, usage{}, err
		}
		ids = append(ids, id)
		gone.documents++
		gone.bytes += bytes
		gone.chunks += chunks
	}
	return ids, gone, rows.Err()
}

// DeleteDocuments deletes the tenant's documents named by id, or those whose metadata contains
// a filter, and returns the ids it deleted (sorted). Unknown ids and other tenants' ids are
// skipped, indistinguishably.
func (e *Engine) DeleteDocuments(ctx context.Context, s Scope, p DocumentDeleteManyParams) (DocumentDeleteManyResult, error) {
	md, err := validateMetadata("metadata_filter", p.MetadataFilter, false)
	if err != nil {
		return DocumentDeleteManyResult{}, err
	}
	switch {
	case p.DocumentIDs == nil && md == nil:
		return DocumentDeleteManyResult{}, invalid("document_ids", "give document_ids or metadata_filter")
	case p.DocumentIDs != nil && md != nil:
		return DocumentDeleteManyResult{}, invalid("document_ids", "give document_ids or metadata_filter, not both")
	}
	var ids []string
	if p.DocumentIDs != nil {
		if len(p.DocumentIDs) == 0 {
			return DocumentDeleteManyResult{}, invalid("document_ids", "must not be empty")
		}
		if ids, err = parseUUIDs("document_ids", p.DocumentIDs); err != nil {
			return DocumentDeleteManyResult{}, err
		}
	}
	var res DocumentDeleteManyResult
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		res = DocumentDeleteManyResult{}
		if p.Idempotency != nil {
			stored, err := e.claimIdempotent(ctx, tx, s, p.Idempotency)
			if err != nil {
				return err
			}
			if stored != nil {
				if err := json.Unmarshal(stored, &res); err != nil {
					return fmt.Errorf("memory: stored idempotent result: %w", err)
				}
				res.Replayed = true
				return nil
			}
		}
		var rows pgx.Rows
		var err error
		if ids != nil {
			rows, err = tx.Query(ctx, `DELETE FROM documents d WHERE d.owner_id = $1 AND d.document_id = ANY($2::uuid[])
				RETURNING `+deletedColumns, s.OwnerID, ids)
		} else {
			rows, err = tx.Query(ctx, `DELETE FROM documents d WHERE d.owner_id = $1 AND d.metadata @> $2::jsonb
				RETURNING `+deletedColumns, s.OwnerID, md)
		}
		if err != nil {
			return fmt.Errorf("memory: delete documents: %w", err)
		}
		deleted, gone, err := collectDeleted(rows)
		if err != nil {
			return fmt.Errorf("memory: delete documents: %w", err)
		}
		if deleted == nil {
			deleted = []string{}
		}
		slices.Sort(deleted)
		res = DocumentDeleteManyResult{DeletedCount: len(deleted), DeletedDocumentIDs: deleted}
		if p.Idempotency != nil {
			if err := storeIdempotent(ctx, tx, s, p.Idempotency, res); err != nil {
				return err
			}
		}
		return addUsage(ctx, tx, s, usage{documents: -gone.documents, chunks: -gone.chunks, bytes: -gone.bytes})
	})
	if err != nil {
		return DocumentDeleteManyResult{}, err
	}
	return res, nil
}

// Statistics counts the tenant's documents, chunks, content bytes, documents per type and
// queued embeddings, in one statement (one snapshot).
func (e *Engine) Statistics(ctx context.Context, s Scope) (Statistics, error) {
	var st Statistics
	err := s.inTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `
			WITH t AS (
				SELECT document_type, count(*) AS n, sum(content_bytes) AS b
				FROM documents WHERE owner_id = $1 GROUP BY document_type
			)
			SELECT (SELECT coalesce(sum(n), 0)::bigint FROM t),
			       (SELECT count(*) FROM chunks WHERE owner_id = $1),
			       (SELECT coalesce(sum(b), 0)::bigint FROM t),
			       (SELECT coalesce(jsonb_object_agg(document_type, n), '{}'::jsonb) FROM t),
			       (SELECT count(*) FROM embedding_jobs WHERE owner_id = $1 AND status <> 'failed'),
			       (SELECT count(*) FROM embedding_jobs WHERE owner_id = $1 AND status = 'failed')`,
			s.OwnerID).Scan(&st.DocumentCount, &st.ChunkCount, &st.TotalSizeBytes, &st.DocumentTypeBreakdown,
			&st.EmbeddingsPending, &st.EmbeddingsFailed)
		if err != nil {
			return fmt.Errorf("memory: statistics: %w", err)
		}
		return nil
	})
	if err != nil {
		return Statistics{}, err
	}
	return st, nil
}
