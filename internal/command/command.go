// Package command is what the commands under cmd/ share: kong parsing with flags resolved from an
// injectable environment (so tests run commands in-process with their own), the exit code rules,
// one-line error messages and the JSON logger.
package command

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/tenantmem/tenantmem/internal/version"
)

// Exit codes of every tenantmem command.
const (
	ExitOK       = 0
	ExitFailure  = 1 // database down, migrations failed: anything not the caller's fault
	ExitBadInput = 2 // usage errors, invalid configuration or input
)

// IO is a command's streams and environment. Zero fields mean discard and an empty environment.
type IO struct {
	Stdout, Stderr io.Writer
	LookupEnv      func(key string) (string, bool)
}

// WithDefaults fills zero fields.
func (o IO) WithDefaults() IO {
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.LookupEnv == nil {
		o.LookupEnv = func(string) (string, bool) { return "", false }
	}
	return o
}

// UsageError is bad input found by a command itself (missing configuration, malformed values).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error { return &UsageError{Msg: fmt.Sprintf(format, args...)} }

// ParseParams describes a command line to parse.
type ParseParams struct {
	Name, Description string
	// Grammar is a pointer to the kong grammar struct. A field of type kong.VersionFlag in it
	// (see [VersionFlag]) prints the build's version line ([version.Info.Line]) and exits 0.
	Grammar any
	Vars    kong.Vars
	Args    []string
}

// VersionFlag is the --version flag of every command; put it in the grammar as
//
//	Version command.VersionFlag `name:"version" help:"Print the version and exit."`
type VersionFlag = kong.VersionFlag

// kongExit is how kong's Exit (after --help) unwinds to Parse instead of ending the process.
type kongExit int

// Parse parses p.Args into p.Grammar. Flags take their env tags' values through o.LookupEnv, in the
// order of the tag; flags on the command line win. When it returns ok false, the command is done
// and must exit with code: 0 after --help, 2 on a usage error (already printed).
func Parse(o IO, p ParseParams) (kctx *kong.Context, code int, ok bool) {
	o = o.WithDefaults()
	defer func() {
		if r := recover(); r != nil {
			e, isExit := r.(kongExit)
			if !isExit {
				panic(r)
			}
			kctx, code, ok = nil, int(e), false
		}
	}()
	parser, err := kong.New(p.Grammar,
		kong.Name(p.Name),
		kong.Description(p.Description),
		kong.Writers(o.Stdout, o.Stderr),
		kong.Exit(func(code int) { panic(kongExit(code)) }),
		kong.Vars{"version": version.Get().Line(p.Name)}.CloneWith(p.Vars),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Resolvers(envResolver(o.LookupEnv)),
	)
	if err != nil {
		fmt.Fprintf(o.Stderr, "%s: %v\n", p.Name, err)
		return nil, ExitFailure, false
	}
	kctx, err = parser.Parse(p.Args)
	if err != nil {
		fmt.Fprintf(o.Stderr, "%s: %v (see %s --help)\n", p.Name, err, p.Name)
		return nil, ExitBadInput, false
	}
	return kctx, ExitOK, true
}

func envResolver(lookup func(string) (string, bool)) kong.Resolver {
	return kong.ResolverFunc(func(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
		for _, name := range flag.Tag.Envs {
			if v, ok := lookup(name); ok {
				return v, nil
			}
		}
		return nil, nil
	})
}

// Logger is a JSON logger on w at the named level (debug, info, warn or error).
func Logger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, Usagef("--log-level: %v", err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// Fail prints err on one line to o.Stderr, prefixed with the command name, and returns its exit
// code: ExitBadInput for a *UsageError, a kong parse error or anything badInput accepts, else
// ExitFailure.
func Fail(o IO, name string, err error, badInput func(error) bool) int {
	o = o.WithDefaults()
	fmt.Fprintf(o.Stderr, "%s: %s\n", name, OneLine(err.Error()))
	var (
		ue *UsageError
		pe *kong.ParseError
	)
	if errors.As(err, &ue) || errors.As(err, &pe) || (badInput != nil && badInput(err)) {
		return ExitBadInput
	}
	return ExitFailure
}

// OneLine folds a multi-line error message (pgconn lists every address it tried) into one line.
func OneLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, " ")
}
