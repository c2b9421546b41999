package main

import (
	"context"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestPlacementCommands drives placements and the database tier through the CLI: add (with
// credentials from the environment, then from a file), list, show, a tenant on it, drain,
// disable, migrate, remove.
func TestPlacementCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newCLIEnv(t, true)
	second := pgtest.Second(t)
	u, err := url.Parse(second.NewDatabase(t))
	require.NoError(t, err)
	db := strings.TrimPrefix(u.Path, "/")
	s, err := registry.GetSettings(ctx, e.pool())
	require.NoError(t, err)
	pgtest.DropDatabasesOnCleanup(t, second.URL(), "tenantmem deployment "+s.DeploymentID+" ")
	pgtest.DropDatabasesOnCleanup(t, pgtest.ServerURL(), "tenantmem deployment "+s.DeploymentID+" ")
	add := []string{"placement", "add", "p2", "--host", second.Host(), "--port", strconv.Itoa(second.Port()), "--database", db}

	// Without credentials for the provisioner on p2 (and no passfile): refused, naming it.
	r := e.run(add...)
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.message(t), `placement "p2"`)
	require.Contains(t, r.message(t), "TENANTMEM_PLACEMENT_P2_PROVISIONER_PASSWORD")

	// Credentials from the environment.
	e.env = with(e.env, "TENANTMEM_PLACEMENT_P2_PROVISIONER_USER", "postgres", "TENANTMEM_PLACEMENT_P2_PROVISIONER_PASSWORD", "")
	out := e.ok(append(add, "--max-tenants", "5", "--description", "second server")...)
	require.Contains(t, out, "placement    p2")
	require.Contains(t, out, "max tenants  5")
	out = e.ok("placement", "list")
	require.Regexp(t, `(?m)^local\s+active\s+0\s+-\s+shared,schema,database\s+\(the control server\)$`, out)
	require.Regexp(t, `(?m)^p2\s+active\s+0\s+5\s+shared,schema,database\s+`+second.Host()+`:`, out)
	var pl registry.Placement
	e.okJSON(&pl, "placement", "show", "p2", "--json")
	require.Equal(t, db, pl.Database)

	// A database-tier tenant there, and its place in tenant show and list.
	out = e.ok("tenant", "create", "--id", "acme", "--tier", "database", "--placement", "p2")
	require.Contains(t, out, "placement  p2")
	require.Regexp(t, `database\s+tmdb_acme_[0-9a-f]{16}`, out)
	out = e.ok("tenant", "list")
	require.Regexp(t, `acme\s+database\s+p2\s+tmdb_acme_[0-9a-f]{16}\.tenantmem_tenant\s+active`, out)

	// Drain: no new tenant there; disable: migrate skips it.
	require.Contains(t, e.ok("placement", "drain", "p2"), "placement p2 is draining (1 tenants)")
	r = e.run("tenant", "create", "--id", "beta", "--tier", "schema", "--placement", "p2")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.message(t), `placement "p2" is draining and takes no new tenants`)
	require.Contains(t, e.ok("placement", "disable", "p2"), "is disabled")
	r = e.run("migrate")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "migrated 3 schemas on 2 placements")
	require.Contains(t, r.stdout, "placement p2 is disabled, 2 schemas skipped")
	require.Contains(t, r.stderr, "migrating: 2/2 schemas (100%)", "the shared schemas; the tenant is recorded current")
	require.Regexp(t, `migrating: 2/2 schemas \(100%\), 0 failed, [0-9.]+/s, took `, r.stderr, "done/total, failures, rate")
	require.Contains(t, e.ok("placement", "activate", "p2"), "is active")

	// Unreachable (here: a login it refuses): skipped, counted as failed, exit 1, and no
	// empty list of failures.
	r = e.runEnv(with(e.env, "TENANTMEM_PLACEMENT_P2_PROVISIONER_USER", "nobody"), "--database-url", e.url, "migrate")
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stdout, "placement p2 not reached, 2 schemas skipped")
	require.Contains(t, r.stdout, `role "nobody" does not exist`, "what to fix")
	require.NotContains(t, r.stdout, "failed:")
	require.Contains(t, r.stderr, "1 of 3 schemas failed to migrate (1 of them on the placements skipped above: fix what their lines say, then run migrate again)")

	// Remove: refused while it holds a tenant.
	r = e.run("placement", "remove", "p2")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.message(t), "still holds 1 tenants")
	e.ok("tenant", "delete", "acme")

	// Credentials from a file instead; the file's user must work too.
	delete(e.env, "TENANTMEM_PLACEMENT_P2_PROVISIONER_USER")
	delete(e.env, "TENANTMEM_PLACEMENT_P2_PROVISIONER_PASSWORD")
	e.env = with(e.env, "TENANTMEM_PLACEMENT_CREDENTIALS", e.credentialsFile(0o600, "# test\np2:provisioner:postgres:\n"))
	e.ok(append(add, "--tiers", "shared,schema")...) // idempotent: updates the hints
	r = e.run("tenant", "create", "--id", "gamma", "--tier", "database", "--placement", "p2")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.message(t), "does not take the database tier")
	e.ok("tenant", "create", "--id", "gamma", "--tier", "schema", "--placement", "p2")
	e.ok("tenant", "delete", "gamma")
	require.Contains(t, e.ok("placement", "remove", "p2"), "placement p2 removed")

	// An unreachable server: exit 1, nothing registered.
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	r = e.run("placement", "add", "p2", "--host", "127.0.0.1", "--port", strconv.Itoa(port), "--database", db)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.message(t), `placement "p2": cannot connect`)
	out = e.ok("placement", "list")
	require.NotContains(t, out, "p2")
}
