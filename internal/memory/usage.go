package memory

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/jackc/pgx/v5"
)

// usage is a tenant's stored totals (tenant_usage) or a change of them.
type usage struct {
	documents, chunks, bytes int64
}

// readUsage reads the tenant's totals (zero when it never stored anything).
func readUsage(ctx context.Context, tx pgx.Tx, s Scope) (usage, error) {
	var u usage
	err := tx.QueryRow(ctx, `SELECT documents, chunks, content_bytes FROM tenant_usage WHERE owner_id = $1`, s.OwnerID).
		Scan(&u.documents, &u.chunks, &u.bytes)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return usage{}, fmt.Errorf("memory: read usage: %w", err)
	}
	return u, nil
}

// addUsage adds delta to the tenant's totals and, when a total grew, checks it against the
// scope's quota. It locks the tenant's usage row until the transaction ends, so call it last,
// just before the commit: concurrent writes of the tenant wait on each other only there.
func addUsage(ctx context.Context, tx pgx.Tx, s Scope, delta usage) error {
	if delta == (usage{}) {
		return nil
	}
	var total usage
	err := tx.QueryRow(ctx, `INSERT INTO tenant_usage AS u (owner_id, documents, chunks, content_bytes)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (owner_id) DO UPDATE SET documents = u.documents + excluded.documents,
			chunks = u.chunks + excluded.chunks, content_bytes = u.content_bytes + excluded.content_bytes,
			updated_at = now()
		RETURNING documents, chunks, content_bytes`, s.OwnerID, delta.documents, delta.chunks, delta.bytes).
		Scan(&total.documents, &total.chunks, &total.bytes)
	if err != nil {
		return fmt.Errorf("memory: update usage: %w", err)
	}
	return s.Quota.check(total, delta)
}

// check refuses a change that grew a total above its quota. total includes delta.
func (q Quota) check(total, delta usage) error {
	for _, c := range []struct {
		field         string
		limit, t, add int64
	}{
		{"documents", q.Documents, total.documents, delta.documents},
		{"chunks", q.Chunks, total.chunks, delta.chunks},
		{"content_bytes", q.ContentBytes, total.bytes, delta.bytes},
	} {
		if c.limit > 0 && c.add > 0 && c.t > c.limit {
			return &QuotaError{Field: c.field, Limit: c.limit, Stored: c.t - c.add, Adding: c.add}
		}
	}
	return nil
}

// IdempotencyKey makes a write idempotent: the first request with Key does the write and stores
// its result in the same transaction; a later one with the same Key and RequestHash (within the
// engine's IdempotencyTTL) does nothing and gets that result back, and one with another
// RequestHash gets [ErrIdempotencyKeyReused].
type IdempotencyKey struct {
	// Key is the client's key: 1 to 255 printable ASCII characters.
	Key string
	// RequestHash identifies the request (e.g. SHA-256 of its method, route and body).
	RequestHash []byte
}

// MaxIdempotencyKeyLength is the longest idempotency key, in bytes.
const MaxIdempotencyKeyLength = 255

// ValidateIdempotencyKey checks a client's key: 1 to 255 printable ASCII characters. field names
// it in the error (e.g. the header name).
func ValidateIdempotencyKey(field, key string) error {
	switch {
	case key == "":
		return invalid(field, "must not be empty")
	case len(key) > MaxIdempotencyKeyLength:
		return tooLarge(field, "at most %d characters", MaxIdempotencyKeyLength)
	case strings.ContainsFunc(key, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) }):
		return invalid(field, "must be printable ASCII")
	}
	return nil
}

// lookupIdempotent returns the stored result of key, or nil when there is none (or it expired).
// A stored result of another request is ErrIdempotencyKeyReused.
func (e *Engine) lookupIdempotent(ctx context.Context, tx pgx.Tx, s Scope, k *IdempotencyKey) (json.RawMessage, error) {
	var (
		hash   []byte
		result json.RawMessage
	)
	err := tx.QueryRow(ctx, `SELECT request_hash, result FROM idempotency_keys
		WHERE owner_id = $1 AND idempotency_key = $2 AND created_at >= now() - make_interval(secs => $3)`,
		s.OwnerID, k.Key, e.cfg.IdempotencyTTL.Seconds()).Scan(&hash, &result)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("memory: idempotency key: %w", err)
	case subtle.ConstantTimeCompare(hash, k.RequestHash) != 1:
		return nil, ErrIdempotencyKeyReused
	}
	return result, nil
}

// claimIdempotent claims key for this transaction. It returns the stored result when another
// transaction with the same key committed first (it waits for one in flight), or nil when this
// transaction owns the key and must store its result with storeIdempotent before committing.
func (e *Engine) claimIdempotent(ctx context.Context, tx pgx.Tx, s Scope, k *IdempotencyKey) (json.RawMessage, error) {
	// Forget this tenant's expired keys (a bounded number per write), this one included.
	if _, err := tx.Exec(ctx, `DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM idempotency_keys WHERE owner_id = $1 AND created_at < now() - make_interval(secs => $2)
			LIMIT 100))`, s.OwnerID, e.cfg.IdempotencyTTL.Seconds()); err != nil {
		return nil, fmt.Errorf("memory: idempotency key: %w", err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO idempotency_keys (owner_id, idempotency_key, request_hash) VALUES ($1, $2, $3)
		ON CONFLICT (owner_id, idempotency_key) DO NOTHING`, s.OwnerID, k.Key, k.RequestHash)
	if err != nil {
		return nil, fmt.Errorf("memory: idempotency key: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil, nil
	}
	res, err := e.lookupIdempotent(ctx, tx, s, k)
	if err == nil && res == nil {
		return nil, fmt.Errorf("memory: idempotency key %q: claimed but not readable", k.Key)
	}
	return res, err
}

// storeIdempotent records the result of the write that claimed key.
func storeIdempotent(ctx context.Context, tx pgx.Tx, s Scope, k *IdempotencyKey, result any) error {
	b, err := json.Marshal(result)
	if err != nil {
		return fmt.Errorf("memory: idempotency result: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE idempotency_keys SET result = $3 WHERE owner_id = $1 AND idempotency_key = $2`,
		s.OwnerID, k.Key, b); err != nil {
		return fmt.Errorf("memory: idempotency result: %w", err)
	}
	return nil
}
