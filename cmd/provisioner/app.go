package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailure  = 1 // database down, migrations failed, anything not the caller's fault
	exitBadInput = 2 // usage errors, invalid or unknown tenants and tiers, wrong tenant state
)

// Main runs the provisioner CLI. main wires it to the process (arguments, signals, standard
// streams, environment); tests run it in-process with their own.
type Main struct {
	// Stdout receives command output; Stderr receives logs (JSON), progress and error messages.
	Stdout, Stderr io.Writer
	// LookupEnv reads the environment (TENANTMEM_*). Default: nothing is set.
	LookupEnv func(key string) (string, bool)
	// OnListen, when set, is called by `serve` with the address it listens on, before serving.
	OnListen func(addr net.Addr)
}

// cli is the command line. Global flags come first; each command is a struct with a Run method.
type cli struct {
	DatabaseURL string `name:"database-url" env:"TENANTMEM_DATABASE_URL" required:"" placeholder:"URL" help:"PostgreSQL URL of the main database (init needs a superuser)."`
	OwnerRole   string `name:"owner-role" env:"TENANTMEM_OWNER_ROLE" default:"${owner_role}" help:"Role that owns tenant schemas and tables."`
	RouterRole  string `name:"router-role" env:"TENANTMEM_ROUTER_ROLE" default:"${router_role}" help:"Role the router logs in as (DML only, no BYPASSRLS)."`
	LogLevel    string `name:"log-level" env:"TENANTMEM_LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level: debug, info, warn or error (JSON logs on stderr)."`

	Init    initCmd    `cmd:"" help:"Initialise the database: roles, pgvector, control schema, shared tier. Idempotent."`
	Tenant  tenantCmd  `cmd:"" help:"Create, list, show, suspend, resume and delete tenants."`
	Key     keyCmd     `cmd:"" help:"Issue, list and revoke a tenant's API keys."`
	Migrate migrateCmd `cmd:"" help:"Migrate the control schema, the shared schema and every tenant schema to the latest version."`
	Serve   serveCmd   `cmd:"" help:"Serve the provisioning HTTP API (admin token from TENANTMEM_ADMIN_TOKEN)."`
}

// kongExit is how kong's Exit (after --help) unwinds to Run instead of ending the process.
type kongExit int

// Run runs one command line (without the program name) and returns the exit code. Cancelling ctx
// stops the command; for `serve` it is the graceful shutdown.
func (m *Main) Run(ctx context.Context, args []string) (code int) {
	stdout, stderr := m.Stdout, m.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	lookup := m.LookupEnv
	if lookup == nil {
		lookup = func(string) (string, bool) { return "", false }
	}
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(kongExit)
			if !ok {
				panic(r)
			}
			code = int(e)
		}
	}()

	var c cli
	parser, err := kong.New(&c,
		kong.Name("provisioner"),
		kong.Description("tenantmem's control plane: tenants, API keys, migrations and the provisioning API."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(kongExit(code)) }),
		kong.Vars{"owner_role": provision.DefaultOwnerRole, "router_role": provision.DefaultRouterRole},
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Resolvers(envResolver(lookup)),
	)
	if err != nil {
		fmt.Fprintf(stderr, "provisioner: %v\n", err)
		return exitFailure
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "provisioner: %v (see provisioner --help)\n", err)
		return exitBadInput
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		fmt.Fprintf(stderr, "provisioner: --log-level: %v\n", err)
		return exitBadInput
	}
	rc := &runContext{
		ctx:       ctx,
		main:      m,
		cli:       &c,
		stdout:    stdout,
		stderr:    stderr,
		lookupEnv: lookup,
		logger:    slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})),
	}
	defer rc.close()
	if err := kctx.Run(rc); err != nil {
		fmt.Fprintf(stderr, "provisioner: %s\n", oneLine(err.Error()))
		return exitCode(err)
	}
	return exitOK
}

// envResolver resolves flags from their env tags through lookup, so that tests can run commands
// with their own environment. (kong itself reads the process environment first; values found here
// take precedence, and flags given on the command line win over both.)
func envResolver(lookup func(string) (string, bool)) kong.Resolver {
	return kong.ResolverFunc(func(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
		for _, name := range flag.Tag.Envs {
			if v, ok := lookup(name); ok {
				return v, nil
			}
		}
		return nil, nil
	})
}

// oneLine folds a multi-line error message (pgconn lists every address it tried) into one line.
func oneLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, " ")
}

// usageError is bad input found by the CLI itself (missing configuration, malformed values).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// exitCode is 2 for anything the caller can fix by changing the input, 1 otherwise.
func exitCode(err error) int {
	var (
		fe *registry.FieldError
		ue *usageError
		pe *kong.ParseError
	)
	switch {
	case errors.As(err, &fe), errors.As(err, &ue), errors.As(err, &pe),
		errors.Is(err, registry.ErrNotFound), errors.Is(err, registry.ErrExists), errors.Is(err, registry.ErrConflict):
		return exitBadInput
	}
	return exitFailure
}

// runContext is what every command's Run receives: the I/O of Main and a lazily opened database.
type runContext struct {
	ctx       context.Context
	main      *Main
	cli       *cli
	stdout    io.Writer
	stderr    io.Writer
	lookupEnv func(string) (string, bool)
	logger    *slog.Logger
	// actor (audit log) and parallelism (migrate) configure the Provisioner; set them before the
	// first call of provisioner.
	actor       string
	parallelism int

	pool *pgxpool.Pool
	prov *provision.Provisioner
}

// provisioner opens the pool and the Provisioner on first use.
func (rc *runContext) provisioner() (*provision.Provisioner, error) {
	if rc.prov != nil {
		return rc.prov, nil
	}
	pc, err := pgxpool.ParseConfig(rc.cli.DatabaseURL)
	if err != nil {
		return nil, usagef("--database-url: %v", err)
	}
	pool, err := pgxpool.NewWithConfig(rc.ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	prov, err := provision.New(provision.Config{
		Pool:        pool,
		OwnerRole:   rc.cli.OwnerRole,
		RouterRole:  rc.cli.RouterRole,
		Logger:      rc.logger,
		Actor:       cmp.Or(rc.actor, "provisioner-cli"),
		Parallelism: rc.parallelism,
	})
	if err != nil {
		pool.Close()
		return nil, usagef("%v", err)
	}
	rc.pool, rc.prov = pool, prov
	return prov, nil
}

func (rc *runContext) close() {
	if rc.pool != nil {
		rc.pool.Close()
	}
}

// isTerminal reports whether w is a terminal (for \r-updated progress lines).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
