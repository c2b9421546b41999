package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgcluster"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/version"
)

// TestMain fails the binary on leaked goroutines. The dev stack starts its own cluster, so the
// pgtest harness is not needed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestReadmeSession runs `make run`'s stack on free ports with a fresh data folder and plays the
// README's curl session: create a tenant over the provisioning API, then add a document, search
// it and see the statistics over the router.
func TestReadmeSession(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	ready := make(chan Ready, 1)
	var stdout, stderr syncBuffer
	const canary = "canary-password-never-shown" // trust auth ignores it; no output may show it
	// Credentials for the README's second placement, from the environment as a user gives them
	// (the dev cluster trusts loopback: user names, no passwords).
	m := &Main{Stdout: &stdout, Stderr: &stderr, OnReady: func(r Ready) { ready <- r },
		Environ: func() []string {
			return []string{"TENANTMEM_PLACEMENT_EU_2_PROVISIONER_USER=" + pgcluster.Superuser,
				"TENANTMEM_PLACEMENT_EU_2_PROVISIONER_PASSWORD=" + canary,
				"TENANTMEM_PLACEMENT_EU_2_ROUTER_USER=" + provision.DefaultRouterRole}
		}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- m.Run(ctx, []string{"--data-dir", dataDir, "--admin-listen", "127.0.0.1:0", "--router-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"})
	}()
	var r Ready
	select {
	case r = <-ready:
	case err := <-done:
		t.Fatalf("devstack exited: %v\n%s", err, stderr.String())
	case <-time.After(3 * time.Minute):
		t.Fatalf("devstack did not start\n%s", stderr.String())
	}
	defer func() {
		cancel()
		require.NoError(t, <-done, stderr.String())
		t.Logf("devstack logs:\n%s", stderr.String())
		require.NotContains(t, stdout.String()+stderr.String(), canary)
	}()
	require.NotNil(t, r.RouterAddr, "the router runs beside the provisioning API")
	admin, router := "http://"+r.AdminAddr.String(), "http://"+r.RouterAddr.String()
	require.Contains(t, stdout.String(), router)
	token, err := os.ReadFile(filepath.Join(dataDir, "admin-token"))
	require.NoError(t, err)
	require.Equal(t, r.AdminToken, strings.TrimSpace(string(token)))

	client := &http.Client{Timeout: time.Minute}
	defer client.CloseIdleConnections()
	call := func(method, url, bearer, body string, v any) int {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, url, rd)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+bearer)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		t.Logf("%s %s -> %d %.300s", method, url, res.StatusCode, b)
		if v != nil {
			require.NoError(t, json.Unmarshal(b, v), string(b))
		}
		return res.StatusCode
	}

	// The README session.
	var created struct {
		Tenant registry.Tenant    `json:"tenant"`
		Key    registry.IssuedKey `json:"api_key"`
	}
	require.Equal(t, http.StatusCreated, call(http.MethodPost, admin+"/v1/tenants", r.AdminToken,
		`{"tenant_id": "acme/team-1", "tier": "schema"}`, &created))
	require.Equal(t, http.StatusCreated, call(http.MethodPost, admin+"/v1/tenants", r.AdminToken,
		`{"tenant_id": "small-co", "tier": "shared"}`, nil))
	key := created.Key.Key

	var added memory.DocumentAddResult
	require.Equal(t, http.StatusCreated, call(http.MethodPost, router+"/v1/documents", key,
		`{"document_name": "Runbook", "document_type": "markdown", "id_at_origin": "wiki-42",
		  "content": "# Deploys\n\nWe deploy on Tuesdays after the database backup finishes.",
		  "metadata": {"space": "ops"}}`, &added))
	var sr memory.SearchResponse
	require.Equal(t, http.StatusOK, call(http.MethodPost, router+"/v1/search", key,
		`{"query_text": "when do we deploy?", "limit": 5}`, &sr))
	require.NotEmpty(t, sr.Results)
	require.Equal(t, added.DocumentID, sr.Results[0].DocumentID)
	require.Equal(t, http.StatusOK, call(http.MethodGet, router+"/v1/search?q=backup", key, "", &sr))
	require.NotEmpty(t, sr.Results)
	var st memory.Statistics
	require.Equal(t, http.StatusOK, call(http.MethodGet, router+"/v1/statistics", key, "", &st))
	require.Equal(t, 1, st.DocumentCount)
	require.Equal(t, http.StatusOK, call(http.MethodGet, router+"/readyz", "", "", nil))
	require.Equal(t, http.StatusOK, call(http.MethodGet, admin+"/readyz", "", "", nil))

	// More servers (placements): here a second database of the dev cluster stands in for
	// db2.internal, as a user would point make run at a server of theirs.
	pool, err := pgxpool.New(context.Background(), r.DatabaseURL)
	require.NoError(t, err)
	defer pool.Close()
	_, err = pool.Exec(context.Background(), `CREATE DATABASE tenantmem_eu2`)
	require.NoError(t, err)
	dbu, err := url.Parse(r.DatabaseURL)
	require.NoError(t, err)
	port := dbu.Port()
	require.Equal(t, http.StatusCreated, call(http.MethodPost, admin+"/v1/placements", r.AdminToken,
		`{"name": "eu-2", "host": "127.0.0.1", "port": `+port+`, "database": "tenantmem_eu2"}`, nil))
	var big struct {
		Tenant registry.Tenant    `json:"tenant"`
		Key    registry.IssuedKey `json:"api_key"`
	}
	require.Equal(t, http.StatusCreated, call(http.MethodPost, admin+"/v1/tenants", r.AdminToken,
		`{"tenant_id": "big-co", "tier": "database", "placement": "eu-2"}`, &big))
	require.Equal(t, "eu-2", big.Tenant.PlacementID)
	require.Equal(t, http.StatusCreated, call(http.MethodPost, router+"/v1/documents", big.Key.Key,
		`{"document_name": "Plan", "document_type": "text", "content": "Quarterly planning happens in March."}`, nil))
	require.Equal(t, http.StatusOK, call(http.MethodGet, router+"/v1/search?q=planning", big.Key.Key, "", &sr))
	require.NotEmpty(t, sr.Results)
	require.Equal(t, http.StatusOK, call(http.MethodPost, admin+"/v1/placements/eu-2/drain", r.AdminToken, "", nil))

	// Metrics are on their own listener, not on the API ports.
	require.Equal(t, http.StatusNotFound, call(http.MethodGet, router+"/metrics", "", "", nil))
	require.Equal(t, http.StatusNotFound, call(http.MethodGet, admin+"/metrics", "", "", nil))
	res, err := client.Get("http://" + r.MetricsAddr.String() + "/metrics")
	require.NoError(t, err)
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	require.Contains(t, string(b), `server="router"`)
	require.Contains(t, string(b), `server="admin"`)

	// Secure by default: make run does not mark the text match operator LEAKPROOF (its cost
	// would tell a shared-tier tenant whether a word occurs in other tenants' chunks).
	var leakproof bool
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT proleakproof FROM pg_proc WHERE oid = 'pg_catalog.ts_match_vq(tsvector, tsquery)'::regprocedure`).Scan(&leakproof))
	require.False(t, leakproof)
}

// TestVersion: --version prints the build's line and starts nothing.
func TestVersion(t *testing.T) {
	t.Parallel()
	var stdout, stderr syncBuffer
	m := &Main{Stdout: &stdout, Stderr: &stderr}
	dataDir := filepath.Join(t.TempDir(), "never-created")
	require.NoError(t, m.Run(context.Background(), []string{"--version", "--data-dir", dataDir}))
	require.NoDirExists(t, dataDir)
	require.Equal(t, version.Get().Line("devstack")+"\n", stdout.String())
	require.Empty(t, stderr.String())
}
