package provision

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/archive"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// Steps of a restore, passed to Config.Hook.
const (
	StepRestoreRegistered = "restore:registered" // registry row (provisioning) and job committed
	StepRestoreLoaded     = "restore:loaded"     // rows loaded, before the tables are migrated and verified
	StepRestoreVerified   = "restore:verified"   // counts verified, before activation
	StepRestoreStaged     = "restore:staged"     // replace: staging loaded and verified, old tenant untouched
	StepRestoreInstalling = "restore:installing" // replace: old tenant unreachable, before its data goes
	StepRestoreInstalled  = "restore:installed"  // replace: rows copied into place, before activation
)

// Restore job phases.
const (
	restoreLoading    = "loading"    // fresh: rows going into the tenant's own location
	restoreStaging    = "staging"    // replace: rows going into the staging schema
	restoreInstalling = "installing" // replace: old data dropped, staging copied into place
)

// RestoreParams configures [Provisioner.Restore].
type RestoreParams struct {
	// As restores under another tenant id (default: the archive's). A copy under another id
	// gets new document and chunk ids (the shared tier's ids are unique across tenants) and a
	// new API key (the archive's key hashes belong to the original).
	As string
	// Tier and Placement say where the restored tenant lives (default: the archive's tier).
	Tier      registry.Tier
	Placement string
	// Replace allows restoring over an existing tenant: the archive is loaded and verified in
	// a staging schema first, and only then does the existing tenant's data make way.
	Replace bool
	// Progress, when set, is called after every block of rows.
	Progress func(archive.Progress)
}

// RestoreResult describes a restored tenant.
type RestoreResult struct {
	Tenant registry.Tenant `json:"tenant"`
	// Key is a new API key (shown once) when neither the archive's key hashes nor, on replace,
	// the existing keys carried over.
	Key *registry.IssuedKey `json:"api_key,omitempty"`
	// KeysRestored counts the archive's key hashes that were restored.
	KeysRestored int `json:"keys_restored"`
	// Rows counts the restored rows per table.
	Rows map[string]int64 `json:"rows"`
	// Replaced is true when an existing tenant was replaced.
	Replaced bool `json:"replaced"`
	// NewIDs is true when documents and chunks got new ids (a restore under another id).
	NewIDs bool `json:"new_ids"`
	// Notes say what was not carried over, and why.
	Notes []string        `json:"notes,omitempty"`
	Took  time.Duration   `json:"-"`
	From  archiveIdentity `json:"-"`
}

// archiveIdentity tells one archive from another, so a rerun of an unfinished restore can check
// it was given the same file.
type archiveIdentity struct {
	TenantID  string    `json:"tenant_id"`
	CreatedAt time.Time `json:"created_at"`
	Version   int64     `json:"migration_version"`
}

// restoreDetail is the detail of a restore job.
type restoreDetail struct {
	Archive  archiveIdentity   `json:"archive"`
	Target   registry.Location `json:"target"`
	Staging  string            `json:"staging,omitempty"`
	Previous registry.Location `json:"previous,omitzero"`
}

// ErrArchive wraps every reason an archive cannot be restored here (besides the archive
// package's own sentinels): another embedding dimension, a newer migration version.
var ErrArchive = errors.New("archive cannot be restored")

// IsArchiveError reports an error that is the archive's fault: not an archive, a future
// version, truncated, corrupted, incompatible, or not restorable here.
func IsArchiveError(err error) bool {
	for _, e := range []error{archive.ErrNotArchive, archive.ErrFutureVersion, archive.ErrTruncated, archive.ErrCorrupt,
		archive.ErrIncompatible, ErrArchive} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// TenantExistsError is a restore's refusal to overwrite a tenant that exists without
// RestoreParams.Replace. errors.Is(err, registry.ErrExists) holds for it.
type TenantExistsError struct {
	ID     string
	Tier   registry.Tier
	Status registry.Status
}

func (e *TenantExistsError) Error() string {
	return fmt.Sprintf("tenant %q already exists (%s, %s); restore with replace to overwrite it", e.ID, e.Tier, e.Status)
}

// Unwrap makes errors.Is(err, registry.ErrExists) hold.
func (e *TenantExistsError) Unwrap() error { return registry.ErrExists }

// RestoreRefusedError is a restore refused for the state its tenant is in (being created, deleted
// or moved, or holding an unfinished restore of another archive). Its Reason names the tenant and
// what to do. errors.Is(err, registry.ErrConflict) holds for it.
type RestoreRefusedError struct{ Reason string }

func (e *RestoreRefusedError) Error() string { return e.Reason }

// Unwrap makes errors.Is(err, registry.ErrConflict) hold.
func (e *RestoreRefusedError) Unwrap() error { return registry.ErrConflict }

func refused(format string, args ...any) error {
	return &RestoreRefusedError{Reason: fmt.Sprintf(format, args...)}
}

// Restore builds a tenant from an archive read from src (docs/archive.md). The tenant is created
// in status provisioning, its rows are loaded into tables at the archive's migration version and
// migrated to the latest one with them, their counts are verified against the manifest and every
// block's checksum against the archive, and only then is it made active. A failed restore
// removes what it wrote; a killed one leaves a provisioning tenant that no key reaches, which
// the next Restore of that id cleans up and starts again. With Replace, an existing tenant keeps
// serving until the archive is loaded and verified in a staging schema; a kill after that point
// leaves the tenant unreachable (503) until a rerun finishes from the staging schema.
func (p *Provisioner) Restore(ctx context.Context, src io.Reader, params RestoreParams) (_ RestoreResult, err error) {
	start := time.Now()
	_, settings, err := p.ready(ctx)
	if err != nil {
		return RestoreResult{}, err
	}
	ar, err := archive.NewReader(src, archive.ReaderOptions{})
	if err != nil {
		return RestoreResult{}, fmt.Errorf("provision: restore: %w", err)
	}
	defer ar.Close()
	man := ar.Manifest()
	latest, err := schema.Latest(schema.TenantSet)
	if err != nil {
		return RestoreResult{}, err
	}
	switch {
	case man.EmbeddingDimension != settings.EmbeddingDimension:
		return RestoreResult{}, fmt.Errorf("provision: restore: %w: its vectors have dimension %d, this deployment's %d",
			ErrArchive, man.EmbeddingDimension, settings.EmbeddingDimension)
	case man.MigrationVersion > latest:
		return RestoreResult{}, fmt.Errorf("provision: restore: %w: its tables are at tenant migration %d, this tenantmem knows up to %d; restore it with a newer tenantmem",
			archive.ErrFutureVersion, man.MigrationVersion, latest)
	case man.MigrationVersion < 1:
		return RestoreResult{}, fmt.Errorf("provision: restore: %w: manifest has migration version %d", archive.ErrCorrupt, man.MigrationVersion)
	}
	if err := schema.ValidateTenantID(man.TenantID); err != nil {
		return RestoreResult{}, fmt.Errorf("provision: restore: %w: manifest tenant id: %s", archive.ErrCorrupt, err.Error())
	}
	id := cmp.Or(params.As, man.TenantID)
	if err := schema.ValidateTenantID(id); err != nil {
		return RestoreResult{}, &registry.FieldError{Field: "as", Message: err.Error()}
	}
	tier := params.Tier
	if tier == "" {
		if tier, err = registry.ParseTier(man.Tier); err != nil {
			return RestoreResult{}, fmt.Errorf("provision: restore: %w: manifest tier: %s", archive.ErrCorrupt, err.Error())
		}
	}
	target, err := p.targetLocation(ctx, id, tier, params.Placement, man.Placement)
	if err != nil {
		return RestoreResult{}, err
	}
	textConfig := ""
	if raw, ok := man.Settings[SettingTextSearchConfig]; ok {
		if err := json.Unmarshal(raw, &textConfig); err != nil {
			return RestoreResult{}, fmt.Errorf("provision: restore: %w: setting %s: %s", archive.ErrCorrupt, SettingTextSearchConfig, err.Error())
		}
		if err := p.checkTextConfig(ctx, textConfig); err != nil {
			return RestoreResult{}, fmt.Errorf("provision: restore: %w: the tenant's text search configuration %q does not exist here",
				ErrArchive, textConfig)
		}
	}
	limits, err := limitsOf(man)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("provision: restore: %w", err)
	}
	// The console's operations list shows it while it runs, and how it ended.
	var total int64
	for _, t := range man.Tables {
		total += t.Rows
	}
	prog := &rowProgress{next: params.Progress}
	prog.total.Store(total)
	params.Progress = prog.report
	op := p.startOperation(ctx, registry.OperationStartParams{Kind: registry.OperationRestore,
		Subject: fmt.Sprintf("%s (archive of %s) into the %s", id, man.TenantID, target), Total: total, Unit: "rows"}, prog.get)
	defer func() { op.finish(ctx, err) }()
	ident := archiveIdentity{TenantID: man.TenantID, CreatedAt: man.CreatedAt, Version: man.MigrationVersion}
	res := RestoreResult{Rows: map[string]int64{}, NewIDs: id != man.TenantID, From: ident}
	if man.KeyHashes && res.NewIDs {
		res.Notes = append(res.Notes, fmt.Sprintf("the archive's key hashes belong to tenant %q and were not restored under %q; a new key was issued", man.TenantID, id))
	}

	// What is there already, and what is left of an earlier attempt.
	var (
		existing registry.Tenant
		job      registry.Job
		replace  bool
	)
	err = p.withTenantLock(ctx, id, func(ctx context.Context, conn *pgxpool.Conn) error {
		return p.inTx(ctx, conn, false, func(tx pgx.Tx) error {
			var err error
			existing, err = registry.GetForUpdate(ctx, tx, id)
			if errors.Is(err, registry.ErrNotFound) {
				existing = registry.Tenant{}
			} else if err != nil {
				return err
			}
			job, err = registry.GetJob(ctx, tx, id, true)
			if errors.Is(err, registry.ErrNotFound) {
				job = registry.Job{}
			} else if err != nil {
				return err
			}
			if job.Kind == registry.JobMove {
				return refused("tenant %q is being moved; finish or abort the move first", id)
			}
			return nil
		})
	})
	if err != nil {
		return RestoreResult{}, wrap("restore", err)
	}
	var prev restoreDetail
	if job.Kind == registry.JobRestore {
		_ = json.Unmarshal(job.Detail, &prev)
	}
	switch {
	case job.Kind == registry.JobRestore && job.Phase == restoreInstalling:
		// A replace was killed after the old tenant made way: only this archive may finish it.
		if prev.Archive != ident {
			return RestoreResult{}, wrap("restore", refused("tenant %q has an unfinished restore of another archive (of %s, %s); rerun it with that archive",
				id, prev.Archive.TenantID, prev.Archive.CreatedAt.Format(time.RFC3339)))
		}
		return p.finishReplace(ctx, ar, man, id, prev, res, start)
	case job.Kind == registry.JobRestore && job.Phase == restoreLoading:
		// A fresh restore was killed or failed: nothing of it is reachable; clean it and start over.
		if err := p.abandonFreshRestore(ctx, id, prev); err != nil {
			return RestoreResult{}, wrap("restore", err)
		}
		existing = registry.Tenant{}
	case job.Kind == registry.JobRestore && job.Phase == restoreStaging:
		// A replace died while staging: the old tenant still serves; drop the staging schema.
		if err := p.dropStaging(ctx, prev.Staging); err != nil {
			return RestoreResult{}, wrap("restore", err)
		}
		if err := registry.DeleteJob(ctx, p.pool, id); err != nil {
			return RestoreResult{}, wrap("restore", err)
		}
	}
	switch {
	case existing.ID == "":
	case existing.Status == registry.StatusDeleting:
		return RestoreResult{}, wrap("restore", refused("tenant %q is being deleted; finish the delete first", id))
	case existing.Status == registry.StatusProvisioning:
		return RestoreResult{}, wrap("restore", refused("tenant %q is being created; finish or delete it first", id))
	case !params.Replace:
		return RestoreResult{}, wrap("restore", &TenantExistsError{ID: id, Tier: existing.Tier, Status: existing.Status})
	default:
		replace = true
	}
	// The restored tenant's quota: the deployment's, with the archive's overrides or else (on
	// replace) the existing tenant's. Its rows replace whatever it held, so they alone count.
	// The manifest's counts are checked now, before anything is written; the content bytes once
	// the rows are loaded, before the tenant is reachable.
	if _, ok := man.Settings[SettingLimits]; !ok && replace {
		if limits, err = registry.GetLimits(ctx, p.pool, id); err != nil {
			return RestoreResult{}, wrap("restore", err)
		}
	}
	quota := p.quotaOf(limits)
	if err := checkQuota(quota, [3]int64{}, manifestUsage(man)); err != nil {
		return RestoreResult{}, wrap("restore", err)
	}
	if replace {
		return p.restoreReplace(ctx, ar, man, existing, target, res, start, quota, params.Progress)
	}
	return p.restoreFresh(ctx, ar, man, id, target, res, start, quota, params.Progress)
}

// stagingSchema is the schema a replacing restore loads into first. It is outside the tenant_
// namespace, owned by the owner role and never granted to the router.
func stagingSchema(id string) string {
	sum := sha256.Sum256([]byte("tenantmem/stage/" + id))
	return "tenantmem_stage_" + hex.EncodeToString(sum[:8])
}

func (p *Provisioner) restoreFresh(ctx context.Context, ar *archive.Reader, man archive.Manifest, id string,
	target registry.Location, res RestoreResult, start time.Time, quota memory.Quota, progress func(archive.Progress)) (RestoreResult, error) {
	detail, _ := json.Marshal(restoreDetail{Archive: res.From, Target: target})
	err := p.withTenantLock(ctx, id, func(ctx context.Context, conn *pgxpool.Conn) error {
		return p.inTx(ctx, conn, false, func(tx pgx.Tx) error {
			if err := p.admit(ctx, tx, target.Placement, target.Tier); err != nil {
				return err
			}
			if _, err := registry.Insert(ctx, tx, registry.TenantInsertParams{
				ID: id, Tier: target.Tier, SchemaName: target.Schema, DatabaseName: target.Database, PlacementID: target.Placement,
				TextSearchConfig: textConfigOf(man),
			}); err != nil {
				return err
			}
			if err := registry.InsertJob(ctx, tx, registry.Job{TenantID: id, Kind: registry.JobRestore, Phase: restoreLoading, Detail: detail}); err != nil {
				return err
			}
			return registry.Audit(ctx, tx, id, "restore_started", p.cfg.Actor, map[string]any{
				"tier": target.Tier, "schema": target.Schema, "database": target.Database, "placement": target.Placement, "archive_tenant": man.TenantID,
				"archive_created_at": man.CreatedAt, "migration_version": man.MigrationVersion,
			})
		})
	})
	if err != nil {
		return RestoreResult{}, wrap("restore", err)
	}
	fail := func(err error) (RestoreResult, error) {
		// Nothing of it is reachable (status provisioning, no key); clean up now rather than
		// leave it to the next attempt. A kill skips this and the next Restore does it.
		if errors.Is(err, errHook) || ctx.Err() != nil {
			return RestoreResult{}, wrap("restore", err)
		}
		if cerr := p.abandonFreshRestore(context.WithoutCancel(ctx), id, restoreDetail{Target: target}); cerr != nil {
			p.cfg.Logger.ErrorContext(ctx, "cleaning up a failed restore", "tenant_id", id, "error", cerr.Error())
		}
		return RestoreResult{}, wrap("restore", err)
	}
	if err := p.hook(ctx, StepRestoreRegistered, id); err != nil {
		return fail(hookErr(err))
	}
	version, rows, err := p.loadInto(ctx, ar, man, id, target, res.NewIDs, progress)
	if err != nil {
		return fail(err)
	}
	res.Rows = rows
	if err := p.checkLoadedQuota(ctx, target, id, quota); err != nil {
		return fail(err)
	}
	if err := p.hook(ctx, StepRestoreVerified, id); err != nil {
		return fail(hookErr(err))
	}
	if err := p.activateRestore(ctx, id, target, version, man, ar.Keys(), false, &res); err != nil {
		return fail(err)
	}
	res.Took = time.Since(start)
	p.cfg.Logger.InfoContext(ctx, "tenant restored", "tenant_id", id, "tier", string(target.Tier), "took", res.Took)
	return res, nil
}

// loadInto loads the archive's rows into a location under owner id, at the archive's version
// (in a staging schema when the location's tables are at another one), migrates them to the
// latest version, grants the router (a schema of its own) and verifies the counts. It returns the
// tables' version.
func (p *Provisioner) loadInto(ctx context.Context, ar *archive.Reader, man archive.Manifest, id string, loc registry.Location,
	newIDs bool, progress func(archive.Progress)) (int64, map[string]int64, error) {
	if ownsSchema(loc) {
		// A schema (or database) of its own: made at the archive's version, loaded, indexed,
		// migrated up.
		_, pool, release, err := p.makeLocationAt(ctx, loc, man.MigrationVersion)
		if err != nil {
			return 0, nil, err
		}
		defer release()
		tgt := archive.Target{Pool: pool, Role: p.cfg.OwnerRole, Schema: loc.Schema, OwnerID: id}
		var res archive.LoadResult
		err = p.withoutIndexes(ctx, pool, loc.Schema, func() error {
			var err error
			res, err = archive.Load(ctx, ar, archive.LoadParams{Target: tgt, RemapIDs: newIDs, Progress: progress})
			return err
		})
		if err != nil {
			return 0, nil, err
		}
		if err := p.hook(ctx, StepRestoreLoaded, id); err != nil {
			return 0, nil, hookErr(err)
		}
		version, err := p.migrateLocation(ctx, loc)
		if err != nil {
			return 0, nil, err
		}
		if err := archive.Verify(ctx, tgt, man, version == man.MigrationVersion, newIDs); err != nil {
			return 0, nil, err
		}
		return version, res.Rows, nil
	}
	version, err := p.migrateLocation(ctx, loc)
	if err != nil {
		return 0, nil, err
	}
	if version == man.MigrationVersion {
		pool, release, err := p.poolFor(ctx, loc)
		if err != nil {
			return 0, nil, err
		}
		defer release()
		tgt := archive.Target{Pool: pool, Role: p.cfg.OwnerRole, Schema: loc.Schema, OwnerID: id}
		res, err := archive.Load(ctx, ar, archive.LoadParams{Target: tgt, RemapIDs: newIDs, Progress: progress})
		if err != nil {
			return 0, nil, err
		}
		if err := p.hook(ctx, StepRestoreLoaded, id); err != nil {
			return 0, nil, hookErr(err)
		}
		return version, res.Rows, archive.Verify(ctx, tgt, man, true, newIDs)
	}
	// A shared schema at another version: load the rows as they were into a staging schema,
	// migrate it, copy.
	staging := stagingSchema(id + "/shared")
	defer func() {
		if err := p.dropStaging(context.WithoutCancel(ctx), staging); err != nil {
			p.cfg.Logger.ErrorContext(ctx, "dropping a staging schema", "schema", staging, "error", err.Error())
		}
	}()
	if err := p.stage(ctx, ar, man, id, staging, newIDs, progress); err != nil {
		return 0, nil, err
	}
	if err := p.hook(ctx, StepRestoreLoaded, id); err != nil {
		return 0, nil, hookErr(err)
	}
	rows, err := p.copyLocation(ctx, id, stagingLocation(id, staging), loc, man, nil)
	return version, rows, err
}

// stagingLocation is the location of a staging schema: a schema of its own in the control
// database (its rows are the tenant's).
func stagingLocation(id, staging string) registry.Location {
	return registry.Location{Tier: registry.TierSchema, Placement: registry.LocalPlacement, Schema: staging, OwnerID: id}
}

// stage loads an archive into a fresh staging schema at its version, migrates it to the latest
// and verifies it.
func (p *Provisioner) stage(ctx context.Context, ar *archive.Reader, man archive.Manifest, id, staging string, newIDs bool,
	progress func(archive.Progress)) error {
	m, _, err := p.ready(ctx)
	if err != nil {
		return err
	}
	if err := p.dropStaging(ctx, staging); err != nil {
		return err
	}
	if err := p.ensureSchema(ctx, p.pool, staging); err != nil {
		return err
	}
	if _, err := m.UpTo(ctx, schema.TenantSet, staging, man.MigrationVersion); err != nil {
		return err
	}
	tgt := archive.Target{Pool: p.pool, Role: p.cfg.OwnerRole, Schema: staging, OwnerID: id}
	if _, err := archive.Load(ctx, ar, archive.LoadParams{Target: tgt, RemapIDs: newIDs, Progress: progress}); err != nil {
		return err
	}
	version, err := m.Up(ctx, schema.TenantSet, staging)
	if err != nil {
		return err
	}
	return archive.Verify(ctx, tgt, man, version == man.MigrationVersion, newIDs)
}

// copyLocation copies tenant id's rows from one location to another (both at the latest
// migration version) and verifies the copy against the source's counts.
func (p *Provisioner) copyLocation(ctx context.Context, id string, from, to registry.Location, base archive.Manifest,
	progress func(archive.Progress)) (map[string]int64, error) {
	srcPool, releaseSrc, err := p.poolFor(ctx, from)
	if err != nil {
		return nil, err
	}
	defer releaseSrc()
	dstPool, releaseDst, err := p.poolFor(ctx, to)
	if err != nil {
		return nil, err
	}
	defer releaseDst()
	tgt := archive.Target{Pool: dstPool, Role: p.cfg.OwnerRole, Schema: to.Schema, OwnerID: id}
	var (
		srcMan archive.Manifest
		res    archive.LoadResult
	)
	copyRows := func() error {
		return pgx.BeginTxFunc(ctx, srcPool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			src := archive.Target{Pool: srcPool, Role: p.cfg.OwnerRole, Schema: from.Schema, OwnerID: id}
			if err := src.Scope(ctx, tx); err != nil {
				return err
			}
			var err error
			srcMan, res, err = archive.Copy(ctx, tx, archive.ExportParams{Schema: from.Schema}, base,
				archive.LoadParams{Target: tgt, Progress: progress})
			return err
		})
	}
	if ownsSchema(to) {
		// A schema of its own that nobody reads yet (callers create it empty): load, then index.
		err = p.withoutIndexes(ctx, dstPool, to.Schema, copyRows)
	} else {
		err = copyRows()
	}
	if err != nil {
		return nil, err
	}
	if err := archive.Verify(ctx, tgt, srcMan, true, false); err != nil {
		return nil, err
	}
	return res.Rows, nil
}

// activateRestore makes a restored tenant active: its location and version, its keys, the end
// of its job, the audit event and the notification, in one transaction under the tenant lock.
func (p *Provisioner) activateRestore(ctx context.Context, id string, loc registry.Location, version int64, man archive.Manifest,
	keys []archive.Key, replaced bool, res *RestoreResult) error {
	err := p.activateRestoreTx(ctx, id, loc, version, man, keys, replaced, res)
	if err == nil {
		p.listWork(ctx, loc)
	}
	return err
}

func (p *Provisioner) activateRestoreTx(ctx context.Context, id string, loc registry.Location, version int64, man archive.Manifest,
	keys []archive.Key, replaced bool, res *RestoreResult) error {
	return p.withTenantLock(ctx, id, func(ctx context.Context, conn *pgxpool.Conn) error {
		return p.inTx(ctx, conn, false, func(tx pgx.Tx) error {
			if _, err := registry.SetLocation(ctx, tx, id, loc, version); err != nil {
				return err
			}
			if _, ok := man.Settings[SettingLimits]; ok {
				l, err := limitsOf(man)
				if err != nil {
					return err
				}
				if err := registry.SetLimits(ctx, tx, id, l); err != nil {
					return err
				}
			}
			if cfg := textConfigOf(man); cfg != "" {
				if err := registry.SetTextSearchConfig(ctx, tx, id, cfg); err != nil {
					return err
				}
			}
			t, err := registry.SetStatus(ctx, tx, id, registry.StatusActive)
			if err != nil {
				return err
			}
			switch {
			case man.KeyHashes && !res.NewIDs:
				hs := make([]registry.KeyHash, len(keys))
				for i, k := range keys {
					hs[i] = registry.KeyHash{KeyID: k.KeyID, SecretHash: k.SecretHash, CreatedAt: k.CreatedAt, RevokedAt: k.RevokedAt,
						Delegate: k.Delegate, CreateDescendants: k.CreateDescendants}
				}
				if err := registry.ReplaceKeys(ctx, tx, id, hs); err != nil {
					return err
				}
				res.KeysRestored = len(hs)
			case replaced:
				// The existing tenant's keys stay.
			default:
				k, err := registry.IssueKey(ctx, tx, id)
				if err != nil {
					return err
				}
				res.Key = &k
			}
			if err := registry.DeleteJob(ctx, tx, id); err != nil {
				return err
			}
			if err := registry.Audit(ctx, tx, id, "restored", p.cfg.Actor, map[string]any{
				"rows": res.Rows, "keys_restored": res.KeysRestored, "replaced": replaced, "new_ids": res.NewIDs,
				"archive_tenant": man.TenantID, "archive_created_at": man.CreatedAt,
			}); err != nil {
				return err
			}
			if err := registry.Notify(ctx, tx, registry.Notification{TenantID: id, Event: "restored"}); err != nil {
				return err
			}
			res.Tenant = t
			return nil
		})
	})
}

// abandonFreshRestore removes what a fresh restore wrote: its rows (or schema), its registry row
// and its job. It is idempotent.
func (p *Provisioner) abandonFreshRestore(ctx context.Context, id string, d restoreDetail) error {
	return p.withTenantLock(ctx, id, func(ctx context.Context, conn *pgxpool.Conn) error {
		t, err := registry.Get(ctx, conn, id)
		if err == nil && t.Status == registry.StatusProvisioning {
			if err := p.dropData(ctx, conn, t); err != nil {
				return err
			}
		} else if err != nil && !errors.Is(err, registry.ErrNotFound) {
			return err
		}
		if d.Staging != "" {
			if err := p.dropStaging(ctx, d.Staging); err != nil {
				return err
			}
		}
		if err := p.dropStaging(ctx, stagingSchema(id+"/shared")); err != nil {
			return err
		}
		return p.inTx(ctx, conn, false, func(tx pgx.Tx) error {
			if err == nil && t.Status == registry.StatusProvisioning {
				if err := registry.Delete(ctx, tx, id); err != nil {
					return err
				}
				if err := registry.Audit(ctx, tx, id, "restore_abandoned", p.cfg.Actor, nil); err != nil {
					return err
				}
			}
			return registry.DeleteJob(ctx, tx, id)
		})
	})
}

// dropStaging drops a staging schema, if it exists.
func (p *Provisioner) dropStaging(ctx context.Context, name string) error {
	if name == "" {
		return nil
	}
	if !strings.HasPrefix(name, "tenantmem_stage_") {
		return fmt.Errorf("refusing to drop schema %q: not a staging schema", name)
	}
	return p.inTx(ctx, p.pool, true, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DROP SCHEMA IF EXISTS `+ident(name)+` CASCADE`)
		return err
	})
}

// restoreReplace loads the archive into a staging schema while the existing tenant serves, then
// takes the tenant down, puts the rows in place and activates it.
func (p *Provisioner) restoreReplace(ctx context.Context, ar *archive.Reader, man archive.Manifest, existing registry.Tenant,
	target registry.Location, res RestoreResult, start time.Time, quota memory.Quota, progress func(archive.Progress)) (RestoreResult, error) {
	id := existing.ID
	d := restoreDetail{Archive: res.From, Target: target, Staging: stagingSchema(id), Previous: existing.Location()}
	detail, _ := json.Marshal(d)
	err := p.inTx(ctx, p.pool, false, func(tx pgx.Tx) error {
		if err := registry.InsertJob(ctx, tx, registry.Job{TenantID: id, Kind: registry.JobRestore, Phase: restoreStaging, Detail: detail}); err != nil {
			return err
		}
		return registry.Audit(ctx, tx, id, "restore_started", p.cfg.Actor, map[string]any{
			"replace": true, "tier": target.Tier, "archive_tenant": man.TenantID, "archive_created_at": man.CreatedAt,
		})
	})
	if err != nil {
		return RestoreResult{}, wrap("restore", err)
	}
	err = p.stage(ctx, ar, man, id, d.Staging, res.NewIDs, progress)
	if err == nil {
		err = p.checkLoadedQuota(ctx, stagingLocation(id, d.Staging), id, quota)
	}
	if err != nil {
		if !errors.Is(err, errHook) && ctx.Err() == nil {
			cctx := context.WithoutCancel(ctx)
			if cerr := p.dropStaging(cctx, d.Staging); cerr == nil {
				_ = registry.DeleteJob(cctx, p.pool, id)
			}
		}
		return RestoreResult{}, wrap("restore", err)
	}
	// The archive was read to its end: every checksum holds.
	if err := p.hook(ctx, StepRestoreStaged, id); err != nil {
		return RestoreResult{}, wrap("restore", hookErr(err))
	}
	// From here the old tenant makes way; a rerun finishes from the staging schema.
	err = p.withTenantLock(ctx, id, func(ctx context.Context, conn *pgxpool.Conn) error {
		return p.inTx(ctx, conn, false, func(tx pgx.Tx) error {
			if _, err := registry.SetStatus(ctx, tx, id, registry.StatusProvisioning); err != nil {
				return err
			}
			if err := registry.SetJobPhase(ctx, tx, id, restoreInstalling, nil); err != nil {
				return err
			}
			return registry.Notify(ctx, tx, registry.Notification{TenantID: id, Event: "restoring"})
		})
	})
	if err != nil {
		return RestoreResult{}, wrap("restore", err)
	}
	return p.finishReplace(ctx, ar, man, id, d, res, start)
}

// finishReplace is the part of a replacing restore after the old tenant was taken down: drop
// its data, copy the staging schema into the target location, activate. Every step is
// idempotent, so a rerun after a kill goes through it again.
func (p *Provisioner) finishReplace(ctx context.Context, ar *archive.Reader, man archive.Manifest, id string, d restoreDetail,
	res RestoreResult, start time.Time) (RestoreResult, error) {
	res.Replaced = true
	if err := p.hook(ctx, StepRestoreInstalling, id); err != nil {
		return RestoreResult{}, wrap("restore", hookErr(err))
	}
	err := p.withTenantLock(ctx, id, func(ctx context.Context, conn *pgxpool.Conn) error {
		// The old rows, then anything a killed attempt left at the target.
		if err := p.dropData(ctx, conn, registry.Tenant{ID: id}.At(d.Previous)); err != nil {
			return err
		}
		return p.dropData(ctx, conn, registry.Tenant{ID: id}.At(d.Target))
	})
	if err != nil {
		return RestoreResult{}, wrap("restore", err)
	}
	version, err := p.prepareLocation(ctx, d.Target)
	if err != nil {
		return RestoreResult{}, wrap("restore", err)
	}
	rows, err := p.copyLocation(ctx, id, stagingLocation(id, d.Staging), d.Target, man, nil)
	if err != nil {
		return RestoreResult{}, wrap("restore", err)
	}
	res.Rows = rows
	if err := p.hook(ctx, StepRestoreInstalled, id); err != nil {
		return RestoreResult{}, wrap("restore", hookErr(err))
	}
	// Keys: a rerun does not read the archive again, so take the key hashes from this reader
	// only when it was read to its end.
	keys := ar.Keys()
	if man.KeyHashes && keys == nil {
		// The archive was not read in this run (a rerun after the staging finished): read it
		// through to reach its keys and verify it.
		if err := drain(ar); err != nil {
			return RestoreResult{}, wrap("restore", err)
		}
		keys = ar.Keys()
	}
	if err := p.activateRestore(ctx, id, d.Target, version, man, keys, true, &res); err != nil {
		return RestoreResult{}, wrap("restore", err)
	}
	if err := p.dropStaging(ctx, d.Staging); err != nil {
		p.cfg.Logger.ErrorContext(ctx, "dropping a staging schema", "schema", d.Staging, "error", err.Error())
	}
	res.Took = time.Since(start)
	p.cfg.Logger.InfoContext(ctx, "tenant restored over the existing one", "tenant_id", id, "took", res.Took)
	return res, nil
}

// drain reads an archive to its end, verifying it.
func drain(ar *archive.Reader) error {
	for {
		if _, err := ar.NextTable(); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		for {
			if _, _, err := ar.NextBlock(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return err
			}
		}
	}
}

// prepareLocation makes a location's tables exist at the latest version, empty of the tenant
// (callers clean it first), and returns that version.
func (p *Provisioner) prepareLocation(ctx context.Context, loc registry.Location) (int64, error) {
	if ownsSchema(loc) {
		_, _, release, err := p.makeLocationAt(ctx, loc, 0)
		if err != nil {
			return 0, err
		}
		release()
	}
	return p.migrateLocation(ctx, loc)
}

// errHook marks a failure injected by Config.Hook: it stands for a crash, so nothing is cleaned.
var errHook = errors.New("stopped by hook")

func hookErr(err error) error { return fmt.Errorf("%w: %w", errHook, err) }

// IndexBuildMemory is the maintenance_work_mem of the index builds that follow a bulk load into a
// fresh schema: an HNSW graph built in memory is many times faster than one that spills.
const IndexBuildMemory = "1GB"

// withoutIndexes runs fn, a bulk load into the tenant tables of a schema nobody reads yet, with
// their secondary indexes dropped, and builds them again afterwards (as pg_restore does):
// building an HNSW or GIN index once over the loaded rows is several times faster than updating it
// row by row. Primary keys and unique constraints stay (foreign keys and upserts need them). The
// indexes are rebuilt even when fn fails, so the schema is never left without them; a crash in
// between leaves a schema that the restore or move that owns it drops and builds again.
func (p *Provisioner) withoutIndexes(ctx context.Context, pool *pgxpool.Pool, schemaName string, fn func() error) error {
	var tables []string
	for _, t := range schema.TenantTables {
		tables = append(tables, t.Name)
	}
	type index struct{ name, def string }
	var idx []index
	err := p.inTx(ctx, pool, true, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT ic.relname, pg_get_indexdef(i.indexrelid)
			FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid
			JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = ANY($2) AND NOT i.indisprimary AND NOT i.indisunique
				AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
			ORDER BY ic.relname`, schemaName, tables)
		if err != nil {
			return err
		}
		idx, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (index, error) {
			var x index
			err := r.Scan(&x.name, &x.def)
			return x, err
		})
		if err != nil {
			return err
		}
		for _, x := range idx {
			if _, err := tx.Exec(ctx, `DROP INDEX `+ident(schemaName)+`.`+ident(x.name)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("provision: drop indexes of %s for the load: %w", schemaName, err)
	}
	loadErr := fn()
	start := time.Now()
	for _, x := range idx {
		err := p.inTx(context.WithoutCancel(ctx), pool, true, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('maintenance_work_mem', $1, true)`, IndexBuildMemory); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, x.def)
			return err
		})
		if err != nil {
			return errors.Join(loadErr, fmt.Errorf("provision: build index %s.%s: %w", schemaName, x.name, err))
		}
	}
	p.cfg.Logger.DebugContext(ctx, "indexes built after the load", "schema", schemaName, "indexes", len(idx), "took", time.Since(start))
	if loadErr != nil {
		return loadErr
	}
	// Statistics, which a fresh table has none of: the first queries (a move's catch-up rounds,
	// the tenant's first searches) are planned on the rows just loaded, not on guesses.
	// (Only the tables that exist: a restore of an older archive loads tables at its version.)
	var existing []string
	if err := pool.QueryRow(ctx, `SELECT coalesce(array_agg(format('%I.%I', n.nspname, c.relname) ORDER BY c.relname), '{}')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = ANY($2) AND c.relkind = 'r'`, schemaName, tables).Scan(&existing); err != nil {
		return fmt.Errorf("provision: analyze %s after the load: %w", schemaName, err)
	}
	if len(existing) > 0 {
		if _, err := pool.Exec(ctx, `ANALYZE `+strings.Join(existing, ", ")); err != nil {
			return fmt.Errorf("provision: analyze %s after the load: %w", schemaName, err)
		}
	}
	return nil
}

// textConfigOf is the text search configuration an archive's manifest carries ("" when none:
// archives of tenantmem before per-tenant configurations, all english).
func textConfigOf(m archive.Manifest) string {
	var c string
	if raw, ok := m.Settings[SettingTextSearchConfig]; ok {
		_ = json.Unmarshal(raw, &c)
	}
	return c
}
