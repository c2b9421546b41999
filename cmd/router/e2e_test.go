package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/client"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/version"
)

const adminToken = "e2e-admin-token-0123456789abcdef"

// TestEndToEnd runs the real provisioner (`init`, then `serve`) and the real router against a
// throwaway database: a tenant is created over the provisioning API, then a document is added,
// searched in every mode and counted over the router's API, all through the Go client. Then the router shuts down gracefully
// while a request is in flight, which still succeeds.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	prov := provisionerBinary(t)

	// provisioner init, as the superuser.
	out, err := exec.Command(prov, "--database-url", url, "init").CombinedOutput()
	require.NoError(t, err, "provisioner init: %s", out)

	// provisioner serve on a free port; its address is in its log.
	adminAddr := make(chan string, 1)
	var provLog syncBuffer
	provLog.onLine = func(line string) {
		var rec struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "provisioner API listening" {
			select {
			case adminAddr <- rec.Addr:
			default:
			}
		}
	}
	serve := exec.Command(prov, "--database-url", url, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
	serve.Env = append(os.Environ(), "TENANTMEM_ADMIN_TOKEN="+adminToken)
	serve.Stdout, serve.Stderr = &provLog, &provLog
	require.NoError(t, serve.Start())
	serveDone := make(chan error, 1)
	go func() { serveDone <- serve.Wait() }()
	t.Cleanup(func() {
		_ = serve.Process.Signal(os.Interrupt)
		require.NoError(t, <-serveDone, "provisioner serve: %s", provLog.String())
	})
	var adminBase string
	select {
	case a := <-adminAddr:
		adminBase = "http://" + a
	case err := <-serveDone:
		serveDone <- err
		t.Fatalf("provisioner serve exited: %v: %s", err, provLog.String())
	case <-time.After(time.Minute):
		t.Fatalf("provisioner serve did not listen: %s", provLog.String())
	}

	// The router, in-process, as the router role.
	routerAddr, metricsAddr := make(chan net.Addr, 1), make(chan net.Addr, 1)
	var stdout, stderr syncBuffer
	m := &Main{Stdout: &stdout, Stderr: &stderr, OnListen: func(a net.Addr) { routerAddr <- a },
		OnMetricsListen: func(a net.Addr) { metricsAddr <- a },
		LookupEnv: mapEnv(map[string]string{
			"TENANTMEM_ROUTER_DATABASE_URL": pgtest.WithUser(t, url, provision.DefaultRouterRole, ""),
			"TENANTMEM_DATABASE_URL":        url, // the superuser: must lose to the router-specific variable
			"TENANTMEM_LOG_LEVEL":           "debug",
		})}
	ctx, shutdown := context.WithCancel(context.Background())
	defer shutdown()
	routerDone := make(chan int, 1)
	go func() {
		routerDone <- m.Run(ctx, []string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"})
	}()
	var base string
	select {
	case a := <-routerAddr:
		base = "http://" + a.String()
	case code := <-routerDone:
		t.Fatalf("router exited with %d: %s", code, stderr.String())
	case <-time.After(time.Minute):
		t.Fatal("router did not listen")
	}

	transport := &http.Transport{ExpectContinueTimeout: time.Minute}
	defer transport.CloseIdleConnections()
	httpClient := &http.Client{Transport: transport, Timeout: time.Minute}
	cctx, cancelCalls := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelCalls()

	// Create a tenant over the provisioning API, with the Go client.
	admin, err := client.NewAdmin(client.Config{BaseURL: adminBase, Token: adminToken, HTTPClient: httpClient})
	require.NoError(t, err)
	created, err := admin.CreateTenant(cctx, client.TenantCreateParams{TenantID: "e2e/acme", Tier: client.TierSchema})
	require.NoError(t, err)
	key := created.APIKey.Key

	// Add a document, search it in every mode, see the statistics.
	r, err := client.NewRouter(client.Config{BaseURL: base, Token: key, HTTPClient: httpClient})
	require.NoError(t, err)
	require.NoError(t, r.Ready(cctx))
	added, err := r.AddDocument(cctx, client.DocumentAddParams{
		DocumentName: "Onboarding guide", DocumentType: "markdown",
		Content: "# Onboarding\n\nNew engineers get a laptop, a mentor and access to the deployment runbook.",
	})
	require.NoError(t, err)
	require.True(t, added.Created)
	require.Positive(t, added.EmbeddingsCreated)
	for _, mode := range []string{client.SearchVector, client.SearchText, client.SearchHybrid} {
		sr, err := r.Search(cctx, client.SearchParams{QueryText: "mentor for new engineers", SearchType: mode})
		require.NoError(t, err, mode)
		require.NotEmpty(t, sr.Results, mode)
		require.Equal(t, added.DocumentID, sr.Results[0].DocumentID, mode)
	}
	st, err := r.Statistics(cctx)
	require.NoError(t, err)
	require.Equal(t, 1, st.DocumentCount)
	require.Equal(t, map[string]int{"markdown": 1}, st.DocumentTypeBreakdown)
	// The admin token is no tenant key, and a tenant key no admin token.
	asAdmin, err := client.NewRouter(client.Config{BaseURL: base, Token: adminToken, HTTPClient: httpClient})
	require.NoError(t, err)
	_, err = asAdmin.Statistics(cctx)
	require.ErrorIs(t, err, client.ErrUnauthorized)
	asTenant, err := client.NewAdmin(client.Config{BaseURL: adminBase, Token: key, HTTPClient: httpClient})
	require.NoError(t, err)
	_, err = asTenant.ListTenants(cctx, client.TenantListParams{})
	require.ErrorIs(t, err, client.ErrUnauthorized)
	// Suspension over the provisioning API reaches the router.
	_, err = admin.SuspendTenant(cctx, "e2e/acme")
	require.NoError(t, err)
	waitUntil(t, 10*time.Second, "403", func() bool {
		_, err := r.Statistics(cctx)
		return errors.Is(err, client.ErrForbidden)
	})
	_, err = admin.ResumeTenant(cctx, "e2e/acme")
	require.NoError(t, err)
	waitUntil(t, 10*time.Second, "200", func() bool {
		_, err := r.Statistics(cctx)
		return err == nil
	})
	// Metrics: not on the tenant-facing port, on their own listener.
	res, err := httpClient.Get(base + "/metrics")
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	require.Equal(t, http.StatusNotFound, res.StatusCode)
	res, err = httpClient.Get("http://" + (<-metricsAddr).String() + "/metrics")
	require.NoError(t, err)
	metrics, err := io.ReadAll(res.Body)
	require.NoError(t, res.Body.Close())
	require.NoError(t, err)
	require.Contains(t, string(metrics), `tenantmem_router_requests_total{code="201",method="POST",route="/v1/documents",tier="schema"} 1`)
	require.Contains(t, string(metrics), "tenantmem_router_cache_entries")
	require.Contains(t, string(metrics), "go_goroutines")
	require.NotContains(t, string(metrics), "e2e/acme")

	// Graceful shutdown: a request whose handler is reading its body when the shutdown starts
	// still completes. "Expect: 100-continue" makes the server say when the handler reads.
	pr, pw := io.Pipe()
	got100 := make(chan struct{})
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(),
		&httptrace.ClientTrace{Got100Continue: func() { close(got100) }}), http.MethodPost, base+"/v1/documents", pr)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Expect", "100-continue")
	type answer struct {
		status int
		body   string
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		res, err := httpClient.Do(req)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		answered <- answer{status: res.StatusCode, body: string(b), err: err}
	}()
	select {
	case <-got100:
	case <-time.After(time.Minute):
		t.Fatal("the handler never read the body")
	}
	shutdown()
	waitUntil(t, 30*time.Second, "the router to stop accepting", func() bool {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	})
	select {
	case code := <-routerDone:
		t.Fatalf("the router exited (%d) with a request in flight", code)
	default:
	}
	_, err = fmt.Fprint(pw, `{"document_name": "late", "document_type": "text", "content": "written during the shutdown"}`)
	require.NoError(t, err)
	require.NoError(t, pw.Close())
	a := <-answered
	require.NoError(t, a.err)
	require.Equal(t, http.StatusCreated, a.status, a.body)
	require.Equal(t, 0, <-routerDone, stderr.String())
	require.Contains(t, stderr.String(), "router stopped")

	// Both documents are in the tenant's schema.
	db, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.QueryRow(context.Background(),
		`SELECT count(*) FROM `+pgx.Identifier{created.Tenant.SchemaName, "documents"}.Sanitize()).Scan(&n))
	require.Equal(t, 2, n)
}

// TestRefusesUnsafeStarts: a superuser login (row-level security would not apply), bad flags and
// an embedding dimension other than the deployment's exit with 2 and one line naming the problem;
// an unreachable database exits with 1.
func TestRefusesUnsafeStarts(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	admin, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	defer admin.Close()
	prov, err := provision.New(provision.Config{Pool: admin})
	require.NoError(t, err)
	_, err = prov.Init(context.Background(), provision.InitParams{})
	require.NoError(t, err)
	routerURL := pgtest.WithUser(t, url, provision.DefaultRouterRole, "")

	r := runRouter(t, map[string]string{"TENANTMEM_DATABASE_URL": url}, "--listen", "127.0.0.1:0")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.message(t), "is a superuser, which bypasses row-level security")

	for _, tc := range []struct {
		given  string
		env    map[string]string
		args   []string
		expect string
	}{
		{"no database URL", nil, nil, "--database-url"},
		{"unknown flag", map[string]string{"TENANTMEM_DATABASE_URL": routerURL}, []string{"--tenant", "x"}, "unknown flag"},
		{"unknown embedder", map[string]string{"TENANTMEM_EMBEDDER": "magic", "TENANTMEM_DATABASE_URL": routerURL}, nil, "--embedder"},
		{"openai without a model", map[string]string{"TENANTMEM_DATABASE_URL": routerURL}, []string{"--embedder", "openai"}, "--embedding-model"},
		{"model without openai", map[string]string{"TENANTMEM_DATABASE_URL": routerURL}, []string{"--embedding-model", "m"}, "--embedder openai"},
		{"bad body limit", map[string]string{"TENANTMEM_DATABASE_URL": routerURL}, []string{"--body-limit", "0"}, "--body-limit"},
		{"bad duration", map[string]string{"TENANTMEM_CACHE_TTL": "soon", "TENANTMEM_DATABASE_URL": routerURL}, nil, "--cache-ttl"},
		{"other dimension", map[string]string{"TENANTMEM_DATABASE_URL": routerURL, "TENANTMEM_EMBEDDING_DIMENSION": "768"},
			[]string{"--listen", "127.0.0.1:0"}, "differs from the deployment's 384"},
	} {
		r := runRouter(t, tc.env, tc.args...)
		require.Equal(t, 2, r.code, tc.given)
		require.Contains(t, r.message(t), tc.expect, tc.given)
	}

	r = runRouter(t, map[string]string{"TENANTMEM_ROUTER_DATABASE_URL": closedPortURL(t)}, "--listen", "127.0.0.1:0")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.message(t), "connect")

	r = runRouter(t, nil, "--help")
	require.Equal(t, 0, r.code)
	for _, flag := range []string{"--database-url", "TENANTMEM_ROUTER_DATABASE_URL", "--listen", "--handle-cache-size", "--key-cache-size",
		"--cache-ttl", "--statement-timeout", "--body-limit", "--max-conns", "--embedder", "--embedding-base-url",
		"--embedding-model", "TENANTMEM_EMBEDDING_API_KEY", "--version"} {
		require.Contains(t, r.stdout, flag)
	}

	// --version needs no database URL: one line naming the build.
	r = runRouter(t, nil, "--version")
	require.Equal(t, 0, r.code)
	require.Equal(t, version.Get().Line("router")+"\n", r.stdout)
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
