package client

import (
	"context"
	"iter"
	"net/http"
	"net/url"
	"time"
)

// Admin is a client of the provisioning API, authenticated with the admin token. Build it with
// [NewAdmin]. Safe for concurrent use.
type Admin struct{ c *conn }

// NewAdmin returns a client of the provisioning API at cfg.BaseURL with the admin token cfg.Token.
func NewAdmin(cfg Config) (*Admin, error) {
	c, err := newConn(cfg)
	if err != nil {
		return nil, err
	}
	return &Admin{c: c}, nil
}

// Tier says where a tenant's rows live.
type Tier string

// The tiers.
const (
	TierShared   Tier = "shared"   // one shared schema, rows tagged with the tenant's owner id
	TierSchema   Tier = "schema"   // its own schema
	TierDatabase Tier = "database" // its own database
)

// Status is a tenant's lifecycle state; only active tenants are served by the router.
type Status string

// The statuses.
const (
	StatusProvisioning Status = "provisioning"
	StatusActive       Status = "active"
	StatusSuspended    Status = "suspended"
	StatusDeleting     Status = "deleting"
)

// Tenant is a registry entry.
type Tenant struct {
	TenantID         string `json:"tenant_id"`
	Tier             Tier   `json:"tier"`
	SchemaName       string `json:"schema_name"`
	DatabaseName     string `json:"database_name,omitempty"`
	Placement        string `json:"placement"`
	Status           Status `json:"status"`
	MigrationVersion int64  `json:"migration_version"`
	// TextSearchConfig is the tenant's text search configuration (english, simple, ...).
	TextSearchConfig string    `json:"text_search_config,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// APIKey describes a key without its secret.
type APIKey struct {
	KeyID     string     `json:"key_id"`
	TenantID  string     `json:"tenant_id"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Delegate: the key may act for tenants strictly below its own ([Router.ActAs]).
	Delegate bool `json:"delegate"`
	// CreateDescendants: the router creates a missing descendant (shared tier) on first use.
	CreateDescendants bool `json:"create_descendants"`
}

// KeyIssueParams are the scopes of a new key (see [APIKey]); CreateDescendants requires Delegate.
type KeyIssueParams struct {
	Delegate          bool `json:"delegate"`
	CreateDescendants bool `json:"create_descendants"`
}

// DescendantsCreateResult is the answer of [Admin.CreateDescendants].
type DescendantsCreateResult struct {
	Created  []string `json:"created"`
	Existing []string `json:"existing"`
}

// IssuedKey is a new key; Key is the clear key ("tm_..."), shown this once and never again.
type IssuedKey struct {
	APIKey
	Key string `json:"api_key"`
}

// TenantCreateParams is the body of POST /v1/tenants.
type TenantCreateParams struct {
	// TenantID is 1-255 characters of [a-zA-Z0-9_.-], optionally in /-separated segments.
	TenantID  string `json:"tenant_id"`
	Tier      Tier   `json:"tier"`
	Placement string `json:"placement,omitempty"`
	// TextSearchConfig is the text search configuration for indexing and queries: english (the
	// default), simple for mixed languages, or another of PostgreSQL's. Fixed at creation.
	TextSearchConfig string `json:"text_search_config,omitempty"`
}

// TenantCreateResult is a new tenant and its first API key.
type TenantCreateResult struct {
	Tenant Tenant    `json:"tenant"`
	APIKey IssuedKey `json:"api_key"`
}

// TenantListParams pages through the tenants in id order. Zero values take the server's
// defaults (100 per page, from the start).
type TenantListParams struct {
	Limit int    // 1-1000
	After string // the NextAfter of the previous page
}

// TenantListResult is one page of tenants; NextAfter, when set, is the After of the next page.
type TenantListResult struct {
	Tenants   []Tenant `json:"tenants"`
	NextAfter string   `json:"next_after,omitempty"`
}

type tenantResponse struct {
	Tenant Tenant `json:"tenant"`
}

type keyListResponse struct {
	Keys []APIKey `json:"keys"`
}

// CreateTenant creates a tenant and its first API key (ErrAlreadyExists when the id is taken).
func (a *Admin) CreateTenant(ctx context.Context, p TenantCreateParams) (*TenantCreateResult, error) {
	var res TenantCreateResult
	if _, err := a.c.call(ctx, http.MethodPost, []string{"v1", "tenants"}, nil, p, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// TenantBulkCreateParams is the body of POST /v1/bulk/tenants: many shared-tier tenants at once.
type TenantBulkCreateParams struct {
	// Tier must be TierShared.
	Tier Tier `json:"tier"`
	// TenantIDs are the new tenants' ids: valid and distinct, at most 10,000.
	TenantIDs []string `json:"tenant_ids"`
}

// TenantCreatedKey is a tenant created in bulk and its first API key, shown this once.
type TenantCreatedKey struct {
	TenantID string `json:"tenant_id"`
	KeyID    string `json:"key_id"`
	APIKey   string `json:"api_key"`
}

// TenantBulkCreateResult lists the created tenants with their keys, and the ids that existed
// already (left alone; POST /v1/tenants/{id}/keys issues them a key when needed).
type TenantBulkCreateResult struct {
	Created  int                `json:"created"`
	Existing []string           `json:"existing"`
	Tenants  []TenantCreatedKey `json:"tenants"`
}

// CreateTenants creates many shared-tier tenants in one call, all or none; ids that exist
// already are listed in Existing. Calling it again with the same ids after an error is safe.
func (a *Admin) CreateTenants(ctx context.Context, p TenantBulkCreateParams) (*TenantBulkCreateResult, error) {
	var res TenantBulkCreateResult
	if _, err := a.c.call(ctx, http.MethodPost, []string{"v1", "bulk", "tenants"}, nil, p, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// ListTenants returns one page of tenants.
func (a *Admin) ListTenants(ctx context.Context, p TenantListParams) (*TenantListResult, error) {
	q := url.Values{}
	setInt(q, "limit", p.Limit)
	setString(q, "after", p.After)
	var res TenantListResult
	if _, err := a.c.call(ctx, http.MethodGet, []string{"v1", "tenants"}, q, nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// AllTenants iterates over every tenant in id order, fetching pages of pageSize (0: the server's
// default) as it goes. It stops at the first error, which it yields.
func (a *Admin) AllTenants(ctx context.Context, pageSize int) iter.Seq2[Tenant, error] {
	return func(yield func(Tenant, error) bool) {
		p := TenantListParams{Limit: pageSize}
		for {
			page, err := a.ListTenants(ctx, p)
			if err != nil {
				yield(Tenant{}, err)
				return
			}
			for _, t := range page.Tenants {
				if !yield(t, nil) {
					return
				}
			}
			if page.NextAfter == "" {
				return
			}
			p.After = page.NextAfter
		}
	}
}

// GetTenant returns one tenant's registry entry.
func (a *Admin) GetTenant(ctx context.Context, tenantID string) (*Tenant, error) {
	var res Tenant
	if _, err := a.c.call(ctx, http.MethodGet, []string{"v1", "tenants", tenantID}, nil, nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// DeleteTenant deletes a tenant and all its data; its keys stop working at once.
func (a *Admin) DeleteTenant(ctx context.Context, tenantID string) error {
	_, err := a.c.call(ctx, http.MethodDelete, []string{"v1", "tenants", tenantID}, nil, nil, nil)
	return err
}

// SuspendTenant suspends a tenant: the router answers 403 (ErrForbidden) until it is resumed.
func (a *Admin) SuspendTenant(ctx context.Context, tenantID string) (*Tenant, error) {
	return a.setStatus(ctx, tenantID, "suspend")
}

// ResumeTenant resumes a suspended tenant.
func (a *Admin) ResumeTenant(ctx context.Context, tenantID string) (*Tenant, error) {
	return a.setStatus(ctx, tenantID, "resume")
}

func (a *Admin) setStatus(ctx context.Context, tenantID, action string) (*Tenant, error) {
	var res tenantResponse
	if _, err := a.c.call(ctx, http.MethodPost, []string{"v1", "tenants", tenantID, action}, nil, nil, &res); err != nil {
		return nil, err
	}
	return &res.Tenant, nil
}

// IssueKey issues another API key of the tenant; the clear key is in the result only.
func (a *Admin) IssueKey(ctx context.Context, tenantID string) (*IssuedKey, error) {
	var res IssuedKey
	if _, err := a.c.call(ctx, http.MethodPost, []string{"v1", "tenants", tenantID, "keys"}, nil, nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// IssueKeyWith issues another API key of the tenant with the scopes of p.
func (a *Admin) IssueKeyWith(ctx context.Context, tenantID string, p KeyIssueParams) (*IssuedKey, error) {
	var res IssuedKey
	if _, err := a.c.call(ctx, http.MethodPost, []string{"v1", "tenants", tenantID, "keys"}, nil, p, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// CreateDescendants registers shared-tier tenants below parent (1 to 1000 ids, each strictly
// below it), without keys: the parent's delegate keys act for them. Ids already registered are
// reported in Existing and left alone.
func (a *Admin) CreateDescendants(ctx context.Context, parent string, tenantIDs []string) (*DescendantsCreateResult, error) {
	var res DescendantsCreateResult
	body := map[string]any{"tenant_ids": tenantIDs}
	if _, err := a.c.call(ctx, http.MethodPost, []string{"v1", "tenants", parent, "descendants"}, nil, body, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// ListKeys lists the tenant's keys, newest first, without secrets.
func (a *Admin) ListKeys(ctx context.Context, tenantID string) ([]APIKey, error) {
	var res keyListResponse
	if _, err := a.c.call(ctx, http.MethodGet, []string{"v1", "tenants", tenantID, "keys"}, nil, nil, &res); err != nil {
		return nil, err
	}
	return res.Keys, nil
}

// RevokeKey revokes one key; the router refuses it within a second.
func (a *Admin) RevokeKey(ctx context.Context, tenantID, keyID string) error {
	_, err := a.c.call(ctx, http.MethodDelete, []string{"v1", "tenants", tenantID, "keys", keyID}, nil, nil, nil)
	return err
}

// Ready returns nil when the provisioning API is ready (GET /readyz answers 200).
func (a *Admin) Ready(ctx context.Context) error { return a.c.ready(ctx) }
