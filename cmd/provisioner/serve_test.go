package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/registry"
)

func TestServeAndShutDown(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, true)
	const token = "serve-test-token-0123456789abcdef"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs, metricsAddrs := make(chan net.Addr, 1), make(chan net.Addr, 1)
	var stdout, stderr syncBuffer
	m := &Main{
		Stdout:          &stdout,
		Stderr:          &stderr,
		LookupEnv:       mapEnv(with(e.env, "TENANTMEM_ADMIN_TOKEN", token, "TENANTMEM_DATABASE_URL", e.url, "TENANTMEM_LOG_LEVEL", "info")),
		OnListen:        func(a net.Addr) { addrs <- a },
		OnMetricsListen: func(a net.Addr) { metricsAddrs <- a },
	}
	done := make(chan int, 1)
	go func() {
		done <- m.Run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"})
	}()
	var base string
	select {
	case a := <-addrs:
		base = "http://" + a.String()
	case code := <-done:
		t.Fatalf("serve exited with %d: %s", code, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start listening")
	}

	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: time.Minute}
	call := func(method, path, body string, auth bool) (int, []byte) {
		t.Helper()
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, base+path, r)
		require.NoError(t, err)
		if auth {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, b
	}

	code, body := call(http.MethodGet, "/healthz", "", false)
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"status": "ok"}`, string(body))
	code, _ = call(http.MethodGet, "/readyz", "", false)
	require.Equal(t, http.StatusOK, code)

	code, _ = call(http.MethodGet, "/v1/tenants", "", false)
	require.Equal(t, http.StatusUnauthorized, code)

	code, body = call(http.MethodPost, "/v1/tenants", `{"tenant_id": "org-1/ws-2", "tier": "schema"}`, true)
	require.Equal(t, http.StatusCreated, code, string(body))
	var created struct {
		Tenant registry.Tenant    `json:"tenant"`
		Key    registry.IssuedKey `json:"api_key"`
	}
	require.NoError(t, json.Unmarshal(body, &created))
	require.Equal(t, "org-1/ws-2", created.Tenant.ID)
	require.NotEmpty(t, created.Key.Key)

	code, body = call(http.MethodGet, "/v1/tenants/"+url.PathEscape("org-1/ws-2"), "", true)
	require.Equal(t, http.StatusOK, code, string(body))
	code, body = call(http.MethodPost, "/v1/tenants/org-1%2Fws-2/suspend", "", true)
	require.Equal(t, http.StatusOK, code, string(body))
	require.Contains(t, string(body), `"status":"suspended"`)
	// Metrics are not on the API port but on their own listener.
	code, _ = call(http.MethodGet, "/metrics", "", false)
	require.Equal(t, http.StatusNotFound, code)
	mres, err := client.Get("http://" + (<-metricsAddrs).String() + "/metrics")
	require.NoError(t, err)
	body, err = io.ReadAll(mres.Body)
	require.NoError(t, err)
	require.NoError(t, mres.Body.Close())
	require.Equal(t, http.StatusOK, mres.StatusCode)
	require.Contains(t, string(body), `tenantmem_http_requests_total{code="201",method="POST",route="/v1/tenants",server="admin"} 1`)
	require.Contains(t, string(body), "go_goroutines")

	// The CLI sees what the API did.
	var shown registry.Tenant
	e.okJSON(&shown, "tenant", "show", "org-1/ws-2", "--json")
	require.Equal(t, registry.StatusSuspended, shown.Status)

	// Cancel: graceful shutdown, exit 0.
	transport.CloseIdleConnections()
	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not shut down")
	}
	require.Contains(t, stderr.String(), `"msg":"provisioner API stopped"`)
	_, err = net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second)
	require.Error(t, err, "nothing listens after shutdown")
}
