//go:build chaos

package chaos_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// TestChaosLong is `make chaos`: every scenario for TENANTMEM_CHAOS_SECONDS (default 20), and a
// full disk: a schema-tier tenant's chunks live on a 2 MB tmpfs tablespace that its own writes
// fill; it gets 503 with Retry-After (SQLSTATE 53100 from the real server) while the load's
// tenants are served. Mounting needs root.
func TestChaosLong(t *testing.T) {
	secs := 20
	if v := os.Getenv("TENANTMEM_CHAOS_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "TENANTMEM_CHAOS_SECONDS")
		secs = n
	}
	runScenarios(t, time.Duration(secs)*time.Second, fault{name: "disk full (the tenant's chunks on a full 2 MB tablespace)", run: diskFull})
}

func diskFull(ctx context.Context, h *harness) {
	t := h.t
	require.Zero(t, os.Geteuid(), "the full-disk scenario mounts a tmpfs: run make chaos as root")
	// Not t.TempDir(): its parent is private to root, and the server runs as another user.
	dir, err := os.MkdirTemp("", "tenantmem-tiny-")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	require.NoError(t, os.Chmod(dir, 0o755))
	mnt := filepath.Join(dir, "tiny")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt).CombinedOutput()
	require.NoError(t, err, "mount: %s", out)
	defer func() {
		out, err := exec.Command("umount", mnt).CombinedOutput()
		require.NoError(t, err, "umount: %s", out)
	}()
	if u := cluster.RunAs(); u != "" {
		pu, err := user.Lookup(u)
		require.NoError(t, err)
		uid, _ := strconv.Atoi(pu.Uid)
		gid, _ := strconv.Atoi(pu.Gid)
		require.NoError(t, os.Chown(mnt, uid, gid))
	}
	bg := context.Background()
	ts := "tiny_" + h.db
	_, err = h.admin.Exec(bg, `CREATE TABLESPACE `+ts+` LOCATION '`+mnt+`'`)
	require.NoError(t, err)
	defer func() {
		_, err := h.admin.Exec(bg, `DROP TABLESPACE `+ts)
		require.NoError(t, err)
	}()
	// A tenant of its own, whose (empty) chunk table moves to the tiny tablespace; the load's
	// tenants go on beside it.
	res, err := h.prov.CreateTenant(bg, provision.TenantCreateParams{ID: "disk-full-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		Tier: registry.TierSchema})
	require.NoError(t, err)
	victim := tenant{id: res.Tenant.ID, key: res.Key.Key, tier: registry.TierSchema}
	chunks := pgx.Identifier{res.Tenant.SchemaName, "chunks"}.Sanitize()
	_, err = h.admin.Exec(bg, `ALTER TABLE `+chunks+` SET TABLESPACE `+ts+`, SET (autovacuum_enabled = false)`)
	require.NoError(t, err)
	defer func() {
		_, err := h.admin.Exec(bg, `ALTER TABLE `+chunks+` SET TABLESPACE pg_default, RESET (autovacuum_enabled)`)
		require.NoError(t, err)
	}()
	// Fill it with the tenant's own documents, smaller and smaller, until the server says the disk
	// is full even for a one-chunk document.
	for _, words := range []int{5000, 500, 50, 5} {
		content := strings.Repeat("filling the tiny tablespace with words. ", words)
		for i := 0; ctx.Err() == nil; i++ {
			a := h.call(victim, http.MethodPost, "/v1/documents", map[string]any{"document_name": fmt.Sprint("filler ", i),
				"document_type": "text", "content": content}, nil)
			h.current.add("POST /v1/documents (filling the disk)", a)
			if a.status == http.StatusServiceUnavailable {
				require.True(t, a.retryAfter)
				t.Logf("disk full for %d-word documents after %d: %s", words*6, i, a.body)
				break
			}
			require.Equal(t, http.StatusCreated, a.status, string(a.body))
		}
	}
	// Until the fault ends, the tenant keeps sending documents of a few chunks: the disk is full.
	content := strings.Repeat("a document that no longer fits on the full disk. ", 300)
	for ctx.Err() == nil {
		h.current.add("POST /v1/documents (full disk)", h.call(victim, http.MethodPost, "/v1/documents",
			map[string]any{"document_name": "late", "document_type": "text", "content": content}, nil))
		time.Sleep(50 * time.Millisecond)
	}
}
