package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/archive"
	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestAdminBackupAndRestoreRoutes streams an archive larger than the API's body limit out of
// GET /v1/tenants/{id}/backup and back into POST /v1/tenants/restore.
func TestAdminBackupAndRestoreRoutes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const limit = 32 << 10
	e := newAdminEnvWith(t, true, func(c *httpapi.AdminConfig) { c.BodyLimit = limit })
	res := e.do(http.MethodPost, "/v1/tenants", map[string]string{"tenant_id": "org/acme", "tier": "schema"})
	require.Equal(t, http.StatusCreated, res.status, string(res.body))
	tn, err := e.prov.GetTenant(ctx, "org/acme")
	require.NoError(t, err)
	b, err := embed.NewBuiltin(provision.DefaultEmbeddingDimension)
	require.NoError(t, err)
	engine, err := memory.New(memory.Config{Embedder: b})
	require.NoError(t, err)
	s := memory.Scope{Pool: e.pool, Schema: tn.SchemaName, OwnerID: tn.ID}
	for i := range 4 {
		var sb strings.Builder
		for j := range 60 {
			fmt.Fprintf(&sb, "Paragraph %d of document %d: deploys, backups and the weather of day %d.\n\n", j, i, i*j)
		}
		_, err := engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: fmt.Sprint("doc ", i), DocumentType: "text",
			Content: sb.String(), Chunking: memory.ChunkingOptions{ChildSize: 20, ParentSize: 200}})
		require.NoError(t, err)
	}

	res = e.do(http.MethodGet, "/v1/tenants/org%2Facme/backup?include_key_hashes=true", nil)
	require.Equal(t, http.StatusOK, res.status, string(res.body))
	require.Equal(t, httpapi.ArchiveContentType, res.header.Get("Content-Type"))
	require.Contains(t, res.header.Get("Content-Disposition"), "org_acme.tmarchive")
	require.Greater(t, len(res.body), limit, "bigger than the body limit")
	big := e.do(http.MethodPost, "/v1/tenants", bytes.Repeat([]byte(" "), limit+1))
	require.Equal(t, http.StatusRequestEntityTooLarge, big.status, "other routes keep the limit")
	data := res.body
	r, err := archive.NewReader(bytes.NewReader(data), archive.ReaderOptions{})
	require.NoError(t, err)
	require.Equal(t, "org/acme", r.Manifest().TenantID)
	require.True(t, r.Manifest().KeyHashes)
	r.Close()

	res = e.do(http.MethodPost, "/v1/tenants/restore?as=copy&tier=shared", data)
	require.Equal(t, http.StatusCreated, res.status, string(res.body))
	var restored provision.RestoreResult
	res.decode(t, &restored)
	require.Equal(t, "copy", restored.Tenant.ID)
	require.Equal(t, registry.TierShared, restored.Tenant.Tier)
	require.NotNil(t, restored.Key)
	require.Equal(t, "/v1/tenants/copy", res.header.Get("Location"))
	stats, err := engine.Statistics(ctx, memory.Scope{Pool: e.pool, Schema: restored.Tenant.SchemaName, OwnerID: "copy"})
	require.NoError(t, err)
	require.Equal(t, 4, stats.DocumentCount)

	res = e.do(http.MethodPost, "/v1/tenants/restore?replace=true", data)
	require.Equal(t, http.StatusOK, res.status, string(res.body))

	res = e.do(http.MethodPost, "/v1/tenants", map[string]string{"tenant_id": "half", "tier": "shared"})
	require.Equal(t, http.StatusCreated, res.status, string(res.body))
	_, err = e.pool.Exec(ctx, `UPDATE tenantmem_control.tenants SET status = 'provisioning' WHERE tenant_id = 'half'`)
	require.NoError(t, err)

	for _, tc := range []struct {
		method, path string
		body         []byte
		status       int
		field, msg   string
	}{
		{http.MethodPost, "/v1/tenants/restore", data, http.StatusConflict, "", `tenant "org/acme" already exists; restore with replace=true`},
		{http.MethodPost, "/v1/tenants/restore?as=half", data, http.StatusConflict, "", `tenant "half" is being created; finish or delete it first`},
		{http.MethodPost, "/v1/tenants/restore?as=trunc", data[:len(data)/2], http.StatusBadRequest, "archive", "truncated"},
		{http.MethodPost, "/v1/tenants/restore?as=foreign", []byte("a,b\n1,2\n"), http.StatusBadRequest, "archive", "not a tenantmem archive"},
		{http.MethodPost, "/v1/tenants/restore?as=x&tier=gold", data, http.StatusBadRequest, "tier", "unknown tier"},
		{http.MethodPost, "/v1/tenants/restore?as=bad%20id", data, http.StatusBadRequest, "as", ""},
		{http.MethodPost, "/v1/tenants/restore?tenant_id=x", data, http.StatusBadRequest, "tenant_id", "unknown query parameter"},
		{http.MethodGet, "/v1/tenants/nobody/backup", nil, http.StatusNotFound, "", `tenant "nobody" not found`},
		{http.MethodGet, "/v1/tenants/org%2Facme/backup?include_key_hashes=maybe", nil, http.StatusBadRequest, "include_key_hashes", ""},
	} {
		var body any
		if tc.body != nil {
			body = tc.body
		}
		res := e.do(tc.method, tc.path, body)
		require.Equal(t, tc.status, res.status, "%s %s: %s", tc.method, tc.path, res.body)
		p := res.problem(t)
		require.Equal(t, tc.field, p.Field, tc.path)
		require.Contains(t, p.Message, tc.msg, tc.path)
	}
	for _, id := range []string{"trunc", "foreign", "x"} {
		_, err := e.prov.GetTenant(ctx, id)
		require.ErrorIs(t, err, registry.ErrNotFound, "a refused restore creates nothing")
	}
	// Without the token, nothing.
	res = e.doWith(http.MethodGet, "/v1/tenants/org%2Facme/backup", nil, nil)
	require.Equal(t, http.StatusUnauthorized, res.status)
}

func TestAdminMoveRoutes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAdminEnv(t, true)
	res := e.do(http.MethodPost, "/v1/tenants", map[string]string{"tenant_id": "org/m", "tier": "shared"})
	require.Equal(t, http.StatusCreated, res.status, string(res.body))

	res = e.do(http.MethodPost, "/v1/tenants/org%2Fm/move", map[string]string{"tier": "schema"})
	require.Equal(t, http.StatusOK, res.status, string(res.body))
	var moved provision.MoveResult
	res.decode(t, &moved)
	require.Equal(t, registry.TierSchema, moved.Tenant.Tier)
	require.Equal(t, registry.TierShared, moved.From.Tier)
	tn, err := e.prov.GetTenant(ctx, "org/m")
	require.NoError(t, err)
	require.Equal(t, registry.TierSchema, tn.Tier)

	res = e.do(http.MethodPost, "/v1/tenants/org%2Fm/move", map[string]string{"tier": "schema"})
	require.Equal(t, http.StatusBadRequest, res.status, string(res.body))
	require.Contains(t, res.problem(t).Message, "already in the schema tier")
	_, err = e.prov.SuspendTenant(ctx, "org/m")
	require.NoError(t, err)
	for _, tc := range []struct {
		path   string
		body   any
		status int
		field  string
		msg    string
	}{
		{"/v1/tenants/org%2Fm/move", map[string]string{"tier": "shared"}, http.StatusConflict, "", "suspended"},
		{"/v1/tenants/org%2Fm/move", map[string]string{"tier": "gold"}, http.StatusBadRequest, "tier", "unknown tier"},
		{"/v1/tenants/org%2Fm/move", map[string]string{"tier": "shared", "tenant_id": "x"}, http.StatusBadRequest, "tenant_id", "unknown field"},
		{"/v1/tenants/nobody/move", map[string]string{"tier": "shared"}, http.StatusNotFound, "", "not found"},
		{"/v1/tenants/org%2Fm/move/abort", nil, http.StatusNotFound, "", "no move in progress"},
	} {
		res := e.do(http.MethodPost, tc.path, tc.body)
		require.Equal(t, tc.status, res.status, "%s %v: %s", tc.path, tc.body, res.body)
		p := res.problem(t)
		require.Equal(t, tc.field, p.Field, tc.path)
		require.Contains(t, p.Message, tc.msg, tc.path)
	}
}
