package provision_test

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/archive"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// explainEverything makes a superuser session send the plan of every statement it runs (not
// those inside functions and triggers) to the client as a notice.
func explainEverything(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, `LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;
		SET auto_explain.log_level = notice; SET client_min_messages = notice`)
	return err
}

// fillManyRows gives a tenant size cheaply, with SQL in its scope: docs documents of two chunks
// each (no vectors), as many search history rows and idempotency keys, and a queued embedding
// job for every tenth chunk. Then it analyzes the tables, as autovacuum would have.
func fillManyRows(t *testing.T, e *memEnv, tn registry.Tenant, docs int) {
	t.Helper()
	ctx := context.Background()
	pool := e.dbPool(t, tn, false)
	s := pgx.Identifier{tn.SchemaName}.Sanitize()
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL search_path = `+s+`, extensions; SET LOCAL ROLE `+provision.DefaultOwnerRole); err != nil {
			return err
		}
		for _, q := range []string{
			`SELECT set_config('tenantmem.owner_id', $1, true), $2::int`,
			`INSERT INTO documents (document_id, owner_id, document_name, document_type, content_bytes)
				SELECT md5($1 || ':doc' || d)::uuid, $1, 'Document ' || d, 'text', 200 FROM generate_series(1, $2::int) d`,
			`INSERT INTO chunks (chunk_id, document_id, owner_id, chunk_index, chunk_level, content, content_hash, token_count, search_vector)
				SELECT md5($1 || ':chunk' || d || ':' || k)::uuid, md5($1 || ':doc' || d)::uuid, $1, k, 0,
					'filler text number ' || d || ' part ' || k, md5(d || ':' || k), 5,
					to_tsvector('english', 'filler text number ' || d || ' part ' || k)
				FROM generate_series(1, $2::int) d, generate_series(0, 1) k`,
			`INSERT INTO embedding_jobs (chunk_id, owner_id)
				SELECT md5($1 || ':chunk' || d || ':0')::uuid, $1 FROM generate_series(1, $2::int, 10) d`,
			`INSERT INTO search_history (search_id, owner_id, query_text, search_type)
				SELECT -i, $1, 'query ' || i, 'hybrid' FROM generate_series(1, $2::int) i`,
			`INSERT INTO idempotency_keys (owner_id, idempotency_key, request_hash)
				SELECT $1, 'key-' || i, '\x00' FROM generate_series(1, $2::int) i`,
			`UPDATE tenant_usage SET documents = documents + $2, chunks = chunks + 2 * $2, content_bytes = content_bytes + 200 * $2
				WHERE owner_id = $1`,
		} {
			if _, err := tx.Exec(ctx, q, tn.ID, docs); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `ANALYZE `+s+`.documents, `+s+`.chunks, `+s+`.embedding_jobs, `+s+`.search_history, `+s+`.idempotency_keys`)
	require.NoError(t, err)
}

// TestCatchUpRoundLooksUpTheLoggedRowsByIndex: a catch-up round of a move applies a few logged
// changes of a tenant with many rows by looking the rows up through their primary keys, on the
// source and on the destination, never by reading the tenant's tables whole (which made every
// round of a large tenant's move cost a scan of its tables: minutes per move under a steady
// writer). auto_explain reports the plan of every statement the round runs. The move then
// finishes with exactly the source's rows, every kind of key (uuid, owner + bigint, owner + text,
// owner alone) carried.
func TestCatchUpRoundLooksUpTheLoggedRowsByIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var stop atomic.Bool
	e := newMemEnv(t, func(_ context.Context, step, _ string) error {
		if stop.Load() && step == provision.StepMoveCopied {
			return errors.New("stopped after the copy")
		}
		return nil
	})
	const docs = 4000
	seqScan := regexp.MustCompile(`Seq Scan on (chunks|documents)\b`)
	for _, tc := range []struct{ from, to registry.Tier }{
		{registry.TierSchema, registry.TierShared},
		{registry.TierShared, registry.TierSchema},
	} {
		id := "big-" + string(tc.from)
		created, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: tc.from})
		require.NoError(t, err)
		fillManyRows(t, e, created.Tenant, docs)
		stop.Store(true)
		_, err = e.prov.MoveTenant(ctx, id, provision.MoveParams{Tier: tc.to})
		require.ErrorContains(t, err, "stopped after the copy")

		// A few changes of every kind, in every table.
		s := e.scope(t, id)
		e.emb.down.Store(true) // its chunks queue embedding jobs
		_, err = e.engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "new", DocumentType: "text",
			Content: "written after the copy, its embedding queued"})
		e.emb.down.Store(false)
		require.NoError(t, err)
		listLimit := 2
		list, err := e.engine.ListDocuments(ctx, s, memory.DocumentListParams{Limit: &listLimit})
		require.NoError(t, err)
		require.NotEmpty(t, list.Documents)
		require.NoError(t, e.engine.DeleteDocument(ctx, s, memory.DocumentDeleteParams{DocumentID: list.Documents[len(list.Documents)-1].DocumentID}))
		_, err = e.engine.Search(ctx, s, memory.SearchParams{QueryText: "filler", SearchType: memory.SearchText})
		require.NoError(t, err)
		err = pgx.BeginFunc(ctx, e.dbPool(t, created.Tenant, true), func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SET LOCAL search_path = `+pgx.Identifier{created.Tenant.SchemaName}.Sanitize()+`, extensions;
				SELECT set_config('tenantmem.owner_id', '`+id+`', true);
				UPDATE chunks SET metadata = '{"touched": true}' WHERE chunk_id = md5('`+id+`:chunk7:1')::uuid;
				DELETE FROM search_history WHERE search_id = -5;
				DELETE FROM embedding_jobs WHERE chunk_id = md5('`+id+`:chunk11:0')::uuid;
				UPDATE idempotency_keys SET result = '{"done": true}' WHERE idempotency_key = 'key-9';
				DELETE FROM idempotency_keys WHERE idempotency_key = 'key-10'`)
			return err
		})
		require.NoError(t, err)
		want := tableDump(t, e, id, true)

		// One round, as the move runs it, with every statement explained.
		job, err := registry.GetJob(ctx, e.pool, id, false)
		require.NoError(t, err)
		var d struct{ From, To registry.Location }
		require.NoError(t, json.Unmarshal(job.Detail, &d))
		var plans pgtest.Plans
		srcCfg, err := pgx.ParseConfig(e.url)
		require.NoError(t, err)
		srcCfg.OnNotice = plans.OnNotice
		srcConn, err := pgx.ConnectConfig(ctx, srcCfg)
		require.NoError(t, err)
		require.NoError(t, explainEverything(ctx, srcConn))
		dstCfg, err := pgxpool.ParseConfig(e.url)
		require.NoError(t, err)
		dstCfg.ConnConfig.OnNotice = plans.OnNotice
		dstCfg.AfterConnect = explainEverything
		dstPool, err := pgxpool.NewWithConfig(ctx, dstCfg)
		require.NoError(t, err)
		src := archive.Target{Pool: e.pool, Role: provision.DefaultOwnerRole, Schema: d.From.Schema, OwnerID: id}
		dst := archive.Target{Pool: dstPool, Role: provision.DefaultOwnerRole, Schema: d.To.Schema, OwnerID: id}
		var round archive.ChangeRound
		err = pgx.BeginTxFunc(ctx, srcConn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
			if err := src.Scope(ctx, tx); err != nil {
				return err
			}
			round, err = archive.ApplyChanges(ctx, tx, src.Schema, dst, provision.DefaultMoveRoundEntries)
			return err
		})
		dstPool.Close()
		require.NoError(t, srcConn.Close(ctx))
		require.NoError(t, err)
		require.Positive(t, round.Entries)
		require.Positive(t, round.Upserted)
		require.Positive(t, round.Deleted)
		got := plans.All()
		require.GreaterOrEqual(t, len(got), 5, "auto_explain reported the round's statements")
		var sawChunks bool
		for _, p := range got {
			require.NotRegexp(t, seqScan, p, "%s -> %s: a catch-up round reads a table whole", tc.from, tc.to)
			sawChunks = sawChunks || strings.Contains(p, "chunks")
		}
		require.True(t, sawChunks, "the round read and wrote chunks")

		// The move finishes (the round is applied again: it is idempotent) with the source's rows.
		stop.Store(false)
		res, err := e.prov.MoveTenant(ctx, id, provision.MoveParams{Tier: tc.to})
		require.NoError(t, err)
		require.Equal(t, tc.to, res.Tenant.Tier)
		require.Equal(t, want, tableDump(t, e, id, true), "%s -> %s", tc.from, tc.to)
	}
}

// TestChunkDeletesFindTheirPostingsByIndex: when chunks are deleted under row-level security
// (as the router and the provisioner's owner role delete them), the trigger that removes their
// BM25 postings finds each posting through the whole primary key of chunk_terms. With the
// posting's impact computed inside the join condition, the planner could not use it in the index
// (the computation is not leakproof, so the policy must be checked first) and read every posting
// of the owner's term for each posting deleted: deleting 500 chunks of a 10,000-chunk tenant
// took 52 s, and a move's cleanup of a 35,000-chunk tenant did not finish in 10 minutes.
func TestChunkDeletesFindTheirPostingsByIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMemEnv(t, nil)
	for _, tier := range tiers {
		id := "postings-" + string(tier)
		created, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: tier})
		require.NoError(t, err)
		fillManyRows(t, e, created.Tenant, 2000)
		s := pgx.Identifier{created.Tenant.SchemaName}.Sanitize()
		var plans pgtest.Plans
		cfg, err := pgx.ParseConfig(e.dbPool(t, created.Tenant, false).Config().ConnConfig.ConnString())
		require.NoError(t, err)
		cfg.OnNotice = plans.OnNotice
		conn, err := pgx.ConnectConfig(ctx, cfg)
		require.NoError(t, err)
		require.NoError(t, explainEverything(ctx, conn))
		var before, after int
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL auto_explain.log_nested_statements = on; SET LOCAL ROLE `+provision.DefaultRouterRole); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT set_config('search_path', $1, true), set_config('tenantmem.owner_id', $2, true)`,
				created.Tenant.SchemaName+", extensions", id); err != nil {
				return err
			}
			count := `SELECT count(*) FROM ` + s + `.chunk_terms WHERE owner_id = $1`
			if err := tx.QueryRow(ctx, count, id).Scan(&before); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM `+s+`.documents WHERE owner_id = $1 AND document_id = md5($1 || ':doc7')::uuid`, id); err != nil {
				return err
			}
			return tx.QueryRow(ctx, count, id).Scan(&after)
		})
		require.NoError(t, conn.Close(ctx))
		require.NoError(t, err)
		require.Greater(t, before, after, "the document's postings went with its chunks")
		var found bool
		for _, p := range plans.All() {
			if !strings.Contains(p, "DELETE FROM chunk_terms") {
				continue
			}
			found = true
			require.Regexp(t, `Index Cond: .*impact = `, p, "%s: every key column of chunk_terms_pkey bounds the lookup", tier)
		}
		require.True(t, found, "auto_explain reported the trigger's delete")
	}
}
