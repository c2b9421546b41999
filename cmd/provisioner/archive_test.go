package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/memory"
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

	// Bad input exits 2 with one line naming the problem.
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"tenant", "restore", file}, `tenant "(the archive's tenant)" already exists`},
		{[]string{"tenant", "restore", filepath.Join(dir, "missing")}, "file: open"},
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

	bin := filepath.Join(t.TempDir(), "provisioner")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())
	cmd := exec.Command(bin, "--database-url", e.url, "tenant", "restore", file)
	cmd.Env = []string{"TENANTMEM_LOG_LEVEL=warn", "PATH=" + os.Getenv("PATH")}
	var out bytes.Buffer
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
