package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/routing"
)

// BenchmarkImportPreEmbedded streams TENANTMEM_BENCH_IMPORT_CHUNKS (default 20,000) pre-embedded
// chunks (384 dimensions, 100 per document, about 60 words each) as JSON lines through
// POST /v1/documents/import into a tenant of each tier, and reports chunks/s end to end (JSON
// decoding, validation, the inserts with their HNSW and text index updates).
//
//	flock /work/.bench.lock go test -run '^$' -bench ImportPreEmbedded -benchtime 1x ./internal/httpapi
func BenchmarkImportPreEmbedded(b *testing.B) {
	n := 20000
	if v := envInt("TENANTMEM_BENCH_IMPORT_CHUNKS"); v > 0 {
		n = v
	}
	ctx := context.Background()
	url := pgtest.NewDatabase(b)
	admin, err := pgxpool.New(ctx, url)
	require.NoError(b, err)
	defer admin.Close()
	prov, err := provision.New(provision.Config{Pool: admin})
	require.NoError(b, err)
	_, err = prov.Init(ctx, provision.InitParams{})
	require.NoError(b, err)
	pool, err := pgxpool.New(ctx, pgtest.WithUser(b, url, provision.DefaultRouterRole, ""))
	require.NoError(b, err)
	defer pool.Close()
	resolver, err := routing.New(routing.Config{Pool: pool})
	require.NoError(b, err)
	listenRegistry(b, pgtest.WithUser(b, url, provision.DefaultRouterRole, ""), resolver)
	embedder, err := embed.NewBuiltin(provision.DefaultEmbeddingDimension)
	require.NoError(b, err)
	engine, err := memory.New(memory.Config{Embedder: embedder})
	require.NoError(b, err)
	reg := prometheus.NewRegistry()
	// One request carries the whole import: past the default request time limit (2 minutes) the
	// router stops it (resumable; docs/archive.md, "Imports"). A first load sets a longer one.
	h, err := httpapi.NewRouter(httpapi.RouterConfig{Resolver: resolver, Engine: engine, Registerer: reg, RequestTimeout: time.Hour})
	require.NoError(b, err)
	srv := httptest.NewServer(h)
	defer srv.Close()

	words := strings.Fields("deploy backup tenant search vector index schema router release rollback quarterly numbers customer invoice weather meeting design review latency memory")
	rng := rand.New(rand.NewPCG(3, 4))
	var body bytes.Buffer
	for d := 0; d < n/100; d++ {
		type chunkIn struct {
			Content   string    `json:"content"`
			Embedding []float32 `json:"embedding"`
		}
		doc := struct {
			Name   string    `json:"document_name"`
			Type   string    `json:"document_type"`
			Origin string    `json:"id_at_origin"`
			Chunks []chunkIn `json:"chunks"`
		}{Name: fmt.Sprint("doc ", d), Type: "text", Origin: fmt.Sprint("d-", d)}
		for range 100 {
			var sb strings.Builder
			for range 60 {
				sb.WriteString(words[rng.IntN(len(words))] + " ")
			}
			var v []float32
			if os.Getenv("TENANTMEM_BENCH_RANDOM_VECTORS") != "" {
				v = make([]float32, provision.DefaultEmbeddingDimension)
				for i := range v {
					v[i] = rng.Float32() - 0.5
				}
			} else {
				vs, err := embedder.Embed(ctx, []string{sb.String()})
				require.NoError(b, err)
				v = vs[0]
			}
			doc.Chunks = append(doc.Chunks, chunkIn{Content: sb.String(), Embedding: v})
		}
		line, err := json.Marshal(doc)
		require.NoError(b, err)
		body.Write(line)
		body.WriteByte('\n')
	}
	b.ReportMetric(float64(body.Len())/1e6, "body_MB")
	for range b.N {
		for _, tier := range []registry.Tier{registry.TierSchema, registry.TierShared} {
			res, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: fmt.Sprintf("imp-%s-%d", tier, time.Now().UnixNano()), Tier: tier})
			require.NoError(b, err)
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/documents/import", bytes.NewReader(body.Bytes()))
			require.NoError(b, err)
			req.Header.Set("Authorization", "Bearer "+res.Key.Key)
			start := time.Now()
			resp, err := srv.Client().Do(req)
			require.NoError(b, err)
			raw, err := io.ReadAll(resp.Body)
			require.NoError(b, err)
			_ = resp.Body.Close()
			took := time.Since(start)
			require.Equal(b, http.StatusOK, resp.StatusCode, "%s", raw)
			var out httpapi.ImportResponse
			require.NoError(b, json.Unmarshal(raw, &out))
			require.Equal(b, n, out.ChunksCreated)
			require.Equal(b, n, out.EmbeddingsCreated)
			b.ReportMetric(float64(n)/took.Seconds(), string(tier)+"_chunks/s")
			b.ReportMetric(float64(body.Len())/took.Seconds()/1e6, string(tier)+"_MB/s")
		}
	}
}

func envInt(name string) int {
	n, _ := strconv.Atoi(os.Getenv(name))
	return n
}
