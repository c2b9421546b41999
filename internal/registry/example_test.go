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
