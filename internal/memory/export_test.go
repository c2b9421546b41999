package memory

import (
	"context"
	"strconv"
	"strings"

	"github.com/pgvector/pgvector-go"
)

// ExplainSearch returns EXPLAIN (ANALYZE, BUFFERS) of the search statement of p, run as Search
// runs it (same settings, same round trip).
func (e *Engine) ExplainSearch(ctx context.Context, s Scope, p SearchParams) (string, error) {
	in, err := e.validateSearch(p)
	if err != nil {
		return "", err
	}
	lex := parseWebQuery(in.queryText)
	useVector := in.searchType != SearchText
	useText := in.searchType != SearchVector && lex.pos != ""
	var qvec *pgvector.Vector
	if useVector {
		v := pgvector.NewVector(p.QueryEmbedding)
		qvec = &v
	}
	size, err := e.tenantSize(ctx, s)
	if err != nil {
		return "", err
	}
	n := in.limit
	plan := e.planVector(s, in, size, n)
	var lines []string
	var stmts []readStmt
	explain := func(sql string, args []any) {
		stmts = append(stmts, readStmt{sql: "EXPLAIN (ANALYZE, BUFFERS) " + sql, args: args, scan: func(r *readRows) error {
			for r.Next() {
				var l string
				if err := r.Scan(&l); err != nil {
					return err
				}
				lines = append(lines, l)
			}
			return nil
		}})
	}
	if useVector {
		explain(e.vectorSQL(s, in, *qvec, plan.exact, n))
	}
	if useText {
		explain(e.textSQL(s, in, lex, qvec, n))
	}
	err = s.read(ctx, readSettings{{"hnsw.ef_search", strconv.Itoa(plan.ef)}, {"hnsw.iterative_scan", "relaxed_order"},
		{"hnsw.max_scan_tuples", strconv.Itoa(e.cfg.MaxScanTuples)}}, stmts...)
	return "size " + strconv.FormatInt(size, 10) + " ef " + strconv.Itoa(plan.ef) + " exact " + strconv.FormatBool(plan.exact) +
		"\n" + strings.Join(lines, "\n"), err
}
