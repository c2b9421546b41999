package client

import (
	"context"
	"net/http"
	"time"
)

// PlacementState is a placement's state: active (serves and takes new tenants), draining (serves,
// takes none), disabled (not served: the router answers 503; takes none).
type PlacementState string

// The placement states.
const (
	PlacementActive   PlacementState = "active"
	PlacementDraining PlacementState = "draining"
	PlacementDisabled PlacementState = "disabled"
)

// Placement is a PostgreSQL server that holds tenants; "local" is the control server (no host).
type Placement struct {
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	Host        string         `json:"host,omitempty"`
	Port        int            `json:"port,omitempty"`
	Database    string         `json:"database,omitempty"`
	State       PlacementState `json:"state"`
	MaxTenants  int            `json:"max_tenants,omitempty"`
	Tiers       []Tier         `json:"tiers"`
	Tenants     int            `json:"tenants"`
	CreatedAt   time.Time      `json:"created_at"`
	UpdatedAt   time.Time      `json:"updated_at"`
}

// PlacementAddParams is the body of POST /v1/placements. The server must be reachable with the
// provisioner's credentials for it (configured on the provisioner, never sent here).
type PlacementAddParams struct {
	Name     string `json:"name"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Database string `json:"database"`
	// MaxTenants is a capacity hint (0: none); Tiers the tiers it takes (empty: all three).
	MaxTenants  int    `json:"max_tenants,omitempty"`
	Tiers       []Tier `json:"tiers,omitempty"`
	Description string `json:"description,omitempty"`
	// RouterPassword, when set, becomes the router role's password on that server.
	RouterPassword string `json:"router_password,omitempty"`
}

type placementResponse struct {
	Placement Placement `json:"placement"`
}

type placementListResponse struct {
	Placements []Placement `json:"placements"`
}

// AddPlacement registers and prepares a server (idempotent for the same endpoint;
// ErrAlreadyExists for another; ErrUnavailable when it cannot be reached).
func (a *Admin) AddPlacement(ctx context.Context, p PlacementAddParams) (*Placement, error) {
	var res Placement
	if _, err := a.c.call(ctx, http.MethodPost, []string{"v1", "placements"}, nil, p, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// ListPlacements returns every placement with its tenant count.
func (a *Admin) ListPlacements(ctx context.Context) ([]Placement, error) {
	var res placementListResponse
	if _, err := a.c.call(ctx, http.MethodGet, []string{"v1", "placements"}, nil, nil, &res); err != nil {
		return nil, err
	}
	return res.Placements, nil
}

// GetPlacement returns one placement.
func (a *Admin) GetPlacement(ctx context.Context, name string) (*Placement, error) {
	var res Placement
	if _, err := a.c.call(ctx, http.MethodGet, []string{"v1", "placements", name}, nil, nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// DrainPlacement stops a placement taking new tenants.
func (a *Admin) DrainPlacement(ctx context.Context, name string) (*Placement, error) {
	return a.placementState(ctx, name, "drain")
}

// DisablePlacement stops serving a placement's tenants and taking new ones.
func (a *Admin) DisablePlacement(ctx context.Context, name string) (*Placement, error) {
	return a.placementState(ctx, name, "disable")
}

// ActivatePlacement makes a placement active again.
func (a *Admin) ActivatePlacement(ctx context.Context, name string) (*Placement, error) {
	return a.placementState(ctx, name, "activate")
}

func (a *Admin) placementState(ctx context.Context, name, action string) (*Placement, error) {
	var res placementResponse
	if _, err := a.c.call(ctx, http.MethodPost, []string{"v1", "placements", name, action}, nil, nil, &res); err != nil {
		return nil, err
	}
	return &res.Placement, nil
}

// RemovePlacement unregisters a placement that holds no tenant (ErrConflict otherwise, and for
// "local").
func (a *Admin) RemovePlacement(ctx context.Context, name string) error {
	_, err := a.c.call(ctx, http.MethodDelete, []string{"v1", "placements", name}, nil, nil, nil)
	return err
}
