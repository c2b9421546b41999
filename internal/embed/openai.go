package embed

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Defaults of [OpenAIConfig], applied by [OpenAIConfig.WithDefaults].
const (
	// DefaultOpenAIBaseURL is the default BaseURL, OpenAI's API.
	DefaultOpenAIBaseURL = "https://api.openai.com"
	// DefaultBatchSize is the default number of texts per request.
	DefaultBatchSize = 96
	// DefaultMaxConcurrency is the default number of requests in flight per provider.
	DefaultMaxConcurrency = 4
	// DefaultTimeout is the default time limit of one request.
	DefaultTimeout = 30 * time.Second
	// DefaultMaxRetries is the default number of retries of a batch after a transient failure.
	DefaultMaxRetries = 5
	// DefaultMinBackoff is the default pause before the first retry (before jitter).
	DefaultMinBackoff = 500 * time.Millisecond
	// DefaultMaxBackoff is the default cap on a pause between retries, Retry-After included.
	DefaultMaxBackoff = 30 * time.Second
)

// Limits checked by [OpenAIConfig] validation.
const (
	// MaxBatchSize is the largest BatchSize accepted; OpenAI allows at most 2048 inputs per request.
	MaxBatchSize = 2048
	// MaxDimension is the largest Dimension accepted, pgvector's limit for a vector column.
	MaxDimension = 16000
)

// OpenAIConfig configures an [OpenAI] provider. Zero values mean the documented default.
type OpenAIConfig struct {
	// BaseURL is the server root; requests go to BaseURL + "/v1/embeddings". A trailing "/" or
	// "/v1" is tolerated. Default: DefaultOpenAIBaseURL. Examples: "http://localhost:11434"
	// (Ollama), "http://localhost:8000" (vLLM), "http://localhost:8080" (text-embeddings-inference).
	BaseURL string
	// APIKey is sent as "Authorization: Bearer <APIKey>" when non-empty. It is never logged.
	APIKey string
	// Model is the "model" field of every request. Required.
	Model string
	// Dimension is the length every returned vector must have, in [1, MaxDimension]. Required.
	Dimension int
	// SendDimensions adds "dimensions": Dimension to every request, asking the model to shorten
	// its vectors (OpenAI text-embedding-3-*, some vLLM models). Leave it false for models that
	// do not support shortening: several servers reject the field.
	SendDimensions bool
	// BatchSize is the maximum number of texts per request, in [1, MaxBatchSize].
	// Default: DefaultBatchSize (96).
	BatchSize int
	// MaxConcurrency bounds the HTTP requests in flight at once across all Embed calls on one
	// provider; a batch waiting to be retried holds no slot. Default: DefaultMaxConcurrency (4).
	MaxConcurrency int
	// Timeout bounds each HTTP request (one attempt), including reading the response.
	// Default: DefaultTimeout (30s).
	Timeout time.Duration
	// MaxRetries is the number of retries of a batch after a transient failure (429, 408, 5xx,
	// network error, timeout), so a batch is tried at most MaxRetries+1 times. Default:
	// DefaultMaxRetries (5); a negative value disables retries.
	MaxRetries int
	// MinBackoff is the base of the exponential backoff between retries: the n-th retry waits a
	// random duration in [d/2, d] with d = min(MinBackoff·2ⁿ, MaxBackoff). Default:
	// DefaultMinBackoff (500ms).
	MinBackoff time.Duration
	// MaxBackoff caps the backoff, and also the Retry-After pause the client honours: a server
	// asking for a longer pause gets no retry, and Embed returns an ErrRateLimited (or
	// ErrUnavailable) [*APIError] whose RetryAfter tells the caller when to try again, rather
	// than holding a goroutine for minutes. Default: DefaultMaxBackoff (30s).
	MaxBackoff time.Duration
	// HTTPClient sends the requests. Default: a client using http.DefaultTransport. Its own
	// Timeout, if any, applies on top of Timeout.
	HTTPClient *http.Client
	// Logger receives a warning for each retry. Default: a logger that discards everything.
	Logger *slog.Logger
	// Breaker configures the circuit breaker in front of the server (see [Breaker]): after
	// Breaker.Failures failed requests in a row (default 3, retries included), requests fail at
	// once for Breaker.Cooldown (default 10s) and a retry loop stops waiting, so ingest queues
	// its chunks in about a second instead of retrying a server that is down.
	Breaker BreakerConfig
}

// WithDefaults returns a copy of c with every unset field replaced by its default.
func (c OpenAIConfig) WithDefaults() OpenAIConfig {
	c.BaseURL = cmp.Or(c.BaseURL, DefaultOpenAIBaseURL)
	c.BatchSize = cmp.Or(c.BatchSize, DefaultBatchSize)
	c.MaxConcurrency = cmp.Or(c.MaxConcurrency, DefaultMaxConcurrency)
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.MaxRetries = cmp.Or(c.MaxRetries, DefaultMaxRetries)
	c.MinBackoff = cmp.Or(c.MinBackoff, DefaultMinBackoff)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, DefaultMaxBackoff)
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Breaker.Logger == nil {
		c.Breaker.Logger = c.Logger
	}
	return c
}

func (c OpenAIConfig) validate() error {
	u, err := url.Parse(c.BaseURL)
	switch {
	case err != nil:
		return fmt.Errorf("embed: BaseURL: %w", err)
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("embed: BaseURL must be an absolute http(s) URL, got %q", c.BaseURL)
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("embed: BaseURL must not have a query or fragment, got %q", c.BaseURL)
	case strings.TrimSpace(c.Model) == "":
		return errors.New("embed: Model is required")
	case c.Dimension < 1 || c.Dimension > MaxDimension:
		return fmt.Errorf("embed: Dimension must be in [1, %d], got %d", MaxDimension, c.Dimension)
	case c.BatchSize < 1 || c.BatchSize > MaxBatchSize:
		return fmt.Errorf("embed: BatchSize must be in [1, %d], got %d", MaxBatchSize, c.BatchSize)
	case c.MaxConcurrency < 1:
		return fmt.Errorf("embed: MaxConcurrency must be positive, got %d", c.MaxConcurrency)
	case c.Timeout < 0:
		return fmt.Errorf("embed: Timeout must be positive, got %s", c.Timeout)
	case c.MinBackoff < 0:
		return fmt.Errorf("embed: MinBackoff must be positive, got %s", c.MinBackoff)
	case c.MaxBackoff < c.MinBackoff:
		return fmt.Errorf("embed: MaxBackoff (%s) must not be less than MinBackoff (%s)", c.MaxBackoff, c.MinBackoff)
	}
	return nil
}

// OpenAI embeds texts with an OpenAI-compatible HTTP server (OpenAI, Ollama, vLLM,
// text-embeddings-inference): POST {BaseURL}/v1/embeddings with {"model", "input"} and, if
// configured, "dimensions".
//
// Embed splits its input into batches of BatchSize texts and sends them concurrently; at most
// MaxConcurrency requests are in flight at any time across all callers of one provider. A batch
// that fails transiently is retried with exponential backoff and jitter, honouring Retry-After;
// a permanent failure of any batch fails the whole call at once. Every response is checked: one
// item per input, placed by its "index", each of exactly Dimension finite values.
//
// An OpenAI is safe for concurrent use; share one per configuration.
type OpenAI struct {
	cfg        OpenAIConfig
	endpoint   string
	name       string
	maxRetries int
	sem        chan struct{} // one token per request in flight
	breaker    *Breaker
}

// NewOpenAI applies defaults to cfg, validates it and returns the provider. Errors name the
// offending field.
func NewOpenAI(cfg OpenAIConfig) (*OpenAI, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	base := strings.TrimRight(cfg.BaseURL, "/")
	base = strings.TrimSuffix(base, "/v1")
	bc := cfg.Breaker
	bc.Name = cmp.Or(bc.Name, "openai:"+cfg.Model)
	breaker, err := NewBreaker(bc)
	if err != nil {
		return nil, err
	}
	return &OpenAI{
		cfg:        cfg,
		endpoint:   base + "/v1/embeddings",
		name:       "openai:" + cfg.Model,
		maxRetries: max(cfg.MaxRetries, 0),
		sem:        make(chan struct{}, cfg.MaxConcurrency),
		breaker:    breaker,
	}, nil
}

// OpenFor is how long requests will still fail fast because the server failed repeatedly (see
// [Gate]); zero when they go through.
func (p *OpenAI) OpenFor() time.Duration { return p.breaker.OpenFor() }

// Name returns "openai:" followed by the model name.
func (p *OpenAI) Name() string { return p.name }

// Dimension returns the configured dimension, which every returned vector has.
func (p *OpenAI) Dimension() int { return p.cfg.Dimension }

// Embed returns one vector per text, in the order of texts. On failure it returns no vectors
// and an error that wraps one of the package's sentinel errors, or the context's error when ctx
// ended first (see [IsTransient]). Texts are sent as they are; some servers reject empty strings.
func (p *OpenAI) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	size := p.cfg.BatchSize
	batches := (len(texts) + size - 1) / size
	batch := func(ctx context.Context, i int) error {
		lo, hi := i*size, min((i+1)*size, len(texts))
		if err := p.embedBatch(ctx, texts[lo:hi], out[lo:hi]); err != nil {
			if batches == 1 {
				return err
			}
			return fmt.Errorf("batch of texts %d to %d: %w", lo, hi-1, err)
		}
		return nil
	}

	switch batches {
	case 0:
		return out, nil
	case 1:
		if err := batch(ctx, 0); err != nil {
			return nil, err
		}
		return out, nil
	}

	// A few workers per call take batches in order; the provider-wide semaphore, not the
	// number of workers, bounds the requests in flight. The first error cancels the rest.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(batches, p.cfg.MaxConcurrency) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= batches || ctx.Err() != nil {
					return
				}
				if err := batch(ctx, i); err != nil {
					errOnce.Do(func() {
						firstErr = err
						cancel()
					})
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil { // ctx ended while no batch was running
		return nil, fmt.Errorf("embed: %w", err)
	}
	return out, nil
}

// embedRequest is the body of POST /v1/embeddings.
type embedRequest struct {
	Model      string   `json:"model"`
	Input      []string `json:"input"`
	Dimensions int      `json:"dimensions,omitempty"`
}

// embedResponse is the part of the response body we use.
type embedResponse struct {
	Data []struct {
		Index     *int      `json:"index"`
		Embedding []float64 `json:"embedding"`
	} `json:"data"`
}

// embedBatch embeds texts into dst (same length), retrying transient failures.
func (p *OpenAI) embedBatch(ctx context.Context, texts []string, dst [][]float32) error {
	req := embedRequest{Model: p.cfg.Model, Input: texts}
	if p.cfg.SendDimensions {
		req.Dimensions = p.cfg.Dimension
	}
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("embed: encode request: %w", err)
	}

	for attempt := 0; ; attempt++ {
		err := p.breaker.Do(func() error { return p.post(ctx, body, dst) })
		if err == nil {
			return nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("embed: %w", ctxErr)
		}
		if !IsTransient(err) || errors.Is(err, ErrCircuitOpen) {
			// An open breaker means the server is down: the caller (a queue) waits better.
			return err
		}
		if p.breaker.OpenFor() > 0 {
			return fmt.Errorf("embed: giving up after %d attempts, the circuit breaker opened: %w", attempt+1, err)
		}
		if attempt >= p.maxRetries {
			if attempt == 0 {
				return err
			}
			return fmt.Errorf("embed: giving up after %d attempts: %w", attempt+1, err)
		}

		delay := p.backoff(attempt)
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.RetryAfter > 0 {
			if apiErr.RetryAfter > p.cfg.MaxBackoff {
				return err // the caller (a queue) can wait better than a goroutine can
			}
			delay = max(delay, apiErr.RetryAfter)
		}
		p.cfg.Logger.WarnContext(ctx, "embed: retrying request",
			slog.String("provider", p.name),
			slog.Int("attempt", attempt+1),
			slog.Int("texts", len(texts)),
			slog.Duration("delay", delay),
			slog.String("error", err.Error()))

		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("embed: waiting to retry: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// backoff returns the pause before retry number attempt+1: a random duration in [d/2, d] with
// d = min(MinBackoff·2^attempt, MaxBackoff).
func (p *OpenAI) backoff(attempt int) time.Duration {
	d := p.cfg.MinBackoff
	for range attempt {
		if d >= p.cfg.MaxBackoff/2 {
			d = p.cfg.MaxBackoff
			break
		}
		d *= 2
	}
	d = min(d, p.cfg.MaxBackoff)
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1) //nolint:gosec // backoff jitter needs no cryptographic randomness
}

// post sends one request and decodes its response into dst. It holds a semaphore token for the
// duration of the request.
func (p *OpenAI) post(ctx context.Context, body []byte, dst [][]float32) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.sem }()

	reqCtx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, p.endpoint, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("embed: build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if p.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+p.cfg.APIKey)
	}

	resp, err := p.cfg.HTTPClient.Do(req)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case reqCtx.Err() != nil:
			return fmt.Errorf("%w: no response within Timeout (%s): %w", ErrUnavailable, p.cfg.Timeout, err)
		}
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
		_ = resp.Body.Close()
	}()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return newAPIError(resp, excerpt, time.Now())
	}

	// Generous: ~25 bytes per JSON number plus per-item overhead.
	limit := int64(64<<10) + int64(len(dst))*(int64(p.cfg.Dimension)*32+1024)
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: read response: %w", ErrUnavailable, err)
	}
	if int64(len(raw)) > limit {
		return fmt.Errorf("%w: response larger than %d bytes", ErrBadResponse, limit)
	}
	return p.decode(raw, dst)
}

// decode parses a 2xx response body into dst, checking count, indexes, dimension and values.
func (p *OpenAI) decode(raw []byte, dst [][]float32) error {
	var r embedResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("%w: decode JSON: %w (body starts %q)", ErrBadResponse, err, excerptOf(raw, 200))
	}
	if len(r.Data) != len(dst) {
		return fmt.Errorf("%w: %d items for %d inputs", ErrBadResponse, len(r.Data), len(dst))
	}
	vecs := make([][]float32, len(dst))
	for i, item := range r.Data {
		if item.Index == nil {
			return fmt.Errorf("%w: item %d has no index", ErrBadResponse, i)
		}
		idx := *item.Index
		if idx < 0 || idx >= len(dst) {
			return fmt.Errorf("%w: item %d has index %d, want [0, %d)", ErrBadResponse, i, idx, len(dst))
		}
		if vecs[idx] != nil {
			return fmt.Errorf("%w: index %d appears twice", ErrBadResponse, idx)
		}
		if len(item.Embedding) != p.cfg.Dimension {
			return fmt.Errorf("%w: vector %d has %d values, want %d (model %q)",
				ErrDimensionMismatch, idx, len(item.Embedding), p.cfg.Dimension, p.cfg.Model)
		}
		v := make([]float32, len(item.Embedding))
		for j, x := range item.Embedding {
			f := float32(x)
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return fmt.Errorf("%w: vector %d has non-finite value %v at %d", ErrBadResponse, idx, x, j)
			}
			v[j] = f
		}
		vecs[idx] = v
	}
	copy(dst, vecs)
	return nil
}

// APIError is a non-2xx response from the provider. It wraps [ErrRateLimited] (429),
// [ErrUnavailable] (408, 5xx) or [ErrProvider] (other statuses, and a 429 whose error code is
// "insufficient_quota", which waiting does not cure).
type APIError struct {
	// StatusCode is the HTTP status of the response.
	StatusCode int
	// Code is the "error.code" (or else "error.type") of an OpenAI-style error body, if any.
	Code string
	// Message is the "error.message" of an OpenAI-style error body, or else the start of the
	// body, at most 512 bytes.
	Message string
	// RetryAfter is the pause the server asked for (Retry-After-Ms or Retry-After), or zero.
	RetryAfter time.Duration
}

// Error describes the status, the error code if any, and the message excerpt.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "embed: provider returned %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.Code != "" {
		fmt.Fprintf(&b, " (%s)", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " [retry after %s]", e.RetryAfter)
	}
	return b.String()
}

// Unwrap returns the sentinel error that classifies the status.
func (e *APIError) Unwrap() error {
	switch {
	case e.StatusCode == http.StatusTooManyRequests && e.Code != "insufficient_quota":
		return ErrRateLimited
	case e.StatusCode == http.StatusRequestTimeout || e.StatusCode >= 500:
		return ErrUnavailable
	default:
		return ErrProvider
	}
}

func newAPIError(resp *http.Response, body []byte, now time.Time) *APIError {
	e := &APIError{StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header, now)}
	var ob struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    any    `json:"code"` // a string at OpenAI, sometimes a number elsewhere
		} `json:"error"`
	}
	if json.Unmarshal(body, &ob) == nil && (ob.Error.Message != "" || ob.Error.Type != "") {
		if ob.Error.Code != nil {
			e.Code = fmt.Sprint(ob.Error.Code)
		}
		e.Code = cmp.Or(e.Code, ob.Error.Type)
		e.Message = excerptOf([]byte(ob.Error.Message), 512)
		return e
	}
	e.Message = excerptOf(body, 512)
	return e
}

// parseRetryAfter reads Retry-After-Ms (milliseconds, sent by OpenAI) or else Retry-After
// (delay-seconds or an HTTP date). It returns zero when neither is present, valid and positive.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 && ms < 1e12 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s > 0 && s < 1e9 {
			return time.Duration(s * float64(time.Second))
		}
		return 0
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// excerptOf returns at most n bytes of b as valid UTF-8 on a single line.
func excerptOf(b []byte, n int) string {
	truncated := len(b) > n
	if truncated {
		b = b[:n]
		for i := 0; i < utf8.UTFMax-1 && len(b) > 0 && !utf8.Valid(b); i++ {
			b = b[:len(b)-1] // do not cut a rune in half
		}
	}
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "\uFFFD")), " ")
	if truncated {
		s += "…"
	}
	return s
}
