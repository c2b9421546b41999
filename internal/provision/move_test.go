package provision_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// TestMoveBetweenTiers moves a tenant shared -> schema -> shared and finds the same rows and the
// same search results at each stop, with nothing left at the old place.
func TestMoveBetweenTiers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, nil)
	_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "mover", Tier: registry.TierShared})
	require.NoError(t, err)
	_, err = e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "neighbour", Tier: registry.TierShared})
	require.NoError(t, err)
	e.fill(t, "mover", "moving-marker")
	e.fill(t, "neighbour", "neighbour-marker")
	neighbour := tableDump(t, e, "neighbour", true)
	wantSearch := searches(t, e, "mover", true)
	want := tableDump(t, e, "mover", true)

	for _, to := range []registry.Tier{registry.TierSchema, registry.TierShared} {
		var phases []string
		res, err := e.prov.MoveTenant(ctx, "mover", provision.MoveParams{Tier: to, OnPhase: func(p string) { phases = append(phases, p) }})
		require.NoError(t, err, to)
		require.Equal(t, to, res.Tenant.Tier)
		require.Equal(t, []string{"copying", "catching up", "paused", "flipped", "done"}, phases)
		require.Equal(t, want, tableDump(t, e, "mover", true), to)
		require.Equal(t, wantSearch, searches(t, e, "mover", true), to)
		want = tableDump(t, e, "mover", true) // the searches added history
		require.Equal(t, neighbour, tableDump(t, e, "neighbour", true), "the neighbour is untouched")
		// Nothing is left at the old place.
		var docs, capture, logged, schemas int
		require.NoError(t, e.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM tenantmem_shared.documents WHERE owner_id = 'mover' AND $1 = 'schema'),
			(SELECT count(*) FROM tenantmem_shared.tenant_change_capture), (SELECT count(*) FROM tenantmem_shared.tenant_change_log),
			(SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_mover' AND $1 = 'shared')`, string(to)).Scan(&docs, &capture, &logged, &schemas))
		require.Equal(t, []int{0, 0, 0, 0}, []int{docs, capture, logged, schemas}, "shared rows, capture, log, old schema")
		_, err = registry.GetJob(ctx, e.pool, "mover", false)
		require.ErrorIs(t, err, registry.ErrNotFound)
	}

	// Bad input.
	_, err = e.prov.MoveTenant(ctx, "mover", provision.MoveParams{Tier: registry.TierShared})
	var fe *registry.FieldError
	require.ErrorAs(t, err, &fe, "already there")
	require.Contains(t, fe.Message, "already in the shared tier")
	_, err = e.prov.SuspendTenant(ctx, "mover")
	require.NoError(t, err)
	_, err = e.prov.MoveTenant(ctx, "mover", provision.MoveParams{Tier: registry.TierSchema})
	require.ErrorIs(t, err, registry.ErrConflict)
	require.ErrorContains(t, err, "suspended")
	_, err = e.prov.MoveTenant(ctx, "nobody", provision.MoveParams{Tier: registry.TierSchema})
	require.ErrorIs(t, err, registry.ErrNotFound)
	_, err = e.prov.MoveTenant(ctx, "mover", provision.MoveParams{Tier: "gold"})
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "tier", fe.Field)
}

// TestMoveResumesOrRollsBackAfterACrashAtEachStep stops a move before each step, as a kill would:
// the tenant is then served from exactly one place, and a rerun finishes the move (or an abort
// rolls it back, before the flip).
func TestMoveResumesOrRollsBackAfterACrashAtEachStep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var stopAt atomic.Value
	stopAt.Store("")
	e := newMemEnv(t, func(_ context.Context, step, _ string) error {
		if step == stopAt.Load().(string) {
			return errors.New("crash at " + step)
		}
		return nil
	})
	_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "crashy", Tier: registry.TierShared})
	require.NoError(t, err)
	e.fill(t, "crashy", "crash-marker")
	want := tableDump(t, e, "crashy", true)
	tier := registry.TierShared
	other := func() registry.Tier {
		if tier == registry.TierShared {
			return registry.TierSchema
		}
		return registry.TierShared
	}
	steps := []string{provision.StepMoveStarted, provision.StepMoveCapture, provision.StepMoveCopied, provision.StepMovePaused,
		provision.StepMoveFlipped, provision.StepMoveFinished}
	for _, abort := range []bool{false, true} {
		for _, step := range steps {
			name := fmt.Sprintf("%s (abort %t)", step, abort)
			stopAt.Store(step)
			_, err := e.prov.MoveTenant(ctx, "crashy", provision.MoveParams{Tier: other()})
			require.ErrorContains(t, err, "crash at "+step, name)
			stopAt.Store("")
			tn, err := e.prov.GetTenant(ctx, "crashy")
			require.NoError(t, err)
			flipped := step == provision.StepMoveFlipped || step == provision.StepMoveFinished
			if flipped {
				require.Equal(t, other(), tn.Tier, "%s: the registry flipped", name)
			} else {
				require.Equal(t, tier, tn.Tier, "%s: the registry still points at the source", name)
			}
			// Served from exactly that place: the rows are there.
			require.Equal(t, want, tableDump(t, e, "crashy", true), name)
			if abort && !flipped {
				require.NoError(t, e.prov.AbortMove(ctx, "crashy"), name)
				var n int
				require.NoError(t, e.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM tenantmem_shared.tenant_change_capture)
					+ (SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_crashy' AND $1 = 'shared')`, string(tier)).Scan(&n))
				require.Zero(t, n, "%s: the abort left capture or a copy", name)
			} else {
				if abort {
					require.ErrorIs(t, e.prov.AbortMove(ctx, "crashy"), registry.ErrConflict, "%s: a flipped move cannot be aborted", name)
				}
				res, err := e.prov.MoveTenant(ctx, "crashy", provision.MoveParams{Tier: other()})
				require.NoError(t, err, name)
				require.True(t, res.Resumed)
				tier = other()
			}
			tn, err = e.prov.GetTenant(ctx, "crashy")
			require.NoError(t, err)
			require.Equal(t, tier, tn.Tier, name)
			require.Equal(t, want, tableDump(t, e, "crashy", true), name)
			_, err = registry.GetJob(ctx, e.pool, "crashy", false)
			require.ErrorIs(t, err, registry.ErrNotFound, name)
		}
	}
	// Another destination while a move is unfinished is refused.
	stopAt.Store(provision.StepMoveCopied)
	_, err = e.prov.MoveTenant(ctx, "crashy", provision.MoveParams{Tier: other()})
	require.Error(t, err)
	stopAt.Store("")
	_, err = e.prov.MoveTenant(ctx, "crashy", provision.MoveParams{Tier: tier})
	require.Error(t, err)
	_ = schema.SharedSchema
}

// TestDeleteDuringAMoveRemovesBothCopies: a tenant deleted while a move is unfinished leaves
// nothing behind, at its source or at the destination.
func TestDeleteDuringAMoveRemovesBothCopies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, func(_ context.Context, step, _ string) error {
		if step == provision.StepMoveCopied {
			return errors.New("crash")
		}
		return nil
	})
	_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "doomed", Tier: registry.TierShared})
	require.NoError(t, err)
	e.fill(t, "doomed", "doomed-marker")
	_, err = e.prov.MoveTenant(ctx, "doomed", provision.MoveParams{Tier: registry.TierSchema})
	require.ErrorContains(t, err, "crash")
	require.NoError(t, e.prov.DeleteTenant(ctx, "doomed"))
	var n int
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM tenantmem_shared.chunks)
		+ (SELECT count(*) FROM tenantmem_shared.tenant_change_capture) + (SELECT count(*) FROM tenantmem_shared.tenant_change_log)
		+ (SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_doomed') + (SELECT count(*) FROM tenantmem_control.tenant_jobs)`).Scan(&n))
	require.Zero(t, n)
}

// TestMoveCatchUpCarriesEveryKindOfChange stops a move after its snapshot copy, changes the
// tenant in every way the engine can (an upsert that replaces chunks, deletes of one and of many
// documents, the embedding worker filling queued vectors, new documents and searches), then lets
// the move finish: the destination has exactly the source's rows.
func TestMoveCatchUpCarriesEveryKindOfChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var stop atomic.Bool
	stop.Store(true)
	e := newMemEnv(t, func(_ context.Context, step, _ string) error {
		if stop.Load() && step == provision.StepMoveCopied {
			return errors.New("stopped after the copy")
		}
		return nil
	})
	for _, from := range tiers {
		id := "changes-" + string(from)
		to := registry.TierSchema
		if from == registry.TierSchema {
			to = registry.TierShared
		}
		_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: from})
		require.NoError(t, err)
		e.fill(t, id, "before-the-move")
		stop.Store(true)
		_, err = e.prov.MoveTenant(ctx, id, provision.MoveParams{Tier: to})
		require.ErrorContains(t, err, "stopped after the copy")

		s := e.scope(t, id)
		// An upsert: same document, new chunks.
		_, err = e.engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "Runbook v2", DocumentType: "markdown",
			IDAtOrigin: "wiki-42", Content: "# Deploys\n\nNow on Thursdays.\n\n## Rollback\n\nNever."})
		require.NoError(t, err)
		list, err := e.engine.ListDocuments(ctx, s, memory.DocumentListParams{OrderBy: memory.OrderByDocumentName, Order: memory.OrderAsc})
		require.NoError(t, err)
		// Deletes: one by id, then by metadata.
		for _, d := range list.Documents {
			if d.DocumentName == "Mail" {
				require.NoError(t, e.engine.DeleteDocument(ctx, s, memory.DocumentDeleteParams{DocumentID: d.DocumentID}))
			}
		}
		_, err = e.engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "tagged", DocumentType: "text",
			Content: "to be deleted by filter", Metadata: []byte(`{"purge": true}`)})
		require.NoError(t, err)
		_, err = e.engine.DeleteDocuments(ctx, s, memory.DocumentDeleteManyParams{MetadataFilter: []byte(`{"purge": true}`)})
		require.NoError(t, err)
		// The worker fills the queued vectors (updates of chunks, deletes of jobs).
		w, err := memory.NewWorker(memory.WorkerConfig{Embedder: e.emb})
		require.NoError(t, err)
		n, err := w.ProcessScope(ctx, s)
		require.NoError(t, err)
		require.Positive(t, n)
		// New documents, with and without queued work, and a search.
		_, err = e.engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "after", DocumentType: "text", Content: "written after the copy"})
		require.NoError(t, err)
		e.emb.down.Store(true)
		_, err = e.engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "queued after", DocumentType: "text", Content: "queued after the copy"})
		e.emb.down.Store(false)
		require.NoError(t, err)
		_, err = e.engine.Search(ctx, s, memory.SearchParams{QueryText: "thursdays"})
		require.NoError(t, err)
		want := tableDump(t, e, id, true)

		stop.Store(false)
		res, err := e.prov.MoveTenant(ctx, id, provision.MoveParams{Tier: to})
		require.NoError(t, err)
		require.True(t, res.Resumed)
		require.Positive(t, res.Changes)
		require.Equal(t, to, res.Tenant.Tier)
		require.Equal(t, want, tableDump(t, e, id, true), "%s -> %s", from, to)
	}
}

// TestMoveOfADeletingTenantIsRefused: a tenant whose delete stopped half-way cannot be moved.
func TestMoveOfADeletingTenantIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, func(_ context.Context, step, _ string) error {
		if step == provision.StepDeleteMarked {
			return errors.New("crash")
		}
		return nil
	})
	_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "going", Tier: registry.TierShared})
	require.NoError(t, err)
	require.Error(t, e.prov.DeleteTenant(ctx, "going"))
	_, err = e.prov.MoveTenant(ctx, "going", provision.MoveParams{Tier: registry.TierSchema})
	require.ErrorIs(t, err, registry.ErrConflict)
	require.ErrorContains(t, err, "deleting")
	_, err = registry.GetJob(ctx, e.pool, "going", false)
	require.ErrorIs(t, err, registry.ErrNotFound, "nothing was started")
}
