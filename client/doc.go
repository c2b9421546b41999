// Package client is the Go client of tenantmem's two HTTP APIs: [Router], the tenant-routed
// document and search API (a tenant's API key), and [Admin], the provisioning API (the admin
// token). Every method takes a context, sends and receives typed values, and returns the server's
// error body as an [*Error], which matches the sentinel errors of this package with errors.Is
// ([ErrNotFound], [ErrUnavailable], ...) and gives status, code, message and field with errors.As.
//
// Requests answered 503 (tenant being provisioned or moved, statement timeout, embedding provider
// down) or 429 (rate limited) are retried, honouring Retry-After, at most [Config].MaxRetries
// times and never waiting longer than [Config].MaxRetryWait at once; the server answers those
// statuses only when it did nothing, so retrying a POST is safe. Nothing else is retried: a
// connection error on a POST may mean the document was written.
//
// A [Router] and an [Admin] are safe for concurrent use by many goroutines.
//
//	admin, _ := client.NewAdmin(client.Config{BaseURL: "http://127.0.0.1:8081", Token: adminToken})
//	created, _ := admin.CreateTenant(ctx, client.TenantCreateParams{TenantID: "acme", Tier: client.TierSchema})
//	r, _ := client.NewRouter(client.Config{BaseURL: "http://127.0.0.1:8080", Token: created.APIKey.Key})
//	added, _ := r.AddDocument(ctx, client.DocumentAddParams{DocumentName: "Runbook", DocumentType: "markdown", Content: "..."})
//	hits, _ := r.Search(ctx, client.SearchParams{QueryText: "when do we deploy?"})
//
// Adding a route means one method and its types here, and one case in the end-to-end test
// (e2e_test.go); TestWireTypes fails when a server type gains a JSON field a client type lacks.
package client
