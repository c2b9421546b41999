// Package api holds the OpenAPI 3.1 descriptions of tenantmem's two HTTP APIs, embedded from the
// YAML files of this folder (go:embed cannot reach "..", so the package lives next to them, like
// the migrations):
//
//   - router.openapi.yaml: the tenant router (documents, search, statistics, embeddings);
//   - provisioner.openapi.yaml: the provisioning API (tenants, keys, limits, placements).
//
// Each server serves its description as JSON at GET /openapi.json. The conformance test in
// internal/httpapi checks every route, status, parameter and error code of both descriptions
// against the real handlers.
package api
