package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

type tenantCreateBulkCmd struct {
	IDsFile   string `name:"ids-file" required:"" placeholder:"FILE" help:"One tenant id per line; - reads standard input. Blank lines and lines starting with # are skipped."`
	KeysFile  string `name:"keys-file" required:"" placeholder:"FILE" help:"File the new API keys are appended to (created with mode 0600), one JSON object a line: {tenant_id, key_id, api_key}. Keys are shown only there, once."`
	Tier      string `name:"tier" default:"shared" placeholder:"TIER" help:"Tier of the new tenants: shared, the only tier created in bulk (default ${default})."`
	BatchSize int    `name:"batch-size" default:"1000" placeholder:"N" help:"Tenants created per transaction, 1 to 10000 (default ${default})."`
}

func (cmd *tenantCreateBulkCmd) Run(rc *runContext) error {
	tier, err := registry.ParseTier(cmd.Tier)
	if err != nil {
		return err
	}
	if cmd.BatchSize < 1 || cmd.BatchSize > provision.MaxBulkBatchSize {
		return &registry.FieldError{Field: "batch-size", Message: fmt.Sprintf("must be from 1 to %d", provision.MaxBulkBatchSize)}
	}
	ids, err := readIDs(cmd.IDsFile, rc.main)
	if err != nil {
		return err
	}
	// Check every id before connecting or creating the keys file: bad input writes nothing.
	if err := provision.ValidateBulk(provision.TenantBulkCreateParams{IDs: ids, Tier: tier, BatchSize: cmd.BatchSize}); err != nil {
		return describeLine(err, ids)
	}
	prov, err := rc.provisioner()
	if err != nil {
		return err
	}
	// Append, never truncate: a file of keys from an earlier run must survive a rerun.
	f, err := os.OpenFile(cmd.KeysFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return &registry.FieldError{Field: "keys-file", Message: err.Error()}
	}
	// Every batch's keys were synced already; a failing close has nothing more to lose.
	defer func() { _ = f.Close() }()
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	progress := newProgress(rc.stderr, isTerminal(rc.stderr), "creating", "tenants")
	res, err := prov.CreateTenants(rc.ctx, provision.TenantBulkCreateParams{
		IDs: ids, Tier: tier, BatchSize: cmd.BatchSize,
		// Each batch's keys are on disk before the next batch starts.
		OnBatch: func(_ context.Context, created []provision.TenantCreatedKey) error {
			for _, k := range created {
				if err := enc.Encode(k); err != nil { //nolint:gosec // writing the new keys to the 0600 file is the command's job
					return err
				}
			}
			if err := w.Flush(); err != nil {
				return err
			}
			return f.Sync()
		},
		Progress: func(p provision.BulkProgress) {
			progress.update(p.Done, p.Total, fmt.Sprintf("%d created", p.Created))
		},
	})
	progress.finish()
	if err != nil {
		return fmt.Errorf("%w (%d tenants created before it stopped; their keys are in %s)", err, res.Created, cmd.KeysFile)
	}
	fmt.Fprintf(rc.stdout, "created %d %s tenants; keys appended to %s\n", res.Created, tier, cmd.KeysFile)
	if len(res.Existing) > 0 {
		fmt.Fprintf(rc.stdout, "%d ids existed already and were left alone (issue keys for them with `key issue ID` if needed):\n", len(res.Existing))
		for i, id := range res.Existing {
			if i == 20 {
				fmt.Fprintf(rc.stdout, "  ... and %d more\n", len(res.Existing)-20)
				break
			}
			fmt.Fprintf(rc.stdout, "  %s\n", id)
		}
	}
	return nil
}

// readIDs reads the ids of name ("-": the standard input of m).
func readIDs(name string, m *Main) ([]string, error) {
	var r io.Reader
	if name == "-" {
		r = m.Stdin
		if r == nil {
			r = os.Stdin
		}
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, &registry.FieldError{Field: "ids-file", Message: err.Error()}
		}
		defer func() { _ = f.Close() }() // read only
		r = f
	}
	var ids []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ids = append(ids, line)
	}
	if err := sc.Err(); err != nil {
		return nil, &registry.FieldError{Field: "ids-file", Message: err.Error()}
	}
	if len(ids) == 0 {
		return nil, &registry.FieldError{Field: "ids-file", Message: "holds no tenant id"}
	}
	return ids, nil
}

// describeLine adds the offending id to a validation error of tenant_ids[i].
func describeLine(err error, ids []string) error {
	var fe *registry.FieldError
	var i int
	if errors.As(err, &fe) {
		if _, scanErr := fmt.Sscanf(fe.Field, "tenant_ids[%d]", &i); scanErr == nil && i < len(ids) {
			return &registry.FieldError{Field: "ids-file", Message: fmt.Sprintf("id %d (%q): %s", i+1, ids[i], fe.Message)}
		}
	}
	return err
}
