// Package control embeds the goose migrations of the control schema (tenantmem_control): the tenant
// registry, API keys, placements, settings and the audit log. They run with tenantmem_control first
// on the search_path and the extensions schema after it.
package control

import "embed"

// FS holds the migration files, at its root.
//
//go:embed *.sql
var FS embed.FS
