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

// MigrateProgress is reported after each tenant schema.
type MigrateProgress struct {
	Done, Total, Failed int
}

// MigrateParams configures [Provisioner.Migrate].
type MigrateParams struct {
	// Progress, when set, is called after each schema (from several goroutines, one at a time).
	Progress func(MigrateProgress)
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
	// Schemas counts the schemas visited: the shared schema and every schema-tier tenant.
	Schemas int
	// Applied counts schemas that had pending migrations.
	Applied int
	Failed  []TenantError
	Took    time.Duration
}

// Migrate brings the control schema, the shared schema and every schema-tier tenant to the latest
// migrations, at most Config.Parallelism schemas at a time. One tenant's failure does not stop the
// others: every failure is in the report. It is resumable: a killed run leaves each schema either
// migrated or untouched (goose runs each migration in a transaction), and the next run continues.
// Tenants still provisioning are left to CreateTenant, which migrates them when resumed.
func (p *Provisioner) Migrate(ctx context.Context, params MigrateParams) (MigrateReport, error) {
	start := time.Now()
	m, settings, err := p.ready(ctx)
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

	var tenants []registry.Tenant
	for after := ""; ; {
		page, err := registry.List(ctx, p.pool, registry.TenantListParams{
			After: after, Limit: 5000, Tier: registry.TierSchema,
			Statuses: []registry.Status{registry.StatusActive, registry.StatusSuspended},
		})
		if err != nil {
			return rep, err
		}
		tenants = append(tenants, page...)
		if len(page) < 5000 {
			break
		}
		after = page[len(page)-1].ID
	}

	type job struct {
		tenantID, schemaName string
		recorded             int64
		current              int64 // -1: unknown, ask goose
	}
	jobs := make([]job, 0, len(tenants)+1)
	jobs = append(jobs, job{schemaName: schema.SharedSchema, recorded: -1})
	for _, t := range tenants {
		jobs = append(jobs, job{tenantID: t.ID, schemaName: t.SchemaName, recorded: t.MigrationVersion})
	}
	rep.Schemas = len(jobs)
	// Fast path: read every schema's version in batches of one round trip each, so a no-op run
	// opens no goose connection at all. A batch that fails leaves its schemas to goose.
	for i := 0; i < len(jobs); i += 1000 {
		batch := jobs[i:min(i+1000, len(jobs))]
		names := make([]string, len(batch))
		for k, j := range batch {
			names[k] = j.schemaName
		}
		versions, err := schema.Versions(ctx, p.pool, names)
		for k := range batch {
			batch[k].current = -1
			if err == nil {
				batch[k].current = versions[k]
			}
		}
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
			after := before
			var err error
			// The registry records a version only after the router's grants succeeded, so a
			// schema whose recorded version lags may lack them: redo both (each is idempotent).
			if before != rep.LatestVersion || j.recorded != before {
				after, err = p.migrateSchema(ctx, p.pool, m, j.schemaName)
			}
			if err == nil && j.tenantID != "" && after != j.recorded {
				err = registry.SetMigrationVersion(ctx, p.pool, j.tenantID, after)
			}
			if err == nil && j.tenantID == "" {
				p.sharedVersion.Store(after)
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
