package schema

import (
	"context"
	"io/fs"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
)

// probeVersion is the synthetic migration lockingMigrations adds: a change of the chunks table that
// needs its ACCESS EXCLUSIVE lock, as an ALTER TABLE of a future release would. freeVersion, before
// it, needs no lock anybody holds.
const (
	freeVersion  = 99998
	probeVersion = 99999
)

// lockingMigrations is the real tenant migrations plus the synthetic freeVersion and probeVersion.
func lockingMigrations(t testing.TB) fs.FS {
	t.Helper()
	return pgtest.TenantMigrationsWith(t, map[string]string{
		"99998_lock_free.sql":  "-- +goose Up\nCREATE TABLE lock_free (id int);\n-- +goose Down\nDROP TABLE lock_free;\n",
		"99999_lock_probe.sql": "-- +goose Up\nALTER TABLE chunks ADD COLUMN lock_probe int;\n-- +goose Down\nALTER TABLE chunks DROP COLUMN lock_probe;\n",
	})
}

// newLockingMigrator makes a schema named name at the latest real tenant migration, and a migrator
// of lockingMigrations for it with locks' bounds (and logger) of cfg. It returns the migrator, a
// superuser connection and the schema's version before the synthetic migrations.
func newLockingMigrator(t testing.TB, name string, cfg MigratorConfig) (*Migrator, *pgx.Conn, int64) {
	t.Helper()
	base, conn := newSchemaMigrator(t, name)
	latest, err := base.Up(context.Background(), TenantSet, name)
	require.NoError(t, err)
	cfg.ConnConfig, cfg.EmbeddingDimension, cfg.TenantMigrations = conn.Config(), 4, lockingMigrations(t)
	m, err := NewMigrator(cfg)
	require.NoError(t, err)
	return m, conn, latest
}

// holdChunks opens a transaction on conn that reads the schema's chunks and keeps their ACCESS
// SHARE lock (a long search or a backup's COPY does), and returns its end.
func holdChunks(t testing.TB, conn *pgx.Conn, schemaName string) func() {
	t.Helper()
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT count(*) FROM `+pgx.Identifier{schemaName, "chunks"}.Sanitize())
	require.NoError(t, err)
	ended := false
	end := func() {
		if !ended {
			ended = true
			require.NoError(t, tx.Commit(ctx))
		}
	}
	t.Cleanup(func() {
		if !ended {
			_ = tx.Rollback(context.Background())
		}
	})
	return end
}

// TestMigrationDoesNotQueueReadersBehindItsLock: a migration that needs a table's ACCESS EXCLUSIVE
// lock while another session holds the table (a long search, a backup) must not leave every new
// reader of the table queued behind its wait until that session ends: it gives up the wait after
// LockTimeout and tries again, so readers go on in between, and it completes once the lock is
// free. Without lock_timeout the reader below waits as long as the holder holds.
func TestMigrationDoesNotQueueReadersBehindItsLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const name = "tenant_lockq"
	m, conn, latest := newLockingMigrator(t, name, MigratorConfig{LockTimeout: 100 * time.Millisecond, LockAttempts: 1000})

	holder := connect(t, conn.Config())
	release := holdChunks(t, holder, name)
	migrated := make(chan error, 1)
	mctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var res ApplyResult
	go func() {
		var err error
		res, err = m.Apply(mctx, TenantSet, name, ApplyParams{})
		migrated <- err
	}()
	waitForLockWait(t, conn, name, migrated)

	// A reader that comes while the migration wants the lock goes on while the holder still holds.
	reader := connect(t, conn.Config())
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	var n int
	require.NoError(t, reader.QueryRow(rctx, `SELECT count(*) FROM `+name+`.chunks`).Scan(&n),
		"the reader stayed queued behind the migration's wait for the lock")
	select {
	case err := <-migrated:
		t.Fatalf("the migration ended while another session held the table (err %v)", err)
	default:
	}

	release()
	require.NoError(t, <-migrated)
	require.EqualValues(t, probeVersion, res.Version)
	require.Equal(t, 2, res.Applied, "the migration committed by the first try counts too")
	v, err := m.Version(ctx, TenantSet, name)
	require.NoError(t, err)
	require.EqualValues(t, probeVersion, v)
	require.Greater(t, int64(freeVersion), latest)
}

// TestMigrationGivesUpOnAHeldLockAndResumes: a run whose lock stays held through every attempt
// fails with the lock timeout (and says what to look for), leaves the schema at the version before
// the migration that waited, and the next run, once the lock is free, applies it.
func TestMigrationGivesUpOnAHeldLockAndResumes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const name = "tenant_lockr"
	m, conn, latest := newLockingMigrator(t, name, MigratorConfig{LockTimeout: 50 * time.Millisecond, LockAttempts: 3})

	release := holdChunks(t, connect(t, conn.Config()), name)
	_, err := m.Up(ctx, TenantSet, name)
	require.Error(t, err)
	require.True(t, LockTimedOut(err), "%v", err)
	require.ErrorContains(t, err, "3 times")
	require.ErrorContains(t, err, "pg_stat_activity")
	v, err := m.Version(ctx, TenantSet, name)
	require.NoError(t, err)
	require.EqualValues(t, freeVersion, v, "the migration before it is kept, the one that waited rolled back")
	require.Greater(t, int64(freeVersion), latest)
	var probe int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'lock_probe'`,
		name+".chunks").Scan(&probe))
	require.Zero(t, probe)

	release()
	res, err := m.Apply(ctx, TenantSet, name, ApplyParams{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Applied)
	require.EqualValues(t, probeVersion, res.Version)
}

// TestMigrationStoppedDuringItsBackoffSaysWhy: a run whose context ends while it waits to try
// again reports the context's end and the lock timeout before it, not the context's error alone.
func TestMigrationStoppedDuringItsBackoffSaysWhy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const name = "tenant_lockc"
	// The context ends when the run logs that it will try again, i.e. as its backoff begins.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m, conn, _ := newLockingMigrator(t, name, MigratorConfig{LockTimeout: 50 * time.Millisecond, LockAttempts: 1000,
		Logger: slog.New(onWarn{cancel})})

	holdChunks(t, connect(t, conn.Config()), name)
	_, err := m.Up(cctx, TenantSet, name)
	require.ErrorIs(t, err, context.Canceled)
	require.True(t, LockTimedOut(err), "%v", err)
	require.ErrorContains(t, err, name)
	require.ErrorContains(t, err, "after 1 lock timeouts")
}

// onWarn is a slog.Handler that calls fn on every record at level Warn or above.
type onWarn struct{ fn func() }

func (h onWarn) Enabled(context.Context, slog.Level) bool { return true }
func (h onWarn) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.fn()
	}
	return nil
}
func (h onWarn) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h onWarn) WithGroup(string) slog.Handler      { return h }

// TestMigrationsAreTransactional: every migration runs in a transaction, which the lock timeout's
// retries rely on (a retry runs a migration again from its start; see MigratorConfig.LockTimeout).
func TestMigrationsAreTransactional(t *testing.T) {
	t.Parallel()
	for _, set := range []Set{TenantSet, ControlSet, PlacementSet} {
		names, err := fs.Glob(set.FS(), "*.sql")
		require.NoError(t, err)
		require.NotEmpty(t, names)
		for _, n := range names {
			b, err := fs.ReadFile(set.FS(), n)
			require.NoError(t, err)
			require.NotContains(t, string(b), "+goose NO TRANSACTION", "%s migration %s", set, n)
		}
	}
}

// TestLockTimeoutSetting: each run's connections carry LockTimeout as lock_timeout, whatever the
// server's default: the default when unset, PostgreSQL's 0 (no bound) when negative, whole
// milliseconds rounded up, at most PostgreSQL's largest (a longer one would refuse every connection).
func TestLockTimeoutSetting(t *testing.T) {
	t.Parallel()
	_, conn := newSchemaMigrator(t, "tenant_lockset")
	_, err := conn.Exec(context.Background(), `ALTER DATABASE `+pgx.Identifier{conn.Config().Database}.Sanitize()+` SET lock_timeout = '7s'`)
	require.NoError(t, err)
	for _, tc := range []struct {
		timeout time.Duration
		want    string
	}{{0, "2s"}, {-1, "0"}, {1500 * time.Microsecond, "2ms"}, {time.Minute, "1min"}, {1000 * time.Hour, "2147483647ms"}} {
		m, err := NewMigrator(MigratorConfig{ConnConfig: conn.Config(), LockTimeout: tc.timeout, EmbeddingDimension: 4})
		require.NoError(t, err)
		_, db, err := m.provider(TenantSet, "tenant_lockset")
		require.NoError(t, err)
		var got string
		require.NoError(t, db.QueryRowContext(context.Background(), `SHOW lock_timeout`).Scan(&got))
		require.NoError(t, db.Close())
		require.Equal(t, tc.want, got, "LockTimeout %s", tc.timeout)
	}
}

func connect(t testing.TB, cc *pgx.ConnConfig) *pgx.Conn {
	t.Helper()
	c, err := pgx.ConnectConfig(context.Background(), cc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// waitForLockWait returns once a session waits for a lock on the schema's chunks, failing the test
// if the migration ends first.
func waitForLockWait(t *testing.T, conn *pgx.Conn, schemaName string, migrated <-chan error) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		var waiting bool
		require.NoError(t, conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT FROM pg_locks
			WHERE NOT granted AND relation = $1::regclass)`, schemaName+".chunks").Scan(&waiting))
		if waiting {
			return
		}
		select {
		case err := <-migrated:
			t.Fatalf("the migration ended while another session held the table (err %v)", err)
		case <-deadline:
			t.Fatal("the migration never waited for the table's lock")
		case <-time.After(5 * time.Millisecond):
		}
	}
}
