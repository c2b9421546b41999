package schema_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/schema"
)

var nameShape = regexp.MustCompile(`^tenant_[a-z0-9_]+$`)

func TestValidateTenantID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given  string
		expect bool // valid
	}{
		{"acme", true},
		{"ACME-Corp.eu_1", true},
		{"org-123/workspace-456", true},
		{"a/b/c", true},
		{strings.Repeat("a", 255), true},
		{"-", true},
		{"", false},
		{strings.Repeat("a", 256), false},
		{"a b", false},
		{"x;drop", false},
		{"x'--", false},
		{"../", false},
		{"..", false},
		{"a/../b", false},
		{"./a", false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{"acme\n", false},
		{"\nacme", false},
		{"café", false},
		{"ａｃｍｅ", false}, // full-width letters
		{"a\x00b", false},
		{"tab\t", false},
		{`a\b`, false},
		{"a%2Fb", false},
	} {
		err := schema.ValidateTenantID(tc.given)
		if tc.expect {
			require.NoError(t, err, "%q", tc.given)
		} else {
			require.ErrorIs(t, err, schema.ErrInvalidTenantID, "%q", tc.given)
		}
	}
}

func TestName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given  string
		expect string // exact name, or "" to check only the hashed shape and prefix
		prefix string
	}{
		{given: "acme", expect: "tenant_acme"},
		{given: "acme_2", expect: "tenant_acme_2"},
		{given: "shared", expect: "tenant_shared"}, // the shared tier uses tenantmem_shared, so no clash
		{given: "Acme", prefix: "tenant_acme__"},
		{given: "acme-corp", prefix: "tenant_acme_corp__"},
		{given: "org-1/ws.2", prefix: "tenant_org_1_ws_2__"},
		{given: "a__b", prefix: "tenant_a__b__"},
		{given: strings.Repeat("x", 56), expect: "tenant_" + strings.Repeat("x", 56)},
		{given: strings.Repeat("x", 57), prefix: "tenant_xxxx"},
		{given: strings.Repeat("Z", 255), prefix: "tenant_zzzz"},
		{given: "-", prefix: "tenant___"},
	} {
		got, err := schema.Name(tc.given)
		require.NoError(t, err, tc.given)
		require.LessOrEqual(t, len(got), schema.MaxIdentifierLength, tc.given)
		require.Regexp(t, nameShape, got, tc.given)
		if tc.expect != "" {
			require.Equal(t, tc.expect, got, tc.given)
		} else {
			require.True(t, strings.HasPrefix(got, tc.prefix), "%q -> %q", tc.given, got)
			require.Contains(t, got, "__", "hashed names always carry the __ marker")
		}
	}
	_, err := schema.Name("bad id")
	require.ErrorIs(t, err, schema.ErrInvalidTenantID)
}

// TestNameHasNoCollisionsAcrossLookalikes maps ids that differ only in case or punctuation, which
// would collide under a naive lowercase-and-replace mapping.
func TestNameHasNoCollisionsAcrossLookalikes(t *testing.T) {
	t.Parallel()
	ids := []string{"acme_corp", "acme-corp", "acme.corp", "Acme_corp", "ACME_CORP", "acme/corp", "acme__corp",
		"acme_corp__0123456789ab", strings.Repeat("a", 60) + "1", strings.Repeat("a", 60) + "2"}
	seen := map[string]string{}
	for _, id := range ids {
		n, err := schema.Name(id)
		require.NoError(t, err)
		if prev, ok := seen[n]; ok {
			t.Fatalf("%q and %q both map to %q", prev, id, n)
		}
		seen[n] = id
	}
}

func FuzzName(f *testing.F) {
	for _, s := range []string{"acme", "Acme", "org-1/ws-2", "a__b", "..", "a b", "x;drop", "acme\n", "café", strings.Repeat("q", 300)} {
		f.Add(s, s+"x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		na, errA := schema.Name(a)
		if (errA == nil) != (schema.ValidateTenantID(a) == nil) {
			t.Fatalf("Name and ValidateTenantID disagree on %q", a)
		}
		if errA != nil {
			return
		}
		if len(na) > schema.MaxIdentifierLength || !nameShape.MatchString(na) {
			t.Fatalf("%q -> %q: not a safe identifier", a, na)
		}
		if again, _ := schema.Name(a); again != na {
			t.Fatalf("%q maps to %q then %q", a, na, again)
		}
		nb, errB := schema.Name(b)
		if errB == nil && a != b && na == nb {
			t.Fatalf("%q and %q collide on %q", a, b, na)
		}
	})
}

func TestDatabaseName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given  string
		prefix string
	}{
		{given: "acme", prefix: "tmdb_acme_"},
		{given: "Acme", prefix: "tmdb_acme_"},
		{given: "org-1/ws.2", prefix: "tmdb_org_1_ws_2_"},
		{given: "-", prefix: "tmdb_"},
		{given: strings.Repeat("Z", 255), prefix: "tmdb_zzzz"},
		{given: strings.Repeat("x", 41) + "-" + strings.Repeat("y", 10), prefix: "tmdb_" + strings.Repeat("x", 41) + "_"},
	} {
		got, err := schema.DatabaseName("deployment1", tc.given)
		require.NoError(t, err, tc.given)
		require.LessOrEqual(t, len(got), schema.MaxIdentifierLength, tc.given)
		require.True(t, strings.HasPrefix(got, tc.prefix), "%q -> %q", tc.given, got)
		require.True(t, schema.IsDatabaseName(got), "%q -> %q", tc.given, got)
		require.Regexp(t, `\A[a-z_][a-z0-9_]{0,62}\z`, got, "the registry's shape")
		again, err := schema.DatabaseName("deployment1", tc.given)
		require.NoError(t, err)
		require.Equal(t, got, again, "deterministic")
		other, err := schema.DatabaseName("deployment2", tc.given)
		require.NoError(t, err)
		require.NotEqual(t, got, other, "another deployment on the same server derives another name")
	}
	// Lookalikes that share their readable part still differ.
	seen := map[string]string{}
	for _, id := range []string{"acme_corp", "acme-corp", "acme.corp", "Acme_corp", "ACME_CORP", "acme/corp", "acme__corp"} {
		n, err := schema.DatabaseName("d", id)
		require.NoError(t, err)
		if prev, ok := seen[n]; ok {
			t.Fatalf("%q and %q both map to %q", prev, id, n)
		}
		seen[n] = id
	}
	_, err := schema.DatabaseName("d", "bad id")
	require.ErrorIs(t, err, schema.ErrInvalidTenantID)
	_, err = schema.DatabaseName("", "acme")
	require.Error(t, err)
	for _, name := range []string{"tenant_acme", "tmdb_acme", "tmdb_acme_0123", "postgres", "tmdb_x_0123456789abcdef; drop"} {
		require.False(t, schema.IsDatabaseName(name), name)
	}
}
