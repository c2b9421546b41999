package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/client"
	"github.com/tenantmem/tenantmem/internal/stacktest"
)

// TestReadmeSession plays the README's curl session through the Go client against the real
// provisioning API and router (in-process, on free ports, the router logged in as the router
// role), and on the way calls every route of both servers with every option the client has.
func TestReadmeSession(t *testing.T) {
	t.Parallel()
	stack := stacktest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin, err := client.NewAdmin(client.Config{BaseURL: stack.AdminURL, Token: stack.AdminToken})
	require.NoError(t, err)
	require.NoError(t, admin.Ready(ctx))

	// Create a tenant in its own schema, and a small one in the shared tier.
	created, err := admin.CreateTenant(ctx, client.TenantCreateParams{TenantID: "acme/team-1", Tier: client.TierSchema})
	require.NoError(t, err)
	require.Equal(t, client.StatusActive, created.Tenant.Status)
	require.Equal(t, client.TierSchema, created.Tenant.Tier)
	require.Regexp(t, `^tm_[a-z0-9]{16}_[0-9a-f]{64}$`, created.APIKey.Key)
	small, err := admin.CreateTenant(ctx, client.TenantCreateParams{TenantID: "small-co", Tier: client.TierShared})
	require.NoError(t, err)
	_, err = admin.CreateTenant(ctx, client.TenantCreateParams{TenantID: "small-co", Tier: client.TierShared})
	require.ErrorIs(t, err, client.ErrAlreadyExists)
	// Many small customers at once.
	bulk, err := admin.CreateTenants(ctx, client.TenantBulkCreateParams{Tier: client.TierShared,
		TenantIDs: []string{"small-co", "import/1", "import/2"}})
	require.NoError(t, err)
	require.Equal(t, 2, bulk.Created)
	require.Equal(t, []string{"small-co"}, bulk.Existing)
	require.Len(t, bulk.Tenants, 2)
	require.Regexp(t, `^tm_[a-z0-9]{16}_[0-9a-f]{64}$`, bulk.Tenants[0].APIKey)
	_, err = admin.CreateTenants(ctx, client.TenantBulkCreateParams{Tier: client.TierSchema, TenantIDs: []string{"x"}})
	require.ErrorIs(t, err, client.ErrInvalidInput)
	for _, k := range bulk.Tenants {
		require.NoError(t, admin.DeleteTenant(ctx, k.TenantID))
	}

	r := newRouter(t, stack, created.APIKey.Key)
	require.NoError(t, r.Ready(ctx))

	// Add a document; the same id_at_origin again replaces it.
	date := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	runbook := client.DocumentAddParams{
		DocumentName: "Runbook", DocumentType: "markdown", IDAtOrigin: "wiki-42",
		Metadata: map[string]any{"space": "ops"}, DocumentDate: &date,
		Content: "# Deploys\n\nWe deploy on Tuesdays, after the database backup has finished.",
	}
	added, err := r.AddDocument(ctx, runbook)
	require.NoError(t, err)
	require.True(t, added.Created)
	require.Positive(t, added.ChunksCreated)
	require.Positive(t, added.EmbeddingsCreated)
	again, err := r.AddDocument(ctx, runbook)
	require.NoError(t, err)
	require.False(t, again.Created)
	require.Equal(t, added.DocumentID, again.DocumentID)
	other, err := r.AddDocument(ctx, client.DocumentAddParams{
		DocumentName: "Lunch", DocumentType: "text", Metadata: map[string]any{"space": "social"},
		Content: "Lunch is served at noon on the third floor.", Chunking: &client.ChunkingOptions{ChildSize: 64},
	})
	require.NoError(t, err)

	// Search in every mode, with every option.
	for _, mode := range []string{client.SearchVector, client.SearchText, client.SearchHybrid} {
		res, err := r.Search(ctx, client.SearchParams{QueryText: "when do we deploy?", SearchType: mode, Limit: 5})
		require.NoError(t, err, mode)
		require.Equal(t, mode, res.SearchType)
		require.NotEmpty(t, res.Results, mode)
		require.Equal(t, added.DocumentID, res.Results[0].DocumentID, mode)
	}
	alpha := 0.7
	from, to := date.AddDate(0, 0, -1), date.AddDate(0, 0, 1)
	res, err := r.Search(ctx, client.SearchParams{
		QueryText: "deploy backup", Limit: 3, IDAtOrigin: "wiki-42", IDAtOrigins: []string{"wiki-42", "wiki-43"},
		DocumentTypes: []string{"markdown"}, MetadataFilter: map[string]any{"space": "ops"}, DateFrom: &from, DateTo: &to,
		Alpha: &alpha, IncludeParentContext: true, IncludeDocuments: true,
	})
	require.NoError(t, err)
	require.NotEmpty(t, res.Results)
	hit := res.Results[0]
	require.Equal(t, "Runbook", hit.DocumentName)
	require.Equal(t, "markdown", hit.DocumentType)
	require.Equal(t, map[string]any{"space": "ops"}, hit.DocumentMetadata)
	require.Equal(t, "wiki-42", *hit.IDAtOrigin)
	require.True(t, date.Equal(*hit.DocumentDate))
	quick, err := r.QuickSearch(ctx, "backup", 3)
	require.NoError(t, err)
	require.NotEmpty(t, quick.Results)
	history, err := r.SearchHistory(ctx, 2)
	require.NoError(t, err)
	require.Len(t, history, 2)
	require.Equal(t, "backup", history[0].QueryText)

	st, err := r.Statistics(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, st.DocumentCount)
	require.Equal(t, map[string]int{"markdown": 1, "text": 1}, st.DocumentTypeBreakdown)
	emb, err := r.EmbeddingStatus(ctx)
	require.NoError(t, err)
	require.Equal(t, client.EmbeddingQueueStats{}, *emb)
	queued, err := r.RetryEmbeddings(ctx)
	require.NoError(t, err)
	require.Zero(t, queued)

	list, err := r.ListDocuments(ctx, client.DocumentListParams{Limit: 10, OrderBy: client.OrderByUpdatedAt})
	require.NoError(t, err)
	require.Equal(t, 2, list.Total)
	require.Equal(t, other.DocumentID, list.Documents[0].DocumentID, "newest first")
	list, err = r.ListDocuments(ctx, client.DocumentListParams{Limit: 1, Offset: 0, DocumentType: "markdown", IDAtOrigin: "wiki-42",
		MetadataFilter: map[string]any{"space": "ops"}, OrderBy: client.OrderByDocumentName, Order: client.OrderAsc})
	require.NoError(t, err)
	require.Equal(t, 1, list.Total)
	require.Equal(t, "wiki-42", *list.Documents[0].IDAtOrigin)
	doc, err := r.GetDocument(ctx, added.DocumentID, client.DocumentGetParams{IncludeChunks: true})
	require.NoError(t, err)
	require.Equal(t, "Runbook", doc.DocumentName)
	require.Len(t, doc.Chunks, doc.ChunkCount)
	require.NotEmpty(t, doc.Chunks)

	// Bad input names the field and writes nothing.
	_, err = r.AddDocument(ctx, client.DocumentAddParams{DocumentName: "empty", DocumentType: "text"})
	var apiErr *client.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 400, apiErr.StatusCode)
	require.Equal(t, "content", apiErr.Field)
	require.ErrorIs(t, err, client.ErrInvalidInput)
	_, err = r.GetDocument(ctx, "../etc", client.DocumentGetParams{})
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, "document_id", apiErr.Field)

	// Another tenant's key sees nothing of it: 404 exactly like a missing id.
	smallRouter := newRouter(t, stack, small.APIKey.Key)
	_, errOther := smallRouter.GetDocument(ctx, added.DocumentID, client.DocumentGetParams{})
	_, errMissing := smallRouter.GetDocument(ctx, "00000000-0000-0000-0000-000000000000", client.DocumentGetParams{})
	require.ErrorIs(t, errOther, client.ErrNotFound)
	requireSameAnswer(t, errMissing, errOther)
	require.ErrorIs(t, smallRouter.DeleteDocument(ctx, added.DocumentID), client.ErrNotFound)
	gone, err := smallRouter.DeleteDocuments(ctx, client.DocumentDeleteManyParams{DocumentIDs: []string{added.DocumentID}})
	require.NoError(t, err)
	require.Zero(t, gone.DeletedCount)
	smallStats, err := smallRouter.Statistics(ctx)
	require.NoError(t, err)
	require.Zero(t, smallStats.DocumentCount)

	// Delete by metadata filter, then one by id: 204, then 404.
	deleted, err := r.DeleteDocuments(ctx, client.DocumentDeleteManyParams{MetadataFilter: map[string]any{"space": "social"}})
	require.NoError(t, err)
	require.Equal(t, []string{other.DocumentID}, deleted.DeletedDocumentIDs)
	require.NoError(t, r.DeleteDocument(ctx, added.DocumentID))
	require.ErrorIs(t, r.DeleteDocument(ctx, added.DocumentID), client.ErrNotFound)

	// The registry: list (paged), read, suspend and resume, keys.
	page, err := admin.ListTenants(ctx, client.TenantListParams{Limit: 100})
	require.NoError(t, err)
	require.Len(t, page.Tenants, 2)
	var ids []string
	for tn, err := range admin.AllTenants(ctx, 1) {
		require.NoError(t, err)
		ids = append(ids, tn.TenantID)
	}
	require.Equal(t, []string{"acme/team-1", "small-co"}, ids)
	tn, err := admin.GetTenant(ctx, "acme/team-1")
	require.NoError(t, err)
	require.Equal(t, created.Tenant.SchemaName, tn.SchemaName)
	_, err = admin.GetTenant(ctx, "acme/team-2")
	require.ErrorIs(t, err, client.ErrNotFound)

	tn, err = admin.SuspendTenant(ctx, "acme/team-1")
	require.NoError(t, err)
	require.Equal(t, client.StatusSuspended, tn.Status)
	eventually(t, "403 while suspended", func() bool {
		_, err := r.Statistics(ctx)
		return errors.Is(err, client.ErrForbidden)
	})
	_, err = admin.ResumeTenant(ctx, "acme/team-1")
	require.NoError(t, err)
	eventually(t, "200 after the resume", func() bool {
		_, err := r.Statistics(ctx)
		return err == nil
	})

	second, err := admin.IssueKey(ctx, "acme/team-1")
	require.NoError(t, err)
	keys, err := admin.ListKeys(ctx, "acme/team-1")
	require.NoError(t, err)
	require.Len(t, keys, 2)
	require.NoError(t, admin.RevokeKey(ctx, "acme/team-1", created.APIKey.KeyID))
	eventually(t, "401 for the revoked key", func() bool {
		_, err := r.Statistics(ctx)
		return errors.Is(err, client.ErrUnauthorized)
	})
	r2 := newRouter(t, stack, second.Key)
	_, err = r2.Statistics(ctx)
	require.NoError(t, err)

	// Delete the tenant: its keys stop working.
	require.NoError(t, admin.DeleteTenant(ctx, "acme/team-1"))
	eventually(t, "401 after the delete", func() bool {
		_, err := r2.Statistics(ctx)
		return errors.Is(err, client.ErrUnauthorized)
	})
	require.ErrorIs(t, admin.DeleteTenant(ctx, "acme/team-1"), client.ErrNotFound)

	// The admin token is no tenant key, and a tenant key no admin token.
	_, err = newRouter(t, stack, stack.AdminToken).Statistics(ctx)
	require.ErrorIs(t, err, client.ErrUnauthorized)
	wrongAdmin, err := client.NewAdmin(client.Config{BaseURL: stack.AdminURL, Token: small.APIKey.Key})
	require.NoError(t, err)
	_, err = wrongAdmin.ListTenants(ctx, client.TenantListParams{})
	require.ErrorIs(t, err, client.ErrUnauthorized)
}

func newRouter(t *testing.T, stack *stacktest.Stack, key string) *client.Router {
	t.Helper()
	r, err := client.NewRouter(client.Config{BaseURL: stack.RouterURL, Token: key})
	require.NoError(t, err)
	return r
}

// requireSameAnswer checks that two errors are the same answer, request ids aside.
func requireSameAnswer(t *testing.T, want, got error) {
	t.Helper()
	var w, g *client.Error
	require.ErrorAs(t, want, &w)
	require.ErrorAs(t, got, &g)
	wc, gc := *w, *g
	wc.RequestID, gc.RequestID, wc.Path, gc.Path = "", "", "", ""
	require.Equal(t, wc, gc)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, 20*time.Millisecond, what)
}

// TestPlacementsAndTheDatabaseTier drives the placement routes and a database-tier tenant through
// the client against the real servers.
func TestPlacementsAndTheDatabaseTier(t *testing.T) {
	t.Parallel()
	stack := stacktest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin, err := client.NewAdmin(client.Config{BaseURL: stack.AdminURL, Token: stack.AdminToken})
	require.NoError(t, err)

	ps, err := admin.ListPlacements(ctx)
	require.NoError(t, err)
	require.Len(t, ps, 1)
	require.Equal(t, "local", ps[0].Name)
	require.Equal(t, client.PlacementActive, ps[0].State)
	require.Equal(t, []client.Tier{client.TierShared, client.TierSchema, client.TierDatabase}, ps[0].Tiers)

	created, err := admin.CreateTenant(ctx, client.TenantCreateParams{TenantID: "big-co", Tier: client.TierDatabase})
	require.NoError(t, err)
	require.Equal(t, "local", created.Tenant.Placement)
	require.Regexp(t, `^tmdb_big_co_[0-9a-f]{16}$`, created.Tenant.DatabaseName)
	r := newRouter(t, stack, created.APIKey.Key)
	added, err := r.AddDocument(ctx, client.DocumentAddParams{DocumentName: "n", DocumentType: "text", Content: "in its own database"})
	require.NoError(t, err)
	require.True(t, added.Created)
	stats, err := r.Statistics(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, stats.DocumentCount)

	p, err := admin.DrainPlacement(ctx, "local")
	require.NoError(t, err)
	require.Equal(t, client.PlacementDraining, p.State)
	require.Equal(t, 1, p.Tenants)
	_, err = admin.CreateTenant(ctx, client.TenantCreateParams{TenantID: "late", Tier: client.TierShared})
	require.ErrorIs(t, err, client.ErrConflict)
	_, err = admin.ActivatePlacement(ctx, "local")
	require.NoError(t, err)
	require.ErrorIs(t, admin.RemovePlacement(ctx, "local"), client.ErrConflict)
	_, err = admin.GetPlacement(ctx, "nowhere")
	require.ErrorIs(t, err, client.ErrNotFound)
	_, err = admin.AddPlacement(ctx, client.PlacementAddParams{Name: "Bad Name", Host: "h", Port: 5432, Database: "d"})
	require.ErrorIs(t, err, client.ErrInvalidInput)
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "placement", ce.Field)
	require.NoError(t, admin.DeleteTenant(ctx, "big-co"))
}
