package registry_test

import (
	"errors"
	"fmt"

	"github.com/tenantmem/tenantmem/internal/registry"
)

func ExampleParseKey() {
	keyID, _, err := registry.ParseKey("tm_abcdefghij012345_" + "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
	fmt.Println(keyID, err)
	_, _, err = registry.ParseKey("Bearer something")
	fmt.Println(errors.Is(err, registry.ErrUnauthenticated))
	// Output:
	// abcdefghij012345 <nil>
	// true
}

func ExampleParseTier() {
	t, _ := registry.ParseTier("schema")
	fmt.Println(t)
	_, err := registry.ParseTier("gold")
	fmt.Println(err)
	// Output:
	// schema
	// tier: unknown tier "gold"; want shared, schema or database
}

func ExampleTenant_Location() {
	for _, t := range []registry.Tenant{
		{ID: "small-co", Tier: registry.TierShared, SchemaName: "tenantmem_shared", PlacementID: "local"},
		{ID: "acme", Tier: registry.TierSchema, SchemaName: "tenant_acme", PlacementID: "eu-2"},
		{ID: "big-co", Tier: registry.TierDatabase, SchemaName: "tenantmem_tenant", DatabaseName: "tmdb_big_co_0123456789abcdef", PlacementID: "eu-2"},
	} {
		loc := t.Location()
		fmt.Printf("%s: %s, schema %s, control database: %v\n", t.ID, loc.Key(), loc.Schema, loc.Key().IsControl())
	}
	// Output:
	// small-co: local, schema tenantmem_shared, control database: true
	// acme: eu-2, schema tenant_acme, control database: false
	// big-co: eu-2/tmdb_big_co_0123456789abcdef, schema tenantmem_tenant, control database: false
}

func ExampleValidatePlacementName() {
	fmt.Println(registry.ValidatePlacementName("eu-2"))
	fmt.Println(registry.ValidatePlacementName("EU 2"))
	// Output:
	// <nil>
	// placement: "EU 2" is not a placement name: 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit
}

func ExampleIsStrictDescendant() {
	fmt.Println(registry.IsStrictDescendant("acme", "acme/u-42"))
	fmt.Println(registry.IsStrictDescendant("acme", "acmex/u-1"))
	fmt.Println(registry.IsStrictDescendant("acme", "ACME/u-1"))
	fmt.Println(registry.IsStrictDescendant("acme", "acme"))
	// Output:
	// true
	// false
	// false
	// false
}
