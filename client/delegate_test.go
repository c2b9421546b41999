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

// TestActAs drives delegated keys through the Go client against the real servers: a delegate key
// of acme writes and searches for acme/u-1 with ActAs, the data is acme/u-1's only, a tenant
// outside the subtree gets the same ErrNotFound as a missing one, a key without the scope gets
// ErrForbidden, and a create_descendants key creates acme/u-new on first use.
func TestActAs(t *testing.T) {
	t.Parallel()
	stack := stacktest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := client.NewAdmin(client.Config{BaseURL: stack.AdminURL, Token: stack.AdminToken})
	require.NoError(t, err)
	acme, err := admin.CreateTenant(ctx, client.TenantCreateParams{TenantID: "acme", Tier: client.TierShared})
	require.NoError(t, err)
	_, err = admin.CreateTenant(ctx, client.TenantCreateParams{TenantID: "acmex/u-1", Tier: client.TierShared})
	require.NoError(t, err)
	made, err := admin.CreateDescendants(ctx, "acme", []string{"acme/u-1", "acme/u-2"})
	require.NoError(t, err)
	require.Equal(t, []string{"acme/u-1", "acme/u-2"}, made.Created)
	_, err = admin.IssueKeyWith(ctx, "acme", client.KeyIssueParams{CreateDescendants: true})
	require.ErrorIs(t, err, client.ErrInvalidInput)
	dk, err := admin.IssueKeyWith(ctx, "acme", client.KeyIssueParams{Delegate: true, CreateDescendants: true})
	require.NoError(t, err)
	require.True(t, dk.Delegate)

	parent := newRouter(t, stack, dk.Key)
	u1 := parent.ActAs("acme/u-1")
	added, err := u1.AddDocument(ctx, client.DocumentAddParams{DocumentName: "n", DocumentType: "text", Content: "delegated zebra note"})
	require.NoError(t, err)
	res, err := u1.Search(ctx, client.SearchParams{QueryText: "zebra", SearchType: client.SearchText})
	require.NoError(t, err)
	require.Len(t, res.Results, 1)
	require.Equal(t, added.DocumentID, res.Results[0].DocumentID)
	for _, other := range []*client.Router{parent, parent.ActAs("acme/u-2")} {
		st, err := other.Statistics(ctx)
		require.NoError(t, err)
		require.Zero(t, st.DocumentCount)
	}

	// A delegate-only key: a missing descendant is not created.
	ok, err := admin.IssueKeyWith(ctx, "acme", client.KeyIssueParams{Delegate: true})
	require.NoError(t, err)
	only := newRouter(t, stack, ok.Key)
	_, errMissing := only.ActAs("acme/u-404").Statistics(ctx)
	require.ErrorIs(t, errMissing, client.ErrNotFound)
	_, errForeign := only.ActAs("acmex/u-1").Statistics(ctx)
	requireSameAnswer(t, errMissing, errForeign)
	_, errForeign = parent.ActAs("acmex/u-1").Statistics(ctx)
	requireSameAnswer(t, errMissing, errForeign)
	_, err = parent.ActAs("acme/../acmex/u-1").Statistics(ctx)
	require.ErrorIs(t, err, client.ErrInvalidInput)
	var ce *client.Error
	require.True(t, errors.As(err, &ce))
	require.Equal(t, client.HeaderActAs, ce.Field)

	_, err = newRouter(t, stack, acme.APIKey.Key).ActAs("acme/u-1").Statistics(ctx)
	require.ErrorIs(t, err, client.ErrForbidden)

	// Created on first use, in the shared tier.
	_, err = parent.ActAs("acme/u-new").AddDocument(ctx, client.DocumentAddParams{DocumentName: "n", DocumentType: "text", Content: "first"})
	require.NoError(t, err)
	tn, err := admin.GetTenant(ctx, "acme/u-new")
	require.NoError(t, err)
	require.Equal(t, client.TierShared, tn.Tier)
}
