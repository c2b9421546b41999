package chaos_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/tenantmem/tenantmem/internal/pgcluster"
)

// cluster is this package's own PostgreSQL cluster: the scenarios restart it, so it is not the
// shared test cluster of pgtest. The scenarios run one after the other.
var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Config{Fast: true})
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: cannot start a PostgreSQL cluster (make test installs one): %v\n", err)
		return 1
	}
	cluster = c
	code := m.Run()
	if err := c.Stop(context.WithoutCancel(ctx)); err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
	}
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			return 1
		}
	}
	return code
}
