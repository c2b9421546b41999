package provision

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmem/tenantmem/internal/registry"
)

// PromoteParams is the promotion policy: shared-tier tenants that pass a size threshold move to
// their own schema (docs/archive.md, "Promotion"). It is off unless MinChunks is set.
type PromoteParams struct {
	// MinChunks is the threshold: a shared-tier tenant with at least this many chunks is
	// promoted. Zero disables the policy.
	MinChunks int64
	// MaxMoves bounds the moves of one run (the biggest tenants first). Default 1: moves run one
	// at a time, and a big backlog is worked off over several runs.
	MaxMoves int
	// DryRun lists the candidates and moves nothing.
	DryRun bool
}

// PromotionCandidate is a shared-tier tenant over the threshold.
type PromotionCandidate struct {
	TenantID string `json:"tenant_id"`
	Chunks   int64  `json:"chunks"`
}

// PromoteReport is the outcome of one run of the policy.
type PromoteReport struct {
	// Resumed are moves an earlier run (or an operator) left unfinished, finished first.
	Resumed []MoveResult `json:"resumed,omitempty"`
	// Candidates are the tenants over the threshold, biggest first.
	Candidates []PromotionCandidate `json:"candidates"`
	// Moved are the promotions of this run.
	Moved []MoveResult `json:"moved"`
	// Failed are the moves that failed, by tenant id.
	Failed map[string]string `json:"failed,omitempty"`
}

// Promote runs the promotion policy once: it first finishes the moves left unfinished by a crash
// (with the same guarantees as a manual move), then moves the biggest shared-tier tenants with at
// least MinChunks chunks to the schema tier, at most MaxMoves of them, one after the other. Each
// tenant is measured through its own scope (row-level security binds the provisioner too), with
// the owner index, so a run costs one short query per shared-tier tenant. It is safe to run from
// several provisioners: a tenant has one job at a time.
func (p *Provisioner) Promote(ctx context.Context, params PromoteParams) (PromoteReport, error) {
	rep := PromoteReport{Candidates: []PromotionCandidate{}, Moved: []MoveResult{}}
	if params.MinChunks <= 0 {
		return rep, &registry.FieldError{Field: "min_chunks", Message: "must be positive (0 turns the policy off)"}
	}
	maxMoves := max(params.MaxMoves, 1)
	moves := 0
	fail := func(id string, err error) {
		if rep.Failed == nil {
			rep.Failed = map[string]string{}
		}
		rep.Failed[id] = err.Error()
		p.cfg.Logger.ErrorContext(ctx, "promotion: move failed", slog.String("tenant_id", id), slog.String("error", err.Error()))
	}
	if !params.DryRun {
		jobs, err := registry.ListJobs(ctx, p.pool)
		if err != nil {
			return rep, err
		}
		for _, j := range jobs {
			if j.Kind != registry.JobMove || moves >= maxMoves {
				continue
			}
			res, err := p.ResumeMove(ctx, j.TenantID)
			moves++
			if err != nil {
				fail(j.TenantID, err)
				continue
			}
			rep.Resumed = append(rep.Resumed, res)
		}
	}
	for after := ""; ; {
		ts, err := registry.List(ctx, p.pool, registry.TenantListParams{After: after, Limit: 1000, Tier: registry.TierShared,
			Statuses: []registry.Status{registry.StatusActive}})
		if err != nil {
			return rep, err
		}
		for _, t := range ts {
			n, err := p.chunkCount(ctx, t)
			if err != nil {
				return rep, err
			}
			if n >= params.MinChunks {
				rep.Candidates = append(rep.Candidates, PromotionCandidate{TenantID: t.ID, Chunks: n})
			}
		}
		if len(ts) < 1000 {
			break
		}
		after = ts[len(ts)-1].ID
	}
	slices.SortStableFunc(rep.Candidates, func(a, b PromotionCandidate) int { return cmp.Compare(b.Chunks, a.Chunks) })
	if params.DryRun {
		return rep, nil
	}
	for _, c := range rep.Candidates {
		if moves >= maxMoves || ctx.Err() != nil {
			break
		}
		moves++
		res, err := p.MoveTenant(ctx, c.TenantID, MoveParams{Tier: registry.TierSchema})
		if err != nil {
			fail(c.TenantID, err)
			continue
		}
		if err := registry.Audit(ctx, p.pool, c.TenantID, "promoted", p.cfg.Actor, map[string]any{
			"chunks": c.Chunks, "min_chunks": params.MinChunks}); err != nil {
			return rep, err
		}
		rep.Moved = append(rep.Moved, res)
	}
	return rep, ctx.Err()
}

// ResumeMove finishes a move left unfinished (by a kill), to the destination it was started with.
func (p *Provisioner) ResumeMove(ctx context.Context, tenantID string) (MoveResult, error) {
	job, err := registry.GetJob(ctx, p.pool, tenantID, false)
	if err != nil {
		return MoveResult{}, wrap("resume move", err)
	}
	if job.Kind != registry.JobMove {
		return MoveResult{}, wrap("resume move", fmt.Errorf("tenant %q has a %s in progress: %w", tenantID, job.Kind, registry.ErrConflict))
	}
	var d moveDetail
	if err := json.Unmarshal(job.Detail, &d); err != nil {
		return MoveResult{}, err
	}
	return p.MoveTenant(ctx, tenantID, MoveParams{Tier: d.To.Tier, Placement: d.To.Placement})
}

// chunkCount counts a tenant's chunks through its own scope.
func (p *Provisioner) chunkCount(ctx context.Context, t registry.Tenant) (int64, error) {
	var n int64
	pool, release, err := p.poolFor(ctx, t.Location())
	if err != nil {
		return 0, err
	}
	defer release()
	err = p.inTx(ctx, pool, true, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('tenantmem.owner_id', $1, true)`, t.ID); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM `+ident(t.SchemaName)+`.`+ident("chunks")+` WHERE owner_id = $1`, t.ID).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("provision: size of tenant %q: %w", t.ID, err)
	}
	return n, nil
}

// RunPromotion runs the policy every interval until ctx ends (provisioner serve). Errors are
// logged, never fatal.
func (p *Provisioner) RunPromotion(ctx context.Context, params PromoteParams, interval time.Duration) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rep, err := p.Promote(ctx, params)
		if err != nil && !errors.Is(err, context.Canceled) {
			p.cfg.Logger.ErrorContext(ctx, "promotion run failed", slog.String("error", err.Error()))
		}
		for _, m := range rep.Moved {
			p.cfg.Logger.InfoContext(ctx, "promoted a shared-tier tenant to its own schema", slog.String("tenant_id", m.Tenant.ID),
				slog.Duration("write_pause", m.WritePause))
		}
		t.Reset(interval)
	}
}
