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

// TestSearchRequestFields drives the search request's tuning and filter fields (fusion,
// recall_target, chunk_metadata_filter, rerank) through the client against the real router:
// each is sent under its JSON name and understood (a bad value is 400 naming it).
func TestSearchRequestFields(t *testing.T) {
	t.Parallel()
	stack := stacktest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin, err := client.NewAdmin(client.Config{BaseURL: stack.AdminURL, Token: stack.AdminToken})
	require.NoError(t, err)
	created, err := admin.CreateTenant(ctx, client.TenantCreateParams{TenantID: "fields", Tier: client.TierShared})
	require.NoError(t, err)
	r := newRouter(t, stack, created.APIKey.Key)
	runbook, err := r.AddDocument(ctx, client.DocumentAddParams{DocumentName: "Runbook", DocumentType: "markdown",
		Content: "# Deploys\n\nWe deploy on Tuesdays, after the database backup has finished.\n\n# Lunch\n\nLunch is at noon."})
	require.NoError(t, err)

	for _, fusion := range []string{"score", "rrf", "dbsf"} {
		res, err := r.Search(ctx, client.SearchParams{QueryText: "deploy backup", Fusion: fusion, Alpha: ptr(0.5),
			RecallTarget: ptr(1.0), Limit: 3})
		require.NoError(t, err, fusion)
		require.Equal(t, "hybrid", res.SearchType)
		require.NotEmpty(t, res.Results, fusion)
		require.Equal(t, runbook.DocumentID, res.Results[0].DocumentID, fusion)
		require.False(t, res.Degraded)
	}
	// The chunk's own metadata: the heading path of a markdown section.
	res, err := r.Search(ctx, client.SearchParams{QueryText: "deploy lunch", SearchType: client.SearchText,
		ChunkMetadataFilter: map[string]any{"section": "Lunch"}})
	require.NoError(t, err)
	require.NotEmpty(t, res.Results)
	for _, hit := range res.Results {
		require.Equal(t, "Lunch", hit.Metadata["section"])
	}

	for _, tc := range []struct {
		given client.SearchParams
		field string
	}{
		{client.SearchParams{QueryText: "deploy", Fusion: "average"}, "fusion"},
		{client.SearchParams{QueryText: "deploy", RecallTarget: ptr(0.1)}, "recall_target"},
		// The test stack has no reranker: the router says so, naming the field.
		{client.SearchParams{QueryText: "deploy", Rerank: true, RerankTopK: 5}, "rerank"},
	} {
		_, err := r.Search(ctx, tc.given)
		require.ErrorIs(t, err, client.ErrInvalidInput, tc.field)
		var ce *client.Error
		require.True(t, errors.As(err, &ce))
		require.Equal(t, tc.field, ce.Field)
	}
}

func ptr[T any](v T) *T { return &v }
