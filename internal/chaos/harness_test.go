package chaos_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/dataplane"
	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/pgcluster"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

const dim = 64

type tenant struct {
	id, key string
	tier    registry.Tier
}

// harness is one deployment behind a fault proxy: the router reaches PostgreSQL only through
// the proxy; the provisioner and the checks go direct.
type harness struct {
	t       *testing.T
	db      string
	admin   *pgxpool.Pool
	prov    *provision.Provisioner
	proxy   *pgtest.Proxy
	base    string
	tenants []tenant
	client  *http.Client

	// current is the tally of the scenario that runs, for faults that also send requests.
	current *tally

	mu       sync.Mutex
	verified map[string]bool            // write keys already checked
	acked    map[string]map[string]bool // tenant -> write key -> acknowledged
	pending  map[string]map[string]bool // tenant -> write key never acknowledged
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := context.Background()
	var b [5]byte
	_, _ = rand.Read(b[:])
	db := "chaos_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, cluster.URL("postgres"))
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+db)
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))
	admin, err := pgxpool.New(ctx, cluster.URL(db))
	require.NoError(t, err)
	prov, err := provision.New(provision.Config{Pool: admin})
	require.NoError(t, err)
	_, err = prov.Init(ctx, provision.InitParams{EmbeddingDimension: dim})
	require.NoError(t, err)
	proxy, err := pgtest.NewProxy(net.JoinHostPort("127.0.0.1", strconv.Itoa(cluster.Port())))
	require.NoError(t, err)
	h := &harness{t: t, db: db, admin: admin, prov: prov, proxy: proxy,
		acked: map[string]map[string]bool{}, pending: map[string]map[string]bool{}, verified: map[string]bool{}}
	for _, tn := range []struct {
		id   string
		tier registry.Tier
	}{{"shared-a", registry.TierShared}, {"shared-b", registry.TierShared}, {"schema-a", registry.TierSchema}, {"schema-b", registry.TierSchema}} {
		res, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: tn.id, Tier: tn.tier})
		require.NoError(t, err)
		h.tenants = append(h.tenants, tenant{id: tn.id, key: res.Key.Key, tier: tn.tier})
		h.acked[tn.id], h.pending[tn.id] = map[string]bool{}, map[string]bool{}
	}

	builtin, err := embed.NewBuiltin(dim)
	require.NoError(t, err)
	logger := slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelError}))
	svc, err := dataplane.Open(ctx, routerConfig(pgcluster.URL(proxy.Port(), provision.DefaultRouterRole, db), builtin, logger))
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx, ln) }()
	h.base = "http://" + ln.Addr().String()
	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	h.client = &http.Client{Transport: transport, Timeout: 15 * time.Second}
	t.Cleanup(func() {
		stop()
		require.NoError(t, <-done)
		svc.Close()
		transport.CloseIdleConnections()
		require.NoError(t, proxy.Close())
		admin.Close()
		conn, err := pgx.Connect(ctx, cluster.URL("postgres"))
		if err == nil {
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
			_ = conn.Close(ctx)
		}
	})
	h.waitHealthy()
	return h
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// answer is one HTTP exchange as a client saw it: the status (0 when the connection failed) and
// whether a 503 said when to retry.
type answer struct {
	status     int
	retryAfter bool
	body       []byte
}

func (h *harness) call(tn tenant, method, path string, body any, header map[string]string) answer {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.base+path, rd)
	if err != nil {
		return answer{}
	}
	req.Header.Set("Authorization", "Bearer "+tn.key)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := h.client.Do(req)
	if err != nil {
		return answer{}
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After") != "", body: b}
}

// waitHealthy waits until every tenant is served again after a fault.
func (h *harness) waitHealthy() {
	h.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for _, tn := range h.tenants {
		for h.call(tn, http.MethodGet, "/v1/statistics", nil, nil).status != http.StatusOK {
			if time.Now().After(deadline) {
				h.t.Fatalf("tenant %s is not served again after the fault", tn.id)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// tally counts what clients saw, by operation and status.
type tally struct {
	mu           sync.Mutex
	codes        map[string]map[int]int
	no503Retry   int
	unexpected   []string
	writes       int
	writeRetries int
}

func newTally() *tally { return &tally{codes: map[string]map[int]int{}} }

func (t *tally) add(op string, a answer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.codes[op] == nil {
		t.codes[op] = map[int]int{}
	}
	t.codes[op][a.status]++
	if a.status == http.StatusServiceUnavailable && !a.retryAfter {
		t.no503Retry++
	}
	switch a.status {
	case http.StatusOK, http.StatusCreated, http.StatusServiceUnavailable:
	default:
		if len(t.unexpected) < 20 {
			t.unexpected = append(t.unexpected, fmt.Sprintf("%s -> %d %.200s", op, a.status, a.body))
		}
	}
}

// total is every status seen, all operations together.
func (t *tally) total() map[int]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[int]int{}
	for _, m := range t.codes {
		for c, n := range m {
			out[c] += n
		}
	}
	return out
}

// load runs a mixed load of every tenant (two clients each) until ctx ends: writes (each with an
// Idempotency-Key, retried on 503 or a lost answer until acknowledged or settle passes),
// statistics and text searches.
func (h *harness) load(ctx context.Context, tl *tally, settle time.Duration) {
	var wg sync.WaitGroup
	for _, tn := range h.tenants {
		for w := range 2 {
			wg.Go(func() {
				for seq := 0; ctx.Err() == nil; seq++ {
					switch seq % 4 {
					case 0, 1:
						h.write(ctx, tl, tn, fmt.Sprintf("%s-%d-%d-%d", tn.id, w, time.Now().UnixNano(), seq), settle)
					case 2:
						tl.add("GET /v1/statistics", h.call(tn, http.MethodGet, "/v1/statistics", nil, nil))
					case 3:
						tl.add("POST /v1/search", h.call(tn, http.MethodPost, "/v1/search",
							map[string]any{"query_text": "chaos document", "search_type": "text", "limit": 5}, nil))
					}
				}
			})
		}
	}
	wg.Wait()
}

// write adds one document with an Idempotency-Key, retrying the very same request until it is
// acknowledged (or settle passes after ctx ended), as a careful client does.
func (h *harness) write(ctx context.Context, tl *tally, tn tenant, key string, settle time.Duration) {
	body := map[string]any{"document_name": key, "document_type": "text",
		"content":  "chaos document " + key + ": written under faults, never lost, never doubled.",
		"metadata": map[string]string{"k": key}}
	tl.mu.Lock()
	tl.writes++
	tl.mu.Unlock()
	for attempt := 0; ; attempt++ {
		a := h.call(tn, http.MethodPost, "/v1/documents", body, map[string]string{"Idempotency-Key": key})
		tl.add("POST /v1/documents", a)
		if a.status == http.StatusCreated || a.status == http.StatusOK {
			h.mu.Lock()
			h.acked[tn.id][key] = true
			delete(h.pending[tn.id], key)
			h.mu.Unlock()
			return
		}
		h.mu.Lock()
		h.pending[tn.id][key] = true
		h.mu.Unlock()
		if ctx.Err() != nil && attempt > 0 {
			deadline, _ := ctx.Deadline()
			if time.Since(deadline) > settle {
				return
			}
		}
		tl.mu.Lock()
		tl.writeRetries++
		tl.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
}

// verify checks the truth after a fault: every acknowledged write is stored exactly once, a
// write never acknowledged at most once.
func (h *harness) verify() (acked, unacked int) {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, tn := range h.tenants {
		keys := slices.Sorted(maps.Keys(h.acked[tn.id]))
		for _, k := range keys {
			if !h.verified[k] {
				require.Equal(h.t, 1, h.countKey(tn, k), "tenant %s: acknowledged write %s", tn.id, k)
				h.verified[k] = true
			}
		}
		for k := range h.pending[tn.id] {
			require.LessOrEqual(h.t, h.countKey(tn, k), 1, "tenant %s: unacknowledged write %s doubled", tn.id, k)
		}
		acked += len(keys)
		unacked += len(h.pending[tn.id])
	}
	return acked, unacked
}

func (h *harness) countKey(tn tenant, key string) int {
	h.t.Helper()
	filter, _ := json.Marshal(map[string]string{"k": key})
	for range 50 {
		a := h.call(tn, http.MethodGet, "/v1/documents?limit=1&metadata_filter="+url.QueryEscape(string(filter)), nil, nil)
		if a.status == http.StatusOK {
			var res struct {
				Total int `json:"total"`
			}
			require.NoError(h.t, json.Unmarshal(a.body, &res))
			return res.Total
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Fatalf("cannot count the documents of %s", key)
	return 0
}

// fault is one scenario: run injects the fault until ctx ends and heals it.
type fault struct {
	name string
	run  func(ctx context.Context, h *harness)
}

func faults() []fault {
	return []fault{
		{"connection cuts (proxy closes every connection every 300 ms)", func(ctx context.Context, h *harness) {
			every(ctx, 300*time.Millisecond, h.proxy.Cut)
		}},
		{"backend terminations (pg_terminate_backend of the router's backends every 300 ms)", func(ctx context.Context, h *harness) {
			every(ctx, 300*time.Millisecond, func() {
				_, _ = h.admin.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
					WHERE usename = $1 AND datname = $2`, provision.DefaultRouterRole, h.db)
			})
		}},
		{"network freeze (nothing moves, nothing closes)", func(ctx context.Context, h *harness) {
			h.proxy.Freeze(true)
			<-ctx.Done()
			h.proxy.Freeze(false)
		}},
		{"server down (connections cut and refused)", func(ctx context.Context, h *harness) {
			h.proxy.Refuse(true)
			h.proxy.Cut()
			<-ctx.Done()
			h.proxy.Refuse(false)
		}},
		{"server restart (pg_ctl restart -m fast)", func(_ context.Context, h *harness) {
			if err := cluster.Restart(context.Background()); err != nil {
				h.t.Errorf("restart: %v", err)
			}
		}},
	}
}

func every(ctx context.Context, d time.Duration, f func()) {
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			f()
		}
	}
}

// runScenarios runs each fault in the middle of a load of dur and reports the status codes.
func runScenarios(t *testing.T, dur time.Duration, extra ...fault) {
	h := newHarness(t)
	var report strings.Builder
	fmt.Fprintf(&report, "| fault | 2xx | 503 (all with Retry-After) | 400 | 500 | other | connection errors | writes (retried) | acked / unacked |\n")
	fmt.Fprintf(&report, "|---|---|---|---|---|---|---|---|---|\n")
	only := os.Getenv("TENANTMEM_CHAOS_ONLY") // a substring of the scenarios to run
	for _, f := range append(faults(), extra...) {
		if only != "" && !strings.Contains(f.name, only) {
			continue
		}
		tl := newTally()
		h.current = tl
		ctx, cancel := context.WithTimeout(context.Background(), dur)
		fctx, fcancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { h.load(ctx, tl, 20*time.Second) })
		wg.Go(func() {
			time.Sleep(dur / 4)
			stop := time.AfterFunc(dur/2, fcancel)
			defer stop.Stop()
			f.run(fctx, h)
		})
		wg.Wait()
		fcancel()
		cancel()
		h.waitHealthy()
		acked, unacked := h.verify()
		c := tl.total()
		other := 0
		for code, n := range c {
			switch code {
			case 0, 200, 201, 400, 500, 503:
			default:
				other += n
			}
		}
		fmt.Fprintf(&report, "| %s | %d | %d | %d | %d | %d | %d | %d (%d) | %d / %d |\n", f.name, c[200]+c[201], c[503],
			c[400], c[500], other, c[0], tl.writes, tl.writeRetries, acked, unacked)
		t.Logf("%s: %v", f.name, tl.codes)
		require.Empty(t, tl.unexpected, "%s: answers other than 200, 201 or 503", f.name)
		require.Zero(t, tl.no503Retry, "%s: 503 without Retry-After", f.name)
		require.Zero(t, c[0], "%s: the router itself must stay up and answer", f.name)
	}
	t.Logf("status codes clients saw per fault (%s per scenario):\n%s", dur, report.String())
	if path := os.Getenv("TENANTMEM_CHAOS_REPORT"); path != "" {
		require.NoError(t, os.WriteFile(path, []byte(report.String()), 0o644))
	}
}
