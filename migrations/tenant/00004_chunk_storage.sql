-- +goose Up
-- Keep chunk rows whole in the heap. pgvector's vector type defaults to EXTERNAL storage, and a
-- chunk row with its content, generated tsvector and a 384-dimension vector (1.5 KB) exceeds
-- the default 2 KB TOAST threshold: the toaster moved the vector out of line, so every distance
-- computed outside the HNSW index (exact scans for small tenants) read two TOAST chunks, and
-- making the vector MAIN alone only moved the problem to the tsvector that ts_rank_cd reads.
--   toast_tuple_target = 8160: a row is toasted only when it does not fit in a page, so at the
--     usual dimensions (up to about 1,000) chunk rows stay whole;
--   embedding MAIN: when a row must be toasted (large dimensions, long parent chunks), content,
--     search_vector and metadata are compressed and moved out first and the vector stays in the
--     row if it fits. A vector too large for a page still goes out of line, so any dimension works.
-- Both are catalog changes; they apply to rows written afterwards.
ALTER TABLE chunks SET (toast_tuple_target = 8160);
ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE MAIN;

-- +goose Down
ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE EXTERNAL;
ALTER TABLE chunks RESET (toast_tuple_target);
