package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

type placementCmd struct {
	Add      placementAddCmd      `cmd:"" help:"Register a PostgreSQL server as a placement, preparing it as init prepares the first (idempotent)."`
	List     placementListCmd     `cmd:"" help:"List placements with their state and tenant counts."`
	Show     placementShowCmd     `cmd:"" help:"Show one placement."`
	Drain    placementDrainCmd    `cmd:"" help:"Stop a placement taking new tenants; its tenants are still served."`
	Disable  placementDisableCmd  `cmd:"" help:"Stop serving a placement's tenants (503) and taking new ones; migrate skips it."`
	Activate placementActivateCmd `cmd:"" help:"Make a draining or disabled placement active again."`
	Remove   placementRemoveCmd   `cmd:"" help:"Unregister a placement that holds no tenant (the server is left as it is)."`
}

type placementAddCmd struct {
	Name           string `arg:"" name:"name" help:"Placement name: 1-63 characters of [a-z0-9_-]."`
	Host           string `name:"host" required:"" placeholder:"HOST" help:"Host name, IP address or socket folder of the server."`
	Port           int    `name:"port" default:"5432" help:"Port of the server (default ${default})."`
	Database       string `name:"database" required:"" placeholder:"NAME" help:"Database of the server that holds its shared and schema tiers (it must exist)."`
	MaxTenants     int    `name:"max-tenants" placeholder:"N" help:"Capacity hint: a placement with N tenants takes no more (0: no limit)."`
	Tiers          string `name:"tiers" placeholder:"LIST" help:"Tiers it takes, comma-separated (default: shared,schema,database)."`
	Description    string `name:"description" placeholder:"TEXT" help:"Free text."`
	RouterPassword string `name:"router-password" env:"TENANTMEM_ROUTER_PASSWORD" placeholder:"PASSWORD" help:"Set the router role's password on that server (the routers then need it for this placement: see docs/scaling.md). Prefer the environment variable: a flag is visible in the process list."`
	JSON           bool   `name:"json" help:"Print JSON."`
}

func (cmd *placementAddCmd) Run(rc *runContext) error {
	tiers, err := registry.ParseTiers(cmd.Tiers)
	if err != nil {
		return err
	}
	params := provision.PlacementAddParams{Name: cmd.Name, Host: cmd.Host, Port: cmd.Port, Database: cmd.Database,
		MaxTenants: cmd.MaxTenants, Tiers: tiers, Description: cmd.Description, RouterPassword: cmd.RouterPassword}
	// Validate before connecting, so bad input never waits on a server.
	if err := (registry.PlacementInsertParams{Name: params.Name, Host: params.Host, Port: params.Port,
		Database: params.Database, MaxTenants: params.MaxTenants, Tiers: tiers, Description: params.Description}).Validate(); err != nil {
		return err
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	pl, err := prov.AddPlacement(rc.ctx, params)
	if err != nil {
		return placementError(cmd.Name, err)
	}
	if cmd.JSON {
		return writeJSON(rc.stdout, pl)
	}
	return writePlacement(rc.stdout, pl)
}

type placementListCmd struct {
	JSON bool `name:"json" help:"Print JSON: {placements}."`
}

func (cmd *placementListCmd) Run(rc *runContext) error {
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	ps, err := prov.ListPlacements(rc.ctx)
	if err != nil {
		return err
	}
	if cmd.JSON {
		return writeJSON(rc.stdout, map[string]any{"placements": ps})
	}
	w := newTable(rc.stdout)
	fmt.Fprintln(w, "NAME\tSTATE\tTENANTS\tMAX\tTIERS\tENDPOINT")
	for _, p := range ps {
		maxTenants := "-"
		if p.MaxTenants > 0 {
			maxTenants = fmt.Sprint(p.MaxTenants)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\n", p.Name, p.State, p.Tenants, maxTenants, tierList(p.Tiers), endpointOf(p))
	}
	return w.Flush()
}

type placementShowCmd struct {
	Name string `arg:"" name:"name" help:"Placement name."`
	JSON bool   `name:"json" help:"Print JSON."`
}

func (cmd *placementShowCmd) Run(rc *runContext) error {
	if err := registry.ValidatePlacementName(cmd.Name); err != nil {
		return err
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	pl, err := prov.GetPlacement(rc.ctx, cmd.Name)
	if err != nil {
		return placementError(cmd.Name, err)
	}
	if cmd.JSON {
		return writeJSON(rc.stdout, pl)
	}
	return writePlacement(rc.stdout, pl)
}

type placementDrainCmd struct {
	Name string `arg:"" name:"name" help:"Placement name."`
}

func (cmd *placementDrainCmd) Run(rc *runContext) error {
	return setPlacementState(rc, cmd.Name, (*provision.Provisioner).DrainPlacement)
}

type placementDisableCmd struct {
	Name string `arg:"" name:"name" help:"Placement name."`
}

func (cmd *placementDisableCmd) Run(rc *runContext) error {
	return setPlacementState(rc, cmd.Name, (*provision.Provisioner).DisablePlacement)
}

type placementActivateCmd struct {
	Name string `arg:"" name:"name" help:"Placement name."`
}

func (cmd *placementActivateCmd) Run(rc *runContext) error {
	return setPlacementState(rc, cmd.Name, (*provision.Provisioner).ActivatePlacement)
}

func setPlacementState(rc *runContext, name string,
	op func(*provision.Provisioner, context.Context, string) (registry.Placement, error)) error {
	if err := registry.ValidatePlacementName(name); err != nil {
		return err
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	pl, err := op(prov, rc.ctx, name)
	if err != nil {
		return placementError(name, err)
	}
	fmt.Fprintf(rc.stdout, "placement %s is %s (%d tenants)\n", pl.Name, pl.State, pl.Tenants)
	return nil
}

type placementRemoveCmd struct {
	Name string `arg:"" name:"name" help:"Placement name."`
}

func (cmd *placementRemoveCmd) Run(rc *runContext) error {
	if err := registry.ValidatePlacementName(cmd.Name); err != nil {
		return err
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	if err := prov.RemovePlacement(rc.ctx, cmd.Name); err != nil {
		return placementError(cmd.Name, err)
	}
	fmt.Fprintf(rc.stdout, "placement %s removed\n", cmd.Name)
	return nil
}

// placementError names the placement in a not-found error; the others say enough already.
func placementError(name string, err error) error {
	if errors.Is(err, registry.ErrNotFound) {
		return describe(err, "placement %q not found", name)
	}
	return err
}

func tierList(ts []registry.Tier) string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = string(t)
	}
	return strings.Join(out, ",")
}

func endpointOf(p registry.Placement) string {
	if p.Name == registry.LocalPlacement {
		return "(the control server)"
	}
	return fmt.Sprintf("%s:%d/%s", p.Host, p.Port, p.Database)
}

func writePlacement(out io.Writer, p registry.Placement) error {
	w := newTable(out)
	fmt.Fprintf(w, "placement\t%s\n", p.Name)
	fmt.Fprintf(w, "endpoint\t%s\n", endpointOf(p))
	fmt.Fprintf(w, "state\t%s\n", p.State)
	fmt.Fprintf(w, "tenants\t%d\n", p.Tenants)
	if p.MaxTenants > 0 {
		fmt.Fprintf(w, "max tenants\t%d\n", p.MaxTenants)
	}
	fmt.Fprintf(w, "tiers\t%s\n", tierList(p.Tiers))
	if p.Description != "" {
		fmt.Fprintf(w, "description\t%s\n", p.Description)
	}
	fmt.Fprintf(w, "created\t%s\n", p.CreatedAt.UTC().Format(time.RFC3339))
	return w.Flush()
}
