package registry_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/registry"
)

func TestIsStrictDescendant(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given, when string
		expect      bool
	}{
		{"acme", "acme/u-42", true},
		{"acme", "acme/team/u-1", true},
		{"acme/team", "acme/team/u-1", true},
		{"acme", "acme", false},
		{"acme", "acmex", false},
		{"acme", "acmex/u-1", false},
		{"acme", "acme-/u-1", false},
		{"acme", "ACME/u-1", false},
		{"acme", "Acme/u-1", false},
		{"ACME", "acme/u-1", false},
		{"acme", "other/u-1", false},
		{"acme", "org/acme/u-1", false},
		{"org/acme", "org/acmey/u-1", false},
		{"org/acme", "org/acme/u-1", true},
		{"acme/u-1", "acme", false},
		{"acme", "acme/", false},
		{"", "acme", false},
		{"", "/acme", false},
	} {
		require.Equal(t, tc.expect, registry.IsStrictDescendant(tc.given, tc.when), "%q below %q", tc.when, tc.given)
	}
}
