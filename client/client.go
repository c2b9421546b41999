package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// Defaults of [Config].
const (
	DefaultMaxRetries   = 3
	DefaultMaxRetryWait = 30 * time.Second
	DefaultRetryWaitMin = 500 * time.Millisecond
	DefaultTimeout      = time.Minute
	// maxErrorBody bounds how much of an error response is read.
	maxErrorBody = 64 << 10
)

// Config configures a [Router] or an [Admin].
type Config struct {
	// BaseURL is the server's address, e.g. "http://127.0.0.1:8080"; a path prefix is kept (for
	// a server behind a reverse proxy). Required.
	BaseURL string
	// Token is the bearer credential: a tenant's API key for [Router], the admin token for
	// [Admin]. Required.
	Token string
	// HTTPClient sends the requests. Default: a client with [DefaultTimeout] per attempt.
	HTTPClient *http.Client
	// MaxRetries is how many times a request answered 503 or 429 is sent again (default
	// [DefaultMaxRetries]); a negative value disables retries.
	MaxRetries int
	// MaxRetryWait is the longest single wait before a retry (default [DefaultMaxRetryWait]). A
	// Retry-After longer than that is not waited for: the *Error is returned at once, with its
	// RetryAfter set.
	MaxRetryWait time.Duration
	// RetryWaitMin is the first wait when the server sends no Retry-After; it doubles on each
	// retry up to MaxRetryWait. Default [DefaultRetryWaitMin].
	RetryWaitMin time.Duration
	// UserAgent is sent as User-Agent. Default "tenantmem-go-client".
	UserAgent string
	// Logger receives a debug line per retry. Default: discard.
	Logger *slog.Logger
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: DefaultTimeout}
	}
	switch {
	case c.MaxRetries == 0:
		c.MaxRetries = DefaultMaxRetries
	case c.MaxRetries < 0:
		c.MaxRetries = 0
	}
	c.MaxRetryWait = cmp.Or(c.MaxRetryWait, DefaultMaxRetryWait)
	c.RetryWaitMin = cmp.Or(c.RetryWaitMin, DefaultRetryWaitMin)
	c.UserAgent = cmp.Or(c.UserAgent, "tenantmem-go-client")
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() (*url.URL, error) {
	if c.BaseURL == "" {
		return nil, errors.New("client: Config.BaseURL is required")
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: Config.BaseURL %q must be an http or https URL", c.BaseURL)
	}
	switch {
	case c.Token == "":
		return nil, errors.New("client: Config.Token is required")
	case strings.ContainsAny(c.Token, " \t\r\n"):
		return nil, errors.New("client: Config.Token must not contain white space")
	case c.MaxRetryWait < 0 || c.RetryWaitMin < 0:
		return nil, errors.New("client: retry waits must not be negative")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// conn is what [Router] and [Admin] share: the base URL, the credential and the retrying client.
type conn struct {
	base  *url.URL
	token string
	agent string
	http  *retryablehttp.Client
	// actAs, when set, is sent as HeaderActAs: the tenant a delegate key acts for.
	actAs string
}

// HeaderActAs names the tenant a delegate key acts for (see [Router.ActAs]).
const HeaderActAs = "Tenantmem-Act-As"

func newConn(cfg Config) (*conn, error) {
	cfg = cfg.WithDefaults()
	base, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	maxWait := cfg.MaxRetryWait
	rc := &retryablehttp.Client{
		HTTPClient:   cfg.HTTPClient,
		Logger:       cfg.Logger,
		RetryWaitMin: cfg.RetryWaitMin,
		RetryWaitMax: maxWait,
		RetryMax:     cfg.MaxRetries,
		CheckRetry: func(ctx context.Context, resp *http.Response, err error) (bool, error) {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			// Transport errors are not retried: the server may have acted on the request.
			if err != nil {
				return false, err
			}
			if !retryable(resp.StatusCode) {
				return false, nil
			}
			// A wait longer than the caller accepts is not worth starting.
			if ra, ok := retryAfter(resp.Header); ok && ra > maxWait {
				return false, nil
			}
			return true, nil
		},
		Backoff: retryablehttp.DefaultBackoff, // Retry-After on 429 and 503, else exponential
		// After the last attempt, hand back the last response so its error body is decoded.
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
	return &conn{base: base, token: cfg.Token, agent: cfg.UserAgent, http: rc}, nil
}

func retryable(status int) bool {
	return status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests
}

// retryAfter reads a Retry-After header in seconds (all tenantmem sends) or as an HTTP date.
func retryAfter(h http.Header) (time.Duration, bool) {
	v := h.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t)), true
	}
	return 0, false
}

// call is one API request. segments are the path's segments below the base URL, each escaped
// on its own (so a tenant id "acme/team-1" stays one segment); query may be nil; body, when not
// nil, is sent as JSON; out, when not nil, receives the JSON answer of a 2xx. It returns the
// status of a 2xx answer, and an *Error for any other.
func (c *conn) call(ctx context.Context, method string, segments []string, query url.Values, body, out any) (int, error) {
	u := *c.base
	escaped := make([]string, len(segments))
	for i, s := range segments {
		escaped[i] = url.PathEscape(s)
	}
	u.RawPath = c.base.EscapedPath() + "/" + strings.Join(escaped, "/")
	u.Path += "/" + strings.Join(segments, "/")
	u.RawQuery = query.Encode()

	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return 0, fmt.Errorf("client: encode %s %s: %w", method, u.Path, err)
		}
	}
	var rawBody any
	if payload != nil {
		rawBody = payload
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, u.String(), rawBody)
	if err != nil {
		return 0, fmt.Errorf("client: %s %s: %w", method, u.Path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.agent)
	if c.actAs != "" {
		req.Header.Set(HeaderActAs, c.actAs)
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w (%w)", ctxErr, err)
		}
		return 0, fmt.Errorf("client: %s %s: %w", method, u.Path, err)
	}
	defer func() { _ = res.Body.Close() }()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return res.StatusCode, decodeError(method, u.Path, res)
	}
	if out == nil || res.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, res.Body)
		return res.StatusCode, nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return res.StatusCode, fmt.Errorf("client: decode the answer of %s %s: %w", method, u.Path, err)
	}
	return res.StatusCode, nil
}

// errorBody is the JSON body of every error answer.
type errorBody struct {
	Error problem `json:"error"`
}

type problem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// decodeError builds the *Error of a non-2xx answer. A body that is not tenantmem's error shape
// (a proxy's page) still gives an *Error, with the code derived from the status.
func decodeError(method, path string, res *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBody))
	e := &Error{StatusCode: res.StatusCode, Method: method, Path: path, RequestID: res.Header.Get("X-Request-Id")}
	var body errorBody
	if json.Unmarshal(b, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message, e.Field = body.Error.Code, body.Error.Message, body.Error.Field
	} else {
		e.Code = codeForStatus(res.StatusCode)
		e.Message = strings.TrimSpace(string(bytes.ToValidUTF8(b[:min(len(b), 200)], nil)))
		if e.Message == "" {
			e.Message = http.StatusText(res.StatusCode)
		}
	}
	if ra, ok := retryAfter(res.Header); ok {
		e.RetryAfter = ra
	}
	return e
}

// ready is GET /readyz: nil when the server answers 200.
func (c *conn) ready(ctx context.Context) error {
	_, err := c.call(ctx, http.MethodGet, []string{"readyz"}, nil, nil, nil)
	return err
}
