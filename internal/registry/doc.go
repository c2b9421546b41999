// Package registry reads and writes the control schema (tenantmem_control): tenants and their tier,
// schema, placement, status and migration version; API keys; the audit log; and the NOTIFY channel
// that announces registry changes to routers.
//
// Functions that change the registry take a [DBTX] so that the provisioner can combine several of
// them, and the DDL they describe, in one transaction. A *Registry is safe for concurrent use.
package registry
