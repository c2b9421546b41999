package httpapi_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgvector/pgvector-go"
	pgxvec "github.com/pgvector/pgvector-go/pgx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/routing"
)

// BenchmarkSearchPath runs the same vector, text and hybrid queries three ways, interleaved
// query by query: through the router over loopback HTTP, as an engine call (memory.Engine.Search
// with the router's scope, fence included), and as raw SQL on the same pool (one pipelined round
// trip: the transaction-local settings and the search statement, no fence, no history). Tenants:
// small (500 leaf chunks), medium (5,000) and big (20,000) in the shared tier (whose table also
// holds 20,000 chunks of a filler tenant) and in the schema tier; 384-dimension clustered vectors
// and Zipf text. Queries pass query_embedding, so no way pays for embedding.
//
// A fourth way, "http", is the floor of any JSON-over-HTTP API: the same client's exchange with a
// server that decodes the same request as the router's fast path does and writes the router's
// answer, made beforehand, with no database, authentication or middleware.
//
// Per row it reports p50/p99 of each way, the 8-client throughput of each way with the CPU per
// search it cost this process and PostgreSQL (<way>_go_cpu_ms, <way>_pg_cpu_ms), and recall@10
// against the engine's exact path (ExactSearchThreshold = max). TENANTMEM_BENCH_SAMPLES sets the
// sequential samples per way (default 200). See docs/benchmarks.md.
func BenchmarkSearchPath(b *testing.B) {
	ctx := context.Background()
	url := pgtest.NewDatabase(b)
	admin, err := pgxpool.New(ctx, url)
	require.NoError(b, err)
	defer admin.Close()
	prov, err := provision.New(provision.Config{Pool: admin})
	require.NoError(b, err)
	const dim = 384
	_, err = prov.Init(ctx, provision.InitParams{EmbeddingDimension: dim})
	require.NoError(b, err)

	pool, err := pgxpool.New(ctx, pgtest.WithUser(b, url, provision.DefaultRouterRole, ""))
	require.NoError(b, err)
	defer pool.Close()
	resolver, err := routing.New(routing.Config{Pool: pool})
	require.NoError(b, err)
	listenRegistry(b, pgtest.WithUser(b, url, provision.DefaultRouterRole, ""), resolver)
	embedder, err := embed.NewBuiltin(dim)
	require.NoError(b, err)
	// The router's configuration: history written in the background.
	engine, err := memory.New(memory.Config{Embedder: embedder, AsyncHistory: true})
	require.NoError(b, err)
	hctx, stopHistory := context.WithCancel(ctx)
	historyDone := make(chan struct{})
	go func() { defer close(historyDone); engine.RunHistory(hctx) }()
	defer func() { stopHistory(); <-historyDone }()
	exactEngine, err := memory.New(memory.Config{Embedder: embedder, ExactSearchThreshold: math.MaxInt32})
	require.NoError(b, err)
	reg := prometheus.NewRegistry()
	// The tenants' request rate unlimited: the default 500/s of one tenant would answer 429 in the
	// 8-client phase of a fast row on a quiet machine.
	h, err := httpapi.NewRouter(httpapi.RouterConfig{Resolver: resolver, Engine: engine, Registerer: reg,
		Limits: limit.Limits{RequestsPerSecond: limit.Unlimited, Burst: limit.Unlimited}})
	require.NoError(b, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 16
	// The HTTP floor: a server with nothing of tenantmem in it, which reads the same request in one
	// pass as the router's fast path does (httpapi.DecodeStrict: encoding/json's semantics, strict) and
	// writes the router's answer to that query, made beforehand. What the same client's exchange
	// with it costs is what any JSON-over-HTTP API with this contract pays per search before it
	// does any work.
	var floorAnswers atomic.Pointer[[][]byte]
	floor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req httpapi.SearchRequest
		body, err := io.ReadAll(r.Body)
		if err == nil {
			err = httpapi.DecodeStrict(body, &req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		i, err := strconv.Atoi(r.Header.Get("X-Bench-Query"))
		if err != nil {
			http.Error(w, "X-Bench-Query", http.StatusBadRequest)
			return
		}
		answer := (*floorAnswers.Load())[i]
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
		_, _ = w.Write(answer)
	}))
	defer floor.Close()
	floorClient := floor.Client()
	floorClient.Transport.(*http.Transport).MaxIdleConnsPerHost = 16

	type tenant struct {
		name, key string
		tier      registry.Tier
		size      int
		scope     memory.Scope
	}
	gen := newBenchVectors(42, 200, dim)
	words := newBenchWords(7)
	load := map[string][][]any{} // schema -> chunk rows
	docs := map[string][][]any{}
	var tenants []*tenant
	add := func(id string, tier registry.Tier, n int, measured bool) {
		res, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: tier})
		require.NoError(b, err)
		t := &tenant{name: id, key: res.Key.Key, tier: tier, size: n}
		t.scope = routingScope(ctx, b, resolver, res.Key.Key)
		sch := res.Tenant.SchemaName
		for done := 0; done < n; done += 20 {
			docID := benchUUID()
			docs[sch] = append(docs[sch], []any{docID, id, "bench " + strconv.Itoa(done), "text", int64(0)})
			for i := range min(20, n-done) {
				content := words.text(60)
				sum := sha256.Sum256([]byte(content))
				load[sch] = append(load[sch], []any{benchUUID(), docID, id, int32(i), int16(0), content,
					hex.EncodeToString(sum[:]), int32(len(content) / 4), []byte(`{}`), pgvector.NewVector(gen.next())})
			}
		}
		if measured {
			tenants = append(tenants, t)
		}
	}
	for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema} {
		for _, sz := range []struct {
			name string
			n    int
		}{{"small", 500}, {"medium", 5000}, {"big", 20000}} {
			add(sz.name+"-"+string(tier), tier, sz.n, true)
		}
	}
	add("filler-shared", registry.TierShared, 20000, false)
	for sch := range load {
		benchLoad(b, url, sch, docs[sch], load[sch])
	}

	qgen := newBenchVectors(42, 200, dim)
	qgen.r = rand.New(rand.NewPCG(9, 10))
	qwords := newBenchWords(99)
	const nq = 100
	type query struct {
		i    int
		text string
		vec  []float32
	}
	queries := make([]query, nq)
	stop := map[string]bool{}
	for _, w := range benchVocabulary[:40] {
		stop[w] = true
	}
	for i := range queries {
		// At least one word that is not a stop word: a query of stop words only is a 400 for text search.
		for {
			t := qwords.text(1 + i%3)
			if slices.ContainsFunc(strings.Fields(t), func(w string) bool { return !stop[w] }) {
				queries[i] = query{i: i, text: t, vec: qgen.next()}
				break
			}
		}
	}
	samples := 200
	if v, err := strconv.Atoi(os.Getenv("TENANTMEM_BENCH_SAMPLES")); err == nil && v > 0 {
		samples = v
	}
	// TENANTMEM_BENCH_STATEMENTS=1 logs each row's statements as pg_stat_statements saw them
	// during the sequential samples (the server named by TEST_DATABASE_URL must preload it).
	statements := os.Getenv("TENANTMEM_BENCH_STATEMENTS") == "1"
	if statements {
		_, err := admin.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
		require.NoError(b, err, "TENANTMEM_BENCH_STATEMENTS needs shared_preload_libraries = pg_stat_statements")
	}
	const limit = 10
	var backend int
	require.NoError(b, admin.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend))
	postmaster := pgtest.Postmaster(backend)

	row := 0
	for _, t := range tenants {
		for _, mode := range []string{memory.SearchVector, memory.SearchText, memory.SearchHybrid} {
			row++
			// The 8-client phases start with a different way in each row, so that server work
			// left by the sequential samples (history flushes, autovacuum) does not always fall
			// in the same way's window.
			first := row
			b.Run(fmt.Sprintf("tier=%s/size=%d/mode=%s", t.tier, t.size, mode), func(b *testing.B) {
				params := func(q query) memory.SearchParams {
					p := memory.SearchParams{SearchType: mode, Limit: new(limit)}
					if mode != memory.SearchVector {
						p.QueryText = q.text
					}
					if mode != memory.SearchText {
						p.QueryEmbedding = q.vec
					}
					return p
				}
				truth := make([][]string, nq)
				for i, q := range queries {
					res, err := exactEngine.Search(ctx, t.scope, params(q))
					require.NoError(b, err)
					truth[i] = resultIDs(res.Results)
				}
				exchange := func(client *http.Client, url string, q query) []string {
					body, _ := json.Marshal(params(q))
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+t.key)
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("X-Bench-Query", strconv.Itoa(q.i))
					resp, err := client.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					defer resp.Body.Close()
					raw, _ := io.ReadAll(resp.Body)
					if resp.StatusCode != http.StatusOK {
						b.Fatalf("%s: %d %s", url, resp.StatusCode, raw)
					}
					var out memory.SearchResponse
					if err := json.Unmarshal(raw, &out); err != nil {
						b.Fatal(err)
					}
					return resultIDs(out.Results)
				}
				router := func(q query) []string { return exchange(client, srv.URL+"/v1/search", q) }
				httpFloor := func(q query) []string { return exchange(floorClient, floor.URL+"/v1/search", q) }
				eng := func(q query) []string {
					res, err := engine.Search(ctx, t.scope, params(q))
					if err != nil {
						b.Fatal(err)
					}
					return resultIDs(res.Results)
				}
				rawSQL := func(q query) []string {
					ids, err := rawSearch(ctx, pool, t.scope, mode, q.text, q.vec, limit, t.size)
					if err != nil {
						b.Fatal(err)
					}
					return ids
				}
				ways := []struct {
					name string
					fn   func(query) []string
				}{{"router", router}, {"engine", eng}, {"raw", rawSQL}, {"http", httpFloor}}
				answers := make([][]byte, nq)
				for i, q := range queries {
					res, err := engine.Search(ctx, t.scope, params(q))
					require.NoError(b, err)
					var buf bytes.Buffer // as the router writes it (writeJSON): with the trailing newline
					require.NoError(b, json.NewEncoder(&buf).Encode(res))
					answers[i] = buf.Bytes()
				}
				floorAnswers.Store(&answers)
				misses := resolver.Stats().HandleMisses
				for range b.N {
					for i := range 30 { // warm every connection and plan cache
						for _, w := range ways {
							w.fn(queries[i%nq])
						}
					}
					if statements {
						_, err := admin.Exec(ctx, `SELECT pg_stat_statements_reset()`)
						require.NoError(b, err)
					}
					durs := make([][]time.Duration, len(ways))
					recall := make([]float64, len(ways))
					for i := range samples {
						q := i % nq
						for wi, w := range ways {
							t0 := time.Now()
							got := w.fn(queries[q])
							durs[wi] = append(durs[wi], time.Since(t0))
							recall[wi] += benchRecall(got, truth[q])
						}
					}
					if statements {
						logStatements(ctx, b, admin)
					}
					for wi, w := range ways {
						b.ReportMetric(benchMS(durs[wi], 50), w.name+"_p50_ms")
						b.ReportMetric(benchMS(durs[wi], 99), w.name+"_p99_ms")
						b.ReportMetric(recall[wi]/float64(samples), w.name+"_recall@10")
					}
					for k := range ways {
						w := ways[(first+k)%len(ways)]
						var n atomic.Int64
						goCPU, pgCPU := pgtest.ProcessCPU(os.Getpid(), false), pgtest.ServerCPU(postmaster)
						deadline := time.Now().Add(2 * time.Second)
						var wg sync.WaitGroup
						for c := range 8 {
							wg.Go(func() {
								for i := c; time.Now().Before(deadline); i++ {
									w.fn(queries[i%nq])
									n.Add(1)
								}
							})
						}
						wg.Wait()
						b.ReportMetric(float64(n.Load())/2, w.name+"_qps")
						// CPU per search of this process (the clients, and for the router way the
						// router and its engine too) and of PostgreSQL: where the two cores went.
						b.ReportMetric((pgtest.ProcessCPU(os.Getpid(), false)-goCPU)*1000/float64(n.Load()), w.name+"_go_cpu_ms")
						b.ReportMetric((pgtest.ServerCPU(postmaster)-pgCPU)*1000/float64(n.Load()), w.name+"_pg_cpu_ms")
					}
				}
				// The router way measured the production path: keys and tenants from the resolver's
				// cache, not a registry query per request (HandleMisses counts every registry read).
				// An entry that outlives its TTL (1 minute) is reloaded by each request that finds it
				// expired before the first reload lands: up to one per client, at most twice in an
				// iteration's run.
				require.LessOrEqual(b, resolver.Stats().HandleMisses-misses, uint64(16*b.N), "router requests that read the registry")
			})
		}
	}
}

// logStatements logs the statements pg_stat_statements saw in this database since its reset, most
// expensive first: calls, mean planning and execution time, rows per call and shared buffers.
func logStatements(ctx context.Context, b *testing.B, admin *pgxpool.Pool) {
	b.Helper()
	rows, err := admin.Query(ctx, `SELECT calls, mean_plan_time, mean_exec_time, rows::float8 / calls,
			(shared_blks_hit + shared_blks_read)::float8 / calls, left(regexp_replace(query, '\s+', ' ', 'g'), 160)
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND calls > 0
		ORDER BY total_plan_time + total_exec_time DESC LIMIT 12`)
	require.NoError(b, err)
	defer rows.Close()
	b.Logf("%6s %9s %9s %7s %8s  %s", "calls", "plan ms", "exec ms", "rows", "buffers", "statement")
	for rows.Next() {
		var (
			calls          int64
			plan, exec, rw float64
			bufs           float64
			q              string
		)
		require.NoError(b, rows.Scan(&calls, &plan, &exec, &rw, &bufs, &q))
		b.Logf("%6d %9.3f %9.3f %7.1f %8.1f  %s", calls, plan, exec, rw, bufs, q)
	}
	require.NoError(b, rows.Err())
}

// routingScope is the scope the router gives a request made with key: the handle the resolver
// finds for it and its fence (tenant, location and key), as in the router's scope.
func routingScope(ctx context.Context, b *testing.B, resolver *routing.Resolver, key string) memory.Scope {
	b.Helper()
	h, err := resolver.Resolve(ctx, key)
	require.NoError(b, err)
	keyID, _, err := registry.ParseKey(key)
	require.NoError(b, err)
	return h.KeyScope(keyID, 30*time.Second)
}

func resultIDs(rs []memory.SearchResult) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ChunkID
	}
	return out
}

func benchRecall(got, want []string) float64 {
	if len(want) == 0 {
		return 1
	}
	n := 0
	for _, w := range want {
		if slices.Contains(got, w) {
			n++
		}
	}
	return float64(n) / float64(len(want))
}

func benchMS(ds []time.Duration, p float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return float64(s[max(0, min(i, len(s)-1))].Microseconds()) / 1000
}

// rawSearchEf is hnsw.ef_search of the raw SQL: what a hand-written client would pick for a
// recall@10 of about 0.95 (see docs/benchmarks.md).
var rawSearchEf = cmp.Or(os.Getenv("TENANTMEM_BENCH_RAW_EF"), "100")

// rawSearch is the search as a hand-written client would send it: one pipelined round trip of the
// transaction-local settings and one statement. Vector: exact scan up to 5,000 chunks, else the
// HNSW index with an iterative scan. Text: the engine's lexical ranking. Hybrid: both legs in one
// statement, fused with reciprocal rank fusion (k = 60).
func rawSearch(ctx context.Context, pool *pgxpool.Pool, s memory.Scope, mode, text string, vec []float32, limit, size int) ([]string, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	if _, ok := conn.Conn().TypeMap().TypeForName("vector"); !ok {
		if _, err := conn.Exec(ctx, `SELECT set_config('search_path', 'extensions', false)`); err != nil {
			return nil, err
		}
		if err := pgxvec.RegisterTypes(ctx, conn.Conn()); err != nil {
			return nil, err
		}
		if _, err := conn.Exec(ctx, `RESET search_path`); err != nil {
			return nil, err
		}
	}
	// Tables are schema-qualified, so the statements can be prepared (and cached) before the
	// settings of the same round trip run.
	sch := pgx.Identifier{s.Schema}.Sanitize()
	path := sch + ", extensions"
	q := pgvector.NewVector(vec)
	vecSQL := `SELECT chunk_id::text, content, 1 - (embedding OPERATOR(extensions.<=>) $1) FROM ` + sch + `.chunks
		WHERE owner_id = $2 AND chunk_level = 0 AND embedding IS NOT NULL ORDER BY embedding OPERATOR(extensions.<=>) $1 LIMIT $3`
	if size <= 5000 {
		vecSQL = `WITH c AS MATERIALIZED (SELECT chunk_id, content, embedding OPERATOR(extensions.<=>) $1 AS d FROM ` + sch + `.chunks
			WHERE owner_id = $2 AND chunk_level = 0 AND embedding IS NOT NULL)
			SELECT chunk_id::text, content, 1 - d FROM c ORDER BY d LIMIT $3`
	}
	textSQL := strings.ReplaceAll(rawTextSQL, "{schema}", sch)
	b := &pgx.Batch{}
	b.Queue(`SELECT set_config('search_path', $1, true), set_config('tenantmem.owner_id', $2, true),
		set_config('plan_cache_mode', 'force_custom_plan', true), set_config('hnsw.ef_search', $3, true),
		set_config('hnsw.iterative_scan', 'relaxed_order', true)`, path, s.OwnerID, rawSearchEf)
	switch mode {
	case memory.SearchVector:
		b.Queue(vecSQL, q, s.OwnerID, limit)
	case memory.SearchText:
		b.Queue(textSQL, text, s.OwnerID, limit)
	default:
		b.Queue(vecSQL, q, s.OwnerID, 20)
		b.Queue(textSQL, text, s.OwnerID, 20)
	}
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	read := func() ([]string, error) {
		rows, err := br.Query()
		if err != nil {
			return nil, err
		}
		var ids []string
		for rows.Next() {
			var (
				id, content string
				score       float64
			)
			if err := rows.Scan(&id, &content, &score); err != nil {
				return nil, err
			}
			ids = append(ids, id)
		}
		return ids, rows.Err()
	}
	first, err := read()
	if err != nil || mode != memory.SearchHybrid {
		return first, err
	}
	second, err := read()
	if err != nil {
		return nil, err
	}
	rrf := map[string]float64{}
	for i, id := range first {
		rrf[id] += 0.5 / float64(60+i+1)
	}
	for i, id := range second {
		rrf[id] += 0.5 / float64(60+i+1)
	}
	ids := make([]string, 0, len(rrf))
	for id := range rrf {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		if c := cmp.Compare(rrf[b], rrf[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return ids[:min(len(ids), limit)], nil
}

// benchLoad bulk-loads documents and chunks into schema sch with COPY as the superuser, with the
// HNSW index rebuilt afterwards.
func benchLoad(b *testing.B, url, sch string, docs, chunks [][]any) {
	b.Helper()
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(b, err)
	cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{sch}.Sanitize() + ", extensions"
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error { return pgxvec.RegisterTypes(ctx, c) }
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(b, err)
	defer p.Close()
	start := time.Now()
	_, err = p.Exec(ctx, `DROP INDEX IF EXISTS chunks_embedding_hnsw_idx`)
	require.NoError(b, err)
	_, err = p.CopyFrom(ctx, pgx.Identifier{"documents"},
		[]string{"document_id", "owner_id", "document_name", "document_type", "content_bytes"}, pgx.CopyFromRows(docs))
	require.NoError(b, err)
	// COPY into a staging table, then one INSERT that computes the leaves' tsvectors, so the
	// lexical index triggers see the rows as they see an ingest.
	err = pgx.BeginFunc(ctx, p, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE stage (chunk_id uuid, document_id uuid, owner_id text, chunk_index int,
			chunk_level smallint, content text, content_hash text, token_count int, metadata jsonb, embedding vector) ON COMMIT DROP`); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"stage"}, []string{"chunk_id", "document_id", "owner_id", "chunk_index",
			"chunk_level", "content", "content_hash", "token_count", "metadata", "embedding"}, pgx.CopyFromRows(chunks)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO chunks (chunk_id, document_id, owner_id, chunk_index, chunk_level, content,
				content_hash, token_count, metadata, embedding, search_vector)
			SELECT chunk_id, document_id, owner_id, chunk_index, chunk_level, content, content_hash, token_count, metadata,
				embedding, CASE WHEN chunk_level = 0 THEN to_tsvector('english', content) END FROM stage`)
		return err
	})
	require.NoError(b, err)
	err = pgx.BeginFunc(ctx, p, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL maintenance_work_mem = '1GB'`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE INDEX chunks_embedding_hnsw_idx ON chunks USING hnsw (embedding vector_cosine_ops)`)
		return err
	})
	require.NoError(b, err)
	_, err = p.Exec(ctx, `VACUUM ANALYZE`)
	require.NoError(b, err)
	b.Logf("loaded %d chunks into %s in %s", len(chunks), sch, time.Since(start).Round(time.Millisecond))
}

func benchUUID() string {
	var u [16]byte
	for i := range u {
		u[i] = byte(rand.Uint32())
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// benchVectors draws unit vectors around random centres (see memory's BenchmarkSharedRecall).
type benchVectors struct {
	r       *rand.Rand
	centres [][]float32
	dim     int
}

func newBenchVectors(seed uint64, clusters, dim int) *benchVectors {
	c := &benchVectors{r: rand.New(rand.NewPCG(seed, seed+1)), dim: dim}
	for range clusters {
		v := make([]float32, dim)
		for i := range v {
			v[i] = float32(c.r.NormFloat64())
		}
		embed.Normalize(v)
		c.centres = append(c.centres, v)
	}
	return c
}

func (c *benchVectors) next() []float32 {
	centre := c.centres[c.r.IntN(len(c.centres))]
	v := make([]float32, c.dim)
	sd := 1 / math.Sqrt(float64(c.dim))
	for i := range v {
		v[i] = centre[i] + float32(c.r.NormFloat64()*sd)
	}
	embed.Normalize(v)
	return v
}

// benchWords draws Zipf-distributed words from a 5,000-word vocabulary whose 40 most frequent
// words are English stop words.
type benchWords struct{ z *rand.Zipf }

var benchVocabulary = func() []string {
	r := rand.New(rand.NewPCG(1, 2))
	out := strings.Fields(`the of and to a in is it that for was on are as with be at by this have from or an were
		but not which they their will would there been has had its more can if into`)
	seen := map[string]bool{}
	for _, w := range out {
		seen[w] = true
	}
	for len(out) < 5000 {
		var sb strings.Builder
		for range 3 + r.IntN(7) {
			sb.WriteByte(byte('a' + r.IntN(26)))
		}
		if w := sb.String(); !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}()

func newBenchWords(seed uint64) *benchWords {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return &benchWords{z: rand.NewZipf(r, 1.1, 2, uint64(len(benchVocabulary)-1))}
}

func (g *benchWords) text(n int) string {
	ws := make([]string, n)
	for i := range ws {
		ws[i] = benchVocabulary[g.z.Uint64()]
	}
	return strings.Join(ws, " ")
}
