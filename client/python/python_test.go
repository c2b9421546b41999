// Package python_test runs the Python client's tests (python3 -m unittest) against the real
// provisioning API and router, started in-process on free ports.
package python_test

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/pgtest"
	"github.com/tenantmem/tenantmem/internal/stacktest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestPythonClient: the README session and the retry rules, through tenantmem.py.
func TestPythonClient(t *testing.T) {
	t.Parallel()
	python, err := exec.LookPath("python3")
	require.NoError(t, err, "python3 is needed: make deps installs it")
	stack := stacktest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-m", "unittest", "-v", "test_tenantmem")
	cmd.Env = append(os.Environ(),
		"TENANTMEM_TEST_ROUTER_URL="+stack.RouterURL,
		"TENANTMEM_TEST_ADMIN_URL="+stack.AdminURL,
		"TENANTMEM_TEST_ADMIN_TOKEN="+stack.AdminToken,
		"PYTHONDONTWRITEBYTECODE=1",
	)
	out, err := cmd.CombinedOutput()
	t.Logf("python3 -m unittest -v test_tenantmem:\n%s", out)
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^Ran (\d+) tests? in `).FindSubmatch(out)
	require.NotNil(t, m, "no unittest summary")
	n, err := strconv.Atoi(string(m[1]))
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, 5, "every test ran")
	require.Regexp(t, `(?m)^OK$`, string(out))
}
