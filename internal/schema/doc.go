// Package schema owns the PostgreSQL schemas that hold tenant data: it validates tenant ids, maps a
// tenant id to its schema name, and runs the goose migrations of migrations/tenant (and of
// migrations/control) into one schema at a time.
//
// The mapping from tenant id to schema name is deterministic and injective by construction (see
// [Name]); the provisioner still stores the name in the registry and relies on a unique constraint
// there, so a name never has to be derived twice and a hash collision can never merge two tenants.
//
// A [Migrator] is safe for concurrent use: every run opens its own short-lived *sql.DB whose
// connections start with the target schema on their search_path, and holds an advisory lock derived
// from the schema name, so different schemas migrate in parallel and the same schema never twice.
package schema
