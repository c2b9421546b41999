package provision_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgcluster"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/routing"
)

// fillBenchTenant gives a schema-tier tenant n leaf chunks of about 60 words each, in documents
// of 100 chunks, with random 384-dimension vectors (which compress like real ones: hardly). It
// writes with SQL and builds the indexes afterwards: setup, not measured.
func fillBenchTenant(b *testing.B, pool *pgxpool.Pool, t registry.Tenant, n int) {
	b.Helper()
	ctx := context.Background()
	s := pgx.Identifier{t.SchemaName}.Sanitize()
	_, err := pool.Exec(ctx, `DROP INDEX `+s+`.chunks_embedding_hnsw_idx`)
	require.NoError(b, err)
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL search_path = `+s+`, extensions; SET LOCAL ROLE tenantmem_owner`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT set_config('tenantmem.owner_id', $1, true)`, t.ID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO documents (document_id, owner_id, document_name, document_type, content_bytes, metadata)
			SELECT md5('doc' || d)::uuid, $1, 'Document ' || d, 'text', 40000, jsonb_build_object('n', d)
			FROM generate_series(1, $2::int / 100) d`, t.ID, n); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
			WITH words AS (SELECT ARRAY['deploy', 'backup', 'tenant', 'search', 'vector', 'index', 'schema', 'router', 'release',
				'rollback', 'quarterly', 'numbers', 'customer', 'invoice', 'weather', 'meeting', 'design', 'review', 'latency',
				'memory', 'budget', 'travel', 'contract', 'support', 'incident', 'policy', 'report', 'summary', 'chapter'] AS w)
			INSERT INTO chunks (chunk_id, document_id, owner_id, chunk_index, chunk_level, content, content_hash, token_count, metadata,
				embedding, search_vector)
			SELECT md5('chunk' || i)::uuid, md5('doc' || ((i - 1) / 100 + 1))::uuid, $1, (i - 1) % 100, 0, c.content, md5(c.content), 80,
				jsonb_build_object('start', 0, 'end', length(c.content)),
				(SELECT array_agg(random()::real - 0.5) FROM generate_series(1, 384 + 0 * i))::vector,
				to_tsvector('pg_catalog.english', c.content)
			FROM generate_series(1, $2::int) i,
			LATERAL (SELECT string_agg(w[1 + ((i * 7919 + k * 104729) % 29)], ' ') AS content FROM words, generate_series(1, 60 + 0 * i) k) c`,
			t.ID, n)
		return err
	})
	require.NoError(b, err)
	_, err = pool.Exec(ctx, `SET maintenance_work_mem = '1GB'; SET search_path = extensions; CREATE INDEX chunks_embedding_hnsw_idx ON `+s+`.chunks USING hnsw (embedding vector_cosine_ops);
		ANALYZE `+s+`.chunks; ANALYZE `+s+`.documents; ANALYZE `+s+`.chunk_terms`)
	require.NoError(b, err)
}

// BenchmarkTenantArchive measures, on one schema-tier tenant of TENANTMEM_BENCH_CHUNKS chunks
// (default 10,000; 100,000 with TENANTMEM_BENCH_LARGE=1): backup, restore into the schema tier and
// into the shared and the database tier, pg_dump -n and pg_restore of the same schema in the same
// run, and moves to the shared tier, the database tier and back under a continuous writer (the
// longest write stall). Run it once:
//
//	TENANTMEM_BENCH_LARGE=1 go test -run '^$' -bench TenantArchive -benchtime 1x -timeout 120m ./internal/provision
func BenchmarkTenantArchive(b *testing.B) {
	def := 10000
	if os.Getenv("TENANTMEM_BENCH_LARGE") != "" {
		def = 100000
	}
	n := envInt("TENANTMEM_BENCH_CHUNKS", def)
	ctx := context.Background()
	binDir, err := pgcluster.FindBinDir("")
	require.NoError(b, err)
	for range b.N {
		url := pgtest.NewDatabase(b)
		pool, err := pgxpool.New(ctx, url)
		require.NoError(b, err)
		prov, err := provision.New(provision.Config{Pool: pool, Credentials: testCredentials(b)})
		require.NoError(b, err)
		_, err = prov.Init(ctx, provision.InitParams{})
		require.NoError(b, err)
		created, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "bench", Tier: registry.TierSchema})
		require.NoError(b, err)
		fillBenchTenant(b, pool, created.Tenant, n)
		dir := b.TempDir()

		// Backup.
		file := filepath.Join(dir, "bench.tmarchive")
		f, err := os.Create(file)
		require.NoError(b, err)
		w := bufio.NewWriterSize(f, 1<<20)
		start := time.Now()
		res, err := prov.Backup(ctx, "bench", w, provision.BackupParams{})
		require.NoError(b, err)
		require.NoError(b, w.Flush())
		require.NoError(b, f.Close())
		backupTook := time.Since(start)
		st, err := os.Stat(file)
		require.NoError(b, err)
		b.ReportMetric(backupTook.Seconds(), "backup_s")
		b.ReportMetric(float64(n)/backupTook.Seconds(), "backup_chunks/s")
		b.ReportMetric(float64(res.Bytes)/backupTook.Seconds()/1e6, "backup_raw_MB/s")
		b.ReportMetric(float64(st.Size())/1e6, "archive_MB")
		b.ReportMetric(float64(res.Bytes)/1e6, "archive_raw_MB")

		// Restore, into each tier.
		for _, tier := range []registry.Tier{registry.TierSchema, registry.TierShared, registry.TierDatabase} {
			f, err := os.Open(file)
			require.NoError(b, err)
			start := time.Now()
			_, err = prov.Restore(ctx, bufio.NewReaderSize(f, 1<<20), provision.RestoreParams{As: "copy-" + string(tier), Tier: tier})
			require.NoError(b, err)
			took := time.Since(start)
			require.NoError(b, f.Close())
			b.ReportMetric(took.Seconds(), "restore_"+string(tier)+"_s")
			b.ReportMetric(float64(n)/took.Seconds(), "restore_"+string(tier)+"_chunks/s")
			b.ReportMetric(float64(st.Size())/took.Seconds()/1e6, "restore_"+string(tier)+"_MB/s")
		}

		// pg_dump -n / pg_restore of the same schema, into a database prepared like a deployment's.
		dump := filepath.Join(dir, "bench.dump")
		start = time.Now()
		out, err := exec.Command(filepath.Join(binDir, "pg_dump"), "-Fc", "-n", created.Tenant.SchemaName, "-f", dump, url).CombinedOutput()
		require.NoError(b, err, "%s", out)
		dumpTook := time.Since(start)
		dst, err := os.Stat(dump)
		require.NoError(b, err)
		restoreURL := pgtest.NewDatabase(b)
		_, err = pgxExec(ctx, restoreURL, `CREATE SCHEMA extensions; CREATE EXTENSION vector WITH SCHEMA extensions`)
		require.NoError(b, err)
		start = time.Now()
		out, err = exec.Command(filepath.Join(binDir, "pg_restore"), "-d", restoreURL, dump).CombinedOutput()
		require.NoError(b, err, "%s", out)
		pgRestoreTook := time.Since(start)
		b.ReportMetric(dumpTook.Seconds(), "pg_dump_s")
		b.ReportMetric(float64(dst.Size())/1e6, "pg_dump_MB")
		b.ReportMetric(pgRestoreTook.Seconds(), "pg_restore_s")

		// Moves under a writer: the longest gap between two acknowledged writes.
		stall, pause := benchMoves(b, pool, url, prov)
		b.ReportMetric(stall.Seconds()*1000, "move_max_write_stall_ms")
		b.ReportMetric(pause.Seconds()*1000, "move_max_write_pause_ms")
		pool.Close()
	}
}

func pgxExec(ctx context.Context, url, sql string) (int64, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, sql)
	return tag.RowsAffected(), err
}

// benchMoves moves the bench tenant to the shared tier, its own database and back while a writer adds documents
// through a router-like fenced scope, and returns the longest gap between two acknowledged writes
// during the moves and the longest write pause a move reported.
func benchMoves(b *testing.B, pool *pgxpool.Pool, url string, prov *provision.Provisioner) (time.Duration, time.Duration) {
	ctx := context.Background()
	router, err := pgxpool.New(ctx, pgtest.WithUser(b, url, provision.DefaultRouterRole, ""))
	require.NoError(b, err)
	defer router.Close()
	// Placement pools, as the router has them: the database tier is served through them.
	pools, err := placement.New(placement.Config{Control: router, Credentials: testCredentials(b)})
	require.NoError(b, err)
	defer pools.Close()
	resolver, err := routing.New(routing.Config{Pool: router, Pools: pools})
	require.NoError(b, err)
	emb, err := embed.NewBuiltin(provision.DefaultEmbeddingDimension)
	require.NoError(b, err)
	engine, err := memory.New(memory.Config{Embedder: emb})
	require.NoError(b, err)
	var (
		mu       sync.Mutex
		last     = time.Now()
		maxGap   time.Duration
		stop     = make(chan struct{})
		done     = make(chan error, 1)
		measure  bool
		maxPause time.Duration
	)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			t, err := registry.Get(ctx, pool, "bench")
			if err != nil {
				done <- err
				return
			}
			_, err = engine.AddDocument(ctx, resolver.HandleFor(t).Scope(time.Minute), memory.DocumentAddParams{
				DocumentName: fmt.Sprint("w-", i), DocumentType: "text", Content: "written while the tenant moves"})
			switch {
			case err == nil:
				mu.Lock()
				if gap := time.Since(last); measure && gap > maxGap {
					maxGap = gap
				}
				last = time.Now()
				mu.Unlock()
			case errors.Is(err, memory.ErrWritesPaused), errors.Is(err, memory.ErrFenced):
				time.Sleep(10 * time.Millisecond)
			default:
				done <- err
				return
			}
		}
	}()
	time.Sleep(time.Second)
	mu.Lock()
	measure = true
	mu.Unlock()
	for _, tier := range []registry.Tier{registry.TierShared, registry.TierDatabase, registry.TierSchema} {
		res, err := prov.MoveTenant(ctx, "bench", provision.MoveParams{Tier: tier})
		require.NoError(b, err)
		b.Logf("move to %s: %d rounds, %d changes, writes paused %s, took %s", tier, res.Rounds, res.Changes, res.WritePause, res.Took)
		maxPause = max(maxPause, res.WritePause)
		b.ReportMetric(res.Took.Seconds(), "move_to_"+string(tier)+"_s")
	}
	close(stop)
	require.NoError(b, <-done)
	return maxGap, maxPause
}
