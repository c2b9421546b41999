package benchscale_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
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
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/dataplane"
	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// knob reads a non-negative integer knob from the environment.
func knob(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

// BenchmarkScale takes one server to TENANTMEM_SCALE_SCHEMA_TENANTS (10,000) schema-tier and
// TENANTMEM_SCALE_SHARED_TENANTS (1,000,000) shared-tier tenants and prints, phase by phase, the
// figures docs/benchmarks.md records (TENANTMEM_SCALE_SCHEMA_TENANTS=0: the shared-tier phases
// only). Other knobs: TENANTMEM_SCALE_BUCKET (1,000 tenants per
// creation bucket), TENANTMEM_SCALE_WORKERS (4 concurrent creators, and migrate parallelism),
// TENANTMEM_SCALE_SEARCHES (2,000 searches per round, 3 rounds), TENANTMEM_SCALE_BIG_DOCS (1,000
// documents in the big shared-tier tenant). It runs only with TENANTMEM_BENCH_SCALE=1: make bench-scale.
func BenchmarkScale(b *testing.B) {
	if os.Getenv("TENANTMEM_BENCH_SCALE") == "" {
		b.Skip("set TENANTMEM_BENCH_SCALE=1 (make bench-scale): it takes about 20 minutes")
	}
	schemaN := knob("TENANTMEM_SCALE_SCHEMA_TENANTS", 10_000)
	sharedN := knob("TENANTMEM_SCALE_SHARED_TENANTS", 1_000_000)
	bucket := knob("TENANTMEM_SCALE_BUCKET", 1000)
	workers := knob("TENANTMEM_SCALE_WORKERS", 4)
	searches := knob("TENANTMEM_SCALE_SEARCHES", 2000)
	bigDocs := knob("TENANTMEM_SCALE_BIG_DOCS", 1000)
	for range b.N {
		s := newScale(b, workers)
		s.report("# fleet scale: %d schema-tier, %d shared-tier tenants, %d creators", schemaN, sharedN, workers)

		// 1. Small and big shared-tier tenants among the first 1,000; searches at 1k tenants.
		small, big := s.searchTenants(bigDocs)
		s.bulk(min(1000, sharedN)-2, "warm")
		before := s.searchRounds(small, big, searches, "1k tenants")

		// 2. Shared-tier tenants in bulk up to the total; searches again, once autovacuum has
		// been through the registry's new million rows (done here, so that it does not fall in
		// the measurement: it is a one-off of the bulk load, not a cost of the tenant count).
		if n := sharedN - s.shared; n > 0 {
			s.bulk(n, "bulk")
			start := time.Now()
			_, err := s.pool.Exec(s.ctx, `VACUUM ANALYZE tenantmem_control.tenants, tenantmem_control.api_keys, tenantmem_control.audit_log`)
			require.NoError(b, err)
			s.report("vacuum analyze of the registry after the bulk load: %s", time.Since(start).Round(time.Millisecond))
		}
		after := s.searchRounds(small, big, searches, fmt.Sprintf("%d shared-tier tenants", s.shared))
		for i, who := range []string{"small", "big"} {
			s.report("search p99 %s tenant: %s at 1k tenants, %s at %d (%+.0f%%)", who, before[i].Round(10*time.Microsecond),
				after[i].Round(10*time.Microsecond), s.shared, 100*(after[i].Seconds()/before[i].Seconds()-1))
		}

		if schemaN == 0 {
			continue
		}
		// 3. Schema-tier tenants, bucket by bucket.
		keys := s.createSchemaTenants(schemaN, bucket)

		// 4. Migrations.
		s.noopMigrate()
		s.additiveMigrate(workers)

		// 5. Router backend memory after a uniform random sweep over every schema.
		s.sweep(keys, recycleDefault)
		s.sweep(keys, -1)

		// 6. Searches with every tenant in place, the router's worker and reconciliation running.
		s.searchRounds(small, big, searches, fmt.Sprintf("%d shared-tier and %d schema-tier tenants", s.shared, schemaN))

		// 7. Deleting tenants at scale.
		s.deletes(keys)
	}
}

const recycleDefault = 0 // dataplane's default MaxConnSchemas

type scale struct {
	b       *testing.B
	ctx     context.Context
	url     string
	pool    *pgxpool.Pool
	prov    *provision.Provisioner
	workers int
	post    int // postmaster pid
	shared  int // shared-tier tenants created so far
	seq     atomic.Int64
}

func newScale(b *testing.B, workers int) *scale {
	b.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(b)
	// Dropping a database of 10,000 schemas takes minutes: do it here, before the harness's own
	// drop (cleanups run last-registered first) and its one-minute timeout.
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		conn, err := pgx.Connect(ctx, pgtest.ServerURL())
		if err != nil {
			b.Errorf("drop: %v", err)
			return
		}
		defer conn.Close(ctx)
		name := url[strings.LastIndexByte(url, '/')+1:]
		name, _, _ = strings.Cut(name, "?")
		if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`); err != nil {
			b.Errorf("drop: %v", err)
		}
	})
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(b, err)
	cfg.MaxConns = int32(2*workers + 4)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	prov, err := provision.New(provision.Config{Pool: pool, Parallelism: workers})
	require.NoError(b, err)
	_, err = prov.Init(ctx, provision.InitParams{})
	require.NoError(b, err)
	var pid int
	require.NoError(b, pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	return &scale{b: b, ctx: ctx, url: url, pool: pool, prov: prov, workers: workers, post: pgtest.Postmaster(pid)}
}

// report prints one line of results (stdout, so that go test shows it as it comes).
func (s *scale) report(format string, args ...any) {
	fmt.Printf("%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// serverCPU is the CPU time the PostgreSQL server used so far (pgtest.ServerCPU).
func (s *scale) serverCPU() float64 { return pgtest.ServerCPU(s.post) }

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	c := slices.Clone(d)
	slices.Sort(c)
	return c[min(len(c)-1, int(float64(len(c))*p))]
}

// bulk creates n shared-tier tenants with the bulk path and reports the rate.
func (s *scale) bulk(n int, prefix string) {
	if n <= 0 {
		return
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%07d", prefix, s.seq.Add(1))
	}
	start, last := time.Now(), time.Now()
	res, err := s.prov.CreateTenants(s.ctx, provision.TenantBulkCreateParams{IDs: ids, Tier: registry.TierShared,
		Progress: func(p provision.BulkProgress) {
			if time.Since(last) > 30*time.Second {
				last = time.Now()
				s.report("  bulk: %d/%d, %.0f/s", p.Done, p.Total, float64(p.Done)/time.Since(start).Seconds())
			}
		}})
	require.NoError(s.b, err)
	require.Equal(s.b, n, res.Created)
	s.shared += n
	el := time.Since(start)
	s.report("bulk registration of %d shared-tier tenants (%d registered): %s, %.0f tenants/s", n, s.shared,
		el.Round(time.Millisecond), float64(n)/el.Seconds())
}

// searchTenants creates the small (20 documents) and big (bigDocs documents) shared-tier tenants
// searched before and after the fleet grows, and returns their keys.
func (s *scale) searchTenants(bigDocs int) (small, big string) {
	b := s.b
	routerPool, err := pgxpool.New(s.ctx, pgtest.WithUser(b, s.url, provision.DefaultRouterRole, ""))
	require.NoError(b, err)
	defer routerPool.Close()
	emb, err := embed.NewBuiltin(provision.DefaultEmbeddingDimension)
	require.NoError(b, err)
	eng, err := memory.New(memory.Config{Embedder: emb})
	require.NoError(b, err)
	var keys []string
	start := time.Now()
	for _, tc := range []struct {
		id   string
		docs int
	}{{"search-small", 20}, {"search-big", bigDocs}} {
		res, err := s.prov.CreateTenant(s.ctx, provision.TenantCreateParams{ID: tc.id, Tier: registry.TierShared})
		require.NoError(b, err)
		s.shared++
		keys = append(keys, res.Key.Key)
		scope := memory.Scope{Pool: routerPool, Schema: res.Tenant.SchemaName, OwnerID: tc.id}
		var next atomic.Int64
		var wg sync.WaitGroup
		for range s.workers {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < tc.docs; i = int(next.Add(1) - 1) {
					_, err := eng.AddDocument(s.ctx, scope, memory.DocumentAddParams{DocumentName: fmt.Sprint("doc ", i),
						DocumentType: "text", Content: text(i, 300)})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	s.report("search tenants loaded: 20 and %d documents of 300 words in %s", bigDocs, time.Since(start).Round(time.Second))
	return keys[0], keys[1]
}

// vocabulary of the synthetic documents and queries.
var vocabulary = func() []string {
	words := strings.Fields(`the of and to in is that for it as with was on be by this are or from at which an
		have not they has but were one all their more can its been there when will would who so if no what about up
		out them some time could into than only other new then also these two may first any like now over such make
		turbine pump valve sensor backup deploy cluster shard replica index query latency budget invoice contract
		customer ticket release schedule migration rollback incident outage alert dashboard metric quota region
		storage network gateway certificate password account billing refund warranty shipment order supplier`)
	for i := range 2000 {
		words = append(words, fmt.Sprintf("term%04d", i))
	}
	return words
}()

// text is the i-th synthetic document: n words drawn with a Zipf-like skew.
func text(i, n int) string {
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	var sb strings.Builder
	for w := range n {
		if w > 0 {
			sb.WriteByte(' ')
		}
		k := int(float64(len(vocabulary)) * rng.Float64() * rng.Float64() * rng.Float64())
		sb.WriteString(vocabulary[k])
		if w%17 == 16 {
			sb.WriteByte('.')
		}
	}
	return sb.String()
}

// router is a running data plane.
type router struct {
	base   string
	svc    *dataplane.Service
	cancel context.CancelFunc
	done   chan error
	client *http.Client
}

func (s *scale) startRouter(maxConnSchemas int) *router { return s.startRouterConns(maxConnSchemas, 0) }

// startRouterConns starts a router with a schema recycle limit (--max-conn-schemas) and a pool size (0: default).
func (s *scale) startRouterConns(maxConnSchemas int, maxConns int32) *router {
	b := s.b
	svc, err := dataplane.Open(s.ctx, dataplane.Config{
		DatabaseURL:    pgtest.WithUser(b, s.url, provision.DefaultRouterRole, ""),
		MaxConnSchemas: maxConnSchemas,
		MaxConns:       maxConns,
		// The request rate unlimited: on a quiet machine one client's sequential searches pass
		// the default 500 per second of a tenant, and a 429 would end the run.
		Limits: limit.Limits{RequestsPerSecond: limit.Unlimited, Burst: limit.Unlimited},
	})
	require.NoError(b, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(s.ctx)
	r := &router{base: "http://" + ln.Addr().String(), svc: svc, cancel: cancel, done: make(chan error, 1),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	go func() { r.done <- svc.Run(ctx, ln) }()
	require.Eventually(b, func() bool {
		res, err := r.client.Get(r.base + "/readyz")
		if err != nil {
			return false
		}
		_ = res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, time.Minute, 50*time.Millisecond)
	return r
}

func (r *router) stop(b *testing.B) {
	r.cancel()
	require.NoError(b, <-r.done)
	r.svc.Close()
	r.client.CloseIdleConnections()
}

func (r *router) call(key, method, path string, body any) (int, error) {
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, r.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := r.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

// searchRounds runs 3 rounds of hybrid searches of the small and the big tenant through a
// router and returns the median of the rounds' p99, for each.
func (s *scale) searchRounds(small, big string, n int, label string) [2]time.Duration {
	// Each phase starts from the same search history (empty, vacuumed): a tenant's history grows
	// to HistoryMaxRows and its prune costs more with it, which has nothing to do with how many
	// tenants are registered.
	_, err := s.pool.Exec(s.ctx, `DELETE FROM tenantmem_shared.search_history WHERE owner_id IN ('search-small', 'search-big')`)
	require.NoError(s.b, err)
	_, err = s.pool.Exec(s.ctx, `VACUUM ANALYZE tenantmem_shared.search_history`)
	require.NoError(s.b, err)
	r := s.startRouter(recycleDefault)
	defer r.stop(s.b)
	time.Sleep(10 * time.Second) // the worker and its reconciliation get going
	// With no client traffic, what do the router (this process) and the server spend? The
	// embedding sweep of every tenant used to keep both busy at a million tenants.
	const idle = 20 * time.Second
	self, server := pgtest.ProcessCPU(os.Getpid(), false), s.serverCPU()
	time.Sleep(idle)
	s.report("idle at %s: router process %.1f%% of a core, PostgreSQL %.1f%% of a core", label,
		100*(pgtest.ProcessCPU(os.Getpid(), false)-self)/idle.Seconds(), 100*(s.serverCPU()-server)/idle.Seconds())
	var out [2]time.Duration
	for i, key := range []string{small, big} {
		var p50s, p99s []time.Duration
		for q := range n / 10 { // warm up
			_, err := r.call(key, http.MethodPost, "/v1/search", map[string]any{"query_text": query(q), "limit": 10})
			require.NoError(s.b, err)
		}
		cpu0, srv0 := pgtest.ProcessCPU(os.Getpid(), false), s.serverCPU()
		for round := range 3 {
			lat := make([]time.Duration, 0, n)
			for q := range n {
				start := time.Now()
				code, err := r.call(key, http.MethodPost, "/v1/search", map[string]any{"query_text": query(round*n + q), "limit": 10})
				require.NoError(s.b, err)
				require.Equal(s.b, http.StatusOK, code)
				lat = append(lat, time.Since(start))
			}
			p50s, p99s = append(p50s, percentile(lat, .5)), append(p99s, percentile(lat, .99))
		}
		// CPU per search (router process and server) is what the tenant count could add to a
		// search; unlike latency, other work on the machine hardly moves it.
		perSearch := (pgtest.ProcessCPU(os.Getpid(), false) - cpu0 + s.serverCPU() - srv0) / float64(3*n)
		s.report("search %s tenant at %s: CPU %.2f ms per search (router process and PostgreSQL)", []string{"small", "big"}[i], label,
			perSearch*1000)
		out[i] = percentile(p99s, .5)
		s.report("search %s tenant at %s: p50 %s, p99 %s (median of 3 rounds of %d; p99s %v; load %s)", []string{"small", "big"}[i], label,
			percentile(p50s, .5).Round(10*time.Microsecond), out[i].Round(10*time.Microsecond), n, roundAll(p99s), loadavg())
	}
	return out
}

// loadavg is the machine's load average over 1, 5 and 15 minutes: other work on the machine
// moves latencies.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func roundAll(d []time.Duration) []time.Duration {
	out := make([]time.Duration, len(d))
	for i, x := range d {
		out[i] = x.Round(100 * time.Microsecond)
	}
	return out
}

func query(i int) string {
	rng := rand.New(rand.NewPCG(uint64(i), 11))
	words := make([]string, 1+rng.IntN(3))
	for k := range words {
		words[k] = vocabulary[int(float64(len(vocabulary))*rng.Float64()*rng.Float64())]
	}
	return strings.Join(words, " ")
}

// run calls fn for lo..lo+n-1 on s.workers goroutines and returns the rate and the server CPU per call (ms).
func (s *scale) run(lo, n int, fn func(int) error) (rate, cpuMS float64) {
	var next atomic.Int64
	next.Store(int64(lo))
	cpu0, start := s.serverCPU(), time.Now()
	var wg sync.WaitGroup
	for range s.workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < lo+n; i = int(next.Add(1) - 1) {
				if err := fn(i); err != nil {
					s.b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.False(s.b, s.b.Failed())
	return float64(n) / time.Since(start).Seconds(), (s.serverCPU() - cpu0) * 1000 / float64(n)
}

// createSchemaTenants creates n schema-tier tenants with s.workers creators and reports, per
// bucket of tenants, the rate, the p50 and p99 of one creation and the server CPU per tenant. It
// returns each tenant's API key.
func (s *scale) createSchemaTenants(n, bucket int) []string {
	keys := make([]string, n)
	var first, last float64
	for lo := 0; lo < n; lo += bucket {
		hi := min(lo+bucket, n)
		var mu sync.Mutex
		var lat []time.Duration
		rate, cpu := s.run(lo, hi-lo, func(i int) error {
			t0 := time.Now()
			res, err := s.prov.CreateTenant(s.ctx, provision.TenantCreateParams{ID: fmt.Sprintf("s%06d", i), Tier: registry.TierSchema})
			if err != nil {
				return err
			}
			mu.Lock()
			lat = append(lat, time.Since(t0))
			keys[i] = res.Key.Key
			mu.Unlock()
			return nil
		})
		if lo == 0 {
			first = rate
		}
		last = rate
		s.report("schema-tier creation %5d-%5d: %5.1f tenants/s, p50 %s, p99 %s, server CPU %.0f ms/tenant", lo, hi, rate,
			percentile(lat, .5).Round(time.Millisecond), percentile(lat, .99).Round(time.Millisecond), cpu)
	}
	s.report("schema-tier creation: last bucket at %.0f%% of the first's rate", 100*last/first)
	return keys
}

func (s *scale) noopMigrate() {
	var took []time.Duration
	for range 3 {
		rep, err := s.prov.Migrate(s.ctx, provision.MigrateParams{})
		require.NoError(s.b, err)
		require.Empty(s.b, rep.Failed)
		require.Zero(s.b, rep.Applied)
		took = append(took, rep.Took)
	}
	s.report("no-op migrate over %d schemas and %d shared-tier tenants: %s (median of %v)", s.schemaCount(), s.shared,
		percentile(took, .5).Round(time.Millisecond), roundAll(took))
	start := time.Now()
	rep, err := s.prov.Migrate(s.ctx, provision.MigrateParams{Verify: true})
	require.NoError(s.b, err)
	require.Zero(s.b, rep.Applied)
	s.report("migrate --verify (reads every schema's version): %s", time.Since(start).Round(time.Millisecond))
}

func (s *scale) schemaCount() int {
	counts, err := registry.CountSchemaTenants(s.ctx, s.pool)
	require.NoError(s.b, err)
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// additiveMigrate applies a synthetic migration (a column, its default and an index on documents)
// to every schema, the shared one included. The default is set apart from ADD COLUMN, as
// docs/scaling.md says migrations must: ADD COLUMN ... DEFAULT reads the whole of pg_index.
func (s *scale) additiveMigrate(parallelism int) {
	m := pgtest.TenantMigrationsWith(s.b, map[string]string{"99990_bench_additive.sql": `-- +goose Up
ALTER TABLE documents ADD COLUMN bench_flag boolean;
ALTER TABLE documents ALTER COLUMN bench_flag SET DEFAULT false;
CREATE INDEX documents_bench_flag_idx ON documents (owner_id, bench_flag);
-- +goose Down
DROP INDEX documents_bench_flag_idx;
ALTER TABLE documents DROP COLUMN bench_flag;
`})
	prov, err := provision.New(provision.Config{Pool: s.pool, Parallelism: parallelism, TenantMigrations: m})
	require.NoError(s.b, err)
	start, last := time.Now(), time.Now()
	cpu0 := s.serverCPU()
	rep, err := prov.Migrate(s.ctx, provision.MigrateParams{Progress: func(p provision.MigrateProgress) {
		if time.Since(last) > 30*time.Second {
			last = time.Now()
			s.report("  migrating: %d/%d, %.1f/s", p.Done, p.Total, float64(p.Done)/time.Since(start).Seconds())
		}
	}})
	require.NoError(s.b, err)
	require.Empty(s.b, rep.Failed)
	s.report("additive migration (ADD COLUMN, SET DEFAULT, CREATE INDEX) of %d schemas at parallelism %d: %s, %.1f schemas/s, server CPU %.0f ms/schema",
		rep.Applied, parallelism, rep.Took.Round(time.Second), float64(rep.Applied)/rep.Took.Seconds(),
		(s.serverCPU()-cpu0)*1000/float64(rep.Applied))
}

// sweep sends one GET /v1/statistics per schema-tier tenant, in random order, from 4 clients,
// through a router with the given schema recycle limit, then reports its backends' memory.
func (s *scale) sweep(keys []string, maxConnSchemas int) {
	r := s.startRouter(maxConnSchemas)
	defer r.stop(s.b)
	order := rand.Perm(len(keys))
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 4 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(order); i = int(next.Add(1) - 1) {
				code, err := r.call(keys[order[i]], http.MethodGet, "/v1/statistics", nil)
				if err != nil || code != http.StatusOK {
					s.b.Errorf("statistics: %d %v", code, err)
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	rows, err := s.pool.Query(s.ctx, `SELECT pid FROM pg_stat_activity WHERE usename = $1 AND datname = current_database()
		AND backend_type = 'client backend'`, provision.DefaultRouterRole)
	require.NoError(s.b, err)
	var pids []int
	for rows.Next() {
		var pid int
		require.NoError(s.b, rows.Scan(&pid))
		pids = append(pids, pid)
	}
	require.NoError(s.b, rows.Err())
	var maxRSS, maxAnon int64
	for _, pid := range pids {
		maxRSS = max(maxRSS, pgtest.ProcStatus(pid, "VmRSS"))
		maxAnon = max(maxAnon, pgtest.ProcStatus(pid, "RssAnon"))
	}
	label := "default recycle limit"
	if maxConnSchemas < 0 {
		label = "no recycling"
	}
	s.report("router sweep of %d schemas (%s, %.0f req/s): %d backends, max VmRSS %d MB, max RssAnon %d MB, %d connections recycled",
		len(keys), label, float64(len(keys))/el.Seconds(), len(pids), maxRSS>>20, maxAnon>>20, r.svc.RecycledConns())
}

// deletes deletes 100 schema-tier and 100 shared-tier tenants, one at a time, and reports the
// time of one deletion.
func (s *scale) deletes(keys []string) {
	for _, tc := range []struct {
		tier registry.Tier
		ids  func(i int) string
	}{
		{registry.TierSchema, func(i int) string { return fmt.Sprintf("s%06d", i) }},
		{registry.TierShared, func(i int) string { return fmt.Sprintf("warm-%07d", i+10) }},
	} {
		var lat []time.Duration
		for i := range min(100, len(keys)) {
			start := time.Now()
			require.NoError(s.b, s.prov.DeleteTenant(s.ctx, tc.ids(i)))
			lat = append(lat, time.Since(start))
		}
		s.report("delete a %s-tier tenant at scale: p50 %s, p99 %s", tc.tier, percentile(lat, .5).Round(time.Millisecond),
			percentile(lat, .99).Round(time.Millisecond))
	}
}
