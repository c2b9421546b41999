package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// prefixPattern is what a search prefix may hold: the characters of tenant ids.
var prefixPattern = regexp.MustCompile(`\A[A-Za-z0-9_./-]{0,255}\z`)

// keyIDPattern is the form of every key id (see registry.ParseKey).
var keyIDPattern = regexp.MustCompile(`\A[a-z0-9]{16}\z`)

type tenantRow struct {
	Tenant       registry.Tenant
	Usage        provision.Usage
	HasUsage     bool
	NoUsage      string
	LastActivity time.Time
}

type tenantsData struct {
	Prefix, After, Next string
	Latest              int64
	Rows                []tenantRow
	UsageErrors         map[string]string
}

func latestVersion() int64 {
	v, _ := schema.Latest(schema.TenantSet)
	return v
}

func (c *Console) tenants(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	prefix, after := q.Get("q"), q.Get("after")
	if !prefixPattern.MatchString(prefix) {
		c.fail(w, r, &registry.FieldError{Field: "q", Message: fmt.Sprintf(
			"%q is not the start of a tenant id: up to 255 of the letters a-z, A-Z, digits, '_', '.', '-' and '/'", prefix)})
		return
	}
	if after != "" {
		if err := schema.ValidateTenantID(after); err != nil {
			c.fail(w, r, &registry.FieldError{Field: "after", Message: err.Error()})
			return
		}
	}
	ctx := r.Context()
	// One more than a page tells whether there is a next one.
	ts, err := registry.SearchTenants(ctx, c.pool, registry.TenantSearchParams{Prefix: prefix, After: after, Limit: c.cfg.PageSize + 1})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	d := tenantsData{Prefix: prefix, After: after, Latest: latestVersion()}
	if len(ts) > c.cfg.PageSize {
		ts = ts[:c.cfg.PageSize]
		d.Next = ts[len(ts)-1].ID
	}
	uctx, cancel := context.WithTimeout(ctx, DefaultUsageTimeout)
	usage, errs := c.prov.UsageOf(uctx, ts)
	cancel()
	for name, err := range errs {
		if d.UsageErrors == nil {
			d.UsageErrors = map[string]string{}
		}
		d.UsageErrors[name] = err.Error()
	}
	for _, t := range ts {
		row := tenantRow{Tenant: t, LastActivity: t.UpdatedAt}
		if u, ok := usage[t.ID]; ok {
			row.Usage, row.HasUsage = u, true
			if u.UpdatedAt.After(row.LastActivity) {
				row.LastActivity = u.UpdatedAt
			}
		} else {
			row.NoUsage = noUsageReason(t, errs)
		}
		d.Rows = append(d.Rows, row)
	}
	c.render(w, r, http.StatusOK, "tenants", page{Title: "Tenants", Nav: "tenants", Data: d})
}

// noUsageReason says why a tenant's row has no size.
func noUsageReason(t registry.Tenant, errs map[string]error) string {
	switch {
	case t.Status != registry.StatusActive && t.Status != registry.StatusSuspended:
		return "no totals while " + string(t.Status)
	case t.Tier == registry.TierDatabase:
		return "in its own database: open the tenant"
	case errs[t.Location().Placement] != nil:
		return "placement unavailable"
	}
	return "schema older than the usage totals: run provisioner migrate"
}

type tenantData struct {
	Tenant   registry.Tenant
	Latest   int64
	Usage    provision.Usage
	HasUsage bool
	NoUsage  string
	Keys     []registry.APIKey
	Audit    []registry.AuditEvent
	Issued   *registry.IssuedKey
}

// tenantParam is the validated tenant id of the query or form.
func tenantParam(r *http.Request) (string, error) {
	id := r.FormValue("id")
	if err := schema.ValidateTenantID(id); err != nil {
		return "", &registry.FieldError{Field: "id", Message: fmt.Sprintf("%q: %v", id, err)}
	}
	return id, nil
}

func (c *Console) tenant(w http.ResponseWriter, r *http.Request) {
	id, err := tenantParam(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.showTenant(w, r, id, flashOf(r.URL.Query().Get("done")), nil)
}

// flashes are the messages a redirect after an action may ask for (by name: a URL never carries
// free text into the page).
var flashes = map[string]string{
	"suspended":   "Tenant suspended: the router answers 403 to its keys until it is resumed.",
	"resumed":     "Tenant resumed.",
	"key-revoked": "Key revoked: routers drop it from their caches at once.",
}

func flashOf(name string) string { return flashes[name] }

func (c *Console) showTenant(w http.ResponseWriter, r *http.Request, id, flash string, issued *registry.IssuedKey) {
	ctx := r.Context()
	t, err := c.prov.GetTenant(ctx, id)
	if err != nil {
		c.fail(w, r, notFound(id, err))
		return
	}
	d := tenantData{Tenant: t, Latest: latestVersion(), Issued: issued}
	uctx, cancel := context.WithTimeout(ctx, DefaultUsageTimeout)
	d.Usage, err = c.prov.TenantUsage(uctx, t)
	cancel()
	switch {
	case err == nil:
		d.HasUsage = true
	case errors.Is(err, registry.ErrNotFound):
		d.NoUsage = "no usage totals (" + string(t.Status) + ", schema version " + fmt.Sprint(t.MigrationVersion) + ")"
	default:
		d.NoUsage = "unavailable: " + err.Error()
	}
	if d.Keys, err = registry.ListKeys(ctx, c.pool, id); err != nil {
		c.fail(w, r, err)
		return
	}
	if d.Audit, err = registry.RecentAudit(ctx, c.pool, id, DefaultAuditRows); err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "tenant", page{Title: id, Nav: "tenants", Flash: flash, Data: d})
}

func notFound(id string, err error) error {
	if errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("tenant %q: %w", id, registry.ErrNotFound)
	}
	return err
}

// actions are the confirmable actions.
var actions = map[string]struct {
	title, text, button, path string
	danger, key               bool
}{
	"suspend": {"Suspend tenant", "Suspend %s? Its API keys stop working (403) until it is resumed; no data is lost.",
		"Suspend", "/console/tenant/suspend", true, false},
	"resume": {"Resume tenant", "Resume %s? Its API keys work again.", "Resume", "/console/tenant/resume", false, false},
	"issue-key": {"Issue an API key", "Issue a new API key for %s? Its secret is shown once, on the next page.",
		"Issue key", "/console/tenant/issue-key", false, false},
	"revoke-key": {"Revoke an API key", "Revoke key %[2]s of %[1]s? Requests with it fail at once; this cannot be undone.",
		"Revoke key", "/console/tenant/revoke-key", true, true},
}

type confirmData struct {
	Title, Text, Button, Action string
	TenantID, KeyID             string
	Danger                      bool
}

func (c *Console) confirm(w http.ResponseWriter, r *http.Request) {
	a, ok := actions[r.URL.Query().Get("action")]
	if !ok {
		c.fail(w, r, &registry.FieldError{Field: "action", Message: "want suspend, resume, issue-key or revoke-key"})
		return
	}
	id, err := tenantParam(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	keyID := ""
	if a.key {
		if keyID, err = keyParam(r); err != nil {
			c.fail(w, r, err)
			return
		}
	}
	if _, err := c.prov.GetTenant(r.Context(), id); err != nil {
		c.fail(w, r, notFound(id, err))
		return
	}
	d := confirmData{Title: a.title, Button: a.button, Action: a.path, TenantID: id, KeyID: keyID, Danger: a.danger}
	if a.key {
		d.Text = fmt.Sprintf(a.text, id, keyID)
	} else {
		d.Text = fmt.Sprintf(a.text, id)
	}
	c.render(w, r, http.StatusOK, "confirm", page{Title: a.title, Nav: "tenants", Data: d})
}

func keyParam(r *http.Request) (string, error) {
	k := r.FormValue("key_id")
	if !keyIDPattern.MatchString(k) {
		return "", &registry.FieldError{Field: "key_id", Message: "must be 16 characters of [a-z0-9]"}
	}
	return k, nil
}

// redirectTenant is the Post/Redirect/Get step after an action.
func redirectTenant(w http.ResponseWriter, r *http.Request, id, done string) {
	http.Redirect(w, r, "/console/tenant?id="+url.QueryEscape(id)+"&done="+done, http.StatusSeeOther)
}

func (c *Console) suspend(w http.ResponseWriter, r *http.Request) {
	c.setStatus(w, r, c.prov.SuspendTenant, "suspended")
}

func (c *Console) resume(w http.ResponseWriter, r *http.Request) {
	c.setStatus(w, r, c.prov.ResumeTenant, "resumed")
}

func (c *Console) setStatus(w http.ResponseWriter, r *http.Request, op func(context.Context, string) (registry.Tenant, error), done string) {
	id, err := tenantParam(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if _, err := op(r.Context(), id); err != nil {
		c.fail(w, r, notFound(id, err))
		return
	}
	redirectTenant(w, r, id, done)
}

// issueKey answers with the tenant's page holding the new secret: the one response that ever
// carries it (no redirect, so it is never in a URL; Cache-Control: no-store like every page).
func (c *Console) issueKey(w http.ResponseWriter, r *http.Request) {
	id, err := tenantParam(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	k, err := c.prov.IssueKey(r.Context(), id)
	if err != nil {
		c.fail(w, r, notFound(id, err))
		return
	}
	c.showTenant(w, r, id, "Key issued.", &k)
}

func (c *Console) revokeKey(w http.ResponseWriter, r *http.Request) {
	id, err := tenantParam(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	keyID, err := keyParam(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if err := c.prov.RevokeKey(r.Context(), id, keyID); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			err = fmt.Errorf("key %q of tenant %q: %w", keyID, id, registry.ErrNotFound)
		}
		c.fail(w, r, err)
		return
	}
	redirectTenant(w, r, id, "key-revoked")
}

type placementsData struct{ Placements []registry.Placement }

func (c *Console) placements(w http.ResponseWriter, r *http.Request) {
	ps, err := c.prov.ListPlacements(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "placements", page{Title: "Placements", Nav: "placements", Data: placementsData{Placements: ps}})
}

type operationRow struct {
	Op        registry.Operation
	Stalled   bool
	Rate, ETA string
}

type operationsData struct {
	Rows       []operationRow
	OtherKinds []string
}

// operationsRefresh is the reload interval of the operations page, in seconds.
const operationsRefresh = 5

func (c *Console) operations(w http.ResponseWriter, r *http.Request) {
	ops, err := registry.ListOperations(r.Context(), c.pool, registry.OperationListParams{Limit: 50})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	now := c.cfg.Now()
	d := operationsData{}
	seen := map[string]bool{registry.OperationMigrate: true}
	for _, op := range ops {
		row := operationRow{Op: op, Stalled: op.Stalled(now, c.cfg.StalledAfter), Rate: "–", ETA: "–"}
		end := op.UpdatedAt
		if el := end.Sub(op.StartedAt).Seconds(); el > 0 && op.Done > 0 {
			rate := float64(op.Done) / el
			row.Rate = fmt.Sprintf("%.3g %s/s", rate, op.Unit)
			if op.State == registry.OperationRunning && op.Total > op.Done && !row.Stalled {
				row.ETA = (time.Duration(float64(op.Total-op.Done)/rate) * time.Second).Round(time.Second).String()
			}
		}
		if op.State != registry.OperationRunning {
			row.ETA = "done in " + end.Sub(op.StartedAt).Round(time.Second).String()
		}
		if !seen[op.Kind] {
			seen[op.Kind] = true
			d.OtherKinds = append(d.OtherKinds, op.Kind)
		}
		d.Rows = append(d.Rows, row)
	}
	c.render(w, r, http.StatusOK, "operations", page{Title: "Operations", Nav: "operations", Refresh: operationsRefresh, Data: d})
}
