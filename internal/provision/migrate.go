package provision

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// MigrateProgress is reported after each schema that had to be migrated.
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
	// schema.
	Verify bool
}

// TenantError is one tenant whose migration failed.
type TenantError struct {
	TenantID string
	Err      error
}

// MigrateReport is the outcome of Migrate.
type MigrateReport struct {
	ControlVersion int64
	LatestVersion  int64
	// Schemas counts the tenant schemas Migrate keeps current: the shared schema and every active
	// or suspended schema-tier tenant.
	Schemas int
	// Checked counts the schemas Migrate looked at: the shared schema, and the schema-tier tenants
	// whose recorded version was not the latest (every one with Verify).
	Checked int
	// Applied counts schemas that had pending migrations.
	Applied int
	Failed  []TenantError
	Took    time.Duration
}

// Migrate brings the control schema, the placement schema, the shared schema and every
// schema-tier tenant to the latest migrations, at most Config.Parallelism schemas at a time. One
// tenant's failure does not stop the others: every failure is in the report. It is resumable: a
// killed run leaves each schema either migrated or untouched (goose runs each migration in a
// transaction), and the next run continues. Tenants still provisioning are left to CreateTenant,
// which migrates them when resumed.
//
// Its cost follows the work to do, not the number of tenants: it finds the schema-tier tenants
// whose recorded migration version differs from the latest with an index probe (the registry
// records a version only once the migrations and the router's privileges are in place), and it
// touches the shared schema only when its version or the recorded one is behind. A run with
// nothing to do reads a few rows and changes none.
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
	controlMigrator, err := schema.NewMigrator(schema.MigratorConfig{
		ConnConfig: p.pool.Config().ConnConfig, Role: settings.OwnerRole, Logger: p.cfg.Logger,
	})
	if err != nil {
		return rep, err
	}
	if rep.ControlVersion, err = controlMigrator.Up(ctx, schema.ControlSet, schema.ControlSchema); err != nil {
		return rep, err
	}
	if _, err := p.migratePlacement(ctx, p.pool, m); err != nil {
		return rep, err
	}

	type job struct {
		tenantID, schemaName string
		recorded             int64
		current              int64 // -1: unknown, ask goose
	}
	var jobs []job
	// The shared schema: touched only when its version or the recorded one is behind.
	sharedRecorded, err := registry.SharedMigrationVersion(ctx, p.pool)
	if err != nil {
		return rep, err
	}
	sharedCurrent := int64(-1)
	if v, err := schema.Versions(ctx, p.pool, []string{schema.SharedSchema}); err == nil {
		sharedCurrent = v[0]
	}
	if sharedCurrent != rep.LatestVersion || sharedRecorded != sharedCurrent {
		jobs = append(jobs, job{schemaName: schema.SharedSchema, recorded: sharedRecorded, current: sharedCurrent})
	} else if err := registry.SetSharedMigrationVersion(ctx, p.pool, sharedCurrent); err != nil {
		// Shared-tier tenants created with a stale version: two index probes find none, usually.
		return rep, err
	}

	lagging := rep.LatestVersion
	if params.Verify {
		lagging = -1
	}
	tenants, err := registry.ListSchemaTenants(ctx, p.pool, registry.SchemaTenantListParams{Lagging: lagging})
	if err != nil {
		return rep, err
	}
	if rep.Schemas, err = registry.CountSchemaTenants(ctx, p.pool); err != nil {
		return rep, err
	}
	rep.Schemas++ // the shared schema
	rep.Checked = len(tenants) + 1
	firstTenant := len(jobs)
	for _, t := range tenants {
		jobs = append(jobs, job{tenantID: t.ID, schemaName: t.SchemaName, recorded: t.MigrationVersion, current: -1})
	}
	if params.Verify {
		// Read every schema's version in batches of one round trip each; a batch that fails
		// leaves its schemas to goose. Schemas that are current and recorded need nothing.
		for i := firstTenant; i < len(jobs); i += 1000 {
			batch := jobs[i:min(i+1000, len(jobs))]
			names := make([]string, len(batch))
			for k, j := range batch {
				names[k] = j.schemaName
			}
			if versions, err := schema.Versions(ctx, p.pool, names); err == nil {
				for k := range batch {
					batch[k].current = versions[k]
				}
			}
		}
		kept := jobs[:firstTenant]
		for _, j := range jobs[firstTenant:] {
			if j.current != rep.LatestVersion || j.recorded != j.current {
				kept = append(kept, j)
			}
		}
		jobs = kept
	}

	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		sem  = make(chan struct{}, p.cfg.Parallelism)
		done int
	)
	report := func(j job, before, after int64, err error) {
		mu.Lock()
		defer mu.Unlock()
		done++
		if err != nil {
			rep.Failed = append(rep.Failed, TenantError{TenantID: cmp.Or(j.tenantID, "(shared tier)"), Err: err})
			p.cfg.Logger.ErrorContext(ctx, "tenant migration failed", "tenant_id", j.tenantID,
				"schema", j.schemaName, "error", err.Error())
		} else if after != before {
			rep.Applied++
		}
		if params.Progress != nil {
			params.Progress(MigrateProgress{Done: done, Total: len(jobs), Failed: len(rep.Failed)})
		}
	}
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := p.hook(ctx, StepMigrateTenant, j.tenantID); err != nil {
				report(j, 0, 0, err)
				return
			}
			before := j.current
			if before < 0 {
				before, _ = m.Version(ctx, schema.TenantSet, j.schemaName)
			}
			// The registry records a version only after the migrations and the router's
			// privileges succeeded, so a schema whose recorded version lags may lack them: run
			// both (each is idempotent). The default privileges are set again for schemas made
			// before they existed, so that tables a migration adds get the router's grants.
			after, err := p.migrateSchema(ctx, m, schema.TenantSet, j.schemaName, true)
			if err == nil && j.tenantID != "" && after != j.recorded {
				err = registry.SetMigrationVersion(ctx, p.pool, j.tenantID, after)
			}
			if err == nil && j.tenantID == "" {
				err = registry.SetSharedMigrationVersion(ctx, p.pool, after)
			}
			report(j, before, after, err)
		}()
	}
	wg.Wait()
	rep.Took = time.Since(start)
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("provision: migrate interrupted after %d of %d schemas: %w", done, len(jobs), err)
	}
	return rep, nil
}
