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
	// DatabasePrefix starts every database-tier database name.
	DatabasePrefix = "tmdb_"
	// DatabaseSchema is the schema that holds a database-tier tenant's tables inside its own
	// database. Every tenant database has the same one, so migrate needs no per-tenant name.
	DatabaseSchema = "tenantmem_tenant"

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

// databaseHashLength is the hex characters of sha256 ending every database name (64 bits).
const databaseHashLength = 16

// DatabaseName maps a tenant id to the name of its own database (database tier):
// "tmdb_<readable>_<16 hex>", at most 63 bytes, where readable is the id lower-cased with every
// other character turned into '_' (shortened to fit) and the hex digits are SHA-256 of the
// deployment id and the tenant id. Every name is hashed, and the hash covers the deployment id, so
// two deployments sharing one PostgreSQL server (or the parallel tests sharing one cluster) never
// derive the same database name for the same tenant id; within a deployment the registry's unique
// index on (placement, database name) turns a 64-bit collision into a refused creation.
func DatabaseName(deploymentID, tenantID string) (string, error) {
	if err := ValidateTenantID(tenantID); err != nil {
		return "", err
	}
	if deploymentID == "" {
		return "", errors.New("schema: DatabaseName needs the deployment id")
	}
	sum := sha256.Sum256([]byte("tenantmem/database/" + deploymentID + "/" + tenantID))
	suffix := hex.EncodeToString(sum[:])[:databaseHashLength]
	var b strings.Builder
	for _, r := range strings.ToLower(tenantID) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	readable := strings.Trim(b.String(), "_")
	if room := MaxIdentifierLength - len(DatabasePrefix) - 1 - len(suffix); len(readable) > room {
		readable = strings.TrimRight(readable[:room], "_")
	}
	if readable == "" {
		return DatabasePrefix + suffix, nil
	}
	return DatabasePrefix + readable + "_" + suffix, nil
}

// IsDatabaseName reports whether name has the shape of a name [DatabaseName] returns. The
// provisioner drops only databases whose names pass it.
func IsDatabaseName(name string) bool { return databaseNamePattern.MatchString(name) }

var databaseNamePattern = regexp.MustCompile(`\Atmdb_([a-z0-9_]*_)?[0-9a-f]{16}\z`)
