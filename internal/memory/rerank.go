package memory

import (
	"cmp"
	"context"
	"log/slog"
	"math"
	"slices"
)

// Reranker re-scores candidate texts against a query (a cross-encoder behind an HTTP /rerank
// endpoint, see internal/rerank). Implementations are safe for concurrent use.
type Reranker interface {
	// Name identifies the reranker in logs.
	Name() string
	// Rerank returns one relevance score per document, in the order of documents; higher is
	// more relevant. Scores need only be comparable within one call.
	Rerank(ctx context.Context, query string, documents []string) ([]float64, error)
}

// rerank re-orders the first rerankTopK rows by the reranker's scores (the rest keep their
// place after them) and puts the score in each reranked result's RerankScore. On failure (an
// error, a timeout, a wrong number of scores, a NaN) the list is returned unchanged with the
// degraded reason.
func (e *Engine) rerank(ctx context.Context, in searchInput, rows []searchRow) ([]searchRow, string) {
	k := min(in.rerankTopK, len(rows))
	if k == 0 {
		return rows, ""
	}
	docs := make([]string, k)
	for i := range docs {
		docs[i] = rows[i].r.Content
	}
	rctx, cancel := context.WithTimeout(ctx, e.cfg.RerankTimeout)
	defer cancel()
	scores, err := e.cfg.Reranker.Rerank(rctx, in.queryText, docs)
	if err == nil && len(scores) != k {
		err = errBadRerank
	}
	for _, s := range scores {
		if err == nil && (math.IsNaN(s) || math.IsInf(s, 0)) {
			err = errBadRerank
		}
	}
	if err != nil {
		e.cfg.Logger.WarnContext(ctx, "memory: reranker failed; results keep the unreranked order",
			slog.String("reranker", e.cfg.Reranker.Name()), slog.String("error", err.Error()))
		return rows, DegradedRerank
	}
	top := slices.Clone(rows[:k])
	for i := range top {
		s := scores[i]
		top[i].r.RerankScore = &s
	}
	// Stable: equal scores keep the fused order.
	slices.SortStableFunc(top, func(a, b searchRow) int { return cmp.Compare(*b.r.RerankScore, *a.r.RerankScore) })
	return append(top, rows[k:]...), ""
}

type rerankError string

func (e rerankError) Error() string { return string(e) }

// errBadRerank is a reranker answer that cannot be used.
const errBadRerank = rerankError("memory: the reranker returned unusable scores")
