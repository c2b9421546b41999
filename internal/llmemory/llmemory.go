// Package llmemory reads the documents, chunks and vectors of a database of llmemory, the Python
// library tenantmem replaces, so the provisioner can import them (provisioner import-llmemory).
// It only reads: every query is a SELECT on the source database.
//
// The layout it expects is llmemory's (v0.5: migrations 001 and 002, pgdbm-managed, one schema
// holding documents, document_chunks, embedding_providers, the provider's embeddings table,
// embedding_queue and search_history); [Inspect] checks it and says what is missing.
package llmemory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNotLLMemory means the source schema does not hold llmemory's tables.
var ErrNotLLMemory = errors.New("not an llmemory database")

// DefaultSchema is llmemory's default schema (config.database.schema_name).
const DefaultSchema = "llmemory"

// Layout is what Inspect found in a source schema.
type Layout struct {
	Schema string
	// EmbeddingTable holds the vectors carried over: the table of the provider whose dimension
	// is the wanted one (the default provider first). Empty when none matches.
	EmbeddingTable string
	// EmbeddingModel is that provider's model.
	EmbeddingModel string
	// Providers lists every provider as "id (model, dimension)", for the report.
	Providers []string
	// SearchHistoryRows and QueueRows count what the import does not carry over.
	SearchHistoryRows, QueueRows int64
}

// Inspect checks that schema holds llmemory's tables, with the columns the import reads, and
// picks the embeddings table of dimension dim. A schema that lacks them gives ErrNotLLMemory,
// naming what is missing.
func Inspect(ctx context.Context, pool *pgxpool.Pool, schemaName string, dim int) (Layout, error) {
	l := Layout{Schema: schemaName}
	required := map[string][]string{
		"documents":           {"document_id", "owner_id", "id_at_origin", "document_type", "document_name", "document_date", "metadata"},
		"document_chunks":     {"chunk_id", "document_id", "parent_chunk_id", "chunk_index", "chunk_level", "content", "metadata"},
		"embedding_providers": {"provider_id", "model_name", "dimension", "table_name", "is_default"},
	}
	for _, table := range []string{"documents", "document_chunks", "embedding_providers"} {
		rows, err := pool.Query(ctx, `SELECT attname FROM pg_attribute
			WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`, pgx.Identifier{schemaName, table}.Sanitize())
		if err != nil {
			return l, fmt.Errorf("llmemory: inspect %s: %w", table, err)
		}
		have, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return l, fmt.Errorf("llmemory: inspect %s: %w", table, err)
		}
		if len(have) == 0 {
			return l, fmt.Errorf("llmemory: %w: schema %q has no table %s (llmemory keeps documents, document_chunks and embedding_providers in its schema; pass the schema it was configured with)",
				ErrNotLLMemory, schemaName, table)
		}
		set := map[string]bool{}
		for _, c := range have {
			set[c] = true
		}
		for _, c := range required[table] {
			if !set[c] {
				return l, fmt.Errorf("llmemory: %w: %s.%s has no column %s", ErrNotLLMemory, schemaName, table, c)
			}
		}
	}
	rows, err := pool.Query(ctx, `SELECT provider_id, model_name, dimension, table_name, coalesce(is_default, false)
		FROM `+pgx.Identifier{schemaName, "embedding_providers"}.Sanitize()+` ORDER BY is_default DESC, provider_id`)
	if err != nil {
		return l, fmt.Errorf("llmemory: providers: %w", err)
	}
	type provider struct {
		id, model, table string
		dim              int
		def              bool
	}
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (provider, error) {
		var p provider
		err := r.Scan(&p.id, &p.model, &p.dim, &p.table, &p.def)
		return p, err
	})
	if err != nil {
		return l, fmt.Errorf("llmemory: providers: %w", err)
	}
	for _, p := range ps {
		l.Providers = append(l.Providers, fmt.Sprintf("%s (%s, %d)", p.id, p.model, p.dim))
		if l.EmbeddingTable != "" || p.dim != dim {
			continue
		}
		var ok bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1)
			AND attname = 'embedding') AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'chunk_id')`,
			pgx.Identifier{schemaName, p.table}.Sanitize()).Scan(&ok); err != nil {
			return l, fmt.Errorf("llmemory: provider table %s: %w", p.table, err)
		}
		if ok {
			l.EmbeddingTable, l.EmbeddingModel = p.table, p.model
		}
	}
	for _, c := range []struct {
		table string
		n     *int64
	}{{"search_history", &l.SearchHistoryRows}, {"embedding_queue", &l.QueueRows}} {
		var exists bool
		if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, pgx.Identifier{schemaName, c.table}.Sanitize()).Scan(&exists); err != nil {
			return l, err
		}
		if exists {
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{schemaName, c.table}.Sanitize()).Scan(c.n); err != nil {
				return l, fmt.Errorf("llmemory: count %s: %w", c.table, err)
			}
		}
	}
	return l, nil
}

// Owner is one owner_id of the source and its number of documents.
type Owner struct {
	OwnerID   string
	Documents int64
}

// Owners lists the source's owners, in owner_id order.
func Owners(ctx context.Context, pool *pgxpool.Pool, l Layout) ([]Owner, error) {
	rows, err := pool.Query(ctx, `SELECT owner_id, count(*) FROM `+pgx.Identifier{l.Schema, "documents"}.Sanitize()+
		` GROUP BY owner_id ORDER BY owner_id`)
	if err != nil {
		return nil, fmt.Errorf("llmemory: owners: %w", err)
	}
	os, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Owner])
	if err != nil {
		return nil, fmt.Errorf("llmemory: owners: %w", err)
	}
	return os, nil
}

// Document is one source document with its chunks, parents before their children.
type Document struct {
	DocumentID   string
	IDAtOrigin   string
	DocumentName string
	DocumentType string
	DocumentDate *time.Time
	Metadata     json.RawMessage
	Chunks       []Chunk
}

// Chunk is one source chunk. Leaf is true for a chunk without children: the chunks tenantmem
// embeds and searches. Embedding is its vector from the layout's table, when it has one.
type Chunk struct {
	ChunkID   string
	ParentID  *string
	Index     int
	Level     int
	Content   string
	Metadata  json.RawMessage
	Embedding []float32
	Leaf      bool
}

// pageSize is how many documents one round trip reads.
const pageSize = 100

// Documents calls fn with every document of owner, in document_id order, skipping those whose
// id_at_origin skip reports. A document's chunks are ordered depth first (each parent directly
// followed by its children), by chunk_index among siblings.
func Documents(ctx context.Context, pool *pgxpool.Pool, l Layout, owner string, skip func(idAtOrigin string) bool,
	fn func(Document) error) error {
	docs := pgx.Identifier{l.Schema, "documents"}.Sanitize()
	chunks := pgx.Identifier{l.Schema, "document_chunks"}.Sanitize()
	emb := `NULL::real[]`
	join := ``
	if l.EmbeddingTable != "" {
		emb = `e.embedding::real[]`
		join = ` LEFT JOIN ` + pgx.Identifier{l.Schema, l.EmbeddingTable}.Sanitize() + ` e ON e.chunk_id = c.chunk_id`
	}
	after := "00000000-0000-0000-0000-000000000000"
	for {
		rows, err := pool.Query(ctx, `SELECT document_id::text, id_at_origin, document_name, document_type, document_date,
				coalesce(metadata, '{}'::jsonb)
			FROM `+docs+` WHERE owner_id = $1 AND document_id > $2::uuid ORDER BY document_id LIMIT $3`, owner, after, pageSize)
		if err != nil {
			return fmt.Errorf("llmemory: documents: %w", err)
		}
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Document, error) {
			var d Document
			err := r.Scan(&d.DocumentID, &d.IDAtOrigin, &d.DocumentName, &d.DocumentType, &d.DocumentDate, &d.Metadata)
			return d, err
		})
		if err != nil {
			return fmt.Errorf("llmemory: documents: %w", err)
		}
		if len(page) == 0 {
			return nil
		}
		after = page[len(page)-1].DocumentID
		var want []string
		byID := map[string]*Document{}
		for i := range page {
			if skip != nil && skip(page[i].IDAtOrigin) {
				continue
			}
			want = append(want, page[i].DocumentID)
			byID[page[i].DocumentID] = &page[i]
		}
		if len(want) > 0 {
			rows, err = pool.Query(ctx, `SELECT c.document_id::text, c.chunk_id::text, c.parent_chunk_id::text, c.chunk_index,
					c.chunk_level, c.content, coalesce(c.metadata, '{}'::jsonb), `+emb+`
				FROM `+chunks+` c`+join+` WHERE c.document_id = ANY($1::uuid[]) ORDER BY c.document_id, c.chunk_index, c.chunk_id`, want)
			if err != nil {
				return fmt.Errorf("llmemory: chunks: %w", err)
			}
			var (
				docID string
				c     Chunk
			)
			_, err = pgx.ForEachRow(rows, []any{&docID, &c.ChunkID, &c.ParentID, &c.Index, &c.Level, &c.Content, &c.Metadata, &c.Embedding}, func() error {
				d := byID[docID]
				cc := c
				if cc.ParentID != nil {
					p := *cc.ParentID
					cc.ParentID = &p
				}
				d.Chunks = append(d.Chunks, cc)
				c.Embedding, c.ParentID = nil, nil
				return nil
			})
			if err != nil {
				return fmt.Errorf("llmemory: chunks: %w", err)
			}
		}
		for _, id := range want {
			d := byID[id]
			d.Chunks = depthFirst(d.Chunks)
			if err := fn(*d); err != nil {
				return err
			}
		}
	}
}

// depthFirst orders chunks so that each parent directly precedes its children, siblings by
// chunk_index, and marks the leaves. A chunk whose parent is missing is treated as top level.
func depthFirst(cs []Chunk) []Chunk {
	ids := map[string]bool{}
	for _, c := range cs {
		ids[c.ChunkID] = true
	}
	children := map[string][]int{}
	var roots []int
	for i, c := range cs {
		if c.ParentID != nil && ids[*c.ParentID] && *c.ParentID != c.ChunkID {
			children[*c.ParentID] = append(children[*c.ParentID], i)
		} else {
			roots = append(roots, i)
		}
	}
	out := make([]Chunk, 0, len(cs))
	seen := map[int]bool{}
	var walk func(i int)
	walk = func(i int) {
		if seen[i] {
			return // a cycle in the source: each chunk once
		}
		seen[i] = true
		c := cs[i]
		c.Leaf = len(children[c.ChunkID]) == 0
		out = append(out, c)
		for _, k := range children[c.ChunkID] {
			walk(k)
		}
	}
	for _, i := range roots {
		walk(i)
	}
	for i := range cs {
		walk(i) // chunks only reachable through a cycle
	}
	return out
}
