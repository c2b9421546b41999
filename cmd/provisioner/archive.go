package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/archive"
	"github.com/tenantmem/tenantmem/internal/command"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

type tenantBackupCmd struct {
	ID                string `arg:"" name:"id" help:"Tenant id."`
	Out               string `name:"out" short:"o" default:"-" placeholder:"FILE" help:"Archive file, or - for standard output (default)."`
	IncludeKeyHashes  bool   `name:"include-key-hashes" help:"Put the SHA-256 hashes of the tenant's API keys in the archive, so a restore under the same id makes the old keys work again. Whoever holds the archive and a key can then reach the restored tenant."`
	SkipSearchHistory bool   `name:"skip-search-history" help:"Leave the search history out."`
	EmbeddingModel    string `name:"embedding-model" env:"TENANTMEM_EMBEDDING_MODEL" placeholder:"MODEL" help:"Record the model that made the vectors in the manifest."`
	Quiet             bool   `name:"quiet" short:"q" help:"No progress output."`
}

func (cmd *tenantBackupCmd) Run(rc *runContext) error {
	if err := checkTenantID(cmd.ID); err != nil {
		return err
	}
	if cmd.Out != "-" && cmd.Out == "" {
		return &registry.FieldError{Field: "out", Message: "must be a file name or -"}
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	var (
		w      = rc.stdout
		f      *os.File
		target string
	)
	if cmd.Out != "-" {
		// Write next to the target and rename at the end: a failed backup leaves no file that
		// looks like an archive.
		target = cmd.Out
		f, err = os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".partial-*")
		if err != nil {
			return &registry.FieldError{Field: "out", Message: err.Error()}
		}
		defer func() {
			if f != nil {
				_ = f.Close()
				_ = os.Remove(f.Name())
			}
		}()
		w = f
	}
	tp := newTransferProgress(rc.stderr, "backup "+cmd.ID, isTerminal(rc.stderr), cmd.Quiet)
	res, err := prov.Backup(rc.ctx, cmd.ID, w, provision.BackupParams{
		IncludeKeyHashes: cmd.IncludeKeyHashes, SkipSearchHistory: cmd.SkipSearchHistory,
		EmbeddingModel: cmd.EmbeddingModel, Progress: tp.report,
	})
	tp.finish()
	if err != nil {
		return tenantError(cmd.ID, err)
	}
	size := res.Bytes
	if f != nil {
		if err := f.Sync(); err != nil {
			return err
		}
		st, err := f.Stat()
		if err != nil {
			return err
		}
		size = st.Size()
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Rename(f.Name(), target); err != nil {
			return err
		}
		f = nil
	}
	if cmd.Out != "-" {
		fmt.Fprintf(rc.stdout, "tenant %s backed up to %s: %s, %s, in %s\n", cmd.ID, target,
			rowsSummary(res.Manifest), humanBytes(size), res.Took.Round(time.Millisecond))
	} else if !cmd.Quiet {
		fmt.Fprintf(rc.stderr, "tenant %s backed up: %s, %s uncompressed, in %s\n", cmd.ID,
			rowsSummary(res.Manifest), humanBytes(res.Bytes), res.Took.Round(time.Millisecond))
	}
	return nil
}

type tenantRestoreCmd struct {
	File      string `arg:"" name:"file" help:"Archive file, or - for standard input."`
	As        string `name:"as" placeholder:"TENANT_ID" help:"Restore under another tenant id (new document ids and a new API key)."`
	Tier      string `name:"tier" placeholder:"TIER" help:"shared, schema or database (default: the archive's tier)."`
	Placement string `name:"placement" placeholder:"PLACEMENT" help:"Placement to restore onto (default: the archive's when it takes the tier, else the default policy of a new tenant)."`
	Replace   bool   `name:"replace" help:"Replace an existing tenant with the same id (it serves until the archive is loaded and verified)."`
	JSON      bool   `name:"json" help:"Print JSON."`
	Quiet     bool   `name:"quiet" short:"q" help:"No progress output."`
}

func (cmd *tenantRestoreCmd) Run(rc *runContext) error {
	if cmd.As != "" {
		if err := checkTenantID(cmd.As); err != nil {
			return err
		}
	}
	var tier registry.Tier
	if cmd.Tier != "" {
		t, err := registry.ParseTier(cmd.Tier)
		if err != nil {
			return err
		}
		tier = t
	}
	src := rc.main.stdin()
	if cmd.File != "-" {
		f, err := os.Open(cmd.File)
		if err != nil {
			return &registry.FieldError{Field: "file", Message: err.Error()}
		}
		defer func() { _ = f.Close() }()
		src = f
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	tp := newTransferProgress(rc.stderr, "restore", isTerminal(rc.stderr), cmd.Quiet)
	res, err := prov.Restore(rc.ctx, src, provision.RestoreParams{
		As: cmd.As, Tier: tier, Placement: cmd.Placement, Replace: cmd.Replace, Progress: tp.report,
	})
	tp.finish()
	if err != nil {
		if provision.IsArchiveError(err) {
			return describe(err, "%s: %v", cmd.File, err)
		}
		if ex, ok := errors.AsType[*provision.TenantExistsError](err); ok {
			return describe(err, "tenant %q already exists (%s, %s); restore with --replace to overwrite it, or with --as and another id to restore beside it",
				ex.ID, ex.Tier, ex.Status)
		}
		if rf, ok := errors.AsType[*provision.RestoreRefusedError](err); ok {
			// The provisioner's own words name the tenant and what to do (an unfinished restore
			// of another archive is rerun with that archive, not deleted).
			return describe(err, "%s", rf.Reason)
		}
		return tenantError(cmp.Or(cmd.As, "(the archive's tenant)"), err)
	}
	if cmd.JSON {
		return writeJSON(rc.stdout, res)
	}
	w := newTable(rc.stdout)
	writeTenant(w, res.Tenant)
	var rows []string
	for _, t := range []string{"documents", "chunks", "embedding_jobs", "search_history"} {
		if n, ok := res.Rows[t]; ok {
			rows = append(rows, fmt.Sprintf("%d %s", n, strings.ReplaceAll(t, "_", " ")))
		}
	}
	fmt.Fprintf(w, "restored\t%s\n", strings.Join(rows, ", "))
	if res.KeysRestored > 0 {
		fmt.Fprintf(w, "keys restored\t%d\n", res.KeysRestored)
	}
	if res.Key != nil {
		fmt.Fprintf(w, "key id\t%s\n", res.Key.KeyID)
		fmt.Fprintf(w, "api key\t%s\n", res.Key.Key)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, n := range res.Notes {
		fmt.Fprintln(rc.stdout, "note: "+n)
	}
	if res.Key != nil {
		fmt.Fprintln(rc.stdout, "The API key is shown only once: store it now.")
	}
	return nil
}

func rowsSummary(m archive.Manifest) string {
	var docs, chunks int64
	for _, t := range m.Tables {
		switch t.Name {
		case "documents":
			docs = t.Rows
		case "chunks":
			chunks = t.Rows
		}
	}
	return fmt.Sprintf("%d documents, %d chunks", docs, chunks)
}

// transferProgress prints the progress of a backup, restore, move or import on stderr: rows,
// bytes, rate and ETA, on one line rewritten with \r on a terminal, else a line every 5 seconds.
type transferProgress struct {
	w       io.Writer
	what    string
	tty     bool
	quiet   bool
	last    time.Time
	printed bool
}

func newTransferProgress(w io.Writer, what string, tty, quiet bool) *transferProgress {
	return &transferProgress{w: w, what: what, tty: tty, quiet: quiet}
}

func (p *transferProgress) report(pr archive.Progress) {
	if p.quiet {
		return
	}
	now := time.Now()
	every := 5 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	if now.Sub(p.last) < every && pr.Rows != pr.TotalRows {
		return
	}
	p.last = now
	line := formatProgress(p.what, pr)
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\033[K", line)
		p.printed = true
		return
	}
	fmt.Fprintln(p.w, line)
}

func (p *transferProgress) finish() {
	if p.tty && p.printed {
		fmt.Fprintln(p.w)
	}
}

// formatProgress is "what: rows/total rows (pct), bytes, rows/s, MB/s, ETA".
func formatProgress(what string, pr archive.Progress) string {
	secs := pr.Elapsed.Seconds()
	var rate, bps float64
	if secs > 0 {
		rate, bps = float64(pr.Rows)/secs, float64(pr.Bytes)/secs
	}
	pct := 100.0
	if pr.TotalRows > 0 {
		pct = float64(pr.Rows) * 100 / float64(pr.TotalRows)
	}
	eta := "-"
	if rate > 0 && pr.TotalRows >= pr.Rows {
		eta = time.Duration(float64(pr.TotalRows-pr.Rows) / rate * float64(time.Second)).Round(time.Second).String()
	}
	return fmt.Sprintf("%s: %d/%d rows (%.0f%%, %s), %s, %.0f rows/s, %s/s, ETA %s",
		what, pr.Rows, pr.TotalRows, pct, pr.Table, humanBytes(pr.Bytes), rate, humanBytes(int64(bps)), eta)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

type importLLMemoryCmd struct {
	SourceURL string `name:"source-url" env:"TENANTMEM_LLMEMORY_URL" required:"" placeholder:"URL" help:"PostgreSQL URL of the llmemory database (read only)."`
	Schema    string `name:"schema" default:"llmemory" help:"llmemory's schema in that database (default ${default})."`
	Owner     string `name:"owner" placeholder:"OWNER_ID" help:"Import this owner_id."`
	As        string `name:"as" placeholder:"TENANT_ID" help:"Tenant id of --owner (default: the owner id)."`
	AllOwners bool   `name:"all-owners" help:"Import every owner_id, one tenant each."`
	Prefix    string `name:"prefix" placeholder:"PREFIX" help:"With --all-owners: tenant id = PREFIX + owner id."`
	Tier      string `name:"tier" default:"shared" help:"Tier of the tenants the import creates: shared, schema or database (default ${default})."`
	Placement string `name:"placement" placeholder:"PLACEMENT" help:"Placement of the tenants the import creates (default: the default policy of a new tenant)."`
	Refresh   bool   `name:"refresh" help:"Import again the documents a tenant already has (by id_at_origin); by default a rerun skips them."`
	JSON      bool   `name:"json" help:"Print the report as JSON."`
	Quiet     bool   `name:"quiet" short:"q" help:"No progress output."`
}

func (cmd *importLLMemoryCmd) Run(rc *runContext) error {
	tier, err := registry.ParseTier(cmd.Tier)
	if err != nil {
		return err
	}
	if cmd.As != "" {
		if err := checkTenantID(cmd.As); err != nil {
			return err
		}
	}
	srcCfg, err := pgxpool.ParseConfig(cmd.SourceURL)
	if err != nil {
		return command.Usagef("--source-url: %v", err)
	}
	srcCfg.MaxConns = 2
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	src, err := pgxpool.NewWithConfig(rc.ctx, srcCfg)
	if err != nil {
		return fmt.Errorf("connect to the llmemory database: %w", err)
	}
	defer src.Close()
	last := time.Time{}
	rep, err := prov.ImportLLMemory(rc.ctx, provision.LLMemoryImportParams{
		Source: src, Schema: cmd.Schema, Owner: cmd.Owner, AllOwners: cmd.AllOwners, As: cmd.As, Prefix: cmd.Prefix,
		Tier: tier, Placement: cmd.Placement, Refresh: cmd.Refresh,
		Progress: func(pr provision.LLMemoryProgress) {
			if cmd.Quiet || (time.Since(last) < 5*time.Second && pr.Documents != pr.TotalDocs) {
				return
			}
			last = time.Now()
			rate := float64(pr.Documents) / max(pr.Elapsed.Seconds(), 1e-9)
			eta := "-"
			if rate > 0 {
				eta = time.Duration(float64(pr.TotalDocs-pr.Documents) / rate * float64(time.Second)).Round(time.Second).String()
			}
			fmt.Fprintf(rc.stderr, "import-llmemory: %d/%d documents (owner %s), %d chunks, %.0f documents/s, %.0f chunks/s, ETA %s\n",
				pr.Documents, pr.TotalDocs, pr.Owner, pr.Chunks, rate, float64(pr.Chunks)/max(pr.Elapsed.Seconds(), 1e-9), eta)
		},
	})
	if err != nil {
		return err
	}
	if cmd.JSON {
		if err := writeJSON(rc.stdout, rep); err != nil {
			return err
		}
	} else {
		w := newTable(rc.stdout)
		fmt.Fprintln(w, "OWNER\tTENANT\tNEW\tDOCUMENTS\tSKIPPED\tFAILED\tCHUNKS\tVECTORS\tQUEUED\tAPI KEY")
		for _, o := range rep.Owners {
			key := "-"
			if o.Key != nil {
				key = o.Key.Key
			}
			if o.Error != "" {
				key = "error: " + o.Error
			}
			fmt.Fprintf(w, "%s\t%s\t%t\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", o.OwnerID, o.TenantID, o.Created, o.Documents, o.Skipped,
				len(o.Failed), o.Chunks, o.Vectors, o.Queued, key)
		}
		if err := w.Flush(); err != nil {
			return err
		}
		for _, o := range rep.Owners {
			for _, f := range o.Failed {
				fmt.Fprintf(rc.stdout, "not imported: owner %s, document %s: %s\n", o.OwnerID, f.IDAtOrigin, f.Error)
			}
		}
		for _, n := range rep.NotCarried {
			fmt.Fprintln(rc.stdout, "not carried over: "+n)
		}
		fmt.Fprintf(rc.stdout, "imported in %s; new API keys are shown only once: store them now.\n", rep.Took.Round(time.Millisecond))
	}
	var failed int
	for _, o := range rep.Owners {
		if o.Error != "" {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d owners were not imported; fix them and run the import again", failed, len(rep.Owners))
	}
	return nil
}

type tenantMoveCmd struct {
	ID        string `arg:"" name:"id" help:"Tenant id."`
	Tier      string `name:"tier" placeholder:"TIER" help:"Destination tier: shared, schema or database."`
	Placement string `name:"placement" placeholder:"PLACEMENT" help:"Destination placement (default: the tenant's own when it takes the tier, else the default policy of a new tenant)."`
	Abort     bool   `name:"abort" help:"Roll back an unfinished move that has not flipped yet."`
	JSON      bool   `name:"json" help:"Print JSON."`
	Quiet     bool   `name:"quiet" short:"q" help:"No progress output."`
}

func (cmd *tenantMoveCmd) Run(rc *runContext) error {
	if err := checkTenantID(cmd.ID); err != nil {
		return err
	}
	if cmd.Abort {
		prov, err := rc.provisioner()
		if err != nil {
			return err
		}
		if err := prov.AbortMove(rc.ctx, cmd.ID); err != nil {
			if errors.Is(err, registry.ErrNotFound) {
				return describe(err, "tenant %q has no move in progress", cmd.ID)
			}
			return err
		}
		fmt.Fprintf(rc.stdout, "move of tenant %s aborted; it serves from where it was\n", cmd.ID)
		return nil
	}
	if cmd.Tier == "" {
		return &registry.FieldError{Field: "tier", Message: "give the destination tier (or --abort)"}
	}
	tier, err := registry.ParseTier(cmd.Tier)
	if err != nil {
		return err
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	tp := newTransferProgress(rc.stderr, "move "+cmd.ID+": copy", isTerminal(rc.stderr), cmd.Quiet)
	res, err := prov.MoveTenant(rc.ctx, cmd.ID, provision.MoveParams{Tier: tier, Placement: cmd.Placement, Progress: tp.report,
		OnPhase: func(phase string) {
			tp.finish()
			if !cmd.Quiet {
				fmt.Fprintf(rc.stderr, "move %s: %s\n", cmd.ID, phase)
			}
		}})
	tp.finish()
	if err != nil {
		switch {
		case errors.Is(err, provision.ErrMoveUnfinished):
			return describe(err, "%v (tenant move %s --abort rolls it back)", err, shellQuote(cmd.ID))
		case errors.Is(err, registry.ErrConflict):
			return err // it says why (suspended, another job, ...)
		}
		return tenantError(cmd.ID, err)
	}
	if cmd.JSON {
		return writeJSON(rc.stdout, res)
	}
	w := newTable(rc.stdout)
	writeTenant(w, res.Tenant)
	fmt.Fprintf(w, "moved from\t%s\n", res.From)
	fmt.Fprintf(w, "catch-up\t%d rounds, %d changes\n", res.Rounds, res.Changes)
	fmt.Fprintf(w, "writes paused\t%s\n", res.WritePause.Round(time.Millisecond))
	fmt.Fprintf(w, "took\t%s\n", res.Took.Round(time.Millisecond))
	return w.Flush()
}

type promoteCmd struct {
	MinChunks int64 `name:"min-chunks" env:"TENANTMEM_PROMOTE_MIN_CHUNKS" required:"" placeholder:"N" help:"Move shared-tier tenants with at least N chunks to their own schema."`
	MaxMoves  int   `name:"max-moves" default:"1" placeholder:"N" help:"At most N moves in this run, biggest tenants first (default ${default})."`
	DryRun    bool  `name:"dry-run" help:"List the tenants over the threshold; move nothing."`
	JSON      bool  `name:"json" help:"Print JSON."`
}

func (cmd *promoteCmd) Run(rc *runContext) error {
	if cmd.MinChunks < 1 {
		return &registry.FieldError{Field: "min-chunks", Message: "must be at least 1"}
	}
	if cmd.MaxMoves < 1 {
		return &registry.FieldError{Field: "max-moves", Message: "must be at least 1"}
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	rep, err := prov.Promote(rc.ctx, provision.PromoteParams{MinChunks: cmd.MinChunks, MaxMoves: cmd.MaxMoves, DryRun: cmd.DryRun})
	if err != nil {
		return err
	}
	if cmd.JSON {
		return writeJSON(rc.stdout, rep)
	}
	for _, r := range rep.Resumed {
		fmt.Fprintf(rc.stdout, "finished the unfinished move of %s to %s\n", r.Tenant.ID, r.Tenant.Tier)
	}
	if len(rep.Candidates) == 0 {
		fmt.Fprintf(rc.stdout, "no shared-tier tenant has %d chunks or more\n", cmd.MinChunks)
	}
	for _, c := range rep.Candidates {
		fmt.Fprintf(rc.stdout, "candidate %s: %d chunks\n", c.TenantID, c.Chunks)
	}
	for _, m := range rep.Moved {
		fmt.Fprintf(rc.stdout, "promoted %s to its own schema %s (writes paused %s)\n", m.Tenant.ID, m.Tenant.SchemaName,
			m.WritePause.Round(time.Millisecond))
	}
	if len(rep.Failed) > 0 {
		for id, e := range rep.Failed {
			fmt.Fprintf(rc.stdout, "failed %s: %s\n", id, e)
		}
		return fmt.Errorf("%d promotions failed", len(rep.Failed))
	}
	return nil
}
