package httpapi

import (
	"context"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// MaxBulkTenants is the most tenants one POST /v1/bulk/tenants creates; larger imports take
// several calls, or the CLI (`provisioner tenant create-bulk`), which streams the keys to a file.
const MaxBulkTenants = 10000

// TenantBulkCreateRequest is the body of POST /v1/bulk/tenants.
type TenantBulkCreateRequest struct {
	// Tier must be "shared".
	Tier string `json:"tier"`
	// TenantIDs are the new tenants' ids: valid, distinct, 1 to MaxBulkTenants of them.
	TenantIDs []string `json:"tenant_ids"`
}

// TenantBulkCreateResponse is the answer of POST /v1/bulk/tenants: the created tenants with
// their keys (shown once), and the ids that existed already and were left alone.
type TenantBulkCreateResponse struct {
	Created  int                          `json:"created"`
	Existing []string                     `json:"existing"`
	Tenants  []provision.TenantCreatedKey `json:"tenants"`
}

// createTenants creates many shared-tier tenants in one call. Invalid input (an invalid or
// repeated id, another tier, too many ids) is 400 naming the entry, and nothing is created. Ids
// that exist already are listed in existing, so a client that lost an answer can call again: it
// gets keys for the tenants that were missing, and issues keys for the others with
// POST /v1/tenants/{id}/keys.
func (a *admin) createTenants(c echo.Context) error {
	var req TenantBulkCreateRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if len(req.TenantIDs) > MaxBulkTenants {
		return &registry.FieldError{Field: "tenant_ids", Message: fmt.Sprintf("at most %d per call, got %d", MaxBulkTenants, len(req.TenantIDs))}
	}
	res := TenantBulkCreateResponse{Tenants: make([]provision.TenantCreatedKey, 0, len(req.TenantIDs))}
	// One transaction for the whole call: it creates all the tenants, whose keys are in the
	// answer, or none, so an error never leaves tenants whose keys nobody saw.
	out, err := a.prov.CreateTenants(c.Request().Context(), provision.TenantBulkCreateParams{
		IDs: req.TenantIDs, Tier: registry.Tier(req.Tier), BatchSize: provision.MaxBulkBatchSize,
		OnBatch: func(_ context.Context, created []provision.TenantCreatedKey) error {
			res.Tenants = append(res.Tenants, created...)
			return nil
		},
	})
	if err != nil {
		return err
	}
	res.Created, res.Existing = out.Created, out.Existing
	return c.JSON(http.StatusCreated, res)
}
