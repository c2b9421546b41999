package console_test

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// envScreenshots names a folder for the browser test's screenshots (make screenshots sets it to
// docs/console); by default they go to a temporary folder and are only checked.
const envScreenshots = "TENANTMEM_SCREENSHOTS_DIR"

// chromiumPath finds Debian's Chromium (or another Chrome). The browser test never skips: a
// machine without it fails with how to install it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("Chromium is not installed, and the console's browser test needs it: run `make deps` " +
		"(deploy/install-tools.sh chromium) or, as root, `apt-get install chromium`")
	return ""
}

// TestBrowser drives the console in a real headless Chromium: login, list, search, open a
// tenant, suspend it through the confirmation, issue a key (its secret shown once) and revoke
// it, and the placements and operations pages; it takes the README's screenshots on the way.
func TestBrowser(t *testing.T) {
	t.Parallel()
	exe := chromiumPath(t)
	e := newEnv(t)
	e.createTenants("acme/u-1", "acme/u-2", "schema:acme/u-3", "beta-corp", "globex/prod", "globex/staging", "initech")
	ctx := context.Background()
	_, err := e.pool.Exec(ctx, `INSERT INTO tenantmem_shared.tenant_usage (owner_id, documents, chunks, content_bytes)
		VALUES ('acme/u-1', 42, 310, 1843200), ('acme/u-2', 7, 40, 96000), ('globex/prod', 1200, 9800, 73400320)`)
	require.NoError(t, err)
	_, err = e.prov.Migrate(ctx, provision.MigrateParams{})
	require.NoError(t, err)
	op, err := registry.StartOperation(ctx, e.pool, registry.OperationStartParams{Kind: "migrate", Subject: "every placement", Total: 1000, Unit: "schemas"})
	require.NoError(t, err)
	_, err = e.pool.Exec(ctx, `UPDATE tenantmem_control.operations SET started_at = now() - interval '50 seconds' WHERE operation_id = $1`, op)
	require.NoError(t, err)
	require.NoError(t, registry.UpdateOperation(ctx, e.pool, op, 420, 1000, 0))

	shots := os.Getenv(envScreenshots)
	if shots == "" {
		shots = t.TempDir()
	}
	require.NoError(t, os.MkdirAll(shots, 0o755))

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	bctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()

	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err != nil {
				return err
			}
			img, err := png.Decode(bytes.NewReader(buf))
			if err != nil {
				return fmt.Errorf("screenshot %s: %w", name, err)
			}
			if img.Bounds().Dx() < 600 {
				return fmt.Errorf("screenshot %s: %d pixels wide", name, img.Bounds().Dx())
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), buf, 0o644)
		})
	}
	do := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		require.NoError(t, chromedp.Do(bctx, steps...))
	}
	text := func(sel chromedp.CSS) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(sel))
		require.NoError(t, err)
		return strings.TrimSpace(s)
	}
	count := func(sel string) int {
		t.Helper()
		n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll(`+strconv.Quote(sel)+`).length`))
		require.NoError(t, err)
		return n
	}
	base := e.srv.URL
	start := time.Now()

	// Login: the console sends an anonymous visitor to the login form.
	do(chromedp.Navigate(base+"/console/tenants"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), "wrong-token-wrong-token"),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#error")))
	require.Equal(t, "invalid admin token", text("#error"))
	do(shot("login"),
		chromedp.SendKeys(chromedp.CSS("#token"), testToken),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#tenants")),
		shot("tenants"))
	require.Equal(t, 7, count("#tenants tbody tr"))

	// Search by prefix.
	do(chromedp.SendKeys(chromedp.CSS("#q"), "acme/"),
		chromedp.Click(chromedp.CSS("#search")),
		chromedp.WaitVisible(chromedp.CSS(`#first, a[href*="u-3"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`a[href*="initech"]`)),
		shot("search"))
	require.Equal(t, 3, count("#tenants tbody tr"))

	// Open a tenant and suspend it through the confirmation page.
	do(chromedp.Click(chromedp.CSS(`a.tenant-link[href$="acme%2fu-1"]`)),
		chromedp.WaitVisible(chromedp.CSS("#tenant-id")))
	require.Equal(t, "acme/u-1", text("#tenant-id"))
	do(chromedp.Click(chromedp.CSS("#suspend")),
		chromedp.WaitVisible(chromedp.CSS("#confirm")),
		shot("confirm"))
	require.Equal(t, registry.StatusActive, e.status("acme/u-1"), "nothing happens before the confirmation")
	do(chromedp.Click(chromedp.CSS("#confirm")),
		chromedp.WaitVisible(chromedp.CSS("#flash")))
	require.Contains(t, text("#flash"), "Tenant suspended")
	require.Equal(t, "suspended", text("#status"))
	require.Equal(t, registry.StatusSuspended, e.status("acme/u-1"))

	// Issue a key: its secret is on the page once.
	do(chromedp.Click(chromedp.CSS("#issue-key")),
		chromedp.WaitVisible(chromedp.CSS("#confirm")),
		chromedp.Click(chromedp.CSS("#confirm")),
		chromedp.WaitVisible(chromedp.CSS("#secret")),
		shot("tenant-key-issued"))
	secret := text("#secret")
	m := regexp.MustCompile(`\Atm_([a-z0-9]{16})_[0-9a-f]{64}\z`).FindStringSubmatch(secret)
	require.NotNil(t, m, secret)
	keyID := m[1]
	_, _, err = registry.Authenticate(ctx, e.pool, secret)
	require.NoError(t, err)

	// Revoke it (reload first: the secret is gone from the page).
	do(chromedp.Navigate(base+"/console/tenant?id=acme/u-1"),
		chromedp.WaitVisible(chromedp.CSS("#keys")))
	html, err := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS("html")))
	require.NoError(t, err)
	require.NotContains(t, html, secret)
	do(chromedp.Click(chromedp.CSS(`tr[data-key-id="`+keyID+`"] a.revoke`)),
		chromedp.WaitVisible(chromedp.CSS("#confirm")))
	require.Contains(t, text("#confirm-text"), keyID)
	do(chromedp.Click(chromedp.CSS("#confirm")),
		chromedp.WaitVisible(chromedp.CSS("#flash")),
		shot("tenant"))
	require.Contains(t, text("#flash"), "Key revoked")
	require.Regexp(t, `^\d{4}-\d\d-\d\d `, text(chromedp.CSS(`tr[data-key-id="`+keyID+`"] td:nth-child(4)`)), "revocation date shown")
	_, _, err = registry.Authenticate(ctx, e.pool, secret)
	require.ErrorIs(t, err, registry.ErrUnauthenticated)

	// Placements and operations.
	do(chromedp.Navigate(base+"/console/placements"),
		chromedp.WaitVisible(chromedp.CSS("#placements")),
		shot("placements"),
		chromedp.Navigate(base+"/console/operations"),
		chromedp.WaitVisible(chromedp.CSS("#operations")),
		shot("operations"))
	require.Equal(t, 2, count("#operations progress"))

	// Log out: the console is closed again.
	do(chromedp.Click(chromedp.CSS("#logout")),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.Navigate(base+"/console/tenants"),
		chromedp.WaitVisible(chromedp.CSS("#token")))
	t.Logf("browser session took %s; screenshots in %s", time.Since(start).Round(time.Millisecond), shots)
}
