package archive

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmem/tenantmem/internal/schema"
)

// Progress reports a running export, load or copy.
type Progress struct {
	// Table is the table being read or written.
	Table string
	// Rows and TotalRows count rows of every table, done and expected.
	Rows, TotalRows int64
	// Bytes counts uncompressed archive bytes read or written.
	Bytes int64
	// Elapsed is the time since the operation started.
	Elapsed time.Duration
}

// Querier is what the catalog reads need: a transaction or a connection.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// tableColumn is a column of a tenant table as the catalog of one schema has it.
type tableColumn struct {
	Column
	identity bool // GENERATED ALWAYS AS IDENTITY: a load lets the destination number it
	pk       bool
}

// columnsOf reads the stored (not generated) columns of schemaName.table, in column order. The
// types are named as format_type does under the transaction's search_path. A table that does not
// exist gives no columns and no error.
func columnsOf(ctx context.Context, q Querier, schemaName, table string) ([]tableColumn, error) {
	rows, err := q.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attidentity = 'a',
			EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary AND a.attnum = ANY (i.indkey))
		FROM pg_attribute a
		WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY a.attnum`, pgx.Identifier{schemaName, table}.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("archive: columns of %s: %w", table, err)
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tableColumn, error) {
		var c tableColumn
		err := r.Scan(&c.Name, &c.Type, &c.identity, &c.pk)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("archive: columns of %s: %w", table, err)
	}
	return cols, nil
}

// ExportParams selects what [Snapshot] and [Export] read.
type ExportParams struct {
	// Schema holds the tenant's tables; the transaction's search_path and owner id must be set
	// to this scope (memory.Scope does it).
	Schema string
	// SkipOptional leaves out the optional tables (search history).
	SkipOptional bool
}

// Snapshot reads, in tx, the archived tables' columns and the tenant's row counts (and the
// derived tables' counts), which NewWriter needs before the first row. Run it and Export in the
// same REPEATABLE READ transaction so the counts are those of the rows.
func Snapshot(ctx context.Context, tx pgx.Tx, p ExportParams) ([]TableInfo, map[string]int64, error) {
	var tables []TableInfo
	derived := map[string]int64{}
	for _, t := range schema.TenantTables {
		cols, err := columnsOf(ctx, tx, p.Schema, t.Name)
		if err != nil {
			return nil, nil, err
		}
		if len(cols) == 0 {
			// Not created yet at this schema's migration version.
			continue
		}
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{p.Schema, t.Name}.Sanitize()+
			` WHERE owner_id = current_setting('tenantmem.owner_id')`).Scan(&n); err != nil {
			return nil, nil, fmt.Errorf("archive: count %s: %w", t.Name, err)
		}
		if t.Kind == schema.TableDerived {
			derived[t.Name] = n
			continue
		}
		if t.Optional && p.SkipOptional {
			continue
		}
		info := TableInfo{Name: t.Name, Rows: n}
		for _, c := range cols {
			info.Columns = append(info.Columns, c.Column)
		}
		tables = append(tables, info)
	}
	return tables, derived, nil
}

// selectSQL is the query that reads one table of the scope's tenant, in its export order. It has
// no parameters (COPY takes none): the owner id comes from the transaction's setting, which row
// level security compares with too.
func selectSQL(schemaName string, t TableInfo) string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = pgx.Identifier{c.Name}.Sanitize()
	}
	q := `SELECT ` + strings.Join(names, ", ") + ` FROM ` + pgx.Identifier{schemaName, t.Name}.Sanitize() +
		` WHERE owner_id = current_setting('tenantmem.owner_id')`
	if i := slices.IndexFunc(schema.TenantTables, func(tt schema.TenantTable) bool { return tt.Name == t.Name }); i >= 0 &&
		schema.TenantTables[i].ExportOrder != "" {
		q += ` ORDER BY ` + schema.TenantTables[i].ExportOrder
	}
	return q
}

// Export writes every table of w's manifest, read in tx, to w, calling progress after each
// block. It does not close w.
func Export(ctx context.Context, tx pgx.Tx, p ExportParams, w *Writer, progress func(Progress)) error {
	start := time.Now()
	m := w.Manifest()
	var total, done int64
	for _, t := range m.Tables {
		total += t.Rows
	}
	for _, t := range m.Tables {
		if err := w.BeginTable(t.Name); err != nil {
			return err
		}
		split := newCopySplitter(BlockRows, BlockBytes, func(block []byte, rows int) error {
			if err := w.WriteBlock(block, rows); err != nil {
				return err
			}
			done += int64(rows)
			if progress != nil {
				progress(Progress{Table: t.Name, Rows: done, TotalRows: total, Bytes: w.Written(), Elapsed: time.Since(start)})
			}
			return nil
		})
		if _, err := tx.Conn().PgConn().CopyTo(ctx, split, `COPY (`+selectSQL(p.Schema, t)+`) TO STDOUT (FORMAT binary)`); err != nil {
			return fmt.Errorf("archive: read %s: %w", t.Name, err)
		}
		n, err := split.finish()
		if err != nil {
			return fmt.Errorf("archive: read %s: %w", t.Name, err)
		}
		if n != t.Rows {
			return fmt.Errorf("archive: read %s: %d rows, the snapshot counted %d", t.Name, n, t.Rows)
		}
		if err := w.EndTable(); err != nil {
			return err
		}
	}
	return nil
}
