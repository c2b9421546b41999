package memory_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// usageOf reads a tenant's usage row and its real totals, as the superuser.
func (e *env) usageOf(t *testing.T, s memory.Scope) (stored, real [3]int64) {
	t.Helper()
	ctx := context.Background()
	q := func(table string) string { return pgx.Identifier{s.Schema, table}.Sanitize() }
	err := e.admin.QueryRow(ctx, `SELECT documents, chunks, content_bytes FROM `+q("tenant_usage")+` WHERE owner_id = $1`,
		s.OwnerID).Scan(&stored[0], &stored[1], &stored[2])
	if !errors.Is(err, pgx.ErrNoRows) {
		require.NoError(t, err)
	}
	require.NoError(t, e.admin.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM `+q("documents")+` WHERE owner_id = $1),
		(SELECT count(*) FROM `+q("chunks")+` WHERE owner_id = $1),
		(SELECT coalesce(sum(content_bytes), 0) FROM `+q("documents")+` WHERE owner_id = $1)`, s.OwnerID).
		Scan(&real[0], &real[1], &real[2]))
	return stored, real
}

func words(r *rand.Rand, n int) string {
	vocab := strings.Fields("tenant memory vector search index chunk parent child database quota rate limit burst fair share")
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(vocab[r.Intn(len(vocab))])
		if r.Intn(15) == 0 {
			b.WriteString(".\n\n")
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()
}

// TestQuotas: a document that would take the tenant over a quota is refused with a QuotaError
// naming it and nothing is written; upserts, deletes and other tenants are counted exactly.
func TestQuotas(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t))
	ctx := context.Background()
	r := rand.New(rand.NewSource(9))
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			s := e.tenant(t, tier)
			other := e.tenant(t, tier)
			s.Quota = memory.Quota{Documents: 2, Chunks: 1000, ContentBytes: 50_000}
			add := func(s memory.Scope, origin, content string) (memory.DocumentAddResult, error) {
				return eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "d", DocumentType: "text",
					Content: content, IDAtOrigin: origin})
			}
			a, err := add(s, "a", words(r, 200))
			require.NoError(t, err)
			_, err = add(s, "", words(r, 200))
			require.NoError(t, err)
			_, err = add(s, "", "one more")
			var qe *memory.QuotaError
			require.ErrorAs(t, err, &qe)
			require.ErrorIs(t, err, memory.ErrQuotaExceeded)
			require.Equal(t, "documents", qe.Field)
			require.EqualValues(t, 2, qe.Limit)
			// Replacing a document does not add one.
			_, err = add(s, "a", words(r, 100))
			require.NoError(t, err)
			// Bytes: a replacement that grows beyond the quota is refused, the old version stays.
			_, err = add(s, "a", words(r, 9000))
			require.ErrorAs(t, err, &qe)
			require.Equal(t, "content_bytes", qe.Field)
			got, err := eng.GetDocument(ctx, s, memory.DocumentGetParams{DocumentID: a.DocumentID})
			require.NoError(t, err)
			require.Less(t, got.ContentBytes, int64(5000), "the old version is whole")
			// Other tenants are unaffected; a delete frees room.
			_, err = add(other, "", words(r, 200))
			require.NoError(t, err)
			require.NoError(t, eng.DeleteDocument(ctx, s, memory.DocumentDeleteParams{DocumentID: a.DocumentID}))
			_, err = add(s, "", "room again")
			require.NoError(t, err)
			for _, sc := range []memory.Scope{s, other} {
				stored, real := e.usageOf(t, sc)
				require.Equal(t, real, stored, "usage of %s matches its rows", sc.OwnerID)
			}
			res, err := eng.DeleteDocuments(ctx, s, memory.DocumentDeleteManyParams{DocumentIDs: []string{a.DocumentID}})
			require.NoError(t, err)
			require.Zero(t, res.DeletedCount)
		})
	}
}

// TestQuotaUnderConcurrency: concurrent ingests at the edge of the quota store exactly the quota.
func TestQuotaUnderConcurrency(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t))
	s := e.tenant(t, registry.TierShared)
	s.Quota = memory.Quota{Documents: 5}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok, over int
	)
	for i := range 12 {
		wg.Go(func() {
			_, err := eng.AddDocument(context.Background(), s, memory.DocumentAddParams{DocumentName: "d",
				DocumentType: "text", Content: fmt.Sprintf("document number %d", i)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, memory.ErrQuotaExceeded):
				over++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		})
	}
	wg.Wait()
	require.Equal(t, 5, ok)
	require.Equal(t, 7, over)
	stored, real := e.usageOf(t, s)
	require.Equal(t, real, stored)
	require.EqualValues(t, 5, real[0])
}

// TestIdempotentWrites: a retried write with the same key does nothing and returns the first
// result; the key cannot be reused for another request; concurrent duplicates make one document.
func TestIdempotentWrites(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t))
	ctx := context.Background()
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			s := e.tenant(t, tier)
			key := func(k, body string) *memory.IdempotencyKey {
				h := sha256.Sum256([]byte(body))
				return &memory.IdempotencyKey{Key: k, RequestHash: h[:]}
			}
			p := memory.DocumentAddParams{DocumentName: "once", DocumentType: "text", Content: "exactly one document",
				Idempotency: key("k1", "body-1")}
			first, err := eng.AddDocument(ctx, s, p)
			require.NoError(t, err)
			require.True(t, first.Created)
			require.False(t, first.Replayed)
			again, err := eng.AddDocument(ctx, s, p)
			require.NoError(t, err)
			require.True(t, again.Replayed)
			require.True(t, again.Created, "the first answer, 201 again")
			require.Equal(t, first.DocumentID, again.DocumentID)
			require.Equal(t, first.ChunksCreated, again.ChunksCreated)

			p.Idempotency = key("k1", "another body")
			_, err = eng.AddDocument(ctx, s, p)
			require.ErrorIs(t, err, memory.ErrIdempotencyKeyReused)

			// Concurrent duplicates: one document.
			var wg sync.WaitGroup
			ids := make([]string, 6)
			for i := range ids {
				wg.Go(func() {
					res, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "dup", DocumentType: "text",
						Content: "concurrent retries", Idempotency: key("k2", "body-2")})
					if err != nil {
						t.Error(err)
						return
					}
					ids[i] = res.DocumentID
				})
			}
			wg.Wait()
			for _, id := range ids {
				require.Equal(t, ids[0], id)
			}
			// Delete many, replayed.
			del := memory.DocumentDeleteManyParams{DocumentIDs: []string{first.DocumentID, ids[0]}, Idempotency: key("k3", "del")}
			d1, err := eng.DeleteDocuments(ctx, s, del)
			require.NoError(t, err)
			require.Equal(t, 2, d1.DeletedCount)
			d2, err := eng.DeleteDocuments(ctx, s, del)
			require.NoError(t, err)
			require.True(t, d2.Replayed)
			require.Equal(t, d1.DeletedDocumentIDs, d2.DeletedDocumentIDs)
			st, err := eng.Statistics(ctx, s)
			require.NoError(t, err)
			require.Zero(t, st.DocumentCount)
			// The key is the tenant's own: another tenant with the same key writes its own document.
			o := e.tenant(t, tier)
			res, err := eng.AddDocument(ctx, o, memory.DocumentAddParams{DocumentName: "once", DocumentType: "text",
				Content: "exactly one document", Idempotency: key("k1", "body-1")})
			require.NoError(t, err)
			require.False(t, res.Replayed)
			require.NotEqual(t, first.DocumentID, res.DocumentID)
		})
	}
}

// TestLargeDocumentsAreIngestedInBatches: before batching, one INSERT carried every chunk of a
// document and a few megabytes ran past the statement timeout. Each batch is a statement of its
// own, so a 3 MB document goes in under a statement timeout that one statement for all of it
// exceeds.
func TestLargeDocumentsAreIngestedInBatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.IngestBatchSize = 100 })
	s := e.tenant(t, registry.TierShared)
	// One statement for the whole document takes about 6 s here; a batch of 100 chunks 0.15 s.
	s.StatementTimeout = 3 * time.Second
	content := words(rand.New(rand.NewSource(3)), 600_000) // about 3.5 MB
	res, err := eng.AddDocument(context.Background(), s, memory.DocumentAddParams{DocumentName: "big",
		DocumentType: "text", Content: content})
	require.NoError(t, err)
	require.Greater(t, res.ChunksCreated, 3000)
	stored, real := e.usageOf(t, s)
	require.Equal(t, real, stored)
	require.EqualValues(t, len(content), real[2])
}

// TestIngestWorkIsBounded: a document that would make more chunks than allowed is refused before
// anything is embedded or written, naming what to change.
func TestIngestWorkIsBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t), func(c *memory.Config) { c.MaxChunksPerDocument = 500 })
	s := e.tenant(t, registry.TierSchema)
	content := words(rand.New(rand.NewSource(4)), 40_000) // 200 KB
	_, err := eng.AddDocument(context.Background(), s, memory.DocumentAddParams{DocumentName: "tiny chunks",
		DocumentType: "text", Content: content, Chunking: memory.ChunkingOptions{ParentSize: 32, ChildSize: 16}})
	var ve *memory.ValidationError
	require.ErrorAs(t, err, &ve)
	require.ErrorIs(t, err, memory.ErrTooLarge)
	require.Equal(t, "chunking.child_size", ve.Field)
	_, err = eng.AddDocument(context.Background(), s, memory.DocumentAddParams{DocumentName: "default chunks",
		DocumentType: "text", Content: content})
	require.NoError(t, err, "the same content at the default sizes fits")
	stored, real := e.usageOf(t, s)
	require.Equal(t, real, stored)
	require.EqualValues(t, 1, real[0])
}

// TestMetadataIsWhatJsonbAccepts: every metadata value the engine accepts, PostgreSQL's jsonb
// accepts too (no 500 from the database), and the values jsonb refuses are validation errors
// naming the field, on every path that takes metadata or a metadata filter.
func TestMetadataIsWhatJsonbAccepts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	eng := newEngine(t, newBuiltin(t))
	ctx := context.Background()
	s := e.tenant(t, registry.TierShared)
	refused := []string{
		`{"a": "\ud800"}`, `{"a": "x\udc00y"}`, `{"a": {"b": ["\ud800\ud800"]}}`,
		`{"a": 1e1000000}`, `{"a": -1e1000000}`, `{"a": 1e-1000000}`,
		`{"a": "\u0000", "a": "x"}`, `{"a": 1, "a": 2}`, `{"n": {"k": 1, "k": 1}}`,
		`{"a": "\u0000"}`, `{"\u0000": 1}`, `{"a": "` + "\xff" + `"}`,
		`{"a": 1} {"b": 2}`, `{"a": 1`, `[1]`,
	}
	// Refused although jsonb would store them (numeric goes to 1e131071 and 1e-16383): the
	// engine keeps numbers to what a double holds, with exponents within ±1000, a margin inside
	// numeric's range that any JSON client can read back.
	beyondDouble := map[string]bool{`{"a": 1e400}`: true, `{"a": 1e1001}`: true, `{"a": 1e-1001}`: true}
	for raw := range beyondDouble {
		refused = append(refused, raw)
	}
	accepted := []string{
		`{}`, `{"a": "\ud83d\ude00"}`, `{"a": 1e308}`, `{"a": -1e-300}`, `{"a": 0.` + strings.Repeat("0", 500) + `1}`,
		`{"a": 123456789012345678901234567890}`, `{"a": "é", "b": [true, null, {"c": 1.5e10}]}`, `{"A": 1, "a": 2}`,
	}
	check := func(raw string) error {
		var errs []error
		_, err := eng.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: "m", DocumentType: "text",
			Content: "metadata probe", Metadata: json.RawMessage(raw)})
		errs = append(errs, err)
		_, err = eng.ListDocuments(ctx, s, memory.DocumentListParams{MetadataFilter: json.RawMessage(raw)})
		errs = append(errs, err)
		_, err = eng.Search(ctx, s, memory.SearchParams{QueryText: "probe", SearchType: memory.SearchText,
			MetadataFilter: json.RawMessage(raw)})
		errs = append(errs, err)
		if raw != `{}` {
			_, err = eng.DeleteDocuments(ctx, s, memory.DocumentDeleteManyParams{MetadataFilter: json.RawMessage(raw)})
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	for _, raw := range refused {
		err := check(raw)
		require.Error(t, err, raw)
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var ve *memory.ValidationError
			require.ErrorAs(t, e, &ve, "%s: %v", raw, e)
			require.Contains(t, []string{"metadata", "metadata_filter"}, ve.Field)
		}
		// And jsonb does refuse it (the engine is not stricter than it needs to be), except for
		// what jsonb would silently change: duplicate names and more than one value.
		if !strings.Contains(raw, `"a": 1, "a"`) && !strings.Contains(raw, `"k": 1, "k"`) && !strings.Contains(raw, `} {`) &&
			raw != `[1]` && !beyondDouble[raw] {
			_, err := e.admin.Exec(ctx, `SELECT $1::text::jsonb`, raw)
			require.Error(t, err, "jsonb accepts %s", raw)
		}
	}
	for _, raw := range accepted {
		require.NoError(t, check(raw), raw)
		_, err := e.admin.Exec(ctx, `SELECT $1::text::jsonb`, raw)
		require.NoError(t, err, raw)
	}
}
