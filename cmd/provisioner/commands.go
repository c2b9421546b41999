package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

type initCmd struct {
	EmbeddingDimension  int    `name:"embedding-dimension" env:"TENANTMEM_EMBEDDING_DIMENSION" placeholder:"N" help:"Embedding dimension, fixed at the first init (default 384)."`
	RouterPassword      string `name:"router-password" env:"TENANTMEM_ROUTER_PASSWORD" placeholder:"PASSWORD" help:"Set the router role's password. Prefer the environment variable: a flag is visible in the process list."`
	LeakproofTextSearch bool   `name:"leakproof-text-search" env:"TENANTMEM_LEAKPROOF_TEXT_SEARCH" help:"Mark the full-text match operator LEAKPROOF in this database so text search can use its index under row-level security (see docs/memory.md)."`
}

func (cmd *initCmd) Run(rc *runContext) error {
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	res, err := prov.Init(rc.ctx, provision.InitParams{
		EmbeddingDimension:  cmd.EmbeddingDimension,
		RouterPassword:      cmd.RouterPassword,
		LeakproofTextSearch: cmd.LeakproofTextSearch,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(rc.stdout, "initialised: embedding dimension %d, control schema version %d, tenant schema version %d\n",
		res.EmbeddingDimension, res.ControlVersion, res.SharedVersion)
	return nil
}

type tenantCmd struct {
	Create      tenantCreateCmd      `cmd:"" help:"Create a tenant and its first API key (shown once)."`
	CreateBulk  tenantCreateBulkCmd  `cmd:"" name:"create-bulk" help:"Create many shared-tier tenants from a file of ids; their API keys go to a file."`
	List        tenantListCmd        `cmd:"" help:"List tenants, in tenant id order."`
	Show        tenantShowCmd        `cmd:"" help:"Show one tenant."`
	Delete      tenantDeleteCmd      `cmd:"" help:"Delete a tenant and all its data."`
	Suspend     tenantSuspendCmd     `cmd:"" help:"Suspend a tenant: the router answers 403 until it is resumed."`
	Resume      tenantResumeCmd      `cmd:"" help:"Resume a suspended tenant."`
	Backup      tenantBackupCmd      `cmd:"" help:"Write a tenant's archive (docs/archive.md) to a file or standard output."`
	Restore     tenantRestoreCmd     `cmd:"" help:"Restore a tenant from an archive, into any tier, under its id or another."`
	Move        tenantMoveCmd        `cmd:"" help:"Move a tenant to another tier while it serves (writes pause for an instant at the end)."`
	Limits      tenantLimitsCmd      `cmd:"" help:"Show or change a tenant's overrides of the router's limits (rate, requests in flight, quotas)."`
	Descendants tenantDescendantsCmd `cmd:"" help:"Create shared-tier tenants below a tenant (no keys: the parent's delegate keys act for them)."`
}

type tenantLimitsCmd struct {
	ID                string   `arg:"" name:"id" help:"Tenant id."`
	RequestsPerSecond *float64 `name:"requests-per-second" placeholder:"N" help:"Sustained requests per second (0: no limit)."`
	Burst             *int     `name:"burst" placeholder:"N" help:"Requests that may come at once above the rate (0: the rate rounded up)."`
	MaxConcurrent     *int     `name:"max-concurrent" placeholder:"N" help:"Requests in flight at once (0: no limit)."`
	MaxDocuments      *int64   `name:"max-documents" placeholder:"N" help:"Document quota (0: no quota)."`
	MaxChunks         *int64   `name:"max-chunks" placeholder:"N" help:"Chunk quota (0: no quota)."`
	MaxContentBytes   *int64   `name:"max-content-bytes" placeholder:"BYTES" help:"Quota of document content in bytes (0: no quota)."`
	Default           []string `name:"default" placeholder:"FIELD" help:"Return these overrides to the router's default (requests-per-second, burst, max-concurrent, max-documents, max-chunks, max-content-bytes)."`
	Reset             bool     `name:"reset" help:"Remove every override: the router's defaults apply."`
	JSON              bool     `name:"json" help:"Print JSON."`
}

func (cmd *tenantLimitsCmd) Run(rc *runContext) error {
	if err := checkTenantID(cmd.ID); err != nil {
		return err
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	l, err := prov.GetTenantLimits(rc.ctx, cmd.ID)
	if err != nil {
		return tenantError(cmd.ID, err)
	}
	changed := cmd.Reset || len(cmd.Default) > 0
	if cmd.Reset {
		l = registry.TenantLimits{}
	}
	for _, f := range cmd.Default {
		switch f {
		case "requests-per-second":
			l.RequestsPerSecond = nil
		case "burst":
			l.Burst = nil
		case "max-concurrent":
			l.MaxConcurrent = nil
		case "max-documents":
			l.MaxDocuments = nil
		case "max-chunks":
			l.MaxChunks = nil
		case "max-content-bytes":
			l.MaxContentBytes = nil
		default:
			return &registry.FieldError{Field: "default", Message: fmt.Sprintf("unknown limit %q", f)}
		}
	}
	set := func(dst, src any) {
		switch d := dst.(type) {
		case **float64:
			if v := src.(*float64); v != nil {
				*d, changed = v, true
			}
		case **int:
			if v := src.(*int); v != nil {
				*d, changed = v, true
			}
		case **int64:
			if v := src.(*int64); v != nil {
				*d, changed = v, true
			}
		}
	}
	set(&l.RequestsPerSecond, cmd.RequestsPerSecond)
	set(&l.Burst, cmd.Burst)
	set(&l.MaxConcurrent, cmd.MaxConcurrent)
	set(&l.MaxDocuments, cmd.MaxDocuments)
	set(&l.MaxChunks, cmd.MaxChunks)
	set(&l.MaxContentBytes, cmd.MaxContentBytes)
	if changed {
		if l, err = prov.SetTenantLimits(rc.ctx, cmd.ID, l); err != nil {
			return tenantError(cmd.ID, err)
		}
	}
	if cmd.JSON {
		return writeJSON(rc.stdout, l)
	}
	w := newTable(rc.stdout)
	show := func(name string, v any, isNil bool) {
		if isNil {
			fmt.Fprintf(w, "%s\tdefault\n", name)
			return
		}
		fmt.Fprintf(w, "%s\t%v\n", name, v)
	}
	deref := func(p any) (any, bool) {
		switch v := p.(type) {
		case *float64:
			if v == nil {
				return nil, true
			}
			return *v, false
		case *int:
			if v == nil {
				return nil, true
			}
			return *v, false
		case *int64:
			if v == nil {
				return nil, true
			}
			return *v, false
		}
		return nil, true
	}
	for _, f := range []struct {
		name string
		p    any
	}{
		{"requests per second", l.RequestsPerSecond}, {"burst", l.Burst}, {"max concurrent", l.MaxConcurrent},
		{"max documents", l.MaxDocuments}, {"max chunks", l.MaxChunks}, {"max content bytes", l.MaxContentBytes},
	} {
		v, isNil := deref(f.p)
		show(f.name, v, isNil)
	}
	return w.Flush()
}

type tenantCreateCmd struct {
	ID        string `name:"id" required:"" placeholder:"TENANT_ID" help:"Tenant id: 1-255 characters of [a-zA-Z0-9_.-], optionally in /-separated segments."`
	Tier      string `name:"tier" required:"" placeholder:"TIER" help:"shared, schema or database."`
	Placement string `name:"placement" placeholder:"NAME" help:"Placement (server) to create it on; default: the active placement taking the tier with the fewest tenants."`
	// TextSearchConfig is the tenant's text search configuration.
	TextSearchConfig string `name:"text-search-config" default:"english" placeholder:"NAME" help:"Text search configuration for indexing and queries: english (default), simple for mixed languages, or another of pg_catalog (german, french, ...). Fixed at creation."`
	JSON             bool   `name:"json" help:"Print JSON."`
}

func (cmd *tenantCreateCmd) Run(rc *runContext) error {
	// Validate before connecting, so bad input never waits on the database.
	if err := checkTenantID(cmd.ID); err != nil {
		return err
	}
	tier, err := registry.ParseTier(cmd.Tier)
	if err != nil {
		return err
	}
	if cmd.Placement != "" {
		if err := registry.ValidatePlacementName(cmd.Placement); err != nil {
			return err
		}
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	res, err := prov.CreateTenant(rc.ctx, provision.TenantCreateParams{ID: cmd.ID, Tier: tier, Placement: cmd.Placement,
		TextSearchConfig: cmd.TextSearchConfig})
	if err != nil {
		return tenantError(cmd.ID, err)
	}
	if cmd.JSON {
		return writeJSON(rc.stdout, res)
	}
	w := newTable(rc.stdout)
	writeTenant(w, res.Tenant)
	fmt.Fprintf(w, "key id\t%s\n", res.Key.KeyID)
	fmt.Fprintf(w, "api key\t%s\n", res.Key.Key)
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(rc.stdout, "The API key is shown only once: store it now.")
	return nil
}

type tenantListCmd struct {
	Limit int    `name:"limit" default:"100" help:"Page size, 1 to 1000."`
	After string `name:"after" placeholder:"TENANT_ID" help:"Start after this tenant id (the last one of the previous page)."`
	JSON  bool   `name:"json" help:"Print JSON: {tenants, next_after}."`
}

// tenantList is the JSON output of tenant list, the same shape as GET /v1/tenants.
type tenantList struct {
	Tenants   []registry.Tenant `json:"tenants"`
	NextAfter string            `json:"next_after,omitempty"`
}

func (cmd *tenantListCmd) Run(rc *runContext) error {
	if cmd.Limit < 1 || cmd.Limit > 1000 {
		return &registry.FieldError{Field: "limit", Message: "must be from 1 to 1000"}
	}
	if cmd.After != "" {
		if err := schema.ValidateTenantID(cmd.After); err != nil {
			return &registry.FieldError{Field: "after", Message: err.Error()}
		}
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	ts, err := prov.ListTenants(rc.ctx, registry.TenantListParams{After: cmd.After, Limit: cmd.Limit + 1})
	if err != nil {
		return err
	}
	out := tenantList{Tenants: ts}
	if len(ts) > cmd.Limit {
		out.Tenants, out.NextAfter = ts[:cmd.Limit], ts[cmd.Limit-1].ID
	}
	if out.Tenants == nil {
		out.Tenants = []registry.Tenant{}
	}
	if cmd.JSON {
		return writeJSON(rc.stdout, out)
	}
	w := newTable(rc.stdout)
	fmt.Fprintln(w, "ID\tTIER\tPLACEMENT\tSCHEMA\tSTATUS\tVERSION\tCREATED")
	for _, t := range out.Tenants {
		where := t.SchemaName
		if t.DatabaseName != "" {
			where = t.DatabaseName + "." + t.SchemaName
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", t.ID, t.Tier, t.PlacementID, where, t.Status, t.MigrationVersion,
			t.CreatedAt.UTC().Format(time.RFC3339))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if out.NextAfter != "" {
		fmt.Fprintf(rc.stderr, "more tenants: run again with --after %s\n", shellQuote(out.NextAfter))
	}
	return nil
}

type tenantShowCmd struct {
	ID   string `arg:"" name:"id" help:"Tenant id."`
	JSON bool   `name:"json" help:"Print JSON."`
}

func (cmd *tenantShowCmd) Run(rc *runContext) error {
	if err := checkTenantID(cmd.ID); err != nil {
		return err
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	t, err := prov.GetTenant(rc.ctx, cmd.ID)
	if err != nil {
		return tenantError(cmd.ID, err)
	}
	if cmd.JSON {
		return writeJSON(rc.stdout, t)
	}
	w := newTable(rc.stdout)
	writeTenant(w, t)
	fmt.Fprintf(w, "updated\t%s\n", t.UpdatedAt.UTC().Format(time.RFC3339))
	return w.Flush()
}

type tenantDeleteCmd struct {
	ID string `arg:"" name:"id" help:"Tenant id."`
}

func (cmd *tenantDeleteCmd) Run(rc *runContext) error {
	if err := checkTenantID(cmd.ID); err != nil {
		return err
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	if err := prov.DeleteTenant(rc.ctx, cmd.ID); err != nil {
		return tenantError(cmd.ID, err)
	}
	fmt.Fprintf(rc.stdout, "tenant %s deleted\n", cmd.ID)
	return nil
}

type tenantSuspendCmd struct {
	ID string `arg:"" name:"id" help:"Tenant id."`
}

func (cmd *tenantSuspendCmd) Run(rc *runContext) error {
	return setStatus(rc, cmd.ID, "suspended", (*provision.Provisioner).SuspendTenant)
}

type tenantResumeCmd struct {
	ID string `arg:"" name:"id" help:"Tenant id."`
}

func (cmd *tenantResumeCmd) Run(rc *runContext) error {
	return setStatus(rc, cmd.ID, "resumed", (*provision.Provisioner).ResumeTenant)
}

func setStatus(rc *runContext, id, done string,
	op func(*provision.Provisioner, context.Context, string) (registry.Tenant, error)) error {
	if err := checkTenantID(id); err != nil {
		return err
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	t, err := op(prov, rc.ctx, id)
	if err != nil {
		return tenantError(id, err)
	}
	fmt.Fprintf(rc.stdout, "tenant %s %s (status %s)\n", t.ID, done, t.Status)
	return nil
}

type keyCmd struct {
	Issue  keyIssueCmd  `cmd:"" help:"Issue another API key for a tenant (shown once)."`
	List   keyListCmd   `cmd:"" help:"List a tenant's API keys, without secrets."`
	Revoke keyRevokeCmd `cmd:"" help:"Revoke one of a tenant's API keys."`
}

type keyIssueCmd struct {
	ID                string `arg:"" name:"id" help:"Tenant id."`
	Delegate          bool   `name:"delegate" help:"The key may act for any tenant strictly below its own (router header Tenantmem-Act-As)."`
	CreateDescendants bool   `name:"create-descendants" help:"With --delegate: the router creates a missing descendant in the shared tier on first use."`
	JSON              bool   `name:"json" help:"Print JSON."`
}

func (cmd *keyIssueCmd) Run(rc *runContext) error {
	if err := checkTenantID(cmd.ID); err != nil {
		return err
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	k, err := prov.IssueKeyWith(rc.ctx, registry.KeyIssueParams{
		TenantID: cmd.ID, Delegate: cmd.Delegate, CreateDescendants: cmd.CreateDescendants,
	})
	if err != nil {
		return tenantError(cmd.ID, err)
	}
	if cmd.JSON {
		return writeJSON(rc.stdout, k)
	}
	w := newTable(rc.stdout)
	fmt.Fprintf(w, "tenant\t%s\n", k.TenantID)
	fmt.Fprintf(w, "key id\t%s\n", k.KeyID)
	if k.Delegate {
		fmt.Fprintf(w, "scopes\tdelegate%s\n", map[bool]string{true: ", create_descendants"}[k.CreateDescendants])
	}
	fmt.Fprintf(w, "api key\t%s\n", k.Key)
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(rc.stdout, "The API key is shown only once: store it now.")
	return nil
}

type keyListCmd struct {
	ID   string `arg:"" name:"id" help:"Tenant id."`
	JSON bool   `name:"json" help:"Print JSON: {keys}."`
}

func (cmd *keyListCmd) Run(rc *runContext) error {
	if err := checkTenantID(cmd.ID); err != nil {
		return err
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	ks, err := prov.ListKeys(rc.ctx, cmd.ID)
	if err != nil {
		return tenantError(cmd.ID, err)
	}
	if ks == nil {
		ks = []registry.APIKey{}
	}
	if cmd.JSON {
		return writeJSON(rc.stdout, map[string]any{"keys": ks})
	}
	w := newTable(rc.stdout)
	fmt.Fprintln(w, "KEY ID\tCREATED\tREVOKED\tSCOPES")
	for _, k := range ks {
		revoked := "-"
		if k.RevokedAt != nil {
			revoked = k.RevokedAt.UTC().Format(time.RFC3339)
		}
		scopes := "-"
		switch {
		case k.CreateDescendants:
			scopes = "delegate,create_descendants"
		case k.Delegate:
			scopes = "delegate"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", k.KeyID, k.CreatedAt.UTC().Format(time.RFC3339), revoked, scopes)
	}
	return w.Flush()
}

type keyRevokeCmd struct {
	ID    string `arg:"" name:"id" help:"Tenant id."`
	KeyID string `arg:"" name:"key-id" help:"Key id (the 16 characters after tm_)."`
}

func (cmd *keyRevokeCmd) Run(rc *runContext) error {
	if err := checkTenantID(cmd.ID); err != nil {
		return err
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	if err := prov.RevokeKey(rc.ctx, cmd.ID, cmd.KeyID); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return describe(err, "key %q of tenant %q not found", cmd.KeyID, cmd.ID)
		}
		return tenantError(cmd.ID, err)
	}
	fmt.Fprintf(rc.stdout, "key %s of tenant %s revoked\n", cmd.KeyID, cmd.ID)
	return nil
}

type migrateCmd struct {
	Parallelism int           `name:"parallelism" env:"TENANTMEM_MIGRATE_PARALLELISM" default:"4" placeholder:"N" help:"Schemas migrated at a time on each placement (default ${default})."`
	Verify      bool          `name:"verify" help:"Read every tenant schema's own version instead of trusting the registry's record (about 1 ms per schema, a connection per tenant database), and migrate any that is behind."`
	LockTimeout time.Duration `name:"lock-timeout" env:"TENANTMEM_MIGRATE_LOCK_TIMEOUT" default:"2s" placeholder:"DURATION" help:"How long a migration statement waits for a lock another session holds (a long search, a backup) before it rolls back and tries again later, so that it never queues a tenant's queries behind it for longer; a schema still blocked after 8 tries is reported as failed and the next run resumes it. 0 waits without bound (default ${default})."`
}

func (cmd *migrateCmd) Run(rc *runContext) error {
	if cmd.Parallelism < 1 {
		return &registry.FieldError{Field: "parallelism", Message: "must be at least 1"}
	}
	if cmd.LockTimeout < 0 {
		return &registry.FieldError{Field: "lock-timeout", Message: "must not be negative (0 waits without bound)"}
	}
	rc.parallelism = cmd.Parallelism
	rc.migrationLockTimeout = cmd.LockTimeout
	if cmd.LockTimeout == 0 {
		rc.migrationLockTimeout = -1 // provision.Config: negative is no bound, zero the default
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	progress := newProgress(rc.stderr, isTerminal(rc.stderr), "migrating", "schemas")
	rep, err := prov.Migrate(rc.ctx, provision.MigrateParams{Verify: cmd.Verify, Progress: func(m provision.MigrateProgress) {
		progress.update(m.Done, m.Total, fmt.Sprintf("%d failed", m.Failed))
	}})
	progress.finish()
	if err != nil {
		return err
	}
	fmt.Fprintf(rc.stdout, "migrated %d %s on %d %s to tenant version %d (control version %d) in %s: %d checked, %d updated, %d failed\n",
		rep.Schemas, plural(rep.Schemas, "schema", "schemas"), len(rep.Placements), plural(len(rep.Placements), "placement", "placements"),
		rep.LatestVersion, rep.ControlVersion, rep.Took.Round(time.Millisecond), rep.Checked, rep.Applied, len(rep.Failed))
	for _, pr := range rep.Placements {
		switch {
		case pr.Err != nil:
			fmt.Fprintf(rc.stdout, "placement %s not reached, %d %s skipped: %v\n", pr.Name, pr.Schemas,
				plural(pr.Schemas, "schema", "schemas"), pr.Err)
		case pr.Skipped:
			fmt.Fprintf(rc.stdout, "placement %s is %s, %d %s skipped\n", pr.Name, pr.State, pr.Schemas,
				plural(pr.Schemas, "schema", "schemas"))
		}
	}
	if len(rep.Failed) == 0 {
		return nil
	}
	skipped := 0
	for _, f := range rep.Failed {
		if f.Skipped {
			skipped++ // reported with its placement above
		}
	}
	if skipped < len(rep.Failed) {
		fmt.Fprintln(rc.stdout, "failed:")
		for _, f := range rep.Failed {
			if !f.Skipped {
				fmt.Fprintf(rc.stdout, "  %s (placement %s): %v\n", f.TenantID, f.Placement, f.Err)
			}
		}
	}
	if skipped > 0 {
		return fmt.Errorf("%d of %d schemas failed to migrate (%d of them on the placements skipped above: fix what their lines say, then run migrate again)",
			len(rep.Failed), rep.Schemas, skipped)
	}
	return fmt.Errorf("%d of %d schemas failed to migrate", len(rep.Failed), rep.Schemas)
}

// checkTenantID validates a tenant id before anything connects to the database.
func checkTenantID(id string) error {
	if err := schema.ValidateTenantID(id); err != nil {
		return &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	return nil
}

// tenantError gives the provisioner's domain errors a message that names the tenant; errors.Is
// still sees the sentinel, so the exit code stays 2.
func tenantError(id string, err error) error {
	switch {
	case errors.Is(err, registry.ErrNoPlacement):
		return err // names the placement and why
	case errors.Is(err, registry.ErrNotFound):
		return describe(err, "tenant %q not found", id)
	case errors.Is(err, registry.ErrExists):
		return describe(err, "tenant %q already exists", id)
	case errors.Is(err, registry.ErrConflict):
		return describe(err, "tenant %q is being provisioned or deleted; finish that first (tenant create or tenant delete again)", id)
	}
	return err
}

// describedError replaces the message of err, which errors.Is and errors.As still see.
type describedError struct {
	msg string
	err error
}

func (e *describedError) Error() string { return e.msg }
func (e *describedError) Unwrap() error { return e.err }

func describe(err error, format string, args ...any) error {
	return &describedError{msg: fmt.Sprintf(format, args...), err: err}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

func writeTenant(w io.Writer, t registry.Tenant) {
	fmt.Fprintf(w, "tenant\t%s\n", t.ID)
	fmt.Fprintf(w, "tier\t%s\n", t.Tier)
	fmt.Fprintf(w, "placement\t%s\n", t.PlacementID)
	if t.DatabaseName != "" {
		fmt.Fprintf(w, "database\t%s\n", t.DatabaseName)
	}
	fmt.Fprintf(w, "schema\t%s\n", t.SchemaName)
	fmt.Fprintf(w, "status\t%s\n", t.Status)
	fmt.Fprintf(w, "version\t%d\n", t.MigrationVersion)
	fmt.Fprintf(w, "created\t%s\n", t.CreatedAt.UTC().Format(time.RFC3339))
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// shellQuote quotes s for a copy-pasted shell command when it needs it.
func shellQuote(s string) string {
	if strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_.-/", r))
	}) < 0 {
		return s
	}
	return strconv.Quote(s)
}

type tenantDescendantsCmd struct {
	Parent    string   `arg:"" name:"parent" help:"The parent tenant id."`
	IDs       []string `arg:"" name:"id" help:"Tenant ids to create, each strictly below the parent (parent/...)."`
	Placement string   `name:"placement" help:"Placement to hold them (default: the placement policy's choice)."`
	JSON      bool     `name:"json" help:"Print JSON: {created, existing}."`
}

func (cmd *tenantDescendantsCmd) Run(rc *runContext) error {
	if err := checkTenantID(cmd.Parent); err != nil {
		return err
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	res, err := prov.CreateDescendants(rc.ctx, provision.DescendantsCreateParams{
		Parent: cmd.Parent, IDs: cmd.IDs, Placement: cmd.Placement,
	})
	if err != nil {
		return tenantError(cmd.Parent, err)
	}
	if cmd.JSON {
		return writeJSON(rc.stdout, res)
	}
	for _, id := range res.Created {
		fmt.Fprintf(rc.stdout, "created\t%s\n", id)
	}
	for _, id := range res.Existing {
		fmt.Fprintf(rc.stdout, "exists\t%s\n", id)
	}
	fmt.Fprintf(rc.stdout, "%d created, %d already registered, below %s\n", len(res.Created), len(res.Existing), cmd.Parent)
	return nil
}
