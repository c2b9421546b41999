package provision_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// fillBenchTenant gives a tenant of the schema or the shared tier n leaf chunks of about 60 words
// each, in documents of 100 chunks, with random 384-dimension vectors (which compress like real
// ones: hardly). It writes with SQL and builds the vector index afterwards (in the shared tier,
// the whole shared index): setup, not measured.
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
			SELECT md5($1 || ':doc' || d)::uuid, $1, 'Document ' || d, 'text', 40000, jsonb_build_object('n', d)
			FROM generate_series(1, $2::int / 100) d`, t.ID, n); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
			WITH words AS (SELECT ARRAY['deploy', 'backup', 'tenant', 'search', 'vector', 'index', 'schema', 'router', 'release',
				'rollback', 'quarterly', 'numbers', 'customer', 'invoice', 'weather', 'meeting', 'design', 'review', 'latency',
				'memory', 'budget', 'travel', 'contract', 'support', 'incident', 'policy', 'report', 'summary', 'chapter'] AS w)
			INSERT INTO chunks (chunk_id, document_id, owner_id, chunk_index, chunk_level, content, content_hash, token_count, metadata,
				embedding, search_vector)
			SELECT md5($1 || ':chunk' || i)::uuid, md5($1 || ':doc' || ((i - 1) / 100 + 1))::uuid, $1, (i - 1) % 100, 0, c.content, md5(c.content), 80,
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
// (default 10,000; 100,000 with TENANTMEM_BENCH_LARGE=1): backup, restore into the tiers of
// TENANTMEM_BENCH_RESTORE_TIERS (default schema,shared,database), pg_dump -n and pg_restore of the
// same schema in the same run, and the moves of TENANTMEM_BENCH_MOVES (default shared,schema: to
// the shared tier and back) under a continuous writer: each move's time, write pause and longest
// write stall. Run it once (make bench-archive):
//
//	TENANTMEM_BENCH_LARGE=1 go test -run '^$' -bench TenantArchive -benchtime 1x -timeout 120m ./internal/provision
func BenchmarkTenantArchive(b *testing.B) {
	def := 10000
	if os.Getenv("TENANTMEM_BENCH_LARGE") != "" {
		def = 100000
	}
	n := envInt("TENANTMEM_BENCH_CHUNKS", def)
	restoreTiers := envTiers(b, "TENANTMEM_BENCH_RESTORE_TIERS", "schema,shared,database")
	moves := envTiers(b, "TENANTMEM_BENCH_MOVES", "shared,schema")
	// A shared-tier tenant of the same size moved to its own schema (a promotion), filled
	// directly in the shared tier: moving the schema-tier tenant there first costs as much as a
	// restore into the shared tier.
	promote := os.Getenv("TENANTMEM_BENCH_PROMOTE") != ""
	began := time.Now()
	step := func(format string, args ...any) {
		// On stderr, as it happens: a large run takes many minutes.
		fmt.Fprintf(os.Stderr, "%s %7.1fs  %s\n", time.Now().UTC().Format(time.TimeOnly), time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}
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
		step("filling the tenant with %d chunks", n)
		fillBenchTenant(b, pool, created.Tenant, n)
		step("filled")
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
		step("backup: %s, %.1f MB", backupTook.Round(time.Millisecond), float64(st.Size())/1e6)
		b.ReportMetric(backupTook.Seconds(), "backup_s")
		b.ReportMetric(float64(n)/backupTook.Seconds(), "backup_chunks/s")
		b.ReportMetric(float64(res.Bytes)/backupTook.Seconds()/1e6, "backup_raw_MB/s")
		b.ReportMetric(float64(st.Size())/1e6, "archive_MB")
		b.ReportMetric(float64(res.Bytes)/1e6, "archive_raw_MB")

		// Restore, into each tier.
		for _, tier := range restoreTiers {
			f, err := os.Open(file)
			require.NoError(b, err)
			start := time.Now()
			_, err = prov.Restore(ctx, bufio.NewReaderSize(f, 1<<20), provision.RestoreParams{As: "copy-" + string(tier), Tier: tier})
			require.NoError(b, err)
			took := time.Since(start)
			require.NoError(b, f.Close())
			step("restore into the %s tier: %s", tier, took.Round(time.Millisecond))
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
		step("pg_dump -n: %s, %.1f MB", dumpTook.Round(time.Millisecond), float64(dst.Size())/1e6)
		restoreURL := pgtest.NewDatabase(b)
		_, err = pgxExec(ctx, restoreURL, `CREATE SCHEMA extensions; CREATE EXTENSION vector WITH SCHEMA extensions`)
		require.NoError(b, err)
		start = time.Now()
		out, err = exec.Command(filepath.Join(binDir, "pg_restore"), "-d", restoreURL, dump).CombinedOutput()
		require.NoError(b, err, "%s", out)
		pgRestoreTook := time.Since(start)
		step("pg_restore: %s", pgRestoreTook.Round(time.Millisecond))
		b.ReportMetric(dumpTook.Seconds(), "pg_dump_s")
		b.ReportMetric(float64(dst.Size())/1e6, "pg_dump_MB")
		b.ReportMetric(pgRestoreTook.Seconds(), "pg_restore_s")

		// Moves under a writer: the longest gap between two acknowledged writes.
		benchMoves(b, pool, url, prov, "bench", moves, step)
		if promote {
			created, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "bench-shared", Tier: registry.TierShared})
			require.NoError(b, err)
			step("filling a shared-tier tenant with %d chunks", n)
			fillBenchTenant(b, pool, created.Tenant, n)
			step("filled")
			benchMoves(b, pool, url, prov, "bench-shared", []registry.Tier{registry.TierSchema}, step)
		}
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

// envTiers reads a comma-separated list of tiers from the environment ("none": no tier).
func envTiers(b *testing.B, name, def string) []registry.Tier {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		v = def
	}
	var out []registry.Tier
	for _, s := range strings.Split(v, ",") {
		switch t := registry.Tier(strings.TrimSpace(s)); t {
		case registry.TierShared, registry.TierSchema, registry.TierDatabase:
			out = append(out, t)
		case "", "none":
		default:
			b.Fatalf("%s: %q is not a tier (shared, schema, database)", name, s)
		}
	}
	return out
}

// benchMoves moves the bench tenant to each tier of moves in turn while a writer adds documents
// through a router-like fenced scope (one document per write, one at a time), and reports per
// move its time, the write pause it reported and the longest gap between two acknowledged writes.
func benchMoves(b *testing.B, pool *pgxpool.Pool, url string, prov *provision.Provisioner, id string, moves []registry.Tier,
	step func(string, ...any)) {
	if len(moves) == 0 {
		return
	}
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
		mu      sync.Mutex
		last    = time.Now()
		maxGap  time.Duration
		stop    = make(chan struct{})
		done    = make(chan error, 1)
		measure bool
		acked   int
		refused int
	)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			t, err := registry.Get(ctx, pool, id)
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
				acked++
				mu.Unlock()
			case errors.Is(err, memory.ErrWritesPaused), errors.Is(err, memory.ErrFenced):
				mu.Lock()
				refused++
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			default:
				done <- err
				return
			}
		}
	}()
	time.Sleep(time.Second)
	for _, tier := range moves {
		mu.Lock()
		measure, maxGap, acked, refused = true, 0, 0, 0
		mu.Unlock()
		from, err := registry.Get(ctx, pool, id)
		require.NoError(b, err)
		// When each phase began: the copy, the catch-up, the pause, the flip, the end.
		began := time.Now()
		phases := map[string]time.Duration{}
		res, err := prov.MoveTenant(ctx, id, provision.MoveParams{Tier: tier, OnPhase: func(p string) { phases[p] = time.Since(began) }})
		require.NoError(b, err)
		mu.Lock()
		stall, ok, no := maxGap, acked, refused
		measure = false
		mu.Unlock()
		ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
		step("move of %s from the %s to the %s tier: took %s (copy %s, catch-up %s, paused until the flip %s, old copy removed in %s), %d rounds, %d changes, writes paused %s, longest write stall %s; %d writes acknowledged, %d refused (503)",
			id, from.Tier, tier, ms(res.Took), ms(phases["catching up"]-phases["copying"]), ms(phases["paused"]-phases["catching up"]),
			ms(phases["flipped"]-phases["paused"]), ms(phases["done"]-phases["flipped"]), res.Rounds, res.Changes, ms(res.WritePause),
			ms(stall), ok, no)
		name := id + "_" + string(from.Tier) + "_to_" + string(tier)
		b.ReportMetric(res.Took.Seconds(), name+"_s")
		b.ReportMetric(phases["flipped"].Seconds(), name+"_until_flip_s")
		b.ReportMetric(res.WritePause.Seconds()*1000, name+"_pause_ms")
		b.ReportMetric(stall.Seconds()*1000, name+"_max_stall_ms")
		b.ReportMetric(float64(ok)/res.Took.Seconds(), name+"_writes/s")
	}
	close(stop)
	require.NoError(b, <-done)
}
