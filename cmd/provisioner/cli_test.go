package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
	"github.com/tenantmem/tenantmem/internal/version"
)

func TestCommandsEndToEnd(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, false)
	ctx := context.Background()

	// init, twice: idempotent. The database URL may come from the environment.
	for range 2 {
		r := e.runEnv(with(e.env, "TENANTMEM_DATABASE_URL", e.url), "init")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "initialised: embedding dimension 384")
	}

	// tenant create, both tiers, plain and JSON.
	out := e.ok("tenant", "create", "--id", "acme", "--tier", "schema")
	fields := keyValues(out)
	require.Equal(t, "acme", fields["tenant"])
	require.Equal(t, "schema", fields["tier"])
	require.Equal(t, "tenant_acme", fields["schema"])
	require.Equal(t, "active", fields["status"])
	require.True(t, strings.HasPrefix(fields["api key"], "tm_"+fields["key id"]+"_"), out)
	require.Contains(t, out, "shown only once")
	acmeKey := fields["api key"]
	pool := e.pool()
	tn, _, err := registry.Authenticate(ctx, pool, acmeKey)
	require.NoError(t, err)
	require.Equal(t, "acme", tn.ID)

	var created provision.TenantCreateResult
	e.okJSON(&created, "tenant", "create", "--id", "org-1/ws.2", "--tier", "shared", "--json")
	require.Equal(t, "org-1/ws.2", created.Tenant.ID)
	require.Equal(t, registry.TierShared, created.Tenant.Tier)
	require.Equal(t, schema.SharedSchema, created.Tenant.SchemaName)
	require.NotEmpty(t, created.Key.Key)

	// tenant list: an aligned table.
	out = e.ok("tenant", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	require.Equal(t, []string{"ID", "TIER", "PLACEMENT", "SCHEMA", "STATUS", "VERSION", "CREATED"}, strings.Fields(lines[0]))
	require.Equal(t, []string{"acme", "schema", "local", "tenant_acme", "active"}, strings.Fields(lines[1])[:5])
	require.Equal(t, []string{"org-1/ws.2", "shared", "local", schema.SharedSchema, "active"}, strings.Fields(lines[2])[:5])
	col := strings.Index(lines[0], "TIER")
	require.Equal(t, "schema", lines[1][col:col+6], "columns are aligned")
	require.Equal(t, "shared", lines[2][col:col+6], "columns are aligned")

	var list tenantList
	e.okJSON(&list, "tenant", "list", "--json")
	require.Len(t, list.Tenants, 2)
	r := e.run("tenant", "list", "--limit", "1")
	require.Equal(t, 0, r.code)
	require.Len(t, strings.Split(strings.TrimSpace(r.stdout), "\n"), 2)
	require.Contains(t, r.stderr, "--after acme")
	e.okJSON(&list, "tenant", "list", "--after", "acme", "--json")
	require.Len(t, list.Tenants, 1)
	require.Equal(t, "org-1/ws.2", list.Tenants[0].ID)

	// tenant show.
	out = e.ok("tenant", "show", "org-1/ws.2")
	require.Equal(t, "shared", keyValues(out)["tier"])
	var shown registry.Tenant
	e.okJSON(&shown, "tenant", "show", "acme", "--json")
	require.Equal(t, "acme", shown.ID)
	require.Positive(t, shown.MigrationVersion)

	// suspend and resume.
	require.Contains(t, e.ok("tenant", "suspend", "acme"), "suspended")
	e.okJSON(&shown, "tenant", "show", "acme", "--json")
	require.Equal(t, registry.StatusSuspended, shown.Status)
	require.Contains(t, e.ok("tenant", "resume", "acme"), "resumed")
	e.okJSON(&shown, "tenant", "show", "acme", "--json")
	require.Equal(t, registry.StatusActive, shown.Status)

	// key issue, list, revoke.
	out = e.ok("key", "issue", "acme")
	require.Contains(t, out, "shown only once")
	issued := keyValues(out)
	_, _, err = registry.Authenticate(ctx, pool, issued["api key"])
	require.NoError(t, err)
	var k registry.IssuedKey
	e.okJSON(&k, "key", "issue", "acme", "--json")
	require.Equal(t, "acme", k.TenantID)

	out = e.ok("key", "list", "acme")
	require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 4, out) // header + 3 keys
	require.NotContains(t, out, "tm_")
	require.Contains(t, e.ok("key", "revoke", "acme", issued["key id"]), "revoked")
	_, _, err = registry.Authenticate(ctx, pool, issued["api key"])
	require.ErrorIs(t, err, registry.ErrUnauthenticated)
	var keys struct{ Keys []registry.APIKey }
	e.okJSON(&keys, "key", "list", "acme", "--json")
	require.Len(t, keys.Keys, 3)
	for _, key := range keys.Keys {
		require.Equal(t, key.KeyID == issued["key id"], key.RevokedAt != nil)
	}

	// migrate: nothing pending, a summary on stdout, no schema to visit. With --verify every
	// schema is read, with progress on stderr.
	r = e.run("--log-level", "info", "migrate", "--parallelism", "2")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "migrated 2 schemas")
	require.Contains(t, r.stdout, "1 checked, 0 updated, 0 failed")
	require.Contains(t, r.stderr, `"lock_timeout":"2s","lock_attempts":8`, "the default bound on lock waits")
	r = e.run("--log-level", "info", "migrate", "--verify", "--lock-timeout", "1500ms")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "2 checked, 0 updated, 0 failed")
	require.Contains(t, r.stderr, `"lock_timeout":"1.5s"`)
	require.NotContains(t, r.stderr, "deadlock_timeout")
	r = e.runEnv(with(e.env, "TENANTMEM_MIGRATE_LOCK_TIMEOUT", "0", "TENANTMEM_LOG_LEVEL", "info"), "--database-url", e.url, "migrate")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, `"lock_timeout":"none"`)
	// At or below the server's deadlock_timeout (1s) a blocking autovacuum is never cancelled for
	// the migration: it runs, with a warning.
	r = e.run("migrate", "--lock-timeout", "500ms")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, `"deadlock_timeout":"1s"`)
	_, err = pool.Exec(ctx, `UPDATE tenantmem_control.tenants SET migration_version = 1 WHERE tenant_id = 'acme'`)
	require.NoError(t, err)
	r = e.run("migrate")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "2 checked, 0 updated, 0 failed")
	require.Contains(t, r.stderr, "migrating: 2/2 schemas (100%), 0 failed", "the tenant recorded behind and the shared schema")

	// delete.
	require.Contains(t, e.ok("tenant", "delete", "acme"), "deleted")
	r = e.run("tenant", "show", "acme")
	require.Equal(t, 2, r.code)
	require.Equal(t, `provisioner: tenant "acme" not found`, r.message(t))
	_, _, err = registry.Authenticate(ctx, pool, acmeKey)
	require.ErrorIs(t, err, registry.ErrUnauthenticated)
	e.okJSON(&list, "tenant", "list", "--json")
	require.Len(t, list.Tenants, 1)
}

func TestBadInputExitsWithTwo(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, true)
	prov := e.provisioner(nil)
	ctx := context.Background()
	alpha, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "alpha", Tier: registry.TierShared})
	require.NoError(t, err)
	beta, err := prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "beta", Tier: registry.TierSchema})
	require.NoError(t, err)
	// A tenant stuck in provisioning: the state in which suspend, resume and key issue conflict.
	crash := errors.New("simulated crash")
	_, err = e.provisioner(func(_ context.Context, step, _ string) error {
		if step == provision.StepCreateRegistered {
			return crash
		}
		return nil
	}).CreateTenant(ctx, provision.TenantCreateParams{ID: "half", Tier: registry.TierSchema})
	require.ErrorIs(t, err, crash)

	type tc struct {
		given  string
		env    map[string]string // nil: the default environment
		args   []string          // without --database-url unless noURL
		noURL  bool
		expect string // in the one-line message
	}
	cases := []tc{
		{given: "no command", expect: "expected one of"},
		{given: "an unknown command", args: []string{"frobnicate"}, expect: "unexpected argument frobnicate"},
		{given: "an unknown flag", args: []string{"tenant", "list", "--colour"}, expect: "unknown flag --colour"},
		{given: "no database URL", noURL: true, args: []string{"tenant", "list"}, expect: "missing flags: --database-url"},
		{given: "a malformed database URL", noURL: true, args: []string{"--database-url", "postgres://%zz", "tenant", "list"}, expect: "--database-url"},
		{given: "a bad log level", args: []string{"--log-level", "loud", "tenant", "list"}, expect: "--log-level"},
		{given: "a missing tier", args: []string{"tenant", "create", "--id", "x"}, expect: "missing flags: --tier"},
		{given: "a missing tenant id", args: []string{"tenant", "show"}, expect: "expected \"<id>\""},
		{given: "an unknown tier", args: []string{"tenant", "create", "--id", "x", "--tier", "gold"}, expect: `tier: unknown tier "gold"`},
		{given: "an unknown placement", args: []string{"tenant", "create", "--id", "x", "--tier", "database", "--placement", "nowhere"}, expect: `placement: unknown placement "nowhere"`},
		{given: "a placement that is not a name", args: []string{"tenant", "create", "--id", "x", "--tier", "schema", "--placement", "EU 1"}, expect: `placement: "EU 1" is not a placement name`},
		{given: "an unknown placement to show", args: []string{"placement", "show", "ghost"}, expect: `placement "ghost" not found`},
		{given: "an unknown placement to drain", args: []string{"placement", "drain", "ghost"}, expect: `placement "ghost" not found`},
		{given: "removing local", args: []string{"placement", "remove", "local"}, expect: "local is the control server"},
		{given: "adding local", args: []string{"placement", "add", "local", "--host", "h", "--database", "d"}, expect: "placement: local is the control server"},
		{given: "a placement without a host", args: []string{"placement", "add", "p2", "--database", "d"}, expect: "missing flags: --host"},
		{given: "a placement port out of range", args: []string{"placement", "add", "p2", "--host", "h", "--port", "0", "--database", "d"}, expect: "port: must be from 1 to 65535"},
		{given: "a placement host with options", args: []string{"placement", "add", "p2", "--host", "h dbname=x", "--database", "d"}, expect: "host: "},
		{given: "a placement of an unknown tier", args: []string{"placement", "add", "p2", "--host", "h", "--database", "d", "--tiers", "shared,gold"}, expect: `tiers: unknown tier "gold"`},
		{given: "a credentials file others can read", args: []string{"--placement-credentials", e.credentialsFile(0o644, "p2:provisioner:postgres:"), "tenant", "list"}, expect: "chmod 600"},
		{given: "a malformed credentials file", args: []string{"--placement-credentials", e.credentialsFile(0o600, "p2:provisioner"), "tenant", "list"}, expect: "line 1: want placement:login:user:password"},
		{given: "a missing credentials file", args: []string{"--placement-credentials", "/nonexistent/creds", "tenant", "list"}, expect: "no such file"},
		{given: "a duplicate id", args: []string{"tenant", "create", "--id", "alpha", "--tier", "schema"}, expect: `tenant "alpha" already exists`},
		{given: "a duplicate id in the other tier", args: []string{"tenant", "create", "--id", "beta", "--tier", "shared"}, expect: `tenant "beta" already exists`},
		{given: "an unknown tenant to show", args: []string{"tenant", "show", "ghost"}, expect: `tenant "ghost" not found`},
		{given: "an unknown tenant to delete", args: []string{"tenant", "delete", "ghost"}, expect: `tenant "ghost" not found`},
		{given: "an unknown tenant to suspend", args: []string{"tenant", "suspend", "ghost"}, expect: `tenant "ghost" not found`},
		{given: "an unknown tenant to resume", args: []string{"tenant", "resume", "ghost"}, expect: `tenant "ghost" not found`},
		{given: "an unknown tenant to issue a key", args: []string{"key", "issue", "ghost"}, expect: `tenant "ghost" not found`},
		{given: "an unknown tenant to list keys", args: []string{"key", "list", "ghost"}, expect: `tenant "ghost" not found`},
		{given: "another tenant's key", args: []string{"key", "revoke", "alpha", beta.Key.KeyID}, expect: "of tenant \"alpha\" not found"},
		{given: "suspending a tenant being provisioned", args: []string{"tenant", "suspend", "half"}, expect: `tenant "half" is being provisioned or deleted`},
		{given: "resuming a tenant being provisioned", args: []string{"tenant", "resume", "half"}, expect: `tenant "half" is being provisioned or deleted`},
		{given: "a key for a tenant being provisioned", args: []string{"key", "issue", "half"}, expect: `tenant "half" is being provisioned or deleted`},
		{given: "a page size of 0", args: []string{"tenant", "list", "--limit", "0"}, expect: "limit: must be from 1 to 1000"},
		{given: "a parallelism of 0", args: []string{"migrate", "--parallelism", "0"}, expect: "parallelism: must be at least 1"},
		{given: "a non-numeric parallelism from the environment", env: with(e.env, "TENANTMEM_MIGRATE_PARALLELISM", "many"), args: []string{"migrate"}, expect: "--parallelism"},
		{given: "a negative lock timeout", args: []string{"migrate", "--lock-timeout=-1s"}, expect: "lock-timeout: must not be negative"},
		{given: "a lock timeout without a unit from the environment", env: with(e.env, "TENANTMEM_MIGRATE_LOCK_TIMEOUT", "5"), args: []string{"migrate"}, expect: "--lock-timeout"},
		{given: "another embedding dimension", args: []string{"init", "--embedding-dimension", "1536"}, expect: "embedding_dimension: this deployment was initialised with dimension 384"},
		{given: "serve without an admin token", args: []string{"serve", "--listen", "127.0.0.1:0"}, expect: "TENANTMEM_ADMIN_TOKEN is required"},
		{given: "serve with a short admin token", env: with(e.env, "TENANTMEM_ADMIN_TOKEN", "short"), args: []string{"serve", "--listen", "127.0.0.1:0"}, expect: "at least 16 characters"},
	}
	for _, b := range []struct{ name, id string }{
		{"empty", ""}, {"256 characters", strings.Repeat("a", 256)}, {"space", "a b"}, {"semicolon", "x;drop"},
		{"traversal", "../"}, {"trailing newline", "acme\n"}, {"unicode", "café"},
	} {
		cases = append(cases,
			tc{given: "create with a tenant id: " + b.name, args: []string{"tenant", "create", "--id", b.id, "--tier", "schema"}, expect: "provisioner: tenant_id: invalid tenant id: "},
			tc{given: "show with a tenant id: " + b.name, args: []string{"tenant", "show", b.id}, expect: "provisioner: tenant_id: invalid tenant id: "},
			tc{given: "delete with a tenant id: " + b.name, args: []string{"tenant", "delete", b.id}, expect: "provisioner: tenant_id: invalid tenant id: "},
			tc{given: "key issue with a tenant id: " + b.name, args: []string{"key", "issue", b.id}, expect: "provisioner: tenant_id: invalid tenant id: "},
		)
	}
	for _, c := range cases {
		args := c.args
		if !c.noURL {
			args = append([]string{"--database-url", e.url}, args...)
		}
		env := c.env
		if env == nil {
			env = e.env
		}
		r := e.runEnv(env, args...)
		require.Equal(t, 2, r.code, "%s: %s", c.given, r.stderr)
		msg := r.message(t)
		require.True(t, strings.HasPrefix(msg, "provisioner: "), "%s: %q", c.given, msg)
		require.Contains(t, msg, c.expect, c.given)
		require.Empty(t, r.stdout, c.given)
	}

	// Nothing changed: the three tenants, their keys, the tenant in provisioning.
	var list tenantList
	e.okJSON(&list, "tenant", "list", "--json")
	require.Len(t, list.Tenants, 3)
	for _, tn := range list.Tenants {
		want := registry.StatusActive
		if tn.ID == "half" {
			want = registry.StatusProvisioning
		}
		require.Equal(t, want, tn.Status, tn.ID)
	}
	for _, k := range []registry.IssuedKey{alpha.Key, beta.Key} {
		_, _, err := registry.Authenticate(ctx, e.pool(), k.Key)
		require.NoError(t, err)
	}
}

func TestOtherFailuresExitWithOne(t *testing.T) {
	t.Parallel()
	e := &cliEnv{t: t, env: map[string]string{}}
	down := closedPortURL(t)
	for _, args := range [][]string{
		{"tenant", "list"},
		{"tenant", "show", "acme"},
		{"tenant", "create", "--id", "acme", "--tier", "schema"},
		{"init"},
		{"migrate"},
	} {
		r := e.runEnv(nil, append([]string{"--database-url", down}, args...)...)
		require.Equal(t, 1, r.code, "%v: %s", args, r.stderr)
		msg := r.message(t)
		require.True(t, strings.HasPrefix(msg, "provisioner: "), msg)
		require.Contains(t, msg, "connect", msg)
	}

	// Commands before init fail with a pointer to init.
	e = newCLIEnv(t, false)
	r := e.run("tenant", "create", "--id", "acme", "--tier", "shared")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.message(t), "provisioner init")
}

func TestMigrateListsFailedTenantsAndExitsWithOne(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, true)
	for _, id := range []string{"good", "broken"} {
		e.ok("tenant", "create", "--id", id, "--tier", "schema")
	}
	// Lose a tenant's schema behind the provisioner's back: its migration fails.
	_, err := e.pool().Exec(context.Background(), `DROP SCHEMA tenant_broken CASCADE`)
	require.NoError(t, err)

	// Migrate trusts the registry's record of each schema's version: nothing looks behind.
	r := e.run("migrate")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "migrated 3 schemas on 1 placement to tenant version")
	require.Contains(t, r.stdout, "1 checked, 0 updated, 0 failed")

	// --verify reads every schema's own version and finds the lost one.
	r = e.run("migrate", "--verify")
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stdout, "migrated 3 schemas")
	require.Contains(t, r.stdout, "1 failed")
	require.Contains(t, r.stdout, "failed:\n  broken (placement local): ")
	require.NotContains(t, r.stdout, "  good ")
	require.Contains(t, r.stderr, "provisioner: 1 of 3 schemas failed to migrate")
}

func TestProgress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given       string
		tty         bool
		total       int
		expectLines int
		expectCR    bool
	}{
		{given: "a pipe, 40 schemas", total: 40, expectLines: 21},
		{given: "a pipe, 3 schemas", total: 3, expectLines: 3},
		{given: "a pipe, 1000 schemas", total: 1000, expectLines: 21},
		{given: "a terminal, 40 schemas", tty: true, total: 40, expectLines: 1, expectCR: true},
	} {
		var buf bytes.Buffer
		p := newProgress(&buf, tc.tty, "migrating", "schemas")
		clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		p.now = func() time.Time { clock = clock.Add(500 * time.Millisecond); return clock }
		for i := 1; i <= tc.total; i++ {
			p.update(i, tc.total, strconv.Itoa(i/10)+" failed")
		}
		p.finish()
		out := buf.String()
		require.Equal(t, tc.expectLines, strings.Count(out, "\n"), "%s: %q", tc.given, out)
		require.Equal(t, tc.expectCR, strings.Contains(out, "\r"), tc.given)
		lines := strings.Split(strings.TrimSuffix(strings.ReplaceAll(out, "\r", "\n"), "\n"), "\n")
		last := lines[len(lines)-1]
		took := time.Duration(tc.total-1) * 500 * time.Millisecond
		rate := fmt.Sprintf("%.1f/s", float64(tc.total)/took.Seconds())
		require.True(t, strings.HasSuffix(last, fmt.Sprintf("%d/%d schemas (100%%), %d failed, %s, took %s", tc.total, tc.total,
			tc.total/10, rate, took)), "%s: %q", tc.given, last)
		if tc.total > 3 {
			require.Contains(t, lines[len(lines)-2], ", ETA ", tc.given)
		}
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	e := &cliEnv{t: t}
	for _, tc := range []struct {
		given  []string
		expect []string
	}{
		{[]string{"--help"}, []string{"tenant create", "key revoke", "migrate", "serve", "$TENANTMEM_DATABASE_URL", "--version"}},
		{[]string{"tenant", "create", "--help"}, []string{"--id=TENANT_ID", "--tier=TIER", "--json"}},
		{[]string{"migrate", "--help"}, []string{"--parallelism=N", "$TENANTMEM_MIGRATE_PARALLELISM", "--lock-timeout=DURATION", "$TENANTMEM_MIGRATE_LOCK_TIMEOUT"}},
		{[]string{"serve", "--help"}, []string{"--listen=ADDR", "127.0.0.1:8081", "$TENANTMEM_PROVISIONER_LISTEN"}},
		{[]string{"init", "--help"}, []string{"--embedding-dimension=N", "$TENANTMEM_EMBEDDING_DIMENSION", "$TENANTMEM_ROUTER_PASSWORD"}},
	} {
		// Help needs no database URL and exits 0.
		r := e.runEnv(nil, tc.given...)
		require.Equal(t, 0, r.code, r.stderr)
		require.Empty(t, r.stderr)
		for _, want := range tc.expect {
			require.Contains(t, r.stdout, want, tc.given)
		}
	}
	// --version also needs no database URL: one line naming the build.
	r := e.runEnv(nil, "--version")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, version.Get().Line("provisioner")+"\n", r.stdout)
}

// keyValues parses the "key  value" lines of the plain output.
func keyValues(out string) map[string]string {
	kv := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		for _, k := range []string{"tenant", "tier", "schema", "status", "version", "created", "updated", "key id", "api key", "scopes",
			"requests per second", "burst", "max concurrent", "max documents", "max chunks", "max content bytes",
			"restored", "keys restored"} {
			if rest, ok := strings.CutPrefix(l, k+"  "); ok {
				kv[k] = strings.TrimSpace(rest)
			}
		}
	}
	return kv
}

// TestTenantLimitsCommand: `tenant limits` shows a tenant's overrides and changes them one by one.
func TestTenantLimitsCommand(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, true)
	e.ok("tenant", "create", "--id", "lim", "--tier", "shared")
	require.Equal(t, "default", keyValues(e.ok("tenant", "limits", "lim"))["requests per second"])
	out := e.ok("tenant", "limits", "lim", "--requests-per-second", "5", "--max-documents", "100")
	fields := keyValues(out)
	require.Equal(t, "5", fields["requests per second"])
	require.Equal(t, "100", fields["max documents"])
	require.Equal(t, "default", fields["burst"])
	var l registry.TenantLimits
	e.okJSON(&l, "tenant", "limits", "lim", "--max-concurrent", "0", "--default", "max-documents", "--json")
	require.Equal(t, 5.0, *l.RequestsPerSecond)
	require.Zero(t, *l.MaxConcurrent)
	require.Nil(t, l.MaxDocuments)
	e.okJSON(&l, "tenant", "limits", "lim", "--reset", "--json")
	require.True(t, l.IsZero())
	r := e.run("tenant", "limits", "lim", "--max-chunks=-3")
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, "max_chunks")
	r = e.run("tenant", "limits", "ghost")
	require.Equal(t, 2, r.code, r.stderr)
}

// TestDelegationCommands: key issue --delegate [--create-descendants] issues scoped keys (and
// refuses --create-descendants alone, naming the flag's field), key list shows the scopes, and
// tenant descendants creates shared-tier tenants below a parent, refusing ids outside it.
func TestDelegationCommands(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, true)
	ctx := context.Background()
	e.ok("tenant", "create", "--id", "acme", "--tier", "shared")

	var k registry.IssuedKey
	e.okJSON(&k, "key", "issue", "acme", "--delegate", "--create-descendants", "--json")
	require.True(t, k.Delegate)
	require.True(t, k.CreateDescendants)
	out := e.ok("key", "issue", "acme", "--delegate")
	require.Equal(t, "delegate", keyValues(out)["scopes"], out)
	r := e.run("key", "issue", "acme", "--create-descendants")
	require.Equal(t, 2, r.code, r.stderr) // invalid input
	require.Contains(t, r.stderr, "create_descendants: requires delegate")
	out = e.ok("key", "list", "acme")
	require.Contains(t, out, "delegate,create_descendants")
	require.Contains(t, out, "SCOPES")

	out = e.ok("tenant", "descendants", "acme", "acme/u-1", "acme/u-2")
	require.Contains(t, out, "2 created, 0 already registered, below acme")
	var res provision.DescendantsCreateResult
	e.okJSON(&res, "tenant", "descendants", "acme", "acme/u-2", "acme/u-3", "--json")
	require.Equal(t, []string{"acme/u-3"}, res.Created)
	require.Equal(t, []string{"acme/u-2"}, res.Existing)
	r = e.run("tenant", "descendants", "acme", "acmex/u-1")
	require.Equal(t, 2, r.code, r.stderr) // invalid input
	require.Contains(t, r.stderr, "tenant_ids[0]")
	_, err := registry.Get(ctx, e.pool(), "acmex/u-1")
	require.ErrorIs(t, err, registry.ErrNotFound)
	tn, err := registry.Get(ctx, e.pool(), "acme/u-3")
	require.NoError(t, err)
	require.Equal(t, registry.StatusActive, tn.Status)
}
