package provision_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/archive"
	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// flakyEmbedder is the builtin embedder, failing while down is set (so documents keep pending
// embedding jobs).
type flakyEmbedder struct {
	embed.Provider
	down atomic.Bool
}

func (f *flakyEmbedder) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	if f.down.Load() {
		return nil, fmt.Errorf("test: provider down: %w", embed.ErrUnavailable)
	}
	return f.Provider.Embed(ctx, texts)
}

// memEnv is a deployment with a memory engine, for tests that need real tenant data.
type memEnv struct {
	*env
	emb    *flakyEmbedder
	engine *memory.Engine
	// servers are the superuser URLs of the placements' main databases ("local" is env.url).
	servers map[string]string
	mu      sync.Mutex
	pools   map[string]*pgxpool.Pool
}

// dbPool connects to the database of a tenant's location, as the superuser or the router role.
func (e *memEnv) dbPool(t *testing.T, tn registry.Tenant, router bool) *pgxpool.Pool {
	t.Helper()
	base := e.url
	if u, ok := e.servers[tn.PlacementID]; ok {
		base = u
	}
	u, err := url.Parse(base)
	require.NoError(t, err)
	if tn.DatabaseName != "" {
		u.Path = "/" + tn.DatabaseName
	}
	dsn := u.String()
	if router {
		dsn = pgtest.WithUser(t, dsn, provision.DefaultRouterRole, "")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.pools[dsn]; ok {
		if tn.DatabaseName != "" {
			// The database may have been dropped and made again since (a delete, a restore):
			// start from fresh connections.
			p.Reset()
		}
		return p
	}
	p, err := pgxpool.New(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	e.pools[dsn] = p
	return p
}

func newMemEnv(t *testing.T, hook func(ctx context.Context, step, tenantID string) error) *memEnv {
	t.Helper()
	e := newEnv(t, hook)
	b, err := embed.NewBuiltin(provision.DefaultEmbeddingDimension)
	require.NoError(t, err)
	emb := &flakyEmbedder{Provider: b}
	engine, err := memory.New(memory.Config{Embedder: emb, Logger: testLogger(t)})
	require.NoError(t, err)
	return &memEnv{env: e, emb: emb, engine: engine, servers: map[string]string{}, pools: map[string]*pgxpool.Pool{}}
}

// scope is a tenant's scope on the router pool, as the router builds it.
func (e *memEnv) scope(t *testing.T, id string) memory.Scope {
	t.Helper()
	tn, err := e.prov.GetTenant(context.Background(), id)
	require.NoError(t, err)
	return memory.Scope{Pool: e.dbPool(t, tn, true), Schema: tn.SchemaName, OwnerID: id, StatementTimeout: time.Minute}
}

// fill gives a tenant documents of several types, metadata, dates, an upserted document, pending
// embedding jobs and search history, each carrying marker in its text.
func (e *memEnv) fill(t *testing.T, id, marker string) {
	t.Helper()
	ctx := context.Background()
	s := e.scope(t, id)
	date := time.Date(2024, 5, 1, 12, 30, 0, 123456000, time.UTC)
	docs := []memory.DocumentAddParams{
		{DocumentName: "Runbook " + marker, DocumentType: "markdown", IDAtOrigin: "wiki-42",
			Content:  "# Deploys\n\nWe deploy on Tuesdays after the backup. " + marker + "\n\n## Rollback\n\nRevert the release tag and redeploy.",
			Metadata: json.RawMessage(`{"space": "ops", "n": 1}`), DocumentDate: &date},
		{DocumentName: "Notes", DocumentType: "text", Content: strings.Repeat("The quarterly numbers went up. "+marker+" ", 200)},
		{DocumentName: "Mail", DocumentType: "email", Content: "From: a@example.com\nSubject: hi\n\nLunch at noon? " + marker},
	}
	for _, d := range docs {
		_, err := e.engine.AddDocument(ctx, s, d)
		require.NoError(t, err)
	}
	// An upsert replaces the first one.
	docs[0].Content += "\n\nUpdated: deploys moved to Wednesdays."
	_, err := e.engine.AddDocument(ctx, s, docs[0])
	require.NoError(t, err)
	// Documents whose embeddings are still queued.
	e.emb.down.Store(true)
	_, err = e.engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "Queued", DocumentType: "text",
		Content: "Embeddings for this one are pending. " + marker})
	e.emb.down.Store(false)
	require.NoError(t, err)
	for _, q := range []string{"deploy", "numbers", marker} {
		_, err := e.engine.Search(ctx, s, memory.SearchParams{QueryText: q, SearchType: memory.SearchText})
		require.NoError(t, err)
	}
}

// tableDump returns every row of the tenant, table by table, as JSON text without owner_id,
// in primary key order: equal dumps mean equal documents, chunks, vectors, jobs and history.
func tableDump(t *testing.T, e *memEnv, id string, withIDs bool) map[string][]string {
	t.Helper()
	ctx := context.Background()
	tn, err := e.prov.GetTenant(ctx, id)
	require.NoError(t, err)
	out := map[string][]string{}
	order := map[string]string{
		"documents": "document_id", "chunks": "chunk_id", "embedding_jobs": "chunk_id", "search_history": "created_at, query_text",
		"tenant_usage": "owner_id", "idempotency_keys": "idempotency_key",
	}
	if !withIDs {
		order = map[string]string{
			"documents": "document_name, content_bytes", "chunks": "content_hash, chunk_level, chunk_index",
			"embedding_jobs": "created_at, attempts", "search_history": "created_at, query_text",
			"tenant_usage": "owner_id", "idempotency_keys": "idempotency_key",
		}
	}
	// search_id is numbered by the destination.
	drop := "'owner_id', 'search_id'"
	if !withIDs {
		drop = "'owner_id', 'document_id', 'chunk_id', 'parent_chunk_id', 'search_id'"
	}
	for _, tt := range schema.TenantTables {
		if tt.Kind != schema.TableData {
			continue
		}
		rows, err := e.dbPool(t, tn, false).Query(ctx, `SELECT (to_jsonb(t) - ARRAY[`+drop+`])::text FROM `+
			pgx.Identifier{tn.SchemaName, tt.Name}.Sanitize()+` t WHERE owner_id = $1 ORDER BY `+order[tt.Name], id)
		require.NoError(t, err)
		vals, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		out[tt.Name] = vals
	}
	return out
}

// searches runs the same searches of every type and returns what a client sees. Without ids (a
// copy under another id has new ones) it asks for every result and leaves out the fused score:
// ties are ordered by chunk id, and the fused score of tied chunks depends on that order.
func searches(t *testing.T, e *memEnv, id string, withIDs bool) []string {
	t.Helper()
	ctx := context.Background()
	s := e.scope(t, id)
	var out []string
	for _, typ := range []string{memory.SearchVector, memory.SearchText, memory.SearchHybrid} {
		for _, q := range []string{"when do we deploy", "quarterly numbers", "lunch", "pending embeddings"} {
			// Exact vector scans: an HNSW walk of the shared tier also depends on the other
			// tenants' vectors (a copy next to its original changes the graph), and the
			// comparison is about the rows, not about the index.
			p := memory.SearchParams{QueryText: q, SearchType: typ, IncludeParentContext: true, RecallTarget: &exact}
			if !withIDs {
				p.Limit = &maxLimit
			}
			res, err := e.engine.Search(ctx, s, p)
			require.NoError(t, err)
			for _, r := range res.Results {
				if !withIDs && (r.Similarity == nil || *r.Similarity == 0) && (r.TextRank == nil || *r.TextRank == 0) {
					// Which of many results tied at zero make the list depends on chunk ids.
					continue
				}
				if !withIDs {
					r.ChunkID, r.DocumentID, r.RRFScore = "", "", nil
					if typ == memory.SearchHybrid {
						r.Score = 0
					}
					for i := range r.ParentChunks {
						r.ParentChunks[i].ChunkID = ""
					}
				}
				b, err := json.Marshal(r)
				require.NoError(t, err)
				out = append(out, typ+" "+q+" "+string(b))
			}
		}
	}
	if !withIDs {
		// Ties are ordered by chunk id, which a copy under another id changes.
		slices.Sort(out)
	}
	return out
}

var (
	maxLimit = memory.MaxLimit
	exact    = 1.0
)

func backup(t *testing.T, e *memEnv, id string, params provision.BackupParams) []byte {
	t.Helper()
	var buf bytes.Buffer
	_, err := e.prov.Backup(context.Background(), id, &buf, params)
	require.NoError(t, err)
	return buf.Bytes()
}

func decompress(t *testing.T, data []byte) []byte {
	t.Helper()
	require.True(t, bytes.HasPrefix(data, []byte(archive.Magic)))
	zr, err := zstd.NewReader(bytes.NewReader(data[len(archive.Magic):]))
	require.NoError(t, err)
	defer zr.Close()
	plain, err := io.ReadAll(zr)
	require.NoError(t, err)
	return plain
}

var tiers = []registry.Tier{registry.TierShared, registry.TierSchema, registry.TierDatabase}

// TestBackupRestoreEveryPairOfTiers backs a tenant up in each tier, deletes it, restores it in
// each tier under the same id, and finds the same rows (byte for byte, vectors included) and the
// same search results; it also restores a copy under another id next to the original.
func TestBackupRestoreEveryPairOfTiers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, nil)
	for _, from := range tiers {
		for _, to := range tiers {
			id := fmt.Sprintf("rt-%s-%s", from, to)
			_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: from})
			require.NoError(t, err)
			e.fill(t, id, "marker-"+id)
			// (Searching adds to the history, so the rows are read after the searches.)
			wantSearch := searches(t, e, id, true)
			wantRows := tableDump(t, e, id, true)
			require.NotEmpty(t, wantRows["embedding_jobs"], "the tenant has pending embedding jobs")
			require.NotEmpty(t, wantRows["search_history"])
			data := backup(t, e, id, provision.BackupParams{})

			// A copy under another id, in the target tier, while the original exists.
			copyID := id + "-copy"
			res, err := e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{As: copyID, Tier: to})
			require.NoError(t, err, "%s -> %s copy", from, to)
			require.True(t, res.NewIDs)
			require.NotNil(t, res.Key)
			require.Equal(t, registry.StatusActive, res.Tenant.Status)
			require.Equal(t, to, res.Tenant.Tier)
			require.Equal(t, tableDump(t, e, id, false), tableDump(t, e, copyID, false), "%s -> %s copy", from, to)
			require.Equal(t, searches(t, e, id, false), searches(t, e, copyID, false), "%s -> %s copy", from, to)
			// The copy's key works; the original's documents and chunks are untouched.
			got, _, err := registry.Authenticate(ctx, e.router, res.Key.Key)
			require.NoError(t, err)
			require.Equal(t, copyID, got.ID)
			now := tableDump(t, e, id, true)
			for _, tb := range []string{"documents", "chunks", "embedding_jobs"} {
				require.Equal(t, wantRows[tb], now[tb], tb)
			}

			// The same id, after the original is gone.
			require.NoError(t, e.prov.DeleteTenant(ctx, id))
			res, err = e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{Tier: to})
			require.NoError(t, err, "%s -> %s", from, to)
			require.False(t, res.NewIDs)
			require.Equal(t, to, res.Tenant.Tier)
			require.Equal(t, wantRows, tableDump(t, e, id, true), "%s -> %s", from, to)
			require.Equal(t, wantSearch, searches(t, e, id, true), "%s -> %s", from, to)

			// The restored tenant accepts writes and its embedding worker finds the queued jobs.
			w, err := memory.NewWorker(memory.WorkerConfig{Embedder: e.emb})
			require.NoError(t, err)
			n, err := w.ProcessScope(ctx, e.scope(t, id))
			require.NoError(t, err)
			require.Positive(t, n)
		}
	}
}

// TestBackupNeverContainsAnotherTenant puts a canary tenant next to the backed-up one, in the same
// tier, and looks for its marker in the archive, compressed and not.
func TestBackupNeverContainsAnotherTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, nil)
	for _, tier := range tiers {
		canary, victim := "canary-"+string(tier), "victim-"+string(tier)
		for _, id := range []string{canary, victim} {
			_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: tier})
			require.NoError(t, err)
		}
		e.fill(t, canary, "CANARY7f3a9")
		e.fill(t, victim, "victim-text")
		data := backup(t, e, victim, provision.BackupParams{IncludeKeyHashes: true})
		plain := decompress(t, data)
		require.NotContains(t, string(plain), "CANARY7f3a9")
		require.NotContains(t, string(plain), canary)
		require.Contains(t, string(plain), "victim-text")
		canaryKeys, err := e.prov.ListKeys(ctx, canary)
		require.NoError(t, err)
		require.NotContains(t, string(plain), canaryKeys[0].KeyID)
	}
}

// TestRestoreWithKeyHashesRevivesTheOldKeys: with the flag, a tenant restored under its own id
// answers its old keys, each with the scopes it had (a delegate key still acts for descendants,
// a plain key still does not); without it, the old keys are dead and a new one is issued.
func TestRestoreWithKeyHashesRevivesTheOldKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, nil)
	created, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "keys", Tier: registry.TierSchema})
	require.NoError(t, err)
	delegate, err := e.prov.IssueKeyWith(ctx, registry.KeyIssueParams{TenantID: "keys", Delegate: true, CreateDescendants: true})
	require.NoError(t, err)
	withKeys := backup(t, e, "keys", provision.BackupParams{IncludeKeyHashes: true})
	without := backup(t, e, "keys", provision.BackupParams{})
	require.NotContains(t, string(decompress(t, without)), created.Key.KeyID)

	require.NoError(t, e.prov.DeleteTenant(ctx, "keys"))
	res, err := e.prov.Restore(ctx, bytes.NewReader(withKeys), provision.RestoreParams{})
	require.NoError(t, err)
	require.Nil(t, res.Key)
	require.Equal(t, 2, res.KeysRestored)
	for _, k := range []registry.IssuedKey{created.Key, delegate} {
		got, err := registry.Authorize(ctx, e.router, k.Key)
		require.NoError(t, err)
		require.Equal(t, "keys", got.Tenant.ID)
		require.Equal(t, []bool{k.Delegate, k.CreateDescendants}, []bool{got.Delegate, got.CreateDescendants}, "the scopes of key %s", k.KeyID)
	}

	require.NoError(t, e.prov.DeleteTenant(ctx, "keys"))
	res, err = e.prov.Restore(ctx, bytes.NewReader(without), provision.RestoreParams{})
	require.NoError(t, err)
	require.NotNil(t, res.Key)
	for _, k := range []string{created.Key.Key, delegate.Key} {
		_, _, err = registry.Authenticate(ctx, e.router, k)
		require.ErrorIs(t, err, registry.ErrUnauthenticated)
	}
}

// TestRestoreReplace: an existing tenant is replaced only with Replace, and keeps its keys.
func TestRestoreReplace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, nil)
	created, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "rep", Tier: registry.TierShared})
	require.NoError(t, err)
	e.fill(t, "rep", "first-version")
	want := tableDump(t, e, "rep", true)
	data := backup(t, e, "rep", provision.BackupParams{})
	_, err = e.engine.AddDocument(ctx, e.scope(t, "rep"), memory.DocumentAddParams{DocumentName: "later", DocumentType: "text", Content: "written after the backup"})
	require.NoError(t, err)
	changed := tableDump(t, e, "rep", true)

	_, err = e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{})
	require.ErrorIs(t, err, registry.ErrExists)
	require.Equal(t, changed, tableDump(t, e, "rep", true), "a refused restore changes nothing")

	for _, tier := range []registry.Tier{registry.TierSchema, registry.TierShared} {
		res, err := e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{Replace: true, Tier: tier})
		require.NoError(t, err)
		require.True(t, res.Replaced)
		require.Equal(t, tier, res.Tenant.Tier)
		require.Equal(t, want, tableDump(t, e, "rep", true))
		got, _, err := registry.Authenticate(ctx, e.router, created.Key.Key)
		require.NoError(t, err, "the existing keys stay")
		require.Equal(t, tier, got.Tier)
	}
	// No staging schema is left behind.
	var n int
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenantmem_stage_%'`).Scan(&n))
	require.Zero(t, n)
}

// reachable lists what a user could reach: active tenants, and schemas besides the shared one.
func reachable(t *testing.T, e *env) []string {
	t.Helper()
	ctx := context.Background()
	rows, err := e.pool.Query(ctx, `SELECT tenant_id || ' ' || status FROM tenantmem_control.tenants
		UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname LIKE 'tenant\_%' OR nspname LIKE 'tenantmem_stage%'
		UNION ALL SELECT 'shared rows ' || count(*) FROM tenantmem_shared.documents HAVING count(*) > 0
		ORDER BY 1`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// TestRestoreRefusesBadArchives: each bad archive gets a clear error and writes nothing.
func TestRestoreRefusesBadArchives(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, nil)
	_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "src", Tier: registry.TierShared})
	require.NoError(t, err)
	e.fill(t, "src", "bad-input")
	good := backup(t, e, "src", provision.BackupParams{})
	require.NoError(t, e.prov.DeleteTenant(ctx, "src"))
	before := reachable(t, e.env)

	latest, err := schema.Latest(schema.TenantSet)
	require.NoError(t, err)
	crafted := func(mod func(*archive.Manifest)) []byte {
		m := archive.Manifest{Producer: "test", TenantID: "crafted", Tier: "shared", Placement: "local",
			MigrationVersion: latest, EmbeddingDimension: provision.DefaultEmbeddingDimension}
		mod(&m)
		var buf bytes.Buffer
		w, err := archive.NewWriter(&buf, m, archive.WriterOptions{})
		require.NoError(t, err)
		for _, tb := range m.Tables {
			require.NoError(t, w.BeginTable(tb.Name))
			require.NoError(t, w.EndTable())
		}
		require.NoError(t, w.Close())
		return buf.Bytes()
	}
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0xff
	for _, tc := range []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"truncated", good[:len(good)*2/3], archive.ErrTruncated, "truncated"},
		{"truncated at the end frame", good[:len(good)-3], nil, ""},
		{"corrupted", flipped, nil, ""},
		{"foreign", []byte("PGDMP custom dump"), archive.ErrNotArchive, "not a tenantmem archive"},
		{"empty", nil, archive.ErrNotArchive, ""},
		{"future migration", crafted(func(m *archive.Manifest) { m.MigrationVersion = latest + 100 }), archive.ErrFutureVersion, "newer tenantmem"},
		{"other dimension", crafted(func(m *archive.Manifest) { m.EmbeddingDimension = 1536 }), provision.ErrArchive, "dimension 1536"},
		{"unknown table", crafted(func(m *archive.Manifest) {
			m.Tables = []archive.TableInfo{{Name: "secrets", Columns: []archive.Column{{Name: "owner_id", Type: "text"}}}}
		}), archive.ErrIncompatible, "secrets"},
		{"wrong column type", crafted(func(m *archive.Manifest) {
			m.Tables = []archive.TableInfo{{Name: "documents", Columns: []archive.Column{{Name: "owner_id", Type: "text"}, {Name: "document_name", Type: "bytea"}}}}
		}), archive.ErrIncompatible, "document_name"},
	} {
		_, err := e.prov.Restore(ctx, bytes.NewReader(tc.data), provision.RestoreParams{})
		require.Error(t, err, tc.name)
		require.True(t, provision.IsArchiveError(err), "%s: %v", tc.name, err)
		if tc.want != nil {
			require.ErrorIs(t, err, tc.want, tc.name)
		}
		require.ErrorContains(t, err, tc.msg, tc.name)
		require.Equal(t, before, reachable(t, e.env), "%s wrote something", tc.name)
	}
	// And the good one restores.
	_, err = e.prov.Restore(ctx, bytes.NewReader(good), provision.RestoreParams{})
	require.NoError(t, err)
}

// TestRestoreResumesAfterACrashAtEachStep stops a restore before each step (as a kill would) and
// runs it again: the tenant is never reachable in between, and the rerun ends with the same rows.
func TestRestoreResumesAfterACrashAtEachStep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var stopAt atomic.Value
	stopAt.Store("")
	e := newMemEnv(t, func(_ context.Context, step, _ string) error {
		if step == stopAt.Load().(string) {
			return errors.New("crash at " + step)
		}
		return nil
	})
	for _, tier := range tiers {
		id := "crash-" + string(tier)
		created, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: tier})
		require.NoError(t, err)
		e.fill(t, id, "crash-test")
		want := tableDump(t, e, id, true)
		data := backup(t, e, id, provision.BackupParams{IncludeKeyHashes: true})

		// Fresh restores, killed at each step.
		for _, step := range []string{provision.StepRestoreRegistered, provision.StepRestoreLoaded, provision.StepRestoreVerified} {
			require.NoError(t, e.prov.DeleteTenant(ctx, id))
			stopAt.Store(step)
			_, err := e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{})
			require.ErrorContains(t, err, "crash at "+step)
			tn, err := e.prov.GetTenant(ctx, id)
			require.NoError(t, err)
			require.Equal(t, registry.StatusProvisioning, tn.Status, step)
			_, _, err = registry.Authenticate(ctx, e.router, created.Key.Key)
			require.ErrorIs(t, err, registry.ErrUnauthenticated, "no key reaches a half-restored tenant (%s)", step)
			stopAt.Store("")
			_, err = e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{})
			require.NoError(t, err, step)
			require.Equal(t, want, tableDump(t, e, id, true), step)
		}

		// Replacing restores, killed at each step: before the old tenant makes way it keeps
		// serving; after, it answers 503 until the rerun.
		for _, step := range []string{provision.StepRestoreStaged, provision.StepRestoreInstalling, provision.StepRestoreInstalled} {
			stopAt.Store(step)
			_, err := e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{Replace: true})
			require.ErrorContains(t, err, "crash at "+step)
			tn, err := e.prov.GetTenant(ctx, id)
			require.NoError(t, err)
			if step == provision.StepRestoreStaged {
				require.Equal(t, registry.StatusActive, tn.Status)
			} else {
				require.Equal(t, registry.StatusProvisioning, tn.Status)
			}
			stopAt.Store("")
			_, err = e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{Replace: true})
			require.NoError(t, err, step)
			require.Equal(t, want, tableDump(t, e, id, true), step)
			got, _, err := registry.Authenticate(ctx, e.router, created.Key.Key)
			require.NoError(t, err, step)
			require.Equal(t, registry.StatusActive, got.Status)
		}
	}
}

// TestRestoreOfAnOlderVersionMigratesTheRows: an archive of tables at the first migration is
// loaded into tables at that version and migrated with them, in both tiers.
func TestRestoreOfAnOlderVersionMigratesTheRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, nil)
	latest, err := schema.Latest(schema.TenantSet)
	require.NoError(t, err)
	// An old tenant built by hand: a schema at version 1, rows written with that version's
	// columns (the engine of today writes today's).
	m, err := schema.NewMigrator(schema.MigratorConfig{ConnConfig: e.pool.Config().ConnConfig, Role: provision.DefaultOwnerRole,
		EmbeddingDimension: provision.DefaultEmbeddingDimension})
	require.NoError(t, err)
	_, err = e.pool.Exec(ctx, `CREATE SCHEMA tenant_old AUTHORIZATION tenantmem_owner`)
	require.NoError(t, err)
	_, err = m.UpTo(ctx, schema.TenantSet, "tenant_old", 1)
	require.NoError(t, err)
	b, err := embed.NewBuiltin(provision.DefaultEmbeddingDimension)
	require.NoError(t, err)
	texts := []string{"We deploy on Tuesdays after the backup.", "The quarterly numbers went up.", "Lunch at noon?"}
	vecs, err := b.Embed(ctx, texts)
	require.NoError(t, err)
	_, err = e.pool.Exec(ctx, `GRANT USAGE ON SCHEMA tenant_old TO tenantmem_router;
		GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tenant_old TO tenantmem_router;
		GRANT USAGE ON ALL SEQUENCES IN SCHEMA tenant_old TO tenantmem_router;
		INSERT INTO tenantmem_control.tenants (tenant_id, tier, schema_name, status, migration_version)
		VALUES ('old', 'schema', 'tenant_old', 'active', 1)`)
	require.NoError(t, err)
	err = pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE tenantmem_owner; SET LOCAL search_path = tenant_old, extensions;
			SET LOCAL tenantmem.owner_id = 'old'`); err != nil {
			return err
		}
		for i, text := range texts {
			var doc string
			if err := tx.QueryRow(ctx, `INSERT INTO documents (owner_id, document_name, document_type, content_bytes)
				VALUES ('old', $1, 'text', $2) RETURNING document_id::text`, fmt.Sprintf("doc %d", i), len(text)).Scan(&doc); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO chunks (document_id, owner_id, chunk_index, content, content_hash, token_count, embedding)
				VALUES ($1, 'old', 0, $2, md5($2), 8, $3::float4[]::vector)`, doc, text, vecs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err)
	data := backup(t, e, "old", provision.BackupParams{})
	r, err := archive.NewReader(bytes.NewReader(data), archive.ReaderOptions{})
	require.NoError(t, err)
	require.EqualValues(t, 1, r.Manifest().MigrationVersion)
	r.Close()

	var results [][]string
	for _, tier := range tiers {
		id := "old-in-" + string(tier)
		res, err := e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{As: id, Tier: tier})
		require.NoError(t, err, tier)
		require.Equal(t, latest, res.Tenant.MigrationVersion)
		var got []string
		rows, err := e.dbPool(t, res.Tenant, false).Query(ctx, `SELECT content || ' ' || embedding::text FROM `+
			pgx.Identifier{res.Tenant.SchemaName, "chunks"}.Sanitize()+` WHERE owner_id = $1 ORDER BY content`, id)
		require.NoError(t, err)
		got, err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		rows, err = e.pool.Query(ctx, `SELECT content || ' ' || embedding::text FROM tenant_old.chunks ORDER BY content`)
		require.NoError(t, err)
		want, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.Equal(t, want, got, tier)
		results = append(results, searches(t, e, id, false))
	}
	require.NotEmpty(t, results[0])
	require.Equal(t, results[0], results[1])
}

// TestBackupRestoreAndMoveAreListedAsOperations: backups, restores and moves appear in the
// console's operations list (registry.ListOperations) with their rows, and how they ended; a
// refused restore is listed as failed, with its reason.
func TestBackupRestoreAndMoveAreListedAsOperations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, nil)
	_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "ops", Tier: registry.TierShared})
	require.NoError(t, err)
	e.fill(t, "ops", "ops-marker")
	var reported int
	var buf bytes.Buffer
	_, err = e.prov.Backup(ctx, "ops", &buf, provision.BackupParams{Progress: func(archive.Progress) { reported++ }})
	require.NoError(t, err)
	require.Positive(t, reported, "the caller's progress is still called")
	data := buf.Bytes()
	_, err = e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{As: "ops-copy", Tier: registry.TierSchema})
	require.NoError(t, err)
	_, err = e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{})
	require.ErrorIs(t, err, registry.ErrExists)
	_, err = e.prov.MoveTenant(ctx, "ops", provision.MoveParams{Tier: registry.TierSchema})
	require.NoError(t, err)

	ops, err := registry.ListOperations(ctx, e.pool, registry.OperationListParams{})
	require.NoError(t, err)
	type row struct {
		Kind  string
		State registry.OperationState
	}
	var got []row
	for _, o := range ops {
		got = append(got, row{o.Kind, o.State})
		require.Contains(t, o.Subject, "ops", o.Kind)
		require.Equal(t, "rows", o.Unit)
		require.NotNil(t, o.FinishedAt, "%s has ended", o.Kind)
		if o.State == registry.OperationSucceeded {
			require.Positive(t, o.Total, o.Kind)
			require.Equal(t, o.Total, o.Done, "%s: every row", o.Kind)
		}
	}
	require.Equal(t, []row{
		{registry.OperationMove, registry.OperationSucceeded},
		{registry.OperationRestore, registry.OperationFailed},
		{registry.OperationRestore, registry.OperationSucceeded},
		{registry.OperationBackup, registry.OperationSucceeded},
	}, got)
	require.Contains(t, ops[1].Error, "restore with replace")
	require.Contains(t, ops[2].Subject, "ops-copy")
	require.Contains(t, ops[0].Subject, "schema tier")
}
