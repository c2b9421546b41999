package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/archive"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// Steps of a move, passed to Config.Hook.
const (
	StepMoveStarted  = "move:started"  // job recorded, before the destination is prepared
	StepMoveCapture  = "move:capture"  // change capture on, before the snapshot copy
	StepMoveCopied   = "move:copied"   // snapshot copied, before the catch-up rounds
	StepMovePaused   = "move:paused"   // writes paused, before the last round
	StepMoveFlipped  = "move:flipped"  // registry points at the destination, before the old copy goes
	StepMoveFinished = "move:finished" // old copy removed, before the job is deleted
)

// Move job phases.
const (
	movePreparing  = "preparing" // destination being prepared and copied; the source serves
	moveCatchingUp = "catching_up"
	movePaused     = "paused"  // writes refused while the last round runs
	moveFlipped    = "flipped" // the destination serves; the old copy is being removed
)

// Defaults of a move.
const (
	// DefaultMoveRoundEntries bounds the change log entries of one catch-up round.
	DefaultMoveRoundEntries = 20000
	// DefaultMovePauseBelow is the backlog under which a move pauses writes for its last round:
	// the last round then applies at most this many changes while writes wait.
	DefaultMovePauseBelow = 50
	// DefaultMoveMaxRounds bounds the catch-up rounds before the pause, so a tenant that writes
	// faster than the copy catches up is still moved (with a longer last round).
	DefaultMoveMaxRounds = 50
)

// MoveParams configures [Provisioner.MoveTenant].
type MoveParams struct {
	// Tier and Placement are the destination. Placement applies to the database tier only.
	Tier      registry.Tier
	Placement string
	// Progress, when set, is called after every block of the snapshot copy.
	Progress func(archive.Progress)
	// OnPhase, when set, is called when the move enters a phase ("copying", "catching up",
	// "paused", "flipped", "done").
	OnPhase func(phase string)
}

// MoveResult describes a finished move.
type MoveResult struct {
	Tenant registry.Tenant   `json:"tenant"`
	From   registry.Location `json:"from"`
	// Rows counts the rows copied from the snapshot, per table.
	Rows map[string]int64 `json:"rows"`
	// Rounds is the number of catch-up rounds (the last one with writes paused); Changes the
	// change log entries they applied.
	Rounds  int `json:"rounds"`
	Changes int `json:"changes"`
	// WritePause is how long writes were refused (503): from the pause to the registry flip.
	WritePause time.Duration `json:"write_pause_ns"`
	Took       time.Duration `json:"took_ns"`
	// Resumed is true when the move finished one that an earlier run left unfinished.
	Resumed bool `json:"resumed"`
}

// moveDetail is the detail of a move job.
type moveDetail struct {
	From registry.Location `json:"from"`
	To   registry.Location `json:"to"`
	// Version is the tenant migration version of both copies.
	Version int64 `json:"version"`
}

// ErrMoveUnfinished means a tenant has a move in progress to another destination.
var ErrMoveUnfinished = errors.New("a move of this tenant is unfinished")

// MoveTenant moves an active tenant to another tier (and placement) while it keeps serving
// (docs/archive.md, "Moves"). It turns on change capture in the source, copies a snapshot,
// applies the changes made since in rounds until the backlog is small, pauses writes (the router
// answers them 503 with Retry-After; reads go on), applies the last changes, verifies the row
// counts, flips the registry (a NOTIFY makes every router follow at once) and removes the old
// copy. A kill at any step leaves the tenant served from exactly one place (the registry's); a
// rerun with the same destination finishes the move, and [Provisioner.AbortMove] rolls it back
// if it has not flipped yet.
func (p *Provisioner) MoveTenant(ctx context.Context, tenantID string, params MoveParams) (res MoveResult, err error) {
	start := time.Now()
	if err := schema.ValidateTenantID(tenantID); err != nil {
		return MoveResult{}, &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	if params.Tier == "" {
		return MoveResult{}, &registry.FieldError{Field: "tier", Message: "is required"}
	}
	if params.Placement != "" {
		if err := registry.ValidatePlacementName(params.Placement); err != nil {
			return MoveResult{}, err
		}
	}
	cur, err := p.GetTenant(ctx, tenantID)
	if err != nil {
		return MoveResult{}, wrap("move", err)
	}
	// The destination of a new move (an unfinished one has its own, in its job): on the given
	// placement, else on the tenant's own when it takes the tier, else where the default policy
	// puts a new tenant.
	var to registry.Location
	if _, jerr := registry.GetJob(ctx, p.pool, tenantID, false); errors.Is(jerr, registry.ErrNotFound) {
		if to, err = p.targetLocation(ctx, tenantID, params.Tier, params.Placement, cur.PlacementID); err != nil {
			return MoveResult{}, wrap("move", err)
		}
	} else if jerr != nil {
		return MoveResult{}, wrap("move", jerr)
	}
	phase := func(s string) {
		if params.OnPhase != nil {
			params.OnPhase(s)
		}
	}
	var (
		t   registry.Tenant
		job registry.Job
		d   moveDetail
	)
	err = p.inTx(ctx, p.pool, false, func(tx pgx.Tx) error {
		var err error
		if t, err = registry.GetForUpdate(ctx, tx, tenantID); err != nil {
			return err
		}
		job, err = registry.GetJob(ctx, tx, tenantID, true)
		switch {
		case errors.Is(err, registry.ErrNotFound):
		case err != nil:
			return err
		case job.Kind != registry.JobMove:
			return fmt.Errorf("tenant %q has a %s in progress: %w", tenantID, job.Kind, registry.ErrConflict)
		default:
			if err := json.Unmarshal(job.Detail, &d); err != nil {
				return fmt.Errorf("move job of %q: %w", tenantID, err)
			}
			if d.To.Tier != params.Tier || params.Placement != "" && d.To.Placement != params.Placement {
				return fmt.Errorf("tenant %q: a move to the %s is unfinished; run it again or abort it: %w",
					tenantID, d.To, ErrMoveUnfinished)
			}
			return nil
		}
		// A new move.
		if to.Tier == "" {
			return fmt.Errorf("tenant %q: its job ended meanwhile; run the move again: %w", tenantID, registry.ErrConflict)
		}
		if t.Status != registry.StatusActive {
			return fmt.Errorf("tenant %q is %s; only an active tenant can be moved: %w", tenantID, t.Status, registry.ErrConflict)
		}
		if t.Location() == to {
			return &registry.FieldError{Field: "tier", Message: fmt.Sprintf("tenant %q is already in the %s", tenantID, to)}
		}
		d = moveDetail{From: t.Location(), To: to}
		detail, _ := json.Marshal(d)
		job = registry.Job{TenantID: tenantID, Kind: registry.JobMove, Phase: movePreparing, Detail: detail}
		if err := registry.InsertJob(ctx, tx, job); err != nil {
			return err
		}
		return registry.Audit(ctx, tx, tenantID, "move_started", p.cfg.Actor, map[string]any{"from": d.From, "to": d.To})
	})
	if err != nil {
		return MoveResult{}, wrap("move", err)
	}
	res.From, res.Rows = d.From, map[string]int64{}
	// The console's operations list shows it while it runs, and how it ended (this defer runs
	// after the rollback's below, so it records the final error).
	prog := &rowProgress{next: params.Progress}
	params.Progress = prog.report
	op := p.startOperation(ctx, registry.OperationStartParams{Kind: registry.OperationMove,
		Subject: fmt.Sprintf("%s from the %s to the %s", tenantID, d.From, d.To), Unit: "rows"}, prog.get)
	defer func() { op.finish(ctx, err) }()
	// Interrupted (ctx cancelled: SIGINT, a shutdown) before the flip, the move rolls itself
	// back rather than leave the tenant with capture on, or its writes paused, until a rerun. A
	// kill skips this; the rerun finishes the move.
	defer func() {
		if err != nil && ctx.Err() != nil && !errors.Is(err, errHook) {
			cur, jerr := registry.GetJob(context.WithoutCancel(ctx), p.pool, tenantID, false)
			if jerr == nil && cur.Kind == registry.JobMove && cur.Phase != moveFlipped {
				if rerr := p.rollbackMove(context.WithoutCancel(ctx), tenantID, d); rerr != nil {
					p.cfg.Logger.ErrorContext(ctx, "rolling back an interrupted move", "tenant_id", tenantID, "error", rerr.Error())
				} else {
					err = fmt.Errorf("%w (interrupted: the move was rolled back; the tenant serves from the %s)", err, d.From)
				}
			}
		}
	}()
	res.Resumed = job.StartedAt != (time.Time{})
	if job.Phase == moveFlipped {
		return p.finishMove(ctx, tenantID, d, res, start, phase)
	}
	src, dst, release, err := p.moveTargets(ctx, tenantID, d)
	if err != nil {
		return MoveResult{}, wrap("move", err)
	}
	defer release()
	if job.Phase == movePreparing {
		if err := p.hook(ctx, StepMoveStarted, tenantID); err != nil {
			return MoveResult{}, wrap("move", hookErr(err))
		}
		phase("copying")
		// Both copies at the latest version, the destination empty of the tenant.
		if d.Version, err = p.sameVersion(ctx, tenantID, d); err != nil {
			return MoveResult{}, wrap("move", err)
		}
		if err := p.cleanLocation(ctx, d.To); err != nil {
			return MoveResult{}, wrap("move", err)
		}
		if _, err := p.prepareLocation(ctx, d.To); err != nil {
			return MoveResult{}, wrap("move", err)
		}
		if err := p.setCapture(ctx, src, true, false); err != nil {
			return MoveResult{}, wrap("move", err)
		}
		// Writes that began before capture was on may not be logged: wait for them, so the
		// snapshot that follows sees them.
		if err := p.barrier(ctx, tenantID); err != nil {
			return MoveResult{}, wrap("move", err)
		}
		if err := p.hook(ctx, StepMoveCapture, tenantID); err != nil {
			return MoveResult{}, wrap("move", hookErr(err))
		}
		rows, err := p.copyLocation(ctx, tenantID, d.From, d.To, archive.Manifest{TenantID: tenantID, MigrationVersion: d.Version}, params.Progress)
		if err != nil {
			return MoveResult{}, wrap("move", err)
		}
		res.Rows = rows
		detail, _ := json.Marshal(d)
		if err := registry.SetJobPhase(ctx, p.pool, tenantID, moveCatchingUp, detail); err != nil {
			return MoveResult{}, wrap("move", err)
		}
		job.Phase = moveCatchingUp
		if err := p.hook(ctx, StepMoveCopied, tenantID); err != nil {
			return MoveResult{}, wrap("move", hookErr(err))
		}
	}
	if job.Phase == moveCatchingUp {
		phase("catching up")
		for round := 0; round < DefaultMoveMaxRounds; round++ {
			cr, err := p.catchUpRound(ctx, src, dst)
			if err != nil {
				return MoveResult{}, wrap("move", err)
			}
			res.Rounds++
			res.Changes += cr.Entries
			if cr.Entries < DefaultMovePauseBelow {
				break
			}
		}
		// The pause: from here new writes are refused; then wait for the writes in flight.
		if err := p.setCapture(ctx, src, true, true); err != nil {
			return MoveResult{}, wrap("move", err)
		}
		if err := registry.SetJobPhase(ctx, p.pool, tenantID, movePaused, nil); err != nil {
			return MoveResult{}, wrap("move", err)
		}
		job.Phase = movePaused
	}
	pausedAt := time.Now()
	phase("paused")
	if err := p.hook(ctx, StepMovePaused, tenantID); err != nil {
		return MoveResult{}, wrap("move", hookErr(err))
	}
	if err := p.barrier(ctx, tenantID); err != nil {
		return MoveResult{}, wrap("move", err)
	}
	barrierDone := time.Now()
	// The last rounds: writes are paused and the barrier waited for those in flight, so every
	// change to a paused table is in the log now; a round that reads less than a full batch has
	// seen them all. (Search history is not paused; what it logs after this is left behind.)
	for {
		cr, err := p.catchUpRound(ctx, src, dst)
		if err != nil {
			return MoveResult{}, wrap("move", err)
		}
		res.Rounds++
		res.Changes += cr.Entries
		if cr.Entries < DefaultMoveRoundEntries {
			break
		}
	}
	roundsDone := time.Now()
	if err := p.verifyMove(ctx, src, dst); err != nil {
		// Do not flip a copy that differs: roll back, and the tenant keeps serving from its source.
		if aerr := p.rollbackMove(context.WithoutCancel(ctx), tenantID, d); aerr != nil {
			p.cfg.Logger.ErrorContext(ctx, "rolling back a move that failed its verification", "tenant_id", tenantID, "error", aerr.Error())
		}
		return MoveResult{}, wrap("move", err)
	}
	// The flip, under the tenant's lock: it waits for the requests in flight (reads; writes are
	// refused), and requests that come later find the new location.
	err = p.withTenantLock(ctx, tenantID, func(ctx context.Context, conn *pgxpool.Conn) error {
		return p.inTx(ctx, conn, false, func(tx pgx.Tx) error {
			cur, err := registry.GetForUpdate(ctx, tx, tenantID)
			if err != nil {
				return err
			}
			if cur.Location() != d.From {
				return fmt.Errorf("tenant %q is no longer in the %s: %w", tenantID, d.From, registry.ErrConflict)
			}
			if _, err := registry.SetLocation(ctx, tx, tenantID, d.To, d.Version); err != nil {
				return err
			}
			if err := registry.SetJobPhase(ctx, tx, tenantID, moveFlipped, nil); err != nil {
				return err
			}
			if err := registry.Audit(ctx, tx, tenantID, "moved", p.cfg.Actor, map[string]any{
				"from": d.From, "to": d.To, "rounds": res.Rounds, "changes": res.Changes,
			}); err != nil {
				return err
			}
			return registry.Notify(ctx, tx, registry.Notification{TenantID: tenantID, Event: "moved"})
		})
	})
	if err != nil {
		return MoveResult{}, wrap("move", err)
	}
	res.WritePause = time.Since(pausedAt)
	p.cfg.Logger.DebugContext(ctx, "move: write pause", "tenant_id", tenantID, "barrier", barrierDone.Sub(pausedAt),
		"last_rounds", roundsDone.Sub(barrierDone), "verify_and_flip", time.Since(roundsDone))
	phase("flipped")
	p.listWork(ctx, d.To)
	if err := p.hook(ctx, StepMoveFlipped, tenantID); err != nil {
		return MoveResult{}, wrap("move", hookErr(err))
	}
	return p.finishMove(ctx, tenantID, d, res, start, phase)
}

// finishMove removes the old copy (its capture state first: no request reaches it any more)
// and ends the job.
func (p *Provisioner) finishMove(ctx context.Context, tenantID string, d moveDetail, res MoveResult, start time.Time,
	phase func(string)) (MoveResult, error) {
	if err := p.cleanLocation(ctx, d.From); err != nil {
		return MoveResult{}, wrap("move", err)
	}
	if err := p.hook(ctx, StepMoveFinished, tenantID); err != nil {
		return MoveResult{}, wrap("move", hookErr(err))
	}
	err := p.inTx(ctx, p.pool, false, func(tx pgx.Tx) error {
		if err := registry.DeleteJob(ctx, tx, tenantID); err != nil {
			return err
		}
		return registry.Audit(ctx, tx, tenantID, "move_finished", p.cfg.Actor, nil)
	})
	if err != nil {
		return MoveResult{}, wrap("move", err)
	}
	t, err := registry.Get(ctx, p.pool, tenantID)
	if err != nil {
		return MoveResult{}, wrap("move", err)
	}
	res.Tenant, res.Took = t, time.Since(start)
	phase("done")
	p.cfg.Logger.InfoContext(ctx, "tenant moved", "tenant_id", tenantID, "from", string(d.From.Tier), "to", string(d.To.Tier),
		"write_pause", res.WritePause, "took", res.Took)
	return res, nil
}

// AbortMove rolls back a move that has not flipped: writes resume in the source, capture stops,
// the destination's copy is removed and the job ends. A move that flipped cannot be aborted (the
// destination serves); run MoveTenant again to finish it. No move is ErrNotFound.
func (p *Provisioner) AbortMove(ctx context.Context, tenantID string) error {
	if err := schema.ValidateTenantID(tenantID); err != nil {
		return &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	job, err := registry.GetJob(ctx, p.pool, tenantID, false)
	if err != nil {
		return wrap("abort move", fmt.Errorf("no move of tenant %q: %w", tenantID, err))
	}
	if job.Kind != registry.JobMove {
		return wrap("abort move", fmt.Errorf("tenant %q has a %s in progress, not a move: %w", tenantID, job.Kind, registry.ErrConflict))
	}
	if job.Phase == moveFlipped {
		return wrap("abort move", fmt.Errorf("the move of tenant %q has flipped: its destination serves; run the move again to finish it: %w",
			tenantID, registry.ErrConflict))
	}
	var d moveDetail
	if err := json.Unmarshal(job.Detail, &d); err != nil {
		return err
	}
	return wrap("abort move", p.rollbackMove(ctx, tenantID, d))
}

func (p *Provisioner) rollbackMove(ctx context.Context, tenantID string, d moveDetail) error {
	// Only the source is needed: a destination that cannot be reached is cleaned by a later
	// move (which cleans its destination first) or by the tenant's delete.
	pool, release, err := p.poolFor(ctx, d.From)
	if err != nil {
		return err
	}
	defer release()
	src := archive.Target{Pool: pool, Role: p.cfg.OwnerRole, Schema: d.From.Schema, OwnerID: tenantID}
	// Writes first: the source serves on, without capture.
	if err := p.setCapture(ctx, src, false, false); err != nil {
		return err
	}
	if err := p.cleanLocation(ctx, d.To); err != nil {
		return err
	}
	return p.inTx(ctx, p.pool, false, func(tx pgx.Tx) error {
		if err := registry.DeleteJob(ctx, tx, tenantID); err != nil {
			return err
		}
		return registry.Audit(ctx, tx, tenantID, "move_aborted", p.cfg.Actor, map[string]any{"from": d.From, "to": d.To})
	})
}

// moveTargets are the source and destination scopes of a move, as the owner role; release gives
// their pools back.
func (p *Provisioner) moveTargets(ctx context.Context, tenantID string, d moveDetail) (src, dst archive.Target, release func(), err error) {
	srcPool, releaseSrc, err := p.poolFor(ctx, d.From)
	if err != nil {
		return archive.Target{}, archive.Target{}, nil, err
	}
	dstPool, releaseDst, err := p.poolFor(ctx, d.To)
	if err != nil {
		releaseSrc()
		return archive.Target{}, archive.Target{}, nil, err
	}
	return archive.Target{Pool: srcPool, Role: p.cfg.OwnerRole, Schema: d.From.Schema, OwnerID: tenantID},
		archive.Target{Pool: dstPool, Role: p.cfg.OwnerRole, Schema: d.To.Schema, OwnerID: tenantID},
		func() { releaseDst(); releaseSrc() }, nil
}

// sameVersion brings the source's tables to the latest migration (the destination is created at
// it) and returns that version.
func (p *Provisioner) sameVersion(ctx context.Context, tenantID string, d moveDetail) (int64, error) {
	v, err := p.migrateLocation(ctx, d.From)
	if err != nil {
		return 0, err
	}
	if ownsSchema(d.From) {
		if err := registry.SetMigrationVersion(ctx, p.pool, tenantID, v); err != nil {
			return 0, err
		}
	}
	latest, err := schema.Latest(schema.TenantSet)
	if err != nil {
		return 0, err
	}
	if v != latest {
		return 0, fmt.Errorf("tenant %q's tables are at migration %d, not %d: run `provisioner migrate` first", tenantID, v, latest)
	}
	return v, nil
}

// setCapture turns change capture of a tenant on (logging its writes; paused refuses them) or
// off (and empties its log) in one location.
func (p *Provisioner) setCapture(ctx context.Context, t archive.Target, on, paused bool) error {
	return t.InTx(ctx, func(tx pgx.Tx) error {
		capture := ident(t.Schema) + "." + ident(schema.ChangeCaptureTable)
		if !on {
			if _, err := tx.Exec(ctx, `DELETE FROM `+capture+` WHERE owner_id = $1`, t.OwnerID); err != nil {
				return fmt.Errorf("stop change capture: %w", err)
			}
			_, err := tx.Exec(ctx, `DELETE FROM `+ident(t.Schema)+`.`+ident(schema.ChangeLogTable)+` WHERE owner_id = $1`, t.OwnerID)
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+capture+` (owner_id, writes_paused) VALUES ($1, $2)
			ON CONFLICT (owner_id) DO UPDATE SET writes_paused = excluded.writes_paused`, t.OwnerID, paused)
		if err != nil {
			return fmt.Errorf("change capture: %w", err)
		}
		return nil
	})
}

// barrier waits until every transaction of the tenant that was in flight has ended: it takes the
// tenant's advisory lock exclusively, which every router transaction holds shared, and lets it
// go. Requests that start meanwhile wait behind it for that instant.
func (p *Provisioner) barrier(ctx context.Context, tenantID string) error {
	return p.withTenantLock(ctx, tenantID, func(context.Context, *pgxpool.Conn) error { return nil })
}

// catchUpRound applies one round of logged changes from src to dst and deletes them from the log.
func (p *Provisioner) catchUpRound(ctx context.Context, src, dst archive.Target) (archive.ChangeRound, error) {
	var cr archive.ChangeRound
	err := pgx.BeginTxFunc(ctx, src.Pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		if err := src.Scope(ctx, tx); err != nil {
			return err
		}
		var err error
		cr, err = archive.ApplyChanges(ctx, tx, src.Schema, dst, DefaultMoveRoundEntries)
		return err
	})
	if err != nil || cr.Entries == 0 {
		return cr, err
	}
	err = src.InTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM `+ident(src.Schema)+`.`+ident(schema.ChangeLogTable)+
			` WHERE owner_id = $1 AND change_id = ANY($2)`, src.OwnerID, cr.ChangeIDs)
		return err
	})
	return cr, err
}

// verifyMove compares the row counts of every table of the tenant in both copies.
func (p *Provisioner) verifyMove(ctx context.Context, src, dst archive.Target) error {
	a, err := archive.Counts(ctx, src)
	if err != nil {
		return err
	}
	b, err := archive.Counts(ctx, dst)
	if err != nil {
		return err
	}
	var diffs []string
	for _, t := range schema.TenantTables {
		if t.Optional {
			continue // written by searches during the pause, best effort
		}
		if a[t.Name] != b[t.Name] {
			diffs = append(diffs, fmt.Sprintf("%s: %d rows in the source, %d in the copy", t.Name, a[t.Name], b[t.Name]))
		}
	}
	if len(diffs) > 0 {
		return &archive.VerifyError{Differences: diffs}
	}
	return nil
}
