// Package pgtest is the test harness: one throwaway PostgreSQL cluster per test binary (or the
// server named by TEST_DATABASE_URL), and a fresh database per test, so tests run in parallel
// without sharing state. Tests of several servers (placements) get a second server shared by the
// test binary ([Second], started on first use; TEST_SECOND_DATABASE_URL names one instead), or a
// server of their own that they may stop and start ([NewServer]). It never skips: when no server
// can be started, the test fails.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"net/url"
	"os"
	"strconv"
	"sync"
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
		c, err := startCluster(nil)
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
	second.mu.Lock()
	if c := second.cluster; c != nil {
		if err := c.Stop(context.WithoutCancel(ctx)); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: second server: %v\n", err)
		}
	}
	second.mu.Unlock()
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

// NewDatabase creates an empty database for one test on the test server and returns its
// superuser URL. The database is dropped when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	if baseURL == "" {
		t.Fatal("pgtest: no server; call pgtest.Main from TestMain")
	}
	return newDatabase(t, baseURL)
}

func newDatabase(t testing.TB, serverURL string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL)
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
		conn, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			t.Errorf("pgtest: connect: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database: %v", err)
		}
	})
	return WithDatabase(t, serverURL, name)
}

// Server is a PostgreSQL server for tests that need more than one (placements).
type Server struct {
	url     string // superuser URL of database "postgres"
	cluster *pgcluster.Cluster
}

// Existing is the server of a superuser URL (e.g. ServerURL()); it cannot be stopped.
func Existing(rawURL string) *Server { return &Server{url: rawURL} }

// URL is the superuser URL of the server's "postgres" database.
func (s *Server) URL() string { return s.url }

// Host and Port say where the server listens.
func (s *Server) Host() string {
	u, _ := url.Parse(s.url)
	return u.Hostname()
}

// Port is the server's TCP port.
func (s *Server) Port() int {
	u, _ := url.Parse(s.url)
	p, _ := strconv.Atoi(u.Port())
	if p == 0 {
		p = 5432
	}
	return p
}

// NewDatabase creates an empty database for one test on this server and returns its superuser
// URL; it is dropped when the test ends.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	return newDatabase(t, s.url)
}

// Stop shuts the server down (its connections are cut); Start brings it back on the same port.
// Only a server of [NewServer] can be stopped.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if s.cluster == nil {
		t.Fatal("pgtest: only a server of NewServer can be stopped")
	}
	if err := s.cluster.Pause(context.Background()); err != nil {
		t.Fatalf("pgtest: stop: %v", err)
	}
}

// Start starts a stopped server again on its port.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if err := s.cluster.Resume(context.Background()); err != nil {
		t.Fatalf("pgtest: start: %v", err)
	}
}

var second struct {
	mu      sync.Mutex
	server  *Server
	cluster *pgcluster.Cluster
}

// Second is a second server shared by the test binary: TEST_SECOND_DATABASE_URL (a superuser URL
// of a PostgreSQL 15+ server with pgvector) when set, else a throwaway cluster started on first
// use and stopped when the binary ends. It cannot be stopped by a test; use NewServer for that.
func Second(t testing.TB) *Server {
	t.Helper()
	second.mu.Lock()
	defer second.mu.Unlock()
	if second.server != nil {
		return second.server
	}
	if u := os.Getenv("TEST_SECOND_DATABASE_URL"); u != "" {
		second.server = &Server{url: u}
		return second.server
	}
	c, err := startCluster(nil)
	if err != nil {
		t.Fatalf("pgtest: second server: %v", err)
	}
	second.cluster = c
	second.server = &Server{url: c.URL("postgres")}
	return second.server
}

// NewServer starts a throwaway cluster for one test, which may stop and start it; it is removed
// when the test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	return NewServerWith(t, nil)
}

// NewServerWith is NewServer with extra server settings (postgresql.conf names and values), e.g.
// autovacuum off for a test that counts the server's catalog scans.
func NewServerWith(t testing.TB, settings map[string]string) *Server {
	t.Helper()
	c, err := startCluster(settings)
	if err != nil {
		t.Fatalf("pgtest: new server: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return &Server{url: c.URL("postgres"), cluster: c}
}

func startCluster(extra map[string]string) (*pgcluster.Cluster, error) {
	settings := map[string]string{"maintenance_work_mem": "256MB"}
	maps.Copy(settings, extra)
	return pgcluster.Start(context.Background(), pgcluster.Config{Fast: true, Settings: settings})
}

// DropDatabasesOnCleanup drops, when the test ends, every database of the server whose comment
// starts with prefix (tenant databases a test created and may have left behind).
func DropDatabasesOnCleanup(t testing.TB, serverURL, prefix string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			t.Errorf("pgtest: connect: %v", err)
			return
		}
		defer conn.Close(ctx)
		rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE starts_with(shobj_description(oid, 'pg_database'), $1)`, prefix)
		if err != nil {
			t.Errorf("pgtest: list databases: %v", err)
			return
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Errorf("pgtest: list databases: %v", err)
			return
		}
		for _, n := range names {
			if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n}.Sanitize()+" WITH (FORCE)"); err != nil {
				t.Errorf("pgtest: drop database %s: %v", n, err)
			}
		}
	})
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
