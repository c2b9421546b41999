package httpapi_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestAdminDelegatedKeysAndDescendants: the keys API issues keys with scopes (and without, when
// there is no body), refuses create_descendants without delegate naming the field, lists the
// scopes, and POST /v1/tenants/{id}/descendants creates shared-tier tenants below the parent
// in bulk, reports the existing ones, and refuses ids outside the subtree, naming the index,
// without writing anything.
func TestAdminDelegatedKeysAndDescendants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAdminEnv(t, true)
	res := e.do(http.MethodPost, "/v1/tenants", map[string]string{"tenant_id": "acme", "tier": "schema", "text_search_config": "simple"})
	require.Equal(t, http.StatusCreated, res.status, "%s", res.body)

	var plain, scoped registry.IssuedKey
	e.do(http.MethodPost, "/v1/tenants/acme/keys", nil).decode(t, &plain)
	require.False(t, plain.Delegate)
	require.False(t, plain.CreateDescendants)
	res = e.do(http.MethodPost, "/v1/tenants/acme/keys", map[string]bool{"delegate": true, "create_descendants": true})
	require.Equal(t, http.StatusCreated, res.status, "%s", res.body)
	res.decode(t, &scoped)
	require.True(t, scoped.Delegate)
	require.True(t, scoped.CreateDescendants)

	res = e.do(http.MethodPost, "/v1/tenants/acme/keys", map[string]bool{"create_descendants": true})
	require.Equal(t, http.StatusBadRequest, res.status)
	require.Equal(t, "create_descendants", res.problem(t).Field)
	res = e.do(http.MethodPost, "/v1/tenants/acme/keys", map[string]any{"delegate": true, "tenant_id": "other"})
	require.Equal(t, http.StatusBadRequest, res.status, "unknown fields are refused")

	var keys httpapi.KeyListResponse
	e.do(http.MethodGet, "/v1/tenants/acme/keys", nil).decode(t, &keys)
	scopes := map[string]bool{}
	for _, k := range keys.Keys {
		scopes[k.KeyID] = k.Delegate && k.CreateDescendants
	}
	require.True(t, scopes[scoped.KeyID])
	require.False(t, scopes[plain.KeyID])
	require.Len(t, keys.Keys, 3, "the first key, the plain one, the scoped one; the refused ones were not issued")

	// Bulk descendants.
	before := e.tenantCount()
	for _, bad := range []struct {
		body  any
		field string
	}{
		{map[string]any{"tenant_ids": []string{"acme/u-1", "acmex/u-2"}}, "tenant_ids[1]"},
		{map[string]any{"tenant_ids": []string{"acme/u-1", "acme"}}, "tenant_ids[1]"},
		{map[string]any{"tenant_ids": []string{"ACME/u-1"}}, "tenant_ids[0]"},
		{map[string]any{"tenant_ids": []string{"acme/u-1", "acme/u-1"}}, "tenant_ids[1]"},
		{map[string]any{"tenant_ids": []string{"acme/../other"}}, "tenant_ids[0]"},
		{map[string]any{"tenant_ids": []string{"acme/u-1/"}}, "tenant_ids[0]"},
		{map[string]any{"tenant_ids": []string{}}, "tenant_ids"},
		{map[string]any{"tenant_ids": []string{"acme/u-1"}, "placement": "Bad Name"}, "placement"},
	} {
		res := e.do(http.MethodPost, "/v1/tenants/acme/descendants", bad.body)
		require.Equal(t, http.StatusBadRequest, res.status, "%v: %s", bad.body, res.body)
		require.Equal(t, bad.field, res.problem(t).Field, "%s", res.body)
	}
	require.Equal(t, before, e.tenantCount(), "a refused batch writes nothing")
	res = e.do(http.MethodPost, "/v1/tenants/ghost/descendants", map[string]any{"tenant_ids": []string{"ghost/u-1"}})
	require.Equal(t, http.StatusNotFound, res.status)

	var out provision.DescendantsCreateResult
	res = e.do(http.MethodPost, "/v1/tenants/acme/descendants", map[string]any{"tenant_ids": []string{"acme/u-1", "acme/team/u-2"}})
	require.Equal(t, http.StatusCreated, res.status, "%s", res.body)
	res.decode(t, &out)
	require.Equal(t, []string{"acme/team/u-2", "acme/u-1"}, out.Created)
	require.Empty(t, out.Existing)
	res = e.do(http.MethodPost, "/v1/tenants/acme/descendants", map[string]any{"tenant_ids": []string{"acme/u-1", "acme/u-3"}})
	require.Equal(t, http.StatusCreated, res.status)
	res.decode(t, &out)
	require.Equal(t, []string{"acme/u-3"}, out.Created)
	require.Equal(t, []string{"acme/u-1"}, out.Existing)
	for _, id := range []string{"acme/u-1", "acme/team/u-2", "acme/u-3"} {
		tn, err := e.prov.GetTenant(ctx, id)
		require.NoError(t, err)
		require.Equal(t, registry.TierShared, tn.Tier)
		require.Equal(t, registry.StatusActive, tn.Status)
		require.Equal(t, "simple", tn.TextSearchConfig, "the parent's text search configuration")
		require.Positive(t, tn.MigrationVersion)
		ks, err := e.prov.ListKeys(ctx, id)
		require.NoError(t, err)
		require.Empty(t, ks, "descendants get no keys of their own")
		evs, err := registry.AuditLog(ctx, e.pool, id)
		require.NoError(t, err)
		require.Equal(t, "created", evs[len(evs)-1].Event)
		require.Equal(t, "acme", evs[len(evs)-1].Detail["parent"])
	}
	// A suspended parent may still be given descendants; a deleted one may not.
	_, err := e.prov.SuspendTenant(ctx, "acme")
	require.NoError(t, err)
	res = e.do(http.MethodPost, "/v1/tenants/acme/descendants", map[string]any{"tenant_ids": []string{"acme/u-5"}})
	require.Equal(t, http.StatusCreated, res.status)
}
