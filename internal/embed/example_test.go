package embed_test

import (
	"cmp"
	"context"
	"fmt"
	"log"
	"slices"
	"time"

	"github.com/tenantmem/tenantmem/internal/embed"
)

func ExampleBuiltin() {
	b, err := embed.NewBuiltin(0) // 0 means DefaultBuiltinDimension (384)
	if err != nil {
		log.Fatal(err)
	}
	docs := []string{
		"Simmer the tomatoes with garlic and olive oil, then add basil.",
		"pgvector adds HNSW indexes for nearest neighbour search in PostgreSQL.",
		"The striker scored twice and the club won the football league.",
	}
	vs, err := b.Embed(context.Background(), append([]string{"postgres vector index"}, docs...))
	if err != nil {
		log.Fatal(err)
	}
	query, docVecs := vs[0], vs[1:]
	dot := func(a, b []float32) (s float32) { // vectors are unit length: dot product = cosine
		for i := range a {
			s += a[i] * b[i]
		}
		return s
	}
	order := []int{0, 1, 2}
	slices.SortFunc(order, func(i, j int) int { return cmp.Compare(dot(query, docVecs[j]), dot(query, docVecs[i])) })
	fmt.Println(b.Name(), b.Dimension())
	fmt.Println("best match:", docs[order[0]])
	// Output:
	// builtin-hash-384 384
	// best match: pgvector adds HNSW indexes for nearest neighbour search in PostgreSQL.
}

func ExampleNew() {
	p, err := embed.New(embed.Config{}) // the zero Config is the offline builtin embedder
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Name(), p.Dimension())
	// Output: builtin-hash-384 384
}

// An Ollama server on this machine, serving nomic-embed-text (768 dimensions) through its
// OpenAI-compatible endpoint. The example is compiled but not run: it needs the server.
func ExampleNewOpenAI() {
	p, err := embed.NewOpenAI(embed.OpenAIConfig{
		BaseURL:   "http://localhost:11434",
		Model:     "nomic-embed-text",
		Dimension: 768,
		Timeout:   10 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	vs, err := p.Embed(context.Background(), []string{"hello", "world"})
	switch {
	case embed.IsTransient(err):
		log.Printf("try again later: %v", err) // e.g. leave the job in the queue
	case err != nil:
		log.Fatal(err) // permanent: configuration or input problem
	default:
		fmt.Println(len(vs), len(vs[0]))
	}
}
