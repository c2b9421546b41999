package provision

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// Defaults.
const (
	DefaultOwnerRole          = "tenantmem_owner"
	DefaultRouterRole         = "tenantmem_router"
	DefaultEmbeddingDimension = 384 // the built-in embedder's dimension
	DefaultParallelism        = 4
)

// ErrNotInitialized means `provisioner init` has not run against this database.
var ErrNotInitialized = errors.New("deployment not initialised: run `provisioner init`")

// Step names, passed to Config.Hook before each step of a tenant operation.
const (
	StepCreateRegistered = "create:registered" // registry row in status provisioning committed
	StepCreateDatabase   = "create:database"   // tenant database created (database tier), before its extension and schema
	StepCreateSchema     = "create:schema"     // schema created, before its migrations
	StepCreateMigrated   = "create:migrated"   // migrations applied, before activation
	StepDeleteMarked     = "delete:marked"     // status deleting committed, before data is dropped
	StepDeleteDropped    = "delete:dropped"    // data dropped, before the registry row goes
	StepMigrateTenant    = "migrate:tenant"    // before each tenant of Migrate
)

// Config configures a [Provisioner].
type Config struct {
	// Pool connects to the main database with enough rights for DDL (the owner role, or a role that
	// may SET ROLE to it; `init` needs a superuser).
	Pool *pgxpool.Pool
	// OwnerRole owns every schema and table the provisioner creates. Default tenantmem_owner.
	OwnerRole string
	// RouterRole is the role the router logs in as: DML only, no BYPASSRLS. Default tenantmem_router.
	RouterRole string
	// Parallelism bounds concurrent tenant migrations in Migrate. Default 4.
	Parallelism int
	// Actor is recorded in the audit log. Default "provisioner".
	Actor string
	// Logger. Default: discard.
	Logger *slog.Logger
	// Quota holds the deployment's default storage quotas of a tenant (MaxDocuments, MaxChunks,
	// MaxContentBytes; the other fields are unused), the router's --tenant-max-* flags: a restore
	// or an import that would make a tenant hold more than them (with its own overrides applied)
	// is refused with a *memory.QuotaError and leaves nothing behind. Zero fields take limit's
	// defaults; limit.Unlimited (-1) turns one off.
	Quota limit.Limits
	// Hook, when set, runs before each named step (the Step* constants) of a tenant operation; an
	// error stops the operation there, exactly as a crash at that point would. For tests.
	Hook func(ctx context.Context, step, tenantID string) error
	// TenantMigrations, when set, replaces migrations/tenant (see
	// schema.MigratorConfig.TenantMigrations). For benchmarks that add a synthetic migration.
	TenantMigrations fs.FS
	// Credentials are the provisioner's credentials on placements other than local (see
	// package placement); local uses Pool's.
	Credentials placement.Credentials
	// ConnectTimeout bounds each connection attempt to another placement. Default 5s.
	ConnectTimeout time.Duration
	// MigrationLockTimeout bounds each migration statement's wait for a lock another session holds,
	// so that a migration never queues a tenant's queries behind it for longer; a run that times out
	// is tried again, then reported as failed (see schema.MigratorConfig.LockTimeout). Default
	// schema.DefaultLockTimeout (2s); negative waits without bound.
	MigrationLockTimeout time.Duration
	// MigrationLockAttempts is how many times a migration run that timed out on a lock is tried
	// before it is reported as failed. Default schema.DefaultLockAttempts.
	MigrationLockAttempts int
}

// migrationLocks is c with the Config's bounds on a migration's waits for locks: every migrator
// the provisioner makes goes through it.
func (p *Provisioner) migrationLocks(c schema.MigratorConfig) schema.MigratorConfig {
	c.LockTimeout, c.LockAttempts = p.cfg.MigrationLockTimeout, p.cfg.MigrationLockAttempts
	return c
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.OwnerRole = cmp.Or(c.OwnerRole, DefaultOwnerRole)
	c.RouterRole = cmp.Or(c.RouterRole, DefaultRouterRole)
	c.Parallelism = cmp.Or(c.Parallelism, DefaultParallelism)
	c.Actor = cmp.Or(c.Actor, "provisioner")
	c.MigrationLockTimeout = cmp.Or(c.MigrationLockTimeout, schema.DefaultLockTimeout)
	c.MigrationLockAttempts = cmp.Or(c.MigrationLockAttempts, schema.DefaultLockAttempts)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

var roleName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (c Config) validate() error {
	if c.Pool == nil {
		return errors.New("provision: Config.Pool is required")
	}
	for _, r := range []string{c.OwnerRole, c.RouterRole} {
		if !roleName.MatchString(r) {
			return fmt.Errorf("provision: role name %q must match %s", r, roleName)
		}
	}
	if c.OwnerRole == c.RouterRole {
		return errors.New("provision: owner and router roles must differ")
	}
	if c.Parallelism < 1 {
		return errors.New("provision: Parallelism must be at least 1")
	}
	return nil
}

// Provisioner is the control plane.
type Provisioner struct {
	cfg   Config
	pool  *pgxpool.Pool
	pools *placement.Pools

	mu       sync.Mutex
	settings *registry.Settings
	migrator *schema.Migrator
	// sharedVersions caches each placement's shared schema migration version, read once per
	// process and refreshed by Migrate.
	sharedVersions map[string]int64
}

// New returns a Provisioner. It connects to other placements only when it needs them; Close
// releases those connections.
func New(cfg Config) (*Provisioner, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pools, err := placement.New(placement.Config{
		Control:        cfg.Pool,
		Login:          placement.LoginProvisioner,
		Credentials:    cfg.Credentials,
		MaxPools:       64,
		ConnectTimeout: cfg.ConnectTimeout,
		Logger:         cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &Provisioner{cfg: cfg, pool: cfg.Pool, pools: pools, sharedVersions: map[string]int64{}}, nil
}

// Close releases the connections to other placements (not Config.Pool, which is the caller's).
func (p *Provisioner) Close() { p.pools.Close() }

// ready loads the deployment settings and builds the migrator, once.
func (p *Provisioner) ready(ctx context.Context) (*schema.Migrator, registry.Settings, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.migrator != nil {
		return p.migrator, *p.settings, nil
	}
	s, err := registry.GetSettings(ctx, p.pool)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, registry.Settings{}, ErrNotInitialized
	}
	if err != nil {
		return nil, registry.Settings{}, err
	}
	m, err := schema.NewMigrator(p.migrationLocks(schema.MigratorConfig{
		ConnConfig:         p.pool.Config().ConnConfig,
		Role:               s.OwnerRole,
		EmbeddingDimension: s.EmbeddingDimension,
		Logger:             p.cfg.Logger,
		TenantMigrations:   p.cfg.TenantMigrations,
	}))
	if err != nil {
		return nil, registry.Settings{}, err
	}
	p.settings, p.migrator = &s, m
	return m, s, nil
}

func (p *Provisioner) hook(ctx context.Context, step, tenantID string) error {
	if p.cfg.Hook == nil {
		return nil
	}
	return p.cfg.Hook(ctx, step, tenantID)
}

// withTenantLock runs fn on one pooled connection that holds the session advisory lock of
// tenantID (registry.LockID) exclusively; fn does all its work on the control database on that
// connection (and the ctx it gets sends placement lookups through it too), so waiters (which each
// hold a connection while PostgreSQL queues them) never starve the holder.
// Router transactions hold the same lock shared: taking it waits for the tenant's requests in
// flight, and requests that start meanwhile queue behind it.
func (p *Provisioner) withTenantLock(ctx context.Context, tenantID string, fn func(ctx context.Context, conn *pgxpool.Conn) error) error {
	id := registry.LockID(tenantID)
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("provision: acquire: %w", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, id); err != nil {
		// A cancelled wait may leave the connection in an unknown state: do not reuse it.
		_ = conn.Conn().Close(context.WithoutCancel(ctx))
		conn.Release()
		return fmt.Errorf("provision: lock tenant: %w", err)
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, id); err != nil {
			// The lock must not outlive us on a pooled connection: close it instead.
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
		conn.Release()
	}()
	// Placement lookups made meanwhile read through conn too.
	return fn(placement.WithRegistry(ctx, conn), conn)
}

// beginner is a pool or a connection.
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// inTx runs fn in a transaction on db; with asOwner it first assumes the owner role for the
// transaction only.
func (p *Provisioner) inTx(ctx context.Context, db beginner, asOwner bool, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if asOwner {
			if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+ident(p.cfg.OwnerRole)); err != nil {
				return fmt.Errorf("provision: assume owner role: %w", err)
			}
		}
		return fn(tx)
	})
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func isCode(err error, codes ...string) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	for _, c := range codes {
		if pgErr.Code == c {
			return true
		}
	}
	return false
}
