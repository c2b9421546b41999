// Package provision is the control plane's logic: it initialises a deployment (roles, extension,
// control schema, shared tier), registers and prepares placements (the same preparation on every
// server), creates, suspends, resumes and deletes tenants of every tier on any placement, issues
// and revokes API keys, and migrates every tenant schema and tenant database of every placement to
// the latest tenant migration.
//
// Every operation is idempotent and resumable. Each step that changes state commits on its own and
// the registry status says how far a tenant got, so running the same command again after a crash
// (or a kill) finishes the job. Operations on one tenant hold a session advisory lock derived from
// its id, so concurrent calls for the same tenant serialise and calls for different tenants run in
// parallel. A *Provisioner is safe for concurrent use.
package provision
