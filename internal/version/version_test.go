package version

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestResolve(t *testing.T) {
	t.Parallel()
	const rev = "0123456789abcdef0123456789abcdef01234567"
	vcs := func(modified string) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: rev}, {Key: "vcs.time", Value: "2024-05-01T10:00:00Z"}, {Key: "vcs.modified", Value: modified},
		}}
	}
	for _, tc := range []struct {
		given                   string
		ldVersion, ldCommit, ld string
		bi                      *debug.BuildInfo
		expect                  Info
	}{
		{given: "no information at all", expect: Info{Version: "devel", Commit: Unknown, Date: Unknown}},
		{given: "a go build in a clean checkout", bi: vcs("false"),
			expect: Info{Version: "devel", Commit: rev, Date: "2024-05-01T10:00:00Z", GoVersion: "go1.26.8"}},
		{given: "a go build with local changes", bi: vcs("true"),
			expect: Info{Version: "devel", Commit: rev + "-dirty", Date: "2024-05-01T10:00:00Z", GoVersion: "go1.26.8"}},
		{given: "make release: the linker's values win", ldVersion: "v1.2.0", ldCommit: "abc", ld: "2024-06-01T00:00:00Z", bi: vcs("true"),
			expect: Info{Version: "v1.2.0", Commit: "abc", Date: "2024-06-01T00:00:00Z", GoVersion: "go1.26.8"}},
		{given: "go install module@version", bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.3.0"}},
			expect: Info{Version: "v1.3.0", Commit: Unknown, Date: Unknown, GoVersion: "go1.26.8"}},
	} {
		got := resolve(tc.ldVersion, tc.ldCommit, tc.ld, tc.bi)
		require.NotEmpty(t, got.Platform, tc.given)
		got.Platform = ""
		if tc.expect.GoVersion == "" {
			require.True(t, strings.HasPrefix(got.GoVersion, "go"), tc.given)
			got.GoVersion = ""
		}
		require.Equal(t, tc.expect, got, tc.given)
	}
}

func TestLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ given, expect string }{
		{"0123456789abcdef0123456789abcdef01234567", "0123456789ab"},
		{"0123456789abcdef0123456789abcdef01234567-dirty", "0123456789ab-dirty"},
		{"abc", "abc"},
		{Unknown, Unknown},
	} {
		i := Info{Version: "v1.2.0", Commit: tc.given, Date: "2024-06-01T00:00:00Z", GoVersion: "go1.26.8", Platform: "linux/amd64"}
		require.Equal(t, "router v1.2.0 (commit "+tc.expect+", built 2024-06-01T00:00:00Z, go1.26.8 linux/amd64)", i.Line("router"))
	}
}

func TestCollector(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(Collector()))
	i := Get()
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tenantmem_build_info The running build of tenantmem: always 1, labelled by version, commit and Go version.
# TYPE tenantmem_build_info gauge
tenantmem_build_info{commit="`+i.Commit+`",go_version="`+i.GoVersion+`",version="`+i.Version+`"} 1
`), "tenantmem_build_info"))
}
