package provision_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestRestoreOverQuotaLeavesNothing: a restore that would make a tenant hold more than its quota
// (the deployment's default, or the overrides the archive carries) is refused with a
// *memory.QuotaError naming the quota, in every tier, and leaves nothing a user can reach; an
// archive's overrides come back with a restore that fits.
func TestRestoreOverQuotaLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, nil)
	_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "big", Tier: registry.TierShared})
	require.NoError(t, err)
	e.fill(t, "big", "quota-canary") // 4 documents, about 9 kB of content
	plain := backup(t, e, "big", provision.BackupParams{})
	three := int64(3)
	_, err = e.prov.SetTenantLimits(ctx, "big", registry.TenantLimits{MaxDocuments: &three})
	require.NoError(t, err)
	withLimits := backup(t, e, "big", provision.BackupParams{})
	before := reachable(t, e.env)

	cases := []struct {
		name    string
		quota   limit.Limits
		archive []byte
		field   string
	}{
		// Refused from the manifest, before anything is written.
		{"default documents", limit.Limits{MaxDocuments: 2}, plain, "documents"},
		{"default chunks", limit.Limits{MaxChunks: 3}, plain, "chunks"},
		// Known once the rows are loaded, before the tenant is reachable.
		{"default content bytes", limit.Limits{MaxContentBytes: 1000}, plain, "content_bytes"},
		// The archive's own override (3 documents) applies to the restored tenant.
		{"archived override", limit.Limits{}, withLimits, "documents"},
	}
	for _, c := range cases {
		prov, err := provision.New(provision.Config{Pool: e.pool, Logger: testLogger(t), Quota: c.quota})
		require.NoError(t, err)
		for _, tier := range tiers {
			_, err := prov.Restore(ctx, bytes.NewReader(c.archive), provision.RestoreParams{As: "copy", Tier: tier})
			require.ErrorIs(t, err, memory.ErrQuotaExceeded, "%s, %s", c.name, tier)
			var qe *memory.QuotaError
			require.True(t, errors.As(err, &qe))
			require.Equal(t, c.field, qe.Field, "%s, %s", c.name, tier)
			require.Contains(t, err.Error(), "quota")
			require.Equal(t, before, reachable(t, e.env), "%s, %s: nothing left behind", c.name, tier)
		}
	}

	// The same archives fit a larger quota; the overrides come back with the tenant.
	res, err := e.prov.Restore(ctx, bytes.NewReader(plain), provision.RestoreParams{As: "fits", Tier: registry.TierSchema})
	require.NoError(t, err)
	require.Equal(t, int64(4), res.Rows["documents"])
	l, err := e.prov.GetTenantLimits(ctx, "fits")
	require.NoError(t, err)
	require.True(t, l.IsZero())
	four := int64(4)
	_, err = e.prov.SetTenantLimits(ctx, "big", registry.TenantLimits{MaxDocuments: &four})
	require.NoError(t, err)
	_, err = e.prov.Restore(ctx, bytes.NewReader(backup(t, e, "big", provision.BackupParams{})),
		provision.RestoreParams{As: "fits2", Tier: registry.TierShared})
	require.NoError(t, err)
	l, err = e.prov.GetTenantLimits(ctx, "fits2")
	require.NoError(t, err)
	require.Equal(t, &four, l.MaxDocuments)

	// A replace is held to the quota too, and the tenant it would replace keeps its rows.
	small, err := provision.New(provision.Config{Pool: e.pool, Logger: testLogger(t), Quota: limit.Limits{MaxContentBytes: 1000}})
	require.NoError(t, err)
	want := tableDump(t, e, "fits", true)
	_, err = small.Restore(ctx, bytes.NewReader(plain), provision.RestoreParams{As: "fits", Replace: true})
	require.ErrorIs(t, err, memory.ErrQuotaExceeded)
	require.Equal(t, want, tableDump(t, e, "fits", true))
	tn, err := e.prov.GetTenant(ctx, "fits")
	require.NoError(t, err)
	require.Equal(t, registry.StatusActive, tn.Status)
}
