package memory_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestBadInput: every kind of bad input is a *ValidationError naming the field (wrapping
// ErrTooLarge for size limits), and nothing is written.
func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.MaxContentBytes = 1000; c.MaxQueryChars = 50 })
	s := e.tenant(t, registry.TierShared)
	ctx := context.Background()
	ok := memory.DocumentAddParams{DocumentName: "n", DocumentType: "text", Content: "some content"}
	add := func(mod func(*memory.DocumentAddParams)) func() error {
		return func() error {
			p := ok
			mod(&p)
			_, err := eng.AddDocument(ctx, s, p)
			return err
		}
	}
	search := func(p memory.SearchParams) func() error {
		return func() error {
			if p.QueryText == "" && p.QueryEmbedding == nil && p.SearchType != "vector" {
				p.QueryText = "fine"
			}
			_, err := eng.Search(ctx, s, p)
			return err
		}
	}
	list := func(p memory.DocumentListParams) func() error {
		return func() error { _, err := eng.ListDocuments(ctx, s, p); return err }
	}
	day := func(d int) *time.Time { v := time.Date(2024, 1, d, 0, 0, 0, 0, time.UTC); return &v }
	bigMeta := `{"k":"` + strings.Repeat("x", 70000) + `"}`
	deep := strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40)

	for _, tc := range []struct {
		given    string
		when     func() error
		expect   string // the field
		tooLarge bool
	}{
		{"empty content", add(func(p *memory.DocumentAddParams) { p.Content = "" }), "content", false},
		{"blank content", add(func(p *memory.DocumentAddParams) { p.Content = " \n\t " }), "content", false},
		{"content over the maximum", add(func(p *memory.DocumentAddParams) { p.Content = strings.Repeat("a ", 501) }), "content", true},
		{"content with NUL", add(func(p *memory.DocumentAddParams) { p.Content = "a\x00b" }), "content", false},
		{"content not UTF-8", add(func(p *memory.DocumentAddParams) { p.Content = "a\xffb" }), "content", false},
		{"empty name", add(func(p *memory.DocumentAddParams) { p.DocumentName = " " }), "document_name", false},
		{"long name", add(func(p *memory.DocumentAddParams) { p.DocumentName = strings.Repeat("é", 501) }), "document_name", true},
		{"unknown document type", add(func(p *memory.DocumentAddParams) { p.DocumentType = "spreadsheet" }), "document_type", false},
		{"document type in capitals", add(func(p *memory.DocumentAddParams) { p.DocumentType = "TEXT" }), "document_type", false},
		{"metadata array", add(func(p *memory.DocumentAddParams) { p.Metadata = json.RawMessage(`[1,2]`) }), "metadata", false},
		{"metadata string", add(func(p *memory.DocumentAddParams) { p.Metadata = json.RawMessage(`"x"`) }), "metadata", false},
		{"metadata broken JSON", add(func(p *memory.DocumentAddParams) { p.Metadata = json.RawMessage(`{"a":`) }), "metadata", false},
		{"metadata two values", add(func(p *memory.DocumentAddParams) { p.Metadata = json.RawMessage(`{} {}`) }), "metadata", false},
		{"metadata over 64 KB", add(func(p *memory.DocumentAddParams) { p.Metadata = json.RawMessage(bigMeta) }), "metadata", true},
		{"metadata with NUL", add(func(p *memory.DocumentAddParams) { p.Metadata = json.RawMessage(`{"a":"x\u0000y"}`) }), "metadata", false},
		{"metadata too deep", add(func(p *memory.DocumentAddParams) { p.Metadata = json.RawMessage(deep) }), "metadata", false},
		{"id_at_origin with newline", add(func(p *memory.DocumentAddParams) { p.IDAtOrigin = "acme\n" }), "id_at_origin", false},
		{"id_at_origin too long", add(func(p *memory.DocumentAddParams) { p.IDAtOrigin = strings.Repeat("a", 256) }), "id_at_origin", true},
		{"chunk size too small", add(func(p *memory.DocumentAddParams) { p.Chunking.ParentSize = 3 }), "chunking.parent_size", false},
		{"child larger than parent", add(func(p *memory.DocumentAddParams) {
			p.Chunking = memory.ChunkingOptions{ParentSize: 100, ChildSize: 200}
		}), "chunking.child_size", false},

		{"unknown search type", search(memory.SearchParams{SearchType: "semantic"}), "search_type", false},
		{"empty query", search(memory.SearchParams{SearchType: "text", QueryText: "  "}), "query_text", false},
		{"vector without query", search(memory.SearchParams{SearchType: "vector"}), "query_text", false},
		{"query over the maximum", search(memory.SearchParams{QueryText: strings.Repeat("q", 51)}), "query_text", true},
		{"embedding of the wrong dimension", search(memory.SearchParams{SearchType: "vector", QueryEmbedding: []float32{1, 2}}), "query_embedding", false},
		{"zero embedding", search(memory.SearchParams{SearchType: "vector", QueryEmbedding: make([]float32, testDim)}), "query_embedding", false},
		{"limit 0", search(memory.SearchParams{Limit: new(0)}), "limit", false},
		{"limit 101", search(memory.SearchParams{Limit: new(101)}), "limit", false},
		{"alpha below 0", search(memory.SearchParams{Alpha: new(-0.1)}), "alpha", false},
		{"alpha above 1", search(memory.SearchParams{Alpha: new(1.5)}), "alpha", false},
		{"date_from after date_to", search(memory.SearchParams{DateFrom: day(3), DateTo: day(2)}), "date_from", false},
		{"unknown document type filter", search(memory.SearchParams{DocumentTypes: []string{"text", "nope"}}), "document_types[1]", false},
		{"bad id_at_origins", search(memory.SearchParams{IDAtOrigins: []string{"ok", ""}}), "id_at_origins[1]", false},
		{"metadata filter not an object", search(memory.SearchParams{MetadataFilter: json.RawMessage(`true`)}), "metadata_filter", false},

		{"list limit 0", list(memory.DocumentListParams{Limit: new(0)}), "limit", false},
		{"list limit 101", list(memory.DocumentListParams{Limit: new(101)}), "limit", false},
		{"negative offset", list(memory.DocumentListParams{Offset: -1}), "offset", false},
		{"unknown order_by", list(memory.DocumentListParams{OrderBy: "size"}), "order_by", false},
		{"unknown order", list(memory.DocumentListParams{Order: "up"}), "order", false},
		{"list unknown type", list(memory.DocumentListParams{DocumentType: "nope"}), "document_type", false},

		{"malformed id in get", func() error {
			_, err := eng.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: "12345"})
			return err
		}, "document_id", false},
		{"id with SQL in delete", func() error {
			return eng.DeleteDocument(ctx, s, memory.DocumentDeleteParams{DocumentID: "x' OR 1=1 --"})
		}, "document_id", false},
		{"malformed id in delete many", func() error {
			_, err := eng.DeleteDocuments(ctx, s, memory.DocumentDeleteManyParams{DocumentIDs: []string{"6f1c2a4e-0000-4000-8000-00000000000g"}})
			return err
		}, "document_ids[0]", false},
		{"delete many without selector", func() error {
			_, err := eng.DeleteDocuments(ctx, s, memory.DocumentDeleteManyParams{})
			return err
		}, "document_ids", false},
		{"delete many with an empty filter", func() error {
			_, err := eng.DeleteDocuments(ctx, s, memory.DocumentDeleteManyParams{MetadataFilter: json.RawMessage(`{}`)})
			return err
		}, "metadata_filter", false},
		{"delete many with both", func() error {
			_, err := eng.DeleteDocuments(ctx, s, memory.DocumentDeleteManyParams{DocumentIDs: []string{}, MetadataFilter: json.RawMessage(`{"a":1}`)})
			return err
		}, "document_ids", false},
		{"history limit", func() error {
			_, err := eng.SearchHistory(ctx, s, memory.SearchHistoryListParams{Limit: new(1001)})
			return err
		}, "limit", false},
	} {
		t.Run(tc.given, func(t *testing.T) {
			err := tc.when()
			var ve *memory.ValidationError
			require.True(t, errors.As(err, &ve), "want a ValidationError, got %v", err)
			require.Equal(t, tc.expect, ve.Field)
			require.ErrorIs(t, err, memory.ErrInvalid)
			require.Equal(t, tc.tooLarge, errors.Is(err, memory.ErrTooLarge))
		})
	}
	st, err := eng.Statistics(ctx, s)
	require.NoError(t, err)
	require.Zero(t, st.DocumentCount, "nothing was written")
	hist, err := eng.SearchHistory(ctx, s, memory.SearchHistoryListParams{})
	require.NoError(t, err)
	require.Empty(t, hist, "no invalid search was recorded")
}

// TestValidInputEdges: inputs at the limits are accepted.
func TestValidInputEdges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.MaxContentBytes = 1000 })
	s := e.tenant(t, registry.TierSchema)
	ctx := context.Background()
	r, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: strings.Repeat("é", 500), DocumentType: "text",
		Content: strings.Repeat("a ", 500), IDAtOrigin: "https://example.com/a b?c=d#é", Metadata: json.RawMessage(` null `)})
	require.NoError(t, err)
	d, err := eng.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: strings.ToUpper(r.DocumentID)})
	require.NoError(t, err, "ids are case-insensitive")
	require.JSONEq(t, `{}`, string(d.Metadata))
	_, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "a", Limit: new(100), Alpha: new(0.0)})
	require.NoError(t, err)
	_, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "a", Limit: new(1), Alpha: new(1.0)})
	require.NoError(t, err)
	day := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "a", DateFrom: &day, DateTo: &day})
	require.NoError(t, err)
}
