package command_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/command"
)

type grammar struct {
	URL   string `name:"url" env:"T_FIRST,T_SECOND" required:""`
	Level string `name:"level" default:"info"`
}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		givenArgs []string
		givenEnv  map[string]string
		expectOK  bool
		expectURL string
		expectRC  int
	}{
		{"flag", []string{"--url", "a"}, nil, true, "a", 0},
		{"first env wins", nil, map[string]string{"T_FIRST": "one", "T_SECOND": "two"}, true, "one", 0},
		{"second env", nil, map[string]string{"T_SECOND": "two"}, true, "two", 0},
		{"flag beats env", []string{"--url", "f"}, map[string]string{"T_FIRST": "one"}, true, "f", 0},
		{"missing required", nil, nil, false, "", command.ExitBadInput},
		{"unknown flag", []string{"--url", "a", "--nope"}, nil, false, "", command.ExitBadInput},
		{"help", []string{"--help"}, nil, false, "", command.ExitOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			var g grammar
			_, rc, ok := command.Parse(command.IO{Stdout: &out, Stderr: &errOut, LookupEnv: func(k string) (string, bool) {
				v, ok := tc.givenEnv[k]
				return v, ok
			}}, command.ParseParams{Name: "x", Grammar: &g, Args: tc.givenArgs})
			require.Equal(t, tc.expectOK, ok, errOut.String())
			require.Equal(t, tc.expectRC, rc)
			require.Equal(t, tc.expectURL, g.URL)
		})
	}
}

func TestFail(t *testing.T) {
	t.Parallel()
	errBad := errors.New("bad")
	for _, tc := range []struct {
		given  error
		expect int
	}{
		{command.Usagef("--x is required"), command.ExitBadInput},
		{fmt.Errorf("wrapped: %w", errBad), command.ExitBadInput},
		{errors.New("database down\nsecond line"), command.ExitFailure},
	} {
		var errOut bytes.Buffer
		rc := command.Fail(command.IO{Stderr: &errOut}, "x", tc.given, func(err error) bool { return errors.Is(err, errBad) })
		require.Equal(t, tc.expect, rc, tc.given.Error())
		require.Equal(t, "x: "+command.OneLine(tc.given.Error())+"\n", errOut.String())
		require.NotContains(t, errOut.String()[:errOut.Len()-1], "\n")
	}
}

func TestLogger(t *testing.T) {
	t.Parallel()
	_, err := command.Logger(&bytes.Buffer{}, "loud")
	var ue *command.UsageError
	require.ErrorAs(t, err, &ue)
	l, err := command.Logger(&bytes.Buffer{}, "warn")
	require.NoError(t, err)
	require.NotNil(t, l)
}
