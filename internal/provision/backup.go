package provision

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/archive"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// SettingTextSearchConfig is the manifest setting that carries the tenant's text search
// configuration.
const SettingTextSearchConfig = "text_search_config"

// Producer is what archives written by this package name as their producer.
const Producer = "tenantmem provisioner"

// BackupParams configures [Provisioner.Backup].
type BackupParams struct {
	// IncludeKeyHashes adds the SHA-256 hashes of the tenant's API keys (never the keys): a
	// restore under the same id then makes the old keys work again. Whoever holds such an
	// archive can, with a key, reach the restored tenant; without the flag a restore issues a
	// new key.
	IncludeKeyHashes bool
	// SkipSearchHistory leaves the search history out.
	SkipSearchHistory bool
	// EmbeddingModel is recorded in the manifest when set (the provisioner does not know which
	// model the routers use).
	EmbeddingModel string
	// Progress, when set, is called after every block of rows.
	Progress func(archive.Progress)
}

// BackupResult describes a written archive.
type BackupResult struct {
	Manifest archive.Manifest
	// Bytes is the uncompressed size of the archive's frames.
	Bytes int64
	Took  time.Duration
}

// Backup writes an archive of one tenant to w (docs/archive.md). It reads every table in one
// REPEATABLE READ READ ONLY transaction, so the archive is one consistent snapshot while the
// tenant keeps serving, and it reads through the tenant's own scope (search_path and owner id set
// transaction-locally, as the router role when the login may assume it, else as the owner role;
// both are bound by row-level security), so nothing of another tenant can be read, in the shared
// tier included. Active and suspended tenants can be backed up. w is not closed; on error what was
// written is a truncated archive that every restore refuses.
func (p *Provisioner) Backup(ctx context.Context, tenantID string, w io.Writer, params BackupParams) (_ BackupResult, err error) {
	start := time.Now()
	if err := schema.ValidateTenantID(tenantID); err != nil {
		return BackupResult{}, &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	_, settings, err := p.ready(ctx)
	if err != nil {
		return BackupResult{}, err
	}
	t, err := registry.Get(ctx, p.pool, tenantID)
	if err != nil {
		return BackupResult{}, wrap("backup", err)
	}
	if t.Status != registry.StatusActive && t.Status != registry.StatusSuspended {
		return BackupResult{}, wrap("backup", fmt.Errorf("tenant %q is %s: %w", tenantID, t.Status, registry.ErrConflict))
	}
	pool, release, err := p.poolFor(ctx, t.Location())
	if err != nil {
		return BackupResult{}, wrap("backup", err)
	}
	defer release()
	// The console's operations list shows it while it runs, and how it ended.
	prog := &rowProgress{next: params.Progress}
	params.Progress = prog.report
	op := p.startOperation(ctx, registry.OperationStartParams{Kind: registry.OperationBackup, Subject: tenantID, Unit: "rows"}, prog.get)
	defer func() { op.finish(ctx, err) }()
	var res BackupResult
	err = p.snapshotTx(ctx, pool, t, func(tx pgx.Tx) error {
		tables, derived, err := archive.Snapshot(ctx, tx, archive.ExportParams{Schema: t.SchemaName, SkipOptional: params.SkipSearchHistory})
		if err != nil {
			return err
		}
		m := archive.Manifest{
			Producer: Producer, TenantID: t.ID, Tier: string(t.Tier), Placement: t.PlacementID,
			MigrationVersion: t.MigrationVersion, EmbeddingDimension: settings.EmbeddingDimension,
			EmbeddingModel: params.EmbeddingModel, TenantCreatedAt: t.CreatedAt, CreatedAt: time.Now().UTC(),
			Tables: tables, DerivedRows: derived, KeyHashes: params.IncludeKeyHashes,
			Settings: map[string]json.RawMessage{},
		}
		if t.TextSearchConfig != "" {
			// The chunks' text index was made with it; a restore gives the tenant the same.
			m.Settings[SettingTextSearchConfig], _ = json.Marshal(t.TextSearchConfig)
		}
		// The tenant's overrides of the router's limits (its quotas among them) go with it.
		lim, err := registry.GetLimits(ctx, p.pool, t.ID)
		if err != nil {
			return err
		}
		if !lim.IsZero() {
			m.Settings[SettingLimits], _ = json.Marshal(lim)
		}
		var keys []archive.Key
		if params.IncludeKeyHashes {
			// The registry lives in the main database, whatever the tenant's placement.
			ks, err := registry.ListKeyHashes(ctx, p.pool, t.ID)
			if err != nil {
				return err
			}
			for _, k := range ks {
				keys = append(keys, archive.Key{KeyID: k.KeyID, SecretHash: k.SecretHash, CreatedAt: k.CreatedAt, RevokedAt: k.RevokedAt,
					Delegate: k.Delegate, CreateDescendants: k.CreateDescendants})
			}
		}
		aw, err := archive.NewWriter(w, m, archive.WriterOptions{})
		if err != nil {
			return err
		}
		if err := archive.Export(ctx, tx, archive.ExportParams{Schema: t.SchemaName}, aw, params.Progress); err != nil {
			aw.Abort()
			return err
		}
		if params.IncludeKeyHashes {
			if err := aw.WriteKeys(keys); err != nil {
				aw.Abort()
				return err
			}
		}
		if err := aw.Close(); err != nil {
			return err
		}
		res = BackupResult{Manifest: aw.Manifest(), Bytes: aw.Written()}
		return nil
	})
	if err != nil {
		return BackupResult{}, wrap("backup", err)
	}
	res.Took = time.Since(start)
	rows := map[string]int64{}
	for _, tb := range res.Manifest.Tables {
		rows[tb.Name] = tb.Rows
	}
	if err := registry.Audit(ctx, p.pool, t.ID, "backed_up", p.cfg.Actor, map[string]any{
		"rows": rows, "key_hashes": params.IncludeKeyHashes, "bytes": res.Bytes,
	}); err != nil {
		return res, wrap("backup", err)
	}
	p.cfg.Logger.InfoContext(ctx, "tenant backed up", "tenant_id", t.ID, "bytes", res.Bytes, "took", res.Took)
	return res, nil
}

// snapshotTx runs fn in a REPEATABLE READ READ ONLY transaction on pool, scoped to tenant t
// exactly as a router request is (search_path, owner id; no statement timeout), as the router
// role when the login may assume it and as the owner role otherwise. It first checks, inside the
// snapshot, that the registry still shows t where it was, so the snapshot is of the tenant's
// current location.
func (p *Provisioner) snapshotTx(ctx context.Context, pool *pgxpool.Pool, t registry.Tenant, fn func(tx pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		role := p.cfg.OwnerRole
		var canRouter bool
		if err := tx.QueryRow(ctx, `SELECT pg_has_role(current_user, $1, 'MEMBER')`, p.cfg.RouterRole).Scan(&canRouter); err != nil {
			return err
		}
		if canRouter {
			role = p.cfg.RouterRole
		}
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ident(role)); err != nil {
			return fmt.Errorf("assume role %s: %w", role, err)
		}
		path := ident(t.SchemaName) + ", " + ident(schema.ExtensionSchema) + ", pg_temp"
		if _, err := tx.Exec(ctx, `SELECT set_config('search_path', $1, true), set_config('tenantmem.owner_id', $2, true),
			set_config('statement_timeout', '0', true), set_config('work_mem', '256MB', true)`, path, t.ID); err != nil {
			return fmt.Errorf("scope: %w", err)
		}
		if pool == p.pool {
			cur, err := registry.Get(ctx, tx, t.ID)
			if err != nil {
				return err
			}
			if cur.Location() != t.Location() || !cur.CreatedAt.Equal(t.CreatedAt) {
				return fmt.Errorf("tenant %q moved or was re-created while the backup started; run it again: %w", t.ID, registry.ErrConflict)
			}
		}
		return fn(tx)
	})
}
