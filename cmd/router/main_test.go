package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a running server. When onLine is
// set, it is called with every complete line.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	part   []byte
	onLine func(string)
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(p)
	if s.onLine != nil {
		s.part = append(s.part, p...)
		for {
			i := bytes.IndexByte(s.part, '\n')
			if i < 0 {
				break
			}
			s.onLine(string(s.part[:i]))
			s.part = s.part[i+1:]
		}
	}
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func mapEnv(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

// result is one finished router run.
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

// runRouter runs the router to completion (a start-up failure, or --help).
func runRouter(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr syncBuffer
	if _, ok := env["TENANTMEM_ROUTER_METRICS_LISTEN"]; !ok {
		env = maps.Clone(env)
		if env == nil {
			env = map[string]string{}
		}
		env["TENANTMEM_ROUTER_METRICS_LISTEN"] = "127.0.0.1:0" // never the fixed default port in tests
	}
	m := &Main{Stdout: &stdout, Stderr: &stderr, LookupEnv: mapEnv(env)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := m.Run(ctx, args)
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	t.Logf("router %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	return r
}

// provisionerBinary builds cmd/provisioner into a temporary folder: a main package cannot be
// imported, so the end-to-end test runs the real one as a process.
func provisionerBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "provisioner")
	goTool, err := exec.LookPath("go")
	require.NoError(t, err)
	out, err := exec.Command(goTool, "build", "-o", bin, "github.com/tenantmem/tenantmem/cmd/provisioner").CombinedOutput()
	require.NoError(t, err, "go build ./cmd/provisioner: %s", out)
	return bin
}

// closedPortURL is a database URL nothing listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return "postgres://" + "nobody@" + addr + "/none?connect_timeout=2"
}
