package provision

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// InitParams configures [Provisioner.Init].
type InitParams struct {
	// EmbeddingDimension is fixed for the deployment at the first init. Default 384.
	EmbeddingDimension int
	// RouterPassword, when set, becomes the router role's password.
	RouterPassword string
	// LeakproofTextSearch marks pg_catalog.ts_match_vq (the tsvector @@ tsquery operator)
	// LEAKPROOF in this database. Row-level security only lets the planner use an index for
	// LEAKPROOF operators; without it, text search tests every chunk of the tenant (189 ms p50 at
	// 100,000 chunks against 2.4 ms with it, docs/benchmarks.md). The function raises no error
	// that depends on a row's content, which is what LEAKPROOF promises, but the flag changes a
	// system function, so it is the operator's decision. Once set, init never unsets it.
	LeakproofTextSearch bool
}

// InitResult reports what Init did.
type InitResult struct {
	EmbeddingDimension int
	ControlVersion     int64
	SharedVersion      int64
}

// Init prepares the database: the extensions schema with pgvector, the owner and router roles,
// the control schema and its migrations, the deployment settings and the shared-tier schema. It
// needs a superuser (to create roles and the extension). It is idempotent: running it again
// migrates what is behind and changes nothing else. The embedding dimension cannot change once set.
func (p *Provisioner) Init(ctx context.Context, params InitParams) (InitResult, error) {
	dim := params.EmbeddingDimension
	if dim == 0 {
		dim = DefaultEmbeddingDimension
	}
	if dim < 1 || dim > 16000 {
		return InitResult{}, &registry.FieldError{Field: "embedding_dimension", Message: "must be between 1 and 16000"}
	}
	if err := ValidateRouterPassword(params.RouterPassword); err != nil {
		return InitResult{}, err
	}
	if err := p.prepareServer(ctx, p.pool, serverParams{
		routerPassword: params.RouterPassword, leakproofTextSearch: params.LeakproofTextSearch, control: true,
	}); err != nil {
		return InitResult{}, err
	}
	router := ident(p.cfg.RouterRole)

	controlMigrator, err := schema.NewMigrator(p.migrationLocks(schema.MigratorConfig{
		ConnConfig: p.pool.Config().ConnConfig,
		Role:       p.cfg.OwnerRole,
		Logger:     p.cfg.Logger,
	}))
	if err != nil {
		return InitResult{}, err
	}
	controlVersion, err := controlMigrator.Up(ctx, schema.ControlSet, schema.ControlSchema)
	if err != nil {
		return InitResult{}, fmt.Errorf("provision: init: %w", err)
	}

	err = p.inTx(ctx, p.pool, true, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO tenantmem_control.settings (embedding_dimension, owner_role, router_role)
			VALUES ($1, $2, $3) ON CONFLICT (singleton) DO NOTHING`, dim, p.cfg.OwnerRole, p.cfg.RouterRole); err != nil {
			return err
		}
		s, err := registry.GetSettings(ctx, tx)
		if err != nil {
			return err
		}
		if params.EmbeddingDimension != 0 && s.EmbeddingDimension != params.EmbeddingDimension {
			return &registry.FieldError{Field: "embedding_dimension", Message: fmt.Sprintf(
				"this deployment was initialised with dimension %d; it cannot change", s.EmbeddingDimension)}
		}
		if s.OwnerRole != p.cfg.OwnerRole || s.RouterRole != p.cfg.RouterRole {
			return fmt.Errorf("this deployment uses roles %s and %s, not %s and %s",
				s.OwnerRole, s.RouterRole, p.cfg.OwnerRole, p.cfg.RouterRole)
		}
		dim = s.EmbeddingDimension
		// The router reads the registry (to resolve keys and tenants) and nothing else here.
		for _, stmt := range []string{
			`GRANT USAGE ON SCHEMA tenantmem_control TO ` + router,
			`GRANT SELECT ON tenantmem_control.tenants, tenantmem_control.api_keys, tenantmem_control.settings,
				tenantmem_control.placements, tenantmem_control.placement_tenant_counts, tenantmem_control.tenant_limits TO ` + router,
			// Its one write: a shared-tier descendant on first use of a create_descendants key
			// (control migration 6), through a SECURITY DEFINER function that checks everything.
			`GRANT EXECUTE ON FUNCTION tenantmem_control.create_descendant(text, text, bigint) TO ` + router,
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		var fe *registry.FieldError
		if errors.As(err, &fe) {
			return InitResult{}, fe
		}
		return InitResult{}, fmt.Errorf("provision: init: %w", err)
	}

	m, _, err := p.ready(ctx)
	if err != nil {
		return InitResult{}, err
	}
	if _, err := p.migrateWorkQueue(ctx, p.pool, m); err != nil {
		return InitResult{}, err
	}
	if err := p.ensureSchema(ctx, p.pool, schema.SharedSchema); err != nil {
		return InitResult{}, err
	}
	sharedVersion, err := p.migrateSchema(ctx, m, schema.TenantSet, schema.SharedSchema, false)
	if err != nil {
		return InitResult{}, err
	}
	p.setSharedVersion(registry.LocalPlacement, sharedVersion)
	if err := registry.SetSharedMigrationVersion(ctx, p.pool, registry.LocalPlacement, sharedVersion); err != nil {
		return InitResult{}, err
	}
	p.cfg.Logger.InfoContext(ctx, "initialised", "embedding_dimension", dim,
		"control_version", controlVersion, "shared_version", sharedVersion)
	return InitResult{EmbeddingDimension: dim, ControlVersion: controlVersion, SharedVersion: sharedVersion}, nil
}

// ResetLeakproofTextSearch undoes InitParams.LeakproofTextSearch: it marks the full-text match
// operator NOT LEAKPROOF again in the database of pool (a superuser's). Text search is then slow
// on large tenants but its cost no longer depends on other shared-tier tenants' words. It is a
// no-op when the flag is not set.
func ResetLeakproofTextSearch(ctx context.Context, pool *pgxpool.Pool) error {
	var on bool
	if err := pool.QueryRow(ctx, `SELECT proleakproof FROM pg_proc WHERE oid = 'pg_catalog.ts_match_vq(tsvector, tsquery)'::regprocedure`).
		Scan(&on); err != nil {
		return fmt.Errorf("provision: read the text match operator: %w", err)
	}
	if !on {
		return nil
	}
	if _, err := pool.Exec(ctx, `ALTER FUNCTION pg_catalog.ts_match_vq(tsvector, tsquery) NOT LEAKPROOF`); err != nil {
		return fmt.Errorf("provision: reset the text match operator: %w", err)
	}
	return nil
}

// ensureSchema creates a schema owned by the owner role, lets the router role use it, and sets
// the schema's default privileges (see schemaPrivileges). Idempotent; every statement is a probe
// or a write of one catalog row, whatever the number of schemas.
func (p *Provisioner) ensureSchema(ctx context.Context, db beginner, name string) error {
	err := p.inTx(ctx, db, true, func(tx pgx.Tx) error {
		for _, stmt := range append([]string{`CREATE SCHEMA IF NOT EXISTS ` + ident(name)}, p.schemaPrivileges(name)...) {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("%s: %w", stmt, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("provision: create schema %s: %w", name, err)
	}
	return nil
}

// schemaPrivileges are the statements that give the router role USAGE on a schema and, through
// the schema's default privileges, DML on every table and USAGE on every sequence the owner role
// creates in it from then on, at creation, by name. That replaces `GRANT ... ON ALL TABLES IN
// SCHEMA` after each migration, which reads the whole of pg_class (every relation of every
// schema) and made creating and migrating a tenant cost more with each tenant; it also closes the
// gap in which a table added by a migration existed without the router's grants. Each statement
// writes at most one catalog row. They run as the owner role.
func (p *Provisioner) schemaPrivileges(name string) []string {
	router, s := ident(p.cfg.RouterRole), ident(name)
	return []string{
		`GRANT USAGE ON SCHEMA ` + s + ` TO ` + router,
		`ALTER DEFAULT PRIVILEGES IN SCHEMA ` + s + ` GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ` + router,
		`ALTER DEFAULT PRIVILEGES IN SCHEMA ` + s + ` GRANT USAGE, SELECT ON SEQUENCES TO ` + router,
	}
}

// versionTableRevokes take back from the router role what the default privileges gave it on
// goose's version table of a schema, by name.
func (p *Provisioner) versionTableRevokes(name string) []string {
	router, s := ident(p.cfg.RouterRole), ident(name)
	return []string{
		`REVOKE ALL ON ` + s + `.` + ident(schema.VersionTable) + ` FROM ` + router,
		`REVOKE ALL ON SEQUENCE ` + s + `.` + ident(schema.VersionTable+"_id_seq") + ` FROM ` + router,
	}
}

// migrateSchema brings one existing schema to the latest migration of set. The work on the schema
// (its default privileges when withPrivileges, for schemas made before they existed; the
// migrations; the revoke on goose's version table) runs on the migration run's own short-lived
// connection, so the provisioner's pool caches nothing of the schema. Idempotent.
func (p *Provisioner) migrateSchema(ctx context.Context, m *schema.Migrator, set schema.Set, name string, withPrivileges bool) (int64, error) {
	var params schema.ApplyParams
	if withPrivileges {
		params.Before = p.schemaPrivileges(name)
	}
	params.After = p.versionTableRevokes(name)
	res, err := m.Apply(ctx, set, name, params)
	if err != nil {
		return 0, fmt.Errorf("provision: %w", err)
	}
	return res.Version, nil
}

// migrateWorkQueue brings the placement schema (tenantmem_placement: the embedding work queue) of
// the database db reaches, and m migrates, to its latest migration. It reads the schema's version first and does nothing more when it is
// current. It returns whether it applied anything.
func (p *Provisioner) migrateWorkQueue(ctx context.Context, db beginner, m *schema.Migrator) (bool, error) {
	latest, err := schema.Latest(schema.PlacementSet)
	if err != nil {
		return false, err
	}
	if b, ok := db.(schema.Batcher); ok {
		if v, err := schema.Versions(ctx, b, schema.PlacementSet, []string{schema.PlacementSchema}); err == nil && v[0] == latest {
			return false, nil
		}
	}
	if err := p.ensureSchema(ctx, db, schema.PlacementSchema); err != nil {
		return false, err
	}
	if _, err := p.migrateSchema(ctx, m, schema.PlacementSet, schema.PlacementSchema, false); err != nil {
		return false, err
	}
	return true, nil
}

// ValidateRouterPassword checks a router password before it goes to any server: PostgreSQL cannot
// take a NUL byte (the server answers with a protocol error), and a password is text of bounded
// length. The error names the field, never the value.
func ValidateRouterPassword(pw string) error {
	switch {
	case strings.ContainsRune(pw, 0):
		return &registry.FieldError{Field: "router_password", Message: "must not contain a NUL character"}
	case !utf8.ValidString(pw):
		return &registry.FieldError{Field: "router_password", Message: "must be valid UTF-8"}
	case len(pw) > 1024:
		return &registry.FieldError{Field: "router_password", Message: "at most 1024 bytes"}
	}
	return nil
}

func quoteLiteral(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

// serverParams configures prepareServer.
type serverParams struct {
	routerPassword      string
	leakproofTextSearch bool
	// control also creates the control schema (init, on the control server).
	control bool
}

// prepareServer prepares one database of a server the way init prepares the first and
// `placement add` every other: the owner and router roles (cluster-wide), the owner role granted
// to the login, the extensions schema with pgvector, the database grants, and optionally the
// LEAKPROOF text match operator and the router's password. It needs a superuser and is
// idempotent.
func (p *Provisioner) prepareServer(ctx context.Context, pool *pgxpool.Pool, sp serverParams) error {
	owner, router := ident(p.cfg.OwnerRole), ident(p.cfg.RouterRole)

	// Roles are cluster-wide: create them tolerating a concurrent init of another database.
	// Granting the owner role to the login user also writes a cluster-wide catalog, so it goes
	// here too: two inits racing on it see a unique violation, not a second grant.
	for _, stmt := range []string{
		`CREATE ROLE ` + owner + ` NOLOGIN`,
		`CREATE ROLE ` + router + ` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT`,
		`GRANT ` + owner + ` TO CURRENT_USER`,
	} {
		// A concurrent init may also make PostgreSQL report "tuple concurrently updated" (XX000)
		// on the shared catalog row; the statement is idempotent, so try it again.
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			if _, err = pool.Exec(ctx, stmt); err == nil || !isCode(err, pgerrcode.InternalError) {
				break
			}
		}
		if err != nil && !isCode(err, pgerrcode.DuplicateObject, pgerrcode.UniqueViolation) {
			return fmt.Errorf("provision: prepare server: %s: %w", stmt, err)
		}
	}
	err := p.inTx(ctx, pool, false, func(tx pgx.Tx) error {
		// A router role that already existed must still be harmless.
		var super, bypass bool
		if err := tx.QueryRow(ctx, `SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1`, p.cfg.RouterRole).
			Scan(&super, &bypass); err != nil {
			return err
		}
		if super || bypass {
			return fmt.Errorf("router role %s is a superuser or has BYPASSRLS; row-level security would not apply", p.cfg.RouterRole)
		}
		var db string
		if err := tx.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
			return err
		}
		stmts := []string{
			`CREATE SCHEMA IF NOT EXISTS ` + ident(schema.ExtensionSchema),
			`CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA ` + ident(schema.ExtensionSchema),
			`GRANT CONNECT, CREATE, TEMPORARY ON DATABASE ` + ident(db) + ` TO ` + owner,
			`GRANT CONNECT ON DATABASE ` + ident(db) + ` TO ` + router,
			`GRANT USAGE ON SCHEMA ` + ident(schema.ExtensionSchema) + ` TO ` + owner + `, ` + router,
		}
		if sp.control {
			stmts = append(stmts, `CREATE SCHEMA IF NOT EXISTS `+ident(schema.ControlSchema)+` AUTHORIZATION `+owner)
		}
		if sp.leakproofTextSearch {
			stmts = append(stmts, `ALTER FUNCTION pg_catalog.ts_match_vq(tsvector, tsquery) LEAKPROOF`)
		}
		if sp.routerPassword != "" {
			stmts = append(stmts, `ALTER ROLE `+router+` PASSWORD `+quoteLiteral(sp.routerPassword))
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				// The statement names the failure, except the password's: a secret never goes
				// into an error, a log line or an API answer.
				what := s
				if strings.Contains(s, " PASSWORD ") {
					what = "ALTER ROLE " + router + " PASSWORD (the router password)"
				}
				if isCode(err, pgerrcode.InsufficientPrivilege) {
					return fmt.Errorf("%s: %w (init needs a superuser)", what, err)
				}
				return fmt.Errorf("%s: %w", what, err)
			}
		}
		var extSchema string
		if err := tx.QueryRow(ctx, `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
			WHERE e.extname = 'vector'`).Scan(&extSchema); err != nil {
			return err
		}
		if extSchema != schema.ExtensionSchema {
			return fmt.Errorf("the vector extension is installed in schema %q; tenantmem needs it in %q (ALTER EXTENSION vector SET SCHEMA %s)",
				extSchema, schema.ExtensionSchema, schema.ExtensionSchema)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("provision: prepare server: %w", err)
	}
	return nil

}
