package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantmem/tenantmem/api"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// Admin API limits and defaults.
const (
	// MinAdminTokenLength is the shortest accepted admin token, in bytes.
	MinAdminTokenLength = 16
	// DefaultTenantPageSize and MaxTenantPageSize bound GET /v1/tenants?limit=.
	DefaultTenantPageSize = 100
	MaxTenantPageSize     = 1000
	// readyTimeout bounds the database round trips of GET /readyz.
	readyTimeout = 3 * time.Second
)

// AdminConfig configures the provisioner's admin API, built by [NewAdmin].
type AdminConfig struct {
	// Provisioner does the work. Required.
	Provisioner *provision.Provisioner
	// Pool is the provisioner's pool, used by GET /readyz. Required.
	Pool *pgxpool.Pool
	// AdminToken is the bearer token every /v1 request must carry, at least
	// [MinAdminTokenLength] bytes. Required.
	AdminToken string
	// Logger, Registerer and BodyLimit are as in [Config]; BodyLimit defaults to
	// [DefaultBodyLimit] (1 MiB).
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	BodyLimit  int64
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c AdminConfig) WithDefaults() AdminConfig {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.BodyLimit = cmp.Or(c.BodyLimit, DefaultBodyLimit)
	return c
}

func (c AdminConfig) validate() error {
	switch {
	case c.Provisioner == nil:
		return errors.New("httpapi: AdminConfig.Provisioner is required")
	case c.Pool == nil:
		return errors.New("httpapi: AdminConfig.Pool is required")
	case c.AdminToken == "":
		return errors.New("httpapi: AdminConfig.AdminToken is required")
	case len(c.AdminToken) < MinAdminTokenLength:
		return fmt.Errorf("httpapi: the admin token must be at least %d characters", MinAdminTokenLength)
	case strings.TrimSpace(c.AdminToken) != c.AdminToken:
		return errors.New("httpapi: the admin token must not start or end with white space")
	}
	return nil
}

// NewAdmin returns the provisioner's HTTP API: the provisioning routes under /v1 (bearer admin
// token) plus the shared /healthz and /readyz (the database answers and `provisioner init` has
// run). Metrics are served by [MetricsHandler] on a listener of their own.
//
//	POST   /v1/tenants                          {tenant_id, tier, placement?} -> 201 {tenant, api_key}
//	GET    /v1/tenants?limit=&after=            -> {tenants, next_after?}
//	GET    /v1/tenants/{id}                     -> tenant
//	DELETE /v1/tenants/{id}                     -> 204
//	POST   /v1/tenants/{id}/suspend, /resume    -> {tenant}
//	POST   /v1/tenants/{id}/keys                {delegate?, create_descendants?} (body optional) -> 201 issued key (the clear key, once)
//	POST   /v1/tenants/{id}/descendants         {tenant_ids, placement?} -> 201 {created, existing}: shared-tier tenants below {id}, no keys
//	GET    /v1/tenants/{id}/keys                -> {keys}
//	DELETE /v1/tenants/{id}/keys/{key_id}       -> 204
//	GET    /v1/tenants/{id}/backup              -> the tenant archive, streamed (include_key_hashes, skip_search_history)
//	POST   /v1/tenants/restore                  archive body, streamed (as, tier, placement, replace) -> 201 or 200 {tenant, api_key?, rows, ...}
//	POST   /v1/tenants/{id}/move                {tier, placement?} -> 200 {tenant, from, rounds, write_pause_ns, ...}
//	POST   /v1/tenants/{id}/move/abort          -> 204 (a move that has not flipped is rolled back)
//	GET    /v1/tenants/{id}/limits              -> {limits}: the tenant's overrides (null: the router's default)
//	PUT    /v1/tenants/{id}/limits              {requests_per_second?, burst?, max_concurrent?, max_documents?,
//	                                             max_chunks?, max_content_bytes?} -> {limits}; absent or null
//	                                             fields take the router's default, 0 means no limit
//	POST   /v1/bulk/tenants                     {tier, tenant_ids} -> 201 {created, existing, tenants}
//	POST   /v1/placements                       {name, host, port, database, max_tenants?, tiers?, description?, router_password?} -> 201 placement
//	GET    /v1/placements                       -> {placements}
//	GET    /v1/placements/{name}                -> placement
//	POST   /v1/placements/{name}/drain, /disable, /activate -> {placement}
//	DELETE /v1/placements/{name}                -> 204; 409 while it holds tenants
//	GET    /openapi.json                        the description (api/provisioner.openapi.yaml) as JSON, no token needed
func NewAdmin(cfg AdminConfig) (*echo.Echo, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pool := cfg.Pool
	e, err := New(Config{
		Name:       "admin",
		Logger:     cfg.Logger,
		Registerer: cfg.Registerer,
		BodyLimit:  cfg.BodyLimit,
		// Archives are streamed, never held whole in memory, and may be any size.
		StreamRoutes: []string{"/v1/tenants/restore"},
		Ready: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, readyTimeout)
			defer cancel()
			_, err := registry.GetSettings(ctx, pool)
			if errors.Is(err, registry.ErrNotFound) {
				return provision.ErrNotInitialized
			}
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	a := &admin{prov: cfg.Provisioner, log: cfg.Logger}
	// The token check is route middleware rather than group middleware: an echo group with
	// middleware catches every unknown path below it, which would turn 405s into 404s.
	auth := requireToken(cfg.AdminToken)
	e.POST("/v1/tenants", a.createTenant, auth)
	e.GET("/v1/tenants", a.listTenants, auth)
	e.GET("/v1/tenants/:id", a.getTenant, auth)
	e.DELETE("/v1/tenants/:id", a.deleteTenant, auth)
	e.POST("/v1/tenants/:id/suspend", a.suspendTenant, auth)
	e.POST("/v1/tenants/:id/resume", a.resumeTenant, auth)
	e.POST("/v1/tenants/:id/keys", a.issueKey, auth)
	e.POST("/v1/tenants/:id/descendants", a.createDescendants, auth)
	e.GET("/v1/tenants/:id/keys", a.listKeys, auth)
	e.DELETE("/v1/tenants/:id/keys/:key_id", a.revokeKey, auth)
	e.GET("/v1/tenants/:id/backup", a.backupTenant, auth)
	e.POST("/v1/tenants/restore", a.restoreTenant, auth)
	e.POST("/v1/tenants/:id/move", a.moveTenant, auth)
	e.POST("/v1/tenants/:id/move/abort", a.abortMove, auth)
	e.GET("/v1/tenants/:id/limits", a.getLimits, auth)
	e.PUT("/v1/tenants/:id/limits", a.setLimits, auth)
	e.POST("/v1/bulk/tenants", a.createTenants, auth)
	e.POST("/v1/placements", a.addPlacement, auth)
	e.GET("/v1/placements", a.listPlacements, auth)
	e.GET("/v1/placements/:name", a.getPlacement, auth)
	e.DELETE("/v1/placements/:name", a.removePlacement, auth)
	e.POST("/v1/placements/:name/drain", a.placementState((*provision.Provisioner).DrainPlacement), auth)
	e.POST("/v1/placements/:name/disable", a.placementState((*provision.Provisioner).DisablePlacement), auth)
	e.POST("/v1/placements/:name/activate", a.placementState((*provision.Provisioner).ActivatePlacement), auth)
	if err := serveOpenAPI(e, api.ProvisionerJSON); err != nil {
		return nil, err
	}
	return e, nil
}

// requireToken admits requests carrying "Authorization: Bearer <token>". Both sides are hashed
// before the constant-time comparison, so neither content nor length leaks through timing.
func requireToken(token string) echo.MiddlewareFunc {
	want := sha256.Sum256([]byte(token))
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			scheme, cred, ok := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") || cred == "" {
				return WithMessage(registry.ErrUnauthenticated, "missing or malformed Authorization header; want: Bearer ADMIN_TOKEN")
			}
			got := sha256.Sum256([]byte(cred))
			if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				return WithMessage(registry.ErrUnauthenticated, "invalid admin token")
			}
			return next(c)
		}
	}
}

type admin struct {
	prov *provision.Provisioner
	log  *slog.Logger
}

// TenantCreateRequest is the body of POST /v1/tenants.
type TenantCreateRequest struct {
	TenantID  string `json:"tenant_id"`
	Tier      string `json:"tier"`
	Placement string `json:"placement,omitempty"`
	// TextSearchConfig is the tenant's text search configuration: english (default), simple
	// (mixed languages: no stemming, no stop words), or another configuration of pg_catalog.
	TextSearchConfig string `json:"text_search_config,omitempty"`
}

// TenantResponse is the body of suspend and resume.
type TenantResponse struct {
	Tenant registry.Tenant `json:"tenant"`
}

// TenantListResponse is the body of GET /v1/tenants. NextAfter, when set, is the after= of the
// next page.
type TenantListResponse struct {
	Tenants   []registry.Tenant `json:"tenants"`
	NextAfter string            `json:"next_after,omitempty"`
}

// KeyListResponse is the body of GET /v1/tenants/{id}/keys: the keys, newest first, no secrets.
type KeyListResponse struct {
	Keys []registry.APIKey `json:"keys"`
}

func (a *admin) createTenant(c echo.Context) error {
	var req TenantCreateRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	res, err := a.prov.CreateTenant(ctx, provision.TenantCreateParams{
		ID: req.TenantID, Tier: registry.Tier(req.Tier), Placement: req.Placement, TextSearchConfig: req.TextSearchConfig,
	})
	if err != nil {
		return tenantError(req.TenantID, err)
	}
	SetTenantID(ctx, res.Tenant.ID)
	c.Response().Header().Set(echo.HeaderLocation, "/v1/tenants/"+url.PathEscape(res.Tenant.ID))
	return c.JSON(http.StatusCreated, res)
}

func (a *admin) listTenants(c echo.Context) error {
	limit := DefaultTenantPageSize
	if s := c.QueryParam("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxTenantPageSize {
			return &registry.FieldError{Field: "limit", Message: fmt.Sprintf("must be an integer from 1 to %d", MaxTenantPageSize)}
		}
		limit = n
	}
	after := c.QueryParam("after")
	if after != "" {
		if err := schema.ValidateTenantID(after); err != nil {
			return &registry.FieldError{Field: "after", Message: err.Error()}
		}
	}
	// One more than asked tells whether another page exists, without an empty last page.
	ts, err := a.prov.ListTenants(c.Request().Context(), registry.TenantListParams{After: after, Limit: limit + 1})
	if err != nil {
		return err
	}
	res := TenantListResponse{Tenants: ts}
	if len(ts) > limit {
		res.Tenants = ts[:limit]
		res.NextAfter = ts[limit-1].ID
	}
	if res.Tenants == nil {
		res.Tenants = []registry.Tenant{}
	}
	return c.JSON(http.StatusOK, res)
}

func (a *admin) getTenant(c echo.Context) error {
	id, err := tenantParam(c)
	if err != nil {
		return err
	}
	t, err := a.prov.GetTenant(c.Request().Context(), id)
	if err != nil {
		return tenantError(id, err)
	}
	return c.JSON(http.StatusOK, t)
}

func (a *admin) deleteTenant(c echo.Context) error {
	id, err := tenantParam(c)
	if err != nil {
		return err
	}
	if err := a.prov.DeleteTenant(c.Request().Context(), id); err != nil {
		return tenantError(id, err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (a *admin) suspendTenant(c echo.Context) error {
	return a.setStatus(c, a.prov.SuspendTenant)
}

func (a *admin) resumeTenant(c echo.Context) error {
	return a.setStatus(c, a.prov.ResumeTenant)
}

func (a *admin) setStatus(c echo.Context, op func(context.Context, string) (registry.Tenant, error)) error {
	id, err := tenantParam(c)
	if err != nil {
		return err
	}
	t, err := op(c.Request().Context(), id)
	if err != nil {
		return tenantError(id, err)
	}
	return c.JSON(http.StatusOK, TenantResponse{Tenant: t})
}

// KeyIssueRequest is the optional body of POST /v1/tenants/{id}/keys: the new key's scopes.
type KeyIssueRequest struct {
	// Delegate lets the key act for any registered tenant strictly below its own, named in the
	// router's Tenantmem-Act-As header.
	Delegate bool `json:"delegate"`
	// CreateDescendants lets the router register a missing descendant in the shared tier on the
	// key's first request for it; it requires Delegate.
	CreateDescendants bool `json:"create_descendants"`
}

func (a *admin) issueKey(c echo.Context) error {
	id, err := tenantParam(c)
	if err != nil {
		return err
	}
	var req KeyIssueRequest
	if c.Request().ContentLength != 0 {
		// A body is optional (no body: a key without scopes), but when there is one it is read
		// as strictly as any other.
		if err := decodeJSON(c, &req); err != nil {
			var fe *registry.FieldError
			if !errors.As(err, &fe) || fe.Message != "must be a JSON object; the body is empty" {
				return err
			}
		}
	}
	k, err := a.prov.IssueKeyWith(c.Request().Context(), registry.KeyIssueParams{
		TenantID: id, Delegate: req.Delegate, CreateDescendants: req.CreateDescendants,
	})
	if err != nil {
		return tenantError(id, err)
	}
	return c.JSON(http.StatusCreated, k)
}

// DescendantsCreateRequest is the body of POST /v1/tenants/{id}/descendants.
type DescendantsCreateRequest struct {
	// TenantIDs are the new tenants, each strictly below {id}; 1 to 1000.
	TenantIDs []string `json:"tenant_ids"`
	// Placement names the server that will hold them; empty applies the default policy.
	Placement string `json:"placement,omitempty"`
}

func (a *admin) createDescendants(c echo.Context) error {
	id, err := tenantParam(c)
	if err != nil {
		return err
	}
	var req DescendantsCreateRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	res, err := a.prov.CreateDescendants(c.Request().Context(), provision.DescendantsCreateParams{
		Parent: id, IDs: req.TenantIDs, Placement: req.Placement,
	})
	if err != nil {
		return tenantError(id, err)
	}
	return c.JSON(http.StatusCreated, res)
}

func (a *admin) listKeys(c echo.Context) error {
	id, err := tenantParam(c)
	if err != nil {
		return err
	}
	ks, err := a.prov.ListKeys(c.Request().Context(), id)
	if err != nil {
		return tenantError(id, err)
	}
	if ks == nil {
		ks = []registry.APIKey{}
	}
	return c.JSON(http.StatusOK, KeyListResponse{Keys: ks})
}

// LimitsResponse is the body of GET and PUT /v1/tenants/{id}/limits.
type LimitsResponse struct {
	TenantID string                `json:"tenant_id"`
	Limits   registry.TenantLimits `json:"limits"`
}

func (a *admin) getLimits(c echo.Context) error {
	id, err := tenantParam(c)
	if err != nil {
		return err
	}
	l, err := a.prov.GetTenantLimits(c.Request().Context(), id)
	if err != nil {
		return tenantError(id, err)
	}
	return c.JSON(http.StatusOK, LimitsResponse{TenantID: id, Limits: l})
}

func (a *admin) setLimits(c echo.Context) error {
	id, err := tenantParam(c)
	if err != nil {
		return err
	}
	var l registry.TenantLimits
	if err := decodeJSON(c, &l); err != nil {
		return err
	}
	l, err = a.prov.SetTenantLimits(c.Request().Context(), id, l)
	if err != nil {
		return tenantError(id, err)
	}
	return c.JSON(http.StatusOK, LimitsResponse{TenantID: id, Limits: l})
}

// keyIDPattern is the form of every key id (see registry.ParseKey).
var keyIDPattern = regexp.MustCompile(`\A[a-z0-9]{16}\z`)

func (a *admin) revokeKey(c echo.Context) error {
	id, err := tenantParam(c)
	if err != nil {
		return err
	}
	keyID, err := pathParam(c, "key_id")
	if err != nil || !keyIDPattern.MatchString(keyID) {
		return &registry.FieldError{Field: "key_id", Message: "must be 16 characters of [a-z0-9]"}
	}
	if err := a.prov.RevokeKey(c.Request().Context(), id, keyID); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return WithMessage(err, fmt.Sprintf("key %q of tenant %q not found", keyID, id))
		}
		return tenantError(id, err)
	}
	return c.NoContent(http.StatusNoContent)
}

// pathParam returns a path parameter, unescaped exactly once. echo routes on the escaped path
// (URL.RawPath) when the request has one, so "org-1%2Fws-2" arrives as one parameter and is
// unescaped here; otherwise Go has already unescaped the path and the value is used as is.
func pathParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, nil
	}
	return url.PathUnescape(v)
}

// tenantParam is the validated tenant id of the path. It is recorded for the access log only once
// valid, so a log line never carries arbitrary client bytes as a tenant id.
func tenantParam(c echo.Context) (string, error) {
	id, err := pathParam(c, "id")
	if err != nil {
		return "", &registry.FieldError{Field: "tenant_id", Message: "invalid URL escaping"}
	}
	if err := schema.ValidateTenantID(id); err != nil {
		return "", &registry.FieldError{Field: "tenant_id", Message: err.Error()}
	}
	SetTenantID(c.Request().Context(), id)
	return id, nil
}

// tenantError gives the provisioner's domain errors a message that names the tenant.
func tenantError(id string, err error) error {
	switch {
	case errors.Is(err, registry.ErrNoPlacement):
		return err // names the placement and why
	case errors.Is(err, registry.ErrNotFound):
		return WithMessage(err, fmt.Sprintf("tenant %q not found", id))
	case errors.Is(err, registry.ErrExists):
		return WithMessage(err, fmt.Sprintf("tenant %q already exists", id))
	case errors.Is(err, registry.ErrConflict):
		return WithMessage(err, fmt.Sprintf("tenant %q is being provisioned or deleted; finish that first", id))
	}
	return err
}

// decodeJSON reads exactly one JSON object into v, rejecting unknown fields. Errors name the
// offending field when there is one ("body" otherwise); a body over the limit stays an
// *http.MaxBytesError (413).
func decodeJSON(c echo.Context, v any) error {
	_, err := readJSON(c, v)
	return err
}

// readJSON is decodeJSON that also returns the body's bytes.
//
// The body is first checked as a whole, strictly: valid UTF-8 (encoding/json would silently turn
// invalid bytes and lone surrogate escapes such as \ud800 into U+FFFD and store that), no
// duplicate member names (which could hide a value that the last one replaces), one complete
// JSON value. Each problem is a 400 naming the top-level field it is in, with its JSON pointer.
// Only then is it decoded into v. A failure to read the body is the client's (400, or 499 when it
// went away), never a database error.
//
// A body that passes all of that, which is nearly every body, is decoded in one pass
// (strictDecode: encoding/json's semantics with the checks built in, about 3x faster on a search
// with a 384-float query embedding than the three passes below); only a body it refuses takes the
// passes below, which say what is wrong exactly as before.
func readJSON(c echo.Context, v any) ([]byte, error) {
	req := c.Request()
	body, err := io.ReadAll(req.Body)
	if err != nil {
		var mb *http.MaxBytesError
		switch {
		case errors.As(err, &mb):
			return nil, err
		case req.Context().Err() != nil:
			return nil, fmt.Errorf("read body: %w", req.Context().Err())
		}
		return nil, &registry.FieldError{Field: "body", Message: "could not be read: " + err.Error()}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, &registry.FieldError{Field: "body", Message: "must be a JSON object; the body is empty"}
	}
	if jsonv2.Unmarshal(body, v, strictDecode) == nil {
		return body, nil
	}
	// Refused: decode again the slow way for the exact error. Whatever the first pass set in v is
	// set again from the same members, so v ends as encoding/json leaves it.
	syntaxOK := json.Valid(body)
	if syntaxOK {
		// Well-formed: now what encoding/json would let through silently.
		if err := checkJSON(body); err != nil {
			return nil, err
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &registry.FieldError{Field: "body", Message: "truncated JSON"}
		}
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			field, msg := describeTypeError(te)
			return nil, &registry.FieldError{Field: field, Message: msg}
		}
		// encoding/json reports unknown fields with an untyped error: `json: unknown field "x"`.
		if name, ok := strings.CutPrefix(err.Error(), `json: unknown field "`); ok {
			return nil, &registry.FieldError{Field: strings.TrimSuffix(name, `"`), Message: "unknown field"}
		}
		return nil, err
	}
	if !syntaxOK {
		// Decode accepted a prefix: something follows the object.
		return nil, &registry.FieldError{Field: "body", Message: "unexpected data after the JSON object"}
	}
	return body, nil
}

// strictDecode decodes a request body in one pass with encoding/json's semantics
// (jsonv1.DefaultOptionsV1: the same matching of names, merging and null handling) and the
// checks of readJSON built in: valid UTF-8, no duplicate names, no unknown fields, and nothing
// after the value (Unmarshal's own rule).
var strictDecode = jsonv2.JoinOptions(jsonv1.DefaultOptionsV1(), jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(false), jsonv2.RejectUnknownMembers(true))

// checkJSON validates a well-formed body as one strict JSON value (see readJSON) and names the
// top-level field of the first problem.
func checkJSON(body []byte) error {
	dec := jsontext.NewDecoder(bytes.NewReader(body))
	if err := dec.SkipValue(); err != nil {
		return jsonFieldError(err)
	}
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		return &registry.FieldError{Field: "body", Message: "unexpected data after the JSON object"}
	}
	return nil
}

// jsonFieldError turns a jsontext error into a FieldError naming the top-level member it is in.
func jsonFieldError(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return &registry.FieldError{Field: "body", Message: "truncated JSON"}
	}
	field, ptr := "body", ""
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		ptr = string(se.JSONPointer)
		if ptr != "" {
			// "/metadata/a/0" -> "metadata"; the pointer escapes "~" and "/" in names.
			top, _, _ := strings.Cut(strings.TrimPrefix(ptr, "/"), "/")
			field = strings.NewReplacer("~1", "/", "~0", "~").Replace(top)
			if len(field) > maxParamNameLength || !utf8.ValidString(field) {
				field = "body"
			}
		}
		msg := "invalid JSON: " + strings.TrimPrefix(se.Err.Error(), "jsontext: ")
		if ptr != "" {
			msg += " at " + ptr
		}
		return &registry.FieldError{Field: field, Message: msg}
	}
	return &registry.FieldError{Field: field, Message: "invalid JSON: " + strings.TrimPrefix(err.Error(), "jsontext: ")}
}

// PlacementAddRequest is the body of POST /v1/placements.
type PlacementAddRequest struct {
	Name       string `json:"name"`
	Host       string `json:"host"`
	Port       int    `json:"port"`
	Database   string `json:"database"`
	MaxTenants int    `json:"max_tenants,omitempty"`
	// Tiers defaults to all three.
	Tiers       []string `json:"tiers,omitempty"`
	Description string   `json:"description,omitempty"`
	// RouterPassword, when set, becomes the router role's password on that server.
	RouterPassword string `json:"router_password,omitempty"`
}

// PlacementResponse is the body of drain, disable and activate.
type PlacementResponse struct {
	Placement registry.Placement `json:"placement"`
}

// PlacementListResponse is the body of GET /v1/placements.
type PlacementListResponse struct {
	Placements []registry.Placement `json:"placements"`
}

func (a *admin) addPlacement(c echo.Context) error {
	var req PlacementAddRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if slices.Contains(req.Tiers, "") {
		return &registry.FieldError{Field: "tiers", Message: "an empty tier name: name shared, schema or database"}
	}
	tiers, err := registry.ParseTiers(strings.Join(req.Tiers, ","))
	if err != nil {
		return err
	}
	if req.Tiers != nil && len(req.Tiers) == 0 {
		return &registry.FieldError{Field: "tiers", Message: "must name at least one tier (or be left out: all three)"}
	}
	pl, err := a.prov.AddPlacement(c.Request().Context(), provision.PlacementAddParams{
		Name: req.Name, Host: req.Host, Port: req.Port, Database: req.Database, MaxTenants: req.MaxTenants,
		Tiers: tiers, Description: req.Description, RouterPassword: req.RouterPassword,
	})
	if err != nil {
		return placementError(req.Name, err)
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/placements/"+url.PathEscape(pl.Name))
	return c.JSON(http.StatusCreated, pl)
}

func (a *admin) listPlacements(c echo.Context) error {
	ps, err := a.prov.ListPlacements(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, PlacementListResponse{Placements: ps})
}

func (a *admin) getPlacement(c echo.Context) error {
	name, err := placementParam(c)
	if err != nil {
		return err
	}
	pl, err := a.prov.GetPlacement(c.Request().Context(), name)
	if err != nil {
		return placementError(name, err)
	}
	return c.JSON(http.StatusOK, pl)
}

func (a *admin) removePlacement(c echo.Context) error {
	name, err := placementParam(c)
	if err != nil {
		return err
	}
	if err := a.prov.RemovePlacement(c.Request().Context(), name); err != nil {
		return placementError(name, err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (a *admin) placementState(op func(*provision.Provisioner, context.Context, string) (registry.Placement, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		name, err := placementParam(c)
		if err != nil {
			return err
		}
		pl, err := op(a.prov, c.Request().Context(), name)
		if err != nil {
			return placementError(name, err)
		}
		return c.JSON(http.StatusOK, PlacementResponse{Placement: pl})
	}
}

// placementParam is the validated placement name of the path.
func placementParam(c echo.Context) (string, error) {
	name, err := pathParam(c, "name")
	if err != nil {
		return "", &registry.FieldError{Field: "placement", Message: "invalid URL escaping"}
	}
	if err := registry.ValidatePlacementName(name); err != nil {
		return "", err
	}
	return name, nil
}

// placementError names the placement of a not-found error; the others name it already.
func placementError(name string, err error) error {
	if errors.Is(err, registry.ErrNotFound) {
		return WithMessage(err, fmt.Sprintf("placement %q not found", name))
	}
	return err
}
