package provision_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestEverythingButInitRunsAsAnOwnerMember: docs/operations.md tells operators to run the
// provisioner as a plain login that is a member of the owner role, keeping the superuser for
// `init`. Tenant creation in both tiers, suspension, keys, migrate and deletion all work so;
// init refuses with a permission error.
func TestEverythingButInitRunsAsAnOwnerMember(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	var b [4]byte
	_, _ = rand.Read(b[:])
	login := "tenantmem_admin_" + hex.EncodeToString(b[:]) // roles are cluster-wide: one per test run
	ident := pgx.Identifier{login}.Sanitize()
	_, err := e.pool.Exec(ctx, `CREATE ROLE `+ident+` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = e.pool.Exec(context.Background(), `DROP ROLE IF EXISTS `+ident) })
	_, err = e.pool.Exec(ctx, `GRANT `+provision.DefaultOwnerRole+` TO `+ident)
	require.NoError(t, err)

	pool, err := pgxpool.New(ctx, pgtest.WithUser(t, e.url, login, ""))
	require.NoError(t, err)
	defer pool.Close()
	prov, err := provision.New(provision.Config{Pool: pool, Actor: "owner-member"})
	require.NoError(t, err)
	for _, tier := range []registry.Tier{registry.TierSchema, registry.TierShared} {
		_, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "member/" + string(tier), Tier: tier})
		require.NoError(t, err, tier)
	}
	_, err = prov.SuspendTenant(ctx, "member/schema")
	require.NoError(t, err)
	_, err = prov.ResumeTenant(ctx, "member/schema")
	require.NoError(t, err)
	k, err := prov.IssueKey(ctx, "member/schema")
	require.NoError(t, err)
	require.NoError(t, prov.RevokeKey(ctx, "member/schema", k.KeyID))
	rep, err := prov.Migrate(ctx, provision.MigrateParams{})
	require.NoError(t, err)
	require.Empty(t, rep.Failed)
	require.Equal(t, 2, rep.Schemas, "the shared schema and one schema-tier tenant")
	// A lagging schema and --verify go through goose and the default privileges as the member.
	_, err = e.pool.Exec(ctx, `UPDATE tenantmem_control.tenants SET migration_version = 1 WHERE tier = 'schema'`)
	require.NoError(t, err)
	rep, err = prov.Migrate(ctx, provision.MigrateParams{Verify: true})
	require.NoError(t, err)
	require.Empty(t, rep.Failed)
	// Bulk creation, over an id of a deleted tenant too (its leftovers are removed as the owner).
	require.NoError(t, prov.DeleteTenant(ctx, "member/shared"))
	bulk, err := prov.CreateTenants(ctx, provision.TenantBulkCreateParams{IDs: []string{"member/shared", "member/bulk"},
		Tier: registry.TierShared})
	require.NoError(t, err)
	require.Equal(t, 2, bulk.Created)
	require.NoError(t, prov.DeleteTenant(ctx, "member/schema"))
	require.NoError(t, prov.DeleteTenant(ctx, "member/shared"))

	_, err = prov.Init(ctx, provision.InitParams{})
	require.ErrorContains(t, err, "permission denied")
}
