package archive

import (
	"context"
	"encoding/json"
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

// keyExpr is the expression of a table's primary key as the change log records it: its columns
// other than owner_id, each as text, in key order.
func keyExpr(ctx context.Context, q Querier, schemaName, table string) (string, int, error) {
	rows, err := q.Query(ctx, `SELECT a.attname FROM pg_index i
		CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = to_regclass($1) AND i.indisprimary AND a.attname <> 'owner_id' ORDER BY k.ord`,
		pgx.Identifier{schemaName, table}.Sanitize())
	if err != nil {
		return "", 0, err
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", 0, err
	}
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = "t." + pgx.Identifier{c}.Sanitize() + "::text"
	}
	return "ARRAY[" + strings.Join(parts, ", ") + "]::text[]", len(cols), nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// ApplyChanges is one round of a move's catch-up: it reads up to limit entries of the source's
// change log (in srcTx, a REPEATABLE READ transaction of the source scope that may create
// temporary tables), reads the current version of every row they name in that same snapshot, and,
// in one transaction of the destination, deletes the rows the source no longer has and upserts
// the others. Applying a round twice is harmless (it reads the source's current rows), so the
// caller deletes the entries (ChangeIDs) from the log only after this returns.
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
		info    TableInfo
		deleted [][]string
		blocks  [][]byte
		rows    []int
		arity   int
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
		expr, arity, err := keyExpr(ctx, srcTx, srcSchema, t.Name)
		if err != nil {
			return r, err
		}
		tc := &tableChanges{info: TableInfo{Name: t.Name}, arity: arity}
		for _, c := range cols {
			tc.info.Columns = append(tc.info.Columns, c.Column)
		}
		tbl := pgx.Identifier{srcSchema, t.Name}.Sanitize()
		keys := `SELECT row_key FROM tm_changes WHERE table_name = ` + quoteLiteral(t.Name)
		// Rows the source no longer has.
		drows, err := srcTx.Query(ctx, `SELECT DISTINCT c.row_key FROM tm_changes c WHERE c.table_name = $1
			AND NOT EXISTS (SELECT 1 FROM `+tbl+` t WHERE t.owner_id = current_setting('tenantmem.owner_id') AND `+expr+` = c.row_key)`, t.Name)
		if err != nil {
			return r, fmt.Errorf("archive: deleted rows of %s: %w", t.Name, err)
		}
		if tc.deleted, err = pgx.CollectRows(drows, pgx.RowTo[[]string]); err != nil {
			return r, fmt.Errorf("archive: deleted rows of %s: %w", t.Name, err)
		}
		// The current version of the others, in the table's export order.
		names := make([]string, len(tc.info.Columns))
		for i, c := range tc.info.Columns {
			names[i] = "t." + pgx.Identifier{c.Name}.Sanitize()
		}
		q := `SELECT ` + strings.Join(names, ", ") + ` FROM ` + tbl + ` t WHERE t.owner_id = current_setting('tenantmem.owner_id') AND ` +
			expr + ` IN (` + keys + `)`
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
			if len(tc.deleted) == 0 {
				continue
			}
			expr, _, err := keyExpr(ctx, tx, dst.Schema, tc.info.Name)
			if err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `DELETE FROM `+pgx.Identifier{dst.Schema, tc.info.Name}.Sanitize()+` t
				WHERE t.owner_id = $1 AND `+expr+` IN (SELECT k FROM jsonb_array_elements($2::jsonb) e,
					LATERAL (SELECT coalesce(array_agg(x ORDER BY n), '{}'::text[]) AS k FROM jsonb_array_elements_text(e.value) WITH ORDINALITY AS y(x, n)) z)`,
				dst.OwnerID, keysJSON(tc.deleted))
			if err != nil {
				return fmt.Errorf("archive: delete from %s: %w", tc.info.Name, err)
			}
			r.Deleted += tag.RowsAffected()
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

// keysJSON encodes keys as a JSON array of arrays of strings. (An empty key stands for the
// owner's only row: its array is empty, and the table's key expression is an empty array too.)
func keysJSON(keys [][]string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('[')
		for j, v := range k {
			if j > 0 {
				b.WriteByte(',')
			}
			q, _ := json.Marshal(v)
			b.Write(q)
		}
		b.WriteByte(']')
	}
	b.WriteByte(']')
	return b.String()
}
