package schema

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"github.com/sethvargo/go-retry"

	"github.com/tenantmem/tenantmem/migrations/control"
	"github.com/tenantmem/tenantmem/migrations/placement"
	"github.com/tenantmem/tenantmem/migrations/tenant"
)

// Set is one set of migrations.
type Set int

const (
	// TenantSet is migrations/tenant: the tables of one tenant schema.
	TenantSet Set = iota
	// ControlSet is migrations/control: the registry.
	ControlSet
	// PlacementSet is migrations/placement: the bookkeeping of one database that holds tenant
	// tables (PlacementSchema), such as which tenants have embedding work.
	PlacementSet
)

// FS returns the set's embedded migrations.
func (s Set) FS() fs.FS { return s.fs() }

func (s Set) fs() fs.FS {
	switch s {
	case ControlSet:
		return control.FS
	case PlacementSet:
		return placement.FS
	}
	return tenant.FS
}

func (s Set) String() string {
	switch s {
	case ControlSet:
		return "control"
	case PlacementSet:
		return "placement"
	}
	return "tenant"
}

// VersionTable is the name of goose's version table inside each migrated schema.
const VersionTable = "goose_db_version"

// MigratorConfig configures a [Migrator].
type MigratorConfig struct {
	// ConnConfig is how to reach the database. Each run copies it and adds its own search_path.
	ConnConfig *pgx.ConnConfig
	// Role, when set, is assumed with SET ROLE on every migration connection, so the objects created
	// belong to it (the owner role) whoever the login user is.
	Role string
	// EmbeddingDimension is handed to tenant migrations as the connection setting
	// tenantmem.embedding_dimension. Required for TenantSet.
	EmbeddingDimension int
	// Logger receives one line per applied migration. Default: discard.
	Logger *slog.Logger
	// TenantMigrations, when set, replaces migrations/tenant as the TenantSet. Benchmarks use it
	// to add a synthetic migration to the real ones; it must hold every real migration too.
	TenantMigrations fs.FS
	// LockTimeout bounds how long each statement of a run waits for a lock that another session
	// holds (a long search, a backup's COPY, any open transaction on the table). A statement that
	// waits for a table's lock queues every later query on that table behind it, so an unbounded
	// wait would stall the tenant (or, for the control schema, every router) for as long as the
	// other session runs. When the timeout expires the migration rolls back and the run is tried
	// again after a backoff, LockAttempts times in all; then it fails with the lock timeout
	// (SQLSTATE 55P03, see [LockTimedOut]) and the next run resumes. Default DefaultLockTimeout;
	// negative waits without bound.
	//
	// Keep it above the server's deadlock_timeout (1s by default): PostgreSQL cancels an
	// autovacuum that blocks a lock request only when the deadlock check runs, after
	// deadlock_timeout, so a shorter wait gives up first on every try. A migration must run in
	// a transaction (no "+goose NO TRANSACTION"): a retry re-runs the whole migration, and a
	// CREATE INDEX CONCURRENTLY that timed out would leave an invalid index behind.
	LockTimeout time.Duration
	// LockAttempts is how many times a run that timed out on a lock is tried. Default
	// DefaultLockAttempts.
	LockAttempts int
}

const (
	// DefaultLockTimeout is MigratorConfig.LockTimeout's default.
	DefaultLockTimeout = 2 * time.Second
	// DefaultLockAttempts is MigratorConfig.LockAttempts's default: with DefaultLockTimeout and
	// the backoff between tries (0.25 s doubling, ±20%, at most 8 s), a run gives up after about
	// 40 s of a lock held throughout (16 s of waits for it, 24 s of backoff).
	DefaultLockAttempts = 8
)

// LockTimedOut reports whether err is a migration run's wait for a lock that ran out
// (MigratorConfig.LockTimeout): another session held the lock throughout.
func LockTimedOut(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.LockNotAvailable
}

// Migrator runs goose migrations into one schema at a time. It is safe for concurrent use.
type Migrator struct {
	cfg MigratorConfig
}

// NewMigrator returns a Migrator.
func NewMigrator(cfg MigratorConfig) (*Migrator, error) {
	if cfg.ConnConfig == nil {
		return nil, errors.New("schema: MigratorConfig.ConnConfig is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LockTimeout == 0 {
		cfg.LockTimeout = DefaultLockTimeout
	}
	if cfg.LockAttempts <= 0 {
		cfg.LockAttempts = DefaultLockAttempts
	}
	return &Migrator{cfg: cfg}, nil
}

// retryLocks runs fn, and again after a backoff each time it fails on a lock timeout, up to
// LockAttempts runs in all. Each run of fn must be safe to repeat: a migration run is, because
// every migration runs in a transaction of its own with its version row (what finished is
// recorded, the migration that timed out rolled back; TestMigrationsAreTransactional keeps it so).
func (m *Migrator) retryLocks(ctx context.Context, set Set, schemaName string, fn func(ctx context.Context) error) error {
	b := retry.NewExponential(250 * time.Millisecond)
	b = retry.WithJitterPercent(20, b)
	b = retry.WithCappedDuration(8*time.Second, b)
	b = retry.WithMaxRetries(uint64(m.cfg.LockAttempts-1), b)
	attempt := 0
	var last error
	err := retry.Do(ctx, b, func(ctx context.Context) error {
		attempt++
		err := fn(ctx)
		last = err
		if err != nil && LockTimedOut(err) {
			if attempt < m.cfg.LockAttempts {
				m.cfg.Logger.WarnContext(ctx, "migration waited too long for a lock another session holds; trying again",
					slog.String("schema", schemaName), slog.String("set", set.String()), slog.Int("attempt", attempt),
					slog.Int("attempts", m.cfg.LockAttempts), slog.String("lock_timeout", m.cfg.LockTimeout.String()))
			}
			return retry.RetryableError(err)
		}
		return err
	})
	switch {
	case err != nil && LockTimedOut(err):
		return fmt.Errorf("%w (another session held a lock the migration needs for lock_timeout %s, %d times: "+
			"look for long transactions on the schema in pg_stat_activity, then run again)", err, m.cfg.LockTimeout, attempt)
	case err != nil && LockTimedOut(last) && ctx.Err() != nil:
		// The context ended during the backoff: go-retry returns its error alone.
		return fmt.Errorf("schema: migrate %s (%s): stopped while waiting to try again after %d lock timeouts: %w (last: %w)",
			schemaName, set, attempt, err, last)
	}
	return err
}

// Latest is the newest version of set.
func Latest(set Set) (int64, error) { return latest(set, set.fs()) }

// Latest is the newest version of set as this migrator runs it (see
// MigratorConfig.TenantMigrations).
func (m *Migrator) Latest(set Set) (int64, error) { return latest(set, m.fs(set)) }

func (m *Migrator) fs(set Set) fs.FS {
	if set == TenantSet && m.cfg.TenantMigrations != nil {
		return m.cfg.TenantMigrations
	}
	return set.fs()
}

func latest(set Set, fsys fs.FS) (int64, error) {
	sources, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return 0, err
	}
	var latest int64
	for _, name := range sources {
		v, err := goose.NumericComponent(name)
		if err != nil {
			return 0, fmt.Errorf("schema: %s migration %s: %w", set, name, err)
		}
		latest = max(latest, v)
	}
	return latest, nil
}

// LockID is the advisory lock that serialises migrations of one schema. Different schemas get
// different locks, so they migrate in parallel.
func LockID(schemaName string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("tenantmem/migrate/" + schemaName))
	return int64(h.Sum64() >> 1)
}

// Up applies every pending migration of set to schemaName (which must exist) and returns the
// version the schema is at afterwards. Applying is idempotent: with nothing pending it only reads
// the version table. A run killed half-way leaves every finished migration recorded and the
// unfinished one rolled back (each runs in its own transaction), so the next Up resumes.
func (m *Migrator) Up(ctx context.Context, set Set, schemaName string) (int64, error) {
	res, err := m.Apply(ctx, set, schemaName, ApplyParams{})
	return res.Version, err
}

// ApplyParams adds statements to a run of [Migrator.Apply].
type ApplyParams struct {
	// Before runs before the migrations and After after them (only when they succeeded), one
	// statement at a time, as MigratorConfig.Role, on the run's own short-lived connection: work on
	// the schema done there leaves nothing in the catalog caches of a long-lived pool. Each
	// statement must be idempotent, since a run can stop between any two of them.
	Before, After []string
}

// ApplyResult is the outcome of [Migrator.Apply].
type ApplyResult struct {
	// Version is the version the schema is at afterwards.
	Version int64
	// Applied counts the migrations this run applied.
	Applied int
}

// Apply is [Migrator.Up] with statements before and after the migrations (see [ApplyParams]).
// A run that times out on a lock is tried again (see MigratorConfig.LockTimeout).
func (m *Migrator) Apply(ctx context.Context, set Set, schemaName string, params ApplyParams) (ApplyResult, error) {
	var res ApplyResult
	err := m.retryLocks(ctx, set, schemaName, func(ctx context.Context) error {
		return m.apply(ctx, set, schemaName, params, &res)
	})
	if err != nil {
		return ApplyResult{}, err
	}
	return res, nil
}

// apply is one run of Apply: it adds the migrations it applied to res.Applied (also when it
// fails part-way), and sets res.Version when it succeeds.
func (m *Migrator) apply(ctx context.Context, set Set, schemaName string, params ApplyParams, res *ApplyResult) error {
	p, db, err := m.provider(set, schemaName)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, stmt := range params.Before {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("schema: prepare %s: %s: %w", schemaName, stmt, err)
		}
	}
	results, err := p.Up(ctx)
	res.Applied += m.logApplied(ctx, set, schemaName, appliedOf(results, err))
	if err != nil {
		return fmt.Errorf("schema: migrate %s (%s): %w", schemaName, set, err)
	}
	if res.Version, err = p.GetDBVersion(ctx); err != nil {
		return fmt.Errorf("schema: read version of %s: %w", schemaName, err)
	}
	for _, stmt := range params.After {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("schema: finish %s: %s: %w", schemaName, stmt, err)
		}
	}
	return nil
}

// appliedOf is what a goose run applied: on a failure part-way goose returns no results, and
// the migrations that committed before it are in its *goose.PartialError.
func appliedOf(results []*goose.MigrationResult, err error) []*goose.MigrationResult {
	var pe *goose.PartialError
	if err != nil && errors.As(err, &pe) {
		return pe.Applied
	}
	return results
}

// logApplied logs each migration of results that succeeded, and counts them.
func (m *Migrator) logApplied(ctx context.Context, set Set, schemaName string, results []*goose.MigrationResult) int {
	n := 0
	for _, r := range results {
		if r.Error == nil {
			n++
			m.cfg.Logger.InfoContext(ctx, "migration applied", slog.String("schema", schemaName),
				slog.String("set", set.String()), slog.Int64("version", r.Source.Version),
				slog.Duration("took", r.Duration))
		}
	}
	return n
}

// UpTo applies the pending migrations of set to schemaName up to and including version, and
// returns the version the schema is at afterwards. A restore uses it to build tables exactly as
// an archive's rows knew them, before it migrates them (with their rows) to the latest version.
func (m *Migrator) UpTo(ctx context.Context, set Set, schemaName string, version int64) (int64, error) {
	var v int64
	err := m.retryLocks(ctx, set, schemaName, func(ctx context.Context) error {
		p, db, err := m.provider(set, schemaName)
		if err != nil {
			return err
		}
		defer db.Close()
		results, err := p.UpTo(ctx, version)
		m.logApplied(ctx, set, schemaName, appliedOf(results, err))
		if err != nil {
			return fmt.Errorf("schema: migrate %s (%s) to %d: %w", schemaName, set, version, err)
		}
		if v, err = p.GetDBVersion(ctx); err != nil {
			return fmt.Errorf("schema: read version of %s: %w", schemaName, err)
		}
		return nil
	})
	return v, err
}

// Version returns the version schemaName is at for set, 0 when nothing was applied.
func (m *Migrator) Version(ctx context.Context, set Set, schemaName string) (int64, error) {
	p, db, err := m.provider(set, schemaName)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	v, err := p.GetDBVersion(ctx)
	if err != nil {
		return 0, fmt.Errorf("schema: read version of %s: %w", schemaName, err)
	}
	return v, nil
}

func (m *Migrator) provider(set Set, schemaName string) (*goose.Provider, *sql.DB, error) {
	if set == TenantSet && m.cfg.EmbeddingDimension <= 0 {
		return nil, nil, errors.New("schema: tenant migrations need MigratorConfig.EmbeddingDimension")
	}
	cc := m.cfg.ConnConfig.Copy()
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	cc.RuntimeParams["search_path"] = pgx.Identifier{schemaName}.Sanitize() + ", " + pgx.Identifier{ExtensionSchema}.Sanitize()
	if set == TenantSet {
		cc.RuntimeParams["tenantmem.embedding_dimension"] = strconv.Itoa(m.cfg.EmbeddingDimension)
	}
	// PostgreSQL's 0 is no bound (a negative LockTimeout); a bound rounds up to whole milliseconds,
	// at most the largest PostgreSQL takes (INT_MAX ms, about 24.8 days).
	ms := min(max(0, (m.cfg.LockTimeout+time.Millisecond-1).Milliseconds()), math.MaxInt32)
	cc.RuntimeParams["lock_timeout"] = strconv.FormatInt(ms, 10) + "ms"
	var opts []stdlib.OptionOpenDB
	if m.cfg.Role != "" {
		setRole := "SET ROLE " + pgx.Identifier{m.cfg.Role}.Sanitize()
		opts = append(opts, stdlib.OptionAfterConnect(func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, setRole)
			return err
		}))
	}
	db := stdlib.OpenDB(*cc, opts...)
	db.SetMaxOpenConns(2)
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(LockID(schemaName)), lock.WithLockTimeout(1, 600))
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, m.fs(set),
		goose.WithDisableGlobalRegistry(true),
		goose.WithTableName(schemaName+"."+VersionTable),
		goose.WithSessionLocker(locker),
		// Migration numbers are reserved per issue, so one can land after a higher one (control
		// 00002 after 00005): apply it then instead of refusing to migrate.
		goose.WithAllowOutofOrder(true),
	)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("schema: goose provider for %s: %w", schemaName, err)
	}
	return p, db, nil
}

// Batcher is a pool or connection that can send a batch of queries.
type Batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Versions reads the applied version of many schemas of set in one round trip over db, without
// goose and without a lock. It is a fast path for finding schemas that are behind; any schema it
// cannot read (no version table yet) makes it return an error, and the caller falls back to
// [Migrator.Version]. See [VersionsOf].
func Versions(ctx context.Context, db Batcher, set Set, schemaNames []string) ([]int64, error) {
	known, err := KnownVersions(set.fs())
	if err != nil {
		return nil, err
	}
	return VersionsOf(ctx, db, known, schemaNames)
}

// VersionsOf is Versions for the migrations known (their versions, ascending). A schema's
// version is the highest known version up to which every known migration is applied: migrations
// are numbered per feature and goose applies a lower one that lands after a higher one, so the
// highest applied version alone would call a schema current while a migration below it is
// missing. Versions applied that are not known (a newer release's) count as applied.
func VersionsOf(ctx context.Context, db Batcher, known []int64, schemaNames []string) ([]int64, error) {
	if len(schemaNames) == 0 {
		return nil, nil
	}
	b := &pgx.Batch{}
	for _, s := range schemaNames {
		b.Queue(`SELECT coalesce(array_agg(version_id ORDER BY version_id) FILTER (WHERE version_id > 0), '{}') FROM ` +
			pgx.Identifier{s, VersionTable}.Sanitize() + ` WHERE is_applied`)
	}
	res := db.SendBatch(ctx, b)
	out := make([]int64, len(schemaNames))
	for i := range schemaNames {
		var applied []int64
		if err := res.QueryRow().Scan(&applied); err != nil {
			_ = res.Close()
			return nil, fmt.Errorf("schema: read version of %s: %w", schemaNames[i], err)
		}
		out[i] = contiguous(known, applied)
	}
	return out, res.Close()
}

// contiguous is the highest version of known up to which every version of known is in applied
// (both ascending); with every known version applied, the highest applied version.
func contiguous(known, applied []int64) int64 {
	var v int64
	for _, k := range known {
		if _, ok := slices.BinarySearch(applied, k); !ok {
			return v
		}
		v = k
	}
	if len(applied) > 0 {
		v = max(v, applied[len(applied)-1])
	}
	return v
}

// KnownVersions lists the versions of the migrations in fsys, ascending.
func KnownVersions(fsys fs.FS) ([]int64, error) {
	sources, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	out := make([]int64, 0, len(sources))
	for _, name := range sources {
		v, err := goose.NumericComponent(name)
		if err != nil {
			return nil, fmt.Errorf("schema: migration %s: %w", name, err)
		}
		out = append(out, v)
	}
	slices.Sort(out)
	return out, nil
}

// Known lists the versions of set as this migrator runs it (see MigratorConfig.TenantMigrations).
func (m *Migrator) Known(set Set) ([]int64, error) { return KnownVersions(m.fs(set)) }
