package memory_test

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// Example shows the engine's life cycle for one tenant of the shared tier: a scope on the
// router's pool, an upsert, a hybrid search and the worker that embeds what the provider
// could not at ingest. (Compiled, not run: it needs a database.)
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://tenantmem_router@localhost/tenantmem")
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	provider, err := embed.NewBuiltin(embed.DefaultBuiltinDimension)
	if err != nil {
		panic(err)
	}
	eng, err := memory.New(memory.Config{Embedder: provider})
	if err != nil {
		panic(err)
	}
	s := memory.Scope{Pool: pool, Schema: schema.SharedSchema, OwnerID: "acme", StatementTimeout: 10 * time.Second}

	added, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{
		DocumentName: "Onboarding", DocumentType: "markdown", IDAtOrigin: "wiki/onboarding",
		Content: "# Onboarding\n\nAsk for a laptop on your first day.",
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(added.DocumentID, added.ChunksCreated, added.EmbeddingsPending)

	res, err := eng.Search(ctx, s, memory.SearchParams{QueryText: "first day laptop", Limit: new(5),
		IncludeParentContext: true})
	if err != nil {
		panic(err)
	}
	for _, r := range res.Results {
		fmt.Printf("%.3f %s\n", r.Score, r.Content)
	}

	w, err := memory.NewWorker(memory.WorkerConfig{Embedder: provider})
	if err != nil {
		panic(err)
	}
	_ = w.Run(ctx, func(context.Context) ([]memory.Scope, error) { return []memory.Scope{s}, nil }, time.Minute)
}
