package placement_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/placement"
)

func TestParseCredentials(t *testing.T) {
	t.Parallel()
	type want struct {
		placement string
		login     placement.Login
		cred      placement.Credential
		found     bool
	}
	for _, tc := range []struct {
		name   string
		given  string
		expect []want
		err    string
	}{
		{name: "lines, comments and blanks", given: "# comment\n\neu-1:router:tenantmem_router:s3cret\n  # indented comment\neu-1:provisioner:postgres:an0ther\r\n",
			expect: []want{
				{"eu-1", placement.LoginRouter, placement.Credential{User: "tenantmem_router", Password: "s3cret", Explicit: true}, true},
				{"eu-1", placement.LoginProvisioner, placement.Credential{User: "postgres", Password: "an0ther", Explicit: true}, true},
				{"eu-2", placement.LoginRouter, placement.Credential{}, false},
			}},
		{name: "escapes", given: `p:router:u\:1:pa\:ss\\word`,
			expect: []want{{"p", placement.LoginRouter, placement.Credential{User: "u:1", Password: `pa:ss\word`, Explicit: true}, true}}},
		{name: "empty user and password", given: "p:router::",
			expect: []want{{"p", placement.LoginRouter, placement.Credential{Explicit: true}, true}}},
		{name: "wildcard, and a line of its own wins", given: "*:router:any:one\np:router:mine:two",
			expect: []want{
				{"p", placement.LoginRouter, placement.Credential{User: "mine", Password: "two", Explicit: true}, true},
				{"q", placement.LoginRouter, placement.Credential{User: "any", Password: "one", Explicit: true}, true},
				{"q", placement.LoginProvisioner, placement.Credential{}, false},
			}},
		{name: "a colon in the password must be escaped", given: "p:router:u:a:b", err: "line 1: want placement:login:user:password, got 5 fields"},
		{name: "too few fields", given: "ok\np:router:u", err: "line 1"},
		{name: "unknown login", given: "p:admin:u:x", err: `login "admin"`},
		{name: "bad placement", given: "\nEU 1:router:u:x", err: "line 2: placement"},
		{name: "duplicate", given: "p:router:u:x\np:router:v:y", err: "line 2: a second line"},
		{name: "trailing backslash", given: `p:router:u:x\`, err: "lone backslash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := placement.ParseCredentials(strings.NewReader(tc.given))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			for _, w := range tc.expect {
				got, ok := c.Lookup(w.placement, w.login)
				require.Equal(t, w.found, ok, "%s %s", w.placement, w.login)
				require.Equal(t, w.cred, got, "%s %s", w.placement, w.login)
			}
		})
	}
}

func TestCredentialsFromEnvOverrideTheFile(t *testing.T) {
	t.Parallel()
	file, err := placement.ParseCredentials(strings.NewReader("eu-1:router:from_file:file_pw\n*:provisioner:su:su_pw\n"))
	require.NoError(t, err)
	env := placement.CredentialsFromEnv([]string{
		"TENANTMEM_PLACEMENT_EU_1_ROUTER_PASSWORD=env_pw",
		"TENANTMEM_PLACEMENT_EU_1_ROUTER_USER=from_env",
		"TENANTMEM_PLACEMENT_US_EAST_PROVISIONER_PASSWORD=p=w", // a value may contain '='
		"TENANTMEM_PLACEMENT__ROUTER_PASSWORD=ignored",         // no name
		"TENANTMEM_PLACEMENTS=ignored",
		"PATH=/bin",
	})
	c := file.Merge(env)
	got, ok := c.Lookup("eu-1", placement.LoginRouter)
	require.True(t, ok)
	require.Equal(t, placement.Credential{User: "from_env", Password: "env_pw", Explicit: true}, got)
	// The same variables name us-east and us_east.
	for _, name := range []string{"us-east", "us_east"} {
		got, ok = c.Lookup(name, placement.LoginProvisioner)
		require.True(t, ok)
		require.Equal(t, placement.Credential{Password: "p=w", Explicit: true}, got, "the user is left to the default")
	}
	got, ok = c.Lookup("elsewhere", placement.LoginProvisioner)
	require.True(t, ok)
	require.Equal(t, "su", got.User)
	_, ok = c.Lookup("elsewhere", placement.LoginRouter)
	require.False(t, ok)
	_, ok = placement.Credentials{}.Lookup("eu-1", placement.LoginRouter)
	require.False(t, ok, "the zero value has none")
}
