package memory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgvector/pgvector-go"
	pgxvec "github.com/pgvector/pgvector-go/pgx"

	"github.com/tenantmem/tenantmem/internal/dberr"
	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// Pool hands out connections to the database of a tenant's tables: a *pgxpool.Pool, or a
// placement's database (placement.Pools.DB), whose pool is made on first use.
type Pool interface {
	Acquire(ctx context.Context) (*pgxpool.Conn, error)
}

// Scope runs work for one tenant: the pool of the tenant's database, the schema holding its
// tables (schema.SharedSchema for the shared tier) and its owner id (the tenant id). A Scope is a
// small value; build one per request. It holds no connection and is safe for concurrent use.
type Scope struct {
	// Pool connects to the database of the tenant's tables, as the router role.
	Pool Pool
	// Schema holds the tenant's tables. It is quoted, never interpolated raw.
	Schema string
	// OwnerID is the tenant id; every row the scope reads or writes carries it.
	OwnerID string
	// StatementTimeout bounds every statement of the scope's transactions. Zero keeps the
	// server's setting.
	StatementTimeout time.Duration
	// Fence, when set, guards every transaction of the scope against the tenant changing under
	// it (see [Fence]).
	Fence *Fence
	// Observe, when set, is called with the connection of each of the scope's transactions and
	// the scope's schema before anything runs on it. The router counts the schemas each pooled
	// connection served, to recycle a connection whose server-side catalog caches grew large.
	Observe func(conn *pgx.Conn, schema string)
	// AcquireWait bounds the wait for a connection (and for the Gates); past it a transaction
	// fails with a *limit.BusyError. Zero waits as long as ctx allows.
	AcquireWait time.Duration
	// Gates are shares of the pool the scope's transactions must enter first (e.g. the tier's).
	Gates []*limit.Gate
	// Quota bounds what the tenant may store; AddDocument refuses a document that would exceed
	// it with a *QuotaError (nothing is written). Zero fields mean no limit.
	Quota Quota
	// TextConfig is the tenant's text search configuration (a pg_catalog configuration such as
	// english or simple), used to index its chunks and to read its queries. Empty means english.
	TextConfig string
	// Yield, when set, is called by bulk work between its batches (an ingest's embedding slices
	// and insert statements, each of at most Config.YieldBatchSize chunks then): the router waits
	// there, briefly, while other tenants' interactive requests are in flight, so that they do not
	// share the CPU with the next batch. An error (the request's context ended) stops the work.
	Yield func(ctx context.Context) error
}

// yield calls s.Yield, if set.
func (s Scope) yield(ctx context.Context) error {
	if s.Yield == nil {
		return nil
	}
	return s.Yield(ctx)
}

// DefaultTextConfig is the text search configuration of a scope that names none.
const DefaultTextConfig = "english"

// textConfig is the schema-qualified text search configuration of the scope.
func (s Scope) textConfig() string {
	if s.TextConfig == "" {
		return "pg_catalog." + DefaultTextConfig
	}
	return "pg_catalog." + s.TextConfig
}

// Quota is a tenant's storage quota. A zero field means no limit.
type Quota struct {
	Documents    int64
	Chunks       int64
	ContentBytes int64
}

// Fence makes a scope's transactions wait for, and then notice, a change of the tenant they
// serve (or of the credential they serve it for). Each transaction takes the advisory lock LockID
// shared (so it waits while someone holds it exclusively, e.g. a delete, and such a holder waits
// for it), then runs Check, which must return one row of one text column: NULL when the
// transaction may go on, else a reason, and the transaction ends before fn runs with
// Refuse(reason), or [ErrFenced] when Refuse is nil or returns nil. Check runs after the lock, as
// its own statement, so it sees what the lock holder committed. The settings, the lock and the
// check travel in one round trip.
//
// Advisory locks belong to one database, so when the tenant's tables are not in the database of
// the registry (another placement, or the tenant's own database), Pool names the registry's
// database: the lock and the check then run in a transaction of their own there, begun before the
// scope's transaction and ended after it, so the lock covers the scope's whole transaction.
type Fence struct {
	LockID int64
	Check  string
	Args   []any
	// Refuse turns a reason returned by Check into the transaction's error; it must wrap
	// [ErrFenced] or another error the caller maps (e.g. an unauthenticated credential).
	Refuse func(reason string) error
	// Refresh, when set, is called once when the check fails with [ErrFenced], before the error
	// is returned: it may return the scope to run the transaction in instead (the tenant moved
	// to another tier or placement), which then runs without a Refresh of its own. Nothing ran
	// before the check, so running the transaction again is safe. An error keeps ErrFenced.
	Refresh func(ctx context.Context) (Scope, error)
	// Pool, when set, is the registry's database, apart from the scope's.
	Pool Pool
	// Gates are the shares of Pool the fence's transaction must enter first (with Pool only).
	Gates []*limit.Gate
}

func (s Scope) validate() error {
	switch {
	case s.Pool == nil:
		return errors.New("memory: Scope.Pool is nil")
	case s.Schema == "":
		return errors.New("memory: Scope.Schema is empty")
	case s.StatementTimeout < 0:
		return errors.New("memory: Scope.StatementTimeout is negative")
	}
	if err := schema.ValidateTenantID(s.OwnerID); err != nil {
		return fmt.Errorf("memory: Scope.OwnerID: %w", err)
	}
	if !ValidTextConfigName(s.TextConfig) {
		return fmt.Errorf("memory: Scope.TextConfig %q is not a text search configuration name", s.TextConfig)
	}
	return nil
}

// ValidTextConfigName reports whether name has the form of a text search configuration name
// (lower-case letters, digits and underscores, at most 63 bytes); "" is valid and means english.
// Whether the configuration exists is the provisioner's check.
func ValidTextConfigName(name string) bool {
	if len(name) > 63 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// scopeSQL sets the transaction-local state of a scope in one statement. With is_local = true
// every setting ends with the transaction, so nothing outlives it on a pooled connection.
const scopeSQL = `SELECT set_config('search_path', $1, true), set_config('tenantmem.owner_id', $2, true),
	set_config('statement_timeout', coalesce($3, current_setting('statement_timeout')), true)`

// InTx begins a transaction on the scope's pool, makes the tenant's schema (then the
// extensions schema) its search_path, sets the owner id that row-level security compares with
// and the statement timeout, all transaction-local in one statement, and runs fn. It commits
// when fn returns nil and rolls back otherwise (also when ctx is cancelled). It registers the
// pgvector types on the connection the first time it sees it, so the pool needs no AfterConnect
// hook.
//
// Nothing session-level is ever set: fn must use set_config(..., true) or SET LOCAL for any
// setting of its own.
func (s Scope) InTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return s.inTx(ctx, pgx.TxOptions{}, fn)
}

// maxBeginAttempts bounds the attempts to open a transaction when the connection is found dead
// before any of the caller's statements ran.
const maxBeginAttempts = 3

func (s Scope) inTx(ctx context.Context, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	ran := false
	err := s.inTxOnce(ctx, opts, func(tx pgx.Tx) error {
		ran = true
		return fn(tx)
	})
	if !ran && errors.Is(err, ErrFenced) && s.Fence != nil && s.Fence.Refresh != nil {
		// The tenant moved: run at its new location instead (nothing of fn ran).
		if next, rerr := s.Fence.Refresh(ctx); rerr == nil {
			return next.withoutRefresh().inTxOnce(ctx, opts, fn)
		}
	}
	return err
}

// inTxOnce is inTx without the refresh of a moved tenant.
func (s Scope) inTxOnce(ctx context.Context, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	if err := s.validate(); err != nil {
		return err
	}
	if s.Fence != nil && s.Fence.Pool != nil {
		// Deferred before the scope's rollback, so it runs after it: the lock outlives the work.
		end, err := s.remoteFence(ctx)
		if err != nil {
			return err
		}
		defer end()
	}
	var (
		lease *limit.Lease
		tx    pgx.Tx
		err   error
	)
	// A pooled connection the server closed (a restart, pg_terminate_backend, a proxy that cut
	// it) is found dead at BEGIN or at the scope's first statement, before anything of fn ran:
	// retry on another connection. Nothing reached the server that could have changed a row.
	for attempt := 1; ; attempt++ {
		lease, tx, err = s.begin(ctx, opts)
		if err == nil {
			break
		}
		if attempt == maxBeginAttempts || ctx.Err() != nil || !dberr.RetryableBeforeWork(err) || errors.Is(err, errNoAnswer) {
			return err
		}
	}
	defer lease.Release()
	// After a commit this is a no-op (pgx.ErrTxClosed); it also runs when fn panics.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := fn(tx); err != nil {
		return interpretError(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("memory: commit: %w", interpretError(err))
	}
	return nil
}

// begin takes a connection (bounded by AcquireWait and the Gates), begins the transaction and
// sets the scope's transaction-local state and fence. On error it holds nothing.
func (s Scope) begin(ctx context.Context, opts pgx.TxOptions) (*limit.Lease, pgx.Tx, error) {
	lease, err := limit.Acquire(ctx, s.Pool, s.AcquireWait, s.Gates...)
	if err != nil {
		return nil, nil, fmt.Errorf("memory: acquire: %w", interpretError(err))
	}
	s.observe(lease)
	bctx, cancel := s.beginContext(ctx)
	defer cancel()
	tx, err := lease.Conn.BeginTx(bctx, opts)
	err = noAnswer(ctx, bctx, s.AcquireWait, err)
	if err != nil {
		lease.Release()
		return nil, nil, fmt.Errorf("memory: begin: %w", interpretError(err))
	}
	fail := func(err error) (*limit.Lease, pgx.Tx, error) {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		lease.Release()
		return nil, nil, err
	}
	var timeout *string
	if s.StatementTimeout > 0 {
		ms := strconv.FormatInt(max(s.StatementTimeout.Milliseconds(), 1), 10)
		timeout = &ms
	}
	// pg_temp is named last so a temporary table can never shadow a tenant table.
	path := pgx.Identifier{s.Schema}.Sanitize() + ", " + pgx.Identifier{schema.ExtensionSchema}.Sanitize() + ", pg_temp"
	if s.Fence == nil || s.Fence.Pool != nil {
		// Nothing here waits for a lock: bounded like BEGIN.
		if _, err := tx.Exec(bctx, scopeSQL, path, s.OwnerID, timeout); err != nil {
			err = noAnswer(ctx, bctx, s.AcquireWait, err)
			return fail(fmt.Errorf("memory: scope transaction: %w", interpretError(err)))
		}
	} else if err := s.fence(ctx, tx, path, timeout); err != nil {
		return fail(err)
	}
	if _, ok := tx.Conn().TypeMap().TypeForName("vector"); !ok {
		// The type is found through the search_path just set. The registration lives in the
		// connection's client-side type map, not in the server session.
		if err := pgxvec.RegisterTypes(ctx, tx.Conn()); err != nil {
			return fail(fmt.Errorf("memory: register pgvector types: %w", interpretError(err)))
		}
	}
	return lease, tx, nil
}

// observe tells Observe, when set, which connection serves the scope's schema.
func (s Scope) observe(lease *limit.Lease) {
	if s.Observe != nil {
		s.Observe(lease.Conn.Conn(), s.Schema)
	}
}

// beginContext bounds BEGIN and the statement that sets the scope, which take no lock and answer
// at once from a live server, by AcquireWait: a pooled connection to a server that stopped
// answering (a network partition, a frozen host) then fails in that time, as a connection loss
// (503), instead of holding its connection and the request until the request's deadline.
// The fence's lock is not bounded by it: waiting there for a delete or a move is its purpose.
func (s Scope) beginContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.AcquireWait <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.AcquireWait)
}

// errNoAnswer is a server that did not answer BEGIN or the scope's settings within AcquireWait.
// It wraps syscall.ETIMEDOUT, so it is a connection loss (HTTP 503 with Retry-After).
var errNoAnswer = errors.New("the database server did not answer")

// noAnswer names err errNoAnswer when it came from bctx's bound rather than from ctx.
func noAnswer(ctx, bctx context.Context, wait time.Duration, err error) error {
	if err == nil || ctx.Err() != nil || bctx.Err() == nil {
		return err
	}
	return fmt.Errorf("%w within %s: %w (%w)", errNoAnswer, wait, syscall.ETIMEDOUT, err)
}

// remoteFence takes the fence's lock and runs its check in a transaction of Fence.Pool (the
// registry's database, apart from the scope's), and returns what ends that transaction: call it
// after the scope's own transaction ended, so the lock covers all of it.
func (s Scope) remoteFence(ctx context.Context) (end func(), err error) {
	for attempt := 1; ; attempt++ {
		end, err = s.remoteFenceOnce(ctx)
		if err == nil || attempt == maxBeginAttempts || ctx.Err() != nil || !dberr.RetryableBeforeWork(err) || errors.Is(err, errNoAnswer) {
			return end, err
		}
	}
}

func (s Scope) remoteFenceOnce(ctx context.Context) (end func(), err error) {
	lease, err := limit.Acquire(ctx, s.Fence.Pool, s.AcquireWait, s.Fence.Gates...)
	if err != nil {
		return nil, fmt.Errorf("memory: acquire fence: %w", interpretError(err))
	}
	bctx, cancel := s.beginContext(ctx)
	ftx, err := lease.Conn.Begin(bctx)
	err = noAnswer(ctx, bctx, s.AcquireWait, err)
	cancel()
	if err != nil {
		lease.Release()
		return nil, fmt.Errorf("memory: begin fence: %w", interpretError(err))
	}
	end = func() {
		_ = ftx.Rollback(context.WithoutCancel(ctx))
		lease.Release()
	}
	if err := s.fence(ctx, ftx, "", nil); err != nil {
		end()
		return nil, err
	}
	return end, nil
}

// fence sends the scope settings (unless path is empty), the shared lock and the check in one
// batch.
func (s Scope) fence(ctx context.Context, tx pgx.Tx, path string, timeout *string) error {
	b := &pgx.Batch{}
	if path != "" {
		b.Queue(scopeSQL, path, s.OwnerID, timeout)
	}
	b.Queue(`SELECT pg_advisory_xact_lock_shared($1)`, s.Fence.LockID)
	b.Queue(s.Fence.Check, s.Fence.Args...)
	br := tx.SendBatch(ctx, b)
	var err error
	if path != "" {
		_, err = br.Exec()
	}
	if err == nil {
		_, err = br.Exec()
	}
	var reason *string
	if err == nil {
		err = br.QueryRow().Scan(&reason)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("memory: scope transaction: %w", interpretError(err))
	}
	if reason != nil {
		if s.Fence.Refuse != nil {
			if err := s.Fence.Refuse(*reason); err != nil {
				return err
			}
		}
		return ErrFenced
	}
	return nil
}

// readSettings are transaction-local settings of a read (search) transaction besides the
// scope's own: name, value pairs set with set_config(name, value, true).
type readSettings [][2]string

// readRows iterates over the rows of the last statement of [Scope.read].
type readRows struct {
	m     *pgtype.Map
	fds   []pgconn.FieldDescription
	rr    *pgconn.ResultReader
	plans []pgtype.ScanPlan // per column, planned on the first row (callers scan into the same types)
}

// Next advances to the next row.
func (r *readRows) Next() bool { return r.rr.NextRow() }

// Scan decodes the current row into dst, one destination per column (nil skips a column).
func (r *readRows) Scan(dst ...any) error {
	vals := r.rr.Values()
	if len(dst) != len(vals) {
		return fmt.Errorf("memory: scan %d columns into %d destinations", len(vals), len(dst))
	}
	if r.plans == nil {
		r.plans = make([]pgtype.ScanPlan, len(dst))
		for i, d := range dst {
			if d != nil {
				r.plans[i] = r.m.PlanScan(r.fds[i].DataTypeOID, r.fds[i].Format, d)
			}
		}
	}
	for i, d := range dst {
		if d == nil {
			continue
		}
		if err := r.plans[i].Scan(vals[i], d); err != nil {
			// A plan made for a NULL-less first row may not fit this value's path: plan again.
			if err2 := r.m.Scan(r.fds[i].DataTypeOID, r.fds[i].Format, vals[i], d); err2 != nil {
				return fmt.Errorf("memory: column %s: %w", r.fds[i].Name, err2)
			}
		}
	}
	return nil
}

// readStmt is one statement of a read round trip.
type readStmt struct {
	sql  string
	args []any
	// prepared statements are prepared once per connection and reused: only for SQL that names
	// no tenant table (it is parsed before the round trip's search_path is set).
	prepared bool
	// cached statements name every table with its schema, every pgvector type and operator with
	// the extensions schema: the connection prepares one the second time it runs it and keeps at
	// most cacheSize of them (least recently used out), so a connection serving many tenants of
	// the schema tier holds a bounded number. Prepared, it is neither parsed nor analysed again.
	cached    bool
	cacheSize int
	// generic statements are planned once, without their parameters (plan_cache_mode =
	// force_generic_plan): only for SQL whose best plan does not depend on them. Every other
	// statement is planned with its parameters each time (force_custom_plan).
	generic bool
	// rebuild, when set, makes the statement's SQL and arguments for another scope: a read that
	// follows a moved tenant (Fence.Refresh) runs it at the new location. Cached statements need
	// it, since their SQL names the old location's schema.
	rebuild func(Scope) (string, []any)
	// scan reads the statement's rows; nil discards them.
	scan func(*readRows) error
}

// forScope returns stmts made for s (see readStmt.rebuild).
func forScope(s Scope, stmts []readStmt) []readStmt {
	out := slices.Clone(stmts)
	for i := range out {
		if out[i].rebuild != nil {
			out[i].sql, out[i].args = out[i].rebuild(s)
		}
	}
	return out
}

// Plan cache modes of a read's statements.
const (
	planCustom  = "force_custom_plan"
	planGeneric = "force_generic_plan"
)

// planModeSQL switches the plan cache mode between two statements of a read.
const planModeSQL = `SELECT set_config('plan_cache_mode', $1, true)`

// stmtCacheKey is where a connection keeps its cached statements (pgconn.PgConn.CustomData).
const stmtCacheKey = "tenantmem.memory.statements"

// stmtCache is a connection's cached statements: the names prepared on it, least recently used
// first out, and the statements seen once (a statement is prepared the second time).
type stmtCache struct {
	prepared *simplelru.LRU[string, struct{}]
	seen     *simplelru.LRU[uint64, struct{}]
	size     int
}

// plan decides how st runs on the connection of this cache: under a prepared name (prepare
// also set when the round trip must prepare it first: the second time the connection runs it),
// or unnamed (name ""). The name covers the SQL and the parameter types it is prepared with.
// A statement past the cache's size evicts the least recently used one, which the round trip
// deallocates first (evict), unless that one is used by the same round trip (inUse): then st
// runs unnamed, since a statement of the round trip must outlive it.
func (sc *stmtCache) plan(st readStmt, oids []uint32, inUse map[string]bool) (name string, prepare bool, evict string) {
	h := fnv.New64a()
	_, _ = h.Write([]byte(st.sql))
	for _, o := range oids {
		_, _ = h.Write(strconv.AppendUint(nil, uint64(o), 10))
		_, _ = h.Write([]byte{','})
	}
	key := h.Sum64()
	name = "tmc_" + strconv.FormatUint(key, 36)
	if _, ok := sc.prepared.Get(name); ok {
		return name, false, ""
	}
	if _, again := sc.seen.Get(key); !again {
		sc.seen.Add(key, struct{}{})
		return "", false, ""
	}
	if sc.prepared.Len() >= st.cacheSize {
		old, _, ok := sc.prepared.GetOldest()
		if !ok || inUse[old] {
			return "", false, ""
		}
		sc.prepared.Remove(old)
		evict = old
	}
	// Counted as prepared now, so the same statement twice in one round trip is parsed once;
	// the round trip forgets it again when the Parse fails or does not run.
	sc.prepared.Add(name, struct{}{})
	return name, true, evict
}

// statementCache returns the statement cache of c for statements cached with size, made (and
// the old one's statements returned for deallocation) when it is missing or its size changed.
func statementCache(c *pgx.Conn, size int) (sc *stmtCache, evict []string) {
	data := c.PgConn().CustomData()
	sc, _ = data[stmtCacheKey].(*stmtCache)
	if sc == nil || sc.size != size {
		if sc != nil {
			evict = sc.prepared.Keys()
		}
		p, _ := simplelru.NewLRU[string, struct{}](size, nil)
		seen, _ := simplelru.NewLRU[uint64, struct{}](4*size, nil)
		sc = &stmtCache{prepared: p, seen: seen, size: size}
		data[stmtCacheKey] = sc
	}
	return sc, evict
}

// forgetStatements drops the statement cache of c and deallocates what it held and the pgx
// prepared statements names (after a prepared statement turned stale: 0A000 or 26000).
func forgetStatements(ctx context.Context, c *pgx.Conn, names []string) {
	if sc, _ := c.PgConn().CustomData()[stmtCacheKey].(*stmtCache); sc != nil {
		delete(c.PgConn().CustomData(), stmtCacheKey)
		for _, name := range sc.prepared.Keys() {
			_ = c.PgConn().Deallocate(ctx, name) // a Close of a missing statement is no error
		}
	}
	for _, name := range names {
		_ = c.Deallocate(ctx, name)
	}
}

// errStaleStatement marks a read that failed because a statement prepared on its connection
// no longer fits the tables (0A000 cached plan must not change result type, after a column's
// type changed) or is gone (26000, e.g. DEALLOCATE ALL): the connection forgot its prepared
// statements and the read runs again, once, unprepared.
var errStaleStatement = errors.New("prepared statement is stale")

// staleStatement reports whether err is a prepared statement turned stale.
func staleStatement(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.FeatureNotSupported || pgErr.Code == pgerrcode.InvalidSQLStatementName)
}

// read runs read-only statements for the scope in ONE round trip: a pipeline of unnamed
// statements ended by one Sync, which PostgreSQL runs as one implicit transaction:
//
//  1. the scope's settings (search_path, owner id, statement timeout), transaction_read_only,
//     plan_cache_mode, the caller's settings and, with a Fence, the shared advisory lock: one
//     statement;
//  2. the Fence check, as its own statement (so it sees what was committed before the lock was
//     granted), prepared and planned once (force_generic_plan);
//  3. stmts, in order, each after a statement switching plan_cache_mode where it changes.
//
// A statement is planned with its actual parameters every time (force_custom_plan: no generic
// plan can replace the index scan the parameters call for) unless it is marked generic. Unnamed
// statements are parsed after the settings before them have run (so tables resolve in the
// tenant's schema); cached ones name their tables with the schema and are prepared per
// connection (see readStmt). When the Fence check fails the rows read are
// discarded and read returns ErrFenced; the transaction is read-only, so nothing happened. A Fence
// with a Pool of its own is taken there first (two round trips more) and held across the read.
func (s Scope) read(ctx context.Context, settings readSettings, stmts ...readStmt) error {
	err := s.readWithRetries(ctx, settings, stmts...)
	if errors.Is(err, ErrFenced) && s.Fence != nil && s.Fence.Refresh != nil {
		// The tenant moved: read again at its new location (the connection is back in the pool).
		if next, rerr := s.Fence.Refresh(ctx); rerr == nil {
			return next.withoutRefresh().readWithRetries(ctx, settings, forScope(next, stmts)...)
		}
	}
	return err
}

// withoutRefresh is the scope with its fence's Refresh removed: a refreshed scope is used once.
func (s Scope) withoutRefresh() Scope {
	if s.Fence != nil {
		f := *s.Fence
		f.Refresh = nil
		s.Fence = &f
	}
	return s
}

// readWithRetries is read without the refresh: it retries a dead connection found before the
// round trip.
func (s Scope) readWithRetries(ctx context.Context, settings readSettings, stmts ...readStmt) error {
	if err := s.validate(); err != nil {
		return err
	}
	if s.Fence != nil && s.Fence.Pool != nil {
		// The registry is in another database: fence there, around this read, which then runs
		// without a fence of its own.
		end, err := s.remoteFence(ctx)
		if err != nil {
			return err
		}
		defer end()
		s.Fence = nil
	}
	unprepared := false
	for attempt := 1; ; attempt++ {
		err, beforeWork := s.readOnce(ctx, settings, stmts, unprepared)
		if errors.Is(err, errStaleStatement) && !unprepared && ctx.Err() == nil {
			// A read-only transaction that failed on a stale prepared statement: nothing
			// happened, and the connection forgot its statements. Run it once unprepared.
			unprepared = true
			continue
		}
		// A dead pooled connection found before the round trip was sent: nothing ran, no row
		// was scanned; try another connection.
		if err == nil || !beforeWork || attempt == maxBeginAttempts || ctx.Err() != nil || !dberr.RetryableBeforeWork(err) {
			return err
		}
	}
}

// readOnce is one attempt of read. beforeWork reports that it failed before sending the round
// trip (taking the connection, registering types, preparing), when a retry is safe.
func (s Scope) readOnce(ctx context.Context, settings readSettings, stmts []readStmt, unprepared bool) (err error, beforeWork bool) { //nolint:revive // the pair reads best in this order
	lease, err := limit.Acquire(ctx, s.Pool, s.AcquireWait, s.Gates...)
	if err != nil {
		return fmt.Errorf("memory: acquire: %w", interpretError(err)), true
	}
	defer lease.Release()
	s.observe(lease)
	c := lease.Conn.Conn()
	if _, ok := c.TypeMap().TypeForName("vector"); !ok {
		if err := registerVector(ctx, c); err != nil {
			return err, true
		}
	}
	var timeout *string
	if s.StatementTimeout > 0 {
		ms := strconv.FormatInt(max(s.StatementTimeout.Milliseconds(), 1), 10)
		timeout = &ms
	}
	// The plan cache mode of the first statement after the settings: generic for the fence
	// check (two primary-key lookups: planning it cost 10 times its execution), else the first
	// statement's. planModeSQL switches it wherever the next statement wants the other one.
	mode := planCustom
	if s.Fence != nil || (len(stmts) > 0 && stmts[0].generic) {
		mode = planGeneric
	}
	var b strings.Builder
	b.WriteString(`SELECT set_config('search_path', $1, true), set_config('tenantmem.owner_id', $2, true),
		set_config('statement_timeout', coalesce($3, current_setting('statement_timeout')), true),
		set_config('transaction_read_only', 'on', true), set_config('plan_cache_mode', $4, true)`)
	args := []any{s.searchPath(), s.OwnerID, timeout, mode}
	for _, kv := range settings {
		args = append(args, kv[0], kv[1])
		fmt.Fprintf(&b, `, set_config($%d, $%d, true)`, len(args)-1, len(args))
	}
	all := []readStmt{{}}
	if s.Fence != nil {
		args = append(args, s.Fence.LockID)
		fmt.Fprintf(&b, `, pg_advisory_xact_lock_shared($%d)`, len(args))
	}
	all[0] = readStmt{sql: b.String(), args: args, prepared: true}
	var refused *string
	if s.Fence != nil {
		all = append(all, readStmt{sql: s.Fence.Check, args: s.Fence.Args, prepared: true, scan: func(r *readRows) error {
			for r.Next() {
				if err := r.Scan(&refused); err != nil {
					return err
				}
			}
			return nil
		}})
	}
	for _, st := range stmts {
		want := planCustom
		if st.generic {
			want = planGeneric
		}
		if want != mode {
			all = append(all, readStmt{sql: planModeSQL, args: []any{want}, prepared: true})
			mode = want
		}
		all = append(all, st)
	}

	// Encode every statement and decide how it runs before the round trip: the settings and the
	// fence check are prepared by pgx (they name no tenant table, so preparing them takes no
	// lock); a cached statement is prepared INSIDE the round trip, after the settings and the
	// fence's lock, so the scope's statement_timeout bounds its parse and it takes its table
	// locks after the fence's lock, like every statement of the read.
	type request struct {
		stmt int    // index in all; -1 for a deallocation
		name string // prepared name ("" unnamed)
	}
	m := c.TypeMap()
	type encoded struct {
		sd      *pgconn.StatementDescription
		vals    [][]byte
		oids    []uint32
		fmts    []int16
		name    string
		prepare bool
		pgxName string
	}
	enc := make([]encoded, len(all))
	var (
		sc      *stmtCache
		evicted []string
		inUse   = map[string]bool{}
	)
	for i, st := range all {
		if st.prepared {
			name := "tm_" + strconv.FormatUint(fnvHash(st.sql), 36)
			sd, err := c.Prepare(ctx, name, st.sql)
			if err != nil {
				return fmt.Errorf("memory: prepare: %w", interpretError(err)), true
			}
			vals, fmts, err := encodeArgsFor(m, sd.ParamOIDs, st.args)
			if err != nil {
				return err, false
			}
			enc[i] = encoded{sd: sd, vals: vals, fmts: fmts, pgxName: name}
			continue
		}
		vals, oids, fmts, err := encodeArgs(m, st.args)
		if err != nil {
			return err, false
		}
		enc[i] = encoded{vals: vals, oids: oids, fmts: fmts}
		if !st.cached || st.cacheSize <= 0 || unprepared {
			continue
		}
		if sc == nil {
			var old []string
			sc, old = statementCache(c, st.cacheSize)
			evicted = append(evicted, old...)
		}
		name, prepare, evict := sc.plan(st, oids, inUse)
		if evict != "" {
			evicted = append(evicted, evict)
		}
		if name != "" {
			inUse[name] = true
		}
		enc[i].name, enc[i].prepare = name, prepare
	}

	resultFormats := []int16{pgtype.BinaryFormatCode}
	p := c.PgConn().StartPipeline(ctx)
	var reqs []request
	parsing := map[string]bool{} // statements the round trip prepares, until their Parse succeeded
	// Deallocations first: nothing before them can fail and skip them.
	for _, name := range evicted {
		p.SendDeallocate(name)
		reqs = append(reqs, request{stmt: -1})
	}
	for i, e := range enc {
		switch {
		case e.sd != nil:
			p.SendQueryStatement(e.sd, e.vals, e.fmts, resultFormats)
		case e.name == "":
			p.SendQueryParams(all[i].sql, e.vals, e.oids, e.fmts, resultFormats)
		default:
			if e.prepare {
				parsing[e.name] = true
				p.SendPrepare(e.name, all[i].sql, e.oids)
				reqs = append(reqs, request{stmt: i, name: e.name})
			}
			p.SendQueryPrepared(e.name, e.vals, e.fmts, resultFormats)
		}
		reqs = append(reqs, request{stmt: i, name: cmp.Or(e.name, e.pgxName)})
	}
	if err := p.Sync(); err != nil {
		_ = p.Close()
		return fmt.Errorf("memory: read: %w", interpretError(err)), false
	}
	var (
		firstErr error
		failed   request
	)
	for _, rq := range reqs {
		res, err := p.GetResults()
		if err != nil {
			firstErr, failed = err, rq
			break
		}
		switch res := res.(type) {
		case *pgconn.StatementDescription:
			delete(parsing, rq.name)
		case *pgconn.ResultReader:
			i := rq.stmt
			// After a failed fence check the rows are not the caller's to see: leave them unread
			// (a Refresh then reads again, into clean results).
			fenced := s.Fence != nil && i > 1 && refused != nil
			if !fenced && all[i].scan != nil {
				if err := all[i].scan(&readRows{m: m, fds: res.FieldDescriptions(), rr: res}); err != nil {
					firstErr, failed = err, rq
				}
			}
			if _, err := res.Close(); err != nil && firstErr == nil {
				firstErr, failed = err, rq
			}
		}
		if firstErr != nil {
			break
		}
	}
	for name := range parsing {
		sc.prepared.Remove(name) // not prepared after all
	}
	if firstErr != nil && failed.stmt > 1 && s.Fence != nil && refused != nil {
		// After a failed fence check, the tenant's statements may fail for the very reason the
		// check gives (a moved tenant's old schema dropped: 42P01): the verdict wins.
		firstErr = nil
	}
	if err := p.Close(); err != nil && firstErr == nil && refused == nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			firstErr = err
		}
	}
	if firstErr != nil && failed.name != "" && staleStatement(firstErr) && !c.IsClosed() {
		// The connection's prepared statements do not fit the tables any more (or are gone):
		// forget them all here, and run the read again unprepared.
		var names []string
		for _, e := range enc {
			if e.pgxName != "" {
				names = append(names, e.pgxName)
			}
		}
		forgetStatements(ctx, c, names)
		return fmt.Errorf("memory: read: %w: %w", errStaleStatement, firstErr), false
	}
	if firstErr != nil {
		return fmt.Errorf("memory: read: %w", interpretError(firstErr)), false
	}
	if refused != nil {
		if s.Fence.Refuse != nil {
			if err := s.Fence.Refuse(*refused); err != nil {
				return err, false
			}
		}
		return ErrFenced, false
	}
	return nil, false
}

// searchPath is the scope's search_path: its schema, then extensions; pg_temp last so a
// temporary table can never shadow a tenant table.
func (s Scope) searchPath() string {
	return pgx.Identifier{s.Schema}.Sanitize() + ", " + pgx.Identifier{schema.ExtensionSchema}.Sanitize() + ", pg_temp"
}

// registerVector registers the pgvector types on a connection, in a transaction whose
// search_path finds them.
func registerVector(ctx context.Context, c *pgx.Conn) error {
	err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('search_path', $1, true)`,
			pgx.Identifier{schema.ExtensionSchema}.Sanitize()); err != nil {
			return err
		}
		return pgxvec.RegisterTypes(ctx, tx.Conn())
	})
	if err != nil {
		return fmt.Errorf("memory: register pgvector types: %w", interpretError(err))
	}
	return nil
}

// fnvHash is FNV-1a of s (a name for a prepared statement).
func fnvHash(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}

// encodeArgsFor encodes arguments for a prepared statement's parameter types.
func encodeArgsFor(m *pgtype.Map, oids []uint32, args []any) ([][]byte, []int16, error) {
	if len(oids) != len(args) {
		return nil, nil, fmt.Errorf("memory: %d arguments for %d parameters", len(args), len(oids))
	}
	vals := make([][]byte, len(args))
	fmts := make([]int16, len(args))
	for i, a := range args {
		f := m.FormatCodeForOID(oids[i])
		// A non-nil buffer: Encode returns nil for NULL only, so an empty string stays an empty
		// string (with a nil buffer it came back nil, which the protocol sends as NULL).
		buf, err := m.Encode(oids[i], f, a, make([]byte, 0, 16))
		if err != nil {
			return nil, nil, fmt.Errorf("memory: encode argument %d: %w", i+1, err)
		}
		vals[i], fmts[i] = buf, f
	}
	return vals, fmts, nil
}

// encodeArgs encodes statement arguments for the extended protocol by their Go types (binary
// where the type supports it). nil is NULL.
func encodeArgs(m *pgtype.Map, args []any) ([][]byte, []uint32, []int16, error) {
	vals := make([][]byte, len(args))
	oids := make([]uint32, len(args))
	fmts := make([]int16, len(args))
	for i, a := range args {
		if a == nil {
			continue
		}
		var (
			t  *pgtype.Type
			ok bool
		)
		if _, isVec := a.(pgvector.Vector); isVec {
			t, ok = m.TypeForName("vector")
		} else {
			t, ok = m.TypeForValue(a)
		}
		if !ok {
			return nil, nil, nil, fmt.Errorf("memory: no PostgreSQL type for argument %d (%T)", i+1, a)
		}
		f := m.FormatCodeForOID(t.OID)
		buf, err := m.Encode(t.OID, f, a, make([]byte, 0, 16))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("memory: encode argument %d: %w", i+1, err)
		}
		vals[i], oids[i], fmts[i] = buf, t.OID, f
	}
	return vals, oids, fmts, nil
}
