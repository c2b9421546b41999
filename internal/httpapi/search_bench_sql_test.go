package httpapi_test

// rawTextSQL is the text leg of the raw SQL way of BenchmarkSearchPath: the engine's lexical
// ranking (BM25 over the owner's postings) written by hand ($1 query, $2 owner, $3 limit).
const rawTextSQL = `WITH p AS MATERIALIZED (SELECT term, chunk_id, tf, dl FROM {schema}.chunk_terms
		WHERE owner_id = $2 AND term = ANY(ARRAY(SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', $1))))),
	st AS (SELECT greatest(leaf_count, 1)::float8 AS n, greatest(term_count, 1)::float8 / greatest(leaf_count, 1) AS avgdl
		FROM {schema}.chunk_stats WHERE owner_id = $2),
	df AS (SELECT term, count(*)::float8 AS df FROM p GROUP BY term),
	s AS (SELECT p.chunk_id, sum(ln(1 + (st.n - df.df + 0.5) / (df.df + 0.5)) * p.tf * 2.2
			/ (p.tf + 1.2 * (0.25 + 0.75 * p.dl / st.avgdl))) AS score
		FROM p JOIN df USING (term) CROSS JOIN st GROUP BY p.chunk_id ORDER BY score DESC, chunk_id LIMIT $3)
	SELECT c.chunk_id::text, c.content, s.score FROM s JOIN {schema}.chunks c ON c.owner_id = $2 AND c.chunk_id = s.chunk_id
	ORDER BY s.score DESC, c.chunk_id`
