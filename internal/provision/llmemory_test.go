package provision_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// llmemorySource is a database with llmemory's tables (created from its documented schema) and
// documents of three owners.
type llmemorySource struct {
	pool *pgxpool.Pool
	// vectors of every leaf chunk by content, as llmemory stored them.
	vectors map[string][]float32
}

func newLLMemorySource(t *testing.T) *llmemorySource {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	ddl, err := os.ReadFile("../llmemory/testdata/llmemory_schema.sql")
	require.NoError(t, err)
	_, err = pool.Exec(ctx, string(ddl))
	require.NoError(t, err)
	src := &llmemorySource{pool: pool, vectors: map[string][]float32{}}
	rng := rand.New(rand.NewPCG(1, 2))
	vec := func() []float32 {
		v := make([]float32, 1536)
		for i := range v {
			v[i] = rng.Float32()*2 - 1
		}
		return v
	}
	insertDoc := func(owner, origin, typ, name, metadata string, parents [][]string) {
		var doc string
		require.NoError(t, pool.QueryRow(ctx, `INSERT INTO llmemory.documents (owner_id, id_at_origin, document_type, document_name,
			document_date, metadata) VALUES ($1, $2, $3, $4, '2024-03-01T10:00:00Z', $5::jsonb) RETURNING document_id::text`,
			owner, origin, typ, name, metadata).Scan(&doc))
		for p, children := range parents {
			parentText := strings.Join(children, " ")
			var parentID string
			require.NoError(t, pool.QueryRow(ctx, `INSERT INTO llmemory.document_chunks (document_id, chunk_index, chunk_level,
				content, content_hash, token_count, metadata) VALUES ($1, $2, 2, $3, md5($3), 10, '{"chunk_type": "parent"}')
				RETURNING chunk_id::text`, doc, p, parentText).Scan(&parentID))
			// llmemory embeds parents too; tenantmem carries the vectors of leaves only.
			pv := vec()
			_, err := pool.Exec(ctx, `INSERT INTO llmemory.embeddings_openai_3_small (chunk_id, embedding) VALUES ($1, $2::real[]::vector)`,
				parentID, pv)
			require.NoError(t, err)
			if len(children) == 1 {
				// A child with its parent's text is the parent's row in llmemory (its unique
				// (document_id, content_hash)): a parent without children, a leaf here.
				src.vectors[parentText] = pv
				continue
			}
			for c, text := range children {
				var id string
				require.NoError(t, pool.QueryRow(ctx, `INSERT INTO llmemory.document_chunks (document_id, parent_chunk_id, chunk_index,
					chunk_level, content, content_hash, token_count, metadata) VALUES ($1, $2, $3, 1, $4, md5($4), 5, '{"chunk_type": "child"}')
					RETURNING chunk_id::text`, doc, parentID, p*1000+c, text).Scan(&id))
				v := vec()
				src.vectors[text] = v
				_, err := pool.Exec(ctx, `INSERT INTO llmemory.embeddings_openai_3_small (chunk_id, embedding) VALUES ($1, $2::real[]::vector)`, id, v)
				require.NoError(t, err)
			}
		}
	}
	insertDoc("workspace-1", "wiki/deploys", "markdown", "Deploys", `{"space": "ops"}`, [][]string{
		{"We deploy on Tuesdays.", "Rollbacks revert the tag."}, {"Backups run nightly."},
	})
	insertDoc("workspace-1", "mail-1", "newsletter", "Newsletter", `{}`, [][]string{{"Quarterly numbers went up."}})
	insertDoc("workspace-1", "broken", "text", "Broken metadata", `[1, 2]`, [][]string{{"Never imported."}})
	insertDoc("workspace-2", "notes", "text", "Notes", `{"team": "b"}`, [][]string{{"Lunch at noon.", "Standup at ten."}})
	insertDoc("bad owner!", "x", "text", "X", `{}`, [][]string{{"An owner id that is no tenant id."}})
	_, err = pool.Exec(ctx, `INSERT INTO llmemory.search_history (owner_id, id_at_origin, query_text, search_type)
		VALUES ('workspace-1', 'unknown', 'deploy', 'hybrid')`)
	require.NoError(t, err)
	return src
}

// deployment initialises a fresh deployment of the given dimension.
func deployment(t *testing.T, dim int) *memEnv {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	prov, err := provision.New(provision.Config{Pool: pool, Logger: testLogger(t)})
	require.NoError(t, err)
	_, err = prov.Init(ctx, provision.InitParams{EmbeddingDimension: dim})
	require.NoError(t, err)
	router, err := pgxpool.New(ctx, pgtest.WithUser(t, url, provision.DefaultRouterRole, ""))
	require.NoError(t, err)
	t.Cleanup(router.Close)
	b, err := embed.NewBuiltin(dim)
	require.NoError(t, err)
	emb := &flakyEmbedder{Provider: b}
	engine, err := memory.New(memory.Config{Embedder: emb, Logger: testLogger(t)})
	require.NoError(t, err)
	return &memEnv{env: &env{url: url, pool: pool, router: router, prov: prov}, emb: emb, engine: engine,
		servers: map[string]string{}, pools: map[string]*pgxpool.Pool{}}
}

func TestImportLLMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := newLLMemorySource(t)
	e := deployment(t, 1536)

	// Not llmemory's schema: refused, nothing written.
	_, err := e.prov.ImportLLMemory(ctx, provision.LLMemoryImportParams{Source: src.pool, Schema: "public", AllOwners: true})
	var fe *registry.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "source", fe.Field)
	require.Contains(t, fe.Message, "not an llmemory database")
	ts, err := e.prov.ListTenants(ctx, registry.TenantListParams{})
	require.NoError(t, err)
	require.Empty(t, ts)

	// Interrupted after the first document, then run again: it resumes.
	cctx, cancel := context.WithCancel(ctx)
	_, err = e.prov.ImportLLMemory(cctx, provision.LLMemoryImportParams{Source: src.pool, AllOwners: true, Prefix: "llm-",
		Tier: registry.TierSchema, Progress: func(provision.LLMemoryProgress) { cancel() }})
	require.ErrorIs(t, err, context.Canceled)
	rep, err := e.prov.ImportLLMemory(ctx, provision.LLMemoryImportParams{Source: src.pool, AllOwners: true, Prefix: "llm-",
		Tier: registry.TierSchema})
	require.NoError(t, err)
	byOwner := map[string]provision.LLMemoryOwnerReport{}
	for _, o := range rep.Owners {
		byOwner[o.OwnerID] = o
	}
	w1, w2, bad := byOwner["workspace-1"], byOwner["workspace-2"], byOwner["bad owner!"]
	require.Equal(t, "llm-workspace-1", w1.TenantID)
	require.Equal(t, 1, w1.Skipped, "the document of the interrupted run is not imported twice")
	require.Equal(t, 1, w1.Documents)
	require.Len(t, w1.Failed, 1)
	require.Equal(t, "broken", w1.Failed[0].IDAtOrigin)
	require.Contains(t, w1.Failed[0].Error, "metadata")
	require.Equal(t, 1, w2.Documents)
	require.True(t, w2.Created)
	require.NotNil(t, w2.Key)
	require.Equal(t, 2, w2.Vectors)
	require.Equal(t, 3, w2.Chunks, "a parent and its two children")
	require.Zero(t, w2.Queued)
	require.Contains(t, bad.Error, "does not make a tenant id")
	require.Equal(t, "text-embedding-3-small", rep.EmbeddingModel)
	require.Contains(t, strings.Join(rep.NotCarried, "\n"), "search history: 1 rows")

	// What arrived: documents with their origin ids, types, metadata and dates; chunks with
	// their hierarchy; leaves with llmemory's vectors, exactly.
	s := e.scope(t, "llm-workspace-1")
	list, err := e.engine.ListDocuments(ctx, s, memory.DocumentListParams{OrderBy: memory.OrderByDocumentName, Order: memory.OrderAsc})
	require.NoError(t, err)
	require.Equal(t, 2, list.Total)
	deploys, newsletter := list.Documents[0], list.Documents[1]
	require.Equal(t, "wiki/deploys", *deploys.IDAtOrigin)
	require.Equal(t, "markdown", deploys.DocumentType)
	require.JSONEq(t, `{"space": "ops"}`, string(deploys.Metadata))
	require.Equal(t, time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC), deploys.DocumentDate.UTC())
	require.Equal(t, "unknown", newsletter.DocumentType, "a type tenantmem does not know")
	doc, err := e.engine.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: deploys.DocumentID, IncludeChunks: true})
	require.NoError(t, err)
	require.Len(t, doc.Chunks, 4, "a parent with two children, and a parent without children (a leaf)")
	require.Equal(t, 1, doc.Chunks[0].ChunkLevel)
	require.Equal(t, "We deploy on Tuesdays.", doc.Chunks[1].Content)
	require.Equal(t, doc.Chunks[0].ChunkID, *doc.Chunks[1].ParentChunkID)
	rows, err := e.pool.Query(ctx, `SELECT content, embedding::real[] FROM `+pgx.Identifier{s.Schema, "chunks"}.Sanitize()+
		` WHERE chunk_level = 0`)
	require.NoError(t, err)
	got := map[string][]float32{}
	var (
		content string
		v       []float32
	)
	_, err = pgx.ForEachRow(rows, []any{&content, &v}, func() error { got[content] = append([]float32(nil), v...); return nil })
	require.NoError(t, err)
	require.Equal(t, 4, len(got), "the leaves of both documents")
	for text, vec := range got {
		require.Equal(t, src.vectors[text], vec, text)
	}
	// And search finds them by those vectors, with the parent as context.
	res, err := e.engine.Search(ctx, s, memory.SearchParams{QueryEmbedding: src.vectors["Rollbacks revert the tag."],
		SearchType: memory.SearchVector, IncludeParentContext: true})
	require.NoError(t, err)
	require.Equal(t, "Rollbacks revert the tag.", res.Results[0].Content)
	require.InDelta(t, 1, *res.Results[0].Similarity, 1e-5)
	require.Equal(t, "We deploy on Tuesdays. Rollbacks revert the tag.", res.Results[0].ParentChunks[0].Content)
	_, _, err = registry.Authenticate(ctx, e.router, w2.Key.Key)
	require.NoError(t, err, "the key in the report works")

	// A rerun has nothing left to do.
	rep, err = e.prov.ImportLLMemory(ctx, provision.LLMemoryImportParams{Source: src.pool, Owner: "workspace-2", As: "llm-workspace-2"})
	require.NoError(t, err)
	require.Zero(t, rep.Owners[0].Documents)
	require.Equal(t, 1, rep.Owners[0].Skipped)
	require.False(t, rep.Owners[0].Created)
}

// TestImportLLMemoryOfAnotherDimensionQueuesTheChunks: vectors of 1536 dimensions do not fit a
// 384 deployment; the chunks come without and are queued for the embedding worker.
func TestImportLLMemoryOfAnotherDimensionQueuesTheChunks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := newLLMemorySource(t)
	e := deployment(t, 384)
	rep, err := e.prov.ImportLLMemory(ctx, provision.LLMemoryImportParams{Source: src.pool, Owner: "workspace-2"})
	require.NoError(t, err)
	require.Empty(t, rep.EmbeddingModel)
	require.Contains(t, rep.NotCarried[0], "no provider of dimension 384")
	o := rep.Owners[0]
	require.Equal(t, 1, o.Documents)
	require.Zero(t, o.Vectors)
	require.Equal(t, 2, o.Queued)
	st, err := e.engine.EmbeddingStats(ctx, e.scope(t, "workspace-2"))
	require.NoError(t, err)
	require.Equal(t, 2, st.Pending)
	// The router's worker embeds them.
	w, err := memory.NewWorker(memory.WorkerConfig{Embedder: e.emb})
	require.NoError(t, err)
	n, err := w.ProcessScope(ctx, e.scope(t, "workspace-2"))
	require.NoError(t, err)
	require.Equal(t, 2, n)
	b, _ := json.Marshal(rep)
	require.NotContains(t, string(b), "secret")
	require.Equal(t, "workspace-2", fmt.Sprint(o.TenantID))
}

// TestImportLLMemoryRespectsTheQuota: an owner whose documents exceed the tenant's document quota
// is refused before anything is created; a chunk quota reached in the middle stops the owner with
// the quota named, every stored document whole, and a rerun after raising it finishes.
func TestImportLLMemoryRespectsTheQuota(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := newLLMemorySource(t)
	e := deployment(t, 1536)
	docs, err := provision.New(provision.Config{Pool: e.pool, Logger: testLogger(t), Quota: limit.Limits{MaxDocuments: 2}})
	require.NoError(t, err)
	rep, err := docs.ImportLLMemory(ctx, provision.LLMemoryImportParams{Source: src.pool, Owner: "workspace-1"})
	require.NoError(t, err)
	require.Contains(t, rep.Owners[0].Error, "documents: the tenant's quota of 2 would be exceeded (0 stored, this write adds 3)")
	_, err = e.prov.GetTenant(ctx, "workspace-1")
	require.ErrorIs(t, err, registry.ErrNotFound, "nothing was created")

	// workspace-1's documents: "wiki/deploys" (4 chunks), "mail-1" (1 chunk), "broken" (refused:
	// its metadata), in the source's (document_id) order: a quota of 4 chunks stores one of the
	// first two and stops at the other.
	chunks, err := provision.New(provision.Config{Pool: e.pool, Logger: testLogger(t), Quota: limit.Limits{MaxChunks: 4}})
	require.NoError(t, err)
	rep, err = chunks.ImportLLMemory(ctx, provision.LLMemoryImportParams{Source: src.pool, Owner: "workspace-1"})
	require.NoError(t, err)
	o := rep.Owners[0]
	require.Contains(t, o.Error, "stopped after 1 documents")
	require.Contains(t, o.Error, "chunks: the tenant's quota of 4")
	st, err := e.engine.Statistics(ctx, e.scope(t, "workspace-1"))
	require.NoError(t, err)
	require.Equal(t, 1, st.DocumentCount)
	require.Contains(t, []int{1, 4}, st.ChunkCount, "the document stored is whole, the refused one left nothing")

	rep, err = e.prov.ImportLLMemory(ctx, provision.LLMemoryImportParams{Source: src.pool, Owner: "workspace-1"})
	require.NoError(t, err)
	require.Empty(t, rep.Owners[0].Error)
	require.Equal(t, 1, rep.Owners[0].Documents)
	require.Equal(t, 1, rep.Owners[0].Skipped)
}
