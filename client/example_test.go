package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/tenantmem/tenantmem/client"
)

// A tenant is created over the provisioning API; its key then adds and searches documents over
// the router. (Compiled, not run: it needs running servers; client/e2e_test.go runs the same.)
func Example() {
	ctx := context.Background()
	admin, err := client.NewAdmin(client.Config{BaseURL: "http://127.0.0.1:8081", Token: os.Getenv("TENANTMEM_ADMIN_TOKEN")})
	if err != nil {
		log.Fatal(err)
	}
	created, err := admin.CreateTenant(ctx, client.TenantCreateParams{TenantID: "acme/team-1", Tier: client.TierSchema})
	if err != nil {
		log.Fatal(err)
	}
	r, err := client.NewRouter(client.Config{BaseURL: "http://127.0.0.1:8080", Token: created.APIKey.Key})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := r.AddDocument(ctx, client.DocumentAddParams{
		DocumentName: "Runbook", DocumentType: "markdown", IDAtOrigin: "wiki-42",
		Content: "# Deploys\n\nWe deploy on Tuesdays, after the database backup has finished.",
	}); err != nil {
		log.Fatal(err)
	}
	res, err := r.Search(ctx, client.SearchParams{QueryText: "when do we deploy?", Limit: 5})
	if err != nil {
		log.Fatal(err)
	}
	for _, hit := range res.Results {
		fmt.Printf("%.3f %s\n", hit.Score, hit.DocumentName)
	}
}

// Errors carry the server's status, code, message and field, and match this package's sentinels.
func ExampleError() {
	ctx := context.Background()
	r, err := client.NewRouter(client.Config{BaseURL: "http://127.0.0.1:8080", Token: os.Getenv("TENANTMEM_API_KEY")})
	if err != nil {
		log.Fatal(err)
	}
	_, err = r.AddDocument(ctx, client.DocumentAddParams{DocumentName: "empty", DocumentType: "text"})
	var apiErr *client.Error
	switch {
	case errors.As(err, &apiErr) && apiErr.Code == "invalid_input":
		fmt.Println("fix the field", apiErr.Field)
	case errors.Is(err, client.ErrForbidden):
		fmt.Println("the tenant is suspended")
	case errors.Is(err, client.ErrUnavailable):
		fmt.Println("still unavailable after the retries; try again in", apiErr.RetryAfter)
	}
}
