package placement

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tenantmem/tenantmem/internal/registry"
)

// Login names the process whose credentials are meant: the router (DML as the router role) or
// the provisioner (DDL; a superuser or a member of the owner role with CREATEDB).
type Login string

// The logins.
const (
	LoginRouter      Login = "router"
	LoginProvisioner Login = "provisioner"
)

// Credential is the user and password one login uses on one placement. An empty Password with
// Explicit set means "connect without a password" (trust or certificate authentication).
type Credential struct {
	User     string
	Password string
	// Explicit is set when the credential was configured (file or environment), as opposed to
	// found nowhere.
	Explicit bool
	// NoPassword is set when the credential names a user but no password (only the _USER
	// variable): the password then comes from libpq's passfile, as when nothing is configured.
	NoPassword bool
}

// anyPlacement matches every placement in a credentials file.
const anyPlacement = "*"

// Credentials are the per-placement credentials of this process, read from a credentials file
// and the environment by cmd/ and handed over in configuration. The zero value has none. Lookups
// prefer the environment, then the file's line for the placement, then the file's "*" line.
type Credentials struct {
	file map[credKey]Credential
	env  map[credKey]Credential
}

type credKey struct {
	placement string
	login     Login
}

// ParseCredentials reads a credentials file: one line per placement and login,
//
//	# placement:login:user:password
//	eu-1:router:tenantmem_router:s3cret
//	eu-1:provisioner:postgres:an0ther
//	*:router:tenantmem_router:the-same-everywhere
//
// with the escapes of PostgreSQL's passfile (\: and \\); blank lines and lines starting with #
// are skipped. placement is a placement name or "*" (every placement without its own line); login
// is router or provisioner; user may be empty (the default user of the login); password may be
// empty (connect without one, e.g. certificate authentication). Errors name the line.
func ParseCredentials(r io.Reader) (Credentials, error) {
	c := Credentials{file: map[credKey]Credential{}}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		fields, err := splitEscaped(line)
		if err != nil {
			return Credentials{}, fmt.Errorf("credentials line %d: %w", n, err)
		}
		if len(fields) != 4 {
			return Credentials{}, fmt.Errorf("credentials line %d: want placement:login:user:password, got %d fields", n, len(fields))
		}
		k, err := newCredKey(fields[0], fields[1])
		if err != nil {
			return Credentials{}, fmt.Errorf("credentials line %d: %w", n, err)
		}
		if _, dup := c.file[k]; dup {
			return Credentials{}, fmt.Errorf("credentials line %d: a second line for %s:%s", n, k.placement, k.login)
		}
		c.file[k] = Credential{User: fields[2], Password: fields[3], Explicit: true}
	}
	if err := sc.Err(); err != nil {
		return Credentials{}, fmt.Errorf("credentials: %w", err)
	}
	return c, nil
}

func newCredKey(placement, login string) (credKey, error) {
	if placement != anyPlacement {
		if err := registry.ValidatePlacementName(placement); err != nil {
			return credKey{}, err
		}
	}
	switch l := Login(login); l {
	case LoginRouter, LoginProvisioner:
		return credKey{placement: placement, login: l}, nil
	}
	return credKey{}, fmt.Errorf("login %q: want router or provisioner", login)
}

// splitEscaped splits a passfile-style line on unescaped ':'.
func splitEscaped(line string) ([]string, error) {
	var (
		fields []string
		cur    strings.Builder
	)
	for i := 0; i < len(line); i++ {
		switch c := line[i]; c {
		case '\\':
			if i+1 == len(line) {
				return nil, errors.New("a line must not end with a lone backslash")
			}
			i++
			cur.WriteByte(line[i])
		case ':':
			fields = append(fields, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(fields, cur.String()), nil
}

// EnvPrefix starts the environment variables of [CredentialsFromEnv].
const EnvPrefix = "TENANTMEM_PLACEMENT_"

// CredentialsFromEnv reads credentials from environment entries ("KEY=value", as os.Environ
// returns them): TENANTMEM_PLACEMENT_<NAME>_<LOGIN>_USER and _PASSWORD, where NAME is the
// placement name upper-cased with '-' written as '_' and LOGIN is ROUTER or PROVISIONER, e.g.
// TENANTMEM_PLACEMENT_EU_1_ROUTER_PASSWORD. Placements whose names differ only by '-' versus '_'
// share their variables (use the file to tell them apart). Other variables are ignored.
func CredentialsFromEnv(environ []string) Credentials {
	c := Credentials{env: map[credKey]Credential{}}
	passwordSet := map[credKey]bool{}
	for _, kv := range environ {
		key, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(key, EnvPrefix) {
			continue
		}
		rest := strings.TrimPrefix(key, EnvPrefix)
		for _, login := range []Login{LoginRouter, LoginProvisioner} {
			for _, part := range []string{"_USER", "_PASSWORD"} {
				suffix := "_" + strings.ToUpper(string(login)) + part
				name, ok := strings.CutSuffix(rest, suffix)
				if !ok || name == "" {
					continue
				}
				k := credKey{placement: name, login: login}
				cr := c.env[k]
				cr.Explicit = true
				if part == "_USER" {
					cr.User = value
				} else {
					cr.Password = value
					passwordSet[k] = true
				}
				c.env[k] = cr
			}
		}
	}
	for k, cr := range c.env {
		cr.NoPassword = !passwordSet[k]
		c.env[k] = cr
	}
	return c
}

// envName is a placement name as it appears in environment variables.
func envName(placement string) string {
	return strings.ToUpper(strings.ReplaceAll(placement, "-", "_"))
}

// Merge returns credentials holding both: the file lines of c and other (other's line wins for
// the same placement and login), and the environment entries of both (other's win).
func (c Credentials) Merge(other Credentials) Credentials {
	out := Credentials{file: map[credKey]Credential{}, env: map[credKey]Credential{}}
	for _, src := range []Credentials{c, other} {
		for k, v := range src.file {
			out.file[k] = v
		}
		for k, v := range src.env {
			out.env[k] = v
		}
	}
	return out
}

// Lookup returns the credential configured for a login on a placement: the environment's, else
// the file's line for the placement, else the file's "*" line. ok is false when none is
// configured.
func (c Credentials) Lookup(placement string, login Login) (Credential, bool) {
	if cr, ok := c.env[credKey{placement: envName(placement), login: login}]; ok {
		return cr, true
	}
	if cr, ok := c.file[credKey{placement: placement, login: login}]; ok {
		return cr, true
	}
	cr, ok := c.file[credKey{placement: anyPlacement, login: login}]
	return cr, ok
}
