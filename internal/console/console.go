package console

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/tenantmem/tenantmem/internal/httpapi"
	"github.com/tenantmem/tenantmem/internal/placement"
	"github.com/tenantmem/tenantmem/internal/provision"
	"github.com/tenantmem/tenantmem/internal/registry"
)

// Defaults and limits.
const (
	// DefaultSessionTTL is how long a login lasts.
	DefaultSessionTTL = 8 * time.Hour
	// DefaultMaxSessions bounds the sessions held in memory; the oldest goes first.
	DefaultMaxSessions = 1000
	// DefaultPageSize is the number of tenants per page.
	DefaultPageSize = 50
	// DefaultAuditRows is how many of a tenant's newest audit events its page shows.
	DefaultAuditRows = 100
	// DefaultStalledAfter is how long a running operation may go without a report before the
	// console calls it stalled.
	DefaultStalledAfter = 10 * provision.OperationHeartbeat
	// DefaultUsageTimeout bounds the reads of tenants' usage totals for one page.
	DefaultUsageTimeout = 3 * time.Second
	// CookieName is the session cookie's name.
	CookieName = "tenantmem_console"
	// Prefix is the path under which the console is served.
	Prefix = "/console/"
	// maxFormBytes bounds a form body.
	maxFormBytes = 16 << 10
)

// Config configures a [Console].
type Config struct {
	// Provisioner does the work. Required.
	Provisioner *provision.Provisioner
	// Pool is the provisioner's pool on the control database (tenant search, audit log,
	// operations). Required.
	Pool *pgxpool.Pool
	// AdminToken is the token the login form asks for: the admin API's. Required.
	AdminToken string
	// SecureCookie marks the session cookie Secure also when the request did not arrive over TLS
	// (a TLS-terminating proxy in front). Over TLS it is always Secure.
	SecureCookie bool
	// SessionTTL is how long a login lasts. Default [DefaultSessionTTL].
	SessionTTL time.Duration
	// MaxSessions bounds the sessions in memory. Default [DefaultMaxSessions].
	MaxSessions int
	// PageSize is the number of tenants per page. Default [DefaultPageSize].
	PageSize int
	// StalledAfter: see [DefaultStalledAfter].
	StalledAfter time.Duration
	// Logger. Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.SessionTTL = cmp.Or(c.SessionTTL, DefaultSessionTTL)
	c.MaxSessions = cmp.Or(c.MaxSessions, DefaultMaxSessions)
	c.PageSize = cmp.Or(c.PageSize, DefaultPageSize)
	c.StalledAfter = cmp.Or(c.StalledAfter, DefaultStalledAfter)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Provisioner == nil:
		return errors.New("console: Config.Provisioner is required")
	case c.Pool == nil:
		return errors.New("console: Config.Pool is required")
	case len(c.AdminToken) < httpapi.MinAdminTokenLength:
		return fmt.Errorf("console: the admin token must be at least %d characters", httpapi.MinAdminTokenLength)
	case c.SessionTTL < time.Minute:
		return errors.New("console: SessionTTL must be at least a minute")
	case c.MaxSessions < 1 || c.PageSize < 1 || c.PageSize > 1000:
		return errors.New("console: MaxSessions must be positive and PageSize from 1 to 1000")
	}
	return nil
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Console is the operator console's handler, for the paths under [Prefix].
type Console struct {
	cfg      Config
	prov     *provision.Provisioner
	pool     *pgxpool.Pool
	token    [sha256.Size]byte
	pages    map[string]*template.Template
	mux      *http.ServeMux
	sessions sessions
	// origin refuses cross-origin unsafe requests by Sec-Fetch-Site and Origin (net/http).
	origin *http.CrossOriginProtection
}

// New returns a Console.
func New(cfg Config) (*Console, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, prov: cfg.Provisioner, pool: cfg.Pool, token: sha256.Sum256([]byte(cfg.AdminToken)),
		pages: pages, sessions: sessions{m: map[string]*session{}}, origin: http.NewCrossOriginProtection()}
	c.origin.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, errCrossOrigin)
	}))
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /console/static/", http.StripPrefix("/console/static/", cacheable(http.FileServerFS(static))))
	mux.HandleFunc("GET /console/login", c.loginPage)
	mux.HandleFunc("POST /console/login", c.login)
	mux.Handle("POST /console/logout", c.authed(c.logout))
	mux.Handle("GET /console/{$}", c.authed(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/tenants", http.StatusSeeOther)
	}))
	mux.Handle("GET /console/tenants", c.authed(c.tenants))
	mux.Handle("GET /console/tenant", c.authed(c.tenant))
	mux.Handle("GET /console/confirm", c.authed(c.confirm))
	mux.Handle("POST /console/tenant/suspend", c.authed(c.suspend))
	mux.Handle("POST /console/tenant/resume", c.authed(c.resume))
	mux.Handle("POST /console/tenant/issue-key", c.authed(c.issueKey))
	mux.Handle("POST /console/tenant/revoke-key", c.authed(c.revokeKey))
	mux.Handle("GET /console/placements", c.authed(c.placements))
	mux.Handle("GET /console/operations", c.authed(c.operations))
	mux.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, fmt.Errorf("%w: %s %s", errNoPage, r.Method, r.URL.Path))
	})
	c.mux = mux
	return c, nil
}

// Mount serves the console on e under [Prefix] (and /console, redirected).
func (c *Console) Mount(e *echo.Echo) {
	h := echo.WrapHandler(c)
	e.Any("/console", func(ec echo.Context) error {
		return ec.Redirect(http.StatusSeeOther, Prefix)
	})
	e.Any(Prefix+"*", h)
}

// ServeHTTP serves one console request: security headers on every response, then the
// cross-origin check of unsafe methods, then the route.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "+
		"frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := sameOrigin(r); err != nil {
			c.fail(w, r, err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	}
	c.origin.Handler(c.mux).ServeHTTP(w, r)
}

// cacheable lets browsers keep the static assets (they are embedded: they change with the binary).
func cacheable(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

// Errors of the console's own checks.
var (
	errCrossOrigin = errors.New("cross-origin request refused")
	errNoOrigin    = errors.New("request refused: it carries neither Origin nor Referer")
	errCSRF        = errors.New("request refused: missing or wrong CSRF token (reload the page and try again)")
	errNoPage      = errors.New("no such page")
	errLogin       = errors.New("invalid admin token")
)

// sameOrigin requires an unsafe request to name its origin (Origin, else Referer) and that origin
// to be the host the request was sent to. Browsers send Origin with every POST; one that sends
// neither is refused rather than trusted. http.CrossOriginProtection checks Sec-Fetch-Site too.
func sameOrigin(r *http.Request) error {
	src := r.Header.Get("Origin")
	if src == "" || src == "null" {
		src = r.Header.Get("Referer")
	}
	if src == "" {
		return errNoOrigin
	}
	scheme, rest, ok := strings.Cut(src, "://")
	if !ok || (scheme != "http" && scheme != "https") {
		return errCrossOrigin
	}
	host, _, _ := strings.Cut(rest, "/")
	if host == "" || !strings.EqualFold(host, r.Host) {
		return errCrossOrigin
	}
	return nil
}

// session is one login.
type session struct {
	id      string
	csrf    string
	created time.Time
	expires time.Time
}

// sessions holds the logins in memory.
type sessions struct {
	mu sync.Mutex
	m  map[string]*session
}

func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// create starts a session, dropping expired ones and, over max, the oldest.
func (s *sessions) create(now time.Time, ttl time.Duration, maxSessions int) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var oldest *session
	for id, ss := range s.m {
		if !now.Before(ss.expires) {
			delete(s.m, id)
			continue
		}
		if oldest == nil || ss.created.Before(oldest.created) {
			oldest = ss
		}
	}
	if len(s.m) >= maxSessions && oldest != nil {
		delete(s.m, oldest.id)
	}
	ss := &session{id: randomToken(), csrf: randomToken(), created: now, expires: now.Add(ttl)}
	s.m[ss.id] = ss
	return ss
}

func (s *sessions) get(id string, now time.Time) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.m[id]
	if ss == nil {
		return nil
	}
	if !now.Before(ss.expires) {
		delete(s.m, id)
		return nil
	}
	return ss
}

func (s *sessions) delete(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

type sessionKey struct{}

func sessionOf(ctx context.Context) *session {
	ss, _ := ctx.Value(sessionKey{}).(*session)
	return ss
}

// authed admits requests of a live session; a POST must also carry the session's CSRF token.
// Without a session a GET is sent to the login page and anything else refused.
func (c *Console) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ss *session
		if ck, err := r.Cookie(CookieName); err == nil {
			ss = c.sessions.get(ck.Value, c.cfg.Now())
		}
		if ss == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/console/login", http.StatusSeeOther)
				return
			}
			c.fail(w, r, fmt.Errorf("%w: not signed in", registry.ErrUnauthenticated))
			return
		}
		if r.Method == http.MethodPost {
			got := r.PostFormValue("csrf")
			if subtle.ConstantTimeCompare([]byte(got), []byte(ss.csrf)) != 1 {
				c.fail(w, r, errCSRF)
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, ss)))
	})
}

func (c *Console) secure(r *http.Request) bool { return c.cfg.SecureCookie || r.TLS != nil }

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	// Secure depends on the request: a cookie marked Secure is never sent back over plain HTTP,
	// which is how `serve` is reached on loopback or through an SSH tunnel.
	http.SetCookie(w, &http.Cookie{ //nolint:gosec // HttpOnly and SameSite=Strict always; Secure over TLS or with SecureCookie
		Name: CookieName, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.secure(r),
	})
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "login", page{Title: "Sign in", Data: loginData{}})
}

type loginData struct{ Error string }

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	got := sha256.Sum256([]byte(r.PostFormValue("token")))
	if subtle.ConstantTimeCompare(got[:], c.token[:]) != 1 {
		c.cfg.Logger.WarnContext(r.Context(), "console: failed login", slog.String("remote", r.RemoteAddr))
		c.render(w, r, http.StatusUnauthorized, "login", page{Title: "Sign in", Data: loginData{Error: errLogin.Error()}})
		return
	}
	// A session id the browser brought along is never reused (no session fixation).
	if ck, err := r.Cookie(CookieName); err == nil {
		c.sessions.delete(ck.Value)
	}
	ss := c.sessions.create(c.cfg.Now(), c.cfg.SessionTTL, c.cfg.MaxSessions)
	c.setCookie(w, r, ss.id, int(c.cfg.SessionTTL/time.Second))
	c.cfg.Logger.InfoContext(r.Context(), "console: login", slog.String("remote", r.RemoteAddr))
	http.Redirect(w, r, "/console/tenants", http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	c.sessions.delete(sessionOf(r.Context()).id)
	c.setCookie(w, r, "", -1)
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

// page is what every template gets.
type page struct {
	Title   string
	Nav     string
	Flash   string
	Refresh int
	Session bool
	CSRF    string
	Data    any
}

func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"bytes": humanBytes,
		"when": func(v any) string {
			switch t := v.(type) {
			case time.Time:
				if t.IsZero() {
					return "–"
				}
				return t.UTC().Format("2006-01-02 15:04:05Z")
			case *time.Time:
				if t == nil {
					return "–"
				}
				return t.UTC().Format("2006-01-02 15:04:05Z")
			}
			return fmt.Sprint(v)
		},
		"json": func(v any) string {
			b, err := json.Marshal(v)
			if err != nil {
				return fmt.Sprint(v)
			}
			return string(b)
		},
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"login", "error", "tenants", "tenant", "confirm", "placements", "operations"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// render writes a page; it fills in the session's part of p.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	if ss := sessionOf(r.Context()); ss != nil {
		p.Session, p.CSRF = true, ss.csrf
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := c.pages[name].ExecuteTemplate(w, "layout", p); err != nil {
		c.cfg.Logger.ErrorContext(r.Context(), "console: render", slog.String("page", name), slog.String("error", err.Error()))
	}
}

type errorData struct {
	Status     int
	StatusText string
	Message    string
}

// fail renders an error page with the status of err. Input errors show their message (escaped
// like everything else); unexpected errors are logged and shown as a request id only.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, ""
	var fe *registry.FieldError
	switch {
	case errors.As(err, &fe):
		status, msg = http.StatusBadRequest, fe.Error()
	case errors.Is(err, errCrossOrigin), errors.Is(err, errNoOrigin), errors.Is(err, errCSRF):
		status, msg = http.StatusForbidden, err.Error()
	case errors.Is(err, registry.ErrUnauthenticated):
		status, msg = http.StatusUnauthorized, "not signed in: sign in at /console/login"
	case errors.Is(err, errNoPage), errors.Is(err, registry.ErrNotFound):
		status, msg = http.StatusNotFound, err.Error()
	case errors.Is(err, registry.ErrConflict):
		status, msg = http.StatusConflict, err.Error()
	case errors.Is(err, placement.ErrUnavailable):
		status, msg = http.StatusServiceUnavailable, err.Error()
	default:
		msg = "internal error; the provisioner's log has the details (request id " + httpapi.RequestID(r.Context()) + ")"
		c.cfg.Logger.ErrorContext(r.Context(), "console: request failed", slog.String("path", r.URL.Path),
			slog.String("request_id", httpapi.RequestID(r.Context())), slog.String("error", err.Error()))
	}
	if status == http.StatusForbidden {
		c.cfg.Logger.WarnContext(r.Context(), "console: request refused", slog.String("path", r.URL.Path),
			slog.String("remote", r.RemoteAddr), slog.String("reason", err.Error()))
	}
	c.render(w, r, status, "error", page{Title: http.StatusText(status),
		Data: errorData{Status: status, StatusText: http.StatusText(status), Message: msg}})
}

// humanBytes formats a byte count with binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
