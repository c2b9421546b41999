package provision

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// MigrateProgress is reported after each schema Migrate visits (and once for every such schema of
// a placement that is skipped).
type MigrateProgress struct {
	Done, Total, Failed int
}

// MigrateParams configures [Provisioner.Migrate].
type MigrateParams struct {
	// Progress, when set, is called after each schema (from several goroutines, one at a time).
	Progress func(MigrateProgress)
	// Verify reads every schema's own migration version instead of trusting the registry's record
	// of it, and migrates every schema that is behind. Without it, Migrate visits only the schemas
	// whose recorded version is not the latest (an index probe finds them), which is exact as long
	// as nothing but the provisioner migrates tenant schemas. Verify costs about a millisecond per
	// schema in a placement's main database, and a connection per tenant database.
	Verify bool
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
	// database-tier tenants (one schema in each tenant database). Checked counts those visited.
	Schemas, Checked int
	// Skipped is set when none was visited: the placement is disabled, or unreachable (Err).
	Skipped bool
	Err     error
}

// MigrateReport is the outcome of Migrate.
type MigrateReport struct {
	ControlVersion int64
	LatestVersion  int64
	// Schemas counts the schemas Migrate keeps current on every placement: shared schemas and the
	// active or suspended schema-tier and database-tier tenants.
	Schemas int
	// Checked counts the schemas Migrate visited: every placement's shared schema, and the tenants
	// whose recorded version was not the latest (every one with Verify).
	Checked int
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
	recorded   int64  // the registry's version (for a shared schema, the placement's record)
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
//
// Its cost follows the work to do, not the number of tenants: it finds the tenants whose recorded
// migration version differs from the latest with an index probe (the registry records a version
// only once the migrations and the router's privileges are in place), and it touches a shared
// schema only when its version or the placement's record of it is behind. A run with nothing to do
// reads a few rows per placement and changes none.
func (p *Provisioner) Migrate(ctx context.Context, params MigrateParams) (MigrateReport, error) {
	start := time.Now()
	m, settings, err := p.ready(ctx)
	if err != nil {
		return MigrateReport{}, err
	}
	var rep MigrateReport
	if rep.LatestVersion, err = m.Latest(schema.TenantSet); err != nil {
		return rep, err
	}
	p.logMigrationLocks(ctx)
	controlMigrator, err := schema.NewMigrator(p.migrationLocks(schema.MigratorConfig{
		ConnConfig: p.pool.Config().ConnConfig, Role: settings.OwnerRole, Logger: p.cfg.Logger,
	}))
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
		recorded, err := registry.SharedMigrationVersion(ctx, p.pool, pl.Name)
		if err != nil {
			return rep, err
		}
		jobs[pl.Name] = []migrateJob{{key: registry.DatabaseKey{Placement: pl.Name}, schemaName: schema.SharedSchema,
			recorded: recorded, current: -1}}
	}
	lagging := rep.LatestVersion
	if params.Verify {
		lagging = -1
	}
	tenants, err := registry.ListSchemaTenants(ctx, p.pool, registry.SchemaTenantListParams{Lagging: lagging})
	if err != nil {
		return rep, err
	}
	for _, t := range tenants {
		loc := t.Location()
		jobs[loc.Placement] = append(jobs[loc.Placement], migrateJob{key: loc.Key(), schemaName: loc.Schema,
			tenantID: t.ID, recorded: t.MigrationVersion, current: -1})
	}
	counts, err := registry.CountSchemaTenants(ctx, p.pool)
	if err != nil {
		return rep, err
	}
	rep.Schemas = len(placements)
	for _, n := range counts {
		rep.Schemas += n
	}
	for _, js := range jobs {
		rep.Checked += len(js)
	}

	var (
		mu   sync.Mutex
		done int
	)
	op := p.startOperation(ctx, registry.OperationStartParams{Kind: registry.OperationMigrate, Subject: "every placement",
		Total: int64(rep.Checked), Unit: "schemas"}, func() (int64, int64, int64) {
		mu.Lock()
		defer mu.Unlock()
		return int64(done), int64(rep.Checked), int64(len(rep.Failed))
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
			params.Progress(MigrateProgress{Done: done, Total: rep.Checked, Failed: len(rep.Failed)})
		}
	}
	var wg sync.WaitGroup
	reports := make([]PlacementReport, len(placements))
	for i, pl := range placements {
		wg.Go(func() {
			reports[i] = p.migratePlacement(ctx, pl, jobs[pl.Name], counts[pl.Name]+1, rep.LatestVersion, params.Verify, report)
		})
	}
	wg.Wait()
	rep.Placements = reports
	slices.SortFunc(rep.Failed, func(a, b TenantError) int {
		return cmp.Or(cmp.Compare(a.Placement, b.Placement), cmp.Compare(a.TenantID, b.TenantID))
	})
	rep.Took = time.Since(start)
	if err := ctx.Err(); err != nil {
		err = fmt.Errorf("provision: migrate interrupted after %d of %d schemas: %w", done, rep.Checked, err)
		op.finish(ctx, err)
		return rep, err
	}
	var opErr error
	if len(rep.Failed) > 0 {
		opErr = fmt.Errorf("%d of %d schemas failed (first: %s: %w)", len(rep.Failed), rep.Checked, rep.Failed[0].TenantID, rep.Failed[0].Err)
	}
	op.finish(ctx, opErr)
	return rep, nil
}

// migratePlacement runs one placement's jobs, Config.Parallelism at a time, after its embedding
// work queue schema. schemas is the number of schemas the placement holds.
func (p *Provisioner) migratePlacement(ctx context.Context, pl registry.Placement, jobs []migrateJob, schemas int, latest int64,
	verify bool, report func(j migrateJob, before, after int64, err error)) PlacementReport {
	pr := PlacementReport{Name: pl.Name, State: pl.State, Schemas: schemas, Checked: len(jobs)}
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
	if err == nil {
		// The placement's own schema (its embedding work queue) first: ingest writes to it.
		var m *schema.Migrator
		if m, err = p.migratorFor(ctx, main); err == nil {
			if _, err = p.migrateWorkQueue(ctx, pool, m); err != nil {
				err = onPlacement(pl.Name, err)
			}
		}
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
		} else if j.recorded == latest && !verify {
			jobs[i].current = latest
		}
	}
	tenantFS := p.cfg.TenantMigrations
	if tenantFS == nil {
		tenantFS = schema.TenantSet.FS()
	}
	known, kerr := schema.KnownVersions(tenantFS)
	for b := 0; kerr == nil && b < len(inMain); b += 1000 {
		batch := inMain[b:min(b+1000, len(inMain))]
		names := make([]string, len(batch))
		for k, i := range batch {
			names[k] = jobs[i].schemaName
		}
		if versions, err := schema.VersionsOf(ctx, pool, known, names); err == nil {
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
	// The registry records a version only after the migrations and the router's privileges
	// succeeded, so a schema whose recorded version lags may lack them: redo both (each is
	// idempotent). A current shared schema whose record is current too needs only its tenants'
	// records checked (two index probes).
	if j.current == latest && j.recorded == latest {
		if j.tenantID == "" {
			return latest, latest, registry.SetSharedMigrationVersion(ctx, p.pool, j.key.Placement, latest)
		}
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
	if j.key.Database != "" {
		// A tenant database has its own embedding work queue, migrated with its tenant.
		c, err := p.connectTenantDB(ctx, j.key)
		if err != nil {
			return before, before, err
		}
		_, err = p.migrateWorkQueue(ctx, c, m)
		_ = c.Close(context.WithoutCancel(ctx))
		if err != nil {
			return before, before, err
		}
	}
	// The default privileges are set again, for schemas made before they existed, so that tables
	// a migration adds get the router's grants at creation. All of it runs on the migration's own
	// connection.
	if after, err = p.migrateSchema(ctx, m, schema.TenantSet, j.schemaName, true); err != nil {
		return before, before, err
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

// logMigrationLocks logs the bounds on a migration's waits for locks, and warns when the lock
// timeout is not above the control server's deadlock_timeout: PostgreSQL cancels an autovacuum
// that blocks a lock request only at the deadlock check, after deadlock_timeout, so a shorter
// lock timeout gives up first on every try.
func (p *Provisioner) logMigrationLocks(ctx context.Context) {
	lt, attempts := p.cfg.MigrationLockTimeout, p.cfg.MigrationLockAttempts
	shown := "none"
	if lt > 0 {
		shown = lt.String()
	}
	p.cfg.Logger.InfoContext(ctx, "migrating", slog.Int("parallelism", p.cfg.Parallelism),
		slog.String("lock_timeout", shown), slog.Int("lock_attempts", attempts))
	var deadlockMS int64
	if err := p.pool.QueryRow(ctx, `SELECT setting::bigint FROM pg_settings WHERE name = 'deadlock_timeout'`).Scan(&deadlockMS); err != nil {
		return // the migration itself reports a server that does not answer
	}
	if deadlock := time.Duration(deadlockMS) * time.Millisecond; lt > 0 && lt <= deadlock {
		p.cfg.Logger.WarnContext(ctx, "the migration lock timeout is not above deadlock_timeout: an autovacuum that blocks a migration is never cancelled for it, and the migration gives up instead; raise --lock-timeout",
			slog.String("lock_timeout", lt.String()), slog.String("deadlock_timeout", deadlock.String()))
	}
}
