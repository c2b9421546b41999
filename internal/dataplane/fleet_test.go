package dataplane_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/dataplane"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// credentials of the test servers: they trust loopback, so no password.
func credentials(t *testing.T, lines string) placement.Credentials {
	t.Helper()
	c, err := placement.ParseCredentials(strings.NewReader(lines))
	require.NoError(t, err)
	return c
}

const allCredentials = "*:provisioner:postgres:\n*:router:tenantmem_router:\n"

// fleetDeployment is a deployment with placements on other servers.
func fleetDeployment(t *testing.T, servers map[string]*pgtest.Server) *deployment {
	t.Helper()
	ctx := context.Background()
	d := newDeployment(t)
	prov, err := provision.New(provision.Config{Pool: d.admin, Credentials: credentials(t, allCredentials)})
	require.NoError(t, err)
	t.Cleanup(prov.Close)
	d.prov = prov
	s, err := registry.GetSettings(ctx, d.admin)
	require.NoError(t, err)
	marker := "tenantmem deployment " + s.DeploymentID + " "
	pgtest.DropDatabasesOnCleanup(t, pgtest.ServerURL(), marker)
	for name, srv := range servers {
		u, err := url.Parse(srv.NewDatabase(t))
		require.NoError(t, err)
		pgtest.DropDatabasesOnCleanup(t, srv.URL(), marker)
		_, err = prov.AddPlacement(ctx, provision.PlacementAddParams{Name: name, Host: srv.Host(), Port: srv.Port(),
			Database: strings.TrimPrefix(u.Path, "/")})
		require.NoError(t, err)
	}
	return d
}

type fleetTenant struct {
	id, key string
	tier    registry.Tier
	place   string
}

func createEverywhere(t *testing.T, d *deployment, places ...string) []fleetTenant {
	t.Helper()
	var out []fleetTenant
	for _, pl := range places {
		for _, tier := range []registry.Tier{registry.TierShared, registry.TierSchema, registry.TierDatabase} {
			id := fmt.Sprintf("%s/%s", pl, tier)
			res, err := d.prov.CreateTenant(context.Background(), provision.TenantCreateParams{ID: id, Tier: tier, Placement: pl})
			require.NoError(t, err)
			out = append(out, fleetTenant{id: id, key: res.Key.Key, tier: tier, place: pl})
		}
	}
	return out
}

func readyz(t *testing.T, r *running) (int, map[string]any) {
	t.Helper()
	res, err := http.Get(r.base + "/readyz")
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	var body map[string]any
	require.NoError(t, json.Unmarshal(b, &body), string(b))
	return res.StatusCode, body
}

func placementStatus(body map[string]any, name string) string {
	detail, _ := body["details"].(map[string]any)
	ps, _ := detail["placements"].(map[string]any)
	p, _ := ps[name].(map[string]any)
	s, _ := p["status"].(string)
	return s
}

// TestOneRouterServesEveryTierOnTwoServers: tenants of the three tiers on the control server and
// on a second one, through one router: ingest (with the embedding worker finishing what the
// provider refused at ingest), search, statistics, delete; /readyz lists both placements.
func TestOneRouterServesEveryTierOnTwoServers(t *testing.T) {
	t.Parallel()
	d := fleetDeployment(t, map[string]*pgtest.Server{"p2": pgtest.Second(t)})
	tenants := createEverywhere(t, d, "local", "p2")
	p := newFlaky(t)
	reg := prometheus.NewRegistry()
	r := start(t, dataplane.Config{DatabaseURL: d.routerURL, Provider: p, WorkerInterval: 10 * time.Millisecond,
		PlacementCredentials: credentials(t, "p2:router::\n"), ConnBudget: 8, Registerer: reg})

	p.failures.Store(1 << 30) // every ingest fails to embed (and the worker's tries meanwhile)
	for _, tn := range tenants {
		var added memory.DocumentAddResult
		require.Equal(t, http.StatusCreated, r.call(t, tn.key, http.MethodPost, "/v1/documents", map[string]string{
			"document_name": "doc of " + tn.id, "document_type": "text", "content": "the secret word of " + tn.id + " is plover",
		}, &added), tn.id)
		require.Positive(t, added.EmbeddingsPending)
	}
	p.failures.Store(0) // the provider is back: the worker embeds what ingest queued
	for _, tn := range tenants {
		waitUntil(t, 30*time.Second, "the worker to embed "+tn.id, func() bool {
			var st memory.EmbeddingQueueStats
			require.Equal(t, http.StatusOK, r.call(t, tn.key, http.MethodGet, "/v1/embeddings/status", nil, &st))
			return st.Pending == 0 && st.Failed == 0
		})
		for _, mode := range []string{"vector", "text", "hybrid"} {
			var sr memory.SearchResponse
			require.Equal(t, http.StatusOK, r.call(t, tn.key, http.MethodPost, "/v1/search",
				map[string]string{"query_text": "plover secret word", "search_type": mode}, &sr), tn.id)
			require.Len(t, sr.Results, 1, "%s %s", tn.id, mode)
			require.Contains(t, sr.Results[0].Content, tn.id)
		}
		var stats memory.Statistics
		require.Equal(t, http.StatusOK, r.call(t, tn.key, http.MethodGet, "/v1/statistics", nil, &stats))
		require.EqualValues(t, 1, stats.DocumentCount, tn.id)
	}
	code, body := readyz(t, r)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", placementStatus(body, "local"))
	require.Equal(t, "ok", placementStatus(body, "p2"))
	st := r.svc.Pools().Stats()
	require.LessOrEqual(t, st.BudgetInUse, 8)
	require.Positive(t, st.Pools, "pools for p2 and the tenant databases")
	rec := httptest.NewRecorder()
	httpapi.MetricsHandler(reg, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	metrics := rec.Body.Bytes()
	require.Contains(t, string(metrics), "tenantmem_placement_budget_size 8")
	require.Regexp(t, `tenantmem_placement_pools [1-9]`, string(metrics))

	// Deleting a database-tier tenant drops its database under the router's idle connections;
	// its key stops working, the others go on.
	require.NoError(t, d.prov.DeleteTenant(context.Background(), "p2/database"))
	waitUntil(t, 10*time.Second, "the deleted tenant's key to be refused", func() bool {
		return r.call(t, tenants[5].key, http.MethodGet, "/v1/statistics", nil, nil) == http.StatusUnauthorized
	})
	for _, tn := range tenants[:5] {
		require.Equal(t, http.StatusOK, r.call(t, tn.key, http.MethodGet, "/v1/statistics", nil, nil), tn.id)
	}
}

// TestAPlacementDownAndBack stops the server of one placement while the router serves tenants on
// two: that placement's tenants get 503 with Retry-After, the others are unaffected, /readyz stays
// ready and names the placement, and everything recovers when the server returns. Disabling the
// placement gives 503 too, without touching the server.
func TestAPlacementDownAndBack(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t)
	d := fleetDeployment(t, map[string]*pgtest.Server{"p3": srv})
	tenants := createEverywhere(t, d, "local", "p3")
	r := start(t, dataplane.Config{DatabaseURL: d.routerURL, Provider: newFlaky(t),
		PlacementCredentials: credentials(t, "p3:router::\n"), AcquireWait: time.Second})
	status := func(tn fleetTenant) (int, http.Header) {
		req, err := http.NewRequest(http.MethodGet, r.base+"/v1/statistics", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tn.key)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, res.Header
	}
	for _, tn := range tenants {
		code, _ := status(tn)
		require.Equal(t, http.StatusOK, code, tn.id)
	}

	srv.Stop(t)
	for round := range 3 {
		for _, tn := range tenants {
			code, h := status(tn)
			if tn.place == "p3" {
				require.Equal(t, http.StatusServiceUnavailable, code, "%s round %d", tn.id, round)
				require.NotEmpty(t, h.Get("Retry-After"))
			} else {
				require.Equal(t, http.StatusOK, code, "%s round %d", tn.id, round)
			}
		}
	}
	code, body := readyz(t, r)
	require.Equal(t, http.StatusOK, code, "one placement's trouble does not make the router unready")
	require.Equal(t, "ok", placementStatus(body, "local"))
	require.Equal(t, "unreachable", placementStatus(body, "p3"))

	srv.Start(t)
	for _, tn := range tenants {
		waitUntil(t, 20*time.Second, tn.id+" to be served again", func() bool {
			code, _ := status(tn)
			return code == http.StatusOK
		})
	}
	code, body = readyz(t, r)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", placementStatus(body, "p3"))

	// Disabled: not served, whatever the server's health; served again once active.
	_, err := d.prov.DisablePlacement(context.Background(), "p3")
	require.NoError(t, err)
	for _, tn := range tenants {
		if tn.place != "p3" {
			continue
		}
		waitUntil(t, 10*time.Second, tn.id+" to be refused while disabled", func() bool {
			code, h := status(tn)
			return code == http.StatusServiceUnavailable && h.Get("Retry-After") != ""
		})
	}
	_, body = readyz(t, r)
	require.Equal(t, "disabled", placementStatus(body, "p3"))
	_, err = d.prov.ActivatePlacement(context.Background(), "p3")
	require.NoError(t, err)
	for _, tn := range tenants {
		waitUntil(t, 10*time.Second, tn.id+" to be served after activation", func() bool {
			code, _ := status(tn)
			return code == http.StatusOK
		})
	}
}

// TestMissingRouterCredentialsForAPlacement: the router starts without credentials for p2; its
// tenants get 503 with Retry-After and the log names the placement; local tenants are served.
func TestMissingRouterCredentialsForAPlacement(t *testing.T) {
	t.Parallel()
	d := fleetDeployment(t, map[string]*pgtest.Server{"p2": pgtest.Second(t)})
	tenants := createEverywhere(t, d, "local", "p2")
	logs := &lockedLog{}
	cfg := dataplane.Config{DatabaseURL: d.routerURL, Provider: newFlaky(t)}
	svc, err := dataplane.Open(context.Background(), withLogger(cfg, logs))
	require.NoError(t, err)
	r := serve(t, svc)
	for _, tn := range tenants {
		req, err := http.NewRequest(http.MethodGet, r.base+"/v1/statistics", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tn.key)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if tn.place == "p2" {
			require.Equal(t, http.StatusServiceUnavailable, res.StatusCode, "%s: %s", tn.id, b)
			require.NotEmpty(t, res.Header.Get("Retry-After"))
			require.NotContains(t, string(b), "password", "the tenant learns nothing about the configuration")
		} else {
			require.Equal(t, http.StatusOK, res.StatusCode, "%s: %s", tn.id, b)
		}
	}
	require.Contains(t, logs.String(), `"placement":"p2"`)
	require.Contains(t, logs.String(), "TENANTMEM_PLACEMENT_P2_ROUTER_PASSWORD")
	_, body := readyz(t, r)
	require.Equal(t, "no_credentials", placementStatus(body, "p2"))
}

// lockedLog collects JSON log lines.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestWorkerFindsWorkInTenantDatabasesCreatedAfterStart: the embedding work queue lives in every
// database that holds tenant tables, so a database-tier tenant created while the router runs, on
// either server, has what its ingest queued embedded within seconds (the ingest makes the worker
// read its list of databases again). Before, the worker served the control database's queue
// only, and the work of a tenant database waited for the daily reconciliation.
func TestWorkerFindsWorkInTenantDatabasesCreatedAfterStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := fleetDeployment(t, map[string]*pgtest.Server{"p2": pgtest.Second(t)})
	p := newFlaky(t)
	r := start(t, dataplane.Config{DatabaseURL: d.routerURL, Provider: p, WorkerInterval: 10 * time.Millisecond,
		PlacementCredentials: credentials(t, "p2:router::\n"), ConnBudget: 8})
	var keys []string
	for _, pl := range []string{"local", "p2"} {
		res, err := d.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "late/" + pl, Tier: registry.TierDatabase, Placement: pl})
		require.NoError(t, err)
		keys = append(keys, res.Key.Key)
	}
	for i, key := range keys {
		p.failures.Store(1) // the ingest's call fails; the worker's succeeds
		var added memory.DocumentAddResult
		require.Equal(t, http.StatusCreated, r.call(t, key, http.MethodPost, "/v1/documents", map[string]string{
			"document_name": "n", "document_type": "text", "content": "embedded later by the worker",
		}, &added), i)
		require.Positive(t, added.EmbeddingsPending)
		waitUntil(t, 20*time.Second, "the worker to embed the tenant database's queued chunks", func() bool {
			var st memory.EmbeddingQueueStats
			require.Equal(t, http.StatusOK, r.call(t, key, http.MethodGet, "/v1/embeddings/status", nil, &st))
			return st.Pending == 0 && st.Failed == 0
		})
	}
}

// TestAFrozenPlacementLeavesTheOthersServed: a placement behind a partition (a frozen network, not
// a refused connection) while its tenants keep sending requests. Their fences run on the control
// pool for the whole request; they may hold only their share of it (so the tenants of the control
// database are still served), and a pooled connection to the frozen server fails at BEGIN within
// AcquireWait with 503 and Retry-After, instead of holding everything until the request deadline.
// Found by review: 9 of 10 requests of a local tenant got 503 and a request of the frozen
// placement's tenant took the whole 20 s request deadline.
func TestAFrozenPlacementLeavesTheOthersServed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDeployment(t)
	prov, err := provision.New(provision.Config{Pool: d.admin, Credentials: credentials(t, allCredentials)})
	require.NoError(t, err)
	t.Cleanup(prov.Close)
	d.prov = prov
	s, err := registry.GetSettings(ctx, d.admin)
	require.NoError(t, err)
	srv := pgtest.Second(t)
	pgtest.DropDatabasesOnCleanup(t, srv.URL(), "tenantmem deployment "+s.DeploymentID+" ")
	px, err := pgtest.NewProxy(fmt.Sprintf("%s:%d", srv.Host(), srv.Port()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = px.Close() })
	u, err := url.Parse(srv.NewDatabase(t))
	require.NoError(t, err)
	_, err = prov.AddPlacement(ctx, provision.PlacementAddParams{Name: "far", Host: "127.0.0.1", Port: px.Port(),
		Database: strings.TrimPrefix(u.Path, "/")})
	require.NoError(t, err)
	var far []string
	for i := range 4 {
		res, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: fmt.Sprintf("far-%d", i), Tier: registry.TierDatabase, Placement: "far"})
		require.NoError(t, err)
		far = append(far, res.Key.Key)
	}
	near, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "near", Tier: registry.TierShared, Placement: registry.LocalPlacement})
	require.NoError(t, err)

	r := start(t, dataplane.Config{DatabaseURL: d.routerURL, Provider: newFlaky(t), MaxConns: 4,
		PlacementCredentials: credentials(t, "far:router::\n"), AcquireWait: 2 * time.Second, RequestTimeout: 60 * time.Second})
	for _, k := range far {
		require.Equal(t, http.StatusOK, r.call(t, k, http.MethodGet, "/v1/statistics", nil, nil))
	}
	require.Equal(t, http.StatusOK, r.call(t, near.Key.Key, http.MethodGet, "/v1/statistics", nil, nil))

	px.Freeze(true)
	t.Cleanup(func() { px.Freeze(false) })
	stop := make(chan struct{})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		farSeen = map[int]int{}
	)
	for _, k := range far {
		for range 2 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					c := r.call(t, k, http.MethodGet, "/v1/statistics", nil, nil)
					mu.Lock()
					farSeen[c]++
					mu.Unlock()
				}
			})
		}
	}
	var ready struct {
		Details dataplane.ReadyDetails `json:"details"`
	}
	waitUntil(t, 30*time.Second, "the fences of the frozen placement's tenants to fill their share", func() bool {
		require.Equal(t, http.StatusOK, r.call(t, "", http.MethodGet, "/readyz", nil, &ready))
		return ready.Details.Tiers["elsewhere_fence"].InUse == 3
	})
	codes := map[int]int{}
	for range 10 {
		codes[r.call(t, near.Key.Key, http.MethodGet, "/v1/statistics", nil, nil)]++
	}
	require.Equal(t, map[int]int{http.StatusOK: 10}, codes, "the control database's tenants are served beside a frozen placement")

	// A request of the frozen placement's tenant: 503 with Retry-After within the bounded waits
	// (or 429 with Retry-After when its own requests in flight already fill its share).
	req, err := http.NewRequest(http.MethodGet, r.base+"/v1/statistics", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+far[0])
	began := time.Now()
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	t.Logf("a request of the frozen placement's tenant: %d in %v", res.StatusCode, time.Since(began))
	require.Contains(t, []int{http.StatusServiceUnavailable, http.StatusTooManyRequests}, res.StatusCode)
	require.NotEmpty(t, res.Header.Get("Retry-After"))
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	require.Zero(t, farSeen[http.StatusOK], "nothing is served from a frozen server")
	for code := range farSeen {
		require.Contains(t, []int{http.StatusServiceUnavailable, http.StatusTooManyRequests}, code,
			"a frozen server is 503 (or the tenant's own queue 429), never anything else: %v", farSeen)
	}
	require.Positive(t, farSeen[http.StatusServiceUnavailable])

	px.Freeze(false)
	waitUntil(t, 30*time.Second, "the thawed placement's tenant to be served again", func() bool {
		return r.call(t, far[0], http.MethodGet, "/v1/statistics", nil, nil) == http.StatusOK
	})
}
