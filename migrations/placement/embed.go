// Package placement embeds the goose migrations of the placement schema (tenantmem_placement),
// which every database holding tenant tables has once: the bookkeeping of that database as a
// whole, such as the list of tenants with embedding work. They run with tenantmem_placement first
// on the search_path.
package placement

import "embed"

// FS holds the migration files, at its root.
//
//go:embed *.sql
var FS embed.FS
