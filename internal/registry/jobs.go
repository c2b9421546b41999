package registry

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Job kinds.
const (
	JobRestore = "restore"
	JobMove    = "move"
)

// Job is a restore or a move in progress: what a rerun needs to finish or undo it.
type Job struct {
	TenantID  string          `json:"tenant_id"`
	Kind      string          `json:"kind"`
	Phase     string          `json:"phase"`
	Detail    json.RawMessage `json:"detail"`
	StartedAt time.Time       `json:"started_at"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// GetJob returns the tenant's job, or ErrNotFound. With forUpdate it locks the row (inside a
// transaction).
func GetJob(ctx context.Context, db DBTX, tenantID string, forUpdate bool) (Job, error) {
	q := `SELECT tenant_id, kind, phase, detail, started_at, updated_at FROM tenantmem_control.tenant_jobs WHERE tenant_id = $1`
	if forUpdate {
		q += ` FOR UPDATE`
	}
	var j Job
	err := db.QueryRow(ctx, q, tenantID).Scan(&j.TenantID, &j.Kind, &j.Phase, &j.Detail, &j.StartedAt, &j.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, ErrNotFound
	}
	if err != nil {
		return Job{}, fmt.Errorf("registry: get job: %w", err)
	}
	return j, nil
}

// ListJobs returns every job, oldest first.
func ListJobs(ctx context.Context, db DBTX) ([]Job, error) {
	rows, err := db.Query(ctx, `SELECT tenant_id, kind, phase, detail, started_at, updated_at
		FROM tenantmem_control.tenant_jobs ORDER BY started_at, tenant_id`)
	if err != nil {
		return nil, fmt.Errorf("registry: list jobs: %w", err)
	}
	js, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Job])
	if err != nil {
		return nil, fmt.Errorf("registry: list jobs: %w", err)
	}
	return js, nil
}

// InsertJob records a new job; ErrExists when the tenant already has one.
func InsertJob(ctx context.Context, db DBTX, j Job) error {
	if j.Detail == nil {
		j.Detail = json.RawMessage(`{}`)
	}
	_, err := db.Exec(ctx, `INSERT INTO tenantmem_control.tenant_jobs (tenant_id, kind, phase, detail)
		VALUES ($1, $2, $3, $4)`, j.TenantID, j.Kind, j.Phase, j.Detail)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation {
			return fmt.Errorf("registry: tenant %q has a job in progress: %w", j.TenantID, ErrConflict)
		}
		return fmt.Errorf("registry: insert job: %w", err)
	}
	return nil
}

// SetJobPhase moves a job to phase; detail, when not nil, replaces its detail.
func SetJobPhase(ctx context.Context, db DBTX, tenantID, phase string, detail json.RawMessage) error {
	tag, err := db.Exec(ctx, `UPDATE tenantmem_control.tenant_jobs SET phase = $2, detail = coalesce($3, detail),
		updated_at = now() WHERE tenant_id = $1`, tenantID, phase, detail)
	if err != nil {
		return fmt.Errorf("registry: set job phase: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("registry: job of tenant %q: %w", tenantID, ErrNotFound)
	}
	return nil
}

// DeleteJob removes a finished or abandoned job.
func DeleteJob(ctx context.Context, db DBTX, tenantID string) error {
	if _, err := db.Exec(ctx, `DELETE FROM tenantmem_control.tenant_jobs WHERE tenant_id = $1`, tenantID); err != nil {
		return fmt.Errorf("registry: delete job: %w", err)
	}
	return nil
}

// SetLocation points a tenant at another location (the flip of a move or a replacing restore)
// and records the migration version of its tables there. ErrExists when a schema or database
// name is taken by another tenant.
func SetLocation(ctx context.Context, db DBTX, tenantID string, loc Location, version int64) (Tenant, error) {
	var dbName *string
	if loc.Database != "" {
		dbName = &loc.Database
	}
	t, err := scanTenant(db.QueryRow(ctx, `UPDATE tenantmem_control.tenants SET tier = $2, schema_name = $3,
			database_name = $4, placement_id = coalesce(nullif($5, ''), 'local'), migration_version = $6, updated_at = now()
		WHERE tenant_id = $1 RETURNING `+tenantColumns, tenantID, string(loc.Tier), loc.Schema, dbName, loc.Placement, version))
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation {
			return Tenant{}, fmt.Errorf("registry: tenant %q: schema or database name %q is taken by another tenant: %w",
				tenantID, cmp.Or(loc.Database, loc.Schema), ErrExists)
		}
		if !errors.Is(err, ErrNotFound) {
			return Tenant{}, fmt.Errorf("registry: set location: %w", err)
		}
	}
	return t, err
}

// KeyHash is a stored API key with its secret hash, for backups that carry key hashes.
type KeyHash struct {
	KeyID      string
	SecretHash []byte
	CreatedAt  time.Time
	RevokedAt  *time.Time
	// Delegate and CreateDescendants are the key's scopes (see APIKey).
	Delegate          bool
	CreateDescendants bool
}

// ListKeyHashes returns a tenant's keys with their secret hashes, oldest first.
func ListKeyHashes(ctx context.Context, db DBTX, tenantID string) ([]KeyHash, error) {
	rows, err := db.Query(ctx, `SELECT key_id, secret_hash, created_at, revoked_at, delegate, create_descendants FROM tenantmem_control.api_keys
		WHERE tenant_id = $1 ORDER BY created_at, key_id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("registry: list key hashes: %w", err)
	}
	ks, err := pgx.CollectRows(rows, pgx.RowToStructByPos[KeyHash])
	if err != nil {
		return nil, fmt.Errorf("registry: list key hashes: %w", err)
	}
	return ks, nil
}

// ReplaceKeys deletes a tenant's keys and inserts the given ones (a restore of key hashes).
// ErrExists when a key id is another tenant's.
func ReplaceKeys(ctx context.Context, db DBTX, tenantID string, keys []KeyHash) error {
	if _, err := db.Exec(ctx, `DELETE FROM tenantmem_control.api_keys WHERE tenant_id = $1`, tenantID); err != nil {
		return fmt.Errorf("registry: replace keys: %w", err)
	}
	for _, k := range keys {
		if _, err := db.Exec(ctx, `INSERT INTO tenantmem_control.api_keys (key_id, tenant_id, secret_hash, created_at, revoked_at,
			delegate, create_descendants) VALUES ($1, $2, $3, $4, $5, $6, $7)`, k.KeyID, tenantID, k.SecretHash, k.CreatedAt, k.RevokedAt,
			k.Delegate, k.CreateDescendants); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation {
				return fmt.Errorf("registry: key %q belongs to another tenant: %w", k.KeyID, ErrExists)
			}
			if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.CheckViolation {
				return &FieldError{Field: "archive", Message: fmt.Sprintf("key %q is malformed", k.KeyID)}
			}
			return fmt.Errorf("registry: replace keys: %w", err)
		}
	}
	return nil
}

// SetTextSearchConfig sets a tenant's text search configuration (a restore applies the
// archive's, with which its chunks were indexed).
func SetTextSearchConfig(ctx context.Context, db DBTX, tenantID, config string) error {
	if _, err := db.Exec(ctx, `UPDATE tenantmem_control.tenants SET text_search_config = $2, updated_at = now()
		WHERE tenant_id = $1 AND text_search_config IS DISTINCT FROM $2`, tenantID, config); err != nil {
		return fmt.Errorf("registry: set text search configuration: %w", err)
	}
	return nil
}
