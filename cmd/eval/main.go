// Command eval is tenantmem's retrieval evaluation (`make eval`). It starts a throwaway
// PostgreSQL cluster, the provisioning API and the router in-process on loopback ports, creates
// tenants in both tiers through the provisioning API, loads two known-item query sets built from
// text every Debian machine with Go has (the Go standard library's package documentation and the
// installed Debian packages' descriptions) through the router, runs every query in every search
// mode through the router, and prints MRR@10, recall@10 and nDCG@10 per set, tenant and mode,
// beside a plain Okapi BM25 computed here over the same documents. Progress goes to stderr.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmem/tenantmem/internal/dataplane"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/pgcluster"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/rerank"
)

const adminToken = "eval-admin-token-0123456789abcdef"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "eval:", err)
		os.Exit(1)
	}
}

// mode is one way of searching.
type mode struct {
	name string
	body map[string]any
}

func run(ctx context.Context) error {
	alphas := flag.String("alphas", "", "comma-separated hybrid alphas to report for both fusions besides the defaults (tuning)")
	only := flag.String("sets", "", "comma-separated sets to run (go-std, debian); default all")
	fusions := flag.String("fusions", "rrf,score,dbsf", "fusions that -alphas reports")
	dump := flag.String("dump", "", "only write each query's text and vector candidates (100 each, with scores) as JSON lines to this file, for studying fusion offline (shared-tier tenants)")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	progress := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

	sets := []querySet{}
	for _, f := range []func(context.Context) (querySet, error){goStdSet, debianSet} {
		s, err := f(ctx)
		if err != nil {
			return err
		}
		if *only != "" && !strings.Contains(","+*only+",", ","+s.Name+",") {
			continue
		}
		progress("set %s: %d documents and queries", s.Name, len(s.Items))
		sets = append(sets, s)
	}

	progress("starting a throwaway PostgreSQL cluster")
	c, err := pgcluster.Start(ctx, pgcluster.Config{Fast: true})
	if err != nil {
		return err
	}
	defer func() { _ = c.Stop(context.WithoutCancel(ctx)) }()
	pool, err := pgxpool.New(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer pool.Close()
	prov, err := provision.New(provision.Config{Pool: pool, Logger: logger})
	if err != nil {
		return err
	}
	if _, err := prov.Init(ctx, provision.InitParams{}); err != nil {
		return err
	}
	admin, err := httpapi.NewAdmin(httpapi.AdminConfig{Provisioner: prov, Pool: pool, AdminToken: adminToken, Logger: logger})
	if err != nil {
		return err
	}
	adminSrv := httptest.NewServer(admin)
	defer adminSrv.Close()
	reranker := httptest.NewServer(http.HandlerFunc(coverageReranker))
	defer reranker.Close()

	routerURL := strings.Replace(c.URL("postgres"), "postgres@", provision.DefaultRouterRole+"@", 1)
	svc, err := dataplane.Open(ctx, dataplane.Config{DatabaseURL: routerURL, Logger: logger,
		Reranker: rerank.Config{BaseURL: reranker.URL, Timeout: 5 * time.Second}})
	if err != nil {
		return err
	}
	defer svc.Close()
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	rctx, stopRouter := context.WithCancel(ctx)
	routerDone := make(chan error, 1)
	go func() { routerDone <- svc.Run(rctx, ln) }()
	defer func() {
		stopRouter()
		if err := <-routerDone; err != nil {
			fmt.Fprintln(os.Stderr, "eval: router:", err)
		}
	}()
	router := "http://" + ln.Addr().String()
	waitReady(ctx, router)

	modes := []mode{
		{"text", map[string]any{"search_type": "text"}},
		{"vector", map[string]any{"search_type": "vector"}},
		{"hybrid", map[string]any{"search_type": "hybrid"}},
		{"hybrid+rerank", map[string]any{"search_type": "hybrid", "rerank": true, "rerank_top_k": 30}},
	}
	for _, a := range strings.Split(*alphas, ",") {
		if a = strings.TrimSpace(a); a != "" {
			var f float64
			if _, err := fmt.Sscan(a, &f); err != nil {
				return fmt.Errorf("-alphas: %w", err)
			}
			for _, fu := range strings.Split(*fusions, ",") {
				modes = append(modes, mode{"hybrid " + fu + " alpha=" + a, map[string]any{"search_type": "hybrid", "alpha": f, "fusion": fu}})
			}
		}
	}
	fmt.Println("| set | tenant | mode | MRR@10 | recall@10 | nDCG@10 |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, set := range sets {
		ref := newBM25(set.Items)
		var m metrics
		for _, it := range set.Items {
			m.add(ref.search(it.Query, 10), it.ID)
		}
		printRow(set.Name, "(harness)", "BM25 reference", m)
		for _, tier := range []string{"shared", "schema"} {
			tenant := fmt.Sprintf("eval-%s-%s", set.Name, tier)
			key, err := createTenant(ctx, adminSrv.URL, tenant, tier)
			if err != nil {
				return err
			}
			if err := load(ctx, router, key, set, progress); err != nil {
				return err
			}
			if *dump != "" {
				if tier == "shared" {
					if err := dumpLegs(ctx, router, key, set, *dump); err != nil {
						return err
					}
				}
				continue
			}
			for _, md := range modes {
				var m metrics
				start := time.Now()
				for i, it := range set.Items {
					docs, err := search(ctx, router, key, it.Query, md.body)
					if err != nil {
						return fmt.Errorf("%s %s %q: %w", tenant, md.name, it.Query, err)
					}
					m.add(docs, it.ID)
					if (i+1)%200 == 0 {
						progress("  %s %s: %d/%d queries, %.0f/s", tenant, md.name, i+1, len(set.Items),
							float64(i+1)/time.Since(start).Seconds())
					}
				}
				printRow(set.Name, tier, md.name, m)
			}
		}
	}
	return nil
}

func printRow(set, tenant, mode string, m metrics) {
	mrr, rec, ndcg := m.row()
	fmt.Printf("| %s | %s | %s | %.3f | %.3f | %.3f |\n", set, tenant, mode, mrr, rec, ndcg)
}

func waitReady(ctx context.Context, base string) {
	for range 100 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func call(ctx context.Context, method, url, key string, body any, out any) error {
	buf, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(buf))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func createTenant(ctx context.Context, admin, id, tier string) (string, error) {
	var out struct {
		APIKey struct {
			Key string `json:"api_key"`
		} `json:"api_key"`
	}
	err := call(ctx, http.MethodPost, admin+"/v1/tenants", adminToken, map[string]any{"tenant_id": id, "tier": tier}, &out)
	return out.APIKey.Key, err
}

func load(ctx context.Context, router, key string, set querySet, progress func(string, ...any)) error {
	var done atomic.Int64
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, it := range set.Items {
		g.Go(func() error {
			err := call(gctx, http.MethodPost, router+"/v1/documents", key, map[string]any{
				"document_name": it.ID, "document_type": "text", "content": it.Content, "id_at_origin": it.ID}, nil)
			if n := done.Add(1); n%100 == 0 || int(n) == len(set.Items) {
				el := time.Since(start).Seconds()
				rate := float64(n) / el
				progress("  loading %s: %d/%d documents, %.0f/s, ETA %.0fs", set.Name, n, len(set.Items), rate,
					float64(len(set.Items)-int(n))/rate)
			}
			return err
		})
	}
	return g.Wait()
}

// search runs one query and returns the distinct documents of the results, best first.
func search(ctx context.Context, router, key, q string, body map[string]any) ([]string, error) {
	b := map[string]any{"query_text": q, "limit": 50}
	for k, v := range body {
		b[k] = v
	}
	var out struct {
		Results []struct {
			DocumentName string `json:"document_name"`
		} `json:"results"`
	}
	if err := call(ctx, http.MethodPost, router+"/v1/search", key, b, &out); err != nil {
		// A query with nothing to search for (only stop words) is a 400 for text search: no hit.
		if strings.Contains(err.Error(), ": 400 ") {
			return nil, nil
		}
		return nil, err
	}
	var docs []string
	seen := map[string]bool{}
	for _, r := range out.Results {
		if !seen[r.DocumentName] {
			seen[r.DocumentName] = true
			docs = append(docs, r.DocumentName)
		}
	}
	return docs, nil
}

// coverageReranker is the harness's stand-in for a cross-encoder behind the common /rerank API
// (no reranking model is available offline): it scores each document by the share of the query's
// distinct words it contains, so it prefers candidates that cover the whole query.
func coverageReranker(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Query     string   `json:"query"`
		Documents []string `json:"documents"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := map[string]bool{}
	for _, t := range tokens(req.Query) {
		q[t] = true
	}
	type res struct {
		Index int     `json:"index"`
		Score float64 `json:"relevance_score"`
	}
	out := struct {
		Results []res `json:"results"`
	}{}
	for i, d := range req.Documents {
		have := map[string]bool{}
		for _, t := range tokens(d) {
			if q[t] {
				have[t] = true
			}
		}
		out.Results = append(out.Results, res{i, float64(len(have)) / float64(max(len(q), 1))})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// dumpLegs appends, for every query of set, the text and vector legs' candidates to path.
func dumpLegs(ctx context.Context, router, key string, set querySet, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	enc := json.NewEncoder(f)
	type hit struct {
		Doc   string  `json:"doc"`
		Chunk string  `json:"chunk"`
		Score float64 `json:"score"`
	}
	for _, it := range set.Items {
		rec := map[string]any{"set": set.Name, "query": it.Query, "target": it.ID}
		for _, mode := range []string{"text", "vector"} {
			var out struct {
				Results []struct {
					ChunkID      string  `json:"chunk_id"`
					DocumentName string  `json:"document_name"`
					Score        float64 `json:"score"`
				} `json:"results"`
			}
			err := call(ctx, http.MethodPost, router+"/v1/search", key,
				map[string]any{"query_text": it.Query, "search_type": mode, "limit": 100}, &out)
			if err != nil && !strings.Contains(err.Error(), ": 400 ") {
				return err
			}
			hits := []hit{}
			for _, r := range out.Results {
				hits = append(hits, hit{r.DocumentName, r.ChunkID, r.Score})
			}
			rec[mode] = hits
		}
		if err := enc.Encode(rec); err != nil {
			return err
		}
	}
	return nil
}
