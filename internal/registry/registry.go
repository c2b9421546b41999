package registry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Tier says where a tenant's rows live.
type Tier string

// The tiers.
const (
	TierShared   Tier = "shared"   // one shared schema, rows tagged with owner_id
	TierSchema   Tier = "schema"   // its own schema tenant_<name> in the main database
	TierDatabase Tier = "database" // its own database on its placement
)

// ParseTier returns the tier named s, or an error naming the field "tier".
func ParseTier(s string) (Tier, error) {
	switch t := Tier(s); t {
	case TierShared, TierSchema, TierDatabase:
		return t, nil
	}
	return "", &FieldError{Field: "tier", Message: fmt.Sprintf("unknown tier %q; want shared, schema or database", s)}
}

// Status is a tenant's lifecycle state.
type Status string

// The statuses. Only active tenants are served by the router.
const (
	StatusProvisioning Status = "provisioning"
	StatusActive       Status = "active"
	StatusSuspended    Status = "suspended"
	StatusDeleting     Status = "deleting"
)

// Channel is the NOTIFY channel on which every registry change is announced, with a JSON
// [Notification] as payload.
const Channel = "tenantmem_registry"

// Errors. They are matched with errors.Is; HTTP and CLI map them to status and exit codes.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrConflict means the tenant is in a state that does not allow the operation.
	ErrConflict = errors.New("conflict")
	// ErrUnauthenticated means an API key is malformed, unknown, revoked or wrong.
	ErrUnauthenticated = errors.New("invalid API key")
	// ErrNoPlacement means no placement takes a new tenant (draining, disabled, full): a conflict.
	ErrNoPlacement = fmt.Errorf("no placement takes the tenant: %w", ErrConflict)
)

// FieldError is invalid input, naming the field.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Tenant is one registry entry.
type Tenant struct {
	ID               string `json:"tenant_id"`
	Tier             Tier   `json:"tier"`
	SchemaName       string `json:"schema_name"`
	DatabaseName     string `json:"database_name,omitempty"`
	PlacementID      string `json:"placement"`
	Status           Status `json:"status"`
	MigrationVersion int64  `json:"migration_version"`
	// TextSearchConfig is the tenant's text search configuration (english, simple, ...).
	TextSearchConfig string    `json:"text_search_config"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// APIKey describes a key without its secret.
type APIKey struct {
	KeyID     string     `json:"key_id"`
	TenantID  string     `json:"tenant_id"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Delegate lets the key act for any registered tenant strictly below its own (the router's
	// Tenantmem-Act-As header). Fixed at issue time.
	Delegate bool `json:"delegate"`
	// CreateDescendants lets the router register a missing descendant in the shared tier on
	// the key's first request for it. It implies Delegate. Fixed at issue time.
	CreateDescendants bool `json:"create_descendants"`
}

// KeyIssueParams describes a key to issue.
type KeyIssueParams struct {
	TenantID string
	// Delegate and CreateDescendants are the key's scopes (see APIKey); CreateDescendants
	// requires Delegate.
	Delegate          bool
	CreateDescendants bool
}

// Validate reports scopes that do not go together, naming the field.
func (p KeyIssueParams) Validate() error {
	if p.CreateDescendants && !p.Delegate {
		return &FieldError{Field: "create_descendants", Message: "requires delegate: a key that creates descendants must be able to act for them"}
	}
	return nil
}

// IssuedKey is a newly issued key. Key is the clear key, shown once and never stored.
type IssuedKey struct {
	APIKey
	Key string `json:"api_key"`
}

// Notification is the payload of a NOTIFY on [Channel]. A tenant's change names the tenant (and
// the key, for a revocation); a placement's change names the placement and no tenant.
type Notification struct {
	TenantID  string `json:"tenant_id,omitempty"`
	Event     string `json:"event"`
	KeyID     string `json:"key_id,omitempty"`
	Placement string `json:"placement,omitempty"`
}

// DBTX is what the registry needs from a connection, pool or transaction.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const tenantColumns = `tenant_id, tier, schema_name, coalesce(database_name, ''), placement_id, status,
	migration_version, text_search_config, created_at, updated_at`

func scanTenant(row pgx.Row) (Tenant, error) {
	var t Tenant
	err := row.Scan(&t.ID, &t.Tier, &t.SchemaName, &t.DatabaseName, &t.PlacementID, &t.Status,
		&t.MigrationVersion, &t.TextSearchConfig, &t.CreatedAt, &t.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Tenant{}, ErrNotFound
	}
	return t, err
}

// Get returns one tenant, or ErrNotFound.
func Get(ctx context.Context, db DBTX, tenantID string) (Tenant, error) {
	t, err := scanTenant(db.QueryRow(ctx, `SELECT `+tenantColumns+` FROM tenantmem_control.tenants WHERE tenant_id = $1`, tenantID))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Tenant{}, fmt.Errorf("registry: get tenant: %w", err)
	}
	return t, err
}

// GetForUpdate is Get with a row lock, for use inside a transaction.
func GetForUpdate(ctx context.Context, tx pgx.Tx, tenantID string) (Tenant, error) {
	t, err := scanTenant(tx.QueryRow(ctx, `SELECT `+tenantColumns+` FROM tenantmem_control.tenants WHERE tenant_id = $1 FOR UPDATE`, tenantID))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Tenant{}, fmt.Errorf("registry: get tenant: %w", err)
	}
	return t, err
}

// TenantListParams selects a page of tenants, ordered by tenant id.
type TenantListParams struct {
	// After is the last tenant id of the previous page ("" for the first page).
	After string
	// Limit is the page size; 0 means no limit.
	Limit int
	// Tier and Statuses filter when set.
	Tier     Tier
	Statuses []Status
}

// List returns tenants in tenant id order.
func List(ctx context.Context, db DBTX, p TenantListParams) ([]Tenant, error) {
	var statuses []string
	for _, s := range p.Statuses {
		statuses = append(statuses, string(s))
	}
	var limit *int
	if p.Limit > 0 {
		limit = &p.Limit
	}
	rows, err := db.Query(ctx, `SELECT `+tenantColumns+` FROM tenantmem_control.tenants
		WHERE tenant_id > $1 AND ($2 = '' OR tier = $2) AND ($3::text[] IS NULL OR status = ANY($3))
		ORDER BY tenant_id LIMIT $4`, p.After, string(p.Tier), statuses, limit)
	if err != nil {
		return nil, fmt.Errorf("registry: list tenants: %w", err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tenant, error) { return scanTenant(r) })
	if err != nil {
		return nil, fmt.Errorf("registry: list tenants: %w", err)
	}
	return ts, nil
}

// TenantInsertParams is a new registry entry, always in status provisioning.
type TenantInsertParams struct {
	ID           string
	Tier         Tier
	SchemaName   string
	DatabaseName string
	PlacementID  string
	// TextSearchConfig is the tenant's text search configuration; empty means english.
	TextSearchConfig string
}

// Insert adds a tenant in status provisioning. It returns ErrExists when the id, or the schema or
// database name, is taken.
func Insert(ctx context.Context, db DBTX, p TenantInsertParams) (Tenant, error) {
	var dbName *string
	if p.DatabaseName != "" {
		dbName = &p.DatabaseName
	}
	t, err := scanTenant(db.QueryRow(ctx, `INSERT INTO tenantmem_control.tenants
		(tenant_id, tier, schema_name, database_name, placement_id, status, text_search_config)
		VALUES ($1, $2, $3, $4, coalesce(nullif($5, ''), 'local'), 'provisioning', coalesce(nullif($6, ''), 'english'))
		RETURNING `+tenantColumns, p.ID, string(p.Tier), p.SchemaName, dbName, p.PlacementID, p.TextSearchConfig))
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			switch {
			case pgErr.Code == pgerrcode.UniqueViolation && pgErr.ConstraintName == "tenants_pkey":
				return Tenant{}, fmt.Errorf("registry: tenant %q: %w", p.ID, ErrExists)
			case pgErr.Code == pgerrcode.UniqueViolation:
				return Tenant{}, fmt.Errorf("registry: tenant %q: schema or database name %q is taken by another tenant: %w", p.ID, p.SchemaName, ErrExists)
			case pgErr.Code == pgerrcode.ForeignKeyViolation && pgErr.ConstraintName == "tenants_placement_id_fkey":
				return Tenant{}, &FieldError{Field: "placement", Message: fmt.Sprintf("unknown placement %q", p.PlacementID)}
			}
		}
		return Tenant{}, fmt.Errorf("registry: insert tenant: %w", err)
	}
	return t, nil
}

// SetStatus moves a tenant to status and returns it.
func SetStatus(ctx context.Context, db DBTX, tenantID string, status Status) (Tenant, error) {
	t, err := scanTenant(db.QueryRow(ctx, `UPDATE tenantmem_control.tenants SET status = $2, updated_at = now()
		WHERE tenant_id = $1 RETURNING `+tenantColumns, tenantID, string(status)))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Tenant{}, fmt.Errorf("registry: set status: %w", err)
	}
	return t, err
}

// SetMigrationVersion records the tenant migration version of one tenant.
func SetMigrationVersion(ctx context.Context, db DBTX, tenantID string, version int64) error {
	if _, err := db.Exec(ctx, `UPDATE tenantmem_control.tenants SET migration_version = $2, updated_at = now()
		WHERE tenant_id = $1 AND migration_version IS DISTINCT FROM $2`, tenantID, version); err != nil {
		return fmt.Errorf("registry: set migration version: %w", err)
	}
	return nil
}

// SetSharedMigrationVersion records the version of a placement's shared schema: on the placement
// (the version whose router grants are in place) and on every shared-tier tenant of that placement
// whose recorded version differs. Finding those is two range probes of tenants_tier_version_idx, so
// with nothing to change it writes nothing, whatever the number of shared-tier tenants.
func SetSharedMigrationVersion(ctx context.Context, db DBTX, placement string, version int64) error {
	if _, err := db.Exec(ctx, `UPDATE tenantmem_control.placements SET shared_migration_version = $1
		WHERE placement_id = $2 AND shared_migration_version <> $1`, version, placement); err != nil {
		return fmt.Errorf("registry: set shared migration version: %w", err)
	}
	if _, err := db.Exec(ctx, `UPDATE tenantmem_control.tenants SET migration_version = $1, updated_at = now()
		WHERE tier = 'shared' AND (migration_version < $1 OR migration_version > $1) AND placement_id = $2`,
		version, placement); err != nil {
		return fmt.Errorf("registry: set shared migration version: %w", err)
	}
	return nil
}

// SchemaTenant is a tenant with a schema of its own (schema or database tier), as
// [ListSchemaTenants] returns it.
type SchemaTenant struct {
	ID               string
	Tier             Tier
	SchemaName       string
	MigrationVersion int64
	PlacementID      string
	DatabaseName     string
}

// Location is where the tenant's schema is.
func (t SchemaTenant) Location() Location {
	return Tenant{ID: t.ID, Tier: t.Tier, SchemaName: t.SchemaName, PlacementID: t.PlacementID,
		DatabaseName: t.DatabaseName}.Location()
}

// SchemaTenantListParams selects the schema-tier and database-tier tenants that are active or
// suspended.
type SchemaTenantListParams struct {
	// Lagging, when non-negative, keeps the tenants whose recorded migration version differs from
	// it: range probes of tenants_tier_version_idx, whatever the number of tenants.
	Lagging int64
}

// ListSchemaTenants returns the active and suspended tenants of the schema and database tiers
// (those whose schemas `migrate` keeps current one by one), in tenant id order.
func ListSchemaTenants(ctx context.Context, db DBTX, p SchemaTenantListParams) ([]SchemaTenant, error) {
	rows, err := db.Query(ctx, `SELECT tenant_id, tier, schema_name, migration_version, placement_id,
			coalesce(database_name, '')
		FROM tenantmem_control.tenants
		WHERE tier IN ('schema', 'database') AND status IN ('active', 'suspended')
		  AND ($1 < 0 OR migration_version < $1 OR migration_version > $1)
		ORDER BY tenant_id`, p.Lagging)
	if err != nil {
		return nil, fmt.Errorf("registry: list schema tenants: %w", err)
	}
	ts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[SchemaTenant])
	if err != nil {
		return nil, fmt.Errorf("registry: list schema tenants: %w", err)
	}
	return ts, nil
}

// CountSchemaTenants counts the active and suspended tenants of the schema and database tiers, by
// placement.
func CountSchemaTenants(ctx context.Context, db DBTX) (map[string]int, error) {
	rows, err := db.Query(ctx, `SELECT placement_id, count(*) FROM tenantmem_control.tenants
		WHERE tier IN ('schema', 'database') AND status IN ('active', 'suspended') GROUP BY placement_id`)
	if err != nil {
		return nil, fmt.Errorf("registry: count schema tenants: %w", err)
	}
	out := map[string]int{}
	var (
		name string
		n    int
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &n}, func() error {
		out[name] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: count schema tenants: %w", err)
	}
	return out, nil
}

// Delete removes a tenant's registry entry; its keys go with it. The audit log keeps its history.
func Delete(ctx context.Context, db DBTX, tenantID string) error {
	if _, err := db.Exec(ctx, `DELETE FROM tenantmem_control.tenants WHERE tenant_id = $1`, tenantID); err != nil {
		return fmt.Errorf("registry: delete tenant: %w", err)
	}
	return nil
}

// Audit appends a lifecycle event to the audit log.
func Audit(ctx context.Context, db DBTX, tenantID, event, actor string, detail map[string]any) error {
	if detail == nil {
		detail = map[string]any{}
	}
	if _, err := db.Exec(ctx, `INSERT INTO tenantmem_control.audit_log (tenant_id, event, actor, detail)
		VALUES ($1, $2, $3, $4)`, tenantID, event, actor, detail); err != nil {
		return fmt.Errorf("registry: audit: %w", err)
	}
	return nil
}

// AuditEvent is one audit log row.
type AuditEvent struct {
	EventID   int64          `json:"event_id"`
	TenantID  string         `json:"tenant_id"`
	Event     string         `json:"event"`
	Actor     string         `json:"actor"`
	Detail    map[string]any `json:"detail"`
	CreatedAt time.Time      `json:"created_at"`
}

// AuditLog returns a tenant's events, oldest first.
func AuditLog(ctx context.Context, db DBTX, tenantID string) ([]AuditEvent, error) {
	rows, err := db.Query(ctx, `SELECT event_id, tenant_id, event, actor, detail, created_at
		FROM tenantmem_control.audit_log WHERE tenant_id = $1 ORDER BY event_id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("registry: audit log: %w", err)
	}
	evs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[AuditEvent])
	if err != nil {
		return nil, fmt.Errorf("registry: audit log: %w", err)
	}
	return evs, nil
}

// LockID is the advisory lock of one tenant. The provisioner holds it exclusively while it creates
// or deletes the tenant; every router transaction of the tenant holds it shared (see
// routing.Handle.Scope), so a delete waits for the requests in flight and no request runs while
// a delete drops the tenant's data.
func LockID(tenantID string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("tenantmem/tenant/" + tenantID))
	return int64(h.Sum64() >> 1)
}

// Notify announces a change on [Channel]. Inside a transaction the notification is delivered at
// commit, and not at all on rollback.
func Notify(ctx context.Context, db DBTX, n Notification) error {
	payload, err := json.Marshal(n)
	if err != nil {
		return err
	}
	if _, err := db.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, string(payload)); err != nil {
		return fmt.Errorf("registry: notify: %w", err)
	}
	return nil
}

// API keys. The clear key is "tm_" + key id (16 characters of [a-z0-9]) + "_" + secret (64 hex
// digits, 256 random bits). Only SHA-256 of the secret is stored: the secret has full entropy, so a
// slow password hash would add latency without adding safety.
const keyPrefix = "tm_"

const keyIDAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func newKeyID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = keyIDAlphabet[int(b[i])%len(keyIDAlphabet)]
	}
	return string(b[:])
}

// ParseKey splits a clear key into its id and secret, or returns ErrUnauthenticated.
func ParseKey(key string) (keyID, secret string, err error) {
	rest, ok := strings.CutPrefix(key, keyPrefix)
	if !ok || len(rest) != 16+1+64 || rest[16] != '_' {
		return "", "", ErrUnauthenticated
	}
	keyID, secret = rest[:16], rest[17:]
	for i := 0; i < len(keyID); i++ {
		if !strings.ContainsRune(keyIDAlphabet, rune(keyID[i])) {
			return "", "", ErrUnauthenticated
		}
	}
	if _, err := hex.DecodeString(secret); err != nil {
		return "", "", ErrUnauthenticated
	}
	return keyID, secret, nil
}

// HashSecret is the stored form of a key secret.
func HashSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// IssueKey creates a key for a tenant, with no delegation scope, and returns it in clear, once.
func IssueKey(ctx context.Context, db DBTX, tenantID string) (IssuedKey, error) {
	return IssueKeyWith(ctx, db, KeyIssueParams{TenantID: tenantID})
}

// IssueKeyWith creates a key with the scopes of p and returns it in clear, once.
func IssueKeyWith(ctx context.Context, db DBTX, p KeyIssueParams) (IssuedKey, error) {
	if err := p.Validate(); err != nil {
		return IssuedKey{}, err
	}
	tenantID := p.TenantID
	var s [32]byte
	_, _ = rand.Read(s[:])
	secret := hex.EncodeToString(s[:])
	k := IssuedKey{APIKey: APIKey{KeyID: newKeyID(), TenantID: tenantID, Delegate: p.Delegate, CreateDescendants: p.CreateDescendants}}
	k.Key = keyPrefix + k.KeyID + "_" + secret
	err := db.QueryRow(ctx, `INSERT INTO tenantmem_control.api_keys (key_id, tenant_id, secret_hash, delegate, create_descendants)
		VALUES ($1, $2, $3, $4, $5) RETURNING created_at`, k.KeyID, tenantID, HashSecret(secret), p.Delegate, p.CreateDescendants).Scan(&k.CreatedAt)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.ForeignKeyViolation {
			return IssuedKey{}, fmt.Errorf("registry: tenant %q: %w", tenantID, ErrNotFound)
		}
		return IssuedKey{}, fmt.Errorf("registry: issue key: %w", err)
	}
	return k, nil
}

// RevokeKey marks a tenant's key revoked. It returns ErrNotFound when the key does not exist or
// belongs to another tenant. Revoking twice is not an error.
func RevokeKey(ctx context.Context, db DBTX, tenantID, keyID string) error {
	tag, err := db.Exec(ctx, `UPDATE tenantmem_control.api_keys SET revoked_at = coalesce(revoked_at, now())
		WHERE key_id = $1 AND tenant_id = $2`, keyID, tenantID)
	if err != nil {
		return fmt.Errorf("registry: revoke key: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("registry: key %q of tenant %q: %w", keyID, tenantID, ErrNotFound)
	}
	return nil
}

// ListKeys returns a tenant's keys, newest first, without secrets.
func ListKeys(ctx context.Context, db DBTX, tenantID string) ([]APIKey, error) {
	rows, err := db.Query(ctx, `SELECT key_id, tenant_id, created_at, revoked_at, delegate, create_descendants FROM tenantmem_control.api_keys
		WHERE tenant_id = $1 ORDER BY created_at DESC, key_id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("registry: list keys: %w", err)
	}
	ks, err := pgx.CollectRows(rows, pgx.RowToStructByPos[APIKey])
	if err != nil {
		return nil, fmt.Errorf("registry: list keys: %w", err)
	}
	return ks, nil
}

// Authenticate resolves a clear API key to its tenant. Lookup is by key id (primary key); the
// secret is compared in constant time. A malformed, unknown, revoked or wrong key, and a key of a
// tenant being deleted, all give ErrUnauthenticated. The caller decides what a suspended or
// provisioning tenant may do.
func Authenticate(ctx context.Context, db DBTX, key string) (Tenant, string, error) {
	p, err := Authorize(ctx, db, key)
	return p.Tenant, p.KeyID, err
}

// Principal is what an API key stands for: its tenant, the key's id and scopes, and the
// tenant's limit overrides.
type Principal struct {
	Tenant Tenant
	KeyID  string
	Limits TenantLimits
	// Delegate and CreateDescendants are the key's scopes (see APIKey).
	Delegate          bool
	CreateDescendants bool
}

// Authorize is Authenticate that also returns the tenant's limit overrides, in the same query.
func Authorize(ctx context.Context, db DBTX, key string) (Principal, error) {
	keyID, secret, err := ParseKey(key)
	if err != nil {
		return Principal{}, err
	}
	var (
		hash    []byte
		revoked *time.Time
		p       = Principal{KeyID: keyID}
		t       = &p.Tenant
		l       = &p.Limits
	)
	err = db.QueryRow(ctx, `SELECT k.secret_hash, k.revoked_at, t.tenant_id, t.tier, t.schema_name,
			coalesce(t.database_name, ''), t.placement_id, t.status, t.migration_version, t.text_search_config, t.created_at, t.updated_at,
			l.requests_per_second, l.burst, l.max_concurrent, l.max_documents, l.max_chunks, l.max_content_bytes,
			k.delegate, k.create_descendants
		FROM tenantmem_control.api_keys k JOIN tenantmem_control.tenants t USING (tenant_id)
		LEFT JOIN tenantmem_control.tenant_limits l USING (tenant_id)
		WHERE k.key_id = $1`, keyID).Scan(&hash, &revoked, &t.ID, &t.Tier, &t.SchemaName, &t.DatabaseName,
		&t.PlacementID, &t.Status, &t.MigrationVersion, &t.TextSearchConfig, &t.CreatedAt, &t.UpdatedAt,
		&l.RequestsPerSecond, &l.Burst, &l.MaxConcurrent, &l.MaxDocuments, &l.MaxChunks, &l.MaxContentBytes,
		&p.Delegate, &p.CreateDescendants)
	if errors.Is(err, pgx.ErrNoRows) {
		// Spend the same work as a found key, so timing does not tell key ids apart.
		subtle.ConstantTimeCompare(HashSecret(secret), make([]byte, sha256.Size))
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, fmt.Errorf("registry: authenticate: %w", err)
	}
	if subtle.ConstantTimeCompare(HashSecret(secret), hash) != 1 || revoked != nil || t.Status == StatusDeleting {
		return Principal{}, ErrUnauthenticated
	}
	return p, nil
}

// TenantLimits are one tenant's overrides of the router's default limits. A nil field takes the
// default; zero means no limit for this tenant.
type TenantLimits struct {
	// RequestsPerSecond is the sustained request rate (token bucket).
	RequestsPerSecond *float64 `json:"requests_per_second"`
	// Burst is how many requests may come at once above the rate.
	Burst *int `json:"burst"`
	// MaxConcurrent is how many requests may be in flight at once.
	MaxConcurrent *int `json:"max_concurrent"`
	// MaxDocuments, MaxChunks and MaxContentBytes are storage quotas, checked at ingest.
	MaxDocuments    *int64 `json:"max_documents"`
	MaxChunks       *int64 `json:"max_chunks"`
	MaxContentBytes *int64 `json:"max_content_bytes"`
}

// IsZero reports whether no override is set.
func (l TenantLimits) IsZero() bool {
	return l.RequestsPerSecond == nil && l.Burst == nil && l.MaxConcurrent == nil && l.MaxDocuments == nil &&
		l.MaxChunks == nil && l.MaxContentBytes == nil
}

// Validate reports a negative or non-finite override, naming its field.
func (l TenantLimits) Validate() error {
	if r := l.RequestsPerSecond; r != nil && !(*r >= 0 && *r < 1e9) {
		return &FieldError{Field: "requests_per_second", Message: "must be a number from 0 (no limit) to 1e9"}
	}
	for _, f := range []struct {
		name string
		v    *int64
	}{
		{"burst", intPtr64(l.Burst)}, {"max_concurrent", intPtr64(l.MaxConcurrent)},
		{"max_documents", l.MaxDocuments}, {"max_chunks", l.MaxChunks}, {"max_content_bytes", l.MaxContentBytes},
	} {
		if f.v != nil && *f.v < 0 {
			return &FieldError{Field: f.name, Message: "must not be negative (0 means no limit, null the default)"}
		}
	}
	if l.Burst != nil && *l.Burst > 1<<30 || l.MaxConcurrent != nil && *l.MaxConcurrent > 1<<30 {
		return &FieldError{Field: "burst", Message: "too large"}
	}
	return nil
}

func intPtr64(p *int) *int64 {
	if p == nil {
		return nil
	}
	v := int64(*p)
	return &v
}

// GetLimits returns a tenant's overrides (all nil when it has none). It does not check that the
// tenant exists.
func GetLimits(ctx context.Context, db DBTX, tenantID string) (TenantLimits, error) {
	var l TenantLimits
	err := db.QueryRow(ctx, `SELECT requests_per_second, burst, max_concurrent, max_documents, max_chunks,
			max_content_bytes FROM tenantmem_control.tenant_limits WHERE tenant_id = $1`, tenantID).
		Scan(&l.RequestsPerSecond, &l.Burst, &l.MaxConcurrent, &l.MaxDocuments, &l.MaxChunks, &l.MaxContentBytes)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return TenantLimits{}, fmt.Errorf("registry: get limits: %w", err)
	}
	return l, nil
}

// SetLimits replaces a tenant's overrides (an all-nil value removes them). It returns ErrNotFound
// when the tenant does not exist. Announce the change with [Notify] in the same transaction.
func SetLimits(ctx context.Context, db DBTX, tenantID string, l TenantLimits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if l.IsZero() {
		if _, err := db.Exec(ctx, `DELETE FROM tenantmem_control.tenant_limits WHERE tenant_id = $1`, tenantID); err != nil {
			return fmt.Errorf("registry: set limits: %w", err)
		}
		return nil
	}
	_, err := db.Exec(ctx, `INSERT INTO tenantmem_control.tenant_limits AS l (tenant_id, requests_per_second, burst,
			max_concurrent, max_documents, max_chunks, max_content_bytes)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (tenant_id) DO UPDATE SET requests_per_second = excluded.requests_per_second,
			burst = excluded.burst, max_concurrent = excluded.max_concurrent, max_documents = excluded.max_documents,
			max_chunks = excluded.max_chunks, max_content_bytes = excluded.max_content_bytes, updated_at = now()`,
		tenantID, l.RequestsPerSecond, l.Burst, l.MaxConcurrent, l.MaxDocuments, l.MaxChunks, l.MaxContentBytes)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.ForeignKeyViolation {
			return fmt.Errorf("registry: tenant %q: %w", tenantID, ErrNotFound)
		}
		return fmt.Errorf("registry: set limits: %w", err)
	}
	return nil
}

// Settings are the deployment-wide settings written by init.
type Settings struct {
	EmbeddingDimension int
	OwnerRole          string
	RouterRole         string
	// DeploymentID is a random id of the deployment (control migration 4), hashed into the names
	// of database-tier databases so two deployments sharing a server never collide.
	DeploymentID string
}

// GetSettings reads the settings, or ErrNotFound before init.
func GetSettings(ctx context.Context, db DBTX) (Settings, error) {
	var s Settings
	err := db.QueryRow(ctx, `SELECT embedding_dimension, owner_role, router_role, deployment_id FROM tenantmem_control.settings`).
		Scan(&s.EmbeddingDimension, &s.OwnerRole, &s.RouterRole, &s.DeploymentID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Settings{}, ErrNotFound
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName) {
			return Settings{}, ErrNotFound
		}
		return Settings{}, fmt.Errorf("registry: settings: %w", err)
	}
	return s, nil
}

// SharedMigrationVersion is the version of a placement's shared schema whose router grants are in
// place, as the provisioner recorded it (0 before it recorded one). It needs control migration 3.
func SharedMigrationVersion(ctx context.Context, db DBTX, placement string) (int64, error) {
	var v int64
	if err := db.QueryRow(ctx, `SELECT shared_migration_version FROM tenantmem_control.placements
		WHERE placement_id = $1`, placement).Scan(&v); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, ErrNotFound
		}
		return 0, fmt.Errorf("registry: shared migration version: %w", err)
	}
	return v, nil
}
