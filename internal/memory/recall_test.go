package memory_test

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgvector/pgvector-go"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// clusteredVectors draws unit vectors around `clusters` random unit centres: centre plus
// Gaussian noise of the same expected norm, so a point's cosine with its centre is about 0.7
// and the neighbourhoods overlap. All tenants draw from the same clusters, so the neighbours of
// a query in the shared index are mostly other tenants' rows: the hard case for a shared HNSW
// graph. Uniform random vectors would be easier (and unrealistic).
type clusteredVectors struct {
	r       *rand.Rand
	centres [][]float32
	dim     int
}

func newClusteredVectors(seed uint64, clusters, dim int) *clusteredVectors {
	c := &clusteredVectors{r: rand.New(rand.NewPCG(seed, seed+1)), dim: dim}
	for range clusters {
		v := make([]float32, dim)
		for i := range v {
			v[i] = float32(c.r.NormFloat64())
		}
		embed.Normalize(v)
		c.centres = append(c.centres, v)
	}
	return c
}

func (c *clusteredVectors) next() []float32 {
	centre := c.centres[c.r.IntN(len(c.centres))]
	v := make([]float32, c.dim)
	sd := 1 / math.Sqrt(float64(c.dim))
	for i := range v {
		v[i] = centre[i] + float32(c.r.NormFloat64()*sd)
	}
	embed.Normalize(v)
	return v
}

// exactTopK is the ground truth: the k ids whose vectors are nearest to q by cosine distance,
// computed in Go from the vectors that were loaded.
func exactTopK(q []float32, ids []string, vecs [][]float32, k int) []string {
	type hit struct {
		id  string
		sim float64
	}
	hits := make([]hit, len(ids))
	for i, v := range vecs {
		var dot float64
		for j := range v {
			dot += float64(q[j]) * float64(v[j])
		}
		hits[i] = hit{ids[i], dot} // unit vectors: cosine = dot
	}
	slices.SortFunc(hits, func(a, b hit) int { return cmp.Compare(b.sim, a.sim) })
	out := make([]string, 0, k)
	for _, h := range hits[:min(k, len(hits))] {
		out = append(out, h.id)
	}
	return out
}

func recallAt(got, want []string) float64 {
	if len(want) == 0 {
		return 1
	}
	n := 0
	for _, w := range want {
		if slices.Contains(got, w) {
			n++
		}
	}
	return float64(n) / float64(len(want))
}

// BenchmarkSharedRecall builds a shared-tier table of 200,000 embedded leaf chunks (384
// dimensions, clustered synthetic unit vectors) with one HNSW index, owned by tenants holding
// 10%, 1%, 0.1% and 0.01% of it plus filler tenants, and measures recall@10 of vector search
// against an exact scan, the average result-list length and the p50/p99 latency, for:
//
//   - path=default: the engine as configured by default (exact scan up to
//     ExactSearchThreshold chunks, HNSW with iterative scan above, exact fallback on short lists);
//   - path=iterative: the engine with the exact path disabled (ExactSearchThreshold -1), so the
//     planner chooses between the HNSW index (iterative scan) and the owner index;
//   - path=iterative-ef100: the same with ef_search 100 instead of the default 200;
//   - path=exact: the engine with the exact path always taken;
//   - path=postfilter: the Python original's query (ef_search 100, no iterative scan, owner
//     filter after the ANN ORDER BY ... LIMIT), for comparison.
//
// It needs TENANTMEM_BENCH_LARGE=1; run it with -benchtime=100x (one op = one query).
func BenchmarkSharedRecall(b *testing.B) {
	largeBenchmarks(b)
	const total = 200_000
	e := newEnvDim(b, benchDim)
	ctx := context.Background()
	gen := newClusteredVectors(42, 200, benchDim)
	type tenant struct {
		name string
		s    memory.Scope
		ids  []string
		vecs [][]float32
	}
	l := newLoader(b, e, "tenantmem_shared")
	var measured []*tenant
	loaded := 0
	addTenant := func(name string, n int) *tenant {
		t := &tenant{name: name, s: e.tenant(b, registry.TierShared)}
		for done := 0; done < n; done += 50 {
			m := min(50, n-done)
			texts := make([]string, m)
			vecs := make([][]float32, m)
			for i := range m {
				texts[i] = "synthetic chunk " + strconv.Itoa(loaded+done+i)
				vecs[i] = gen.next()
			}
			t.ids = append(t.ids, l.add(t.s.OwnerID, texts, vecs)...)
			t.vecs = append(t.vecs, vecs...)
		}
		loaded += n
		return t
	}
	for _, sz := range []struct {
		name string
		n    int
	}{{"10%", total / 10}, {"1%", total / 100}, {"0.1%", total / 1000}, {"0.01%", total / 10000}} {
		measured = append(measured, addTenant(sz.name, sz.n))
	}
	for i := 0; loaded < total; i++ { // filler tenants, 40,000 chunks each
		t := addTenant("filler", min(40_000, total-loaded))
		t.vecs, t.ids = nil, nil
	}
	l.load(b)

	p, err := embed.NewBuiltin(benchDim) // not called: queries come as embeddings
	require.NoError(b, err)
	engines := []struct {
		name string
		eng  *memory.Engine
	}{
		{"default", newEngine(b, p)},
		{"iterative", newEngine(b, p, func(c *memory.Config) { c.ExactSearchThreshold = -1 })},
		{"iterative-ef100", newEngine(b, p, func(c *memory.Config) { c.ExactSearchThreshold = -1; c.EfSearch = 100 })},
		{"exact", newEngine(b, p, func(c *memory.Config) { c.ExactSearchThreshold = math.MaxInt32 })},
		{"postfilter", nil},
	}
	qgen := newClusteredVectors(42, 200, benchDim) // same centres, fresh noise
	qgen.r = rand.New(rand.NewPCG(7, 8))
	queries := make([][]float32, 200)
	for i := range queries {
		queries[i] = qgen.next()
	}
	const k = 10
	for _, t := range measured {
		truth := make([][]string, len(queries))
		for i, q := range queries {
			truth[i] = exactTopK(q, t.ids, t.vecs, k)
		}
		for _, en := range engines {
			b.Run(fmt.Sprintf("owner=%s/chunks=%d/path=%s", t.name, len(t.ids), en.name), func(b *testing.B) {
				var recall float64
				results := 0
				durs := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for i := range b.N {
					qi := i % len(queries)
					t0 := time.Now()
					var got []string
					if en.eng != nil {
						res, err := en.eng.Search(ctx, t.s, memory.SearchParams{QueryEmbedding: queries[qi], SearchType: memory.SearchVector, Limit: new(k)})
						if err != nil {
							b.Fatal(err)
						}
						for _, r := range res.Results {
							got = append(got, r.ChunkID)
						}
					} else {
						got = postFilterSearch(b, t.s, queries[qi], k)
					}
					durs = append(durs, time.Since(t0))
					recall += recallAt(got, truth[qi])
					results += len(got)
				}
				b.ReportMetric(recall/float64(b.N), "recall@10")
				b.ReportMetric(float64(results)/float64(b.N), "results/op")
				b.ReportMetric(ms(percentile(durs, 50)), "p50-ms")
				b.ReportMetric(ms(percentile(durs, 99)), "p99-ms")
			})
		}
	}
}

// postFilterSearch is the Python original's vector query on a shared table: the HNSW scan with
// ef_search 100 and no iterative scan, the owner filter applied to what it returns.
func postFilterSearch(b *testing.B, s memory.Scope, q []float32, k int) []string {
	var ids []string
	err := s.InTx(context.Background(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), `SELECT set_config('hnsw.ef_search', '100', true)`); err != nil {
			return err
		}
		rows, err := tx.Query(context.Background(), `SELECT chunk_id::text FROM chunks WHERE owner_id = $1
			ORDER BY embedding <=> $2 LIMIT $3`, s.OwnerID, pgvector.NewVector(q), k)
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return ids
}
