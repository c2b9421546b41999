package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestAdminCreatesTenantsInBulk: POST /v1/bulk/tenants creates many shared-tier tenants in one
// call and answers their keys (once); a second call with overlapping ids creates only the
// missing ones and lists the others; bad input creates nothing and names the entry.
func TestAdminCreatesTenantsInBulk(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, true)
	ctx := context.Background()
	ids := make([]string, 1500)
	for i := range ids {
		ids[i] = fmt.Sprintf("org-%d/ws", i)
	}
	res := e.do(http.MethodPost, "/v1/bulk/tenants", map[string]any{"tier": "shared", "tenant_ids": ids})
	require.Equal(t, http.StatusCreated, res.status, string(res.body))
	var out httpapi.TenantBulkCreateResponse
	res.decode(t, &out)
	require.Equal(t, 1500, out.Created)
	require.Empty(t, out.Existing)
	require.Len(t, out.Tenants, 1500)
	seen := map[string]bool{}
	for _, k := range out.Tenants {
		seen[k.TenantID] = true
	}
	require.Len(t, seen, 1500)
	for _, k := range []int{0, 777, 1499} {
		key := out.Tenants[k]
		got, keyID, err := registry.Authenticate(ctx, e.pool, key.APIKey)
		require.NoError(t, err)
		require.Equal(t, key.TenantID, got.ID, "each key opens its own tenant")
		require.Equal(t, key.KeyID, keyID)
		require.Equal(t, registry.TierShared, got.Tier)
	}

	res = e.do(http.MethodPost, "/v1/bulk/tenants", map[string]any{"tier": "shared", "tenant_ids": []string{"org-1/ws", "new-one"}})
	require.Equal(t, http.StatusCreated, res.status, string(res.body))
	out = httpapi.TenantBulkCreateResponse{}
	res.decode(t, &out)
	require.Equal(t, 1, out.Created)
	require.Equal(t, []string{"org-1/ws"}, out.Existing)
	require.Equal(t, "new-one", out.Tenants[0].TenantID)

	for _, tc := range []struct {
		given       string
		body        string
		expectField string
	}{
		{"an invalid id", `{"tier": "shared", "tenant_ids": ["fine", "not fine"]}`, "tenant_ids[1]"},
		{"a repeated id", `{"tier": "shared", "tenant_ids": ["twice", "twice"]}`, "tenant_ids[1]"},
		{"no ids", `{"tier": "shared", "tenant_ids": []}`, "tenant_ids"},
		{"the schema tier", `{"tier": "schema", "tenant_ids": ["a"]}`, "tier"},
		{"an unknown field", `{"tier": "shared", "tenant_ids": ["a"], "schema": "x"}`, "schema"},
		{"too many ids", `{"tier": "shared", "tenant_ids": ["a"` + strings.Repeat(`, "a"`, httpapi.MaxBulkTenants) + `]}`, "tenant_ids"},
	} {
		res := e.do(http.MethodPost, "/v1/bulk/tenants", tc.body)
		require.Equal(t, http.StatusBadRequest, res.status, "%s: %s", tc.given, res.body)
		require.Equal(t, tc.expectField, res.problem(t).Field, tc.given)
	}
	var n int
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM tenantmem_control.tenants`).Scan(&n))
	require.Equal(t, 1501, n, "bad input created nothing")

	res = e.doWith(http.MethodPost, "/v1/bulk/tenants", `{"tier": "shared", "tenant_ids": ["x"]}`,
		map[string]string{"Authorization": "Bearer wrong-token-0123456789"})
	require.Equal(t, http.StatusUnauthorized, res.status)
	require.Equal(t, 1501, e.tenantCount())
}
