package archive

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmem/tenantmem/internal/schema"
)

// ChangeRound is what one round of [ApplyChanges] did.
type ChangeRound struct {
	// Entries is the number of change log entries read (at most the limit); ChangeIDs are
	// their ids, to delete from the log once the destination committed.
	Entries   int
	ChangeIDs []int64
	// Upserted and Deleted count rows written to and removed from the destination.
	Upserted, Deleted int64
}

// keyColumn is a column of a table's primary key other than owner_id, with its type as
// format_type writes it (a type name that casts text back to the column's type).
type keyColumn struct {
	name, typ string
}

// primaryKey returns the columns of a table's primary key other than owner_id, in key order: the
// change log records a row's key as those columns, each as text. A table whose key is owner_id
// alone (one row per owner) has none; a table without a primary key is an error.
func primaryKey(ctx context.Context, q Querier, schemaName, table string) ([]keyColumn, error) {
	rows, err := q.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i
		CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY k.ord`,
		pgx.Identifier{schemaName, table}.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("archive: primary key of %s: %w", table, err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (keyColumn, error) {
		var c keyColumn
		err := r.Scan(&c.name, &c.typ)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("archive: primary key of %s: %w", table, err)
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("archive: table %s.%s: %w (no primary key)", schemaName, table, ErrIncompatible)
	}
	return slices.DeleteFunc(all, func(c keyColumn) bool { return c.name == "owner_id" }), nil
}

// keyJoin is the condition that joins the rows t of a table to the rows k of a relation whose
// columns k1, k2, ... hold key values of the table's types: one equality of two columns of the
// same type per key column, which the primary key's index serves and which row-level security
// lets the planner use as an index condition (the operators are leakproof). An expression such
// as ARRAY[t.id::text] = c.row_key, or a cast of logged text on the other side
// (t.id = (c.row_key[1])::uuid: the cast is not leakproof), matches the same rows, but then the
// policies' condition must be checked first and the planner reads the tenant's whole table. An
// empty key matches the owner's only row.
func keyJoin(cols []keyColumn) string {
	if len(cols) == 0 {
		return "true"
	}
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = fmt.Sprintf("t.%s = k.k%d", pgx.Identifier{c.name}.Sanitize(), i+1)
	}
	return strings.Join(parts, " AND ")
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// ApplyChanges is one round of a move's catch-up: it reads up to limit entries of the source's
// change log (in srcTx, a REPEATABLE READ transaction of the source scope that may create
// temporary tables), reads the current version of every row they name in that same snapshot, and,
// in one transaction of the destination, deletes the rows the source no longer has and upserts
// the others. Applying a round twice is harmless (it reads the source's current rows), so the
// caller deletes the entries (ChangeIDs) from the log only after this returns.
//
// Its cost follows the number of entries, not the tenant's size: every row is found through
// its primary key, on both sides (docs/archive.md, "Moves").
func ApplyChanges(ctx context.Context, srcTx pgx.Tx, srcSchema string, dst Target, limit int) (ChangeRound, error) {
	var r ChangeRound
	log := pgx.Identifier{srcSchema, schema.ChangeLogTable}.Sanitize()
	// The entries of this round, as the snapshot sees them.
	if _, err := srcTx.Exec(ctx, `CREATE TEMPORARY TABLE tm_changes ON COMMIT DROP AS
		SELECT change_id, table_name, row_key FROM `+log+`
		WHERE owner_id = current_setting('tenantmem.owner_id') ORDER BY change_id LIMIT `+fmt.Sprint(limit)); err != nil {
		return r, fmt.Errorf("archive: read the change log: %w", err)
	}
	rows, err := srcTx.Query(ctx, `SELECT change_id FROM tm_changes ORDER BY change_id`)
	if err != nil {
		return r, err
	}
	if r.ChangeIDs, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
		return r, err
	}
	r.Entries = len(r.ChangeIDs)
	if r.Entries == 0 {
		return r, nil
	}
	rows, err = srcTx.Query(ctx, `SELECT DISTINCT table_name FROM tm_changes`)
	if err != nil {
		return r, err
	}
	touched, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return r, err
	}
	type tableChanges struct {
		info TableInfo
		// deleted holds the keys of the rows the source no longer has, one slice of values
		// (as text) per key column.
		deleted [][]string
		ndel    int
		blocks  [][]byte
		rows    []int
	}
	var work []*tableChanges
	for _, t := range schema.TenantTables {
		if t.Kind != schema.TableData || !slices.Contains(touched, t.Name) {
			continue
		}
		cols, err := columnsOf(ctx, srcTx, srcSchema, t.Name)
		if err != nil {
			return r, err
		}
		if len(cols) == 0 {
			continue
		}
		key, err := primaryKey(ctx, srcTx, srcSchema, t.Name)
		if err != nil {
			return r, err
		}
		tc := &tableChanges{info: TableInfo{Name: t.Name}, deleted: make([][]string, len(key))}
		for _, c := range cols {
			tc.info.Columns = append(tc.info.Columns, c.Column)
		}
		tbl := pgx.Identifier{srcSchema, t.Name}.Sanitize()
		// The table's logged keys, typed, in a table of their own with statistics: the planner
		// then knows there are few and looks each up in the primary key's index.
		keys := pgx.Identifier{"pg_temp", "tm_keys_" + t.Name}.Sanitize()
		typed := make([]string, len(key))
		for i, c := range key {
			typed[i] = fmt.Sprintf("(row_key[%d])::%s AS k%d", i+1, c.typ, i+1)
		}
		if len(key) == 0 {
			typed = []string{"true AS k0"}
		}
		if _, err := srcTx.Exec(ctx, `CREATE TEMPORARY TABLE `+keys+` ON COMMIT DROP AS SELECT DISTINCT `+strings.Join(typed, ", ")+
			` FROM tm_changes WHERE table_name = `+quoteLiteral(t.Name)); err != nil {
			return r, fmt.Errorf("archive: logged keys of %s: %w", t.Name, err)
		}
		if _, err := srcTx.Exec(ctx, `ANALYZE `+keys); err != nil {
			return r, fmt.Errorf("archive: logged keys of %s: %w", t.Name, err)
		}
		// Rows the source no longer has.
		asText := make([]string, len(key))
		for i := range key {
			asText[i] = fmt.Sprintf("k.k%d::text", i+1)
		}
		drows, err := srcTx.Query(ctx, `SELECT ARRAY[`+strings.Join(asText, ", ")+`]::text[] FROM `+keys+` k
			WHERE NOT EXISTS (SELECT 1 FROM `+tbl+` t WHERE t.owner_id = current_setting('tenantmem.owner_id') AND `+keyJoin(key)+`)`)
		if err != nil {
			return r, fmt.Errorf("archive: deleted rows of %s: %w", t.Name, err)
		}
		deleted, err := pgx.CollectRows(drows, pgx.RowTo[[]string])
		if err != nil {
			return r, fmt.Errorf("archive: deleted rows of %s: %w", t.Name, err)
		}
		tc.ndel = len(deleted)
		for _, k := range deleted {
			for i, v := range k {
				tc.deleted[i] = append(tc.deleted[i], v)
			}
		}
		// The current version of the others, in the table's export order.
		names := make([]string, len(tc.info.Columns))
		for i, c := range tc.info.Columns {
			names[i] = "t." + pgx.Identifier{c.Name}.Sanitize()
		}
		q := `SELECT ` + strings.Join(names, ", ") + ` FROM ` + keys + ` k JOIN ` + tbl + ` t ON ` + keyJoin(key) +
			` WHERE t.owner_id = current_setting('tenantmem.owner_id')`
		if t.ExportOrder != "" {
			q += ` ORDER BY ` + t.ExportOrder
		}
		split := newCopySplitter(BlockRows, BlockBytes, func(block []byte, n int) error {
			tc.blocks = append(tc.blocks, append([]byte(nil), block...))
			tc.rows = append(tc.rows, n)
			return nil
		})
		if _, err := srcTx.Conn().PgConn().CopyTo(ctx, split, `COPY (`+q+`) TO STDOUT (FORMAT binary)`); err != nil {
			return r, fmt.Errorf("archive: changed rows of %s: %w", t.Name, err)
		}
		if _, err := split.finish(); err != nil {
			return r, err
		}
		work = append(work, tc)
	}
	// One destination transaction: deletes children first, then upserts parents first.
	err = dst.InTx(ctx, func(tx pgx.Tx) error {
		for i := len(work) - 1; i >= 0; i-- {
			tc := work[i]
			if tc.ndel == 0 {
				continue
			}
			n, err := deleteKeys(ctx, tx, dst, tc.info.Name, tc.deleted)
			if err != nil {
				return err
			}
			r.Deleted += n
		}
		for _, tc := range work {
			if len(tc.blocks) == 0 {
				continue
			}
			pl, err := buildPlan(ctx, tx, dst, tc.info, false, true)
			if err != nil {
				return err
			}
			for i, b := range tc.blocks {
				if err := loadBlock(ctx, tx, pl, dst.OwnerID, b, tc.rows[i]); err != nil {
					return err
				}
				r.Upserted += int64(tc.rows[i])
			}
		}
		return nil
	})
	return r, err
}

// deleteKeys deletes the target owner's rows of table whose primary keys are given, one slice of
// values (as text) per key column other than owner_id. The keys arrive as typed arrays, unnested
// into typed columns, so the primary key's index finds each row (see keyJoin).
func deleteKeys(ctx context.Context, tx pgx.Tx, dst Target, table string, keys [][]string) (int64, error) {
	key, err := primaryKey(ctx, tx, dst.Schema, table)
	if err != nil {
		return 0, err
	}
	if len(key) != len(keys) {
		return 0, fmt.Errorf("archive: table %s: %w (its primary key has %d columns besides owner_id at the destination, %d at the source)",
			table, ErrIncompatible, len(key), len(keys))
	}
	q := `DELETE FROM ` + pgx.Identifier{dst.Schema, table}.Sanitize() + ` t`
	args := []any{dst.OwnerID}
	if len(key) > 0 {
		arrays := make([]string, len(key))
		names := make([]string, len(key))
		for i, c := range key {
			arrays[i] = fmt.Sprintf("$%d::text[]::%s[]", i+2, c.typ)
			names[i] = fmt.Sprintf("k%d", i+1)
			args = append(args, keys[i])
		}
		q += ` USING unnest(` + strings.Join(arrays, ", ") + `) AS k(` + strings.Join(names, ", ") + `)`
	}
	tag, err := tx.Exec(ctx, q+` WHERE t.owner_id = $1 AND `+keyJoin(key), args...)
	if err != nil {
		return 0, fmt.Errorf("archive: delete from %s: %w", table, err)
	}
	return tag.RowsAffected(), nil
}
