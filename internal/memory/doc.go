// Package memory is the document memory engine the router serves: it adds (or upserts),
// reads, lists and deletes a tenant's documents, chunks them (package chunk), embeds the chunks
// (package embed), and runs vector, full-text and hybrid search over them, with a search
// history and an embedding queue for when the provider fails.
//
// # Tenancy
//
// Every call takes a [Scope]: the pool of the tenant's database, the schema of its tables and
// its owner id. The same code serves the shared tier (schema tenantmem_shared, many owners per
// table), the schema tier (one schema per tenant) and the database tier (one database per
// tenant). [Scope.InTx] runs each unit of work in one transaction whose first statement sets
// search_path, the owner id that row-level security compares with, and the statement timeout,
// all transaction-local; nothing outlives the transaction on a pooled connection. Every
// statement also filters owner_id itself, so isolation never rests on one mechanism. Another
// tenant's document id behaves exactly like a missing one ([ErrNotFound]).
//
// # Documents and chunks
//
// A document is identified by its document_id (a UUID) and, optionally, by (owner,
// id_at_origin): adding a document with an id_at_origin the tenant already uses replaces it in
// one transaction, keeping document_id and created_at. Content is split by chunk.Split into a
// two-level tree: level 0 chunks (leaves) are embedded and searched, level 1 chunks (parents)
// are the wider context returned by include_parent_context. Leaves never repeat their parent.
//
// Ingest never holds a transaction open during a provider call: validate, chunk, embed, then
// write everything in one transaction. If the provider fails, the document is stored, its
// leaves are searchable by text at once, and they are queued for the [Worker].
//
// # Search
//
// A search is one round trip to PostgreSQL (settings, fence, tenant size and one statement per
// leg in one pipelined read-only transaction). Vector search orders leaves by cosine distance
// (HNSW index with an ef_search chosen for a recall target, or an exact scan for small tenants,
// see [Config].ExactSearchThreshold); text search is BM25 over the tenant's own postings and
// statistics (chunk_terms, chunk_stats), with web search syntax and OR semantics; hybrid search
// fuses both (normalised score fusion by default, or reciprocal rank fusion), optionally
// reranked by a [Reranker]. Filters apply identically in every mode. Every result carries one
// score on a single scale per list (higher is better, 1 is the best possible) plus its
// components. The search history is written after the answer, never failing the search.
// docs/memory.md describes the scoring, the thresholds and their measurements.
//
// # Errors
//
// Invalid input is a [*ValidationError] naming the field (wrapping [ErrInvalid], and
// [ErrTooLarge] for size limits); nothing is written then. [ErrNotFound],
// [ErrEmbeddingUnavailable] and [ErrTimeout] are the other domain errors; everything else is
// an internal error.
//
// # Concurrency
//
// An [Engine] and a [Worker] are safe for concurrent use; build one of each per process. Any
// number of workers, in any number of processes, can share one queue.
package memory
