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

	"github.com/tenantmem/tenantmem/internal/schema"
)

// Search types.
const (
	SearchVector = "vector"
	SearchText   = "text"
	SearchHybrid = "hybrid"
)

// Fusion methods of hybrid search.
const (
	// FusionScore normalises each leg's scores to 0..1 over its candidates (min-max) and adds
	// them weighted by alpha (vector) and 1-alpha (text).
	FusionScore = "score"
	// FusionRRF is weighted reciprocal rank fusion: alpha/(k+rank) + (1-alpha)/(k+rank).
	FusionRRF = "rrf"
	// FusionDBSF is distribution-based score fusion: like FusionScore, with each leg's range
	// taken as its mean ± 3 standard deviations over its candidates.
	FusionDBSF = "dbsf"
)

// spread is mean ± 3 standard deviations of xs.
func spread(xs []float64) (float64, float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	var sum, sq float64
	for _, x := range xs {
		sum += x
	}
	mean := sum / float64(len(xs))
	for _, x := range xs {
		sq += (x - mean) * (x - mean)
	}
	sd := math.Sqrt(sq / float64(len(xs)))
	return mean - 3*sd, mean + 3*sd
}

// Defaults of [SearchParams].
const (
	DefaultSearchLimit = 10
	DefaultAlpha       = 0.1
)

// SearchParams is one search. Filters combine with AND and apply identically in every mode.
// The JSON names are those of POST /v1/search.
type SearchParams struct {
	// QueryText is the query: required for text and hybrid search, and for vector search
	// without QueryEmbedding. At most Config.MaxQueryChars characters. Text search reads it as
	// web search syntax: words are alternatives (any may match; BM25 ranks), "quoted phrases"
	// must occur, -word and -"phrase" must not, and the word or is ignored.
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
	// MetadataFilter keeps chunks of documents whose metadata contains this object (jsonb @>):
	// it matches the DOCUMENT's metadata.
	MetadataFilter json.RawMessage `json:"metadata_filter,omitempty"`
	// ChunkMetadataFilter keeps chunks whose own metadata (the chunker's keys: section,
	// email_part, speakers, start, end, ...) contains this object. Both filters may be given.
	ChunkMetadataFilter json.RawMessage `json:"chunk_metadata_filter,omitempty"`
	// DateFrom and DateTo bound document_date, inclusive; a document without a date never
	// matches a bound.
	DateFrom *time.Time `json:"date_from,omitempty"`
	DateTo   *time.Time `json:"date_to,omitempty"`
	// Alpha weighs the vector side of hybrid search, 0 to 1 (1 = vector only, 0 = text only);
	// nil means 0.1 (tuned with score fusion on the go-std evaluation set, confirmed on debian: docs/benchmarks.md).
	Alpha *float64 `json:"alpha,omitempty"`
	// IncludeParentContext adds each hit's parent chunk (its wider context).
	IncludeParentContext bool `json:"include_parent_context,omitempty"`
	// IncludeDocuments adds the document's type, metadata, id at origin and date.
	IncludeDocuments bool `json:"include_documents,omitempty"`
	// Fusion is how hybrid search fuses its two lists: score (min-max normalised scores,
	// alpha-weighted) or rrf (weighted reciprocal rank fusion); empty means Config.Fusion.
	Fusion string `json:"fusion,omitempty"`
	// RecallTarget is the recall@10 against an exact scan that the HNSW search effort is chosen
	// for, 0.5 to 1 (1 means an exact scan); nil means Config.RecallTarget (0.95).
	RecallTarget *float64 `json:"recall_target,omitempty"`
	// Rerank re-scores the top RerankTopK candidates with the configured reranker.
	Rerank bool `json:"rerank,omitempty"`
	// RerankTopK is how many candidates the reranker sees, 1 to MaxRerankTopK; nil means
	// max(limit, 20). Only with Rerank.
	RerankTopK *int `json:"rerank_top_k,omitempty"`
}

// SearchResult is one hit: a leaf chunk. Score is on one scale for the whole list (see
// docs/memory.md): the cosine similarity for vector search, the normalised text rank for text
// search and the normalised fused rank for hybrid search; higher is better and 1 is the best
// possible. Similarity, TextRank and RRFScore are the components; each is null when its mode
// did not run (and Similarity when the chunk is not embedded yet).
type SearchResult struct {
	ChunkID      string   `json:"chunk_id"`
	DocumentID   string   `json:"document_id"`
	DocumentName string   `json:"document_name"`
	ChunkIndex   int      `json:"chunk_index"`
	Content      string   `json:"content"`
	Score        float64  `json:"score"`
	Similarity   *float64 `json:"similarity"`
	TextRank     *float64 `json:"text_rank"`
	RRFScore     *float64 `json:"rrf_score"`
	// RerankScore is the reranker's score, with rerank only (within rerank_top_k).
	RerankScore  *float64        `json:"rerank_score,omitempty"`
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
	// Degraded is set when part of the search could not run and the answer is the best without
	// it: a hybrid search ran on text alone because the embedding provider failed on the query, or
	// the reranker failed and the results keep the unreranked order. DegradedReasons says which.
	Degraded        bool     `json:"degraded,omitempty"`
	DegradedReasons []string `json:"degraded_reasons,omitempty"`
}

// searchInput is validated SearchParams.
type searchInput struct {
	p             SearchParams
	searchType    string
	limit         int
	alpha         float64
	idAtOrigins   []string
	metadata      json.RawMessage
	chunkMetadata json.RawMessage
	queryText     string
	recallTarget  float64
	fusion        string
	rerank        bool
	rerankTopK    int
}

func (e *Engine) validateSearch(p SearchParams) (searchInput, error) {
	in := searchInput{p: p, searchType: cmp.Or(p.SearchType, SearchHybrid), limit: DefaultSearchLimit, alpha: DefaultAlpha,
		recallTarget: e.cfg.RecallTarget}
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
	if in.chunkMetadata, err = validateMetadata("chunk_metadata_filter", p.ChunkMetadataFilter, true); err != nil {
		return in, err
	}
	if p.RecallTarget != nil {
		if r := *p.RecallTarget; math.IsNaN(r) || r < MinRecallTarget || r > 1 {
			return in, invalid("recall_target", "must be between %v and 1 (1 = exact), got %v", MinRecallTarget, r)
		}
		in.recallTarget = *p.RecallTarget
	}
	in.fusion = cmp.Or(p.Fusion, e.cfg.Fusion)
	switch in.fusion {
	case FusionScore, FusionRRF, FusionDBSF:
	default:
		return in, invalid("fusion", "must be %s or %s, got %q", FusionScore, FusionRRF, p.Fusion)
	}
	in.rerank = p.Rerank
	if p.RerankTopK != nil {
		switch k := *p.RerankTopK; {
		case !p.Rerank:
			return in, invalid("rerank_top_k", "is only used with rerank: true")
		case k < 1 || k > MaxRerankTopK:
			return in, invalid("rerank_top_k", "must be between 1 and %d, got %d", MaxRerankTopK, k)
		}
		in.rerankTopK = *p.RerankTopK
	} else {
		in.rerankTopK = max(in.limit, DefaultRerankTopK)
	}
	if p.Rerank && e.cfg.Reranker == nil {
		return in, invalid("rerank", "this deployment has no reranker configured")
	}
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

// Tunables of lexical ranking (Okapi BM25, as Lucene and Elasticsearch default to).
const (
	bm25K1 = 1.2
	bm25B  = 0.75
)

// searchRow is one candidate chunk read by the search statement, with everything a result needs.
type searchRow struct {
	r          SearchResult
	value      float64 // the leg's own value: cosine distance (vector) or BM25 score (text)
	vecRank    int     // 1-based rank in the vector list; 0 = absent
	txtRank    int     // 1-based rank in the text list; 0 = absent
	bm25       float64
	hasBM25    bool // the chunk is among the text leg's candidates
	start, end int
}

// Search runs a vector, text or hybrid search over the tenant's leaf chunks, records it in the
// search history, and returns at most Limit results, best first.
//
// Everything the answer needs is read in one round trip (see Scope.read): the settings, the
// fence, the tenant's size and one statement that computes both legs and returns the candidate
// rows. Vector search orders by cosine distance: for tenants up to Config.ExactSearchThreshold
// leaf chunks it scans the tenant's rows exactly; above that it walks the HNSW index with an
// iterative scan and an ef_search chosen for the recall target, falling back to the exact scan
// within the same statement when that yields fewer rows than asked. Text search is BM25 over
// the tenant's own term statistics (docs/memory.md). Hybrid search fuses the two lists.
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
	lex := parseWebQuery(in.queryText)
	if useText && lex.pos == "" {
		if in.searchType == SearchText {
			return SearchResponse{}, errNoTerms
		}
		useText = false // hybrid: the vector leg alone (documented)
	}

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
				resp.DegradedReasons = append(resp.DegradedReasons, DegradedEmbedding)
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
	if !useVector && !useText {
		return SearchResponse{}, errNoTerms
	}

	// Candidates per leg: hybrid fuses two lists; every mode reads a few more than the limit so
	// that dropping chunks nested in other results (hygiene) never shortens the list, and reranking
	// reads its top k.
	// Candidates per leg. The vector leg reads exactly what it needs: each row beyond the
	// limit costs HNSW work (an iterative scan past its first ef_search candidates is several
	// times slower). The text leg scores every match anyway, so it reads more for fusion and
	// hygiene. Reranking reads its top k from both.
	nVec, n := in.limit, in.limit+min(in.limit, 10)
	if in.searchType == SearchHybrid {
		// Fusion needs depth on both sides: max(2·limit, 20) each (as the evaluation measured).
		n = max(2*in.limit, 20)
		nVec = n
	}
	if in.rerank {
		nVec, n = max(nVec, in.rerankTopK), max(n, in.rerankTopK)
	}
	size, known := e.sizes.get(s)
	if useVector && !known {
		if size, err = e.tenantSize(ctx, s); err != nil {
			return SearchResponse{}, err
		}
	}
	plan := e.planVector(s, in, size, nVec)

	var (
		vecRows, txtRows []searchRow
		fresh            int64 = -1
		lexemeCount      int64
	)
	settings := readSettings{{"hnsw.ef_search", strconv.Itoa(plan.ef)}, {"hnsw.iterative_scan", "relaxed_order"},
		{"hnsw.max_scan_tuples", strconv.Itoa(e.cfg.MaxScanTuples)}}
	// Both legs are cached statements (parsed once per connection). The text leg is planned
	// once (generic): its plan is the same for every parameter (per-term index probes of the
	// owner's postings, primary-key lookups of at most n chunks). The vector leg is planned with
	// its parameters every time: a generic plan cannot know the owner is big, and may sort the
	// owner's rows instead of walking the HNSW index (TestBigSharedTenantKeepsTheIndex). The
	// text leg goes first, so the round trip switches the plan mode at most once.
	var stmts []readStmt
	if useText {
		sql, args := e.textSQL(s, in, lex, qvec, n)
		stmts = append(stmts, readStmt{sql: sql, args: args, cached: true, cacheSize: e.cfg.PreparedSearches, generic: true,
			rebuild: func(s Scope) (string, []any) { return e.textSQL(s, in, lex, qvec, n) },
			scan: func(r *readRows) (err error) {
				txtRows, err = scanSearchRows(r, in, &fresh)
				return err
			}})
	}
	if useVector {
		stmts = append(stmts, e.vectorStmt(s, in, *qvec, plan.exact, nVec, &vecRows, &fresh))
	}
	if err := s.read(ctx, settings, stmts...); err != nil {
		return SearchResponse{}, err
	}
	if useVector && !plan.exact && len(vecRows) < nVec {
		// Short list: the iterative scan hit max_scan_tuples before finding n rows that pass the
		// owner and the filters. The exact scan finds every one that exists (one more round trip).
		if err := s.read(ctx, nil, e.vectorStmt(s, in, *qvec, true, nVec, &vecRows, &fresh)); err != nil {
			return SearchResponse{}, err
		}
	}
	rows := mergeLegs(vecRows, txtRows)
	if fresh >= 0 {
		e.sizes.put(s, fresh)
	}
	if useText && len(txtRows) == 0 && in.searchType == SearchText {
		// Nothing matched: tell a query with nothing to search for (only stop words) from one
		// whose words the tenant does not have (one more round trip, only then).
		err := s.read(ctx, nil, readStmt{sql: `SELECT count(*) FROM unnest(to_tsvector($1::regconfig, $2))`,
			args: []any{s.textConfig(), lex.pos}, scan: func(r *readRows) error {
				for r.Next() {
					if err := r.Scan(&lexemeCount); err != nil {
						return err
					}
				}
				return nil
			}})
		if err != nil {
			return SearchResponse{}, err
		}
		if lexemeCount == 0 {
			return SearchResponse{}, errNoTerms
		}
	}
	list := e.fuse(in, rows, useText)
	if in.rerank {
		var reason string
		list, reason = e.rerank(ctx, in, list)
		if reason != "" {
			resp.Degraded = true
			resp.DegradedReasons = append(resp.DegradedReasons, reason)
		}
	}
	resp.Results = hygiene(list, in.limit)
	if in.searchType == SearchVector && len(resp.Results) < in.limit && len(vecRows) == nVec && len(list) > len(resp.Results) {
		// Hygiene dropped nested chunks and more may exist: read twice as many (rare).
		if err := s.read(ctx, settings, e.vectorStmt(s, in, *qvec, plan.exact, 2*nVec, &vecRows, &fresh)); err != nil {
			return SearchResponse{}, err
		}
		resp.Results = hygiene(e.fuse(in, mergeLegs(vecRows, nil), false), in.limit)
	}
	resp.TookMS = float64(time.Since(start).Microseconds()) / 1000
	e.recordSearch(ctx, s, in, len(resp.Results), resp.TookMS)
	return resp, nil
}

// errNoTerms is a text search whose query has nothing to search for.
var errNoTerms = invalid("query_text", "has no words to search for: it is empty after removing stop words, operators ('-', 'or') and punctuation")

// Degraded reasons of a [SearchResponse].
const (
	// DegradedEmbedding: the provider could not embed the query; hybrid search ran on text alone.
	DegradedEmbedding = "embedding_unavailable"
	// DegradedRerank: the reranker failed or answered garbage; the results keep the unreranked order.
	DegradedRerank = "rerank_unavailable"
)

// tenantSize reads the tenant's number of leaf chunks (one round trip; only when the engine has
// not seen the tenant yet).
func (e *Engine) tenantSize(ctx context.Context, s Scope) (int64, error) {
	var n int64
	err := s.read(ctx, nil, readStmt{sql: `SELECT coalesce((SELECT leaf_count FROM chunk_stats WHERE owner_id = $1), 0)`,
		args: []any{s.OwnerID}, scan: func(r *readRows) error {
			for r.Next() {
				if err := r.Scan(&n); err != nil {
					return err
				}
			}
			return nil
		}})
	if err != nil {
		return 0, err
	}
	e.sizes.put(s, n)
	return n, nil
}

// vectorPlan is how the vector leg runs.
type vectorPlan struct {
	exact bool
	ef    int
}

// planVector chooses the exact scan or the HNSW walk, and its ef_search for the recall target.
func (e *Engine) planVector(s Scope, in searchInput, size int64, n int) vectorPlan {
	t := e.cfg.ExactSearchThreshold
	if in.recallTarget >= 1 || (t >= 0 && size <= int64(t)) {
		return vectorPlan{exact: true, ef: max(n, 40)}
	}
	ef := EfSearchFor(s.Schema == schema.SharedSchema, size, in.recallTarget)
	if e.cfg.EfSearch > 0 {
		ef = e.cfg.EfSearch
	}
	return vectorPlan{ef: min(max(ef, n), 1000)}
}

// searchNames are the names a search statement uses, qualified: the tenant's tables and pgvector's
// type and cosine distance operator. The statement then means the same whatever the session's
// search_path, so a connection can prepare it once outside the read's transaction and keep it
// (one per tenant schema: the names differ).
type searchNames struct{ chunks, documents, terms, stats, vector, cosine string }

func namesFor(s Scope) searchNames {
	sch := pgx.Identifier{s.Schema}.Sanitize() + "."
	ext := pgx.Identifier{schema.ExtensionSchema}.Sanitize()
	return searchNames{chunks: sch + "chunks", documents: sch + "documents", terms: sch + "chunk_terms",
		stats: sch + "chunk_stats", vector: ext + ".vector", cosine: "OPERATOR(" + ext + ".<=>)"}
}

// outputSQL is the select list and joins that every leg's statement returns for a candidate
// chunk c of document d: the columns scanSearchRows reads after the leg's own value.
func outputSQL(in searchInput, nm searchNames, qv string) (cols, joins string) {
	cols = `coalesce((SELECT leaf_count FROM ` + nm.stats + ` WHERE owner_id = $1), 0), c.chunk_id::text, c.document_id::text, d.document_name, c.chunk_index, c.content, c.metadata,
		coalesce((c.metadata->>'start')::bigint, 0), coalesce((c.metadata->>'end')::bigint, 0)`
	if qv != "" {
		cols += `, 1 - (c.embedding ` + nm.cosine + ` ` + qv + `)`
	} else {
		cols += `, NULL::float8`
	}
	if in.p.IncludeParentContext {
		cols += `, p2.chunk_id::text, p2.chunk_index, p2.chunk_level, p2.content`
		joins += ` LEFT JOIN ` + nm.chunks + ` p2 ON p2.chunk_id = c.parent_chunk_id AND p2.owner_id = $1`
	} else {
		cols += `, NULL::text, NULL::int, NULL::smallint, NULL::text`
	}
	if in.p.IncludeDocuments {
		cols += `, d.document_type, d.metadata, d.id_at_origin, d.document_date`
	} else {
		cols += `, NULL::text, NULL::jsonb, NULL::text, NULL::timestamptz`
	}
	return cols, joins
}

// vectorSQL is the vector leg: the n leaf chunks nearest to q with everything a result needs,
// first column the cosine distance. exact scans the tenant's rows (a MATERIALIZED CTE has no
// ORDER BY the HNSW index could serve); otherwise the HNSW index is walked (iterative scan,
// relaxed order: the caller sorts).
func (e *Engine) vectorSQL(s Scope, in searchInput, q pgvector.Vector, exact bool, n int) (string, []any) {
	args := []any{s.OwnerID, n}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	nm := namesFor(s)
	qv := arg(q) + "::" + nm.vector
	docCond := in.docFilter(&args)
	chunkCond := ""
	if in.chunkMetadata != nil {
		chunkCond = " AND c.metadata @> " + arg(string(in.chunkMetadata)) + "::jsonb"
	}
	cols, joins := outputSQL(in, nm, qv)
	where := `c.owner_id = $1 AND c.chunk_level = 0 AND c.embedding IS NOT NULL` + chunkCond + docCond
	if !exact {
		return `SELECT c.embedding ` + nm.cosine + ` ` + qv + `, ` + cols + ` FROM ` + nm.chunks + ` c
			JOIN ` + nm.documents + ` d ON d.document_id = c.document_id AND d.owner_id = $1` + joins + `
			WHERE ` + where + ` ORDER BY c.embedding ` + nm.cosine + ` ` + qv + ` LIMIT $2`, args
	}
	join := ""
	if docCond != "" {
		join = ` JOIN ` + nm.documents + ` d ON d.document_id = c.document_id AND d.owner_id = $1`
	}
	return `WITH vx AS MATERIALIZED (SELECT c.chunk_id, c.embedding ` + nm.cosine + ` ` + qv + ` AS distance FROM ` + nm.chunks + ` c` + join + `
			WHERE ` + where + `),
		top AS MATERIALIZED (SELECT chunk_id, distance FROM vx ORDER BY distance, chunk_id LIMIT $2)
		SELECT top.distance, ` + cols + ` FROM top JOIN ` + nm.chunks + ` c ON c.owner_id = $1 AND c.chunk_id = top.chunk_id
			JOIN ` + nm.documents + ` d ON d.document_id = c.document_id AND d.owner_id = $1` + joins, args
}

// vectorStmt is the vector leg's statement (see vectorSQL): a cached statement planned with its
// parameters every time. Its rows go to rows, the tenant's leaf count to fresh.
func (e *Engine) vectorStmt(s Scope, in searchInput, q pgvector.Vector, exact bool, n int, rows *[]searchRow, fresh *int64) readStmt {
	sql, args := e.vectorSQL(s, in, q, exact, n)
	return readStmt{sql: sql, args: args, cached: true, cacheSize: e.cfg.PreparedSearches,
		rebuild: func(s Scope) (string, []any) { return e.vectorSQL(s, in, q, exact, n) },
		scan: func(r *readRows) (err error) {
			*rows, err = scanSearchRows(r, in, fresh)
			return err
		}}
}

// textSQL is the text leg: BM25 over the tenant's own postings (chunk_terms) and statistics
// (chunk_stats), the n best chunks matching any of the query's words that pass the required
// phrases, the exclusions and the filters, first column the BM25 score.
func (e *Engine) textSQL(s Scope, in searchInput, lex webQuery, qvec *pgvector.Vector, n int) (string, []any) {
	args := []any{s.OwnerID, n}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	nm := namesFor(s)
	qv := ""
	if qvec != nil {
		qv = arg(*qvec) + "::" + nm.vector
	}
	cfg := arg(s.textConfig()) + "::regconfig"
	pos := arg(lex.pos)
	docCond := in.docFilter(&args)
	cond := ""
	if in.chunkMetadata != nil {
		cond = " AND c.metadata @> " + arg(string(in.chunkMetadata)) + "::jsonb"
	}
	cond += docCond
	from := ""
	if lex.must != "" {
		from += ", websearch_to_tsquery(" + cfg + ", " + arg(lex.must) + ") mq(q)"
		cond += ` AND (numnode(mq.q) = 0 OR c.search_vector @@ mq.q)`
	}
	if lex.not != "" {
		from += ", websearch_to_tsquery(" + cfg + ", " + arg(lex.not) + ") nq(q)"
		cond += ` AND (numnode(nq.q) = 0 OR NOT c.search_vector @@ nq.q)`
	}
	// Each term's postings are read best impact first, at most LexicalDepth of them (all when
	// negative); the document frequency counts them all (an index-only count).
	postings := `p AS MATERIALIZED (SELECT term, chunk_id, tf, dl FROM ` + nm.terms + ` WHERE owner_id = $1
			AND term = ANY(ARRAY(SELECT term FROM terms)))`
	if e.cfg.LexicalDepth > 0 {
		postings = `p AS MATERIALIZED (SELECT t.term, x.chunk_id, x.tf, x.dl FROM terms t CROSS JOIN LATERAL (
			SELECT chunk_id, tf, dl FROM ` + nm.terms + ` WHERE owner_id = $1 AND term = t.term
			ORDER BY impact DESC, chunk_id DESC LIMIT ` + arg(e.cfg.LexicalDepth) + `) x)`
	}
	ctes := []string{
		`terms AS MATERIALIZED (SELECT DISTINCT lexeme AS term FROM unnest(to_tsvector(` + cfg + `, ` + pos + `)))`,
		postings,
		`st AS (SELECT greatest(leaf_count, 1)::float8 AS n, greatest(term_count, 1)::float8 / greatest(leaf_count, 1) AS avgdl
			FROM ` + nm.stats + ` WHERE owner_id = $1)`,
		`df AS MATERIALIZED (SELECT t.term, (SELECT count(*) FROM ` + nm.terms + ` c WHERE c.owner_id = $1 AND c.term = t.term)::float8 AS df
			FROM terms t)`,
		fmt.Sprintf(`scored AS (SELECT p.chunk_id, sum(ln(1 + (st.n - df.df + 0.5) / (df.df + 0.5))
			* p.tf * %[1]g / (p.tf + %[2]g * (%[3]g + %[4]g * p.dl / st.avgdl))) AS score
			FROM p JOIN df USING (term) CROSS JOIN st GROUP BY p.chunk_id)`, bm25K1+1, bm25K1, 1-bm25B, bm25B),
	}
	if cond == "" {
		ctes = append(ctes, `top AS MATERIALIZED (SELECT chunk_id, score FROM scored ORDER BY score DESC, chunk_id LIMIT $2)`)
	} else {
		// Walk the scored chunks best first and stop at n that pass the conditions: the OFFSET 0
		// keeps the lateral subquery a per-row probe, so the order is kept and the scan stops early.
		join := ""
		if docCond != "" {
			join = ` JOIN ` + nm.documents + ` d ON d.document_id = c.document_id AND d.owner_id = $1`
		}
		ctes = append(ctes, `top AS MATERIALIZED (SELECT s.chunk_id, s.score
			FROM (SELECT chunk_id, score FROM scored ORDER BY score DESC, chunk_id) s
			JOIN LATERAL (SELECT 1 FROM `+nm.chunks+` c`+join+from+` WHERE c.owner_id = $1 AND c.chunk_id = s.chunk_id`+cond+` OFFSET 0) f ON true
			ORDER BY s.score DESC, s.chunk_id LIMIT $2)`)
	}
	cols, joins := outputSQL(in, nm, qv)
	return `WITH ` + strings.Join(ctes, ",\n") + `
		SELECT top.score, ` + cols + ` FROM top JOIN ` + nm.chunks + ` c ON c.owner_id = $1 AND c.chunk_id = top.chunk_id
			JOIN ` + nm.documents + ` d ON d.document_id = c.document_id AND d.owner_id = $1` + joins, args
}

// mergeLegs joins the two legs' rows by chunk: ranks come from each leg's own order (distance
// ascending, BM25 descending, ties by chunk id).
func mergeLegs(vec, txt []searchRow) []searchRow {
	slices.SortFunc(vec, func(a, b searchRow) int {
		return cmp.Or(cmp.Compare(a.value, b.value), strings.Compare(a.r.ChunkID, b.r.ChunkID))
	})
	slices.SortFunc(txt, func(a, b searchRow) int {
		return cmp.Or(cmp.Compare(b.value, a.value), strings.Compare(a.r.ChunkID, b.r.ChunkID))
	})
	byID := make(map[string]int, len(vec)+len(txt))
	out := make([]searchRow, 0, len(vec)+len(txt))
	for i, r := range vec {
		r.vecRank = i + 1
		byID[r.r.ChunkID] = len(out)
		out = append(out, r)
	}
	for i, r := range txt {
		bm := r.value
		if j, ok := byID[r.r.ChunkID]; ok {
			out[j].txtRank, out[j].bm25, out[j].hasBM25 = i+1, bm, true
			continue
		}
		r.txtRank, r.bm25, r.hasBM25 = i+1, bm, true
		out = append(out, r)
	}
	return out
}

// scanSearchRows reads a leg's rows; size receives the tenant's leaf count that every row carries.
func scanSearchRows(r *readRows, in searchInput, size *int64) ([]searchRow, error) {
	var out []searchRow
	for r.Next() {
		var (
			row                  searchRow
			start, end           int64
			pID, pContent, dType *string
			pIndex               *int32
			pLevel               *int16
			dMeta                []byte
		)
		x := &row.r
		if err := r.Scan(&row.value, size, &x.ChunkID, &x.DocumentID, &x.DocumentName, &x.ChunkIndex, &x.Content, (*[]byte)(&x.Metadata),
			&start, &end, &x.Similarity, &pID, &pIndex, &pLevel, &pContent, &dType, &dMeta, &x.IDAtOrigin,
			&x.DocumentDate); err != nil {
			return nil, err
		}
		row.start, row.end = int(start), int(end)
		if pID != nil {
			x.ParentChunks = []ParentChunk{{ChunkID: *pID, ChunkIndex: int(*pIndex), ChunkLevel: int(*pLevel), Content: *pContent}}
		} else if in.p.IncludeParentContext {
			x.ParentChunks = []ParentChunk{}
		}
		if dType != nil {
			x.DocumentType, x.DocumentMetadata = *dType, dMeta
		}
		out = append(out, row)
	}
	return out, nil
}

// textRank maps a BM25 score (0 and up) to 0..1, keeping the order.
func textRank(bm25 float64) float64 { return bm25 / (bm25 + 1) }

// fuse orders the candidate rows of the mode and fills the scores. Vector: by rank in the
// vector list. Text: by rank in the text list. Hybrid: weighted reciprocal rank fusion (see
// docs/memory.md): a chunk at 1-based rank r of the vector list gets alpha/(k+r), at rank r of
// the text list (1-alpha)/(k+r); score is the fused value divided by its maximum 1/(k+1).
func (e *Engine) fuse(in searchInput, rows []searchRow, useText bool) []searchRow {
	for i := range rows {
		if useText && rows[i].hasBM25 {
			tr := textRank(rows[i].bm25)
			rows[i].r.TextRank = &tr
		}
	}
	switch in.searchType {
	case SearchVector:
		rows = slices.DeleteFunc(rows, func(r searchRow) bool { return r.vecRank == 0 })
		slices.SortFunc(rows, func(a, b searchRow) int { return cmp.Compare(a.vecRank, b.vecRank) })
		for i := range rows {
			rows[i].r.Score = deref(rows[i].r.Similarity)
		}
		return rows
	case SearchText:
		rows = slices.DeleteFunc(rows, func(r searchRow) bool { return r.txtRank == 0 })
		slices.SortFunc(rows, func(a, b searchRow) int { return cmp.Compare(a.txtRank, b.txtRank) })
		for i := range rows {
			rows[i].r.Score = deref(rows[i].r.TextRank)
		}
		return rows
	}
	k := float64(e.cfg.RRFK)
	// Score fusion normalises each leg's scores over its own candidates (min-max) and takes the
	// alpha-weighted sum; a chunk missing from a leg gets 0 from it.
	var vMin, vMax, tMin, tMax = math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, r := range rows {
		if r.vecRank > 0 {
			v := 1 - r.value
			vMin, vMax = min(vMin, v), max(vMax, v)
		}
		if r.hasBM25 {
			tMin, tMax = min(tMin, r.bm25), max(tMax, r.bm25)
		}
	}
	if in.fusion == FusionDBSF {
		// Distribution-based: each leg's range is its mean ± 3 standard deviations.
		var vs, ts []float64
		for _, r := range rows {
			if r.vecRank > 0 {
				vs = append(vs, 1-r.value)
			}
			if r.hasBM25 {
				ts = append(ts, r.bm25)
			}
		}
		vMin, vMax = spread(vs)
		tMin, tMax = spread(ts)
	}
	norm := func(x, lo, hi float64) float64 {
		if hi <= lo {
			return 1
		}
		return min(max((x-lo)/(hi-lo), 0), 1)
	}
	fused := func(r searchRow) float64 {
		var f float64
		if in.fusion != FusionRRF {
			if r.vecRank > 0 && in.alpha > 0 {
				f += in.alpha * norm(1-r.value, vMin, vMax)
			}
			if r.hasBM25 && in.alpha < 1 {
				f += (1 - in.alpha) * norm(r.bm25, tMin, tMax)
			}
			if f == 0 && ((r.vecRank > 0 && in.alpha > 0) || (r.hasBM25 && in.alpha < 1)) {
				f = math.SmallestNonzeroFloat64 // the last of its leg still counts
			}
			return f
		}
		if r.vecRank > 0 && in.alpha > 0 {
			f += in.alpha / (k + float64(r.vecRank))
		}
		if r.txtRank > 0 && in.alpha < 1 {
			f += (1 - in.alpha) / (k + float64(r.txtRank))
		}
		return f
	}
	rows = slices.DeleteFunc(rows, func(r searchRow) bool { return fused(r) == 0 })
	rankOr := func(r int) int {
		if r == 0 {
			return math.MaxInt
		}
		return r
	}
	// Ties (same fused value) go to the better vector rank, then the better text rank, then
	// the chunk id, so the order is deterministic.
	slices.SortFunc(rows, func(a, b searchRow) int {
		if c := cmp.Compare(fused(b), fused(a)); c != 0 {
			return c
		}
		if c := cmp.Compare(rankOr(a.vecRank), rankOr(b.vecRank)); c != 0 {
			return c
		}
		if c := cmp.Compare(rankOr(a.txtRank), rankOr(b.txtRank)); c != 0 {
			return c
		}
		return strings.Compare(a.r.ChunkID, b.r.ChunkID)
	})
	for i := range rows {
		f := fused(rows[i])
		if in.fusion != FusionRRF {
			rows[i].r.Score = f // the best possible, first on both legs, is 1
			continue
		}
		rows[i].r.RRFScore = &f
		rows[i].r.Score = f * (k + 1)
	}
	return rows
}

// hygiene cuts the list to limit, skipping any chunk that lies wholly inside, or wholly
// contains, a better-ranked chunk of the same document already in the list: the same text is
// never returned twice.
func hygiene(rows []searchRow, limit int) []SearchResult {
	out := make([]SearchResult, 0, min(len(rows), limit))
	kept := make([]searchRow, 0, limit)
	for _, r := range rows {
		if len(out) == limit {
			break
		}
		nested := false
		for _, k := range kept {
			if k.r.DocumentID != r.r.DocumentID || r.end <= r.start || k.end <= k.start {
				continue
			}
			if (r.start >= k.start && r.end <= k.end) || (k.start >= r.start && k.end <= r.end) {
				nested = true
				break
			}
		}
		if nested {
			continue
		}
		kept = append(kept, r)
		out = append(out, r.r)
	}
	return out
}

func deref(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}
