package registry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// LocalPlacement is the placement of the control server itself: the server and database that hold
// the control schema.
const LocalPlacement = "local"

// Location says where a tenant's rows live: in which tier, on which placement, in which database
// of it, in which schema, under which owner id. It is derived from the registry row by
// [Tenant.Location] and nowhere else, and it is what a move or a restore changes
// ([SetLocation]); the router, the provisioner, the embedding worker and migrate all work from
// it, so no code outside provisioning's create and drop steps needs to know the tiers apart.
// Locations are comparable: two are equal when they name the same place.
type Location struct {
	// Tier is how the rows are kept there: rows of the shared schema, a schema of their own, or
	// a database of their own. Only the steps that make and unmake a location look at it.
	Tier Tier `json:"tier"`
	// Placement names the server; LocalPlacement is the control server.
	Placement string `json:"placement"`
	// Database is the tenant's own database (database tier); "" means the placement's main
	// database, which holds the shared schema and the schema-tier schemas.
	Database string `json:"database,omitempty"`
	// Schema holds the tenant's tables inside that database.
	Schema string `json:"schema"`
	// OwnerID is the value of owner_id on every row of the tenant (its tenant id).
	OwnerID string `json:"owner_id"`
}

// Location returns where the tenant's rows live.
func (t Tenant) Location() Location {
	return Location{Tier: t.Tier, Placement: cmp.Or(t.PlacementID, LocalPlacement), Database: t.DatabaseName,
		Schema: t.SchemaName, OwnerID: t.ID}
}

// At returns the tenant's registry entry as it reads with its rows at loc: the entry that the
// steps making and unmaking a location take (a move's destination, a restore's target).
func (t Tenant) At(loc Location) Tenant {
	t.Tier, t.PlacementID, t.DatabaseName, t.SchemaName = loc.Tier, loc.Placement, loc.Database, loc.Schema
	return t
}

// String names the location for people: "schema tenant_acme on placement local" and the like.
func (l Location) String() string {
	switch {
	case l.Database != "":
		return fmt.Sprintf("%s tier (database %s) on placement %s", l.Tier, l.Database, l.Placement)
	default:
		return fmt.Sprintf("%s tier (schema %s) on placement %s", l.Tier, l.Schema, l.Placement)
	}
}

// DatabaseKey names one database of one placement: what a connection pool connects to.
type DatabaseKey struct {
	Placement string
	// Database is "" for the placement's main database.
	Database string
}

// Key returns the database of the location.
func (l Location) Key() DatabaseKey { return DatabaseKey{Placement: l.Placement, Database: l.Database} }

// IsControl reports whether the database is the control database (the main database of the local
// placement), the one that holds the registry.
func (k DatabaseKey) IsControl() bool { return k.Placement == LocalPlacement && k.Database == "" }

// String is "placement" or "placement/database".
func (k DatabaseKey) String() string {
	if k.Database == "" {
		return k.Placement
	}
	return k.Placement + "/" + k.Database
}

// PlacementState is a placement's state.
type PlacementState string

// The placement states.
const (
	// PlacementActive serves its tenants and takes new ones.
	PlacementActive PlacementState = "active"
	// PlacementDraining serves its tenants but takes no new ones.
	PlacementDraining PlacementState = "draining"
	// PlacementDisabled is not served (the router answers 503 for its tenants) and takes no new
	// tenants. Migrate skips it without counting a failure.
	PlacementDisabled PlacementState = "disabled"
)

// Placement is a PostgreSQL server that holds tenants. Host, Port and Database are empty for the
// local placement, whose connection settings are the control server's. Credentials are never in
// the registry.
type Placement struct {
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	Host        string         `json:"host,omitempty"`
	Port        int            `json:"port,omitempty"`
	Database    string         `json:"database,omitempty"`
	State       PlacementState `json:"state"`
	// MaxTenants is a capacity hint: 0 means none. A full placement takes no new tenants.
	MaxTenants int `json:"max_tenants,omitempty"`
	// Tiers are the tiers the placement takes.
	Tiers []Tier `json:"tiers"`
	// Tenants counts the registry entries on the placement, whatever their status.
	Tenants   int       `json:"tenants"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Takes reports whether the placement takes the tier.
func (p Placement) Takes(t Tier) bool { return slices.Contains(p.Tiers, t) }

// Full reports whether the placement reached its capacity hint.
func (p Placement) Full() bool { return p.MaxTenants > 0 && p.Tenants >= p.MaxTenants }

var (
	placementName = regexp.MustCompile(`\A[a-z0-9][a-z0-9_-]{0,62}\z`)
	placementHost = regexp.MustCompile(`\A(/[A-Za-z0-9._/-]{0,252}|[A-Za-z0-9][A-Za-z0-9.:_-]{0,252})\z`)
	databaseName  = regexp.MustCompile(`\A[A-Za-z_][A-Za-z0-9_$-]{0,62}\z`)
)

// ValidatePlacementName returns a *FieldError (field "placement") unless name is 1-63 characters
// of [a-z0-9_-] starting with a letter or digit.
func ValidatePlacementName(name string) error {
	if !placementName.MatchString(name) {
		return &FieldError{Field: "placement", Message: fmt.Sprintf(
			"%q is not a placement name: 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit", name)}
	}
	return nil
}

// ParseTiers parses a comma-separated list of tiers ("shared,schema"); "" means all three.
func ParseTiers(s string) ([]Tier, error) {
	if strings.TrimSpace(s) == "" {
		return []Tier{TierShared, TierSchema, TierDatabase}, nil
	}
	var out []Tier
	for _, part := range strings.Split(s, ",") {
		t, err := ParseTier(strings.TrimSpace(part))
		if err != nil {
			return nil, tiersError(err)
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// tiersError names the field "tiers" in a tier's error.
func tiersError(err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return &FieldError{Field: "tiers", Message: fe.Message}
	}
	return err
}

// PlacementInsertParams registers a placement.
type PlacementInsertParams struct {
	Name        string
	Description string
	Host        string
	Port        int
	Database    string
	MaxTenants  int
	// Tiers defaults to all three.
	Tiers []Tier
}

// Validate checks the parameters and returns a *FieldError naming the first bad field.
func (p PlacementInsertParams) Validate() error {
	if err := ValidatePlacementName(p.Name); err != nil {
		return err
	}
	switch {
	case p.Name == LocalPlacement:
		return &FieldError{Field: "placement", Message: "local is the control server; it is registered by init"}
	case !placementHost.MatchString(p.Host):
		return &FieldError{Field: "host", Message: fmt.Sprintf("%q is not a host name, IP address or socket folder", p.Host)}
	case p.Port < 1 || p.Port > 65535:
		return &FieldError{Field: "port", Message: "must be from 1 to 65535"}
	case !databaseName.MatchString(p.Database):
		return &FieldError{Field: "database", Message: fmt.Sprintf(
			"%q is not a database name: 1-63 characters of letters, digits, '_', '$' and '-'", p.Database)}
	case p.MaxTenants < 0 || p.MaxTenants > math.MaxInt32:
		return &FieldError{Field: "max_tenants", Message: fmt.Sprintf("must be from 0 (no limit) to %d", math.MaxInt32)}
	case len(p.Description) > 500:
		return &FieldError{Field: "description", Message: "at most 500 characters"}
	case strings.ContainsRune(p.Description, 0) || !utf8.ValidString(p.Description):
		return &FieldError{Field: "description", Message: "must be valid UTF-8 text without NUL characters"}
	}
	for _, t := range p.Tiers {
		if _, err := ParseTier(string(t)); err != nil {
			return tiersError(err)
		}
	}
	return nil
}

const placementColumns = `p.placement_id, p.description, coalesce(p.host, ''), coalesce(p.port, 0),
	coalesce(p.database_name, ''), p.state, coalesce(p.max_tenants, 0), p.tiers,
	(SELECT coalesce(sum(c.tenants), 0) FROM tenantmem_control.placement_tenant_counts c WHERE c.placement_id = p.placement_id),
	p.created_at, p.updated_at`

func scanPlacement(row pgx.Row) (Placement, error) {
	var (
		p     Placement
		tiers []string
	)
	err := row.Scan(&p.Name, &p.Description, &p.Host, &p.Port, &p.Database, &p.State, &p.MaxTenants, &tiers,
		&p.Tenants, &p.CreatedAt, &p.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Placement{}, ErrNotFound
	}
	for _, t := range tiers {
		p.Tiers = append(p.Tiers, Tier(t))
	}
	return p, err
}

// GetPlacement returns one placement with its tenant count, or ErrNotFound.
func GetPlacement(ctx context.Context, db DBTX, name string) (Placement, error) {
	p, err := scanPlacement(db.QueryRow(ctx, `SELECT `+placementColumns+` FROM tenantmem_control.placements p
		WHERE p.placement_id = $1`, name))
	if errors.Is(err, ErrNotFound) {
		return Placement{}, fmt.Errorf("registry: placement %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Placement{}, fmt.Errorf("registry: get placement: %w", err)
	}
	return p, nil
}

// LockPlacement returns one placement, locked for the rest of the transaction: FOR SHARE, or FOR
// UPDATE when exclusive. Tenant creation holds it shared while it registers a tenant there, so a
// state change (which holds it exclusively) and a removal never race with a registration.
func LockPlacement(ctx context.Context, tx pgx.Tx, name string, exclusive bool) (Placement, error) {
	mode := "SHARE"
	if exclusive {
		mode = "UPDATE"
	}
	p, err := scanPlacement(tx.QueryRow(ctx, `SELECT `+placementColumns+` FROM tenantmem_control.placements p
		WHERE p.placement_id = $1 FOR `+mode+` OF p`, name))
	if errors.Is(err, ErrNotFound) {
		return Placement{}, fmt.Errorf("registry: placement %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Placement{}, fmt.Errorf("registry: lock placement: %w", err)
	}
	// The count again, in a statement of its own: the locking statement computed it from a
	// snapshot taken before it waited for the lock, so a creator that held the lock and has just
	// committed its tenant was not counted there (at max_tenants 3, 8 concurrent creates made 4).
	// A new statement sees what committed before the lock was granted.
	var n int64
	if err := tx.QueryRow(ctx, `SELECT coalesce(sum(tenants), 0)::bigint FROM tenantmem_control.placement_tenant_counts
		WHERE placement_id = $1`, name).Scan(&n); err != nil {
		return Placement{}, fmt.Errorf("registry: lock placement: count: %w", err)
	}
	p.Tenants = int(n)
	return p, nil
}

// ListPlacements returns every placement in name order, with tenant counts.
func ListPlacements(ctx context.Context, db DBTX) ([]Placement, error) {
	rows, err := db.Query(ctx, `SELECT `+placementColumns+` FROM tenantmem_control.placements p ORDER BY p.placement_id`)
	if err != nil {
		return nil, fmt.Errorf("registry: list placements: %w", err)
	}
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Placement, error) { return scanPlacement(r) })
	if err != nil {
		return nil, fmt.Errorf("registry: list placements: %w", err)
	}
	return ps, nil
}

// ChoosePlacement applies the default placement policy for a new tenant of a tier: among active
// placements that take the tier and are not full, the one with the fewest tenants, ties broken by
// name. It returns ErrNotFound when none qualifies.
func ChoosePlacement(ctx context.Context, db DBTX, tier Tier) (Placement, error) {
	p, err := scanPlacement(db.QueryRow(ctx, `SELECT * FROM (SELECT `+placementColumns+` FROM tenantmem_control.placements p
		WHERE p.state = 'active' AND $1 = ANY (p.tiers)) c (name, description, host, port, database, state, max_tenants,
			tiers, tenants, created_at, updated_at)
		WHERE max_tenants = 0 OR tenants < max_tenants
		ORDER BY tenants, name LIMIT 1`, string(tier)))
	if errors.Is(err, ErrNotFound) {
		return Placement{}, fmt.Errorf("registry: no active placement takes new %s-tier tenants: %w", tier, ErrNotFound)
	}
	if err != nil {
		return Placement{}, fmt.Errorf("registry: choose placement: %w", err)
	}
	return p, nil
}

// InsertPlacement registers a placement in state active. It returns ErrExists when the name is
// taken.
func InsertPlacement(ctx context.Context, db DBTX, p PlacementInsertParams) (Placement, error) {
	if err := p.Validate(); err != nil {
		return Placement{}, err
	}
	tiers := tierStrings(p.Tiers)
	var maxTenants *int
	if p.MaxTenants > 0 {
		maxTenants = &p.MaxTenants
	}
	_, err := db.Exec(ctx, `INSERT INTO tenantmem_control.placements
		(placement_id, description, host, port, database_name, max_tenants, tiers)
		VALUES ($1, $2, $3, $4, $5, $6, coalesce($7::text[], '{shared,schema,database}'))`,
		p.Name, p.Description, p.Host, p.Port, p.Database, maxTenants, tiers)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation {
			return Placement{}, fmt.Errorf("registry: placement %q: %w", p.Name, ErrExists)
		}
		return Placement{}, fmt.Errorf("registry: insert placement: %w", err)
	}
	return GetPlacement(ctx, db, p.Name)
}

// UpdatePlacementHints sets a placement's description, capacity hint and tiers.
func UpdatePlacementHints(ctx context.Context, db DBTX, p PlacementInsertParams) (Placement, error) {
	var maxTenants *int
	if p.MaxTenants > 0 {
		maxTenants = &p.MaxTenants
	}
	if _, err := db.Exec(ctx, `UPDATE tenantmem_control.placements SET description = $2, max_tenants = $3,
		tiers = coalesce($4::text[], '{shared,schema,database}'), updated_at = now() WHERE placement_id = $1`,
		p.Name, p.Description, maxTenants, tierStrings(p.Tiers)); err != nil {
		return Placement{}, fmt.Errorf("registry: update placement: %w", err)
	}
	return GetPlacement(ctx, db, p.Name)
}

func tierStrings(ts []Tier) []string {
	if len(ts) == 0 {
		return nil
	}
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = string(t)
	}
	return out
}

// SetPlacementState changes a placement's state.
func SetPlacementState(ctx context.Context, db DBTX, name string, state PlacementState) error {
	tag, err := db.Exec(ctx, `UPDATE tenantmem_control.placements SET state = $2, updated_at = now()
		WHERE placement_id = $1`, name, string(state))
	if err != nil {
		return fmt.Errorf("registry: set placement state: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("registry: placement %q: %w", name, ErrNotFound)
	}
	return nil
}

// DeletePlacement removes a placement. It returns ErrConflict while any tenant is registered on
// it, and ErrNotFound when it does not exist.
func DeletePlacement(ctx context.Context, db DBTX, name string) error {
	tag, err := db.Exec(ctx, `DELETE FROM tenantmem_control.placements WHERE placement_id = $1`, name)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.ForeignKeyViolation {
			return fmt.Errorf("registry: placement %q still holds tenants: %w", name, ErrConflict)
		}
		return fmt.Errorf("registry: delete placement: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("registry: placement %q: %w", name, ErrNotFound)
	}
	return nil
}

// ListTenantDatabases returns the databases of the active and suspended database-tier tenants:
// each holds tenant tables (and its own embedding work queue). A range probe of
// tenants_tier_version_idx, whatever the number of tenants of the other tiers.
func ListTenantDatabases(ctx context.Context, db DBTX) ([]DatabaseKey, error) {
	rows, err := db.Query(ctx, `SELECT placement_id, database_name FROM tenantmem_control.tenants
		WHERE tier = 'database' AND status IN ('active', 'suspended') AND database_name IS NOT NULL
		ORDER BY placement_id, database_name`)
	if err != nil {
		return nil, fmt.Errorf("registry: list tenant databases: %w", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowToStructByPos[DatabaseKey])
	if err != nil {
		return nil, fmt.Errorf("registry: list tenant databases: %w", err)
	}
	return keys, nil
}
