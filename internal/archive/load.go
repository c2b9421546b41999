package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/schema"
)

// ErrIncompatible means an archive or a source cannot be loaded into the destination's tables:
// a table or column the destination does not have, or a column of another type.
var ErrIncompatible = errors.New("incompatible with the destination tables")

// Target is where a load or a copy writes: one tenant scope of a destination database. Every
// transaction assumes Role (the owner role: DML under row-level security, which the policies'
// WITH CHECK holds to OwnerID) and sets search_path and the owner id transaction-locally.
type Target struct {
	// Pool connects to the destination database with a login that may SET ROLE to Role.
	Pool *pgxpool.Pool
	// Role is assumed with SET LOCAL ROLE in every transaction.
	Role string
	// Schema holds the destination tables.
	Schema string
	// OwnerID is the owner id of every row written (the destination tenant id).
	OwnerID string
}

func (t Target) validate() error {
	switch {
	case t.Pool == nil:
		return errors.New("archive: Target.Pool is nil")
	case t.Role == "" || t.Schema == "":
		return errors.New("archive: Target.Role and Target.Schema are required")
	}
	if err := schema.ValidateTenantID(t.OwnerID); err != nil {
		return fmt.Errorf("archive: Target.OwnerID: %w", err)
	}
	return nil
}

// InTx runs fn in a transaction of the target's scope.
func (t Target) InTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, t.Pool, func(tx pgx.Tx) error {
		if err := t.Scope(ctx, tx); err != nil {
			return err
		}
		return fn(tx)
	})
}

// Scope assumes the target's role and sets its search_path and owner id in tx, transaction-locally.
func (t Target) Scope(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+pgx.Identifier{t.Role}.Sanitize()); err != nil {
		return fmt.Errorf("archive: assume role %s: %w", t.Role, err)
	}
	path := pgx.Identifier{t.Schema}.Sanitize() + ", " + pgx.Identifier{schema.ExtensionSchema}.Sanitize() + ", pg_temp"
	if _, err := tx.Exec(ctx, `SELECT set_config('search_path', $1, true), set_config('tenantmem.owner_id', $2, true),
		set_config('statement_timeout', '0', true)`, path, t.OwnerID); err != nil {
		return fmt.Errorf("archive: scope: %w", err)
	}
	return nil
}

// LoadParams configures [Load].
type LoadParams struct {
	// Target is where the rows go. Its tables must be at the archive's migration version.
	Target Target
	// RemapIDs gives every row new ids (every uuid column is an id), derived from the old id
	// and Target.OwnerID, so a copy under another tenant id can live next to the original in
	// the shared tier. References stay consistent because every column maps the same way.
	RemapIDs bool
	// Upsert replaces rows whose primary key exists instead of failing (the catch-up of a move).
	Upsert bool
	// With RemapIDs, the tables marked schema.TenantTable.SkipOnNewIDs are read (and verified)
	// but not loaded: their rows name the original ids.
	// Progress, when set, is called after every block.
	Progress func(Progress)
}

// LoadResult counts what a load wrote.
type LoadResult struct {
	// Rows is the number of rows written per table.
	Rows map[string]int64
}

// plan is how blocks of one archived table become rows of the destination table.
type plan struct {
	table     string
	fields    int
	createTmp string
	copySQL   string
	insertSQL string
	// bumpSQL, when set, moves the sequences of identity columns whose values were written as
	// given past them, so that the destination's next rows do not collide.
	bumpSQL []string
}

func buildPlan(ctx context.Context, q Querier, t Target, info TableInfo, remap, upsert bool) (plan, error) {
	known := slices.IndexFunc(schema.TenantTables, func(tt schema.TenantTable) bool {
		return tt.Name == info.Name && tt.Kind == schema.TableData
	})
	if known < 0 {
		return plan{}, fmt.Errorf("archive: table %q: %w (this tenantmem does not know it)", info.Name, ErrIncompatible)
	}
	dest, err := columnsOf(ctx, q, t.Schema, info.Name)
	if err != nil {
		return plan{}, err
	}
	if len(dest) == 0 {
		return plan{}, fmt.Errorf("archive: table %q: %w (it does not exist in schema %s)", info.Name, ErrIncompatible, t.Schema)
	}
	byName := map[string]tableColumn{}
	for _, c := range dest {
		byName[c.Name] = c
	}
	var (
		tmpCols, copyCols, insCols, exprs, pk, updates []string
	)
	hasOwner := false
	for _, c := range info.Columns {
		d, ok := byName[c.Name]
		if !ok {
			return plan{}, fmt.Errorf("archive: column %s.%s: %w (the destination has no such column)", info.Name, c.Name, ErrIncompatible)
		}
		if d.Type != c.Type {
			return plan{}, fmt.Errorf("archive: column %s.%s: %w: the archive has %s, the destination %s",
				info.Name, c.Name, ErrIncompatible, c.Type, d.Type)
		}
		id := pgx.Identifier{d.Name}.Sanitize()
		// The temporary table takes the destination's type names, never the archive's.
		tmpCols = append(tmpCols, id+" "+d.Type)
		copyCols = append(copyCols, id)
		if d.identity && !upsert {
			continue // the destination numbers it
		}
		insCols = append(insCols, id)
		switch {
		case d.Name == "owner_id":
			hasOwner = true
			exprs = append(exprs, "$1::text")
		case remap && (d.Type == "uuid"):
			exprs = append(exprs, "md5($1::text || ':' || "+id+"::text)::uuid")
		default:
			exprs = append(exprs, id)
		}
		if d.pk {
			pk = append(pk, id)
		} else {
			updates = append(updates, id+" = excluded."+id)
		}
	}
	if !hasOwner {
		return plan{}, fmt.Errorf("archive: table %s: %w (no owner_id column)", info.Name, ErrIncompatible)
	}
	tmp := pgx.Identifier{"pg_temp", "tm_load_" + info.Name}.Sanitize()
	ins := `INSERT INTO ` + pgx.Identifier{t.Schema, info.Name}.Sanitize() + ` (` + strings.Join(insCols, ", ") + `)`
	var bump []string
	if upsert && slices.ContainsFunc(dest, func(c tableColumn) bool { return c.identity }) {
		ins += ` OVERRIDING SYSTEM VALUE`
		tbl := pgx.Identifier{t.Schema, info.Name}.Sanitize()
		for _, c := range dest {
			if c.identity {
				seq := `pg_get_serial_sequence(` + quoteLiteral(tbl) + `, ` + quoteLiteral(c.Name) + `)`
				bump = append(bump, `SELECT setval(`+seq+`, greatest(nextval(`+seq+`), (SELECT max(`+pgx.Identifier{c.Name}.Sanitize()+`) FROM `+tbl+`)))`)
			}
		}
	}
	ins += ` SELECT ` + strings.Join(exprs, ", ") + ` FROM ` + tmp
	if upsert {
		if len(pk) == 0 {
			return plan{}, fmt.Errorf("archive: table %s: %w (no primary key to upsert on)", info.Name, ErrIncompatible)
		}
		if len(updates) == 0 {
			ins += ` ON CONFLICT (` + strings.Join(pk, ", ") + `) DO NOTHING`
		} else {
			ins += ` ON CONFLICT (` + strings.Join(pk, ", ") + `) DO UPDATE SET ` + strings.Join(updates, ", ")
		}
	}
	return plan{
		table:     info.Name,
		fields:    len(info.Columns),
		createTmp: `CREATE TEMPORARY TABLE ` + tmp + ` (` + strings.Join(tmpCols, ", ") + `) ON COMMIT DROP`,
		copySQL:   `COPY ` + tmp + ` (` + strings.Join(copyCols, ", ") + `) FROM STDIN (FORMAT binary)`,
		insertSQL: ins,
		bumpSQL:   bump,
	}, nil
}

// loadBlock writes one block in tx (already scoped). COPY cannot write into a table under row
// level security, so the block goes into a temporary table first and from there, with the
// destination owner id, into the tenant table, where the policies check every row.
func loadBlock(ctx context.Context, tx pgx.Tx, pl plan, ownerID string, block []byte, rows int) error {
	n, err := countCopyTuples(block, pl.fields)
	if err != nil {
		return fmt.Errorf("archive: table %s: %w: %w", pl.table, ErrCorrupt, err)
	}
	if n != rows {
		return fmt.Errorf("archive: table %s: %w: a block holds %d rows and says %d", pl.table, ErrCorrupt, n, rows)
	}
	if _, err := tx.Exec(ctx, pl.createTmp); err != nil {
		return fmt.Errorf("archive: table %s: staging table: %w", pl.table, err)
	}
	if _, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(block), pl.copySQL); err != nil {
		return fmt.Errorf("archive: table %s: copy: %w", pl.table, err)
	}
	tag, err := tx.Exec(ctx, pl.insertSQL, ownerID)
	if err != nil {
		return fmt.Errorf("archive: table %s: insert: %w", pl.table, err)
	}
	if tag.RowsAffected() != int64(rows) {
		return fmt.Errorf("archive: table %s: %d of %d rows written", pl.table, tag.RowsAffected(), rows)
	}
	for _, q := range pl.bumpSQL {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("archive: table %s: sequence: %w", pl.table, err)
		}
	}
	if _, err := tx.Exec(ctx, `DROP TABLE `+pgx.Identifier{"pg_temp", "tm_load_" + pl.table}.Sanitize()); err != nil {
		return fmt.Errorf("archive: table %s: drop staging table: %w", pl.table, err)
	}
	return nil
}

// Load reads every table of r into the target, one transaction per block, and returns what it
// wrote; it reads r to its end frame, so every checksum is verified. The target's tables must be
// at the archive's migration version (the columns and their types must match). A failure
// leaves the blocks committed before it in place: loads go into tenants nobody can reach yet,
// and the caller cleans up or starts again.
func Load(ctx context.Context, r *Reader, p LoadParams) (LoadResult, error) {
	if err := p.Target.validate(); err != nil {
		return LoadResult{}, err
	}
	start := time.Now()
	res := LoadResult{Rows: map[string]int64{}}
	m := r.Manifest()
	var total, done int64
	for _, t := range m.Tables {
		total += t.Rows
	}
	for {
		info, err := r.NextTable()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, err
		}
		skip := p.RemapIDs && slices.ContainsFunc(schema.TenantTables, func(tt schema.TenantTable) bool {
			return tt.Name == info.Name && tt.SkipOnNewIDs
		})
		if skip {
			for {
				if _, _, err := r.NextBlock(); errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					return res, err
				}
			}
			continue
		}
		var pl plan
		if err := p.Target.InTx(ctx, func(tx pgx.Tx) error {
			pl, err = buildPlan(ctx, tx, p.Target, info, p.RemapIDs, p.Upsert)
			return err
		}); err != nil {
			return res, err
		}
		for {
			block, rows, err := r.NextBlock()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return res, err
			}
			if err := p.Target.InTx(ctx, func(tx pgx.Tx) error {
				return loadBlock(ctx, tx, pl, p.Target.OwnerID, block, rows)
			}); err != nil {
				return res, err
			}
			res.Rows[info.Name] += int64(rows)
			done += int64(rows)
			if p.Progress != nil {
				p.Progress(Progress{Table: info.Name, Rows: done, TotalRows: total, Bytes: r.Read(), Elapsed: time.Since(start)})
			}
		}
	}
}

// Counts returns the target tenant's row count of every table of schema.TenantTables that
// exists in the target schema.
func Counts(ctx context.Context, t Target) (map[string]int64, error) {
	out := map[string]int64{}
	err := t.InTx(ctx, func(tx pgx.Tx) error {
		for _, tt := range schema.TenantTables {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, pgx.Identifier{t.Schema, tt.Name}.Sanitize()).Scan(&exists); err != nil {
				return err
			}
			if !exists {
				continue
			}
			var n int64
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{t.Schema, tt.Name}.Sanitize()+` WHERE owner_id = $1`,
				t.OwnerID).Scan(&n); err != nil {
				return fmt.Errorf("count %s: %w", tt.Name, err)
			}
			out[tt.Name] = n
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("archive: counts: %w", err)
	}
	return out, nil
}

// Verify compares the target's row counts with the manifest's (data tables) and, when
// checkDerived, with its derived counts; with newIDs, tables a load leaves out under new ids are
// not compared. It returns a *VerifyError listing every difference.
func Verify(ctx context.Context, t Target, m Manifest, checkDerived, newIDs bool) error {
	got, err := Counts(ctx, t)
	if err != nil {
		return err
	}
	var diffs []string
	for _, info := range m.Tables {
		if newIDs && slices.ContainsFunc(schema.TenantTables, func(tt schema.TenantTable) bool {
			return tt.Name == info.Name && tt.SkipOnNewIDs
		}) {
			continue
		}
		if got[info.Name] != info.Rows {
			diffs = append(diffs, info.Name+": "+strconv.FormatInt(got[info.Name], 10)+" rows, want "+strconv.FormatInt(info.Rows, 10))
		}
	}
	if checkDerived {
		for name, want := range m.DerivedRows {
			if g, ok := got[name]; ok && g != want {
				diffs = append(diffs, name+" (derived): "+strconv.FormatInt(g, 10)+" rows, want "+strconv.FormatInt(want, 10))
			}
		}
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		return &VerifyError{Differences: diffs}
	}
	return nil
}

// VerifyError is a copy whose row counts differ from its source's.
type VerifyError struct {
	Differences []string
}

func (e *VerifyError) Error() string {
	return "archive: verification failed: " + strings.Join(e.Differences, "; ")
}
