package memory

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/pgvector/pgvector-go"
)

// Search types.
const (
	SearchVector = "vector"
	SearchText   = "text"
	SearchHybrid = "hybrid"
)

// Defaults of [SearchParams].
const (
	DefaultSearchLimit = 10
	DefaultAlpha       = 0.5
)

// SearchParams is one search. Filters combine with AND and apply identically in every mode.
// The JSON names are those of POST /v1/search.
type SearchParams struct {
	// QueryText is the query: required for text and hybrid search, and for vector search
	// without QueryEmbedding. At most Config.MaxQueryChars characters. Text search reads it as
	// web search syntax (websearch_to_tsquery: "quoted phrases", or, -excluded).
	QueryText string `json:"query_text"`
	// QueryEmbedding, when set, is used instead of embedding QueryText for the vector side. It
	// must have the provider's dimension.
	QueryEmbedding []float32 `json:"query_embedding,omitempty"`
	// SearchType is vector, text or hybrid (the default).
	SearchType string `json:"search_type,omitempty"`
	// Limit is the number of results, 1 to 100; nil means 10.
	Limit *int `json:"limit,omitempty"`
	// IDAtOrigin keeps chunks of the document with this id at origin.
	IDAtOrigin string `json:"id_at_origin,omitempty"`
	// IDAtOrigins keeps chunks of documents with one of these ids at origin (at most 1000).
	IDAtOrigins []string `json:"id_at_origins,omitempty"`
	// DocumentTypes keeps chunks of documents of one of these types.
	DocumentTypes []string `json:"document_types,omitempty"`
	// MetadataFilter keeps chunks of documents whose metadata contains this object (jsonb @>).
	MetadataFilter json.RawMessage `json:"metadata_filter,omitempty"`
	// DateFrom and DateTo bound document_date, inclusive; a document without a date never
	// matches a bound.
	DateFrom *time.Time `json:"date_from,omitempty"`
	DateTo   *time.Time `json:"date_to,omitempty"`
	// Alpha weighs the vector side of hybrid search, 0 to 1 (1 = vector only, 0 = text only);
	// nil means 0.5.
	Alpha *float64 `json:"alpha,omitempty"`
	// IncludeParentContext adds each hit's parent chunk (its wider context).
	IncludeParentContext bool `json:"include_parent_context,omitempty"`
	// IncludeDocuments adds the document's type, metadata, id at origin and date.
	IncludeDocuments bool `json:"include_documents,omitempty"`
}

// SearchResult is one hit: a leaf chunk. Score is on one scale for the whole list (see
// docs/memory.md): the cosine similarity for vector search, the normalised text rank for text
// search and the normalised fused rank for hybrid search; higher is better and 1 is the best
// possible. Similarity, TextRank and RRFScore are the components; each is null when its mode
// did not run (and Similarity when the chunk is not embedded yet).
type SearchResult struct {
	ChunkID      string          `json:"chunk_id"`
	DocumentID   string          `json:"document_id"`
	DocumentName string          `json:"document_name"`
	ChunkIndex   int             `json:"chunk_index"`
	Content      string          `json:"content"`
	Score        float64         `json:"score"`
	Similarity   *float64        `json:"similarity"`
	TextRank     *float64        `json:"text_rank"`
	RRFScore     *float64        `json:"rrf_score"`
	Metadata     json.RawMessage `json:"metadata"`
	ParentChunks []ParentChunk   `json:"parent_chunks,omitempty"`
	// With IncludeDocuments only.
	DocumentType     string          `json:"document_type,omitempty"`
	DocumentMetadata json.RawMessage `json:"document_metadata,omitempty"`
	IDAtOrigin       *string         `json:"id_at_origin,omitempty"`
	DocumentDate     *time.Time      `json:"document_date,omitempty"`
}

// ParentChunk is the wider context of a hit.
type ParentChunk struct {
	ChunkID    string `json:"chunk_id"`
	ChunkIndex int    `json:"chunk_index"`
	ChunkLevel int    `json:"chunk_level"`
	Content    string `json:"content"`
}

// SearchResponse is the result list of one search.
type SearchResponse struct {
	Results    []SearchResult `json:"results"`
	SearchType string         `json:"search_type"`
	TookMS     float64        `json:"took_ms"`
	// Degraded is set when a hybrid search ran on text alone because the embedding provider
	// failed on the query.
	Degraded bool `json:"degraded,omitempty"`
}

// searchInput is validated SearchParams.
type searchInput struct {
	p           SearchParams
	searchType  string
	limit       int
	alpha       float64
	idAtOrigins []string
	metadata    json.RawMessage
	queryText   string
}

func (e *Engine) validateSearch(p SearchParams) (searchInput, error) {
	in := searchInput{p: p, searchType: cmp.Or(p.SearchType, SearchHybrid), limit: DefaultSearchLimit, alpha: DefaultAlpha}
	switch in.searchType {
	case SearchVector, SearchText, SearchHybrid:
	default:
		return in, invalid("search_type", "must be vector, text or hybrid, got %q", p.SearchType)
	}
	in.queryText = strings.TrimSpace(p.QueryText)
	if err := checkText("query_text", p.QueryText); err != nil {
		return in, err
	}
	if n := utf8.RuneCountInString(p.QueryText); n > e.cfg.MaxQueryChars {
		return in, tooLarge("query_text", "at most %d characters, got %d", e.cfg.MaxQueryChars, n)
	}
	if in.queryText == "" && (in.searchType != SearchVector || p.QueryEmbedding == nil) {
		if in.searchType == SearchVector {
			return in, invalid("query_text", "must not be empty (or give query_embedding)")
		}
		return in, invalid("query_text", "must not be empty")
	}
	if p.QueryEmbedding != nil {
		if err := checkVectors([][]float32{p.QueryEmbedding}, 1, e.cfg.Embedder.Dimension()); err != nil {
			return in, invalid("query_embedding", "must be a finite, non-zero vector of dimension %d", e.cfg.Embedder.Dimension())
		}
	}
	if p.Limit != nil {
		if *p.Limit < 1 || *p.Limit > MaxLimit {
			return in, invalid("limit", "must be between 1 and %d, got %d", MaxLimit, *p.Limit)
		}
		in.limit = *p.Limit
	}
	if p.Alpha != nil {
		if a := *p.Alpha; math.IsNaN(a) || a < 0 || a > 1 {
			return in, invalid("alpha", "must be between 0 and 1, got %v", a)
		}
		in.alpha = *p.Alpha
	}
	if p.IDAtOrigin != "" {
		if err := validateIDAtOrigin("id_at_origin", p.IDAtOrigin); err != nil {
			return in, err
		}
	}
	if len(p.IDAtOrigins) > MaxFilterValues {
		return in, invalid("id_at_origins", "at most %d values, got %d", MaxFilterValues, len(p.IDAtOrigins))
	}
	for i, id := range p.IDAtOrigins {
		if err := validateIDAtOrigin(fmt.Sprintf("id_at_origins[%d]", i), id); err != nil {
			return in, err
		}
	}
	if len(p.IDAtOrigins) > 0 {
		in.idAtOrigins = slices.Compact(slices.Sorted(slices.Values(p.IDAtOrigins)))
	}
	if len(p.DocumentTypes) > MaxFilterValues {
		return in, invalid("document_types", "at most %d values, got %d", MaxFilterValues, len(p.DocumentTypes))
	}
	for i, t := range p.DocumentTypes {
		if err := validateDocumentType(fmt.Sprintf("document_types[%d]", i), t); err != nil {
			return in, err
		}
	}
	md, err := validateMetadata("metadata_filter", p.MetadataFilter, true)
	if err != nil {
		return in, err
	}
	in.metadata = md
	if p.DateFrom != nil && p.DateTo != nil && p.DateFrom.After(*p.DateTo) {
		return in, invalid("date_from", "must not be after date_to")
	}
	return in, nil
}

// docFilter appends the document filters to args and returns them as SQL conditions on the
// documents alias d, each starting with " AND ", or "" when there is none. The same fragment
// is used by the vector, text and hybrid queries, so the filters are identical in every mode.
func (in searchInput) docFilter(args *[]any) string {
	var b strings.Builder
	add := func(cond string, v any) {
		*args = append(*args, v)
		fmt.Fprintf(&b, " AND "+cond, len(*args))
	}
	if in.p.IDAtOrigin != "" {
		add("d.id_at_origin = $%d", in.p.IDAtOrigin)
	}
	if in.idAtOrigins != nil {
		add("d.id_at_origin = ANY($%d::text[])", in.idAtOrigins)
	}
	if len(in.p.DocumentTypes) > 0 {
		add("d.document_type = ANY($%d::text[])", in.p.DocumentTypes)
	}
	if in.metadata != nil {
		add("d.metadata @> $%d::jsonb", in.metadata)
	}
	if in.p.DateFrom != nil {
		add("d.document_date >= $%d", *in.p.DateFrom)
	}
	if in.p.DateTo != nil {
		add("d.document_date <= $%d", *in.p.DateTo)
	}
	return b.String()
}

// candidate is one ranked chunk id from one side of the search.
type candidate struct {
	id    string
	value float64 // distance (vector) or rank (text)
}

// Search runs a vector, text or hybrid search over the tenant's leaf chunks, records it in the
// search history, and returns at most Limit results, best first.
//
// Vector search orders by cosine distance. For tenants up to Config.ExactSearchThreshold
// chunks it scans the tenant's rows exactly; above that it walks the HNSW index with
// ef_search and a pgvector iterative scan (relaxed order, re-sorted), set transaction-local;
// if that yields fewer than Limit rows it falls back to the exact scan, so results are never
// cut short by the shared index. Text search matches websearch_to_tsquery('english', query)
// and ranks with ts_rank_cd. Hybrid search takes max(2·Limit, 20) candidates from each side
// and fuses them with weighted reciprocal rank fusion.
func (e *Engine) Search(ctx context.Context, s Scope, p SearchParams) (SearchResponse, error) {
	start := time.Now()
	in, err := e.validateSearch(p)
	if err != nil {
		return SearchResponse{}, err
	}
	if err := s.validate(); err != nil {
		return SearchResponse{}, err
	}
	resp := SearchResponse{SearchType: in.searchType, Results: []SearchResult{}}
	useVector := in.searchType == SearchVector || (in.searchType == SearchHybrid && in.alpha > 0)
	useText := in.searchType == SearchText || (in.searchType == SearchHybrid && in.alpha < 1)

	var qvec *pgvector.Vector
	if useVector {
		q := p.QueryEmbedding
		if q == nil {
			vecs, err := e.embed(ctx, []string{in.queryText})
			switch {
			case err == nil:
				q = vecs[0]
			case ctx.Err() != nil:
				return SearchResponse{}, fmt.Errorf("memory: embed query: %w", ctx.Err())
			case in.searchType == SearchHybrid && useText:
				e.cfg.Logger.WarnContext(ctx, "memory: query embedding failed; hybrid search on text only",
					slog.String("owner_id", s.OwnerID), slog.String("error", err.Error()))
				resp.Degraded = true
				useVector = false
			default:
				return SearchResponse{}, fmt.Errorf("%w: %w", ErrEmbeddingUnavailable, err)
			}
		}
		if q != nil {
			v := pgvector.NewVector(q)
			qvec = &v
		}
	}

	candidates := in.limit
	if in.searchType == SearchHybrid {
		candidates = max(2*in.limit, 20)
	}
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		var vecHits, textHits []candidate
		var err error
		if useVector {
			if vecHits, err = e.vectorCandidates(ctx, tx, s, in, *qvec, candidates); err != nil {
				return err
			}
		}
		if useText {
			if textHits, err = e.textCandidates(ctx, tx, s, in, candidates); err != nil {
				return err
			}
		}
		ranked := e.rank(in, vecHits, textHits)
		if resp.Results, err = e.enrich(ctx, tx, s, in, qvec, useText, ranked); err != nil {
			return err
		}
		resp.TookMS = float64(time.Since(start).Microseconds()) / 1000
		return e.recordSearch(ctx, tx, s, in, len(resp.Results), resp.TookMS)
	})
	if err != nil {
		return SearchResponse{}, err
	}
	return resp, nil
}

// vectorCandidates returns up to n leaf chunks nearest to q, nearest first.
func (e *Engine) vectorCandidates(ctx context.Context, tx pgx.Tx, s Scope, in searchInput, q pgvector.Vector, n int) ([]candidate, error) {
	// One round trip: the transaction-local HNSW settings (harmless to the exact scan) and a
	// bounded probe of the tenant's size, which reads at most threshold+1 owner index entries.
	// relaxed_order may return rows slightly out of order: the ANN query re-sorts them.
	t := e.cfg.ExactSearchThreshold
	var size int
	if err := tx.QueryRow(ctx, `SELECT set_config('hnsw.ef_search', $1, true),
			set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.max_scan_tuples', $2, true),
			CASE WHEN $4::bigint < 0 THEN 0 ELSE (SELECT count(*) FROM (SELECT 1 FROM chunks WHERE owner_id = $3 LIMIT $4::bigint + 1) s) END`,
		strconv.Itoa(min(max(e.cfg.EfSearch, n), 1000)), strconv.Itoa(e.cfg.MaxScanTuples), s.OwnerID, t,
	).Scan(nil, nil, nil, &size); err != nil {
		return nil, fmt.Errorf("memory: vector search settings: %w", err)
	}
	exact := t >= 0 && size <= t
	args := []any{q, s.OwnerID}
	filter := in.docFilter(&args)
	join := ""
	if filter != "" {
		join = "JOIN documents d ON d.document_id = c.document_id AND d.owner_id = $2"
	}
	args = append(args, n)
	where := fmt.Sprintf(`c.owner_id = $2 AND c.chunk_level = 0 AND c.embedding IS NOT NULL%s`, filter)
	// The exact scan: the MATERIALIZED CTE has no ORDER BY the HNSW index could serve, so the
	// planner reads the owner's rows (owner index or sequential scan) and sorts them.
	exactSQL := fmt.Sprintf(`
		WITH cand AS MATERIALIZED (
			SELECT c.chunk_id, c.embedding <=> $1 AS distance FROM chunks c %s WHERE %s
		)
		SELECT chunk_id::text, distance FROM cand ORDER BY distance, chunk_id LIMIT $%d`, join, where, len(args))
	if !exact {
		annSQL := fmt.Sprintf(`
			SELECT chunk_id::text, distance FROM (
				SELECT c.chunk_id, c.embedding <=> $1 AS distance FROM chunks c %s WHERE %s
				ORDER BY c.embedding <=> $1 LIMIT $%d
			) s ORDER BY distance, chunk_id`, join, where, len(args))
		hits, err := queryCandidates(ctx, tx, annSQL, args)
		if err != nil {
			return nil, fmt.Errorf("memory: vector search: %w", err)
		}
		if len(hits) >= n {
			return hits, nil
		}
		// Short list: the iterative scan hit max_scan_tuples before finding n rows that pass
		// the owner and filters. The exact scan finds every one that exists.
	}
	hits, err := queryCandidates(ctx, tx, exactSQL, args)
	if err != nil {
		return nil, fmt.Errorf("memory: vector search (exact): %w", err)
	}
	return hits, nil
}

// textCandidates returns up to n leaf chunks matching the query, best ranked first.
func (e *Engine) textCandidates(ctx context.Context, tx pgx.Tx, s Scope, in searchInput, n int) ([]candidate, error) {
	args := []any{in.queryText, s.OwnerID}
	filter := in.docFilter(&args)
	join := ""
	if filter != "" {
		join = "JOIN documents d ON d.document_id = c.document_id AND d.owner_id = $2"
	}
	args = append(args, n)
	sql := fmt.Sprintf(`
		SELECT c.chunk_id::text, ts_rank_cd(c.search_vector, q.q, 32) AS rank
		FROM websearch_to_tsquery('english', $1) AS q(q), chunks c %s
		WHERE c.owner_id = $2 AND c.chunk_level = 0 AND c.search_vector @@ q.q%s
		ORDER BY rank DESC, c.chunk_id LIMIT $%d`, join, filter, len(args))
	hits, err := queryCandidates(ctx, tx, sql, args)
	if err != nil {
		return nil, fmt.Errorf("memory: text search: %w", err)
	}
	return hits, nil
}

func queryCandidates(ctx context.Context, tx pgx.Tx, sql string, args []any) ([]candidate, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (candidate, error) {
		var c candidate
		err := r.Scan(&c.id, &c.value)
		return c, err
	})
}

// ranked is one result before enrichment.
type ranked struct {
	id  string
	rrf float64 // hybrid only
}

// rank orders the candidates of the mode and cuts the list to the limit. Hybrid search fuses
// the two lists with weighted reciprocal rank fusion: a chunk at rank r (1-based) of the vector
// list gets alpha/(k+r), at rank r of the text list (1-alpha)/(k+r); a chunk without any
// contribution (alpha 0 or 1) is dropped.
func (e *Engine) rank(in searchInput, vecHits, textHits []candidate) []ranked {
	switch in.searchType {
	case SearchVector:
		out := make([]ranked, 0, min(len(vecHits), in.limit))
		for _, h := range vecHits[:min(len(vecHits), in.limit)] {
			out = append(out, ranked{id: h.id})
		}
		return out
	case SearchText:
		out := make([]ranked, 0, min(len(textHits), in.limit))
		for _, h := range textHits[:min(len(textHits), in.limit)] {
			out = append(out, ranked{id: h.id})
		}
		return out
	}
	k := float64(e.cfg.RRFK)
	type fused struct {
		rrf              float64
		vecRank, txtRank int // 0 = absent
	}
	m := make(map[string]*fused, len(vecHits)+len(textHits))
	get := func(id string) *fused {
		f := m[id]
		if f == nil {
			f = &fused{}
			m[id] = f
		}
		return f
	}
	if in.alpha > 0 {
		for i, h := range vecHits {
			f := get(h.id)
			f.rrf += in.alpha / (k + float64(i+1))
			f.vecRank = i + 1
		}
	}
	if in.alpha < 1 {
		for i, h := range textHits {
			f := get(h.id)
			f.rrf += (1 - in.alpha) / (k + float64(i+1))
			f.txtRank = i + 1
		}
	}
	ids := make([]string, 0, len(m))
	for id, f := range m {
		if f.rrf > 0 {
			ids = append(ids, id)
		}
	}
	// Ties (same fused value) go to the better vector rank, then the better text rank, then
	// the chunk id, so the order is deterministic.
	rankOr := func(r int) int {
		if r == 0 {
			return math.MaxInt
		}
		return r
	}
	slices.SortFunc(ids, func(a, b string) int {
		fa, fb := m[a], m[b]
		if c := cmp.Compare(fb.rrf, fa.rrf); c != 0 {
			return c
		}
		if c := cmp.Compare(rankOr(fa.vecRank), rankOr(fb.vecRank)); c != 0 {
			return c
		}
		if c := cmp.Compare(rankOr(fa.txtRank), rankOr(fb.txtRank)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	out := make([]ranked, 0, min(len(ids), in.limit))
	for _, id := range ids[:min(len(ids), in.limit)] {
		out = append(out, ranked{id: id, rrf: m[id].rrf})
	}
	return out
}

// enrich reads the rows of the ranked chunks in one query (parents and documents included)
// and computes the scores.
func (e *Engine) enrich(ctx context.Context, tx pgx.Tx, s Scope, in searchInput, qvec *pgvector.Vector, useText bool,
	list []ranked) ([]SearchResult, error) {
	if len(list) == 0 {
		return []SearchResult{}, nil
	}
	ids := make([]string, len(list))
	for i, r := range list {
		ids[i] = r.id
	}
	args := []any{s.OwnerID, ids}
	cols := `c.chunk_id::text, c.document_id::text, d.document_name, c.chunk_index, c.content, c.metadata`
	from := `chunks c JOIN documents d ON d.document_id = c.document_id AND d.owner_id = $1`
	if qvec != nil {
		args = append(args, *qvec)
		cols += fmt.Sprintf(`, 1 - (c.embedding <=> $%d)`, len(args))
	} else {
		cols += `, NULL::float8`
	}
	if useText {
		args = append(args, in.queryText)
		cols += fmt.Sprintf(`, ts_rank_cd(c.search_vector, websearch_to_tsquery('english', $%d), 32)`, len(args))
	} else {
		cols += `, NULL::float8`
	}
	if in.p.IncludeParentContext {
		cols += `, p.chunk_id::text, p.chunk_index, p.chunk_level, p.content`
		from += ` LEFT JOIN chunks p ON p.chunk_id = c.parent_chunk_id AND p.owner_id = $1`
	} else {
		cols += `, NULL::text, NULL::int, NULL::smallint, NULL::text`
	}
	if in.p.IncludeDocuments {
		cols += `, d.document_type, d.metadata, d.id_at_origin, d.document_date`
	} else {
		cols += `, NULL::text, NULL::jsonb, NULL::text, NULL::timestamptz`
	}
	rows, err := tx.Query(ctx, `SELECT `+cols+` FROM `+from+` WHERE c.owner_id = $1 AND c.chunk_id = ANY($2::uuid[])`, args...)
	if err != nil {
		return nil, fmt.Errorf("memory: search results: %w", err)
	}
	byID := make(map[string]SearchResult, len(list))
	for rows.Next() {
		var (
			r                    SearchResult
			pID, pContent, dType *string
			pIndex               *int
			pLevel               *int16
			dMeta                []byte
		)
		if err := rows.Scan(&r.ChunkID, &r.DocumentID, &r.DocumentName, &r.ChunkIndex, &r.Content, &r.Metadata,
			&r.Similarity, &r.TextRank, &pID, &pIndex, &pLevel, &pContent, &dType, &dMeta, &r.IDAtOrigin,
			&r.DocumentDate); err != nil {
			rows.Close()
			return nil, fmt.Errorf("memory: search results: %w", err)
		}
		if pID != nil {
			r.ParentChunks = []ParentChunk{{ChunkID: *pID, ChunkIndex: *pIndex, ChunkLevel: int(*pLevel), Content: *pContent}}
		} else if in.p.IncludeParentContext {
			r.ParentChunks = []ParentChunk{}
		}
		if dType != nil {
			r.DocumentType, r.DocumentMetadata = *dType, dMeta
		}
		byID[r.ChunkID] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("memory: search results: %w", err)
	}
	k1 := float64(e.cfg.RRFK + 1)
	out := make([]SearchResult, 0, len(list))
	for _, rk := range list {
		r, ok := byID[rk.id]
		if !ok {
			continue // deleted between the two statements
		}
		switch in.searchType {
		case SearchVector:
			r.Score = deref(r.Similarity)
		case SearchText:
			r.Score = deref(r.TextRank)
		case SearchHybrid:
			rrf := rk.rrf
			r.RRFScore = &rrf
			r.Score = rrf * k1 // the best possible fused value, rank 1 on both sides, is 1/(k+1)
		}
		out = append(out, r)
	}
	return out, nil
}

func deref(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}
