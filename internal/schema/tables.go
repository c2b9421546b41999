package schema

// TableKind says how a copy of a tenant (backup, restore, move) treats one of its tables.
type TableKind int

const (
	// TableData holds rows the tenant wrote (directly or through the engine): they are archived,
	// restored and moved row for row.
	TableData TableKind = iota
	// TableDerived holds rows that triggers on other tables maintain (search statistics, term
	// postings): they are never copied, because loading the data tables rebuilds them in the
	// destination; a copy checks that their row counts agree with the source's.
	TableDerived
)

// TenantTable is one table of migrations/tenant.
type TenantTable struct {
	// Name is the table name inside a tenant schema.
	Name string
	// Kind says whether the table is copied or rebuilt.
	Kind TableKind
	// Optional tables are written as a side effect of reads (search history): an archive may
	// leave them out on request, a move does not pause their writes in its last instant (so that
	// searches are served throughout) and does not compare their row counts.
	Optional bool
	// SkipOnNewIDs leaves the table out of a copy that gives the rows new ids (a restore under
	// another tenant id): its rows name the original ids.
	SkipOnNewIDs bool
	// ExportOrder, when set, is the ORDER BY of the table's rows in an archive and a copy, so
	// that a row a foreign key of the same table points to comes first (a chunk's parent precedes
	// it). Loading happens in blocks, and each block must satisfy the foreign keys on its own.
	ExportOrder string
}

// TenantTables lists every table of migrations/tenant, parents before children: the order in
// which a copy loads them. It is the one place that knows them: backup, restore, moves and the
// deletion of a shared-tier tenant all read it, and a test fails when a migration adds a table
// that is not here. A new table is TableData unless triggers fill it.
var TenantTables = []TenantTable{
	{Name: "documents", Kind: TableData},
	{Name: "chunks", Kind: TableData, ExportOrder: "chunk_level DESC, document_id, chunk_index"},
	{Name: "embedding_jobs", Kind: TableData},
	{Name: "search_history", Kind: TableData, Optional: true},
	// The tenant's running storage totals (quotas), kept by the engine, copied like any row.
	{Name: "tenant_usage", Kind: TableData},
	// Results of idempotent writes, which name the documents they wrote.
	{Name: "idempotency_keys", Kind: TableData, SkipOnNewIDs: true},
	// BM25 postings and statistics (tenant migration 00006): the chunk triggers maintain them.
	{Name: "chunk_terms", Kind: TableDerived},
	{Name: "chunk_stats", Kind: TableDerived},
}

// Change capture (migrations/tenant 00009, docs/archive.md "Moves"): the tables that record a
// tenant's changes while it is moved. They belong to the move, not to the tenant, and are never
// copied; a shared-tier delete removes the tenant's rows from them too.
const (
	ChangeCaptureTable = "tenant_change_capture"
	ChangeLogTable     = "tenant_change_log"
)

// TenantTablesChildrenFirst returns TenantTables in reverse order: the order in which a tenant's
// rows are deleted.
func TenantTablesChildrenFirst() []TenantTable {
	out := make([]TenantTable, 0, len(TenantTables))
	for i := len(TenantTables) - 1; i >= 0; i-- {
		out = append(out, TenantTables[i])
	}
	return out
}
