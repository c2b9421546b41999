// Package rerank is the HTTP client of a reranking server with the widely used /rerank request
// shape (Cohere's, also served by Jina, vLLM, Infinity, llama.cpp's server, LocalAI and Hugging
// Face's text-embeddings-inference with its Cohere-compatible route):
//
//	POST {base}/rerank  {"model": "...", "query": "...", "documents": ["...", ...], "top_n": N}
//	200 {"results": [{"index": 0, "relevance_score": 0.93}, ...]}
//
// The answer may list the documents in any order; "score" is accepted for "relevance_score".
// A client is safe for concurrent use.
package rerank

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Errors of [Client.Rerank]; the memory engine treats every error alike (degraded answer).
var (
	// ErrUnavailable: the server could not be reached, timed out or answered an error status.
	ErrUnavailable = errors.New("rerank: reranker unavailable")
	// ErrBadResponse: a 2xx answer that cannot be used (not JSON, missing or repeated indexes,
	// non-finite scores).
	ErrBadResponse = errors.New("rerank: bad response from reranker")
)

// Config configures a [Client].
type Config struct {
	// BaseURL is the server, e.g. http://127.0.0.1:7997 (the path /rerank is appended; a base
	// ending in /v1 gives /v1/rerank). Required.
	BaseURL string
	// Model is sent as "model"; some servers need it, others ignore it.
	Model string
	// APIKey, when set, is sent as "Authorization: Bearer <key>".
	APIKey string
	// Timeout bounds one call. Default 2s.
	Timeout time.Duration
	// HTTPClient sends the requests. Default: a client of its own.
	HTTPClient *http.Client
}

// Client calls a reranking server.
type Client struct {
	cfg      Config
	endpoint string
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	cfg.Timeout = cmp.Or(cfg.Timeout, 2*time.Second)
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("rerank: BaseURL must be an http(s) URL, got %q", cfg.BaseURL)
	}
	return &Client{cfg: cfg, endpoint: strings.TrimRight(cfg.BaseURL, "/") + "/rerank"}, nil
}

// Name identifies the reranker.
func (c *Client) Name() string { return "http:" + cmp.Or(c.cfg.Model, c.endpoint) }

type request struct {
	Model     string   `json:"model,omitempty"`
	Query     string   `json:"query"`
	Documents []string `json:"documents"`
	TopN      int      `json:"top_n"`
}

type response struct {
	Results []struct {
		Index          *int     `json:"index"`
		RelevanceScore *float64 `json:"relevance_score"`
		Score          *float64 `json:"score"`
	} `json:"results"`
}

// maxResponseBytes bounds what is read of an answer.
const maxResponseBytes = 8 << 20

// Rerank returns one score per document, in the order of documents.
func (c *Client) Rerank(ctx context.Context, query string, documents []string) ([]float64, error) {
	body, err := json.Marshal(request{Model: c.cfg.Model, Query: query, Documents: documents, TopN: len(documents)})
	if err != nil {
		return nil, fmt.Errorf("rerank: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("rerank: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrUnavailable, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%w: status %d", ErrUnavailable, resp.StatusCode)
	}
	var r response
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	scores := make([]float64, len(documents))
	seen := make([]bool, len(documents))
	for _, x := range r.Results {
		s := x.RelevanceScore
		if s == nil {
			s = x.Score
		}
		switch {
		case x.Index == nil || s == nil:
			return nil, fmt.Errorf("%w: a result without index or score", ErrBadResponse)
		case *x.Index < 0 || *x.Index >= len(documents) || seen[*x.Index]:
			return nil, fmt.Errorf("%w: index %d out of range or repeated", ErrBadResponse, *x.Index)
		case math.IsNaN(*s) || math.IsInf(*s, 0):
			return nil, fmt.Errorf("%w: non-finite score", ErrBadResponse)
		}
		scores[*x.Index], seen[*x.Index] = *s, true
	}
	for i, ok := range seen {
		if !ok {
			return nil, fmt.Errorf("%w: no score for document %d", ErrBadResponse, i)
		}
	}
	return scores, nil
}
