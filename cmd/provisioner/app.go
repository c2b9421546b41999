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
	"time"

	"github.com/tenantmem/tenantmem/internal/command"

	"github.com/alecthomas/kong"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/limit"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// Main runs the provisioner CLI. main wires it to the process (arguments, signals, standard
// streams, environment); tests run it in-process with their own.
type Main struct {
	// Stdin is read by commands given "-" as their input file (`tenant restore -`, `tenant
	// create-bulk --ids-file -`). Default: empty.
	Stdin io.Reader
	// Stdout receives command output; Stderr receives logs (JSON), progress and error messages.
	Stdout, Stderr io.Writer
	// LookupEnv reads the environment (TENANTMEM_*). Default: nothing is set.
	LookupEnv func(key string) (string, bool)
	// Environ lists the environment ("KEY=value"), for the per-placement credential variables
	// (TENANTMEM_PLACEMENT_<NAME>_PROVISIONER_USER, _PASSWORD). Default: none.
	Environ func() []string
	// OnListen, when set, is called by `serve` with the address it listens on, before serving.
	OnListen func(addr net.Addr)
	// OnMetricsListen, when set, is called by `serve` with the address of its metrics listener.
	OnMetricsListen func(addr net.Addr)
}

// cli is the command line. Global flags come first; each command is a struct with a Run method.
type cli struct {
	DatabaseURL string              `name:"database-url" env:"TENANTMEM_DATABASE_URL" required:"" placeholder:"URL" help:"PostgreSQL URL of the main database (init needs a superuser)."`
	OwnerRole   string              `name:"owner-role" env:"TENANTMEM_OWNER_ROLE" default:"${owner_role}" help:"Role that owns tenant schemas and tables."`
	RouterRole  string              `name:"router-role" env:"TENANTMEM_ROUTER_ROLE" default:"${router_role}" help:"Role the router logs in as (DML only, no BYPASSRLS)."`
	LogLevel    string              `name:"log-level" env:"TENANTMEM_LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level: debug, info, warn or error (JSON logs on stderr)."`
	Credentials string              `name:"placement-credentials" env:"TENANTMEM_PLACEMENT_CREDENTIALS" placeholder:"FILE" help:"Credentials file for placements other than local: lines placement:login:user:password (see docs/scaling.md); mode 600."`
	Version     command.VersionFlag `name:"version" help:"Print the version (release, commit, build date) and exit."`

	TenantMaxDocuments int64 `name:"tenant-max-documents" env:"TENANTMEM_TENANT_MAX_DOCUMENTS" default:"1000000" help:"Default document quota of one tenant, as the router's flag: restores and imports that exceed it are refused; 0 means no quota (default ${default})."`
	TenantMaxChunks    int64 `name:"tenant-max-chunks" env:"TENANTMEM_TENANT_MAX_CHUNKS" default:"10000000" help:"Default chunk quota of one tenant, as the router's flag; 0 means no quota (default ${default})."`
	TenantMaxBytes     int64 `name:"tenant-max-bytes" env:"TENANTMEM_TENANT_MAX_BYTES" default:"10737418240" placeholder:"BYTES" help:"Default quota of document content of one tenant in bytes, as the router's flag; 0 means no quota (default ${default})."`

	Init      initCmd      `cmd:"" help:"Initialise the database: roles, pgvector, control schema, shared tier. Idempotent."`
	Tenant    tenantCmd    `cmd:"" help:"Create, list, show, suspend, resume, delete, back up, restore and move tenants."`
	Key       keyCmd       `cmd:"" help:"Issue, list and revoke a tenant's API keys."`
	Placement placementCmd `cmd:"" help:"Add, list, show, drain, disable, activate and remove placements (PostgreSQL servers)."`
	Migrate   migrateCmd   `cmd:"" help:"Migrate the control schema and, on every placement, the shared schema and every tenant schema and database to the latest version."`

	ImportLLMemory importLLMemoryCmd `cmd:"" name:"import-llmemory" help:"Import the documents, chunks and vectors of an llmemory database, one tenant per owner_id (resumable)."`
	Promote        promoteCmd        `cmd:"" help:"Run the promotion policy once: move the biggest shared-tier tenants to their own schema."`
	Serve          serveCmd          `cmd:"" help:"Serve the provisioning HTTP API (admin token from TENANTMEM_ADMIN_TOKEN)."`
}

// Run runs one command line (without the program name) and returns the exit code. Cancelling ctx
// stops the command; for `serve` it is the graceful shutdown.
func (m *Main) Run(ctx context.Context, args []string) int {
	o := command.IO{Stdout: m.Stdout, Stderr: m.Stderr, LookupEnv: m.LookupEnv}.WithDefaults()
	var c cli
	kctx, code, ok := command.Parse(o, command.ParseParams{
		Name:        "provisioner",
		Description: "tenantmem's control plane: tenants, API keys, migrations and the provisioning API.",
		Grammar:     &c,
		Vars:        kong.Vars{"owner_role": provision.DefaultOwnerRole, "router_role": provision.DefaultRouterRole},
		Args:        args,
	})
	if !ok {
		return code
	}
	logger, err := command.Logger(o.Stderr, c.LogLevel)
	if err != nil {
		return command.Fail(o, "provisioner", err, isBadInput)
	}
	rc := &runContext{
		ctx:       ctx,
		main:      m,
		cli:       &c,
		stdout:    o.Stdout,
		stderr:    o.Stderr,
		lookupEnv: o.LookupEnv,
		logger:    logger,
	}
	defer rc.close()
	if err := kctx.Run(rc); err != nil {
		return command.Fail(o, "provisioner", err, isBadInput)
	}
	return command.ExitOK
}

// isBadInput reports the registry errors the caller fixes by changing the input.
func isBadInput(err error) bool {
	var fe *registry.FieldError
	return errors.As(err, &fe) || errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrExists) ||
		errors.Is(err, registry.ErrConflict) || provision.IsArchiveError(err) || errors.Is(err, provision.ErrMoveUnfinished) ||
		errors.Is(err, memory.ErrQuotaExceeded)
}

func (m *Main) stdin() io.Reader {
	if m.Stdin == nil {
		return strings.NewReader("")
	}
	return m.Stdin
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
	// migrationLockTimeout is provision.Config.MigrationLockTimeout (migrate --lock-timeout).
	migrationLockTimeout time.Duration

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
		return nil, command.Usagef("--database-url: %v", err)
	}
	var environ []string
	if rc.main.Environ != nil {
		environ = rc.main.Environ()
	}
	creds, err := command.PlacementCredentials(rc.cli.Credentials, environ)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(rc.ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	prov, err := provision.New(provision.Config{
		Pool:                 pool,
		OwnerRole:            rc.cli.OwnerRole,
		RouterRole:           rc.cli.RouterRole,
		Logger:               rc.logger,
		Actor:                cmp.Or(rc.actor, "provisioner-cli"),
		Parallelism:          rc.parallelism,
		MigrationLockTimeout: rc.migrationLockTimeout,
		Quota:                quotaFlags(rc.cli),
		Credentials:          creds,
	})
	if err != nil {
		pool.Close()
		return nil, command.Usagef("%v", err)
	}
	rc.pool, rc.prov = pool, prov
	return prov, nil
}

func (rc *runContext) close() {
	if rc.prov != nil {
		rc.prov.Close()
	}
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

// quotaFlags are the default storage quotas of the flags: 0 (no quota) becomes limit.Unlimited,
// as in the router.
func quotaFlags(c *cli) limit.Limits {
	l := limit.Limits{MaxDocuments: c.TenantMaxDocuments, MaxChunks: c.TenantMaxChunks, MaxContentBytes: c.TenantMaxBytes}
	for _, p := range []*int64{&l.MaxDocuments, &l.MaxChunks, &l.MaxContentBytes} {
		if *p == 0 {
			*p = limit.Unlimited
		}
	}
	return l
}
