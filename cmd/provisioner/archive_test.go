package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// addDocuments writes n documents of about chunksPer leaf chunks each into a tenant, through the
// engine as the router would.
func addDocuments(t *testing.T, e *cliEnv, id string, n, chunksPer int) {
	t.Helper()
	ctx := context.Background()
	prov := e.provisioner(nil)
	tn, err := prov.GetTenant(ctx, id)
	require.NoError(t, err)
	b, err := embed.NewBuiltin(provision.DefaultEmbeddingDimension)
	require.NoError(t, err)
	engine, err := memory.New(memory.Config{Embedder: b})
	require.NoError(t, err)
	s := memory.Scope{Pool: e.pool(), Schema: tn.SchemaName, OwnerID: id}
	for i := range n {
		var sb strings.Builder
		for j := range chunksPer {
			fmt.Fprintf(&sb, "Paragraph %d of document %d talks about deploys, backups and the weather on day %d.\n\n", j, i, i*j)
		}
		_, err := engine.AddDocument(ctx, s, memory.DocumentAddParams{DocumentName: fmt.Sprintf("doc %d", i),
			DocumentType: "text", Content: sb.String(), Chunking: memory.ChunkingOptions{ChildSize: 24, ParentSize: 200}})
		require.NoError(t, err)
	}
}

// provisionerBinary builds this command into the test's temporary folder (the build cache
// makes every build after the first a link) and returns its path.
func provisionerBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "provisioner")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// TestDeployScripts drives deploy/backup-tenants.sh and deploy/restore-tenant.sh with the real
// binary: dated files, retention, --all with a hierarchical id, restore of the latest, exit codes.
func TestDeployScripts(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, true)
	for _, id := range []string{"acme", "org-1/ws.2", "small"} {
		e.ok("tenant", "create", "--id", id, "--tier", "shared")
	}
	addDocuments(t, e, "org-1/ws.2", 2, 3)
	bin := provisionerBinary(t)
	dir := t.TempDir()
	script := func(name string, args ...string) result {
		cmd := exec.Command("bash", append([]string{filepath.Join("..", "..", "deploy", name)}, args...)...)
		cmd.Env = []string{"PATH=" + filepath.Dir(bin) + ":" + os.Getenv("PATH"), "TENANTMEM_DATABASE_URL=" + e.url,
			"TENANTMEM_LOG_LEVEL=warn"}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			require.NoError(t, err)
		}
		t.Logf("%s %v -> %d\n%s%s", name, args, code, stdout.String(), stderr.String())
		return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	}
	files := func(tenant string) []string {
		es, _ := os.ReadDir(filepath.Join(dir, tenant))
		var out []string
		for _, e := range es {
			out = append(out, e.Name())
		}
		return out
	}

	for _, name := range []string{"backup-tenants.sh", "restore-tenant.sh"} {
		r := script(name, "--help")
		require.Equal(t, 0, r.code)
		require.Contains(t, r.stdout, "Exit codes")
		r = script(name, "--bogus")
		require.Equal(t, 2, r.code)
	}
	require.Equal(t, 2, script("backup-tenants.sh", "--all").code, "--dir is required")
	require.Equal(t, 2, script("backup-tenants.sh", "--dir", dir, "--keep", "x", "--all").code)

	r := script("backup-tenants.sh", "--dir", dir, "--keep", "1", "--all")
	require.Equal(t, 0, r.code, r.stderr)
	require.Len(t, files("org-1%2Fws.2"), 1)
	first := files("acme")[0]
	require.Regexp(t, `^acme-\d{8}T\d{6}Z\.tmarchive$`, first)
	time.Sleep(1100 * time.Millisecond)
	// One unknown tenant fails (exit 1), the others are still backed up; retention keeps one.
	r = script("backup-tenants.sh", "--dir", dir, "--keep", "1", "acme", "nobody", "org-1/ws.2")
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "nobody: backup failed")
	require.Len(t, files("acme"), 1)
	require.NotEqual(t, first, files("acme")[0], "the older archive was removed")
	require.Empty(t, files("nobody"))

	r = script("restore-tenant.sh", "--latest", dir, "org-1/ws.2", "--as", "restored", "--tier", "schema")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "restored", keyValues(r.stdout)["tenant"])
	require.Contains(t, keyValues(r.stdout)["restored"], "2 documents")
	r = script("restore-tenant.sh", "--latest", dir, "org-1/ws.2")
	require.Equal(t, 2, r.code, "exists without --replace: %s", r.stderr)
	r = script("restore-tenant.sh", "--latest", dir, "never-backed-up")
	require.Equal(t, 2, r.code)
	r = script("restore-tenant.sh", "--latest", dir, "org-1/ws.2", "--replace")
	require.Equal(t, 0, r.code, r.stderr)
}

func TestBackupAndRestoreCommands(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, true)
	e.ok("tenant", "create", "--id", "acme", "--tier", "shared")
	addDocuments(t, e, "acme", 3, 5)
	dir := t.TempDir()
	file := filepath.Join(dir, "acme.tmarchive")

	r := e.run("tenant", "backup", "acme", "--out", file)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "tenant acme backed up to "+file+": 3 documents")
	require.Contains(t, r.stderr, "rows/s")
	require.Contains(t, r.stderr, "ETA")
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(data, []byte("TENANTMEM-ARCHIVE\n")))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no partial file is left")

	// To standard output, and back from standard input.
	r = e.run("tenant", "backup", "acme", "-q")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, string(data[:18]), r.stdout[:18])
	var stdout, stderr syncBuffer
	m := &Main{Stdin: strings.NewReader(r.stdout), Stdout: &stdout, Stderr: &stderr, LookupEnv: mapEnv(e.env)}
	code := m.Run(context.Background(), []string{"--database-url", e.url, "tenant", "restore", "-", "--as", "acme-copy", "--tier", "schema"})
	require.Equal(t, 0, code, stderr.String())
	fields := keyValues(stdout.String())
	require.Equal(t, "acme-copy", fields["tenant"])
	require.Equal(t, "schema", fields["tier"])
	require.Contains(t, fields["restored"], "3 documents")
	require.True(t, strings.HasPrefix(fields["api key"], "tm_"))

	// A tenant id still being created: the provisioner's own words, naming it.
	e.ok("tenant", "create", "--id", "half", "--tier", "shared")
	_, err = e.pool().Exec(context.Background(), `UPDATE tenantmem_control.tenants SET status = 'provisioning' WHERE tenant_id = 'half'`)
	require.NoError(t, err)

	// Bad input exits 2 with one line naming the problem.
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"tenant", "restore", file}, `tenant "acme" already exists (shared, active); restore with --replace to overwrite it`},
		{[]string{"tenant", "restore", filepath.Join(dir, "missing")}, "file: open"},
		{[]string{"tenant", "restore", file, "--as", "half"}, `tenant "half" is being created; finish or delete it first`},
		{[]string{"tenant", "restore", file, "--as", "bad id"}, "tenant_id"},
		{[]string{"tenant", "restore", file, "--as", "x", "--tier", "gold"}, "tier"},
		{[]string{"tenant", "backup", "nobody"}, `tenant "nobody" not found`},
	} {
		r := e.run(tc.args...)
		require.Equal(t, 2, r.code, "%v: %s", tc.args, r.stderr)
		require.Contains(t, r.message(t), tc.msg)
	}
	for name, content := range map[string][]byte{
		"truncated": data[:len(data)/2],
		"foreign":   []byte("id,name\n1,acme\n"),
	} {
		bad := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(bad, content, 0o600))
		r := e.run("tenant", "restore", bad, "--as", "from-"+name)
		require.Equal(t, 2, r.code, r.stderr)
		require.Contains(t, r.message(t), bad+": ")
		r = e.run("tenant", "show", "from-"+name)
		require.Equal(t, 2, r.code, "nothing was created by a refused restore")
	}

	// --replace, then the original's rows again.
	out := e.ok("tenant", "restore", file, "--replace", "--tier", "schema")
	require.Equal(t, "schema", keyValues(out)["tier"])
	require.NotContains(t, out, "api key", "a replaced tenant keeps its keys")
}

// TestRestoreKilledWithSIGKILLIsFinishedByARerun runs the real binary, kills it with SIGKILL in
// the middle of loading rows, and reruns the restore: the tenant is never reachable in between,
// and the rerun ends with every row.
func TestRestoreKilledWithSIGKILLIsFinishedByARerun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newCLIEnv(t, true)
	e.ok("tenant", "create", "--id", "big", "--tier", "schema")
	addDocuments(t, e, "big", 40, 60)
	dir := t.TempDir()
	file := filepath.Join(dir, "big.tmarchive")
	e.ok("tenant", "backup", "big", "--out", file, "-q")
	prov := e.provisioner(nil)
	want, err := prov.GetTenant(ctx, "big")
	require.NoError(t, err)
	require.NoError(t, prov.DeleteTenant(ctx, "big"))

	bin := provisionerBinary(t)
	cmd := exec.Command(bin, "--database-url", e.url, "tenant", "restore", file)
	cmd.Env = []string{"TENANTMEM_LOG_LEVEL=warn", "PATH=" + os.Getenv("PATH")}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	pool := e.pool()
	// Kill it once some chunks are in, not all.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM tenant_big.chunks`).Scan(&n)
		if err == nil && n > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the restore never started loading: %s", out.String())
		time.Sleep(2 * time.Millisecond)
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	require.False(t, cmd.ProcessState.Success(), "killed before it finished: %s", out.String())

	tn, err := prov.GetTenant(ctx, "big")
	require.NoError(t, err)
	require.Equal(t, registry.StatusProvisioning, tn.Status)
	keys, err := prov.ListKeys(ctx, "big")
	require.NoError(t, err)
	require.Empty(t, keys, "no key reaches a half-restored tenant")

	out.Reset()
	r := e.run("tenant", "restore", file)
	require.Equal(t, 0, r.code, r.stderr)
	got, err := prov.GetTenant(ctx, "big")
	require.NoError(t, err)
	require.Equal(t, registry.StatusActive, got.Status)
	require.Equal(t, want.SchemaName, got.SchemaName)
	var docs, chunks int
	require.NoError(t, pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM tenant_big.documents), (SELECT count(*) FROM tenant_big.chunks)`).Scan(&docs, &chunks))
	require.Equal(t, 40, docs)
	require.Contains(t, keyValues(r.stdout)["restored"], fmt.Sprintf("%d chunks", chunks))
}

// TestMoveCommandKilledWithSIGKILLThenFinished moves a tenant with the real binary, kills it with
// SIGKILL while it copies, finds the tenant still served from its source, and finishes the move
// with a rerun; then moves it back and tries the bad inputs.
func TestMoveCommandKilledWithSIGKILLThenFinished(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newCLIEnv(t, true)
	e.ok("tenant", "create", "--id", "mover", "--tier", "shared")
	addDocuments(t, e, "mover", 30, 60)
	pool := e.pool()
	var wantChunks int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tenantmem_shared.chunks WHERE owner_id = 'mover'`).Scan(&wantChunks))

	bin := provisionerBinary(t)
	cmd := exec.Command(bin, "--database-url", e.url, "tenant", "move", "mover", "--tier", "schema")
	cmd.Env = []string{"TENANTMEM_LOG_LEVEL=warn", "PATH=" + os.Getenv("PATH")}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM tenant_mover.chunks`).Scan(&n)
		if err == nil && n > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the move never started copying: %s", out.String())
		time.Sleep(2 * time.Millisecond)
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	require.False(t, cmd.ProcessState.Success(), "killed before it finished: %s", out.String())

	prov := e.provisioner(nil)
	tn, err := prov.GetTenant(ctx, "mover")
	require.NoError(t, err)
	require.Equal(t, registry.TierShared, tn.Tier, "still served from its source")
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tenantmem_shared.chunks WHERE owner_id = 'mover'`).Scan(&n))
	require.Equal(t, wantChunks, n)

	// Another destination is refused while this move is unfinished; the rerun finishes it.
	r := e.run("tenant", "move", "mover", "--tier", "shared")
	require.Equal(t, 2, r.code, r.stderr)
	out2 := e.ok("tenant", "move", "mover", "--tier", "schema")
	require.Equal(t, "schema", keyValues(out2)["tier"])
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tenant_mover.chunks`).Scan(&n))
	require.Equal(t, wantChunks, n)
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tenantmem_shared.chunks WHERE owner_id = 'mover'`).Scan(&n))
	require.Zero(t, n, "the old copy is gone")

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"tenant", "move", "mover", "--tier", "schema"}, "already in the schema tier"},
		{[]string{"tenant", "move", "mover"}, "tier"},
		{[]string{"tenant", "move", "nobody", "--tier", "shared"}, `tenant "nobody" not found`},
		{[]string{"tenant", "move", "mover", "--abort"}, "has no move in progress"},
	} {
		r := e.run(tc.args...)
		require.Equal(t, 2, r.code, "%v: %s", tc.args, r.stderr)
		require.Contains(t, r.message(t), tc.msg)
	}
	e.ok("tenant", "suspend", "mover")
	r = e.run("tenant", "move", "mover", "--tier", "shared")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.message(t), "suspended")
}

func TestImportLLMemoryCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newCLIEnv(t, true)
	srcURL := pgtest.NewDatabase(t)
	ddl, err := os.ReadFile("../../internal/llmemory/testdata/llmemory_schema.sql")
	require.NoError(t, err)
	src, err := pgxpool.New(ctx, srcURL)
	require.NoError(t, err)
	defer src.Close()
	_, err = src.Exec(ctx, string(ddl))
	require.NoError(t, err)
	_, err = src.Exec(ctx, `INSERT INTO llmemory.documents (owner_id, id_at_origin, document_type, document_name) VALUES ('team-a', 'n1', 'text', 'Notes');
		INSERT INTO llmemory.document_chunks (document_id, chunk_index, content, content_hash, token_count)
		SELECT document_id, 0, 'Lunch at noon.', md5('Lunch at noon.'), 4 FROM llmemory.documents`)
	require.NoError(t, err)

	r := e.run("import-llmemory", "--source-url", srcURL, "--schema", "public", "--all-owners")
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.message(t), "not an llmemory database")
	r = e.run("import-llmemory", "--source-url", srcURL, "--owner", "team-a", "--all-owners")
	require.Equal(t, 2, r.code, r.stderr)

	out := e.ok("import-llmemory", "--source-url", srcURL, "--all-owners", "--prefix", "llm-", "--tier", "schema")
	require.Contains(t, out, "llm-team-a")
	require.Contains(t, out, "tm_", "the new tenant's key is shown once")
	require.Contains(t, out, "not carried over: vectors: no provider of dimension 384")
	tn, err := e.provisioner(nil).GetTenant(ctx, "llm-team-a")
	require.NoError(t, err)
	require.Equal(t, registry.TierSchema, tn.Tier)
	out = e.ok("import-llmemory", "--source-url", srcURL, "--owner", "team-a", "--as", "llm-team-a", "--json")
	require.Contains(t, out, `"skipped": 1`, "a rerun skips what is there")
}
