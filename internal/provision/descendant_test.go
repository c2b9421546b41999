package provision_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// TestDescendantsStartEmptyAndResume: bulk descendants (provision.CreateDescendants) and the
// router's create-on-first-use function both clear rows an earlier incarnation of the id left in
// the shared schema, so a re-created descendant starts empty; and a bulk call that stopped after
// registering (rows left in provisioning) is finished by the next call with the same ids.
func TestDescendantsStartEmptyAndResume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "acme", Tier: registry.TierShared})
	require.NoError(t, err)
	creator, err := e.prov.IssueKeyWith(ctx, registry.KeyIssueParams{TenantID: "acme", Delegate: true, CreateDescendants: true})
	require.NoError(t, err)

	// Late commits of earlier incarnations, written as the superuser.
	for _, id := range []string{"acme/bulk", "acme/first-use"} {
		_, err := e.pool.Exec(ctx, `INSERT INTO tenantmem_shared.documents (owner_id, document_name, document_type)
			VALUES ($1, 'late write', 'text')`, id)
		require.NoError(t, err)
	}
	res, err := e.prov.CreateDescendants(ctx, provision.DescendantsCreateParams{Parent: "acme", IDs: []string{"acme/bulk"}})
	require.NoError(t, err)
	require.Equal(t, []string{"acme/bulk"}, res.Created)
	keyID, _, err := registry.ParseKey(creator.Key)
	require.NoError(t, err)
	out, err := registry.CreateDescendant(ctx, e.router, keyID, "acme/first-use")
	require.NoError(t, err)
	require.Equal(t, registry.DescendantCreated, out)
	for _, id := range []string{"acme/bulk", "acme/first-use"} {
		tn, err := e.prov.GetTenant(ctx, id)
		require.NoError(t, err)
		require.Equal(t, registry.StatusActive, tn.Status)
		require.Zero(t, countDocuments(t, e.router, tn), id)
	}

	// A call that stopped after step 1: the row is provisioning.
	_, err = e.pool.Exec(ctx, `INSERT INTO tenantmem_control.tenants (tenant_id, tier, schema_name, status)
		VALUES ('acme/half', 'shared', $1, 'provisioning')`, schema.SharedSchema)
	require.NoError(t, err)
	res, err = e.prov.CreateDescendants(ctx, provision.DescendantsCreateParams{Parent: "acme", IDs: []string{"acme/half", "acme/bulk"}})
	require.NoError(t, err)
	require.Equal(t, []string{"acme/half"}, res.Created)
	require.Equal(t, []string{"acme/bulk"}, res.Existing)
	tn, err := e.prov.GetTenant(ctx, "acme/half")
	require.NoError(t, err)
	require.Equal(t, registry.StatusActive, tn.Status)

	// A deleted parent takes no descendants; nothing is written.
	require.NoError(t, e.prov.DeleteTenant(ctx, "acme"))
	_, err = e.prov.CreateDescendants(ctx, provision.DescendantsCreateParams{Parent: "acme", IDs: []string{"acme/late"}})
	require.ErrorIs(t, err, registry.ErrNotFound)
	_, err = e.prov.GetTenant(ctx, "acme/late")
	require.ErrorIs(t, err, registry.ErrNotFound)
}
