package provision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmem/tenantmem/internal/chunk"
	"github.com/tenantmem/tenantmem/internal/embed"
	"github.com/tenantmem/tenantmem/internal/llmemory"
	"github.com/tenantmem/tenantmem/internal/memory"
	"github.com/tenantmem/tenantmem/internal/registry"
	"github.com/tenantmem/tenantmem/internal/schema"
)

// LLMemoryImportParams configures [Provisioner.ImportLLMemory].
type LLMemoryImportParams struct {
	// Source connects to the llmemory database (read only is enough).
	Source *pgxpool.Pool
	// Schema is llmemory's schema there. Default llmemory.DefaultSchema.
	Schema string
	// Owner imports one owner_id; AllOwners imports every one. Exactly one must be set.
	Owner     string
	AllOwners bool
	// As is the tenant id of Owner (default: the owner id itself).
	As string
	// Prefix is put before each owner id to make its tenant id (AllOwners).
	Prefix string
	// Tier is where tenants that do not exist yet are created. Default shared.
	Tier registry.Tier
	// Placement is where tenants that do not exist yet are created. Default: the default
	// placement policy of a new tenant.
	Placement string
	// Refresh imports again the documents a tenant already has (by id_at_origin); by default a
	// rerun skips them, which is how an interrupted import resumes.
	Refresh bool
	// Progress, when set, is called after every document.
	Progress func(LLMemoryProgress)
}

// LLMemoryProgress reports a running import.
type LLMemoryProgress struct {
	Owner                string
	Documents, TotalDocs int64
	Chunks               int64
	Elapsed              time.Duration
}

// LLMemoryOwnerReport says what became of one owner.
type LLMemoryOwnerReport struct {
	OwnerID  string `json:"owner_id"`
	TenantID string `json:"tenant_id"`
	// Created is true when the import created the tenant; Key is its first API key, shown once.
	Created bool                `json:"created"`
	Key     *registry.IssuedKey `json:"api_key,omitempty"`
	// Documents were imported, Skipped were already there (a resumed import), Failed were refused.
	Documents int `json:"documents"`
	Skipped   int `json:"skipped"`
	Chunks    int `json:"chunks"`
	// Vectors were carried over; Queued chunks have none (no vector of this dimension in the
	// source) and are embedded by the routers' embedding worker.
	Vectors int                   `json:"vectors"`
	Queued  int                   `json:"queued"`
	Failed  []LLMemoryDocumentErr `json:"failed,omitempty"`
	// Error, when set, stopped this owner (e.g. an owner id that is no tenant id).
	Error string `json:"error,omitempty"`
}

// LLMemoryDocumentErr is a document that was not imported, and why.
type LLMemoryDocumentErr struct {
	IDAtOrigin string `json:"id_at_origin"`
	Error      string `json:"error"`
}

// LLMemoryReport is the outcome of an import: per owner, and what was not carried over.
type LLMemoryReport struct {
	Owners []LLMemoryOwnerReport `json:"owners"`
	// EmbeddingModel is the source model whose vectors were carried over ("" when none).
	EmbeddingModel string `json:"embedding_model,omitempty"`
	// NotCarried lists what the source has that tenantmem did not take, and why.
	NotCarried []string      `json:"not_carried"`
	Took       time.Duration `json:"-"`
}

// deferredEmbedder stands in for the routers' provider: an import queues what has no vector and
// never calls it.
type deferredEmbedder struct{ dim int }

func (d deferredEmbedder) Name() string   { return "deferred" }
func (d deferredEmbedder) Dimension() int { return d.dim }
func (d deferredEmbedder) Embed(context.Context, []string) ([][]float32, error) {
	return nil, fmt.Errorf("the provisioner does not embed; the routers' worker does: %w", embed.ErrUnavailable)
}

// ImportLLMemory imports the documents and chunks of an llmemory database, one tenant per
// owner_id, with their vectors when the source has some of this deployment's dimension (chunks
// without are queued for the routers' embedding worker). Documents keep their id_at_origin, so
// the import is resumable: a rerun skips the documents a tenant already has (Refresh imports them
// again, replacing them). Tenants that do not exist are created in Tier; their first API key is
// in the report, once. Writes go through the memory engine in the tenant's own scope, as the
// router role when the login may assume it. A schema that is not llmemory's gives
// llmemory.ErrNotLLMemory and writes nothing.
func (p *Provisioner) ImportLLMemory(ctx context.Context, params LLMemoryImportParams) (LLMemoryReport, error) {
	start := time.Now()
	var rep LLMemoryReport
	switch {
	case params.Source == nil:
		return rep, errors.New("provision: LLMemoryImportParams.Source is required")
	case params.AllOwners == (params.Owner != ""):
		return rep, &registry.FieldError{Field: "owner", Message: "give one owner, or all owners"}
	case params.AllOwners && params.As != "":
		return rep, &registry.FieldError{Field: "as", Message: "names the tenant of one owner; with all owners use a prefix"}
	}
	if params.Schema == "" {
		params.Schema = llmemory.DefaultSchema
	}
	if params.Tier == "" {
		params.Tier = registry.TierShared
	}
	if _, err := registry.ParseTier(string(params.Tier)); err != nil {
		return rep, err
	}
	if params.Placement != "" {
		if err := registry.ValidatePlacementName(params.Placement); err != nil {
			return rep, err
		}
	}
	_, settings, err := p.ready(ctx)
	if err != nil {
		return rep, err
	}
	layout, err := llmemory.Inspect(ctx, params.Source, params.Schema, settings.EmbeddingDimension)
	if err != nil {
		if errors.Is(err, llmemory.ErrNotLLMemory) {
			return rep, &registry.FieldError{Field: "source", Message: err.Error()}
		}
		return rep, err
	}
	rep.EmbeddingModel = layout.EmbeddingModel
	if layout.EmbeddingTable == "" {
		rep.NotCarried = append(rep.NotCarried, fmt.Sprintf("vectors: no provider of dimension %d in the source (%v); chunks are queued for the routers' embedding worker",
			settings.EmbeddingDimension, layout.Providers))
	}
	if layout.SearchHistoryRows > 0 {
		rep.NotCarried = append(rep.NotCarried, fmt.Sprintf("search history: %d rows (llmemory stored result contents; tenantmem keeps its own history)", layout.SearchHistoryRows))
	}
	if layout.QueueRows > 0 {
		rep.NotCarried = append(rep.NotCarried, fmt.Sprintf("embedding queue: %d rows (chunks without a vector are queued again here)", layout.QueueRows))
	}
	rep.NotCarried = append(rep.NotCarried, "vectors of parent chunks (tenantmem embeds and searches leaves only)")

	owners, err := llmemory.Owners(ctx, params.Source, layout)
	if err != nil {
		return rep, err
	}
	if !params.AllOwners {
		i := slices.IndexFunc(owners, func(o llmemory.Owner) bool { return o.OwnerID == params.Owner })
		if i < 0 {
			return rep, &registry.FieldError{Field: "owner", Message: fmt.Sprintf("owner %q has no document in the source", params.Owner)}
		}
		owners = owners[i : i+1]
	}
	var total int64
	for _, o := range owners {
		total += o.Documents
	}
	engine, err := memory.New(memory.Config{Embedder: deferredEmbedder{dim: settings.EmbeddingDimension}, Logger: p.cfg.Logger})
	if err != nil {
		return rep, err
	}
	var done, chunks int64
	for _, o := range owners {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		or := LLMemoryOwnerReport{OwnerID: o.OwnerID, TenantID: params.Prefix + o.OwnerID}
		if params.As != "" {
			or.TenantID = params.As
		}
		err := p.importOwner(ctx, params, layout, engine, o, &or, func(n int) {
			done++
			chunks += int64(n)
			if params.Progress != nil {
				params.Progress(LLMemoryProgress{Owner: o.OwnerID, Documents: done, TotalDocs: total, Chunks: chunks, Elapsed: time.Since(start)})
			}
		})
		if err != nil {
			if ctx.Err() != nil {
				rep.Owners = append(rep.Owners, or)
				return rep, err
			}
			or.Error = err.Error()
			p.cfg.Logger.WarnContext(ctx, "llmemory import: owner not imported", "owner_id", o.OwnerID, "error", err.Error())
		}
		rep.Owners = append(rep.Owners, or)
	}
	rep.Took = time.Since(start)
	return rep, nil
}

func (p *Provisioner) importOwner(ctx context.Context, params LLMemoryImportParams, layout llmemory.Layout, engine *memory.Engine,
	o llmemory.Owner, or *LLMemoryOwnerReport, progress func(chunks int)) error {
	if err := schema.ValidateTenantID(or.TenantID); err != nil {
		return fmt.Errorf("owner id %q does not make a tenant id (%w); import it alone with as", or.OwnerID, err)
	}
	limits, err := registry.GetLimits(ctx, p.pool, or.TenantID)
	if err != nil {
		return err
	}
	quota := p.quotaOf(limits)
	t, err := registry.Get(ctx, p.pool, or.TenantID)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		// The owner's documents alone must fit before the tenant is created.
		if err := checkQuota(quota, [3]int64{}, [3]int64{o.Documents}); err != nil {
			return err
		}
		res, err := p.CreateTenant(ctx, TenantCreateParams{ID: or.TenantID, Tier: params.Tier, Placement: params.Placement})
		if err != nil {
			return err
		}
		t, or.Created, or.Key = res.Tenant, true, &res.Key
		if err := registry.Audit(ctx, p.pool, t.ID, "llmemory_import", p.cfg.Actor, map[string]any{"owner_id": or.OwnerID}); err != nil {
			return err
		}
	case err != nil:
		return err
	case t.Status != registry.StatusActive:
		return fmt.Errorf("tenant %q is %s: %w", t.ID, t.Status, registry.ErrConflict)
	}
	// Every add is checked against the tenant's quota in its own transaction (chunks and content
	// bytes are known per document only); the documents are checked up front, below.
	// The writes run in the tenant's database, wherever it is, as the router role when the
	// login may assume it.
	pool, err := p.scopedPool(ctx, t.Location())
	if err != nil {
		return err
	}
	defer pool.Close()
	s := memory.Scope{Pool: pool, Schema: t.SchemaName, OwnerID: t.ID, Quota: quota}
	have := map[string]bool{}
	var held int64
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM documents WHERE owner_id = $1`, t.ID).Scan(&held); err != nil {
			return err
		}
		if params.Refresh {
			return nil
		}
		rows, err := tx.Query(ctx, `SELECT id_at_origin FROM documents WHERE owner_id = $1 AND id_at_origin IS NOT NULL`, t.ID)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, id := range ids {
			have[id] = true
		}
		return err
	})
	if err != nil {
		return err
	}
	// A rerun (or a refresh) replaces documents it already has: only the others add to the count.
	if !params.Refresh {
		if err := checkQuota(quota, [3]int64{held}, [3]int64{max(0, o.Documents-int64(len(have)))}); err != nil {
			return err
		}
	}
	return llmemory.Documents(ctx, params.Source, layout, or.OwnerID, func(id string) bool {
		if have[id] {
			or.Skipped++
			return true
		}
		return false
	}, func(d llmemory.Document) error {
		if len(d.Chunks) == 0 {
			or.Failed = append(or.Failed, LLMemoryDocumentErr{IDAtOrigin: d.IDAtOrigin, Error: "the source has no chunk of it: nothing to search"})
			return nil
		}
		add, vectors, queued := documentParams(d)
		res, err := engine.AddDocument(ctx, s, add)
		if err != nil {
			var ve *memory.ValidationError
			if errors.As(err, &ve) {
				or.Failed = append(or.Failed, LLMemoryDocumentErr{IDAtOrigin: d.IDAtOrigin, Error: ve.Error()})
				return nil
			}
			if errors.Is(err, memory.ErrQuotaExceeded) {
				return fmt.Errorf("stopped after %d documents, at document %q (raise the tenant's quota with `provisioner tenant limits`, then rerun: it resumes): %w",
					or.Documents, d.IDAtOrigin, err)
			}
			return fmt.Errorf("document %q: %w", d.IDAtOrigin, err)
		}
		or.Documents++
		or.Chunks += res.ChunksCreated
		or.Vectors += vectors
		or.Queued += queued
		progress(res.ChunksCreated)
		return nil
	})
}

// documentParams turns a source document into an add of pre-chunked content: leaves keep their
// vectors, parents stay parents (one level), chunk indexes are renumbered in depth-first order.
func documentParams(d llmemory.Document) (memory.DocumentAddParams, int, int) {
	typ := d.DocumentType
	if !slices.Contains(chunk.DocumentTypes(), typ) {
		typ = "unknown"
	}
	p := memory.DocumentAddParams{
		DocumentName: d.DocumentName, DocumentType: typ, IDAtOrigin: d.IDAtOrigin,
		Metadata: d.Metadata, DocumentDate: d.DocumentDate, DeferEmbedding: true,
	}
	pos := map[string]int{}
	vectors, queued := 0, 0
	for _, c := range d.Chunks {
		in := memory.ChunkInput{Content: c.Content, Metadata: c.Metadata}
		if !c.Leaf {
			in.Level = 1
		}
		if c.ParentID != nil {
			if i, ok := pos[*c.ParentID]; ok && p.Chunks[i].Level > in.Level {
				in.Parent = &i
			}
		}
		if c.Leaf {
			if len(c.Embedding) > 0 {
				in.Embedding = c.Embedding
				vectors++
			} else {
				queued++
			}
		}
		pos[c.ChunkID] = len(p.Chunks)
		p.Chunks = append(p.Chunks, in)
	}
	return p, vectors, queued
}

// scopedPool returns a pool with the provisioner's login whose connections all run as the router
// role when the login may assume it, else as the owner role; both are bound by row-level
// security. The caller closes it. It is for bulk writes through memory.Scope, which sets
// search_path and the owner id per transaction.
func (p *Provisioner) scopedPool(ctx context.Context, loc registry.Location) (*pgxpool.Pool, error) {
	base, release, err := p.poolFor(ctx, loc)
	if err != nil {
		return nil, err
	}
	defer release()
	role := p.cfg.OwnerRole
	var canRouter bool
	if err := base.QueryRow(ctx, `SELECT pg_has_role(current_user, $1, 'MEMBER')`, p.cfg.RouterRole).Scan(&canRouter); err != nil {
		return nil, err
	}
	if canRouter {
		role = p.cfg.RouterRole
	}
	cfg := base.Config().Copy()
	cfg.MaxConns = 2
	setRole := `SET ROLE ` + ident(role)
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, setRole)
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	p.cfg.Logger.DebugContext(ctx, "bulk write pool", slog.String("role", role))
	return pool, nil
}
