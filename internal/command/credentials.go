package command

import (
	"os"

	"github.com/tenantmem/tenantmem/internal/placement"
)

// PlacementCredentials reads a command's credentials for placements: the credentials file at path
// (none when path is empty), then the TENANTMEM_PLACEMENT_<NAME>_<LOGIN>_USER and _PASSWORD
// variables of environ, which win. Like PostgreSQL's passfile, a file that its group or others may
// read or write is refused. Errors are *UsageError (exit 2).
func PlacementCredentials(path string, environ []string) (placement.Credentials, error) {
	var file placement.Credentials
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return placement.Credentials{}, Usagef("--placement-credentials: %v", err)
		}
		defer func() { _ = f.Close() }()
		fi, err := f.Stat()
		if err != nil {
			return placement.Credentials{}, Usagef("--placement-credentials: %v", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return placement.Credentials{}, Usagef("--placement-credentials: %s is accessible by its group or others (mode %04o); chmod 600 it",
				path, fi.Mode().Perm())
		}
		if file, err = placement.ParseCredentials(f); err != nil {
			return placement.Credentials{}, Usagef("--placement-credentials %s: %v", path, err)
		}
	}
	return file.Merge(placement.CredentialsFromEnv(environ)), nil
}
