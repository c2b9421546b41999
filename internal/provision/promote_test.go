package provision_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// chunksFor writes documents until the tenant has at least n chunks, and returns its count.
func chunksFor(t *testing.T, e *memEnv, id string, n int) int {
	t.Helper()
	ctx := context.Background()
	s := e.scope(t, id)
	for {
		st, err := e.engine.Statistics(ctx, s)
		require.NoError(t, err)
		if st.ChunkCount >= n {
			return st.ChunkCount
		}
		_, err = e.engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "d", DocumentType: "text",
			Content:  strings.Repeat(fmt.Sprintf("Sentence %d about the tenant %s. ", st.ChunkCount, id), 40),
			Chunking: memory.ChunkingOptions{ChildSize: 30, ParentSize: 120}})
		require.NoError(t, err)
	}
}

func TestPromotionPolicy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var crash atomic.Bool
	e := newMemEnv(t, func(_ context.Context, step, _ string) error {
		if crash.Load() && step == provision.StepMovePaused {
			return errors.New("crash while paused")
		}
		return nil
	})
	sizes := map[string]int{"small": 5, "big": 120, "bigger": 200, "sleepy": 150}
	got := map[string]int{}
	for id, n := range sizes {
		_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: registry.TierShared})
		require.NoError(t, err)
		got[id] = chunksFor(t, e, id, n)
	}
	_, err := e.prov.SuspendTenant(ctx, "sleepy")
	require.NoError(t, err)

	_, err = e.prov.Promote(ctx, provision.PromoteParams{})
	require.Error(t, err, "off without a threshold")

	rep, err := e.prov.Promote(ctx, provision.PromoteParams{MinChunks: 100, DryRun: true})
	require.NoError(t, err)
	require.Equal(t, []provision.PromotionCandidate{{TenantID: "bigger", Chunks: int64(got["bigger"])}, {TenantID: "big", Chunks: int64(got["big"])}},
		rep.Candidates, "biggest first; suspended and small tenants are not candidates")
	require.Empty(t, rep.Moved)

	// One move per run, the biggest first.
	rep, err = e.prov.Promote(ctx, provision.PromoteParams{MinChunks: 100})
	require.NoError(t, err)
	require.Len(t, rep.Moved, 1)
	require.Equal(t, "bigger", rep.Moved[0].Tenant.ID)
	require.Equal(t, registry.TierSchema, rep.Moved[0].Tenant.Tier)

	// A run killed in its move's pause: the next run finishes that move first.
	crash.Store(true)
	rep, err = e.prov.Promote(ctx, provision.PromoteParams{MinChunks: 100})
	require.NoError(t, err)
	require.Contains(t, rep.Failed["big"], "crash while paused")
	crash.Store(false)
	rep, err = e.prov.Promote(ctx, provision.PromoteParams{MinChunks: 100})
	require.NoError(t, err)
	require.Len(t, rep.Resumed, 1)
	require.Equal(t, "big", rep.Resumed[0].Tenant.ID)
	require.Empty(t, rep.Moved, "one move per run")
	for id, tier := range map[string]registry.Tier{"small": registry.TierShared, "big": registry.TierSchema,
		"bigger": registry.TierSchema, "sleepy": registry.TierShared} {
		tn, err := e.prov.GetTenant(ctx, id)
		require.NoError(t, err)
		require.Equal(t, tier, tn.Tier, id)
		st, err := e.engine.Statistics(ctx, e.scope(t, id))
		require.NoError(t, err)
		require.Equal(t, got[id], st.ChunkCount, id)
	}
	events, err := registry.AuditLog(ctx, e.pool, "bigger")
	require.NoError(t, err)
	require.Contains(t, eventNames(events), "promoted")
}
