package provision

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// MigrateProgress is reported after each tenant schema (and once for every schema of a placement
// that is skipped).
type MigrateProgress struct {
	Done, Total, Failed int
}

// MigrateParams configures [Provisioner.Migrate].
type MigrateParams struct {
	// Progress, when set, is called after each schema (from several goroutines, one at a time).
	Progress func(MigrateProgress)
}

// TenantError is one tenant whose migration failed. TenantID is "(shared tier)" for a shared schema.
type TenantError struct {
	TenantID  string
	Placement string
	Err       error
	// Skipped is set when the tenant was not tried because its placement was unreachable.
	Skipped bool
}

// PlacementReport is what Migrate did on one placement.
type PlacementReport struct {
	Name  string
	State registry.PlacementState
	// Schemas counts the placement's schemas: its shared schema, its schema-tier tenants and its
	// database-tier tenants (one schema in each tenant database).
	Schemas int
	// Skipped is set when none was visited: the placement is disabled, or unreachable (Err).
	Skipped bool
	Err     error
}

// MigrateReport is the outcome of Migrate.
type MigrateReport struct {
	ControlVersion int64
	LatestVersion  int64
	// Schemas counts the schemas of every placement: shared schemas, schema-tier tenants and
	// database-tier tenants.
	Schemas int
	// Applied counts schemas that had pending migrations.
	Applied int
	// Failed lists the tenants (and shared schemas) that failed, those of an unreachable placement
	// included.
	Failed     []TenantError
	Placements []PlacementReport
	Took       time.Duration
}

// migrateJob is one schema to bring up to date.
type migrateJob struct {
	key        registry.DatabaseKey
	schemaName string
	tenantID   string // "" for a placement's shared schema
	recorded   int64  // the registry's version (-1 for a shared schema)
	current    int64  // -1: unknown, ask goose
}

func (j migrateJob) name() string { return cmp.Or(j.tenantID, "(shared tier)") }

// Migrate brings the control schema, then on every placement the shared schema, every
// schema-tier tenant and every database-tier tenant's database to the latest tenant migration, at
// most Config.Parallelism schemas at a time per placement (placements run side by side). One
// schema's failure does not stop the others: every failure is in the report. A placement that
// cannot be reached is reported and skipped (its schemas count as failed); a disabled placement is
// skipped without a failure. It is resumable: a killed run leaves each schema either migrated or
// untouched (goose runs each migration in a transaction), and the next run continues. Tenants
// still provisioning are left to CreateTenant, which migrates them when resumed.
func (p *Provisioner) Migrate(ctx context.Context, params MigrateParams) (MigrateReport, error) {
	start := time.Now()
	_, settings, err := p.ready(ctx)
	if err != nil {
		return MigrateReport{}, err
	}
	var rep MigrateReport
	if rep.LatestVersion, err = schema.Latest(schema.TenantSet); err != nil {
		return rep, err
	}
	controlMigrator, err := schema.NewMigrator(schema.MigratorConfig{
		ConnConfig: p.pool.Config().ConnConfig, Role: settings.OwnerRole, Logger: p.cfg.Logger,
	})
	if err != nil {
		return rep, err
	}
	if rep.ControlVersion, err = controlMigrator.Up(ctx, schema.ControlSet, schema.ControlSchema); err != nil {
		return rep, err
	}
	placements, err := registry.ListPlacements(ctx, p.pool)
	if err != nil {
		return rep, err
	}
	// New routers read the placements again (control migrations may have changed them).
	p.pools.InvalidateAll()

	jobs := map[string][]migrateJob{}
	for _, pl := range placements {
		jobs[pl.Name] = []migrateJob{{key: registry.DatabaseKey{Placement: pl.Name}, schemaName: schema.SharedSchema,
			recorded: -1, current: -1}}
	}
	for after := ""; ; {
		page, err := registry.List(ctx, p.pool, registry.TenantListParams{
			After: after, Limit: 5000,
			Statuses: []registry.Status{registry.StatusActive, registry.StatusSuspended},
		})
		if err != nil {
			return rep, err
		}
		for _, t := range page {
			if t.Tier == registry.TierShared {
				continue // its placement's shared schema
			}
			loc := t.Location()
			jobs[loc.Placement] = append(jobs[loc.Placement], migrateJob{key: loc.Key(), schemaName: loc.Schema,
				tenantID: t.ID, recorded: t.MigrationVersion, current: -1})
		}
		if len(page) < 5000 {
			break
		}
		after = page[len(page)-1].ID
	}
	for _, js := range jobs {
		rep.Schemas += len(js)
	}

	var (
		mu   sync.Mutex
		done int
	)
	op := p.startOperation(ctx, registry.OperationStartParams{Kind: registry.OperationMigrate, Subject: "every placement",
		Total: int64(rep.Schemas), Unit: "schemas"}, func() (int64, int64, int64) {
		mu.Lock()
		defer mu.Unlock()
		return int64(done), int64(rep.Schemas), int64(len(rep.Failed))
	})
	report := func(j migrateJob, before, after int64, err error) {
		mu.Lock()
		defer mu.Unlock()
		done++
		var skipped *skippedError
		switch {
		case errors.As(err, &skipped):
			rep.Failed = append(rep.Failed, TenantError{TenantID: j.name(), Placement: j.key.Placement, Err: skipped.err, Skipped: true})
		case err != nil:
			rep.Failed = append(rep.Failed, TenantError{TenantID: j.name(), Placement: j.key.Placement, Err: err})
			p.cfg.Logger.ErrorContext(ctx, "tenant migration failed", "tenant_id", j.tenantID, "placement", j.key.Placement,
				"database", j.key.Database, "schema", j.schemaName, "error", err.Error())
		case after != before:
			rep.Applied++
		}
		if params.Progress != nil {
			params.Progress(MigrateProgress{Done: done, Total: rep.Schemas, Failed: len(rep.Failed)})
		}
	}
	var wg sync.WaitGroup
	reports := make([]PlacementReport, len(placements))
	for i, pl := range placements {
		wg.Go(func() {
			reports[i] = p.migratePlacement(ctx, pl, jobs[pl.Name], rep.LatestVersion, report)
		})
	}
	wg.Wait()
	rep.Placements = reports
	slices.SortFunc(rep.Failed, func(a, b TenantError) int {
		return cmp.Or(cmp.Compare(a.Placement, b.Placement), cmp.Compare(a.TenantID, b.TenantID))
	})
	rep.Took = time.Since(start)
	if err := ctx.Err(); err != nil {
		err = fmt.Errorf("provision: migrate interrupted after %d of %d schemas: %w", done, rep.Schemas, err)
		op.finish(ctx, err)
		return rep, err
	}
	var opErr error
	if len(rep.Failed) > 0 {
		opErr = fmt.Errorf("%d of %d schemas failed (first: %s: %w)", len(rep.Failed), rep.Schemas, rep.Failed[0].TenantID, rep.Failed[0].Err)
	}
	op.finish(ctx, opErr)
	return rep, nil
}

// migratePlacement runs one placement's jobs, Config.Parallelism at a time.
func (p *Provisioner) migratePlacement(ctx context.Context, pl registry.Placement, jobs []migrateJob, latest int64,
	report func(j migrateJob, before, after int64, err error)) PlacementReport {
	pr := PlacementReport{Name: pl.Name, State: pl.State, Schemas: len(jobs)}
	if pl.State == registry.PlacementDisabled {
		p.cfg.Logger.WarnContext(ctx, "migrate: placement disabled; skipped", "placement", pl.Name, "schemas", len(jobs))
		pr.Skipped = true
		for _, j := range jobs {
			report(j, 0, 0, nil)
		}
		return pr
	}
	main := registry.DatabaseKey{Placement: pl.Name}
	pool, release, err := p.pools.Acquire(ctx, main)
	if err == nil {
		defer release()
		pctx, cancel := context.WithTimeout(ctx, p.pools.ConnectTimeout())
		if err = pool.Ping(pctx); err != nil {
			err = fmt.Errorf("placement %q does not answer: %w: %w", pl.Name, placement.ErrUnavailable, err)
		}
		cancel()
	}
	if err != nil {
		p.cfg.Logger.ErrorContext(ctx, "migrate: placement unreachable; skipped", "placement", pl.Name,
			"schemas", len(jobs), "error", err.Error())
		pr.Skipped, pr.Err = true, err
		for _, j := range jobs {
			report(j, 0, 0, &skippedError{err: err})
		}
		return pr
	}
	// Fast path: read the versions of the schemas in the main database in batches of one round
	// trip each, so a no-op run opens no goose connection there; a tenant database whose registry
	// record is the latest version is taken at its word (the record is written only after its
	// migration and grants succeeded), so a no-op run does not connect to it either.
	var inMain []int
	for i, j := range jobs {
		if j.key.Database == "" {
			inMain = append(inMain, i)
		} else if j.recorded == latest {
			jobs[i].current = latest
		}
	}
	for b := 0; b < len(inMain); b += 1000 {
		batch := inMain[b:min(b+1000, len(inMain))]
		names := make([]string, len(batch))
		for k, i := range batch {
			names[k] = jobs[i].schemaName
		}
		if versions, err := schema.Versions(ctx, pool, names); err == nil {
			for k, i := range batch {
				jobs[i].current = versions[k]
			}
		}
	}

	sem := make(chan struct{}, p.cfg.Parallelism)
	var wg sync.WaitGroup
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			before, after, err := p.migrateOne(ctx, j, latest)
			report(j, before, after, onPlacement(j.key.Placement, err))
		})
	}
	wg.Wait()
	return pr
}

// skippedError marks a schema of an unreachable placement (logged once, for the placement).
type skippedError struct{ err error }

func (e *skippedError) Error() string { return "skipped: " + e.err.Error() }
func (e *skippedError) Unwrap() error { return e.err }

// migrateOne brings one schema up to date and records its version. It returns the versions before
// and after.
func (p *Provisioner) migrateOne(ctx context.Context, j migrateJob, latest int64) (before, after int64, err error) {
	if err := p.hook(ctx, StepMigrateTenant, j.tenantID); err != nil {
		return 0, 0, err
	}
	// The registry records a version only after the router's grants succeeded, so a schema whose
	// recorded version lags may lack them: redo both (each is idempotent).
	// A placement's shared schema always goes through goose (one per placement; it has no record).
	if j.tenantID != "" && j.current == latest && j.recorded == latest {
		return latest, latest, nil
	}
	m, err := p.migratorFor(ctx, j.key)
	if err != nil {
		return 0, 0, err
	}
	before = j.current
	if before < 0 {
		before, _ = m.Version(ctx, schema.TenantSet, j.schemaName)
	}
	if j.key.Database == "" {
		db, release, err := p.mainDB(ctx, nil, j.key.Placement)
		if err != nil {
			return before, before, err
		}
		after, err = p.migrateSchema(ctx, db, m, j.schemaName)
		release()
		if err != nil {
			return before, before, err
		}
	} else {
		c, err := p.connectTenantDB(ctx, j.key)
		if err != nil {
			return before, before, err
		}
		after, err = p.migrateSchema(ctx, c, m, j.schemaName)
		_ = c.Close(context.WithoutCancel(ctx))
		if err != nil {
			return before, before, err
		}
	}
	if j.tenantID == "" {
		p.setSharedVersion(j.key.Placement, after)
		return before, after, registry.SetSharedMigrationVersion(ctx, p.pool, j.key.Placement, after)
	}
	if after != j.recorded {
		err = registry.SetMigrationVersion(ctx, p.pool, j.tenantID, after)
	}
	return before, after, err
}
