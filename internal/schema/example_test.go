package schema_test

import (
	"fmt"

	"github.com/tenantmem/tenantmem/internal/schema"
)

func ExampleName() {
	for _, id := range []string{"acme", "Acme", "org-123/workspace-456"} {
		name, _ := schema.Name(id)
		fmt.Println(name)
	}
	// Output:
	// tenant_acme
	// tenant_acme__37036cd8f974
	// tenant_org_123_workspace_456__9b2c08d38e20
}

func ExampleValidateTenantID() {
	fmt.Println(schema.ValidateTenantID("org-123/workspace-456"))
	fmt.Println(schema.ValidateTenantID("acme\n"))
	// Output:
	// <nil>
	// invalid tenant id: only letters a-z, A-Z, digits and '_', '.', '-' are allowed, in '/'-separated segments
}
