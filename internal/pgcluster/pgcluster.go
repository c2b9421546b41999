// Package pgcluster starts and stops private, throwaway PostgreSQL clusters: initdb into a folder,
// postgres on a free loopback port, pg_ctl stop. It needs no system service. `make run` keeps its
// cluster in the project's data folder; tests use a temporary folder.
//
// PostgreSQL refuses to run as root, so when the process is root the cluster's files are given to
// an unprivileged OS user (default "postgres") and the server binaries run as that user through
// runuser. The cluster's superuser is always named "postgres" and trusts loopback connections:
// these clusters are for development and tests, never for production.
package pgcluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Superuser is the name of the superuser of every cluster this package creates.
const Superuser = "postgres"

// Config configures [Start].
type Config struct {
	// Dir is the cluster's folder. It is created when missing and reused when it already holds a
	// cluster. Empty means a new temporary folder that [Cluster.Stop] removes.
	Dir string
	// BinDir holds initdb, pg_ctl and postgres. Default: the newest /usr/lib/postgresql/NN/bin with
	// NN >= 15, else the folder of initdb on PATH.
	BinDir string
	// Port to listen on, on 127.0.0.1. Zero picks a free port.
	Port int
	// RunAs is the OS user that owns the files and runs the server when this process is root.
	// Default "postgres".
	RunAs string
	// Fast turns off fsync and synchronous commit: for tests, whose clusters are thrown away.
	Fast bool
	// Settings are extra server settings (postgresql.conf names and values).
	Settings map[string]string
	// Logger receives progress lines. Default: discard.
	Logger *slog.Logger
}

// Cluster is a running cluster. Its methods are safe for concurrent use.
type Cluster struct {
	cfg     Config
	dir     string
	port    int
	temp    bool
	binDir  string
	runAs   *user.User // nil when not root
	stopped bool
}

// Start creates (when needed) and starts a cluster, waiting until it accepts connections.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	binDir, err := findBinDir(cfg.BinDir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, binDir: binDir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup(cmp.Or(cfg.RunAs, "postgres"))
		if err != nil {
			return nil, fmt.Errorf("pgcluster: running as root needs an unprivileged user to run PostgreSQL: %w", err)
		}
		c.runAs = u
	}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "tenantmem-pg-")
		if err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
		c.dir, c.temp = dir, true
	} else {
		dir, err := filepath.Abs(cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
		c.dir = dir
	}
	if err := c.start(ctx); err != nil {
		if c.temp {
			_ = os.RemoveAll(c.dir)
		}
		return nil, err
	}
	return c, nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }

func (c *Cluster) start(ctx context.Context) error {
	if err := c.chown(c.dir); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(c.dataDir(), "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		c.cfg.Logger.InfoContext(ctx, "initdb", slog.String("dir", c.dataDir()))
		out, err := c.run(ctx, "initdb", "-D", c.dataDir(), "-U", Superuser, "--auth=trust",
			"--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions")
		if err != nil {
			return fmt.Errorf("pgcluster: initdb: %w: %s", err, out)
		}
	}
	// A cluster left running by a killed process (make run) is stopped first, so the port and
	// settings below are the ones in force.
	if _, err := os.Stat(filepath.Join(c.dataDir(), "postmaster.pid")); err == nil {
		_, _ = c.run(ctx, "pg_ctl", "stop", "-D", c.dataDir(), "-m", "fast", "-w")
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := c.cfg.Port
		if port == 0 {
			p, err := freePort()
			if err != nil {
				return err
			}
			port = p
		}
		opts := []string{
			"-c listen_addresses=127.0.0.1",
			"-c port=" + strconv.Itoa(port),
			"-c unix_socket_directories=''",
			"-c max_connections=300",
		}
		if c.cfg.Fast {
			opts = append(opts, "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
		}
		keys := make([]string, 0, len(c.cfg.Settings))
		for k := range c.cfg.Settings {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			opts = append(opts, fmt.Sprintf("-c %s=%s", k, c.cfg.Settings[k]))
		}
		logFile := filepath.Join(c.dir, "postgres.log")
		out, err := c.run(ctx, "pg_ctl", "start", "-D", c.dataDir(), "-w", "-t", "60", "-l", logFile,
			"-o", strings.Join(opts, " "))
		if err == nil {
			c.port = port
			c.cfg.Logger.InfoContext(ctx, "postgres started", slog.Int("port", port), slog.String("dir", c.dir))
			return nil
		}
		tail, _ := os.ReadFile(logFile)
		lastErr = fmt.Errorf("pgcluster: pg_ctl start: %w: %s %s", err, out, lastLines(string(tail), 5))
		if c.cfg.Port != 0 || !strings.Contains(string(tail), "Address already in use") {
			break
		}
	}
	return lastErr
}

// Port is the TCP port the cluster listens on, on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// Dir is the cluster's folder.
func (c *Cluster) Dir() string { return c.dir }

// URL is a connection URL for the superuser to database dbname.
func (c *Cluster) URL(dbname string) string {
	return URL(c.port, Superuser, dbname)
}

// URL builds a loopback connection URL for user to dbname on port.
func URL(port int, user, dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(user),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Pause shuts the server down ("fast" mode) and keeps its folder, so [Cluster.Resume] can start
// it again on the same port. Tests use it to take a server away and bring it back.
func (c *Cluster) Pause(ctx context.Context) error {
	out, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dataDir(), "-m", "fast", "-w", "-t", "60")
	if err != nil {
		return fmt.Errorf("pgcluster: pg_ctl stop: %w: %s", err, out)
	}
	return nil
}

// Resume starts a paused server again on the port it had.
func (c *Cluster) Resume(ctx context.Context) error {
	c.cfg.Port = c.port
	return c.start(ctx)
}

// Restart stops the server ("fast" mode: connections are terminated, running transactions rolled
// back) and starts it again on the same port and settings, as an operator's restart does. For
// fault tests.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.Pause(ctx); err != nil {
		return err
	}
	return c.Resume(ctx)
}

// RunAs is the OS user that runs the server when this process is root, or "" when it is not
// (the server then runs as this process's user).
func (c *Cluster) RunAs() string {
	if c.runAs == nil {
		return ""
	}
	return c.runAs.Username
}

// Stop shuts the server down ("fast" mode: running transactions are rolled back, committed ones are
// kept) and removes the folder when it was temporary. It is idempotent.
func (c *Cluster) Stop(ctx context.Context) error {
	if c.stopped {
		return nil
	}
	c.stopped = true
	out, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dataDir(), "-m", "fast", "-w", "-t", "60")
	if err != nil {
		err = fmt.Errorf("pgcluster: pg_ctl stop: %w: %s", err, out)
	}
	if c.temp {
		err = errors.Join(err, os.RemoveAll(c.dir))
	}
	return err
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	bin := filepath.Join(c.binDir, name)
	var cmd *exec.Cmd
	if c.runAs != nil {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.runAs.Username, "--", bin}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, bin, args...)
	}
	cmd.Dir = c.dir
	// The server must outlive a Ctrl-C sent to this process's group: Stop shuts it down in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	return cmd.CombinedOutput()
}

func (c *Cluster) chown(dir string) error {
	if c.runAs == nil {
		return nil
	}
	uid, _ := strconv.Atoi(c.runAs.Uid)
	gid, _ := strconv.Atoi(c.runAs.Gid)
	// Walk only the top: initdb creates everything below as that user.
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	// Every parent must be traversable by that user.
	for p := filepath.Dir(dir); p != "/" && p != "."; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, fi.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("pgcluster: make %s traversable for %s: %w", p, c.runAs.Username, err)
			}
		}
	}
	return nil
}

var versionDir = regexp.MustCompile(`^[0-9]+$`)

// FindBinDir returns dir when set, else the newest /usr/lib/postgresql/NN/bin (NN >= 15) holding
// initdb: the server binaries a cluster uses (benchmarks also run pg_dump and pg_restore from it).
func FindBinDir(dir string) (string, error) { return findBinDir(dir) }

func findBinDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	entries, _ := os.ReadDir("/usr/lib/postgresql")
	best := 0
	for _, e := range entries {
		if !versionDir.MatchString(e.Name()) {
			continue
		}
		v, _ := strconv.Atoi(e.Name())
		if _, err := os.Stat(filepath.Join("/usr/lib/postgresql", e.Name(), "bin", "initdb")); err == nil && v >= 15 && v > best {
			best = v
		}
	}
	if best > 0 {
		return filepath.Join("/usr/lib/postgresql", strconv.Itoa(best), "bin"), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("pgcluster: no PostgreSQL 15+ server binaries found (run deploy/install-pgvector.sh)")
}

func freePort() (int, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
