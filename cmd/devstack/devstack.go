package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmem/tenantmem/internal/command"
	"github.com/tenantmem/tenantmem/internal/console"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/pgcluster"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/version"
)

// Main wires the dev stack; tests run it in-process.
type Main struct {
	Stdout, Stderr io.Writer
	LookupEnv      func(string) (string, bool)
	// Environ lists the environment, for TENANTMEM_PLACEMENT_<NAME>_<LOGIN>_USER/_PASSWORD.
	Environ func() []string
	// OnReady, when set, is called once both servers listen.
	OnReady func(Ready)
}

// Ready describes a running stack.
type Ready struct {
	AdminAddr, RouterAddr, MetricsAddr net.Addr
	AdminToken                         string
	DatabaseURL                        string // superuser URL of the dev cluster
}

// Run parses args and serves until ctx ends.
func (m *Main) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	dataDir := fs.String("data-dir", "data", "folder for the PostgreSQL cluster and the admin token")
	adminListen := fs.String("admin-listen", "127.0.0.1:8081", "address of the provisioning API")
	routerListen := fs.String("router-listen", "127.0.0.1:8080", "address of the tenant router")
	pgPort := fs.Int("pg-port", 0, "PostgreSQL port (0: a free one)")
	metricsListen := fs.String("metrics-listen", "127.0.0.1:9080", "address of the Prometheus /metrics of both servers")
	leakproof := fs.Bool("leakproof-text-search", false,
		"mark the text match operator LEAKPROOF (fast text search under RLS, but its timing tells a shared-tier tenant whether a word occurs in other tenants' chunks)")
	credsFile := fs.String("placement-credentials", m.env("TENANTMEM_PLACEMENT_CREDENTIALS"),
		"credentials file for placements other than local, for both servers (placement:login:user:password lines, mode 600; also TENANTMEM_PLACEMENT_<NAME>_<LOGIN>_USER/_PASSWORD)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Fprintln(m.Stdout, version.Get().Line("devstack"))
		return nil
	}
	logger := slog.New(slog.NewJSONHandler(m.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var environ []string
	if m.Environ != nil {
		environ = m.Environ()
	}
	creds, err := command.PlacementCredentials(*credsFile, environ)
	if err != nil {
		return err
	}

	cluster, err := pgcluster.Start(ctx, pgcluster.Config{Dir: filepath.Join(*dataDir, "postgres"), Port: *pgPort, Logger: logger})
	if err != nil {
		return err
	}
	defer func() {
		if err := cluster.Stop(context.WithoutCancel(ctx)); err != nil {
			logger.Error("stop postgres", slog.String("error", err.Error()))
		}
	}()
	dbURL := cluster.URL("tenantmem")
	if err := createDatabase(ctx, cluster.URL("postgres"), "tenantmem"); err != nil {
		return err
	}
	adminPool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer adminPool.Close()
	prov, err := provision.New(provision.Config{Pool: adminPool, Logger: logger, Actor: "devstack", Credentials: creds})
	if err != nil {
		return err
	}
	defer prov.Close() // its pools on other placements
	// Secure by default: the LEAKPROOF text operator makes text search fast under RLS, but the
	// cost of a shared-tier search then tells whether a word occurs in other tenants' chunks
	// (docs/architecture.md). A data folder of an earlier `make run` may have it on: the dev
	// cluster is ours, so turn it off again unless asked for.
	if _, err := prov.Init(ctx, provision.InitParams{LeakproofTextSearch: *leakproof}); err != nil {
		return err
	}
	if !*leakproof {
		if err := provision.ResetLeakproofTextSearch(ctx, adminPool); err != nil {
			return err
		}
	}
	token, err := m.adminToken(*dataDir)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	adminHandler, err := httpapi.NewAdmin(httpapi.AdminConfig{Provisioner: prov, Pool: adminPool, AdminToken: token,
		Logger: logger, Registerer: reg})
	if err != nil {
		return err
	}
	con, err := console.New(console.Config{Provisioner: prov, Pool: adminPool, AdminToken: token, Logger: logger})
	if err != nil {
		return err
	}
	con.Mount(adminHandler)
	adminSrv, err := httpapi.NewServer(httpapi.ServerConfig{Handler: adminHandler, Logger: logger})
	if err != nil {
		return err
	}
	adminLn, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *adminListen)
	if err != nil {
		return err
	}
	metricsSrv, err := httpapi.NewServer(httpapi.ServerConfig{Handler: httpapi.MetricsHandler(reg, logger), Logger: logger})
	if err != nil {
		return err
	}
	metricsLn, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *metricsListen)
	if err != nil {
		_ = adminLn.Close()
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return adminSrv.Serve(gctx, adminLn) })
	g.Go(func() error { return metricsSrv.Serve(gctx, metricsLn) })

	routerAddr, serveRouter, err := m.router(gctx, *routerListen, dbURL, creds, logger, reg)
	if err != nil {
		_ = adminLn.Close()
		return errors.Join(err, g.Wait())
	}
	if serveRouter != nil {
		g.Go(serveRouter)
	}
	ready := Ready{AdminAddr: adminLn.Addr(), RouterAddr: routerAddr, MetricsAddr: metricsLn.Addr(), AdminToken: token,
		DatabaseURL: dbURL}
	m.printWelcome(ready)
	if m.OnReady != nil {
		m.OnReady(ready)
	}
	return g.Wait()
}

// adminToken is TENANTMEM_ADMIN_TOKEN, or a random token kept in the data folder across runs.
func (m *Main) adminToken(dataDir string) (string, error) {
	if m.LookupEnv != nil {
		if t, ok := m.LookupEnv("TENANTMEM_ADMIN_TOKEN"); ok && t != "" {
			return t, nil
		}
	}
	path := filepath.Join(dataDir, "admin-token")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= httpapi.MinAdminTokenLength {
		return strings.TrimSpace(string(b)), nil
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	t := hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", err
	}
	return t, nil
}

func createDatabase(ctx context.Context, serverURL, name string) error {
	pool, err := pgxpool.New(ctx, serverURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		_, err = pool.Exec(ctx, `CREATE DATABASE `+name)
	}
	return err
}

func (m *Main) printWelcome(r Ready) {
	w := m.Stdout
	fmt.Fprintf(w, "\ntenantmem dev stack is up.\n\n")
	fmt.Fprintf(w, "  provisioning API  http://%s   (admin token below)\n", r.AdminAddr)
	if r.RouterAddr != nil {
		fmt.Fprintf(w, "  tenant router     http://%s\n", r.RouterAddr)
	}
	fmt.Fprintf(w, "  metrics           http://%s/metrics\n", r.MetricsAddr)
	fmt.Fprintf(w, "  PostgreSQL        %s\n\n", r.DatabaseURL)
	fmt.Fprintf(w, "Create a first tenant:\n\n")
	fmt.Fprintf(w, "  export TENANTMEM_ADMIN_TOKEN=%s\n", r.AdminToken)
	fmt.Fprintf(w, "  curl -s -X POST http://%s/v1/tenants -H \"Authorization: Bearer $TENANTMEM_ADMIN_TOKEN\" \\\n", r.AdminAddr)
	fmt.Fprintf(w, "       -H 'Content-Type: application/json' -d '{\"tenant_id\": \"acme\", \"tier\": \"schema\"}'\n\n")
	if r.RouterAddr != nil {
		fmt.Fprintf(w, "Then, with the api_key of the answer:\n\n")
		fmt.Fprintf(w, "  export TENANTMEM_API_KEY=tm_...\n")
		fmt.Fprintf(w, "  curl -s -X POST http://%s/v1/documents -H \"Authorization: Bearer $TENANTMEM_API_KEY\" \\\n", r.RouterAddr)
		fmt.Fprintf(w, "       -H 'Content-Type: application/json' \\\n")
		fmt.Fprintf(w, "       -d '{\"document_name\": \"hello\", \"document_type\": \"text\", \"content\": \"tenantmem stores documents\"}'\n")
		fmt.Fprintf(w, "  curl -s \"http://%s/v1/search?q=documents\" -H \"Authorization: Bearer $TENANTMEM_API_KEY\"\n\n", r.RouterAddr)
	}
	fmt.Fprintf(w, "Press Ctrl-C to stop (the data stays in the data folder).\n")
}

// env is the environment variable key, or "".
func (m *Main) env(key string) string {
	if m.LookupEnv == nil {
		return ""
	}
	v, _ := m.LookupEnv(key)
	return v
}
