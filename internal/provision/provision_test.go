package provision_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

func TestInitIsIdempotentAndPinsTheDimension(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)

	res, err := e.prov.Init(ctx, provision.InitParams{})
	require.NoError(t, err)
	require.Equal(t, provision.DefaultEmbeddingDimension, res.EmbeddingDimension)
	latest, err := schema.Latest(schema.TenantSet)
	require.NoError(t, err)
	require.Equal(t, latest, res.SharedVersion)

	_, err = e.prov.Init(ctx, provision.InitParams{EmbeddingDimension: 1536})
	var fe *registry.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "embedding_dimension", fe.Field)

	var typ string
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = 'tenantmem_shared.chunks'::regclass AND attname = 'embedding'`).Scan(&typ))
	require.Equal(t, "extensions.vector(384)", typ)
}

func TestCreateTenantInBothTiers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	latest, err := schema.Latest(schema.TenantSet)
	require.NoError(t, err)

	for _, tc := range []struct {
		id     string
		tier   registry.Tier
		schema string
	}{
		{"acme", registry.TierSchema, "tenant_acme"},
		{"Org-1/Workspace.2", registry.TierSchema, ""},
		{"small-co", registry.TierShared, schema.SharedSchema},
	} {
		res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: tc.id, Tier: tc.tier})
		require.NoError(t, err, tc.id)
		tn := res.Tenant
		require.Equal(t, registry.StatusActive, tn.Status)
		require.Equal(t, latest, tn.MigrationVersion)
		want, err := schema.Name(tc.id)
		require.NoError(t, err)
		if tc.tier == registry.TierShared {
			want = schema.SharedSchema
		}
		require.Equal(t, want, tn.SchemaName)
		if tc.schema != "" {
			require.Equal(t, tc.schema, tn.SchemaName)
		}

		// The key works, once, and resolves to this tenant.
		got, keyID, err := registry.Authenticate(ctx, e.router, res.Key.Key)
		require.NoError(t, err)
		require.Equal(t, tc.id, got.ID)
		require.Equal(t, res.Key.KeyID, keyID)

		// The schema holds the tenant tables at the latest version.
		var n int
		require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = $1
			AND tablename IN ('documents', 'chunks', 'search_history')`, tn.SchemaName).Scan(&n))
		require.Equal(t, 3, n)

		events, err := registry.AuditLog(ctx, e.pool, tc.id)
		require.NoError(t, err)
		require.Equal(t, []string{"create_started", "created"}, eventNames(events))
	}
}

func TestCreateTenantTwiceGivesExistsAndChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	first, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "dup", Tier: registry.TierSchema})
	require.NoError(t, err)
	for _, tier := range []registry.Tier{registry.TierSchema, registry.TierShared} {
		_, err = e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "dup", Tier: tier})
		require.ErrorIs(t, err, registry.ErrExists)
	}
	got, err := e.prov.GetTenant(ctx, "dup")
	require.NoError(t, err)
	require.Equal(t, first.Tenant, got)
	keys, err := e.prov.ListKeys(ctx, "dup")
	require.NoError(t, err)
	require.Len(t, keys, 1)
}

func TestConcurrentCreatesOfOneIDGiveOneTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	for _, tier := range []registry.Tier{registry.TierSchema, registry.TierShared} {
		id := "race-" + string(tier)
		const n = 6
		var (
			wg   sync.WaitGroup
			errs = make([]error, n)
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: tier})
			}()
		}
		wg.Wait()
		ok, exists := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, registry.ErrExists):
				exists++
			default:
				t.Fatalf("unexpected error: %v", err)
			}
		}
		require.Equal(t, 1, ok)
		require.Equal(t, n-1, exists)
		keys, err := e.prov.ListKeys(ctx, id)
		require.NoError(t, err)
		require.Len(t, keys, 1)
	}
}

func TestCreateTenantResumesAfterACrashAtEveryStep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	crash := errors.New("simulated crash")
	var crashAt sync.Map // tenant id -> step
	e := newEnv(t, func(_ context.Context, step, tenantID string) error {
		if s, ok := crashAt.Load(tenantID); ok && s == step {
			return crash
		}
		return nil
	})
	for _, tc := range []struct {
		step string
		tier registry.Tier
	}{
		{provision.StepCreateRegistered, registry.TierSchema},
		{provision.StepCreateSchema, registry.TierSchema},
		{provision.StepCreateMigrated, registry.TierSchema},
		{provision.StepCreateRegistered, registry.TierShared},
		{provision.StepCreateMigrated, registry.TierShared},
	} {
		id := strings.NewReplacer(":", "-").Replace(tc.step) + "-" + string(tc.tier)
		crashAt.Store(id, tc.step)
		_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: tc.tier})
		require.ErrorIs(t, err, crash)

		half, err := e.prov.GetTenant(ctx, id)
		require.NoError(t, err)
		require.Equal(t, registry.StatusProvisioning, half.Status, "a half-created tenant is never active")
		keys, err := e.prov.ListKeys(ctx, id)
		require.NoError(t, err)
		require.Empty(t, keys, "no key exists before the tenant is active")

		crashAt.Delete(id)
		res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: id, Tier: tc.tier})
		require.NoError(t, err, tc.step)
		require.Equal(t, registry.StatusActive, res.Tenant.Status)
		_, _, err = registry.Authenticate(ctx, e.router, res.Key.Key)
		require.NoError(t, err)
		events, err := registry.AuditLog(ctx, e.pool, id)
		require.NoError(t, err)
		require.Equal(t, []string{"create_started", "create_resumed", "created"}, eventNames(events))
	}
}

func TestInvalidInputIsRejectedAndWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	for _, tc := range []struct {
		name  string
		given provision.TenantCreateParams
		field string
	}{
		{"empty id", provision.TenantCreateParams{ID: "", Tier: registry.TierSchema}, "tenant_id"},
		{"256 chars", provision.TenantCreateParams{ID: strings.Repeat("a", 256), Tier: registry.TierSchema}, "tenant_id"},
		{"space", provision.TenantCreateParams{ID: "a b", Tier: registry.TierSchema}, "tenant_id"},
		{"sql", provision.TenantCreateParams{ID: "x;drop", Tier: registry.TierSchema}, "tenant_id"},
		{"traversal", provision.TenantCreateParams{ID: "../", Tier: registry.TierSchema}, "tenant_id"},
		{"trailing newline", provision.TenantCreateParams{ID: "acme\n", Tier: registry.TierShared}, "tenant_id"},
		{"unicode", provision.TenantCreateParams{ID: "café", Tier: registry.TierSchema}, "tenant_id"},
		{"unknown tier", provision.TenantCreateParams{ID: "ok", Tier: "gold"}, "tier"},
		{"empty tier", provision.TenantCreateParams{ID: "ok", Tier: ""}, "tier"},
		{"placement not a name", provision.TenantCreateParams{ID: "ok", Tier: registry.TierSchema, Placement: "Bad Name"}, "placement"},
		{"placement with a quote", provision.TenantCreateParams{ID: "ok", Tier: registry.TierDatabase, Placement: "x'y"}, "placement"},
		{"unknown placement", provision.TenantCreateParams{ID: "ok", Tier: registry.TierDatabase, Placement: "nowhere"}, "placement"},
	} {
		_, err := e.prov.CreateTenant(ctx, tc.given)
		var fe *registry.FieldError
		require.ErrorAs(t, err, &fe, tc.name)
		require.Equal(t, tc.field, fe.Field, tc.name)
	}
	tenants, err := e.prov.ListTenants(ctx, registry.TenantListParams{})
	require.NoError(t, err)
	require.Empty(t, tenants)
	var schemas int
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\_%'`).Scan(&schemas))
	require.Zero(t, schemas)

	for _, op := range []func() error{
		func() error { _, err := e.prov.GetTenant(ctx, "missing"); return err },
		func() error { _, err := e.prov.SuspendTenant(ctx, "missing"); return err },
		func() error { return e.prov.DeleteTenant(ctx, "missing") },
		func() error { _, err := e.prov.IssueKey(ctx, "missing"); return err },
		func() error { return e.prov.RevokeKey(ctx, "missing", "aaaaaaaaaaaaaaaa") },
	} {
		require.ErrorIs(t, op(), registry.ErrNotFound)
	}
}

func TestSuspendResumeAndKeysAreAnnounced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "t1", Tier: registry.TierSchema})
	require.NoError(t, err)
	other, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "t2", Tier: registry.TierShared})
	require.NoError(t, err)

	notes := listen(t, e.url)
	tn, err := e.prov.SuspendTenant(ctx, "t1")
	require.NoError(t, err)
	require.Equal(t, registry.StatusSuspended, tn.Status)
	require.Equal(t, registry.Notification{TenantID: "t1", Event: "suspended"}, next(t, notes))
	_, err = e.prov.SuspendTenant(ctx, "t1") // idempotent, no second announcement
	require.NoError(t, err)
	tn, err = e.prov.ResumeTenant(ctx, "t1")
	require.NoError(t, err)
	require.Equal(t, registry.StatusActive, tn.Status)
	require.Equal(t, registry.Notification{TenantID: "t1", Event: "resumed"}, next(t, notes))

	k2, err := e.prov.IssueKey(ctx, "t1")
	require.NoError(t, err)
	_, _, err = registry.Authenticate(ctx, e.router, k2.Key)
	require.NoError(t, err)
	// Another tenant's key id cannot be revoked through this tenant.
	require.ErrorIs(t, e.prov.RevokeKey(ctx, "t1", other.Key.KeyID), registry.ErrNotFound)
	require.NoError(t, e.prov.RevokeKey(ctx, "t1", res.Key.KeyID))
	require.Equal(t, registry.Notification{TenantID: "t1", Event: "key_revoked", KeyID: res.Key.KeyID}, next(t, notes))
	_, _, err = registry.Authenticate(ctx, e.router, res.Key.Key)
	require.ErrorIs(t, err, registry.ErrUnauthenticated)
	_, _, err = registry.Authenticate(ctx, e.router, other.Key.Key)
	require.NoError(t, err)

	// A key with a valid id and a wrong secret, or a malformed key, is refused.
	wrong := res.Key.Key[:len(res.Key.Key)-1] + "0"
	if wrong == res.Key.Key {
		wrong = res.Key.Key[:len(res.Key.Key)-1] + "1"
	}
	for _, k := range []string{k2.Key[:len(k2.Key)-1] + flip(k2.Key[len(k2.Key)-1]), "", "tm_", "Bearer x", wrong + "00"} {
		_, _, err = registry.Authenticate(ctx, e.router, k)
		require.ErrorIs(t, err, registry.ErrUnauthenticated, k)
	}
}

func flip(c byte) string {
	if c == '0' {
		return "1"
	}
	return "0"
}

func TestDeleteTenantRemovesOnlyItsDataAndResumes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	crash := errors.New("simulated crash")
	var crashAt sync.Map
	e := newEnv(t, func(_ context.Context, step, tenantID string) error {
		if s, ok := crashAt.Load(tenantID); ok && s == step {
			return crash
		}
		return nil
	})
	keys := map[string]string{}
	for _, tc := range []struct {
		id   string
		tier registry.Tier
	}{{"gone-schema", registry.TierSchema}, {"gone-shared", registry.TierShared}, {"stays", registry.TierShared}, {"stays-schema", registry.TierSchema}} {
		res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: tc.id, Tier: tc.tier})
		require.NoError(t, err)
		keys[tc.id] = res.Key.Key
		insertDocument(t, e.router, res.Tenant, "doc of "+tc.id)
	}
	notes := listen(t, e.url)

	for _, id := range []string{"gone-schema", "gone-shared"} {
		crashAt.Store(id, provision.StepDeleteMarked)
		require.ErrorIs(t, e.prov.DeleteTenant(ctx, id), crash)
		require.Equal(t, registry.Notification{TenantID: id, Event: "deleting"}, next(t, notes))
		tn, err := e.prov.GetTenant(ctx, id)
		require.NoError(t, err)
		require.Equal(t, registry.StatusDeleting, tn.Status)
		_, _, err = registry.Authenticate(ctx, e.router, keys[id])
		require.ErrorIs(t, err, registry.ErrUnauthenticated, "a tenant being deleted is unreachable")
		crashAt.Delete(id)

		require.NoError(t, e.prov.DeleteTenant(ctx, id))
		require.Equal(t, registry.Notification{TenantID: id, Event: "deleted"}, next(t, notes))
		_, err = e.prov.GetTenant(ctx, id)
		require.ErrorIs(t, err, registry.ErrNotFound)
		_, _, err = registry.Authenticate(ctx, e.router, keys[id])
		require.ErrorIs(t, err, registry.ErrUnauthenticated)
		events, err := registry.AuditLog(ctx, e.pool, id)
		require.NoError(t, err)
		require.Equal(t, []string{"create_started", "created", "delete_started", "delete_resumed", "deleted"}, eventNames(events))
		require.ErrorIs(t, e.prov.DeleteTenant(ctx, id), registry.ErrNotFound)
	}
	var exists bool
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'tenant_gone-schema' OR nspname = 'tenant_gone_schema')`).Scan(&exists))
	require.False(t, exists)
	// Superuser view: every row of the deleted shared tenant is gone, the others' rows stay.
	rows := map[string]int{}
	r, err := e.pool.Query(ctx, `SELECT owner_id, count(*) FROM tenantmem_shared.documents GROUP BY 1`)
	require.NoError(t, err)
	for r.Next() {
		var o string
		var n int
		require.NoError(t, r.Scan(&o, &n))
		rows[o] = n
	}
	require.NoError(t, r.Err())
	require.Equal(t, map[string]int{"stays": 1}, rows)
	stays, err := e.prov.GetTenant(ctx, "stays-schema")
	require.NoError(t, err)
	require.Equal(t, 1, countDocuments(t, e.router, stays))
}

func TestMigrateIsolatesFailuresAndResumes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var failFor sync.Map
	e := newEnv(t, func(_ context.Context, step, tenantID string) error {
		if _, ok := failFor.Load(tenantID); ok && step == provision.StepMigrateTenant {
			return errors.New("simulated failure")
		}
		return nil
	})
	latest, err := schema.Latest(schema.TenantSet)
	require.NoError(t, err)
	const n = 8
	for i := range n {
		_, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: fmt.Sprintf("m%d", i), Tier: registry.TierSchema})
		require.NoError(t, err)
	}
	_, err = e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "shared-one", Tier: registry.TierShared})
	require.NoError(t, err)

	// Put every tenant schema (and its registry record) back to version 0, as if a new migration
	// had been released.
	reset := func() {
		for i := range n {
			s, _ := schema.Name(fmt.Sprintf("m%d", i))
			_, err := e.pool.Exec(ctx, `DROP SCHEMA `+s+` CASCADE; CREATE SCHEMA `+s+` AUTHORIZATION `+provision.DefaultOwnerRole)
			require.NoError(t, err)
		}
		_, err := e.pool.Exec(ctx, `UPDATE tenantmem_control.tenants SET migration_version = 0 WHERE tier = 'schema'`)
		require.NoError(t, err)
	}
	reset()
	failFor.Store("m3", true)
	var last provision.MigrateProgress
	rep, err := e.prov.Migrate(ctx, provision.MigrateParams{Progress: func(p provision.MigrateProgress) { last = p }})
	require.NoError(t, err)
	require.Equal(t, n+1, rep.Schemas, "shared schema + schema-tier tenants")
	require.Len(t, rep.Failed, 1)
	require.Equal(t, "m3", rep.Failed[0].TenantID)
	require.Equal(t, n-1, rep.Applied)
	require.Equal(t, n+1, rep.Checked, "the shared schema and the tenants recorded behind")
	require.Equal(t, provision.MigrateProgress{Done: n + 1, Total: n + 1, Failed: 1}, last,
		"the tenants recorded behind, and the placement's shared schema (current: a version read)")

	failFor.Delete("m3")
	rep, err = e.prov.Migrate(ctx, provision.MigrateParams{})
	require.NoError(t, err)
	require.Empty(t, rep.Failed)
	require.Equal(t, 1, rep.Applied, "only the tenant that failed was behind")

	// A run cancelled part-way (a kill) is finished by the next run.
	reset()
	cctx, cancel := context.WithCancel(ctx)
	_, err = e.prov.Migrate(cctx, provision.MigrateParams{Progress: func(p provision.MigrateProgress) {
		if p.Done >= 3 {
			cancel()
		}
	}})
	cancel()
	require.Error(t, err)
	rep, err = e.prov.Migrate(ctx, provision.MigrateParams{})
	require.NoError(t, err)
	require.Empty(t, rep.Failed)
	require.Positive(t, rep.Applied)
	tenants, err := e.prov.ListTenants(ctx, registry.TenantListParams{})
	require.NoError(t, err)
	for _, tn := range tenants {
		require.Equal(t, latest, tn.MigrationVersion, tn.ID)
		if tn.Tier == registry.TierSchema {
			insertDocument(t, e.router, tn, "after migrate")
		}
	}

	// With nothing pending, migrate changes nothing.
	rep, err = e.prov.Migrate(ctx, provision.MigrateParams{})
	require.NoError(t, err)
	require.Zero(t, rep.Applied)
}

func eventNames(evs []registry.AuditEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Event)
	}
	return out
}

// listen subscribes to the registry channel on its own connection.
func listen(t *testing.T, url string) <-chan registry.Notification {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "LISTEN "+registry.Channel)
	require.NoError(t, err)
	ch := make(chan registry.Notification, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				return
			}
			var note registry.Notification
			require.NoError(t, jsonUnmarshal(n.Payload, &note))
			ch <- note
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = conn.Close(context.Background())
	})
	return ch
}

func next(t *testing.T, ch <-chan registry.Notification) registry.Notification {
	t.Helper()
	select {
	case n := <-ch:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no notification within 10s")
		return registry.Notification{}
	}
}

// inTenant runs fn in a transaction scoped to tn as the router does: search_path and owner set
// transaction-locally.
func inTenant(t *testing.T, pool *pgxpool.Pool, tn registry.Tenant, fn func(tx pgx.Tx) error) error {
	t.Helper()
	return pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `SELECT set_config('search_path', $1, true), set_config('tenantmem.owner_id', $2, true)`,
			pgx.Identifier{tn.SchemaName}.Sanitize()+", extensions", tn.ID)
		if err != nil {
			return err
		}
		return fn(tx)
	})
}

func insertDocument(t *testing.T, pool *pgxpool.Pool, tn registry.Tenant, name string) {
	t.Helper()
	require.NoError(t, inTenant(t, pool, tn, func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `INSERT INTO documents (owner_id, document_name, document_type) VALUES ($1, $2, 'text')`, tn.ID, name)
		return err
	}))
}

func countDocuments(t *testing.T, pool *pgxpool.Pool, tn registry.Tenant) int {
	t.Helper()
	var n int
	require.NoError(t, inTenant(t, pool, tn, func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), `SELECT count(*) FROM documents`).Scan(&n)
	}))
	return n
}

// TestConcurrentInitsOfOneCluster initialises several databases of one cluster at once: roles are
// cluster-wide, so their creation and grants race, and every init must still succeed.
func TestConcurrentInitsOfOneCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const n = 6
	provs := make([]*provision.Provisioner, n)
	for i := range provs {
		pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		provs[i], err = provision.New(provision.Config{Pool: pool})
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, p := range provs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = p.Init(ctx, provision.InitParams{})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

// TestRecreatedSharedTenantStartsEmpty re-creates a deleted shared-tier tenant after a row of its
// earlier incarnation landed late (a request still in flight during the delete commits after it):
// the new tenant must not see it.
func TestRecreatedSharedTenantStartsEmpty(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, nil)
	res, err := e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "again", Tier: registry.TierShared})
	require.NoError(t, err)
	insertDocument(t, e.router, res.Tenant, "first life")
	require.NoError(t, e.prov.DeleteTenant(ctx, "again"))
	// The late commit, written as the superuser since no key reaches a deleted tenant.
	_, err = e.pool.Exec(ctx, `INSERT INTO tenantmem_shared.documents (owner_id, document_name, document_type)
		VALUES ('again', 'late write', 'text')`)
	require.NoError(t, err)

	res, err = e.prov.CreateTenant(ctx, provision.TenantCreateParams{ID: "again", Tier: registry.TierShared})
	require.NoError(t, err)
	require.Zero(t, countDocuments(t, e.router, res.Tenant))
}
