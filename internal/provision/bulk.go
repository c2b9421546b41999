package provision

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// Bulk creation limits.
const (
	// DefaultBulkBatchSize is how many tenants one transaction of CreateTenants creates.
	DefaultBulkBatchSize = 1000
	// MaxBulkBatchSize bounds TenantBulkCreateParams.BatchSize.
	MaxBulkBatchSize = 10000
)

// TenantBulkCreateParams describes many shared-tier tenants to create in one call.
type TenantBulkCreateParams struct {
	// IDs are the new tenants' ids: valid, distinct, at least one.
	IDs []string
	// Tier must be shared: a shared-tier tenant is a few registry rows, which batch well, while a
	// schema-tier tenant is dominated by its own DDL, which does not.
	Tier registry.Tier
	// BatchSize is how many tenants one transaction creates. Default 1000, at most 10,000.
	BatchSize int
	// OnBatch, when set, receives the tenants and keys of each committed batch before the call
	// goes on (one call at a time, batches in any order). An error stops the call; batches
	// already committed stay created. It is where keys are written down: they are shown once.
	OnBatch func(ctx context.Context, created []TenantCreatedKey) error
	// Progress, when set, is called after each batch (one call at a time).
	Progress func(BulkProgress)
}

// TenantCreatedKey is one tenant created in bulk and its first API key, shown once.
type TenantCreatedKey struct {
	TenantID string `json:"tenant_id"`
	KeyID    string `json:"key_id"`
	APIKey   string `json:"api_key"`
}

// BulkProgress counts the ids CreateTenants has handled.
type BulkProgress struct {
	// Done counts ids handled so far (created or found existing), of Total.
	Done, Total int
	// Created counts the tenants created so far.
	Created int
}

// TenantBulkCreateResult is the outcome of CreateTenants.
type TenantBulkCreateResult struct {
	// Created counts the tenants created, those of a batch whose OnBatch failed included.
	Created int `json:"created"`
	// Existing lists the ids that existed already, in any state, and were left alone, sorted.
	Existing []string `json:"existing"`
}

// ValidateBulk checks the input of CreateTenants without touching the database: a
// *registry.FieldError names the first problem (tenant_ids[i] for an id).
func ValidateBulk(p TenantBulkCreateParams) error {
	if p.Tier != registry.TierShared {
		if _, err := registry.ParseTier(string(p.Tier)); err != nil {
			return err
		}
		return &registry.FieldError{Field: "tier", Message: "bulk creation takes the shared tier only; create schema-tier tenants one by one"}
	}
	if len(p.IDs) == 0 {
		return &registry.FieldError{Field: "tenant_ids", Message: "must not be empty"}
	}
	if p.BatchSize < 0 || p.BatchSize > MaxBulkBatchSize {
		return &registry.FieldError{Field: "batch_size", Message: fmt.Sprintf("must be from 1 to %d", MaxBulkBatchSize)}
	}
	seen := make(map[string]int, len(p.IDs))
	for i, id := range p.IDs {
		if err := schema.ValidateTenantID(id); err != nil {
			return &registry.FieldError{Field: fmt.Sprintf("tenant_ids[%d]", i), Message: err.Error()}
		}
		if j, dup := seen[id]; dup {
			return &registry.FieldError{Field: fmt.Sprintf("tenant_ids[%d]", i), Message: fmt.Sprintf("%q is also tenant_ids[%d]", id, j)}
		}
		seen[id] = i
	}
	return nil
}

// CreateTenants creates many shared-tier tenants, each active at once with one API key, in
// batches of BatchSize tenants per transaction, Config.Parallelism batches at a time. Ids that
// exist already (in any state) are skipped and listed in the result, so running the same call
// again after a crash creates what is missing. Invalid input (an invalid or repeated id, another
// tier) returns a *registry.FieldError naming the entry and writes nothing.
//
// A batch is one transaction of a few statements whatever its size: the registry rows, the keys
// (only their hashes are stored) and one audit event per tenant. An id that belonged to a tenant
// deleted earlier is handled as CreateTenant does: under the tenant's advisory lock, rows its
// requests may have left behind are removed before anyone holds a key again.
//
// Keys are shown once: OnBatch receives them after their batch committed. If the process dies
// between a commit and OnBatch, those tenants exist without a known key: the next call lists them
// as existing, and `key issue` gives them one.
func (p *Provisioner) CreateTenants(ctx context.Context, params TenantBulkCreateParams) (TenantBulkCreateResult, error) {
	if err := ValidateBulk(params); err != nil {
		return TenantBulkCreateResult{}, err
	}
	size := params.BatchSize
	if size == 0 {
		size = DefaultBulkBatchSize
	}
	if _, _, err := p.ready(ctx); err != nil {
		return TenantBulkCreateResult{}, err
	}
	// Bulk tenants go to the local placement (the control server's shared schema), which must
	// take new shared-tier tenants; its capacity hint is checked once, here, so one call may go
	// past it by up to its own size.
	pl, err := registry.GetPlacement(ctx, p.pool, registry.LocalPlacement)
	if err != nil {
		return TenantBulkCreateResult{}, wrap("create tenants", err)
	}
	if err := admissible(pl, registry.TierShared); err != nil {
		return TenantBulkCreateResult{}, wrap("create tenants", err)
	}
	version, err := p.sharedSchemaVersion(ctx, registry.LocalPlacement)
	if err != nil {
		return TenantBulkCreateResult{}, wrap("create tenants", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex // serialises OnBatch, Progress and the result
		res      TenantBulkCreateResult
		done     int
		firstErr error
		wg       sync.WaitGroup
		batches  = make(chan []string)
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
	}
	for range min(p.cfg.Parallelism, (len(params.IDs)+size-1)/size) {
		wg.Go(func() {
			for ids := range batches {
				created, existing, err := p.createBatch(ctx, ids, version)
				if err != nil {
					fail(err)
					continue
				}
				mu.Lock()
				if firstErr == nil && params.OnBatch != nil {
					if err := params.OnBatch(ctx, created); err != nil {
						firstErr = fmt.Errorf("provision: create tenants: %w", err)
						cancel()
					}
				}
				res.Created += len(created)
				res.Existing = append(res.Existing, existing...)
				done += len(ids)
				if params.Progress != nil {
					params.Progress(BulkProgress{Done: done, Total: len(params.IDs), Created: res.Created})
				}
				mu.Unlock()
			}
		})
	}
feed:
	for lo := 0; lo < len(params.IDs); lo += size {
		select {
		case batches <- params.IDs[lo:min(lo+size, len(params.IDs))]:
		case <-ctx.Done():
			break feed
		}
	}
	close(batches)
	wg.Wait()
	slices.Sort(res.Existing)
	if res.Existing == nil {
		res.Existing = []string{}
	}
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("provision: create tenants: %w", err)
	}
	p.cfg.Logger.InfoContext(ctx, "tenants created in bulk", "created", res.Created, "existing", len(res.Existing))
	return res, nil
}

// createBatch creates one batch of shared-tier tenants in one transaction and returns the
// created ones with their keys, and the ids that existed already.
func (p *Provisioner) createBatch(ctx context.Context, ids []string, version int64) ([]TenantCreatedKey, []string, error) {
	var created []TenantCreatedKey
	var existing []string
	err := p.inTx(ctx, p.pool, false, func(tx pgx.Tx) error {
		ts, err := registry.InsertActive(ctx, tx, registry.TierShared, schema.SharedSchema, ids, version)
		if err != nil {
			return err
		}
		newIDs := make([]string, len(ts))
		isNew := make(map[string]bool, len(ts))
		for i, t := range ts {
			newIDs[i], isNew[t.ID] = t.ID, true
		}
		existing = existing[:0]
		for _, id := range ids {
			if !isNew[id] {
				existing = append(existing, id)
			}
		}
		if len(newIDs) == 0 {
			return nil
		}
		// Ids with a history were tenants once: clean up after them as CreateTenant does.
		reused, err := registry.EverExisted(ctx, tx, newIDs)
		if err != nil {
			return err
		}
		for _, id := range reused {
			if err := p.dropLeftovers(ctx, tx, id); err != nil {
				return err
			}
		}
		keys, err := registry.IssueKeys(ctx, tx, newIDs)
		if err != nil {
			return err
		}
		details := make([]map[string]any, len(keys))
		created = make([]TenantCreatedKey, len(keys))
		for i, k := range keys {
			details[i] = map[string]any{"tier": registry.TierShared, "migration_version": version, "key_id": k.KeyID, "bulk": true}
			created[i] = TenantCreatedKey{TenantID: k.TenantID, KeyID: k.KeyID, APIKey: k.Key}
		}
		if err := registry.AuditMany(ctx, tx, newIDs, "created", p.cfg.Actor, details); err != nil {
			return err
		}
		for _, id := range reused {
			if err := registry.Notify(ctx, tx, registry.Notification{TenantID: id, Event: "created"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, wrap("create tenants", err)
	}
	return created, existing, nil
}

// dropLeftovers removes, inside tx, the rows an earlier tenant with this id may have left in the
// shared schema, holding the tenant's advisory lock exclusively until tx ends, so requests of the
// earlier tenant still in flight finish first (see DeleteTenant).
func (p *Provisioner) dropLeftovers(ctx context.Context, tx pgx.Tx, tenantID string) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, registry.LockID(tenantID)); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+ident(p.cfg.OwnerRole)); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('tenantmem.owner_id', $1, true)`, tenantID); err != nil {
		return err
	}
	for _, table := range sharedTenantTables() {
		if _, err := tx.Exec(ctx, `DELETE FROM `+ident(schema.SharedSchema)+`.`+ident(table)+` WHERE owner_id = $1`, tenantID); err != nil {
			return fmt.Errorf("delete from %s: %w", table, err)
		}
	}
	if err := deleteWork(ctx, tx, registry.Tenant{ID: tenantID, SchemaName: schema.SharedSchema}); err != nil {
		return err
	}
	// The rest of the batch writes the registry as the login role again.
	_, err := tx.Exec(ctx, `SET LOCAL ROLE NONE`)
	return err
}
