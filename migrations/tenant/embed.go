// Package tenant embeds the goose migrations of a tenant schema: documents, chunks (with owner_id, a
// generated tsvector and an HNSW-indexed embedding) and search history. The same files run in every
// tier: into tenantmem_shared for the shared tier, into tenant_<name> for the schema tier, and into a
// tenant's own database for the database tier.
//
// The migrator runs them with the target schema first on the search_path, the extensions schema
// second, and the connection setting tenantmem.embedding_dimension set to the deployment's
// dimension, which the control schema records at init. They never use goose ENVSUB.
package tenant

import "embed"

// FS holds the migration files, at its root.
//
//go:embed *.sql
var FS embed.FS
