package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// readKeys reads a keys file of tenant create-bulk.
func readKeys(t *testing.T, path string) []provision.TenantCreatedKey {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var keys []provision.TenantCreatedKey
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var k provision.TenantCreatedKey
		require.NoError(t, json.Unmarshal(sc.Bytes(), &k), sc.Text())
		keys = append(keys, k)
	}
	require.NoError(t, sc.Err())
	return keys
}

// TestTenantCreateBulk: ids from a file (or standard input) become shared-tier tenants whose
// keys are appended to a 0600 file, with progress on stderr; a rerun creates only the missing
// ids; a bad id anywhere creates nothing and names its line.
func TestTenantCreateBulk(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, true)
	dir := t.TempDir()
	ids := filepath.Join(dir, "ids.txt")
	keys := filepath.Join(dir, "keys.jsonl")
	require.NoError(t, os.WriteFile(ids, []byte("# customers\nacme\n\norg-1/ws-1\n  org-1/ws-2  \nbeta\nzeta\n"), 0o600))

	r := e.run("tenant", "create-bulk", "--ids-file", ids, "--keys-file", keys, "--batch-size", "2")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "created 5 shared tenants; keys appended to "+keys)
	require.Contains(t, r.stderr, "creating: 5/5 tenants (100%), 5 created")
	fi, err := os.Stat(keys)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	got := readKeys(t, keys)
	require.Len(t, got, 5)
	pool := e.pool()
	for _, k := range got {
		tn, keyID, err := registry.Authenticate(context.Background(), pool, k.APIKey)
		require.NoError(t, err)
		require.Equal(t, k.TenantID, tn.ID)
		require.Equal(t, k.KeyID, keyID)
		require.Equal(t, registry.TierShared, tn.Tier)
	}

	// Standard input, overlapping ids: one created, one listed, the file grows by one line.
	e.stdin = "acme\nomega\n"
	r = e.run("tenant", "create-bulk", "--ids-file", "-", "--keys-file", keys)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "created 1 shared tenants")
	require.Contains(t, r.stdout, "1 ids existed already")
	require.Contains(t, r.stdout, "  acme\n")
	require.Len(t, readKeys(t, keys), 6)

	// Bad input: exit 2, one line naming the problem, nothing created, no keys file.
	other := filepath.Join(dir, "none.jsonl")
	for _, tc := range []struct {
		given  string
		ids    string
		args   []string
		expect string
	}{
		{"an invalid id", "good\nbad id\n", nil, `ids-file: id 2 ("bad id")`},
		{"a repeated id", "one\ntwo\none\n", nil, `ids-file: id 3 ("one")`},
		{"no id", "# nothing\n\n", nil, "ids-file: holds no tenant id"},
		{"the schema tier", "x1\n", []string{"--tier", "schema"}, "tier: bulk creation takes the shared tier only"},
		{"a batch too large", "x1\n", []string{"--batch-size", "20000"}, "batch-size: must be from 1 to 10000"},
	} {
		e.stdin = tc.ids
		args := append([]string{"tenant", "create-bulk", "--ids-file", "-", "--keys-file", other}, tc.args...)
		r := e.run(args...)
		require.Equal(t, 2, r.code, tc.given)
		require.Contains(t, r.message(t), tc.expect, tc.given)
		_, err := os.Stat(other)
		require.ErrorIs(t, err, os.ErrNotExist, tc.given)
	}
	out := e.ok("tenant", "list", "--limit", "1000")
	require.Equal(t, 6, strings.Count(out, " shared "), out)
}
