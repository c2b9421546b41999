// Package archive is the tenant archive: one file per tenant, in a documented, versioned,
// streaming format (docs/archive.md), and the code that reads a tenant's rows into it and loads
// them back.
//
// The format layer ([Writer], [Reader]) knows nothing of PostgreSQL beyond the binary COPY
// encoding of the rows: a magic line, then a zstd stream of checksummed frames (a JSON manifest,
// then per table a header, blocks of rows and a trailer with the row count and a SHA-256, then an
// end frame with the SHA-256 of everything before it). A reader verifies every checksum as it goes
// and reports a truncated, corrupted, foreign or future-version archive with a sentinel error
// ([ErrTruncated], [ErrCorrupt], [ErrNotArchive], [ErrFutureVersion]).
//
// The database layer ([Export], [Load], [CopyTenant]) reads one tenant through its own scope
// (search_path and owner id set transaction-locally, so row-level security confines every
// statement to it) and writes rows with the destination's owner id, table by table in the order
// of schema.TenantTables.
//
// Writers and readers are not safe for concurrent use; use one per goroutine.
package archive
