// Package pgtest is the test harness: one throwaway PostgreSQL cluster per test binary (or the
// server named by TEST_DATABASE_URL), and a fresh database per test, so tests run in parallel
// without sharing state. It never skips: when no server can be started, the test binary fails.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/tenantmem/tenantmem/internal/pgcluster"
)

// baseURL is the superuser URL of the server, database "postgres"; set once by Main.
var baseURL string

// Main runs the package's tests against a throwaway cluster (unless TEST_DATABASE_URL names a
// superuser URL of a server with pgvector), checks for leaked goroutines, and exits. Call it from
// TestMain.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		baseURL = u
	} else {
		c, err := pgcluster.Start(ctx, pgcluster.Config{Fast: true, Settings: map[string]string{
			"maintenance_work_mem": "256MB",
		}})
		if err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: cannot start a PostgreSQL cluster (make test installs one): %v\n", err)
			return 1
		}
		defer func() {
			if err := c.Stop(context.WithoutCancel(ctx)); err != nil {
				fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			}
		}()
		baseURL = c.URL("postgres")
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			return 1
		}
	}
	return code
}

// ServerURL is the superuser URL of the test server's "postgres" database.
func ServerURL() string { return baseURL }

// NewDatabase creates an empty database for one test and returns its superuser URL. The database is
// dropped when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	if baseURL == "" {
		t.Fatal("pgtest: no server; call pgtest.Main from TestMain")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, baseURL)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, baseURL)
		if err != nil {
			t.Errorf("pgtest: connect: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database: %v", err)
		}
	})
	return WithDatabase(t, baseURL, name)
}

// WithDatabase returns rawURL pointing at database dbname.
func WithDatabase(t testing.TB, rawURL, dbname string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	u.Path = "/" + dbname
	return u.String()
}

// WithUser returns rawURL with its user (and password) replaced. Test clusters trust loopback, so no
// password is needed; on a TEST_DATABASE_URL server, password may be required.
func WithUser(t testing.TB, rawURL, user, password string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if password == "" {
		u.User = url.User(user)
	} else {
		u.User = url.UserPassword(user, password)
	}
	return u.String()
}
