package schema

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

const (
	// MaxTenantIDLength is the longest accepted tenant id, in bytes.
	MaxTenantIDLength = 255
	// MaxIdentifierLength is PostgreSQL's identifier limit (NAMEDATALEN-1), in bytes.
	MaxIdentifierLength = 63

	// Prefix starts every per-tenant schema name.
	Prefix = "tenant_"
	// SharedSchema is the schema of the shared tier. It does not start with [Prefix], so no tenant
	// id can ever map onto it.
	SharedSchema = "tenantmem_shared"
	// ControlSchema holds the registry (migrations/control).
	ControlSchema = "tenantmem_control"
	// ExtensionSchema holds the vector extension; it is on every search_path the project sets.
	ExtensionSchema = "extensions"
	// PlacementSchema holds the bookkeeping of one database that holds tenant tables
	// (migrations/placement): every such database has it once.
	PlacementSchema = "tenantmem_placement"

	hashLength = 12 // hex characters of sha256 kept in hashed names (48 bits)
)

// ErrInvalidTenantID is returned (wrapped, with the reason) for a tenant id that breaks the rules of
// [ValidateTenantID].
var ErrInvalidTenantID = errors.New("invalid tenant id")

// segment is one part of a hierarchical tenant id.
var segment = regexp.MustCompile(`\A[a-zA-Z0-9_.\-]+\z`)

// ValidateTenantID reports whether id is an acceptable tenant id: 1 to 255 bytes of
// [a-zA-Z0-9_.-], optionally in "/"-separated segments ("org-123/workspace-456"), where no segment
// is empty, "." or "..". The match is anchored at both ends, so a trailing newline is rejected.
func ValidateTenantID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: must not be empty", ErrInvalidTenantID)
	case len(id) > MaxTenantIDLength:
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrInvalidTenantID, len(id), MaxTenantIDLength)
	}
	for _, seg := range strings.Split(id, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w: empty segment (leading, trailing or doubled '/')", ErrInvalidTenantID)
		case seg == "." || seg == "..":
			return fmt.Errorf("%w: segment %q is not allowed", ErrInvalidTenantID, seg)
		case !segment.MatchString(seg):
			return fmt.Errorf("%w: only letters a-z, A-Z, digits and '_', '.', '-' are allowed, in '/'-separated segments", ErrInvalidTenantID)
		}
	}
	return nil
}

// Name maps a valid tenant id to the name of its schema. The result is lowercase, matches
// ^tenant_[a-z0-9_]+$ and is at most 63 bytes.
//
// Two classes of names exist, and they cannot overlap:
//   - plain: "tenant_" + id, used when id consists of [a-z0-9_] only, contains no "__" and fits;
//   - hashed: "tenant_" + a readable, truncated, lowercased form of id + "__" + 12 hex digits of
//     SHA-256(id), for every other id (upper case, '.', '-', '/', "__", or too long).
//
// Plain names never contain "__" and hashed names always do, so a plain name is never a hashed one;
// plain names are the id itself, so they are injective; hashed names differ unless SHA-256 collides
// on 48 bits, which the registry's unique constraint turns into a refused creation, never a merge.
func Name(tenantID string) (string, error) {
	if err := ValidateTenantID(tenantID); err != nil {
		return "", err
	}
	if isPlain(tenantID) && len(Prefix)+len(tenantID) <= MaxIdentifierLength {
		return Prefix + tenantID, nil
	}
	sum := sha256.Sum256([]byte(tenantID))
	suffix := "__" + hex.EncodeToString(sum[:])[:hashLength]
	var b strings.Builder
	for _, r := range strings.ToLower(tenantID) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	readable := strings.Trim(b.String(), "_")
	if room := MaxIdentifierLength - len(Prefix) - len(suffix); len(readable) > room {
		readable = strings.TrimRight(readable[:room], "_")
	}
	return Prefix + readable + suffix, nil
}

func isPlain(id string) bool {
	if strings.Contains(id, "__") {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') {
			return false
		}
	}
	return true
}
