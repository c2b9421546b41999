package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// ArchiveContentType is the media type of a tenant archive.
const ArchiveContentType = "application/vnd.tenantmem.archive"

// boolQuery reads an optional boolean query parameter.
func boolQuery(c echo.Context, name string) (bool, error) {
	v := c.QueryParam(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, &registry.FieldError{Field: name, Message: "must be true or false"}
	}
	return b, nil
}

// allowOnly refuses query parameters other than names, and repeated ones.
func allowOnly(c echo.Context, names ...string) error {
	for k, vs := range c.QueryParams() {
		known := false
		for _, n := range names {
			known = known || n == k
		}
		if !known {
			return &registry.FieldError{Field: k, Message: "unknown query parameter"}
		}
		if len(vs) > 1 {
			return &registry.FieldError{Field: k, Message: "given more than once"}
		}
	}
	return nil
}

// deadlines lifts the server's read and write deadlines for this request: a backup, restore or
// move lasts as long as the tenant's size needs (a restore ends with index builds that report no
// progress), and only the admin token reaches these routes.
func liftDeadlines(c echo.Context) {
	rc := http.NewResponseController(c.Response().Writer)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
}

// backupTenant streams the tenant's archive as the response body. The archive is written as it
// is read; an error after the first byte can no longer change the status, so it cuts the
// stream short, and the truncated archive is refused by every restore.
func (a *admin) backupTenant(c echo.Context) error {
	id, err := tenantParam(c)
	if err != nil {
		return err
	}
	if err := allowOnly(c, "include_key_hashes", "skip_search_history"); err != nil {
		return err
	}
	keys, err := boolQuery(c, "include_key_hashes")
	if err != nil {
		return err
	}
	skipHistory, err := boolQuery(c, "skip_search_history")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	// Refuse what can be refused before the first byte.
	if _, err := a.prov.GetTenant(ctx, id); err != nil {
		return tenantError(id, err)
	}
	w := &lazyArchiveWriter{c: c, name: strings.ReplaceAll(id, "/", "_") + ".tmarchive"}
	liftDeadlines(c)
	_, err = a.prov.Backup(ctx, id, w, provision.BackupParams{IncludeKeyHashes: keys, SkipSearchHistory: skipHistory})
	if err != nil {
		if !w.started {
			return tenantError(id, err)
		}
		// The client already has a 200 and part of an archive; abort the connection so it
		// sees an error, not a short file that ends cleanly.
		a.log.ErrorContext(ctx, "backup failed after the response started; aborting the connection",
			slog.String("request_id", RequestID(ctx)), slog.String("tenant_id", id), slog.String("error", err.Error()))
		panic(http.ErrAbortHandler)
	}
	return nil
}

// lazyArchiveWriter sends the response header with the first byte, so errors before it still
// get a proper status.
type lazyArchiveWriter struct {
	c       echo.Context
	name    string
	started bool
}

func (w *lazyArchiveWriter) Write(p []byte) (int, error) {
	if !w.started {
		w.started = true
		h := w.c.Response().Header()
		h.Set(echo.HeaderContentType, ArchiveContentType)
		h.Set(echo.HeaderContentDisposition, "attachment; filename*=UTF-8''"+url.PathEscape(w.name))
		w.c.Response().WriteHeader(http.StatusOK)
	}
	return w.c.Response().Write(p)
}

// restoreTenant restores a tenant from the archive in the request body, read as it streams.
func (a *admin) restoreTenant(c echo.Context) error {
	if err := allowOnly(c, "as", "tier", "placement", "replace"); err != nil {
		return err
	}
	var p provision.RestoreParams
	if as := c.QueryParam("as"); as != "" {
		if err := schema.ValidateTenantID(as); err != nil {
			return &registry.FieldError{Field: "as", Message: err.Error()}
		}
		p.As = as
		SetTenantID(c.Request().Context(), as)
	}
	if t := c.QueryParam("tier"); t != "" {
		tier, err := registry.ParseTier(t)
		if err != nil {
			return err
		}
		p.Tier = tier
	}
	p.Placement = c.QueryParam("placement")
	var err error
	if p.Replace, err = boolQuery(c, "replace"); err != nil {
		return err
	}
	liftDeadlines(c)
	res, err := a.prov.Restore(c.Request().Context(), c.Request().Body, p)
	if err != nil {
		if provision.IsArchiveError(err) {
			return err
		}
		// The provisioner's refusals name the tenant and what to do.
		if ex, ok := errors.AsType[*provision.TenantExistsError](err); ok {
			return WithMessage(err, fmt.Sprintf("tenant %q already exists; restore with replace=true to overwrite it", ex.ID))
		}
		if rf, ok := errors.AsType[*provision.RestoreRefusedError](err); ok {
			return WithMessage(err, rf.Reason)
		}
		return tenantError(cmpOr(p.As, "(the archive's tenant)"), err)
	}
	SetTenantID(c.Request().Context(), res.Tenant.ID)
	status := http.StatusCreated
	if res.Replaced {
		status = http.StatusOK
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/tenants/"+url.PathEscape(res.Tenant.ID))
	return c.JSON(status, res)
}

func cmpOr(s, dflt string) string {
	if s == "" {
		return dflt
	}
	return s
}

// TenantMoveRequest is the body of POST /v1/tenants/{id}/move.
type TenantMoveRequest struct {
	Tier      string `json:"tier"`
	Placement string `json:"placement,omitempty"`
}

// moveTenant moves a tenant to another tier and answers when the move is done (the tenant serves
// throughout; see provision.MoveTenant). A client that goes away does not stop it half-way: the
// move runs to its end (or to a clean stop) on its own context; running it again resumes it.
func (a *admin) moveTenant(c echo.Context) error {
	id, err := tenantParam(c)
	if err != nil {
		return err
	}
	var req TenantMoveRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	tier, err := registry.ParseTier(req.Tier)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	liftDeadlines(c)
	res, err := a.prov.MoveTenant(context.WithoutCancel(ctx), id, provision.MoveParams{Tier: tier, Placement: req.Placement})
	if err != nil {
		switch {
		case errors.Is(err, provision.ErrMoveUnfinished):
			return WithMessage(err, err.Error()+"; POST /v1/tenants/{id}/move/abort rolls it back")
		case errors.Is(err, registry.ErrConflict):
			return err // it says why (suspended, another job, ...)
		}
		return tenantError(id, err)
	}
	return c.JSON(http.StatusOK, res)
}

func (a *admin) abortMove(c echo.Context) error {
	id, err := tenantParam(c)
	if err != nil {
		return err
	}
	if err := a.prov.AbortMove(c.Request().Context(), id); err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return WithMessage(err, fmt.Sprintf("tenant %q has no move in progress", id))
		}
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
