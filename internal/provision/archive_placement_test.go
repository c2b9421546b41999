package provision_test

import (
	"bytes"
	"context"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// TestRestoreOntoAnotherPlacement backs a tenant up on the control server and restores it on a
// second server in every tier (a copy under another id, then the same id after a delete), with
// the same rows and search results; then backs it up there and restores it home.
func TestRestoreOntoAnotherPlacement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, nil)
	second := pgtest.Second(t)
	p2 := e.addPlacement(t, "p2", second)
	u, err := url.Parse(second.URL())
	require.NoError(t, err)
	u.Path = "/" + p2.Database
	e.servers["p2"] = u.String()

	_, err = e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "traveller", Tier: registry.TierSchema, Placement: "local"})
	require.NoError(t, err)
	e.fill(t, "traveller", "marker-traveller")
	wantSearch := searches(t, e, "traveller", true)
	wantRows := tableDump(t, e, "traveller", true)
	data := backup(t, e, "traveller", provision.BackupParams{})
	// (Searching adds to the history, so every dump is taken before the searches it is compared with.)
	wantCopy := tableDump(t, e, "traveller", false)
	for _, tier := range tiers {
		copyID := "copy-" + string(tier)
		res, err := e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{As: copyID, Tier: tier, Placement: "p2"})
		require.NoError(t, err, tier)
		require.Equal(t, "p2", res.Tenant.PlacementID)
		require.Equal(t, tier, res.Tenant.Tier)
		require.Equal(t, wantCopy, tableDump(t, e, copyID, false), tier)
		require.Equal(t, searches(t, e, "traveller", false), searches(t, e, copyID, false), tier)
	}
	// Without --placement a restore goes where the archive was, when that placement takes it.
	require.NoError(t, e.prov.DeleteTenant(ctx, "traveller"))
	res, err := e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{Tier: registry.TierDatabase})
	require.NoError(t, err)
	require.Equal(t, "local", res.Tenant.PlacementID)
	require.Equal(t, wantRows, tableDump(t, e, "traveller", true))
	// The same id on p2, replacing it, then home again to the shared tier.
	res, err = e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{Tier: registry.TierDatabase, Placement: "p2", Replace: true})
	require.NoError(t, err)
	require.Equal(t, "p2", res.Tenant.PlacementID)
	p2db := res.Tenant.DatabaseName
	require.NotEmpty(t, p2db)
	require.Equal(t, wantRows, tableDump(t, e, "traveller", true))
	require.Equal(t, wantSearch, searches(t, e, "traveller", true))
	wantAway := tableDump(t, e, "traveller", true)
	away := backup(t, e, "traveller", provision.BackupParams{})
	res, err = e.prov.Restore(ctx, bytes.NewReader(away), provision.RestoreParams{Tier: registry.TierShared, Placement: "local", Replace: true})
	require.NoError(t, err)
	require.Equal(t, registry.Location{Tier: registry.TierShared, Placement: "local", Schema: schema.SharedSchema, OwnerID: "traveller"},
		res.Tenant.Location())
	require.Equal(t, wantAway, tableDump(t, e, "traveller", true))
	// The database the replace left behind on p2 is gone.
	var n int
	require.NoError(t, e.dbPool(t, registry.Tenant{PlacementID: "p2"}, false).QueryRow(ctx,
		`SELECT count(*) FROM pg_database WHERE datname = $1`, p2db).Scan(&n))
	require.Zero(t, n)

	// A placement that is not registered, or does not take the tier, is refused before anything.
	before := reachable(t, e.env)
	_, err = e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{As: "nowhere", Placement: "p9"})
	var fe *registry.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "placement", fe.Field)
	require.Equal(t, before, reachable(t, e.env))
}
