package httpapi_test

// rawTextSQL is the text leg of the raw SQL way of BenchmarkSearchPath: the engine's lexical
// ranking written by hand ($1 query, $2 owner, $3 limit).
const rawTextSQL = `SELECT c.chunk_id::text, c.content, ts_rank_cd(c.search_vector, q.q, 32) AS rank
	FROM websearch_to_tsquery('english', $1) AS q(q), {schema}.chunks c
	WHERE c.owner_id = $2 AND c.chunk_level = 0 AND c.search_vector @@ q.q
	ORDER BY rank DESC, c.chunk_id LIMIT $3`
