package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/provision"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a running server.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Reset empties the buffer.
func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// result is one finished command.
type result struct {
	code           int
	stdout, stderr string
}

// message is the one line of stderr that is not a JSON log record.
func (r result) message(t *testing.T) string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if l != "" && !json.Valid([]byte(l)) {
			lines = append(lines, l)
		}
	}
	require.Len(t, lines, 1, "stderr: %s", r.stderr)
	return lines[0]
}

// cliEnv runs commands in-process against one database.
type cliEnv struct {
	t   *testing.T
	url string
	env map[string]string
	// stdin, when set, is the commands' standard input.
	stdin string
}

func newCLIEnv(t *testing.T, initialise bool) *cliEnv {
	t.Helper()
	e := &cliEnv{t: t, url: pgtest.NewDatabase(t), env: map[string]string{"TENANTMEM_LOG_LEVEL": "warn"}}
	if initialise {
		r := e.run("init")
		require.Equal(t, 0, r.code, r.stderr)
	}
	return e
}

// run runs a command with --database-url.
func (e *cliEnv) run(args ...string) result {
	e.t.Helper()
	return e.runEnv(e.env, append([]string{"--database-url", e.url}, args...)...)
}

// runEnv runs a command line as given, with env as the whole environment.
func (e *cliEnv) runEnv(env map[string]string, args ...string) result {
	e.t.Helper()
	var stdout, stderr syncBuffer
	m := &Main{Stdout: &stdout, Stderr: &stderr, Stdin: strings.NewReader(e.stdin), LookupEnv: mapEnv(env), Environ: func() []string {
		var out []string
		for k, v := range env {
			out = append(out, k+"="+v)
		}
		return out
	}}
	code := m.Run(context.Background(), args)
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	e.t.Logf("provisioner %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	return r
}

// ok runs a command that must succeed and returns its stdout.
func (e *cliEnv) ok(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	require.Equal(e.t, 0, r.code, "provisioner %s: %s", strings.Join(args, " "), r.stderr)
	return r.stdout
}

// okJSON runs a command that must succeed and decodes its JSON output.
func (e *cliEnv) okJSON(v any, args ...string) {
	e.t.Helper()
	out := e.ok(args...)
	require.NoError(e.t, json.Unmarshal([]byte(out), v), out)
}

func (e *cliEnv) pool() *pgxpool.Pool {
	e.t.Helper()
	pool, err := pgxpool.New(context.Background(), e.url)
	require.NoError(e.t, err)
	e.t.Cleanup(pool.Close)
	return pool
}

func (e *cliEnv) provisioner(hook func(ctx context.Context, step, tenantID string) error) *provision.Provisioner {
	e.t.Helper()
	prov, err := provision.New(provision.Config{Pool: e.pool(), Hook: hook})
	require.NoError(e.t, err)
	e.t.Cleanup(prov.Close)
	return prov
}

// credentialsFile writes a credentials file with the given mode and returns its path.
func (e *cliEnv) credentialsFile(mode os.FileMode, content string) string {
	e.t.Helper()
	path := filepath.Join(e.t.TempDir(), "credentials")
	require.NoError(e.t, os.WriteFile(path, []byte(content), mode))
	require.NoError(e.t, os.Chmod(path, mode))
	return path
}

func mapEnv(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

func with(env map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// closedPortURL is a database URL nothing listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return fmt.Sprintf("postgres://nobody@%s/none?connect_timeout=2", addr)
}
