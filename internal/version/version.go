// Package version says which build of tenantmem is running: the release version, the commit and
// the build date, set at link time by `make release` (-ldflags -X) and otherwise read from the
// build information the Go toolchain embeds (module version, VCS revision and time). Both
// commands print it with --version, log it at start and expose it as the metric
// tenantmem_build_info.
package version

import (
	"cmp"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Set by `make release` with -ldflags "-X github.com/tenantmem/tenantmem/internal/version.version=..."
// (and .commit, .date). Empty means: take it from the embedded build information.
var (
	version string
	commit  string
	date    string
)

// Unknown is what a field shows when neither the linker nor the build information knows it.
const Unknown = "unknown"

// Info describes a build.
type Info struct {
	// Version is the release version ("v1.2.0"), "devel" for a build outside a release, or the
	// module version when the binary was built with `go install module@version`.
	Version string `json:"version"`
	// Commit is the full VCS revision, with "-dirty" appended when the tree had local changes.
	Commit string `json:"commit"`
	// Date is when the binary was built (RFC 3339), or the commit time when only that is known.
	Date string `json:"date"`
	// GoVersion is the Go toolchain that built it; Platform is GOOS/GOARCH.
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

var (
	once sync.Once
	info Info
)

// Get returns the build's information. It is computed once; safe for concurrent use.
func Get() Info {
	once.Do(func() {
		bi, _ := debug.ReadBuildInfo()
		info = resolve(version, commit, date, bi)
	})
	return info
}

// resolve combines the linker's values with the embedded build information; linker values win.
func resolve(ldVersion, ldCommit, ldDate string, bi *debug.BuildInfo) Info {
	in := Info{GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	var modVersion, revision, vcsTime string
	modified := false
	if bi != nil {
		in.GoVersion = cmp.Or(bi.GoVersion, in.GoVersion)
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			modVersion = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if revision != "" && modified {
		revision += "-dirty"
	}
	in.Version = cmp.Or(ldVersion, modVersion, "devel")
	in.Commit = cmp.Or(ldCommit, revision, Unknown)
	in.Date = cmp.Or(ldDate, vcsTime, Unknown)
	return in
}

// String is the one line `--version` prints for the named command:
// "router v1.2.0 (commit 0123abc, built 2024-05-01T12:00:00Z, go1.26.8 linux/amd64)".
func (i Info) String() string { return i.Line("tenantmem") }

// Line is [Info.String] for the command called name. The commit is shortened to 12 hex digits,
// keeping a "-dirty" mark.
func (i Info) Line(name string) string {
	return fmt.Sprintf("%s %s (commit %s, built %s, %s %s)", name, i.Version, shortCommit(i.Commit), i.Date,
		i.GoVersion, i.Platform)
}

func shortCommit(c string) string {
	rev, dirty, _ := strings.Cut(c, "-")
	if len(rev) <= 12 {
		return c
	}
	if dirty != "" {
		return rev[:12] + "-" + dirty
	}
	return rev[:12]
}

// Collector returns the gauge tenantmem_build_info{version, commit, go_version}, always 1, so
// dashboards and alerts can tell which build each replica runs.
func Collector() prometheus.Collector {
	i := Get()
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "tenantmem_build_info",
		Help:        "The running build of tenantmem: always 1, labelled by version, commit and Go version.",
		ConstLabels: prometheus.Labels{"version": i.Version, "commit": i.Commit, "go_version": i.GoVersion},
	}, func() float64 { return 1 })
}
