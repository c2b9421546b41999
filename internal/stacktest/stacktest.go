// Package stacktest runs the whole tenantmem stack in-process for end-to-end tests of clients:
// a fresh database on the pgtest server, initialised by the real provisioner, the provisioning
// API served with an admin token, and the real router (internal/dataplane) logged in as the
// router role, each on a free loopback port. Test binaries that use it call pgtest.Main from
// TestMain.
package stacktest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/dataplane"
	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
)

// AdminToken is the provisioning API's bearer token in every stack.
const AdminToken = "stacktest-admin-token-0123456789" //nolint:gosec // a test credential

// Stack is a running provisioning API and router.
type Stack struct {
	// AdminURL and RouterURL are the servers' base URLs ("http://127.0.0.1:PORT").
	AdminURL, RouterURL string
	// AdminToken is the provisioning API's bearer token.
	AdminToken string
	// DatabaseURL is the superuser URL of the stack's database.
	DatabaseURL string
}

// Start runs a stack for the test and stops it (servers first, then pools) when the test ends.
// Logs go to t.Log.
func Start(t testing.TB) *Stack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	url := pgtest.NewDatabase(t)

	adminPool, err := pgxpool.New(ctx, url)
	if err != nil {
		cancel()
		t.Fatalf("stacktest: %v", err)
	}
	var done []chan error
	t.Cleanup(func() {
		cancel()
		for _, d := range done {
			if err := <-d; err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, context.Canceled) {
				t.Errorf("stacktest: server: %v", err)
			}
		}
		adminPool.Close()
	})
	serve := func(f func() error) {
		d := make(chan error, 1)
		done = append(done, d)
		go func() { d <- f() }()
	}
	fatal := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("stacktest: %s: %v", what, err)
		}
	}

	prov, err := provision.New(provision.Config{Pool: adminPool, Logger: logger, Actor: "stacktest"})
	fatal("provisioner", err)
	t.Cleanup(prov.Close)
	_, err = prov.Init(ctx, provision.InitParams{})
	fatal("init", err)
	admin, err := httpapi.NewAdmin(httpapi.AdminConfig{Provisioner: prov, Pool: adminPool, AdminToken: AdminToken, Logger: logger})
	fatal("admin API", err)
	srv, err := httpapi.NewServer(httpapi.ServerConfig{Handler: admin, Logger: logger})
	fatal("admin server", err)
	adminLn, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	fatal("listen", err)
	serve(func() error { return srv.Serve(ctx, adminLn) })

	svc, err := dataplane.Open(ctx, dataplane.Config{
		DatabaseURL: pgtest.WithUser(t, url, provision.DefaultRouterRole, ""),
		Logger:      logger,
	})
	fatal("router", err)
	routerLn, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		svc.Close()
		fatal("listen", err)
	}
	serve(func() error {
		defer svc.Close()
		return svc.Run(ctx, routerLn)
	})
	return &Stack{
		AdminURL:    "http://" + adminLn.Addr().String(),
		RouterURL:   "http://" + routerLn.Addr().String(),
		AdminToken:  AdminToken,
		DatabaseURL: url,
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
