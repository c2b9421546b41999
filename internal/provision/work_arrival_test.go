package provision_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestArrivalListsPendingEmbeddings: the embedding work queue is per database, and ingest lists a
// tenant in it; a tenant that arrives with pending jobs (a move's flip, a restore's activation)
// must be listed in its new database's queue too, or its embeddings wait for the daily
// reconciliation. Found when the moves of issue 11 met the per-database queues of issue 12.
func TestArrivalListsPendingEmbeddings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, nil)
	listed := func(id string) int {
		t.Helper()
		tn, err := e.prov.GetTenant(ctx, id)
		require.NoError(t, err)
		var n int
		require.NoError(t, e.dbPool(t, tn, false).QueryRow(ctx,
			`SELECT count(*) FROM tenantmem_placement.embedding_work WHERE owner_id = $1 AND schema_name = $2`,
			id, tn.SchemaName).Scan(&n))
		return n
	}
	_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "arriving", Tier: registry.TierShared})
	require.NoError(t, err)
	e.fill(t, "arriving", "zeppelin") // leaves embedding jobs pending
	require.Equal(t, 1, listed("arriving"), "ingest lists the tenant")

	for _, tier := range []registry.Tier{registry.TierSchema, registry.TierDatabase} {
		_, err := e.prov.MoveTenant(ctx, "arriving", provision.MoveParams{Tier: tier})
		require.NoError(t, err, tier)
		require.Equal(t, 1, listed("arriving"), "after the move to the %s tier", tier)
	}

	data := backup(t, e, "arriving", provision.BackupParams{})
	_, err = e.prov.Restore(ctx, bytes.NewReader(data), provision.RestoreParams{As: "arrived", Tier: registry.TierSchema})
	require.NoError(t, err)
	require.Equal(t, 1, listed("arrived"), "after a restore")
}
